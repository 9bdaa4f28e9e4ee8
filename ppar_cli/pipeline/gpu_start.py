"""The model on a GPU, its first windows scored on the CPU while the GPU starts.

On a GPU machine a run's first scores waited for CUDA's start after PyTorch's import: the model
onto the device, then each process's first pass, the capture of its CUDA graph (on an H200 1.3 to
3.6 s beside the other videos' decoders; the first frames reached the encoders 7.7 to 12.2 s into
runs whose imports had ended at 5.5 to 7.8 s; docs/speed.md, "On an H200"). Meanwhile the decoders had
filled their start buffers and nothing could be encoded: the machine's cores idled. The bundled
model scores a window (32 frames) in about 0.2 s on one thread of this 2-core machine, so the CPU
scores the videos' first windows while the GPU starts, and the encoders start on them. In full
fp32 (scoring.exact_fp32) the two keep the same tubelets: on an H200 the GPU kept what the CPU
kept in every window of 13 clips, with and without the face guard (benchmarks/gpu.py
`correctness`).

Only where the CPU is quick enough: one window is timed there first, and the CPU scores only if
it took less than CPU_WINDOW_SECONDS (a large model waits for the GPU: the paper's ViT-B, the `base`
preset, took 4.2 s a window on one thread here, which that timing costs once a process);
it scores a window at a time (stream.score_windows), so that a video goes to the GPU as soon as it
has started. Not a fallback: a GPU that fails to start fails the videos with its error, and after
CPU_SECONDS without it they wait for it.
"""
from __future__ import annotations

import copy
import threading
import time

import torch

from ppar_cli.core.model import PPARModel
from ppar_cli.core.scoring import score_clips
from ppar_cli.pipeline.options import Options

CPU_WINDOW_SECONDS = 1.0  # the longest a window may take on the CPU, timed once: a video waits at most that long for a started GPU
CPU_SECONDS = 60.0  # how long windows may be scored on the CPU while the GPU starts; then they wait for it
CPU = torch.device("cpu")


class GpuStart:
    """``model`` moved onto ``device`` in a thread, and its first pass for ``opts`` made there (on a
    GPU the capture of the CUDA graph that the videos' batches then replay, scoring.graphed);
    until then a copy on the CPU scores where it is quick enough (:meth:`now`)."""

    def __init__(self, model: PPARModel, device: torch.device, opts: Options):
        self.device = device
        self._model, self._cpu = model, copy.deepcopy(model).cpu()
        self._changed = threading.Condition()
        self._ready = False
        self._error: BaseException | None = None
        self._window_s: float | None = None  # one window's time on the CPU, once timed
        self._began = time.monotonic()
        for work, name in ((self._start, "ppar-gpu-start"), (self._time_cpu, "ppar-cpu-timing")):
            threading.Thread(target=work, args=(opts,), daemon=True, name=name).start()

    def _clips(self, windows: int) -> torch.Tensor:
        cfg = self._cpu.cfg
        return torch.randint(0, 256, (windows, cfg.frames, cfg.image_size, cfg.image_size, 3), dtype=torch.uint8,
                             generator=torch.Generator().manual_seed(0))

    def _start(self, opts: Options) -> None:
        try:
            self._model.to(self.device)
            # The shapes of the videos' batches: opts.batch_size windows (fewer are padded to them
            # on a GPU), or with hysteresis one window a pass, alone and then after another.
            clips = self._clips(2 if opts.hysteresis > 0 else opts.batch_size)
            score_clips(self._model, clips, opts.keep_ratio, self.device, opts.lambda_priv, hysteresis=opts.hysteresis)
        except BaseException as e:  # noqa: BLE001 -- handed to the videos (now)
            self._error = e
        with self._changed:
            self._ready = True
            self._changed.notify_all()

    def _time_cpu(self, opts: Options) -> None:
        t0 = time.perf_counter()
        try:
            score_clips(self._cpu, self._clips(1), opts.keep_ratio, CPU, opts.lambda_priv)
            took = time.perf_counter() - t0
        except Exception:  # noqa: BLE001 -- the CPU cannot help: the videos wait for the GPU
            took = float("inf")
        with self._changed:
            self._window_s = took
            self._changed.notify_all()

    def now(self) -> tuple[PPARModel, torch.device]:
        """The model and device for the next windows: the GPU's once it has started; until then the
        CPU's copy if that is quick enough (up to CPU_SECONDS from the start), else the GPU's when
        it has started. Raises the GPU's error if it could not start."""
        with self._changed:
            self._changed.wait_for(lambda: self._ready or self._window_s is not None)
            if not self._ready and self._window_s <= CPU_WINDOW_SECONDS and time.monotonic() - self._began < CPU_SECONDS:
                return self._cpu, CPU
            self._changed.wait_for(lambda: self._ready)
        if self._error is not None:
            raise RuntimeError(f"the model could not start on {self.device}: "
                               f"{type(self._error).__name__}: {self._error}") from self._error
        return self._model, self.device
