"""The per-file frame stream: decode -> clips -> model -> kept tubelets -> fill -> encode (decoding
and the face guard run ahead in front.py).

Ordinary sizes take one pass: a window's source frames wait in memory while its clip is scored,
then are filled and encoded. A window of very large frames does not fit a small machine (8K: 32
frames are 3.2 GB), so above front.WINDOW_BYTES a file is read twice: first at a reduced size, enough
for the model and the face guard, which decide every window's kept tubelets; then at full size a
few frames at a time, filled with those decisions and encoded. Memory then grows with the frame
size only through those few frames.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import torch

from ppar_cli.core.clips import resize_frames, sample_clip, slab_index
from ppar_cli.core.config import PPARConfig
from ppar_cli.core.model import PPARModel
from ppar_cli.core.scoring import score_clips
from ppar_cli.media.decode import FrameReader
from ppar_cli.media.probe import VideoError
from ppar_cli.pipeline.options import Options
from ppar_cli.pipeline.scoremap import window_record

if TYPE_CHECKING:
    from ppar_cli.pipeline.gpu_start import GpuStart

# Full-resolution frames waiting for their batch to be scored are held up to about this many bytes
# (fewer clips per batch at 4K); memory stays flat in the video's length either way.
PENDING_BYTES = 384 * 2**20
FILL_BYTES = 256 * 2**20  # frames per chunk of the second pass


class ModelInput:
    """A window's source frames -> what the model sees of them: sampled, resized once, uint8."""

    def __init__(self, cfg: PPARConfig):
        self.cfg, self.scratch = cfg, None

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        cfg = self.cfg
        sampled = sample_clip(frames, cfg)
        if sampled.shape[1:3] != (cfg.image_size, cfg.image_size):
            # Resizing a strided view would first copy it to fresh memory (page faults every window):
            # gather it into one reused buffer. Only when resizing, which returns new memory.
            if self.scratch is None or self.scratch.shape != sampled.shape:
                self.scratch = np.empty_like(sampled)
            np.copyto(self.scratch, sampled)
            sampled = self.scratch
        return resize_frames(torch.from_numpy(sampled), cfg.image_size)


def score_windows(source: Iterable[tuple[np.ndarray, np.ndarray | None]], model: PPARModel, opts: Options,
                  device: torch.device, emit: Callable[[np.ndarray, np.ndarray, np.ndarray, dict], None],
                  name_actions: bool = True, gpu: GpuStart | None = None) -> None:
    """Score a video window by window, in batches. ``source``: each window's source frames and the
    tubelets the face guard forces (None without a guard), as a Front gives them.
    ``emit(frames, kept, slab_of_frame, record)`` gets each window, in order, once its kept
    tubelets are known, with its score-map record. ``gpu``: the start of ``model`` on a GPU
    (``device``), until which a copy on the CPU scores the windows (gpu_start.py)."""
    cfg = model.cfg
    model_input = ModelInput(cfg)
    start = 0
    pending: list[tuple] = []
    last_kept = None  # the model's kept mask of the previous window, for hysteresis

    def flush() -> None:
        nonlocal start, last_kept
        while pending:
            on, where = gpu.now() if gpu is not None else (model, device)
            # the model's copy on the CPU while the GPU starts, a window at a time: the GPU takes the
            # rest as soon as it has started
            part = pending[:1] if on is not model else pending[:]
            out = score_clips(on, torch.stack([small for _, small, _ in part]), opts.keep_ratio, where, opts.lambda_priv,
                              hysteresis=opts.hysteresis, prev_kept=last_kept)
            if not all(torch.isfinite(t).all() for t in (out.scores, out.action_logits, out.privacy_logits)):
                # NaN scores sort in grid order: the kept tubelets would be arbitrary, so nothing is written
                raise VideoError(f"non-finite tubelet scores in the window at frame {start}; no frame of it was written")
            last_kept = out.kept[-1]
            for b, (frames, _, forced) in enumerate(part):
                kept = out.kept[b].numpy()
                if forced is not None:
                    kept = kept & ~forced
                emit(frames, kept, slab_index(len(frames), cfg), window_record(start, len(frames), out, b, kept, forced, cfg, name_actions))
                start += len(frames)
            del pending[:len(part)]

    for frames, forced in source:
        pending.append((frames, model_input(frames), forced))
        if len(pending) >= min(opts.batch_size, max(1, PENDING_BYTES // frames.nbytes)):
            flush()
    if pending:
        flush()


def fill_pass(reader: FrameReader, windows: list[dict], cfg: PPARConfig,
              emit: Callable[[np.ndarray, np.ndarray, np.ndarray, dict], None]) -> None:
    """Second pass for very large frames: full-size frames a few at a time, each handed to ``emit``
    with the kept tubelets that the scoring pass decided for its window."""
    chunk = max(1, FILL_BYTES // (reader.width * reader.height * 3))
    w, offset = 0, 0  # current window, and the frame's place in it
    for frames in reader.chunks(chunk):
        done = 0
        while done < len(frames):
            if w == len(windows):  # more frames than the scoring pass saw: never written unscored
                raise VideoError(f"{reader.info.path}: decoded more frames than on the first pass; nothing written")
            rec = windows[w]
            n = min(len(frames) - done, rec["frames"] - offset)
            slab = slab_index(rec["frames"], cfg)[offset:offset + n]
            emit(frames[done:done + n], np.asarray(rec["keep"], bool), slab, rec)
            done, offset = done + n, offset + n
            if offset == rec["frames"]:
                w, offset = w + 1, 0
