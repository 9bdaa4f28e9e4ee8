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


# One model call at a time, when several videos are anonymized at once (--jobs): the flags that
# _exact_fp32 sets are global, so calls overlapping in time would restore them under each other.
_ONE_AT_A_TIME = threading.Lock()

# On a GPU a forward pass costs its kernel launches more than their work, and each launch gives up
# and takes back the GIL. With 8 videos at once on an H100 (0.3.4, benchmarks/gpu.py --profile), one
# pass per video's batch of 4 windows took about 0.4 s, waiting for the GIL between launches, and the
# model was busy for 40 of a run's 50 s. So on these devices the windows that videos wait with are
# scored together, in passes of exactly GPU_BATCH windows (the last padded with copies of its last
# window): a window's scores then do not depend on which windows shared its pass.
GPU_BATCH = 32
COMBINED = {"cuda"}


def score_clips(model: PPARModel, clips: torch.Tensor, keep_ratio: float, device: torch.device,
                lambda_priv: float | None = None, hysteresis: float = 0.0,
                follows: np.ndarray | None = None, prev_kept: torch.Tensor | None = None) -> Output:
    """Run the model on uint8 clips (B, T, H, W, 3) sampled at the clip stride; outputs on the CPU.

    With ``hysteresis`` > 0, window b gets a bonus of that many score standard deviations on the
    tubelets kept by the window it follows: window b-1 where ``follows[b]`` (default: all, a
    stream of consecutive windows), and ``prev_kept`` (gt, gh, gw) for b = 0. The windows then run
    one after another, since each needs its predecessor's kept mask.
    """
    if hysteresis > 0:
        follows = np.ones(len(clips), bool) if follows is None else follows
        prev = prev_kept.to(device) if prev_kept is not None else None
        parts = []
        for b in range(len(clips)):
            sticky = hysteresis * prev.reshape(1, -1).float() if follows[b] and prev is not None else None
            parts.append(_forward(model, clips[b:b + 1], keep_ratio, device, lambda_priv, sticky))
            prev = parts[-1].kept[0]
        return _on_cpu(Output(*(torch.cat(ts) for ts in zip(*parts))))
    if device.type in COMBINED:
        return _COMBINER(model, clips, keep_ratio, device, lambda_priv)
    return _on_cpu(_forward(model, clips, keep_ratio, device, lambda_priv))


def _forward(model: PPARModel, clips: torch.Tensor, keep_ratio: float, device: torch.device,
             lambda_priv: float | None, sticky: torch.Tensor | None = None) -> Output:
    with _ONE_AT_A_TIME, torch.inference_mode(), _exact_fp32(), torch.autocast(device.type, enabled=False):
        if device.type == "cuda":  # page-locked, so the copy overlaps the previous batch's kernels
            clips = clips.pin_memory()
        x = prepare_clips(clips.to(device, non_blocking=True), model.cfg)
        return model(x, keep_ratio=keep_ratio, lambda_priv=lambda_priv, sticky=sticky)


def _on_cpu(out: Output) -> Output:
    return Output(*(t.float().cpu() if t.is_floating_point() else t.cpu() for t in out))


def _padded_passes(model: PPARModel, clips: torch.Tensor, keep_ratio: float, device: torch.device,
                   lambda_priv: float | None) -> Output:
    parts = []
    for part in clips.split(GPU_BATCH):
        n = len(part)
        if n < GPU_BATCH:
            part = torch.cat([part, part[-1:].expand(GPU_BATCH - n, *part.shape[1:])])
        parts.append(Output(*(t[:n] for t in _forward(model, part, keep_ratio, device, lambda_priv))))
    return _on_cpu(Output(*(torch.cat(ts) for ts in zip(*parts))))


class _Request:
    def __init__(self, key: tuple, clips: torch.Tensor):
        self.key, self.clips = key, clips
        self.out: Output | None = None
        self.error: BaseException | None = None
        self.done = False

    def result(self) -> Output:
        if self.error is not None:
            raise self.error
        return self.out


class _Combiner:
    """Scores the requests of several threads in shared passes. A caller that finds no pass running
    runs one for every request then waiting (with the same model and settings) and hands each its
    share; the others wait for theirs. No timer: requests combine only where they queue anyway."""

    def __init__(self):
        self._cv = threading.Condition()
        self._waiting: list[_Request] = []
        self._running = False

    def __call__(self, model: PPARModel, clips: torch.Tensor, keep_ratio: float, device: torch.device,
                 lambda_priv: float | None) -> Output:
        me = _Request((id(model), keep_ratio, lambda_priv, str(device)), clips)
        with self._cv:
            self._waiting.append(me)
            while not me.done:
                if not self._running:  # this thread runs the next pass
                    self._running = True
                    batch = [r for r in self._waiting if r.key == me.key]
                    self._waiting = [r for r in self._waiting if r.key != me.key]
                    break
                self._cv.wait()
            else:
                return me.result()
        try:
            out = _padded_passes(model, torch.cat([r.clips for r in batch]), keep_ratio, device, lambda_priv)
            at = 0
            for r in batch:
                r.out = Output(*(t[at:at + len(r.clips)] for t in out))
                at += len(r.clips)
        except BaseException as e:  # every request of the pass fails with it (Ctrl-C too)
            for r in batch:
                r.error = e
        finally:
            with self._cv:
                for r in batch:
                    r.done = True
                self._running = False
                self._cv.notify_all()
        return me.result()


_COMBINER = _Combiner()


@contextlib.contextmanager
def _exact_fp32():
    """Full fp32 on every device, so a GPU keeps the tubelets the CPU keeps. The kept set is a top-k
    over scores that differ by little (near-ties): on an H100, bf16 autocast flipped 1.3% of the
    decisions and TF32 (PyTorch's default in cuDNN's convolutions) 0.1% (benchmarks/gpu.py), while
    the bundled model in fp32 still scores 5,000 clips a second there."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
