"""The score map (`OUT.json`, schema ppar-scores/1, documented in the README): one record per
window (scores, kept tubelets, guard-forced tubelets, the heads' outputs) and the file's summary."""
from __future__ import annotations

from dataclasses import asdict

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


def score_map(info: VideoInfo, result: FileResult, windows: list[dict], weights: LoadedWeights,
               opts: Options, backend: str) -> dict:
    cfg = weights.model.cfg
    gt, gh, gw = cfg.grid
    return {
        "schema": SCHEMA,
        "ppar_version": __version__,
        "input": {"path": str(info.path), "fps": float(info.fps), "fps_rational": str(info.fps), "frames": result.frames,
                  "width": info.width, "height": info.height, "decoder": backend},
        "model": {"name": cfg.name, "weights": str(weights.path), "weights_sha256": weights.sha256,
                  "keep": opts.keep_ratio, "lambda_priv": cfg.lambda_priv if opts.lambda_priv is None else opts.lambda_priv,
                  "hysteresis": opts.hysteresis, "fill": opts.fill, "guard": guard_record(windows, opts),
                  "action_labels": {"classes": len(cfg.actions), "label_set": label_set(weights),
                                    "named": names_real_actions(weights)}},
        "grid": {"shape": [gt, gh, gw], "tubelet": list(cfg.tubelet), "clip_frames": cfg.frames,
                 "frame_stride": cfg.frame_stride, "clip_span": cfg.clip_span,
                 "source_frames_per_tubelet": cfg.tubelet[0] * cfg.frame_stride,
                 "row_edges": cell_edges(info.height, gh), "col_edges": cell_edges(info.width, gw)},
        "windows": windows,
        "summary": {"kept_fraction": round(result.kept_fraction, 6), "windows": len(windows),
                    "flicker": flicker(np.array([w["keep"] for w in windows])), "seconds": round(result.seconds, 3), "notes": result.notes},
    }


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


def guard_record(windows: list[dict], opts: Options) -> dict | None:
    if "guard" not in windows[0]:
        return None
    forced = [np.mean(w["guard"]) for w in windows]
    return {"detector": "centerface", **asdict(opts.guard_config), "forced_fraction": round(float(np.mean(forced)), 6)}


