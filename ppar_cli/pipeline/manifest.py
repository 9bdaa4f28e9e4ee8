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


def settings(opts: Options, weights_sha256: str) -> dict:
    """The settings that decide what an output shows, as its manifest line records them."""
    g = opts.guard_config
    guard = "none" if opts.guard == "none" else {"threshold": g.threshold, "stride": g.stride, "max_side": g.max_side}
    return {"keep": opts.keep_ratio, "lambda_priv": opts.lambda_priv, "hysteresis": opts.hysteresis,
            "fill": opts.fill, "guard": guard, "weights_sha256": weights_sha256}


def made_with(path: Path) -> dict[str, dict]:
    """Each source's settings in its last line with status ok in the manifest at ``path``: what its
    output was made with (lines of ppar before 0.3.28, which recorded fewer, are passed over)."""
    made: dict[str, dict] = {}
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return made
    keys = settings(Options(), "").keys()
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("status") == "ok" and keys <= rec.keys():
            made[rec["src"]] = {k: rec[k] for k in keys}
    return made


# the manifest's settings as the flags that set them, for the note of a skipped output
AS_FLAGS = {"keep": "--keep", "lambda_priv": "--lambda", "hysteresis": "--hysteresis", "fill": "--fill"}


def differences(before: dict, now: dict, own_lambda: float | None = None) -> str | None:
    """How settings ``before`` differ from ``now``, as flags: a note for a skipped output that an
    earlier run made otherwise (more visible, another guard, other weights), which a rerun with the
    new settings would otherwise leave in place without a word. ``own_lambda``: the weights' own,
    which a run that gave no --lambda used (the same weights: no difference)."""
    if own_lambda is not None and before["weights_sha256"] == now["weights_sha256"]:
        before, now = ({**d, "lambda_priv": own_lambda if d["lambda_priv"] is None else d["lambda_priv"]} for d in (before, now))
    was, asked = [], []

    def differ(flag: str, old, new) -> None:
        shown = {None: "(the weights' own)"}
        was.append(f"{flag} {shown.get(old, old)}")
        asked.append(f"{flag} {shown.get(new, new)}")

    for k, flag in AS_FLAGS.items():
        if before[k] != now[k]:
            differ(flag, before[k], now[k])
    old, new = before["guard"], now["guard"]
    if isinstance(old, dict) and isinstance(new, dict):
        for k in old:
            if k in new and old[k] != new[k]:
                differ(f"--guard-{k.replace('_', '-')}", old[k], new[k])
    elif old != new:
        differ("--guard", "none" if old == "none" else "on", "none" if new == "none" else "on")
    if before["weights_sha256"] != now["weights_sha256"]:
        differ("weights", f"sha256 {before['weights_sha256'][:12]}", f"sha256 {now['weights_sha256'][:12]}")
    if not was:
        return None
    return f"made by an earlier run with {', '.join(was)} (this run: {', '.join(asked)}); --overwrite redoes it"


def append_manifest(path: Path, r: FileResult, weights_sha256: str, opts: Options) -> None:
    """One finished (or skipped, or failed) file's line, with this run's settings."""
    rec = {"src": str(r.src), "dst": str(r.dst), "status": r.status, "frames": r.frames,
           "kept_fraction": r.kept_fraction, "seconds": round(r.seconds, 3), "error": r.error, "notes": r.notes,
           **settings(opts, weights_sha256), "shard": list(opts.shard) if opts.shard else None,
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
