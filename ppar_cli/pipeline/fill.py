"""Filling pruned tubelets: black (the method's own), or blur, pixelate and mean strong enough to
hide a face. Rectangles come from the grid geometry of clips.py."""
from __future__ import annotations

import numpy as np

from ppar_cli.core.clips import cell_edges, cell_index
from ppar_cli.media.decode import YUVFrames

FILLS = ("black", "blur", "pixelate", "mean")


def smooth_fill(frames: np.ndarray, fill: str, grid_hw: tuple[int, int]) -> np.ndarray:
    """Replacement content for blur / pixelate / mean fills, strong enough to hide a face."""
    import torch  # here, not at the top: the CLI imports this module before it needs PyTorch
    import torch.nn.functional as F

    n, H, W, _ = frames.shape
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    if fill == "mean":  # each tubelet rectangle of each frame becomes its mean colour
        small = F.adaptive_avg_pool2d(x, grid_hw)
        return small[:, :, cell_index(H, grid_hw[0])][:, :, :, cell_index(W, grid_hw[1])].round().byte().permute(0, 2, 3, 1).numpy()
    # pixelate: blocks of about 16 px; blur: averaged over about 60 px (a face's size) and smoothly
    # interpolated back, which leaves a blob no face detector fires on (4 cells on the short side at least)
    cells = max(4, min(H, W) // (16 if fill == "pixelate" else 60))
    small = F.adaptive_avg_pool2d(x, (max(1, H * cells // min(H, W)), max(1, W * cells // min(H, W))))
    if fill == "pixelate":
        out = F.interpolate(small, size=(H, W), mode="nearest")
    else:  # blur: averaging down then smooth interpolation up
        out = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)
    return out.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def pruned_rects(grid: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(gh, gw) bool keep grid -> (first row, end row, first col, end col) rectangles of pruned
    cells that cover them once: each row's runs of pruned cells, a run joined with the same run in
    the rows below it. Found in array operations, for all rows at once: each rectangle costs a
    few slice assignments, and the Python around them holds the GIL that a process's videos share."""
    edge = np.zeros((grid.shape[0], 1), np.int8)
    step = np.diff(np.concatenate([edge, (~grid).astype(np.int8), edge], axis=1), axis=1)
    r, c0 = np.nonzero(step == 1)
    if not len(r):  # all kept: a slab of a clip kept whole (--keep near 1)
        return []
    c1 = np.nonzero(step == -1)[1]  # row-major, as the starts: each run's end pairs with its start
    order = np.lexsort((r, c1, c0))
    r, c0, c1 = r[order], c0[order], c1[order]
    first = np.ones(len(r), bool)  # a run that does not continue the same run of the row above
    first[1:] = (c0[1:] != c0[:-1]) | (c1[1:] != c1[:-1]) | (r[1:] != r[:-1] + 1)
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], len(r)) - 1
    return list(zip(r[starts].tolist(), (r[ends] + 1).tolist(), c0[starts].tolist(), c1[starts].tolist()))


def fill_clip(frames: np.ndarray | YUVFrames, keep: np.ndarray, slab_of_frame: np.ndarray,
              fill: str = "black") -> np.ndarray | YUVFrames:
    """Apply a clip's keep grid to its source frames, in place where possible.

    frames: uint8 (L, H, W, 3), or YUVFrames (black only); keep: bool (gt, gh, gw); slab_of_frame:
    (L,) temporal tubelet index of each frame. Pruned tubelets are filled over all their frames, one
    rectangle at a time (:func:`pruned_rects`; no full-frame mask arithmetic: this is on the
    per-frame hot path).
    """
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")
    if keep.all():
        return frames
    if isinstance(frames, YUVFrames):
        if fill != "black":  # the other fills are computed in RGB: such frames are decoded as RGB
            raise ValueError(f"the {fill} fill needs RGB frames")
        return _black_yuv(frames, keep, slab_of_frame)
    frames = np.require(frames, requirements=["W"])
    replacement = None if fill == "black" else smooth_fill(frames, fill, keep.shape[1:])
    for a, b, y0, y1, x0, x1 in _pruned_boxes(keep, slab_of_frame, frames.shape[1:3]):
        region = (slice(a, b), slice(y0, y1), slice(x0, x1))
        frames[region] = 0 if replacement is None else replacement[region]
    return frames


def _pruned_boxes(keep: np.ndarray, slab_of_frame: np.ndarray, size: tuple[int, int]):
    """(first frame, end frame, y0, y1, x0, x1) of each pruned rectangle (:func:`pruned_rects`),
    over the frames of its temporal slab (slabs are contiguous runs)."""
    rows, cols = cell_edges(size[0], keep.shape[1]), cell_edges(size[1], keep.shape[2])
    starts = np.flatnonzero(np.diff(slab_of_frame, prepend=-1))
    for a, b in zip(starts, list(starts[1:]) + [len(slab_of_frame)]):
        for r0, r1, c0, c1 in pruned_rects(keep[slab_of_frame[a]]):
            yield a, b, rows[r0], rows[r1], cols[c0], cols[c1]


def _black_yuv(frames: YUVFrames, keep: np.ndarray, slab_of_frame: np.ndarray) -> YUVFrames:
    """Black in 4:2:0: luma at the format's black, both chroma planes at 128. A chroma sample
    covers 2x2 pixels; one that straddles a pruned cell's edge is blacked too (the pruned pixels'
    colour must not show), so a kept cell beside a pruned one can lose a chroma row or column."""
    y, u, v = frames.planes
    for a, b, y0, y1, x0, x1 in _pruned_boxes(keep, slab_of_frame, frames.shape[1:3]):
        y[a:b, y0:y1, x0:x1] = frames.fmt.black
        chroma = (slice(a, b), slice(y0 // 2, (y1 + 1) // 2), slice(x0 // 2, (x1 + 1) // 2))
        u[chroma] = v[chroma] = 128
    return frames
