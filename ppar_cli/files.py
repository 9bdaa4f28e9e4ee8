"""Outputs appear whole or not at all: each is written to a hidden temporary file beside its
destination (same file system, so the final rename is atomic) and renamed only when complete."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temp_beside(dest: Path, suffix: str = "") -> Path:
    """A new empty hidden file next to ``dest``, with the permissions a plain open() would give."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".partial{suffix}", dir=dest.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
    return Path(tmp)


@contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``dest`` if the block succeeds, else it is removed."""
    dest = Path(dest)
    tmp = temp_beside(dest, suffix)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
