"""Pictures of what the model decided: the original with the tubelet scores as a heatmap, the kept
grid (white) and the face guard's forced tubelets (red) drawn over it, beside the anonymized frame.

Used by `ppar anonymize --preview FILE.mp4` (a side-by-side video) and scripts/preview_sheet.py
(a PNG contact sheet from a finished output and its score map).
"""
from __future__ import annotations

import numpy as np

from ppar_cli.core.clips import cell_edges, cell_index

_INFERNO: np.ndarray | None = None


def _colormap() -> np.ndarray:
    """(256, 3) float32 inferno colours (matplotlib's table, loaded once)."""
    global _INFERNO
    if _INFERNO is None:
        from matplotlib import colormaps

        _INFERNO = (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)
    return _INFERNO


def overlay(frames: np.ndarray, scores: np.ndarray, keep: np.ndarray, guard: np.ndarray | None = None,
            alpha: float = 0.45) -> np.ndarray:
    """uint8 (n, H, W, 3) frames of one temporal slab; scores, keep, guard: (gh, gw) grids of that slab.
    Scores are stretched to the slab's own range (the heatmap shows rank, not absolute value)."""
    n, H, W, _ = frames.shape
    gh, gw = keep.shape
    s = np.asarray(scores, np.float32)
    s = (s - s.min()) / max(float(s.max() - s.min()), 1e-12)
    rows, cols = cell_index(H, gh), cell_index(W, gw)
    heat = _colormap()[(s * 255).astype(np.uint8)][rows[:, None], cols[None, :]]  # (H, W, 3)
    out = (frames.astype(np.float32) * (1 - alpha) + heat * alpha).astype(np.uint8)
    guard = np.zeros_like(keep) if guard is None else guard
    t = max(1, min(H, W) // 180)  # outline width
    edge = _border(H, gh, t)[:, None] | _border(W, gw, t)[None, :]  # each cell's own border, t pixels wide
    for grid, colour in ((keep & ~guard, (255, 255, 255)), (guard, (255, 40, 40))):
        mask = edge & grid[rows[:, None], cols[None, :]]
        out[:, mask] = colour
    return out


def _border(size: int, cells: int, t: int) -> np.ndarray:
    """(size,) bool: pixels within t of either end of their cell."""
    edges, idx, x = np.array(cell_edges(size, cells)), cell_index(size, cells), np.arange(size)
    return np.minimum(x - edges[idx], edges[idx + 1] - 1 - x) < t


def side_by_side(original: np.ndarray, anonymized: np.ndarray, window: dict, slab_of_frame: np.ndarray) -> np.ndarray:
    """(n, H, 2W, 3): each frame's overlay (from its score-map window record) left, the output right."""
    scores, keep = np.asarray(window["scores"]), np.asarray(window["keep"], bool)
    guard = np.asarray(window["guard"], bool) if "guard" in window else np.zeros_like(keep)
    left = np.empty_like(original)
    starts = np.flatnonzero(np.diff(slab_of_frame, prepend=-1))
    for a, b in zip(starts, list(starts[1:]) + [len(original)]):
        j = slab_of_frame[a]
        left[a:b] = overlay(original[a:b], scores[j], keep[j], guard[j])
    return np.concatenate([left, anonymized], axis=2)
