"""`ppar` with a trace of each process's start, for gpu.py's end-to-end runs (docs/speed.md, "On an H200").

    GPU_BENCH_TRACE=FILE python benchmarks/ppar_trace.py anonymize IN OUT --device cuda ...

Each process (the parent, each worker) appends to FILE, one JSON line each, the times of its
start-up's steps and of its first windows: PyTorch imported, the device resolved, the weights
loaded, each video's decoder threads, each model pass (start and end, the first 32), each CUDA
graph's capture, the first frames handed to an encoder, the end (with the count of graphs
replayed and fallen back to eager passes), each line with the process's page faults and CPU
seconds so far (does a worker's import of PyTorch fault its way beside the fronts' start
buffers?). Where a run's first seconds go, process by process: on an H200 it showed each video's
passes waiting seconds behind one another under scoring's lock, which CUDA graphs then removed
(0.3.20).

Variants of the start were measured through this file and are gone, their results in docs/speed.md:
in the commit that brought the trace, NVDEC decoding, CUDA graphs before ppar had them and the
0.1 ms switch interval only after the first pass; in 776b3ca, FFmpeg's decoder threads
(GPU_BENCH_DECODER_THREADS=0), PyTorch imported before the fronts start (GPU_BENCH_IMPORT_FIRST)
and workers forked from a fork server that had imported PyTorch (GPU_BENCH_FORKSERVER); in 255e0d2
a 2 GiB start buffer (GPU_BENCH_START_MIB=2048); in 631e9a8, 0.3.21's rule (the start buffer
ending as the model takes its first window, GPU_BENCH_SETTLE_AT_FIRST_TAKE) against that commit's
(ending once the first scores are out).

Variants for the next lent machine: GPU_BENCH_GPU_ONLY=1 has the videos wait for the model's start
on the GPU instead of scoring on the CPU meanwhile (0.3.22's gpu_start.py; the trace records
`cpu_window_timed`, `gpu_started` and each pass's device); GPU_BENCH_EARLY_CONTEXT=1 makes CUDA's
context in each worker from its start, while PyTorch imports (`early_context`);
GPU_BENCH_EVEN_DECODERS=1 gives every video's decoder the even share of the cores, the larger
ones' too (0.3.22's rule, against runtime.decoder_threads' since 0.3.23), for a folder whose
longest video ends alone.
The patches are made at import, outside the main guard, so `--workers`' spawned processes, which
import this file again (and inherit the environment), have them too. Those on modules that import PyTorch are made once
something else imports them (`after_import`): the parent process of `--workers` imports no
PyTorch, and neither may this file there.
"""
import ctypes
import importlib.abc
import importlib.util
import json
import os
import resource
import sys
import threading
import time


_hooks: dict = {}  # module name -> the patch waiting for its import


class _AfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        patch = _hooks.pop(fullname, None)
        if patch is None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        run = spec.loader.exec_module

        def exec_and_patch(module):
            run(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


sys.meta_path.insert(0, _AfterImport())


def after_import(name: str, patch) -> None:
    """patch(module) once module ``name`` is imported (now, if it is already)."""
    if name in sys.modules:
        patch(sys.modules[name])
    else:
        _hooks[name] = patch


def early_context(then=lambda: None) -> threading.Thread:
    """The CUDA driver's primary context of device 0, made in a thread from now on (ctypes lets go
    of the GIL while the driver works), so that PyTorch's runtime, which uses that context, finds it
    made at its first CUDA call instead of making it then: GPU_BENCH_EARLY_CONTEXT=1, here in each
    `--workers` process from its start, and in gpu.py's `startup` section."""
    def make():
        cu, dev, ctx = ctypes.CDLL("libcuda.so.1"), ctypes.c_int(), ctypes.c_void_p()
        if cu.cuInit(0) or cu.cuDeviceGet(ctypes.byref(dev), 0) or cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev):
            raise RuntimeError("the CUDA driver made no primary context")
        then()
    made = threading.Thread(target=make, daemon=True)
    made.start()
    return made


if os.environ.get("GPU_BENCH_TRACE"):
    _fd = os.open(os.environ["GPU_BENCH_TRACE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _role = "main" if __name__ == "__main__" else "worker"  # a spawned worker imports this file as __mp_main__
    _passes = [0]

    def trace(event: str, **more) -> None:
        """One line: the event, its time, and the process's page faults and CPU seconds so far."""
        r = resource.getrusage(resource.RUSAGE_SELF)
        line = json.dumps({"pid": os.getpid(), "role": _role, "event": event, "t": time.time(), "faults": r.ru_minflt,
                           "cpu_s": round(r.ru_utime + r.ru_stime, 2), **more}) + "\n"
        os.write(_fd, line.encode())  # O_APPEND: one write, one whole line, whichever process

    trace("start")
    if os.environ.get("GPU_BENCH_EARLY_CONTEXT") == "1" and _role == "worker":
        early_context(lambda: trace("context_made"))
    after_import("torch", lambda m: trace("torch_imported"))
    import ppar_cli.pipeline.runtime as _runtime

    _decoder_threads, _even = _runtime.decoder_threads, os.environ.get("GPU_BENCH_EVEN_DECODERS") == "1"

    def _decoder_threads_traced(videos: int, share: float = 0.0) -> int:
        """Each video's decoder threads as its front is made, with its part of the folder's bytes
        (with GPU_BENCH_EVEN_DECODERS=1, not counted)."""
        n = _decoder_threads(videos, 0.0 if _even else share)
        trace("decoder", threads=n, share=round(share, 3))
        return n
    _runtime.decoder_threads = _decoder_threads_traced  # before api.py takes it by name

    def _traced(module, name: str, event: str):
        """module.name traced at its first return."""
        f, seen = getattr(module, name), []

        def g(*args, **kwargs):
            out = f(*args, **kwargs)
            if not seen:
                seen.append(1)
                trace(event)
            return out
        setattr(module, name, g)

    _traced(_runtime, "resolve_device", "device_resolved")
    after_import("ppar_cli.core.weights", lambda m: _traced(m, "load_weights", "weights_loaded"))
    _end = _runtime.end_process

    _graphs: dict = {}  # (owner's id, key) -> replayed (True) or fallen back to eager passes (False)

    def _end_traced(code: int = 0):
        """The end, with how many of the process's CUDA graphs replayed and how many fell back to
        eager passes (scoring.graphed: a capture that failed or differed)."""
        trace("end", graphs=sum(_graphs.values()), graphs_eager=len(_graphs) - sum(_graphs.values()))
        _end(code)
    _runtime.end_process = _end_traced

    def _trace_graphs(scoring):
        """Each graph's fate as it is decided (counted at the end: by then a model and its graphs
        may be gone), and each capture's time, with the batch it holds."""
        graphed, capture = scoring.graphed, scoring.capture

        def graphed_traced(owner, key, run, *inputs):
            out = graphed(owner, key, run, *inputs)
            _graphs[id(owner), key] = scoring._GRAPHS[owner][key] is not None
            return out

        def capture_traced(run, inputs, pool):
            t0 = time.time()
            out = capture(run, inputs, pool)
            trace("capture", start=t0, clips=len(inputs[0]))
            return out
        scoring.graphed, scoring.capture = graphed_traced, capture_traced
    after_import("ppar_cli.core.scoring", _trace_graphs)

    def _trace_passes(stream):
        score = stream.score_clips

        def score_traced(*args, **kwargs):
            t0 = time.time()
            out = score(*args, **kwargs)
            _passes[0] += 1
            if _passes[0] <= 32:
                trace("pass", start=t0, clips=len(args[1]), thread=threading.current_thread().name, device=str(args[3]))
            return out
        stream.score_clips = score_traced
    after_import("ppar_cli.pipeline.stream", _trace_passes)

    def _trace_gpu_start(gpu_start):
        """When the model has started on the GPU (moved there, its first pass captured) and what a
        window took on the CPU; with GPU_BENCH_GPU_ONLY=1 the videos wait for the GPU instead of
        scoring on the CPU meanwhile, as before 0.3.22."""
        start, time_cpu, now = gpu_start.GpuStart._start, gpu_start.GpuStart._time_cpu, gpu_start.GpuStart.now

        def start_traced(self, opts):
            start(self, opts)
            trace("gpu_started", error=None if self._error is None else repr(self._error)[:200])

        def time_cpu_traced(self, opts):
            time_cpu(self, opts)
            trace("cpu_window_timed", cpu_window_s=round(self._window_s, 3))

        def gpu_only(self):
            with self._changed:
                self._changed.wait_for(lambda: self._ready)
            return now(self)
        gpu_start.GpuStart._start, gpu_start.GpuStart._time_cpu = start_traced, time_cpu_traced
        if os.environ.get("GPU_BENCH_GPU_ONLY") == "1":
            gpu_start.GpuStart.now = gpu_only
    after_import("ppar_cli.pipeline.gpu_start", _trace_gpu_start)
    from ppar_cli.media import encode as _encode

    _traced(_encode.VideoWriter, "write", "first_frames_to_encoder")

if __name__ == "__main__":
    from ppar_cli.cli import run

    run()  # as the `ppar` program ends
