"""Metrics of this field: action top-1, privacy cMAP and macro F1, and on the synthetic benchmark
how tubelet pruning treats ground-truth privacy and action pixels."""
from __future__ import annotations

from typing import Callable

import numpy as np


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP of one attribute (area under the precision-recall steps); NaN when there is no positive."""
    pos = labels.sum()
    if pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / pos)


def privacy_metrics(probs: np.ndarray, labels: np.ndarray, names: list[str]) -> dict:
    """cMAP (mean AP over attributes with a positive) and macro F1 at 0.5, plus per-attribute AP."""
    aps = {n: average_precision(probs[:, i], labels[:, i]) for i, n in enumerate(names)}
    pred = probs >= 0.5
    f1s = []
    for i in range(labels.shape[1]):
        tp = float((pred[:, i] & (labels[:, i] > 0.5)).sum())
        fp = float((pred[:, i] & (labels[:, i] <= 0.5)).sum())
        fn = float((~pred[:, i] & (labels[:, i] > 0.5)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    valid = [v for v in aps.values() if not np.isnan(v)]
    return {"privacy_cmap": float(np.mean(valid)) if valid else float("nan"), "privacy_f1": float(np.mean(f1s)),
            "per_attribute_ap": aps}


def pixel_metrics(keep: np.ndarray, priv_px: np.ndarray, act_px: np.ndarray) -> dict:
    """keep: bool (B, N); priv_px / act_px: (B, N) ground-truth pixel counts per tubelet.
    Returns the fraction of privacy pixels removed and of action pixels kept, pooled over clips."""
    pp, ap = priv_px.sum(), act_px.sum()
    return {"privacy_pixels_removed": float((priv_px * ~keep).sum() / pp) if pp else float("nan"),
            "action_pixels_kept": float((act_px * keep).sum() / ap) if ap else float("nan")}


def attention_mass(attn: np.ndarray, px: np.ndarray) -> float:
    """Share of (renormalised) CLS attention that falls on tubelets holding any of these pixels."""
    return float((attn * (px > 0)).sum() / max(attn.sum(), 1e-12))


def oracle_keep(priv_px: np.ndarray, act_px: np.ndarray, k: int) -> np.ndarray:
    """The pruning that bounds any tubelet pruning: every tubelet holding privacy pixels is dropped,
    then those with the fewest action pixels, until at most k remain. (N,) counts -> (N,) bool."""
    free = np.flatnonzero(priv_px == 0)
    keep = np.zeros(len(priv_px), bool)
    keep[free[np.argsort(-act_px[free], kind="stable")[:k]]] = True
    return keep


def random_keep(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    keep = np.zeros(n, bool)
    keep[rng.permutation(n)[:k]] = True
    return keep


def by_chunks(f: Callable[..., np.ndarray], *arrays: np.ndarray, chunk: int = 64) -> np.ndarray:
    """``f`` over ``chunk`` windows at a time (the first axis of every array), into one array: its
    temporaries (pixel masks, float copies) stay a chunk's size, not the whole set's."""
    n = len(arrays[0])
    first = f(*(a[:chunk] for a in arrays))
    out = np.empty((n, *first.shape[1:]), first.dtype)
    out[:len(first)] = first
    for i in range(chunk, n, chunk):
        out[i:i + chunk] = f(*(a[i:i + chunk] for a in arrays))
    return out


def tubelet_motion(raw: np.ndarray, cfg) -> np.ndarray:
    """Motion energy per tubelet: the mean absolute frame difference of its pixels, summed over its
    frames. raw: uint8 (B, T, S, S, 3) -> float32 (B, N), a chunk of windows at a time, so that the
    float copy of the pixels stays small (a whole evaluation set's is 4 times its bytes)."""
    t, p, _ = cfg.tubelet

    def motion(r: np.ndarray) -> np.ndarray:
        x = r.astype(np.float32).mean(-1)
        diff = np.abs(np.diff(x, axis=1, prepend=x[:, :1]))
        B, T, S, _ = diff.shape
        return diff.reshape(B, T // t, t, S // p, p, S // p, p).sum((2, 4, 6)).reshape(B, -1)

    return by_chunks(motion, raw)


def motion_metrics(keep: np.ndarray, motion: np.ndarray) -> dict:
    """The share of the clips' motion energy inside kept tubelets over the share of area kept:
    1.0 is what random pruning gives, above 1 keeps the moving parts preferentially."""
    total, area = motion.sum(), keep.mean()
    return {"motion_kept": float((motion * keep).sum() / total) if total else float("nan"),
            "motion_over_area": float((motion * keep).sum() / total / area) if total and area else float("nan")}


def static_keep(kept: np.ndarray, k: int) -> np.ndarray:
    """The grid positions a method keeps most often, the same for every clip: the baseline a model
    that ignores content would match. kept: bool (B, N) -> bool (N,) with k True."""
    keep = np.zeros(kept.shape[1], bool)
    keep[np.argsort(-kept.sum(0), kind="stable")[:k]] = True
    return keep