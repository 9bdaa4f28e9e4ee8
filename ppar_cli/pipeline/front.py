"""The front of the frame stream: a video's windows decoded and, with the face guard, searched for
faces, in a thread ahead of the model.

No PyTorch here. `anonymize` starts the fronts of the videos a process begins with (--jobs of
them) before it imports PyTorch and loads the model (about 2 s on 2 cores; with CUDA and 4 worker
processes 6-10 s on an H200 machine's 16 cores, which would otherwise wait). Where the face
guard is to search on a GPU, its detector is made after that start (a LateDetector): the fronts
decode meanwhile and wait for it at their first search. Until the model takes its first window a
front may run up to START_BYTES of windows ahead (1280x720: 24 windows of 4:2:0 frames, 12 in RGB;
4K: 2), then two windows.
"""
from __future__ import annotations

import itertools
import threading
from collections import deque
from pathlib import Path
from typing import Generator, Iterator

import numpy as np

from ppar_cli.core.clips import slab_index
from ppar_cli.core.config import PPARConfig
from ppar_cli.media.decode import FrameReader, yuv_format
from ppar_cli.media.probe import probe
from ppar_cli.pipeline.guard import FaceGuard, GuardConfig

WINDOW_BYTES = 2**30  # one window's source frames above this: two passes (4K: 0.8 GB, one pass; 8K: 3.2 GB, two)
SCORE_SIDE = 640  # long side of the first pass's frames: the face guard's own detector size
# Windows a front may hold before the model takes its first (at least two). On an H200 machine with
# 512 MiB, 16 videos of 720p filled their buffers 4-5 s into the run, while their workers were
# still importing PyTorch (until 6-7.5 s): 11 of 16 cores idle for 3 s. With 1 GiB the cores still
# waited about 3 s, the imports ending later (7.9-9.9 s, FFmpeg's decoder threads then). Measured
# there since (docs/speed.md, "On an H200"), neither taken: 2 GiB on 60 s clips, which 1 GiB does not hold
# (no gain); this depth kept through the model's first pass, not only until it takes a window (the
# cores' dip during that pass's CUDA-graph capture filled, but the capture, beside busy decoders,
# ended later: no gain end to end, and on 2 cores a higher peak of memory).
# Within the memory a video at once is allowed (runtime.VIDEO_BYTES).
START_BYTES = 2**30


def two_passes(cfg: PPARConfig, width: int, height: int) -> bool:
    return cfg.clip_span * width * height * 3 > WINDOW_BYTES


class Ahead:
    """Runs a generator in a daemon thread, ahead of the consumer: up to ``start_depth`` items
    before the first is taken, ``depth`` after. Decoding and the detector release the GIL, so
    they overlap the consumer. Exceptions surface in the consumer; :meth:`close` stops the thread."""

    def __init__(self, items: Generator, depth: int = 2, start_depth: int = 2):
        self._items, self._depth, self._limit = items, depth, max(depth, start_depth)
        self._buf: deque = deque()
        self._cv = threading.Condition()
        self._done = self._stop = False
        self._err: BaseException | None = None
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            for item in self._items:
                with self._cv:
                    while len(self._buf) >= self._limit and not self._stop:
                        self._cv.wait()
                    if self._stop:
                        break
                    self._buf.append(item)
                    self._cv.notify_all()
        except BaseException as e:  # noqa: BLE001 -- handed to the consumer
            self._err = e
        finally:
            self._items.close()
            with self._cv:
                self._done = True
                self._cv.notify_all()

    def __iter__(self) -> Ahead:
        return self

    def __next__(self):
        with self._cv:
            self._limit = self._depth
            while not self._buf and not self._done:
                self._cv.wait()
            if self._buf:
                item = self._buf.popleft()
                self._cv.notify_all()
                return item
        if self._err is not None:
            raise self._err
        raise StopIteration

    def close(self) -> None:
        """Stop the producer and drop what it made. A producer stuck inside a decoder call is left
        behind rather than holding up Ctrl-C (a daemon thread: it ends with the process)."""
        with self._cv:
            self._stop = True
            self._buf.clear()
            self._cv.notify_all()
        self._thread.join(3.0)


class LateDetector:
    """The face guard's detector, made by another thread after the fronts started (on a GPU it needs
    PyTorch and CUDA): :meth:`get` waits for it. None once made means no guard (``--guard auto``
    where none is installed); a failure to make it is raised in every front that asks, so that no
    window goes on unsearched."""

    def __init__(self):
        self._made = threading.Event()
        self._detector = self._error = None

    def set(self, detector) -> None:
        self._detector = detector
        self._made.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._made.set()

    def ready(self) -> bool:
        return self._made.is_set()

    def get(self):
        self._made.wait()
        if self._error is not None:
            raise self._error
        return self._detector


class Front:
    """One video's windows as (source frames, tubelets the guard forces or None), decoded in a
    thread. For very large frames (two passes) the windows are at SCORE_SIDE, for the model and
    the guard; the full-size frames are read again to fill them."""

    def __init__(self, src: Path, cfg: PPARConfig, detector=None, guard: GuardConfig | None = None, yuv: bool = False,
                 threads: int = 0):
        """``yuv``: the windows are YUVFrames where the video allows (decode.yuv_format); for the
        black fill, which the encoder then takes without a conversion. ``threads``: the decoder's
        (runtime.decoder_threads)."""
        self.info = probe(src)
        self.two_passes = two_passes(cfg, self.info.width, self.info.height)
        fmt = yuv_format(self.info) if yuv and not self.two_passes else None
        # PyAV, not decord: decord's reader grows with the video's length and gives no timestamps
        self.reader = FrameReader(self.info, "ffmpeg", SCORE_SIDE if self.two_passes else None, yuv=fmt,
                                  times=self.info.frame_times(), threads=threads)
        self.guard: FaceGuard | None = None  # set by the decoding thread once the detector is known
        start = START_BYTES // (cfg.clip_span * self.reader.frame_bytes)
        self.windows = Ahead(self._guarded(cfg, detector, guard, start), depth=2, start_depth=start)

    def close(self) -> None:
        self.windows.close()

    def _guarded(self, cfg: PPARConfig, detector, guard: GuardConfig | None, ahead: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Each window and the tubelets the guard forces in it. While a LateDetector is being made,
        up to ``ahead`` windows are decoded before the first search waits for it."""
        chunks, pending = self.reader.chunks(cfg.clip_span), deque()
        if isinstance(detector, LateDetector):
            while not detector.ready() and len(pending) < ahead and (frames := next(chunks, None)) is not None:
                pending.append(frames)
            detector = detector.get()
        self.guard = FaceGuard(guard, detector) if detector is not None else None

        def decoded_ahead() -> Iterator[np.ndarray]:
            while pending:  # handed on, not kept: the decoder's buffer pool reuses what nothing holds
                yield pending.popleft()

        for frames in itertools.chain(decoded_ahead(), chunks):
            yield frames, self.guard.forced(frames, cfg.grid, slab_index(len(frames), cfg)) if self.guard else None
