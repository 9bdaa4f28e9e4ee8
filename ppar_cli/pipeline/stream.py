"""The per-file frame stream: decode -> clips -> model -> kept tubelets -> fill -> encode.

Ordinary sizes take one pass: a window's source frames wait in memory while its clip is scored,
then are filled and encoded. A window of very large frames does not fit a small machine (8K: 32
frames are 3.2 GB), so above WINDOW_BYTES a file is read twice: first at a reduced size, enough
for the model and the face guard, which decide every window's kept tubelets; then at full size a
few frames at a time, filled with those decisions and encoded. Memory then grows with the frame
size only through those few frames.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterator

import numpy as np
import torch

from ppar_cli.core.clips import resize_frames, sample_clip, slab_index
from ppar_cli.core.config import PPARConfig
from ppar_cli.core.model import PPARModel
from ppar_cli.core.scoring import score_clips
from ppar_cli.media.decode import FrameReader
from ppar_cli.media.probe import VideoError
from ppar_cli.pipeline.guard import FaceGuard
from ppar_cli.pipeline.options import Options
from ppar_cli.pipeline.scoremap import window_record

# Full-resolution frames waiting for their batch to be scored are held up to about this many bytes
# (fewer clips per batch at 4K); memory stays flat in the video's length either way.
PENDING_BYTES = 384 * 2**20
WINDOW_BYTES = 2**30  # one window's source frames above this: two passes (4K: 0.8 GB, one pass; 8K: 3.2 GB, two)
FILL_BYTES = 256 * 2**20  # frames per chunk of the second pass
SCORE_SIDE = 640  # long side of the first pass's frames: the face guard's own detector size


def two_passes(cfg: PPARConfig, width: int, height: int) -> bool:
    return cfg.clip_span * width * height * 3 > WINDOW_BYTES


def _decoded_clips(reader: FrameReader, cfg: PPARConfig, guard: FaceGuard | None) -> Iterator[tuple]:
    """Per window: source frames, what the model sees of them (sampled, resized once, uint8), and
    the tubelets the face guard forces (None without a guard)."""
    scratch = None
    for frames in reader.chunks(cfg.clip_span):
        sampled = sample_clip(frames, cfg)
        if sampled.shape[1:3] != (cfg.image_size, cfg.image_size):
            # Resizing a strided view would first copy it to fresh memory (page faults every window):
            # gather it into one reused buffer. Only when resizing, which returns new memory.
            if scratch is None or scratch.shape != sampled.shape:
                scratch = np.empty_like(sampled)
            np.copyto(scratch, sampled)
            sampled = scratch
        small = resize_frames(torch.from_numpy(sampled), cfg.image_size)
        forced = guard.forced(frames, cfg.grid, slab_index(len(frames), cfg)) if guard else None
        yield frames, small, forced


def _ahead(items: Iterator, depth: int) -> Iterator:
    """Run a generator in a thread, ``depth`` items ahead of the consumer (decoding and resizing
    release the GIL, so they overlap the model). Exceptions surface in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            q.put((done, None))
        except BaseException as e:  # noqa: BLE001 -- handed to the consumer
            q.put((done, e))
        finally:
            items.close()

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            item, err = q.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        deadline = time.monotonic() + 3.0
        while t.is_alive() and time.monotonic() < deadline:  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.05)
        # A producer stuck inside a decoder call is a daemon thread: it is left behind rather than
        # holding up Ctrl-C, and it ends with the process.


def score_windows(reader: FrameReader, model: PPARModel, opts: Options, device: torch.device,
                  guard: FaceGuard | None, emit: Callable[[np.ndarray, np.ndarray, np.ndarray, dict], None] | None,
                  name_actions: bool = True) -> list[dict]:
    """Score a video window by window, in batches; ``emit(frames, kept, slab_of_frame, record)``
    gets each window's source frames once its kept tubelets are known (None: scoring only).
    Returns the windows' score-map records."""
    cfg = model.cfg
    windows: list[dict] = []
    start = 0
    pending: list[tuple] = []
    last_kept = None  # the model's kept mask of the previous window, for hysteresis

    def flush() -> None:
        nonlocal start, last_kept
        out = score_clips(model, torch.stack([small for _, small, _ in pending]), opts.keep_ratio, device, opts.lambda_priv,
                          hysteresis=opts.hysteresis, prev_kept=last_kept)
        if not all(torch.isfinite(t).all() for t in (out.scores, out.action_logits, out.privacy_logits)):
            # NaN scores sort in grid order: the kept tubelets would be arbitrary, so nothing is written
            raise VideoError(f"non-finite tubelet scores in the window at frame {start}; no frame of it was written")
        last_kept = out.kept[-1]
        for b, (frames, _, forced) in enumerate(pending):
            kept = out.kept[b].numpy()
            if forced is not None:
                kept = kept & ~forced
            windows.append(window_record(start, len(frames), out, b, kept, forced, cfg, name_actions))
            if emit is not None:
                emit(frames, kept, slab_index(len(frames), cfg), windows[-1])
            start += len(frames)
        pending.clear()

    for clip in _ahead(_decoded_clips(reader, cfg, guard), depth=2):
        pending.append(clip)
        if len(pending) >= min(opts.batch_size, max(1, PENDING_BYTES // clip[0].nbytes)):
            flush()
    if pending:
        flush()
    return windows


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
