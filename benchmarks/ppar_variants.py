"""`ppar` with variants of its GPU path that the product does not have, for gpu.py's end-to-end runs
only: each run says whether the product should have one (README, "On a GPU").

    GPU_BENCH_NVDEC=1 python benchmarks/ppar_variants.py anonymize IN OUT --device cuda ...
    GPU_BENCH_GRAPH=1 python benchmarks/ppar_variants.py anonymize IN OUT --device cuda ...
    GPU_BENCH_TRACE=FILE python benchmarks/ppar_variants.py anonymize IN OUT --device cuda ...

- GPU_BENCH_NVDEC: ppar's frame reader opens the video with PyAV's hwaccel CUDA, no software
  fallback; frames come back to memory as NV12, which ppar's 4:2:0 path converts to I420 as it does
  any other layout. Probing and the audio's remux open the file as before.
- GPU_BENCH_GRAPH: the model's pass is captured once as a CUDA graph and replayed for each batch
  (padded with zeros to the captured batch: clips do not mix in the model), one launch for all its
  kernels instead of a launch each, each of which gives up the GIL and must take it back; so is
  the face guard's search on the GPU, once for each input size. Each graph's first replay is
  checked against the eager pass on the same input; a difference stops the run. Every CUDA call
  of these runs is made under scoring's lock, so no other thread works on the GPU during a capture. (Padding alone moves the floats of the other clips by the kernels' rounding: on a
  CPU, 3 clips padded to 16 scored within 2.4e-7 and kept the same tubelets, checked once.)
- GPU_BENCH_TRACE: each process (the parent, each worker) appends to FILE, one JSON line each, the
  times of its start-up's steps and of its first windows: PyTorch imported, the device resolved,
  the weights loaded, each model pass (start and end, the first 12), the first frames handed to
  an encoder, the end. Where a run's first seconds go, process by process.
- GPU_BENCH_SWITCH_LATE: Python's switch interval stays at its default until the process's first
  model pass has ended, and is 0.1 ms only from then (ppar sets it from the fronts' start, so that
  decoding ahead is not held back by PyTorch's import; this asks whether the import is held back instead).

The patches are made at import, outside the main guard, so `--workers`' spawned processes, which
import this file again (and inherit the environment), have them too. Those on modules that import
PyTorch are made once something else imports them (`after_import`): the parent process of
`--workers` imports no PyTorch, and neither may this file there.
"""
import importlib.abc
import importlib.util
import json
import os
import sys
import threading
import time


_hooks: dict[str, list] = {}  # module name -> patches waiting for its import, in the order asked


class _AfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        patches = _hooks.pop(fullname, None)
        if patches is None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        run = spec.loader.exec_module

        def exec_and_patch(module):
            run(module)
            for patch in patches:
                patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


sys.meta_path.insert(0, _AfterImport())


def after_import(name: str, patch) -> None:
    """patch(module) once module ``name`` is imported (now, if it is already); patches of one
    module are made in the order asked, each wrapping what the one before left."""
    if name in sys.modules:
        patch(sys.modules[name])
    else:
        _hooks.setdefault(name, []).append(patch)


def on_first_pass(action) -> None:
    """action() once this process's first model pass has ended."""
    def patch(stream):
        score = stream.score_clips
        done = []

        def score_then(*args, **kwargs):
            out = score(*args, **kwargs)
            if not done:
                done.append(action())
            return out
        stream.score_clips = score_then
    after_import("ppar_cli.pipeline.stream", patch)


if os.environ.get("GPU_BENCH_NVDEC") == "1":
    import av
    from av.codec.hwaccel import HWAccel

    _open = av.open

    def _open_on_nvdec(file, *args, **kwargs):
        if sys._getframe(1).f_code.co_filename.endswith("decode.py"):  # ppar_cli.media.decode's frame reader
            kwargs.setdefault("hwaccel", HWAccel(device_type="cuda", allow_software_fallback=False))
        return _open(file, *args, **kwargs)

    av.open = _open_on_nvdec

if os.environ.get("GPU_BENCH_GRAPH") == "1":

    _graphs: dict = {}  # (model, keep, lambda) -> [batch, static input, graph, static outputs, checked]

    def _capture(run, static):
        """run(static) as a CUDA graph, after warm-up passes on a side stream (cuDNN's plans and
        the allocator, outside the capture): the graph and its static outputs."""
        import torch

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                run(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = run(static)
        return graph, outputs

    def _score_clips_graphed(model, clips, keep_ratio, device, lambda_priv=None, hysteresis=0.0,
                             follows=None, prev_kept=None):
        import torch

        from ppar_cli.core import scoring
        from ppar_cli.core.clips import prepare_clips
        from ppar_cli.core.model import Output

        if device.type != "cuda" or hysteresis > 0:
            return scoring.score_clips(model, clips, keep_ratio, device, lambda_priv, hysteresis, follows, prev_kept)
        with scoring.exact_fp32(), torch.inference_mode(), torch.autocast("cuda", enabled=False):
            x = prepare_clips(clips.pin_memory().to(device, non_blocking=True), model.cfg)
            key = (id(model), keep_ratio, lambda_priv)
            if key not in _graphs or _graphs[key][0] < len(x):
                static = torch.zeros((max(16, len(x)), *x.shape[1:]), device=x.device)
                graph, outputs = _capture(lambda t: model(t, keep_ratio=keep_ratio, lambda_priv=lambda_priv), static)
                _graphs[key] = [len(static), static, graph, outputs, False]
            g = _graphs[key]
            B = len(x)
            g[1][:B].copy_(x)
            g[1][B:].zero_()
            g[2].replay()
            out = Output(*(t[:B] for t in g[3]))
            if not g[4]:  # the first batch of this graph: the eager pass on the same input must give the same
                ref = model(g[1], keep_ratio=keep_ratio, lambda_priv=lambda_priv)
                if not all(torch.equal(a, b) for a, b in zip(g[3], ref)):
                    raise RuntimeError("GPU_BENCH_GRAPH: the CUDA graph's outputs differ from the eager pass's")
                g[4] = True
            return Output(*(t.float().cpu() if t.is_floating_point() else t.cpu() for t in out))

    after_import("ppar_cli.pipeline.stream", lambda stream: setattr(stream, "score_clips", _score_clips_graphed))

    from ppar_cli.faces import detectors

    _outputs = detectors.CenterFace._outputs
    _searches: dict = {}  # (device, input shape) -> [static input, graph, static outputs, checked]

    def _outputs_graphed(self, blob):
        """The face guard's search on a GPU as a CUDA graph for each input size, checked once
        against the eager pass as the model's is."""
        if self._net is None or self.device.type != "cuda":
            return _outputs(self, blob)
        import torch

        from ppar_cli.core import scoring

        with scoring.exact_fp32(), torch.inference_mode():
            key = (self.device, blob.shape)
            if key not in _searches:
                static = torch.zeros(blob.shape, device=self.device)
                _searches[key] = [static, *_capture(lambda t: self._net(t, detectors.OUTPUTS), static), False]
            g = _searches[key]
            g[0].copy_(torch.from_numpy(blob))
            g[1].replay()
            if not g[3]:
                if not all(torch.equal(a, b) for a, b in zip(g[2], self._net(g[0], detectors.OUTPUTS))):
                    raise RuntimeError("GPU_BENCH_GRAPH: the face search's CUDA graph differs from the eager pass")
                g[3] = True
            return [o.cpu().numpy() for o in g[2]]

    detectors.CenterFace._outputs = _outputs_graphed

if os.environ.get("GPU_BENCH_TRACE"):
    _fd = os.open(os.environ["GPU_BENCH_TRACE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _role = "main" if __name__ == "__main__" else "worker"  # a spawned worker imports this file as __mp_main__
    _passes = [0]

    def trace(event: str, **more) -> None:
        line = json.dumps({"pid": os.getpid(), "role": _role, "event": event, "t": time.time(), **more}) + "\n"
        os.write(_fd, line.encode())  # O_APPEND: one write, one whole line, whichever process

    trace("start")
    after_import("torch", lambda m: trace("torch_imported"))
    import ppar_cli.pipeline.runtime as _runtime

    def _traced(module, name: str, event: str, first_only: bool = True):
        f, seen = getattr(module, name), []

        def g(*args, **kwargs):
            out = f(*args, **kwargs)
            if not (first_only and seen):
                seen.append(1)
                trace(event)
            return out
        setattr(module, name, g)

    _traced(_runtime, "resolve_device", "device_resolved")
    after_import("ppar_cli.core.weights", lambda m: _traced(m, "load_weights", "weights_loaded"))
    _end = _runtime.end_process

    def _end_traced(code: int = 0):
        trace("end")
        _end(code)
    _runtime.end_process = _end_traced

    def _trace_passes(stream):
        score = stream.score_clips

        def score_traced(*args, **kwargs):
            t0 = time.time()
            out = score(*args, **kwargs)
            _passes[0] += 1
            if _passes[0] <= 12:
                trace("pass", start=t0, clips=len(args[1]), thread=threading.current_thread().name)
            return out
        stream.score_clips = score_traced
    after_import("ppar_cli.pipeline.stream", _trace_passes)
    from ppar_cli.media import encode as _encode

    _traced(_encode.VideoWriter, "write", "first_frames_to_encoder")

if os.environ.get("GPU_BENCH_SWITCH_LATE") == "1":
    _set = sys.setswitchinterval
    _asked: list[float] = []

    def _setswitch_late(interval: float) -> None:
        _asked.append(interval)  # ppar's 0.1 ms, held back until the first pass
    sys.setswitchinterval = _setswitch_late

    def _switch_now():
        sys.setswitchinterval = _set
        if _asked:
            _set(_asked[-1])
    on_first_pass(_switch_now)

if __name__ == "__main__":
    from ppar_cli.cli import run

    run()  # as the `ppar` program ends
