"""The score map (`OUT.json`, schema ppar-scores/1, documented in the README): one record per
window (scores, kept tubelets, guard-forced tubelets, the heads' outputs) and the file's summary."""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ppar_cli import __version__
from ppar_cli.core.clips import cell_edges
from ppar_cli.core.config import PPARConfig
from ppar_cli.core.model import Output
from ppar_cli.core.weights import LoadedWeights
from ppar_cli.media.probe import VideoInfo
from ppar_cli.pipeline.options import FileResult, Options

SCHEMA = "ppar-scores/1"


def window_record(start: int, n: int, out: Output, b: int, kept: np.ndarray, forced: np.ndarray | None, cfg: PPARConfig,
                  name_actions: bool = True) -> dict:
    """One window of the score map (README: schema ppar-scores/1). ``name_actions`` False: the
    weights' action classes do not describe real video (synthetic ones), so none is named."""
    probs = out.action_logits[b].softmax(-1)
    top = probs.topk(min(5, len(cfg.actions)))
    priv = out.privacy_logits[b].sigmoid()
    rec = {
        "start": start,
        "frames": n,
        "kept_fraction": round(float(kept.mean()), 6),
        "scores": significant(out.scores[b].view(cfg.grid).numpy()),
        "keep": kept.astype(np.uint8).tolist(),
        "actions": [{"label": cfg.actions[i], "p": round(float(p), 6)} for p, i in zip(top.values, top.indices)]
        if name_actions else None,
        "privacy": {a: round(float(p), 6) for a, p in zip(cfg.attributes, priv)},
    }
    if forced is not None:
        rec["guard"] = forced.astype(np.uint8).tolist()  # tubelets the face guard pruned whatever their score
    return rec


def significant(a: np.ndarray, digits: int = 4) -> list:
    """Nested lists of ``a``'s values to ``digits`` significant digits, each written as short as it
    reads. Scores are attention differences of about 1/N (1e-4 on a 1,600-tubelet grid): fixed
    decimals would round most of them to a few shared values, and float32 values turned into Python
    floats print 17 digits.

    The value of ``float(f"{v:.{digits}g}")`` for each, in array operations: formatting a window's
    1,600 scores one by one held the GIL 2.0 ms, these 0.2 ms. A float32 times 10**k, k <= 12, is
    exact in float64 (24 + 28 bits), so rounding it there rounds the exact value, half to even as
    the formatting does, and its quotient by 10**k is the double nearest the decimal. Other values
    take the string."""
    x = a.astype(np.float64).ravel()
    out = x.copy()
    mag = np.abs(x)
    fast = np.isfinite(x) & (mag > 0)
    k = np.zeros(len(x), np.int64)
    k[fast] = digits - 1 - np.floor(np.log10(mag[fast])).astype(np.int64)
    lo, hi = 10.0 ** (digits - 1), 10.0 ** digits
    k += mag * 10.0 ** k >= hi  # log10 a little off at a power of ten: the exact products say where it lies
    k -= (mag * 10.0 ** k < lo) & fast
    fast &= (a.dtype == np.float32) & (k >= 0) & (k <= 12)
    out[fast] = np.round(x[fast] * 10.0 ** k[fast]) / 10.0 ** k[fast]
    slow = ~fast & (x != 0)
    out[slow] = [float(f"{v:.{digits}g}") for v in x[slow]]
    return out.reshape(a.shape).tolist()


class ScoreLog:
    """One video's windows, as they are filled: what its result and its score map need, in memory
    that does not grow with the video. A window's record is 95 KB as Python objects (a day of 25 fps
    video has 67,500 windows), so with a score map to write the records go, as JSON, to an unnamed
    temporary file beside it (gone with the process, whatever ends it), and :meth:`write` joins them
    with the file's head and summary at the end."""

    def __init__(self, beside: Path | None = None):
        """``beside``: the score map's folder, None without a score map."""
        self.windows = 0
        self.kept_sum, self.kept_low = 0.0, 1.0  # kept fractions: their sum and the lowest
        self.forced_sum, self.guarded = 0.0, False  # tubelets the face guard forced, fractions summed
        self._changed, self._prev = 0.0, None  # flicker: the changed fractions summed, the last kept grid
        self._records = tempfile.TemporaryFile("w+", dir=beside) if beside is not None else None

    def add(self, record: dict) -> None:
        keep = np.asarray(record["keep"], bool)
        if self._prev is not None:
            self._changed += float((keep != self._prev).mean())
        self._prev = keep
        self.kept_sum += record["kept_fraction"]
        self.kept_low = min(self.kept_low, record["kept_fraction"])
        if "guard" in record:
            self.guarded = True
            self.forced_sum += float(np.mean(record["guard"]))
        if self._records is not None:
            self._records.write(("," if self.windows else "") + json.dumps(record, separators=(",", ":"), allow_nan=False))
        self.windows += 1

    @property
    def kept_fraction(self) -> float:
        return self.kept_sum / self.windows

    @property
    def flicker(self) -> float | None:
        """:func:`flicker` of the windows added, one after another."""
        return round(self._changed / (self.windows - 1), 6) if self.windows > 1 else None

    def write(self, path: Path, info: VideoInfo, result: FileResult, weights: LoadedWeights, opts: Options,
              backend: str) -> None:
        """The score map (README: schema ppar-scores/1) into ``path``."""
        head, summary = score_map(info, result, self, weights, opts, backend)
        with open(path, "w") as f:
            f.write(json.dumps(head, separators=(",", ":"), allow_nan=False)[:-1] + ',"windows":[')
            self._records.seek(0)
            shutil.copyfileobj(self._records, f)
            f.write('],"summary":' + json.dumps(summary, separators=(",", ":"), allow_nan=False) + "}")

    def close(self) -> None:
        """Drop the records. The file is unnamed, so nothing of it outlives this; a flush that fails
        here (a full disk) has failed the video already, or comes after the score map was written."""
        if self._records is not None:
            with contextlib.suppress(OSError):
                self._records.close()


def score_map(info: VideoInfo, result: FileResult, log: ScoreLog, weights: LoadedWeights,
              opts: Options, backend: str) -> tuple[dict, dict]:
    """The score map's fields before its windows, and its summary."""
    cfg = weights.model.cfg
    gt, gh, gw = cfg.grid
    head = {
        "schema": SCHEMA,
        "ppar_version": __version__,
        "input": {"path": str(info.path), "fps": float(info.fps), "fps_rational": str(info.fps), "frames": result.frames,
                  "width": info.width, "height": info.height, "decoder": backend},
        "model": {"name": cfg.name, "weights": str(weights.path), "weights_sha256": weights.sha256,
                  "keep": opts.keep_ratio, "lambda_priv": cfg.lambda_priv if opts.lambda_priv is None else opts.lambda_priv,
                  "hysteresis": opts.hysteresis, "fill": opts.fill, "guard": guard_record(log, opts),
                  "action_labels": {"classes": len(cfg.actions), "label_set": label_set(weights),
                                    "named": names_real_actions(weights)}},
        "grid": {"shape": [gt, gh, gw], "tubelet": list(cfg.tubelet), "clip_frames": cfg.frames,
                 "frame_stride": cfg.frame_stride, "clip_span": cfg.clip_span,
                 "source_frames_per_tubelet": cfg.tubelet[0] * cfg.frame_stride,
                 "row_edges": cell_edges(info.height, gh), "col_edges": cell_edges(info.width, gw)},
    }
    summary = {"kept_fraction": round(result.kept_fraction, 6), "windows": log.windows, "flicker": log.flicker,
               "seconds": round(result.seconds, 3), "notes": result.notes}
    return head, summary


def label_set(weights: LoadedWeights) -> str:
    """What the weights' action classes are: the training data's name (provenance), or unknown."""
    return str(weights.provenance.get("label_set") or weights.provenance.get("format") or "unknown")


def names_real_actions(weights: LoadedWeights) -> bool:
    """Weights trained on the synthetic benchmark know stick-figure classes: their names would be
    wrong on real video ("Clap 0.97" for a man singing), so the score map names none."""
    return "synth" not in label_set(weights) and "synth" not in str(weights.provenance.get("data", ""))


def flicker(kept: np.ndarray, follows: np.ndarray | None = None) -> float | None:
    """Fraction of tubelet positions whose kept state changes from one window to the next: kept is
    (windows, ...) bool, follows[i] whether window i comes right after window i-1 (default: all do).
    None when no window follows another."""
    kept = np.asarray(kept, bool).reshape(len(kept), -1)
    pairs = np.ones(len(kept), bool) if follows is None else np.asarray(follows, bool)
    changed = (kept[1:] != kept[:-1]).mean(1)[pairs[1:]]
    return round(float(changed.mean()), 6) if len(changed) else None


def guard_record(log: ScoreLog, opts: Options) -> dict | None:
    if not log.guarded:
        return None
    return {"detector": "centerface", **asdict(opts.guard_config), "forced_fraction": round(log.forced_sum / log.windows, 6)}
