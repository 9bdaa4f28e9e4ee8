"""One error family for the whole package: each error's message names the file and the problem in
one line, and carries the exit code the CLI gives it (2: what was asked is wrong; 1: a file failed)."""
from __future__ import annotations


class PparError(Exception):
    """Base of ppar's errors; the CLI prints the message and exits with ``exit_code``."""

    exit_code = 1


class UsageError(PparError):
    """A mistake in what the user asked for (a bad option, paths that collide), as opposed to a file that failed."""

    exit_code = 2
