"""Outputs appear whole or not at all: each is written to a hidden temporary file beside its
destination (same file system, so the final rename is atomic) and renamed only when complete."""
from __future__ import annotations

import glob
import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from ppar_cli.errors import PparError, UsageError

PARTIAL = ".partial"  # every temporary output's name holds this: .NAME.HOST-PID.XXXXXXXX.partial[.ext]
# The permissions a plain open() gives a new file. The umask is read once, here: reading it means
# setting it, and a thread that made a file meanwhile would get the wrong one.
_UMASK = os.umask(0)
os.umask(_UMASK)
PLAIN_MODE = 0o666 & ~_UMASK


class Taken(PparError):
    """An output that appeared after this run checked its name (another run into the same folder
    wrote it meanwhile): it is kept as it is, and this run's file is dropped."""


def taken(path: Path) -> bool:
    """Whether ``path`` names something already, a link to nothing included: an output there would
    replace it."""
    return os.path.lexists(path)


def folder_or_new(path: Path, what: str) -> None:
    """Refuse, before any work, a ``path`` meant to be ``what`` (a folder, existing or to be made)
    that is a file: the first write into it would fail after the work."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: a file, not {what}")


def temp_beside(dest: Path, suffix: str = "") -> Path:
    """A new empty hidden file next to ``dest``, with the permissions a plain open() would give.

    Its name carries this host and process, so a later run can tell a partial file left by a killed
    process (kill -9, power loss) from one a live process is still writing, and remove it."""
    _remove_dead_partials(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{_tag(dest)}.{_OWNER}.", suffix=f"{PARTIAL}{suffix}", dir=dest.parent)
    os.close(fd)
    os.chmod(tmp, PLAIN_MODE)  # mkstemp makes 0600
    return Path(tmp)


_OWNER = f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


def _tag(dest: Path) -> str:
    """``dest``'s name as its temporary files carry it: cut where the whole temporary name
    (.NAME.HOST-PID.XXXXXXXX.partial, a suffix of up to 16 bytes) would pass the 255 bytes a file
    system allows, which failed a video whose own name fitted."""
    room = 255 - len(os.fsencode(f"..{_OWNER}.XXXXXXXX{PARTIAL}")) - 16
    name = dest.name
    while len(os.fsencode(name)) > room:
        name = name[:-1]
    return name


def _remove_dead_partials(dest: Path) -> None:
    host, tag = _OWNER.rsplit("-", 1)[0], _tag(dest)
    for p in dest.parent.glob(f".{glob.escape(tag)}.{glob.escape(host)}-*{PARTIAL}*"):
        pid = p.name[len(tag) + len(host) + 3:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``dest`` if the block succeeds, else it is removed.
    A writer that made the file anew (safetensors does, at 0600) has its permissions set back."""
    with scratch(Path(dest), suffix) as tmp:
        yield tmp
        os.chmod(tmp, PLAIN_MODE)
        publish([(tmp, Path(dest))])


@contextmanager
def scratch(dest: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary beside ``dest`` (:func:`temp_beside`), removed when the block ends unless
    :func:`publish` has renamed it into place."""
    tmp = temp_beside(dest, suffix)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def publish(finished: Sequence[tuple[Path, Path]], replace: bool = True) -> None:
    """Rename each finished temporary to its destination. Without ``replace`` no file is replaced,
    even one another run wrote after this one checked the names: each is hard-linked into place,
    which fails where the name is taken, and those placed already are then taken back, so the
    outputs appear together or not at all. Where the file system has no hard links (FAT, some
    network shares) a check just before each rename stands in."""
    placed: list[Path] = []
    try:
        for tmp, dest in finished:
            if replace:
                os.replace(tmp, dest)
                continue
            said = f"{dest}: already exists, written meanwhile by another run (overwrite replaces it)"
            try:
                os.link(tmp, dest)
            except FileExistsError:
                raise Taken(said) from None
            except OSError:  # no hard links here
                if taken(dest):
                    raise Taken(said) from None
                os.replace(tmp, dest)
            else:
                os.unlink(tmp)
            placed.append(dest)
    except BaseException:
        for dest in placed:
            dest.unlink(missing_ok=True)
        raise
