"""Clip geometry, in one place: which source frames a clip samples, which tubelet each frame and
pixel belongs to, and how frames become the model's input.

A clip is ``frames`` model frames sampled every ``frame_stride`` source frames; a tubelet spans
``t * frame_stride`` source frames. Tubelet row r of a gh-row grid covers source rows y with
floor(y * gh / H) == r, so the rectangles partition any frame size exactly (no padding, no gaps,
no overlap), whatever size the model sees.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from ppar_cli.core.config import PPARConfig

# Inputs are scaled to roughly zero mean / unit variance; the same constants serve training and inference.
PIXEL_MEAN, PIXEL_STD = 0.45, 0.25


def cell_index(size: int, cells: int) -> np.ndarray:
    """Grid cell of each of ``size`` pixels when split into ``cells`` near-equal runs."""
    return (np.arange(size) * cells) // size


def cell_edges(size: int, cells: int) -> list[int]:
    """Pixel edges of the runs of :func:`cell_index` (cells + 1 values, first 0, last ``size``)."""
    return [-(-r * size // cells) for r in range(cells + 1)]


def pixel_mask(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """(gh, gw) bool grid -> (H, W) bool mask at source resolution."""
    rows, cols = cell_index(height, grid.shape[0]), cell_index(width, grid.shape[1])
    return grid[rows[:, None], cols[None, :]]


def resize_frames(frames: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> uint8 (N, size, size, 3) (or (N, h, w, 3) for size (h, w)), antialiased bilinear.

    Stays in uint8 (channels-last): at 1280x720 far cheaper than a float round trip, and within one
    level of it. Training data and `ppar anonymize` both go through here.
    """
    import torch.nn.functional as F

    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(frames.shape[1:3]) == hw:
        return frames
    x = F.interpolate(frames.permute(0, 3, 1, 2), size=hw, mode="bilinear", antialias=True, align_corners=False)
    return x.permute(0, 2, 3, 1)


def prepare_clips(frames: torch.Tensor, cfg: PPARConfig) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) frames already sampled at the clip stride -> normalised (B, 3, T, S, S)."""
    B, T, H, W, _ = frames.shape
    S = cfg.image_size
    x = normalize(resize_frames(frames.reshape(B * T, H, W, 3), S))
    return x.view(B, T, S, S, 3).permute(0, 4, 1, 2, 3).contiguous()


def normalize(frames: "torch.Tensor") -> "torch.Tensor":
    """uint8 pixels -> float, about zero mean and unit variance (every model here takes this)."""
    return (frames.float() / 255.0 - PIXEL_MEAN) / PIXEL_STD


def sample_clip(frames: np.ndarray, cfg: PPARConfig) -> np.ndarray:
    """Source frames of one window (at most clip_span) -> the cfg.frames the model sees, the last repeated as padding."""
    sampled = frames[:: cfg.frame_stride][: cfg.frames]
    if len(sampled) < cfg.frames:
        sampled = np.concatenate([sampled, np.repeat(sampled[-1:], cfg.frames - len(sampled), axis=0)])
    return sampled


def slab_index(n_frames: int, cfg: PPARConfig) -> np.ndarray:
    """Temporal tubelet index of each source frame of a window."""
    return (np.arange(n_frames) // cfg.frame_stride) // cfg.tubelet[0]
