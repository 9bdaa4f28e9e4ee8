"""`ppar` with variants of its GPU path that the product does not have, for gpu.py's end-to-end runs
only: each run says whether the product should have one (README, "On a GPU").

    GPU_BENCH_NVDEC=1 python benchmarks/ppar_variants.py anonymize IN OUT --device cuda ...
    GPU_BENCH_GRAPH=1 python benchmarks/ppar_variants.py anonymize IN OUT --device cuda ...

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

The patches are made at import, outside the main guard, so `--workers`' spawned processes, which
import this file again (and inherit the environment), have them too.
"""
import os
import sys

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
    import torch

    import ppar_cli.pipeline.stream as stream
    from ppar_cli.core import scoring
    from ppar_cli.core.clips import prepare_clips
    from ppar_cli.core.model import Output

    _graphs: dict = {}  # (model, keep, lambda) -> [batch, static input, graph, static outputs, checked]

    def _capture(run, static):
        """run(static) as a CUDA graph, after warm-up passes on a side stream (cuDNN's plans and
        the allocator, outside the capture): the graph and its static outputs."""
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

    stream.score_clips = _score_clips_graphed

    from ppar_cli.faces import detectors

    _outputs = detectors.CenterFace._outputs
    _searches: dict = {}  # (device, input shape) -> [static input, graph, static outputs, checked]

    def _outputs_graphed(self, blob):
        """The face guard's search on a GPU as a CUDA graph for each input size, checked once
        against the eager pass as the model's is."""
        if self._net is None or self.device.type != "cuda":
            return _outputs(self, blob)
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

if __name__ == "__main__":
    from ppar_cli.cli import run

    run()  # as the `ppar` program ends
