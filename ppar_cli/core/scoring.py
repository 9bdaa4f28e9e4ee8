"""Scoring windows of video with the model: the one place clips meet the device.

Both `ppar anonymize` and `ppar eval` go through :func:`score_clips`, so the two see the same
kept masks, including with hysteresis, where each window's pruning leans towards the tubelets
its predecessor kept (less flicker at the same kept fraction).
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np
import torch

from ppar_cli.core.clips import prepare_clips
from ppar_cli.core.model import Output, PPARModel


# One model call at a time on a GPU, when several videos are anonymized at once (--jobs): the flags
# that exact_fp32 sets are global, so calls overlapping in time would restore them under each other.
_ONE_AT_A_TIME = threading.Lock()


def score_clips(model: PPARModel, clips: torch.Tensor, keep_ratio: float, device: torch.device,
                lambda_priv: float | None = None, hysteresis: float = 0.0,
                follows: np.ndarray | None = None, prev_kept: torch.Tensor | None = None) -> Output:
    """Run the model on uint8 clips (B, T, H, W, 3) sampled at the clip stride; outputs on the CPU.

    With ``hysteresis`` > 0, window b gets a bonus of that many score standard deviations on the
    tubelets kept by the window it follows: window b-1 where ``follows[b]`` (default: all, a
    stream of consecutive windows), and ``prev_kept`` (gt, gh, gw) for b = 0. The windows then run
    one after another, since each needs its predecessor's kept mask.
    """
    # On the CPU those flags mean nothing, and the videos' calls overlap: each has its own threads.
    exact = exact_fp32() if device.type == "cuda" else contextlib.nullcontext()
    with exact, torch.inference_mode(), torch.autocast(device.type, enabled=False):
        if device.type == "cuda":  # page-locked, so the copy overlaps the previous batch's kernels
            clips = clips.pin_memory()
        x = prepare_clips(clips.to(device, non_blocking=True), model.cfg)
        if hysteresis <= 0:
            out = model(x, keep_ratio=keep_ratio, lambda_priv=lambda_priv)
        else:
            follows = np.ones(len(x), bool) if follows is None else follows
            prev = prev_kept.to(device) if prev_kept is not None else None
            parts = []
            for b in range(len(x)):
                sticky = hysteresis * prev.reshape(1, -1).float() if follows[b] and prev is not None else None
                parts.append(model(x[b:b + 1], keep_ratio=keep_ratio, lambda_priv=lambda_priv, sticky=sticky))
                prev = parts[-1].kept[0]
            out = Output(*(torch.cat(ts) for ts in zip(*parts)))
    return Output(*(t.float().cpu() if t.is_floating_point() else t.cpu() for t in out))


@contextlib.contextmanager
def exact_fp32():
    """Full fp32 on every device, so a GPU keeps the tubelets the CPU keeps. The kept set is a top-k
    over scores that differ by little (near-ties): on an H100, bf16 autocast flipped 1.3% of the
    decisions and TF32 (PyTorch's default in cuDNN's convolutions) 0.1% (benchmarks/gpu.py), while
    the bundled model in fp32 still scores 5,000 clips a second there. The face guard's searches on
    a GPU run under it too. One caller at a time: the flags are global."""
    with _ONE_AT_A_TIME:
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
