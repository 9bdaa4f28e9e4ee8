"""One error family for the whole package: each error's message names the file and the problem in
one line, and carries the exit code the CLI gives it (2: what was asked is wrong; 1: a file failed)."""
from __future__ import annotations

import re
from pathlib import Path


class PparError(Exception):
    """Base of ppar's errors; the CLI prints the message and exits with ``exit_code``."""

    exit_code = 1


class UsageError(PparError):
    """A mistake in what the user asked for (a bad option, paths that collide), as opposed to a file
    that failed. ``option`` names the API parameter at fault; the message reads after it, so the
    API says "keep_ratio must ..." and the CLI, which knows its flags, "--keep must ..."."""

    exit_code = 2

    def __init__(self, message: str, option: str | None = None):
        """``message`` may name other parameters as ``<name>``: the API prints the name, the CLI its flag."""
        self.message, self.option = message, option
        super().__init__(self.render({}, api=True))

    def __reduce__(self):
        """Pickled as its parts (a worker process sends it to its parent), not as the rendered text."""
        return type(self), (self.message, self.option)

    def render(self, flags: dict[str, str], api: bool = False) -> str:
        """The message with each parameter named as the API or the CLI user knows it."""
        def name(param: str) -> str:
            return param if api else flags.get(param, "--" + param.replace("_", "-"))

        text = re.sub(r"<(\w+)>", lambda m: name(m.group(1)), self.message)
        return f"{name(self.option)} {text}" if self.option else text


class DataError(PparError):
    """A benchmark or label file that cannot be read; the message names the file and the problem."""

    exit_code = 2


def reason(e: BaseException) -> str:
    """Why ``e`` happened, as one short line for a message that names the file itself: an OSError's
    or FFmpeg's own words ("No space left on device", without the hidden temporary file it hit),
    else the first line of its text, else its type's name."""
    strerror = getattr(e, "strerror", None)  # OSError's, and PyAV's FFmpegError (a ValueError or other)
    if isinstance(strerror, str) and strerror:
        return strerror
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def internal_error(e: BaseException) -> str:
    """One line for an error that is a bug in ppar, not a problem with the input, naming where in
    ppar it was raised: a batch reports the file as failed and goes on with the others."""
    import traceback

    ours = [f for f in traceback.extract_tb(e.__traceback__) if "ppar_cli" in f.filename] or [None]
    where = f" at {Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours[-1] else ""
    said = " ".join(str(e).split())[:200]  # one line, of a length a table can show
    return f"internal error, a bug in ppar ({type(e).__name__}: {said}{where}); please report it"


def check_counts(**counts: int | None) -> None:
    """Each named count (None: not given) must be a whole number of at least 1: refused before any
    work, named as the parameter, where 0 would crash later or quietly mean something else."""
    for name, n in counts.items():
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise UsageError(f"must be a whole number of at least 1, got {n}", option=name)
