"""The manifest of a folder run: one JSON line per file, appended as each finishes, so that a run
sharded over processes or machines leaves a record of every file."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ppar_cli import __version__
from ppar_cli.errors import PparError, UsageError, reason
from ppar_cli.pipeline.options import FileResult, Options


class OutputError(PparError):
    """An output of the whole run (the manifest) cannot be written: the batch stops (exit 1)."""


def check_manifest(path: Path) -> None:
    """The manifest is appended to, so it must be writable and, if it exists, a manifest."""
    try:
        if path.is_file() and path.stat().st_size:
            with open(path, "rb") as f:
                first = json.loads(f.readline())
            if not isinstance(first, dict) or "src" not in first:
                raise ValueError
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"{path}: exists and is not a ppar manifest; choose another <manifest>") from None
    except OSError as e:
        raise OutputError(f"{path}: cannot write the manifest ({reason(e)})") from None


def append_manifest(path: Path, r: FileResult, weights_sha256: str, opts: Options) -> None:
    """One finished (or skipped, or failed) file's line."""
    rec = {"src": str(r.src), "dst": str(r.dst), "status": r.status, "frames": r.frames,
           "kept_fraction": r.kept_fraction, "seconds": round(r.seconds, 3), "error": r.error, "notes": r.notes,
           "keep": opts.keep_ratio, "weights_sha256": weights_sha256, "shard": list(opts.shard) if opts.shard else None,
           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ppar_version": __version__}
    try:
        data = json.dumps(rec, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a name that is not UTF-8: JSON escapes, which read back as the same name
        data = json.dumps(rec).encode()
    try:
        with open(path, "ab") as f:  # one short line per write: appends do not interleave
            f.write(data + b"\n")
    except OSError as e:
        raise OutputError(f"{path}: cannot write the manifest ({reason(e)}); finished outputs are kept") from None
