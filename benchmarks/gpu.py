"""The GPU check, in one call on a lent machine (issue: the GPU path, verified and measured).

    bash benchmarks/gpu_wheels.sh                    # here, once: the wheel the device image lacks (PyAV) into .wheels/
    bash benchmarks/gpu_clips.sh                     # here, once: a few real clips into .gpuclips/ (carried too)
    # on the device (carry .wheels and .gpuclips), from the repository root:
    #   python3 -m pip install -q --no-index --no-deps --target /tmp/site .wheels/*.whl && \
    #   PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH python3 benchmarks/gpu.py --out $OUT --budget 540
    # (run's timeout_s 600; a machine starts in under a minute: at 631e9a8 a 330 s command held an
    # H200 for 365 s). What is left to measure (docs/speed.md, "On an H200", "0.3.22: the CPU scores while
    # the GPU starts"): 0.3.22 scores the first windows on the CPU while the model moves to the GPU
    # and captures its graph (pipeline/gpu_start.py), which the rows before it put on the path to
    # the first frames (2-4 s after the weights). Is it faster end to end, and does the GPU still
    # keep the CPU's tubelets alone? In one call of about 360 s (run's timeout_s 420), 30 s clips,
    # where the start weighs most, 0.3.22 against the device alone, alternated, guard off and on:
    #   ... --out $OUT --budget 380 --only correctness,startup,end_to_end --e2e none:1,none:1:GPU_BENCH_GPU_ONLY=1,\
    #       none:1,none:1:GPU_BENCH_GPU_ONLY=1,auto:1,auto:1:GPU_BENCH_GPU_ONLY=1
    # Read `correctness` (kept_agreement_min ppar's way, device_only_kept_agreement_min), `startup`
    # (cpu_batch_of_8_one_thread against first_pass; early_context against plain), then each row's
    # ratio and trace (cpu_window_timed, the passes' devices, gpu_started, first_frames_to_encoder,
    # the cores busy in the 6th to 12th seconds); the rows of one call vary by 0.05-0.1. The
    # guard-on rows: not measured since 598aaf6 (0.821 on 30 s clips, 0.958 on 60 s).
    # Then, if the budget allows (about 170 s more; or a second call), a folder whose longest video
    # ends alone: 15 clips of 10 s and one of 120 s. Until 0.3.23 each video's decoder had one
    # thread (16 at once on 16 cores), so the long one's last 110 s decoded on one thread (about
    # 165 fps at 720p there, from the decode-only row) while its encoder alone could go faster;
    # since, it takes its part of the cores (about 0.44 of the bytes: 7 threads;
    # runtime.decoder_threads). 0.3.23 against the even share, alternated:
    #   ... --out $OUT/uneven --budget 170 --seconds 10 --first-seconds 120 --only end_to_end --e2e \
    #       none:1,none:1:GPU_BENCH_EVEN_DECODERS=1,none:1,none:1:GPU_BENCH_EVEN_DECODERS=1
    # Read each row's ratio, its end against the re-encode's, the cores busy in its last seconds,
    # and its trace's `decoders` (the long clip's threads: 7 against 1).
    # A lead for the imports' slowness beside the fronts (5.1-6.0 s from a worker's start against
    # 3.4-4.5 s alone, "Ways to start, compared"): the device runs under gVisor, which reports
    # kernel 4.4.0, and below 4.6 numpy asks for no huge pages, so the fronts' start buffers may
    # fault in 4 KiB pages there (gpu.json's `kernel`, `numpy_hugepage`), in the process that imports
    # PyTorch. Compare each worker's `faults_cpu_s` at `torch_imported` in the rows above with
    # `startup`'s `import_torch_page_faults` (the import alone); if the fronts' faults are many
    # (hundreds of thousands) and the budget allows, numpy's advice forced on, alternated:
    #   ... --out $OUT/thp --budget 170 --only end_to_end --e2e \
    #       none:1,none:1:NUMPY_MADVISE_HUGEPAGE=1,none:1,none:1:NUMPY_MADVISE_HUGEPAGE=1
    # (whether gVisor honours the advice is not known here; the faults in the trace tell).
    # Lowest in priority, and needing no GPU, only the machine's 16 cores: a CPU-only machine with
    # many cores has never been measured (runtime.folder_layout gives it one process of 2 videos,
    # each model on 7 threads). The last --device given wins, so, on 10 s clips:
    #   ... --out $OUT/cpu --budget 150 --seconds 10 --only end_to_end --e2e \
    #       none:1:--device=cpu,none:1:--device=cpu:--workers=8:--jobs=2,none:1:--device=cpu:--workers=4:--jobs=4
    python benchmarks/gpu.py --device cpu --quick    # the same script on a CPU, to check the script itself

Sections, each recorded in OUT/gpu.json (an error in one is recorded and the next runs):
  correctness  anonymize a folder (real clips, synthetic samples, 720p pattern clips) on the device and
               on the CPU: exit codes, finite scores, agreement of the kept masks (ppar's way, its
               first windows scored on the CPU while the GPU starts, and the device alone); and on
               the device with --jobs 4 and with --workers 2, which must keep the same tubelets;
               anonymize_frames (frames in memory) on the device against the CPU, pixel for pixel
  agreement    the model alone on the real clips' windows in bf16 autocast, fp32 with TF32 and exact
               fp32 (what anonymize uses), each against the CPU
  model        clips/s of the bundled and base presets at batch 8/32/128, fp32 and bf16, with model
               FLOPs utilisation against the bf16 peak; `compiled`, last: the same with torch.compile,
               while the budget lasts
  startup      one process's start-up: importing PyTorch, CUDA's context, the weights, the first batches
               (the capture, a replay), a batch on one CPU thread (gpu_start.py); and with CUDA's
               context made while PyTorch imports
  contention   the bundled model's forward pass alone and beside 8 Python threads, eager (at Python's
               switch interval and at 0.1 ms) and as a captured CUDA graph (is one process's model
               time with --jobs the GIL's, and which remedy works?)
  stages       each stage of ppar's path alone on a 720p clip, in CPU-ms a frame (decode, model input,
               the model's pass on the device, fill, encode), and a plain re-encode's (bench.py --stages)
  guard        the face detector's search time through onnxruntime's CPU and (if there) CUDA provider,
               and in PyTorch on the device (what ppar's guard uses on a GPU), with its boxes on real
               frames against onnxruntime's; `correctness` also compares kept masks with the guard
  end_to_end   frames/s of `ppar anonymize` on a folder of 720p clips, guard off and on, one process
               (--jobs, --workers) and several shards at once (--shard K/N), against a plain re-encode
               of the same folder with every file at once (FFmpeg's libraries through PyAV, as the
               device has no ffmpeg program; ppar decodes through PyAV everywhere); the CPU time in
               user space and in the kernel, page faults and context switches of each; GPU busy
               fraction from nvidia-smi, each process's start (ppar_trace.py); and decoding alone
  train        `ppar train` steps/s on one GPU and under torchrun --nproc_per_node 1, and a resumed run
               that must equal the uninterrupted one
  eval         `ppar eval --device` (quick protocol) on a small synthetic benchmark
A table of the headline numbers is printed last.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench import bench_stages, reencode  # noqa: E402 -- the same re-encode and stage timings as bench.py
PEAK_BF16 = 790e12  # FLOP/s, dense bf16 on H100/H200 SXM (the card's datasheet; measured ceilings go in the notes)


DEADLINE = float("inf")  # time.monotonic() past which no command may run on (--budget)


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """A command, killed at the deadline (subprocess.TimeoutExpired: its section records the error)."""
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=max(5.0, DEADLINE - time.monotonic()), **kw)


def ppar(*args) -> subprocess.CompletedProcess:
    return sh([sys.executable, "-m", "ppar_cli.cli", *args])


def make_clips(folder: Path, n: int, seconds: float, size: str = "1280x720", sources: list[Path] | None = None,
               first_seconds: float | None = None) -> Path:
    """n clips, H.264 through PyAV (the device has no ffmpeg program), made in parallel: from real
    ``sources`` (clip i from source i, looped, scaled to cover ``size`` and cropped), or else a
    moving colour pattern. x264 re-encodes such a pattern at about half the CPU of real footage
    (the `stages` section's re-encode, `--device cpu --quick`: 9.1 CPU-ms a 720p frame with `--real
    /nonexistent`, 17.9 with the carried clips), so a pattern weighs ppar's own work per frame
    double against the re-encode: the end-to-end runs use real footage where it is carried.
    ``first_seconds``: the first clip's length, where it differs (a folder of unequal videos)."""
    from multiprocessing import Pool

    folder.mkdir(parents=True, exist_ok=True)
    with Pool(min(n, os.cpu_count() or 1)) as pool:
        pool.map(_make_clip, [(folder / f"clip{i:02d}.mp4", i, first_seconds if i == 0 and first_seconds else seconds, size,
                               sources[i % len(sources)] if sources else None) for i in range(n)])
    return folder


def _make_clip(job: tuple[Path, int, float, str, Path | None]) -> None:
    import av
    import numpy as np

    path, i, seconds, size, source = job
    w, h = (int(v) for v in size.split("x"))
    if source is None:
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 3) % 256], -1).astype(np.uint8)
        pictures = (np.roll(base, (i + 1) * 4 * t, axis=1) for t in range(int(seconds * 25)))
    else:
        pictures = _looped(source, w, h, int(seconds * 25))
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt, vs.options = w, h, "yuv420p", {"preset": "veryfast", "crf": "18"}
        for picture in pictures:
            out.mux(vs.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(vs.encode())


def _looped(source: Path, w: int, h: int, frames: int):
    """``frames`` RGB pictures of ``source``, played again from the start as often as needed, each
    scaled to cover w x h (keeping its aspect) and cropped to it."""
    import av

    made = 0
    while made < frames:
        with av.open(str(source)) as c:
            for f in c.decode(video=0):
                s = max(w / f.width, h / f.height)
                sw, sh = max(w, round(f.width * s)), max(h, round(f.height * s))
                rgb = f.to_ndarray(format="rgb24", width=sw, height=sh, interpolation="BICUBIC")
                y, x = (sh - h) // 2, (sw - w) // 2
                yield rgb[y:y + h, x:x + w]
                made += 1
                if made == frames:
                    return


def stages(args, work: Path) -> dict:
    """Each stage of ppar's path one after another on one 720p clip, in CPU-ms a frame (bench.py
    --stages), the model's pass on the device: against the end-to-end runs' CPU per frame."""
    real = _real_clips(args)
    clip = make_clips(work / "stages_in", 1, 4 if args.quick else 8, sources=real) / "clip00.mp4"
    return bench_stages(clip, args.device, work)


def decode_only(path: str) -> int:
    """Decoding as ppar reads for the black fill: 4:2:0 where the video allows, else RGB."""
    from ppar_cli.media.decode import FrameReader, yuv_format
    from ppar_cli.media.probe import probe

    info = probe(path)
    return sum(len(chunk) for chunk in FrameReader(info, "ffmpeg", yuv=yuv_format(info)).chunks(32))


def kept_masks(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.rglob("*.json")):
        if p.name.startswith("ppar-manifest"):
            continue
        d = json.loads(p.read_text())
        out[p.relative_to(folder).as_posix()] = [w["keep"] for w in d["windows"]]
    return out


def kept_agreement(a: dict, b: dict) -> dict:
    """For each file in both runs (kept_masks), the share of its tubelets kept or pruned alike."""
    import numpy as np

    return {k: float((np.array(a[k]) == np.array(b[k])).mean()) for k in a if k in b}


def strict_json(path: Path) -> bool:
    """Valid JSON without NaN or Infinity (which Python's parser would otherwise accept)."""
    def reject(token: str):
        raise ValueError(token)

    try:
        json.loads(path.read_text(), parse_constant=reject)
        return True
    except ValueError:
        return False


def correctness_clips(args, work: Path) -> Path:
    """Two 720p pattern clips, the bundled samples and the carried real clips, in one folder."""
    src = work / "corr_in"
    make_clips(src, 2, 4 if args.quick else 8)
    for clip in [*(REPO / "samples").glob("*.mp4"), *_real_clips(args)]:
        shutil.copy(clip, src / clip.name)
    return src


def correctness(args, work: Path) -> dict:
    src = correctness_clips(args, work)
    res = {}
    for run, dev, jobs, workers in ((args.device, args.device, 1, 1), ("cpu", "cpu", 1, 1), ("jobs4", args.device, 4, 1),
                                    ("workers2", args.device, 2, 2)):
        r = ppar("anonymize", src, work / f"corr_{run}", "--device", dev, "--guard", "none", "--quiet", "--overwrite",
                 "--jobs", jobs, "--workers", workers)
        res[run] = {"exit": r.returncode, "stderr": r.stderr[-500:]}
    # the device alone, as before 0.3.22: no window scored on the CPU while it starts (gpu_start.py)
    r = sh([sys.executable, REPO / "benchmarks" / "ppar_trace.py", "anonymize", src, work / "corr_device_only", "--device", args.device,
            "--guard", "none", "--quiet", "--overwrite", "--jobs", 1, "--workers", 1],
           env={**os.environ, "GPU_BENCH_TRACE": str(work / "corr_device_only.jsonl"), "GPU_BENCH_GPU_ONLY": "1"})
    res["device_only"] = {"exit": r.returncode, "stderr": r.stderr[-500:]}
    a, b = kept_masks(work / f"corr_{args.device}"), kept_masks(work / "corr_cpu")
    alone = kept_agreement(kept_masks(work / "corr_device_only"), b)
    res["device_only_kept_agreement_min"] = min(alone.values()) if alone else None
    agree = kept_agreement(a, b)
    finite = all(strict_json(p) for p in (work / f"corr_{args.device}").rglob("*.json") if not p.name.startswith("ppar-manifest"))
    res.update({"files": len(a), "kept_agreement": agree, "kept_agreement_min": min(agree.values()) if agree else None,
                "kept_agreement_mean": statistics.mean(agree.values()) if agree else None, "score_maps_finite_json": finite})
    # several videos at once (--jobs), sharing the model: the same kept masks as one at a time
    res["jobs4_same_kept"] = kept_masks(work / "corr_jobs4") == a
    res["workers2_same_kept"] = kept_masks(work / "corr_workers2") == a  # and in worker processes (--workers)
    # with the face guard, which searches on the device with PyTorch (onnx_torch.py), on the CPU with
    # onnxruntime: the real clips, where there are faces
    real = work / "corr_real"
    real.mkdir(exist_ok=True)
    for clip in _real_clips(args):
        shutil.copy(clip, real / clip.name)
    for run, dev in ((f"guard_{args.device}", args.device), ("guard_cpu", "cpu")):
        r = ppar("anonymize", real, work / f"corr_{run}", "--device", dev, "--guard", "centerface", "--quiet", "--overwrite")
        res[run] = {"exit": r.returncode, "stderr": r.stderr[-500:]}
    a, b = kept_masks(work / f"corr_guard_{args.device}"), kept_masks(work / "corr_guard_cpu")
    agree = kept_agreement(a, b)
    res.update({"guard_files": len(a), "guard_kept_agreement": agree,
                "guard_kept_agreement_min": min(agree.values()) if agree else None})
    res["frames_in_memory_same"] = frames_in_memory_same(args, src)
    return res


def frames_in_memory_same(args, src: Path) -> dict:
    """anonymize_frames (frames a data loader holds) on the device against the CPU, guard off and
    on, on the first real clip (or sample): {guard: the same output, pixel for pixel}."""
    import numpy as np

    from ppar_cli import Options, anonymize_frames
    from ppar_cli.core.weights import load_weights
    from ppar_cli.media.decode import FrameReader
    from ppar_cli.media.probe import probe

    clip = next(iter(_real_clips(args)), None) or sorted(src.glob("*.mp4"))[0]
    frames = np.concatenate(list(FrameReader(probe(clip), "ffmpeg").chunks(64)))
    out = {}
    for guard in ("none", "centerface"):
        got = [anonymize_frames(frames, Options(guard=guard, device=dev), weights=load_weights(None)) for dev in (args.device, "cpu")]
        out[guard] = bool(np.array_equal(*got))
    return out


def agreement(args, work: Path) -> dict:
    src = correctness_clips(args, work)
    return model_agreement(args, [p for p in sorted(src.iterdir()) if not p.name.startswith("clip")])


def _real_clips(args) -> list[Path]:
    return sorted(p for p in args.real.iterdir() if p.is_file()) if args.real and args.real.is_dir() else []


def model_agreement(args, files: list[Path]) -> dict:
    """The bundled model on every window of these files, on the device in bf16 autocast (what
    anonymize did on CUDA before 0.3.4), in fp32, and in fp32 without TF32, against the CPU in fp32: the share
    of tubelets whose kept/pruned decision agrees, and the largest score difference."""
    import torch

    from ppar_cli.core.clips import prepare_clips
    from ppar_cli.core.weights import load_weights
    from ppar_cli.media.decode import FrameReader
    from ppar_cli.media.probe import probe
    from ppar_cli.pipeline.stream import ModelInput

    model = load_weights().model.eval()
    cfg = model.cfg
    to_input = ModelInput(cfg)
    clips = torch.stack([to_input(frames) for f in files for frames in FrameReader(probe(f), "ffmpeg").chunks(cfg.clip_span)])
    dev = torch.device(args.device)

    def run(device, bf16: bool, tf32: bool):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        m = model.to(device)
        outs = []
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for batch in clips.split(16):
                o = m(prepare_clips(batch.to(device), cfg), keep_ratio=0.5)
                outs.append((o.kept.cpu(), o.scores.float().cpu()))
        return torch.cat([k for k, _ in outs]), torch.cat([s for _, s in outs])

    ref_kept, ref_scores = run(torch.device("cpu"), False, False)
    res = {"windows": len(clips)}
    for name, bf16, tf32 in (("bf16", True, True), ("fp32_tf32", False, True), ("fp32", False, False)):
        kept, scores = run(dev, bf16, tf32)
        same = (kept == ref_kept).float()
        res[name] = {"agreement": round(float(same.mean()), 5), "windows_identical": round(float(same.flatten(1).all(1).float().mean()), 4),
                     "max_abs_score_diff": float((scores - ref_scores).abs().max()),
                     "score_scale": float(ref_scores.std())}
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True  # PyTorch's defaults
    return res


def model_throughput(args, compiled: bool = False) -> list[dict]:
    """Eager, or (compiled) torch.compile with static shapes, one fresh compilation per variant,
    the paper's base preset in bf16 first, for as long as the budget lasts."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from ppar_cli.core.config import PRESETS, PPARConfig
    from ppar_cli.core.model import PPARModel
    from ppar_cli.core.weights import load_weights

    dev = torch.device(args.device)
    make = {"base": lambda: PPARModel(PPARConfig(**PRESETS["base"], actions=list("abcdefghij"))),
            "bundled": lambda: load_weights().model}
    models = {name: make[name]() for name in args.models.split(",")}
    batches = (8, 2) if args.quick else (128, 32, 8)
    inputs, flops = {}, {}
    for name, model in models.items():
        model.to(dev).eval()
        cfg = model.cfg
        # one clip's FLOPs, through PyTorch's math attention: the counter has no formula for the CPU's
        # flash kernel (the bundled model: 2.7 GFLOP a clip counted with it, 6.1 through the math path)
        with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
            model(torch.randn(1, 3, cfg.frames, cfg.image_size, cfg.image_size, device=dev), keep_ratio=0.5)
        for bs in batches:
            inputs[name, bs] = torch.randn(bs, 3, cfg.frames, cfg.image_size, cfg.image_size, device=dev)
            flops[name, bs] = fc.get_total_flops() * bs
    rows = []
    for dtype in args.dtypes.split(","):
        for name, model in models.items():
            for bs in batches:
                row = {"model": name, "batch": bs, "dtype": dtype, "compile": compiled}
                rows.append(row)
                if time.monotonic() > DEADLINE - (60 if compiled else 20):
                    row["error"] = "skipped: out of time"
                    continue
                try:
                    if compiled:
                        torch._dynamo.reset()
                    m = torch.compile(model, dynamic=False) if compiled else model
                    row.update(_time_forward(m, inputs[name, bs], flops[name, bs], dtype == "bf16", dev))
                except Exception as e:  # noqa: BLE001 -- recorded; the next variant runs
                    row["error"] = str(e).splitlines()[0][:200]
                print(row, flush=True)
    return rows


def guard_check(args, work: Path) -> dict:
    """The face guard's detector: one search's time on a 1280x720 frame through onnxruntime's CPU
    provider (ppar on a CPU), its CUDA provider where there is one, and PyTorch on the device (ppar on
    a GPU: onnx_torch.py); and on frames of the real clips, PyTorch's boxes on the device against
    onnxruntime's on the CPU (the guard's threshold, 0.05)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from ppar_cli.core.config import bundled
    from ppar_cli.faces.detectors import CenterFace
    from ppar_cli.media.decode import FrameReader
    from ppar_cli.media.probe import probe

    res = {"onnxruntime": ort.__version__, "providers": ort.get_available_providers()}
    frame = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), np.uint8)

    def ms_per_search(det) -> dict:
        det(frame)
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            det(frame)
            times.append(time.perf_counter() - t0)
        return {"ms_per_search": round(statistics.median(times) * 1e3, 2)}

    for provider in ("CPUExecutionProvider", "CUDAExecutionProvider"):
        if provider not in res["providers"]:
            continue
        try:
            det = CenterFace(0.05, 640)
            quiet = ort.SessionOptions()
            quiet.log_severity_level = 3  # as ppar's own session: no notes on unused initializers
            det._session = ort.InferenceSession(str(bundled("centerface.onnx")), quiet, providers=[provider])
            res[provider] = ms_per_search(det)
        except Exception as e:  # noqa: BLE001
            res[provider] = {"error": str(e).splitlines()[0][:200]}
    try:
        on_device, on_cpu = CenterFace(0.05, 640, device=torch.device(args.device)), CenterFace(0.05, 640)
        res[f"pytorch_{args.device}"] = ms_per_search(on_device)
        boxes = same = frames = 0
        worst = 0.0
        for clip in _real_clips(args):  # every 8th frame of the first 256, as the guard searches
            for i, chunk in enumerate(FrameReader(probe(clip), "ffmpeg").chunks(32)):
                for f in chunk[::8]:
                    a, b = on_device(f), on_cpu(f)
                    boxes, frames = boxes + len(b), frames + 1
                    if a.shape == b.shape:
                        same += 1
                        worst = max(worst, float(np.abs(a - b).max()) if len(b) else 0.0)
                if i == 7:
                    break
        res["pytorch_vs_onnxruntime"] = {"frames": frames, "boxes": boxes, "frames_same_count": same,
                                         "largest_difference": worst}
    except Exception as e:  # noqa: BLE001
        res[f"pytorch_{args.device}"] = {"error": str(e).splitlines()[0][:200]}
    return res


def _time_forward(m, x, flops: float, bf16: bool, dev) -> dict:
    """Median of forward passes (warm-up first: compilation, cuDNN's autotuning), for about a second."""
    import torch

    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        t0 = time.perf_counter()
        for _ in range(2):
            m(x, keep_ratio=0.5)
        _sync(dev)
        warm = time.perf_counter() - t0
        times = []
        while len(times) < 3 or (sum(times) < 1.0 and len(times) < 50):
            t0 = time.perf_counter()
            m(x, keep_ratio=0.5)
            _sync(dev)
            times.append(time.perf_counter() - t0)
    dt = statistics.median(times)
    return {"clips_per_s": round(len(x) / dt, 1), "ms": round(dt * 1e3, 2), "tflops": round(flops / dt / 1e12, 2),
            "mfu_bf16_peak": round(flops / dt / PEAK_BF16, 4), "gflop_per_clip": round(flops / len(x) / 1e9, 1),
            "warmup_s": round(warm, 1), "reps": len(times)}


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


class Busy:
    """While a block runs: nvidia-smi's utilisation samples every 200 ms (None without nvidia-smi),
    and the cores busy, second by second, from /proc/stat (none elsewhere). The cores' curve says
    how long a run's start leaves them idle, and whether its middle keeps them as busy as the
    re-encode does: where the end-to-end time goes, measured rather than estimated."""

    def __enter__(self):
        self.samples, self.proc, self.cores = [], None, []
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "200"], stdout=subprocess.PIPE, text=True)
            self.thread = threading.Thread(target=lambda: [self.samples.append(float(v)) for v in self.proc.stdout
                                                           if v.strip().replace(".", "").isdigit()], daemon=True)
            self.thread.start()
        self._stop, self._cpu = threading.Event(), None
        if Path("/proc/stat").exists():
            self._cpu = threading.Thread(target=self._sample_cores, daemon=True)
            self._cpu.start()
        return self

    def _sample_cores(self) -> None:
        def ticks() -> tuple[int, int]:  # (busy, all) jiffies over every core
            v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            return sum(v) - v[3] - v[4], sum(v)  # less idle and iowait
        n, t, (b, a) = os.cpu_count() or 1, time.monotonic(), ticks()
        while not self._stop.wait(max(0.0, t + 1 - time.monotonic())):
            t += 1
            b2, a2 = ticks()
            self.cores.append(round((b2 - b) / max(1, a2 - a) * n, 1))
            b, a = b2, a2

    def __exit__(self, *exc) -> None:
        if self.proc:
            self.proc.terminate()
        self._stop.set()
        if self._cpu is not None:
            self._cpu.join()

    @property
    def busy(self) -> float | None:
        return round(statistics.mean(self.samples) / 100, 3) if self.samples else None

    def record(self) -> dict:
        """gpu_busy; the cores busy each second, and their sum (the machine's CPU-s over the whole
        seconds: a check of cpu_s, which counts only the processes waited for, and missed the
        workers of 776b3ca's fork-server variant); the seconds before the cores were first 3/4 busy."""
        full = 0.75 * (os.cpu_count() or 1)
        ramp = next((i for i, c in enumerate(self.cores) if c >= full), None)
        return {"gpu_busy": self.busy, "cores_busy_each_s": self.cores, "cores_cpu_s": round(sum(self.cores)),
                "cores_busy_mean": round(statistics.mean(self.cores), 1) if self.cores else None,
                "s_before_3_4_of_cores_busy": ramp}


def end_to_end(args, work: Path) -> list[dict]:
    from multiprocessing import Pool

    real = _real_clips(args)
    src = make_clips(work / "e2e_in", 2 if args.quick else 16, 4 if args.quick else args.seconds, sources=real,
                     first_seconds=args.first_seconds and (8 if args.quick else args.first_seconds))
    files = sorted(src.glob("*.mp4"))
    rows = []
    # what one process pays before its first frame (imports, CUDA, the model), on a 1 s clip
    one = make_clips(work / "e2e_one", 1, 1)
    t0 = time.perf_counter()
    r = ppar("anonymize", one / "clip00.mp4", work / "one.mp4", "--device", args.device, "--guard", "none", "-q", "--overwrite")
    rows.append({"what": "ppar on a 1 s clip: start-up and 25 frames", "seconds": round(time.perf_counter() - t0, 2),
                 "exit": r.returncode})
    t0, used0 = time.perf_counter(), _children_usage()
    with Busy() as busy, Pool(len(files)) as pool:  # all files at once, one process each
        frames = sum(pool.map(reencode, [(str(p), str(work / f"ff_{p.name}")) for p in files]))
        pool.close()
        pool.join()
    ff = time.perf_counter() - t0
    content = f"real footage from {len(real)} clips of {args.real.name}" if real else "a moving colour pattern"
    rows.append({"what": f"plain re-encode (libx264 veryfast crf 20), {len(files)} files at once", "clips": content, "frames": frames,
                 "seconds": round(ff, 2), **_used_since(used0), "fps": round(frames / ff, 1), **busy.record()})
    t0, used0 = time.perf_counter(), _children_usage()
    with Pool(len(files)) as pool:
        decoded = sum(pool.map(decode_only, [str(p) for p in files]))
        pool.close()
        pool.join()
    dt = time.perf_counter() - t0
    rows.append({"what": f"decode only (as ppar reads there), {len(files)} files at once", "seconds": round(dt, 2),
                 **_used_since(used0), "fps": round(decoded / dt, 1)})
    for spec in args.e2e.split(","):
        guard, n, *extra = spec.split(":")
        env = [e for e in extra if not e.startswith("--")]
        opts = [part for e in extra if e.startswith("--") for part in e.split("=", 1)]
        n = min(int(n), 2) if args.quick else int(n)
        what = (f"ppar --guard {guard} {' '.join(opts) or '(its default layout)'}, {n} process(es){' (--shard K/N)' if n > 1 else ''}"
                f"{' ' + ' '.join(env) if env else ''}")
        if time.monotonic() > DEADLINE - (5 + 1.5 * ff):  # a run takes about as long as the re-encode
            rows.append({"what": what, "error": "skipped: out of time"})
            continue
        out = work / f"e2e_{spec.replace(':', '_')}"
        logs = [work / f"e2e_{spec.replace(':', '_')}_{k}.log" for k in range(n)]
        trace = work / re.sub(r"[^\w.-]", "_", f"trace_{spec}.jsonl")  # each process's start (ppar_trace.py)
        trace.unlink(missing_ok=True)
        env.append(f"GPU_BENCH_TRACE={trace}")
        cmd = [sys.executable, str(REPO / "benchmarks" / "ppar_trace.py"), "anonymize", str(src), str(out), "--device", args.device, "--guard", guard,
               "--quiet", "--overwrite", "--batch-size", "16", *opts]
        spy = shutil.which("py-spy") if n == 1 and args.profile else None
        if spy:  # where one process spends its time, thread by thread (waits included)
            profile = args.out / re.sub(r"[^\w.-]", "_", f"spy_{out.name}.txt")  # names the device returns
            cmd = [spy, "record", "-r", "50", "--threads", "--idle", "-f", "raw", "-o", str(profile), "--", *cmd]
            what += " under py-spy"
        used0 = _children_usage()
        with Busy() as g:
            t0, wall0 = time.perf_counter(), time.time()
            procs = [subprocess.Popen([*cmd, *(["--shard", f"{k}/{n}"] if n > 1 else [])], stdout=subprocess.DEVNULL,
                                      stderr=open(log, "w"), env={**os.environ, **dict(e.split("=", 1) for e in env)})
                     for k, log in enumerate(logs)]
            try:
                done = [p.wait(max(5.0, DEADLINE - time.monotonic())) for p in procs]
            except subprocess.TimeoutExpired:  # the rows so far are kept
                rows.append({"what": what, "error": f"killed at the deadline after {time.perf_counter() - t0:.0f} s"})
                break
            finally:
                for p in procs:
                    p.kill()
            done = [(rc, log.read_text()) for rc, log in zip(done, logs)]
            dt = time.perf_counter() - t0
        rc = max(rc for rc, _ in done)
        rows.append({"what": what, "seconds": round(dt, 2),  # py-spy's child's CPU time does not reach us
                     **({} if spy else _used_since(used0)),
                     **({} if rc else {"fps": round(frames / dt, 1), "ratio_to_reencode": round(ff / dt, 3)}),  # not of a failed run
                     **g.record(), "exit": rc, "stderr": "".join(e for _, e in done)[-300:],
                     **({"trace": read_trace(trace, wall0)} if trace.exists() else {})})
        print(rows[-1], flush=True)
    return rows


def read_trace(path: Path, wall0: float) -> dict:
    """ppar_trace.py's GPU_BENCH_TRACE lines, as seconds from the run's start: each process's
    first time at each step, its model passes (start, end, clips, device; the first 32), its CUDA
    graphs' captures (start, end, clips), its videos' decoders (made at, threads, part of the
    folder's bytes) and, at each step, its page faults and CPU seconds so far (`faults_cpu_s`)."""
    procs: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        e = json.loads(line)
        p = procs.setdefault(f"{e['role']}_{e['pid']}", {})
        if e["event"] in ("pass", "capture"):
            p.setdefault({"pass": "passes", "capture": "captures"}[e["event"]], []).append(
                [round(e["start"] - wall0, 2), round(e["t"] - wall0, 2), e["clips"], *([e["device"]] if "device" in e else [])])
        elif e["event"] == "decoder":
            p.setdefault("decoders", []).append([round(e["t"] - wall0, 2), e["threads"], e["share"]])
        else:
            p.setdefault(e["event"], round(e["t"] - wall0, 2))
            p.setdefault("faults_cpu_s", {}).setdefault(e["event"], [e["faults"], e["cpu_s"]])
            p.update({k: v for k, v in e.items() if k not in ("pid", "role", "event", "t", "faults", "cpu_s")})  # the end's graph counts
    return procs


STARTUP = """
import json, os, time
t = [time.perf_counter()]
early = os.environ.get("GPU_BENCH_EARLY_CONTEXT") == "1"
if early:  # run from benchmarks/, where ppar_trace.py is
    from ppar_trace import early_context
    made = early_context()
import resource
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
import torch
t.append(time.perf_counter())
import_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
early and made.join()
t.append(time.perf_counter())
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
sync = torch.cuda.synchronize if dev.type == "cuda" else lambda: None
torch.empty(1, device=dev)
sync()
t.append(time.perf_counter())
from ppar_cli.core.scoring import score_clips
from ppar_cli.core.weights import load_weights
w = load_weights()
t.append(time.perf_counter())
m = w.model.to(dev)
sync()
t.append(time.perf_counter())
cfg = m.cfg
clips = torch.randint(0, 255, (9, cfg.frames, cfg.image_size, cfg.image_size, 3), dtype=torch.uint8)
for _ in range(2):  # a worker's first batch (9 windows of 720p): on a GPU the capture, then a replay
    score_clips(m, clips, 0.5, dev)
    t.append(time.perf_counter())
import copy
torch.set_num_threads(1)  # as a --workers process on the H200 machine (OMP_NUM_THREADS=1)
score_clips(copy.deepcopy(m).cpu(), clips[:8], 0.5, torch.device("cpu"))  # a batch of 720p's 8 windows
t.append(time.perf_counter())  # on the CPU, as gpu_start.py scores while the GPU starts
names = ["import_torch", "context_thread_after", "cuda_context", "weights", "model_to_device", "first_pass", "second_pass",
         "cpu_batch_of_8_one_thread"]
print(json.dumps({**{k: round(b - a, 3) for k, a, b in zip(names, t, t[1:])}, "import_torch_page_faults": import_faults}))
"""


def startup(args, work: Path) -> dict:
    """Where one process's start-up goes on its critical path (each worker pays it): importing
    PyTorch, CUDA's context, the weights, the model onto the device, the first batch (on a GPU its
    CUDA graph's capture: warm-up, capture, the checked replay) and a second (a replay); each
    with nothing else running, alternately as ppar does it and with the driver's primary context
    made in a thread while PyTorch imports (GPU_BENCH_EARLY_CONTEXT, also ppar_trace.py's): does
    that take CUDA's first use off the path?"""
    res: dict = {}
    for run, early in (("plain", "0"), ("early_context", "1"), ("plain_again", "0"), ("early_context_again", "1")):
        if early == "1" and args.device != "cuda":
            continue
        r = sh([sys.executable, "-c", STARTUP], env={**os.environ, "GPU_BENCH_EARLY_CONTEXT": early}, cwd=REPO / "benchmarks")
        res[run] = json.loads(r.stdout) if r.returncode == 0 else {"error": r.stderr[-500:]}
    # where `import torch` goes: Python's own timing of each module (-X importtime), the largest
    # self times in seconds; torch._C's includes loading PyTorch's shared libraries, which holds the GIL
    r = sh([sys.executable, "-X", "importtime", "-c", "import torch"])
    times = [(int(m[1]) / 1e6, int(m[2]) / 1e6, m[3].strip()) for m in re.finditer(r"import time:\s+(\d+) \|\s+(\d+) \|(.*)", r.stderr)]
    if times:
        res["import_torch_by_module"] = {"total_s": round(max(c for _, c, _ in times), 2),
                                         "largest_self_s": {name: round(own, 3) for own, _, name in sorted(times, reverse=True)[:10]}}
    return res


def _numpy_hugepage() -> bool | None:
    """Whether numpy asks the kernel for huge pages for its large arrays (madvise)."""
    import numpy as np

    core = np._core if hasattr(np, "_core") else np.core  # numpy 2, numpy 1
    get = getattr(core.multiarray, "_get_madvise_hugepage", None)
    return bool(get()) if get else None


USAGE = {"user_s": "ru_utime", "sys_s": "ru_stime", "page_faults": "ru_minflt", "waits": "ru_nvcsw", "preempted": "ru_nivcsw"}


def _children_usage() -> dict:
    """What the finished child processes used: CPU seconds in user space and in the kernel, page
    faults, and context switches (voluntary: waits; involuntary: preempted). Where ppar spends more
    CPU than the re-encode per frame, these say whether it is its own work or the kernel's."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {k: getattr(r, f) for k, f in USAGE.items()}


def _used_since(before: dict) -> dict:
    now = _children_usage()
    used = {k: round(now[k] - before[k], 1) for k in now}
    return {"cpu_s": round(used["user_s"] + used["sys_s"], 1), **used}


def synth_bench(args, work: Path) -> Path:
    bench = work / "synth"
    if not (bench / "labels.json").exists():
        r = ppar("synth", bench, "--videos", 24 if args.quick else 200, "--seed", 3, "--size", 64, "--frames", 32, "-q",
                 "--overwrite")  # over what an interrupted call left
        if r.returncode:
            raise RuntimeError(r.stderr[-300:])
    return bench


def train_check(args, work: Path) -> dict:
    bench = synth_bench(args, work)
    common = ["--data", bench, "--batch-size", 8, "--epochs", 2 if args.quick else 8, "--seed", 1]
    for run in ("full", "part", "ddp"):  # a run left by an earlier call would resume, its weights be refused
        shutil.rmtree(work / f"run_{run}", ignore_errors=True)
        (work / f"{run}.safetensors").unlink(missing_ok=True)
    res = {}
    t0 = time.perf_counter()
    r = ppar("train", *common, "--out", work / "full.safetensors", "--run-dir", work / "run_full")
    res["one_gpu_s"], res["one_gpu_exit"] = round(time.perf_counter() - t0, 1), r.returncode
    res["one_gpu_stderr"] = r.stderr[-300:]
    res["nondeterministic_ops"] = sorted({line.strip()[:200] for line in r.stderr.splitlines() if "deterministic" in line})
    if time.monotonic() > DEADLINE - 90:
        res["resume"] = res["torchrun"] = "skipped: out of time"
        return res
    ppar("train", *common, "--stop-after", 1, "--out", work / "part.safetensors", "--run-dir", work / "run_part")
    r = ppar("train", *common, "--out", work / "part.safetensors", "--run-dir", work / "run_part")
    from safetensors.torch import load_file

    try:
        a, b = load_file(str(work / "full.safetensors")), load_file(str(work / "part.safetensors"))
        res["resume_max_abs_diff"] = max(float((a[k] - b[k]).abs().max()) for k in a)
    except Exception as e:  # noqa: BLE001
        res["resume_error"] = str(e)[:200]
    steps = [json.loads(line) for line in (work / "run_full" / "metrics.jsonl").read_text().splitlines()]
    res["clips_per_s"] = [round(s["clips_per_s"], 1) for s in steps]
    t0 = time.perf_counter()
    r = sh([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m", "ppar_cli.cli", "train", *common,
            "--out", work / "ddp.safetensors", "--run-dir", work / "run_ddp"])
    res["torchrun_s"], res["torchrun_exit"], res["torchrun_stderr"] = round(time.perf_counter() - t0, 1), r.returncode, r.stderr[-300:]
    return res


def contention(args, work: Path) -> dict:
    """The bundled model's forward pass on a batch of 4 windows (ppar's batch at 1280x720), alone and
    while 8 threads run Python (as a process's decoders, scorers and encoders do with --jobs); on
    CUDA also replayed as a captured CUDA graph, one call for all its kernel launches, which must give
    the eager pass's outputs exactly. Tests whether the model's time in one process with several
    videos is the GIL's, taken back after each kernel launch (0.3.5's profile), and a remedy."""
    import torch

    from ppar_cli.core.weights import load_weights

    dev = torch.device(args.device)
    model = load_weights().model.to(dev)
    cfg = model.cfg
    x = torch.randn(4, 3, cfg.frames, cfg.image_size, cfg.image_size, device=dev)

    def eager():
        return model(x, keep_ratio=0.5)

    passes = {"eager": eager}
    res = {}
    if dev.type == "cuda":
        with torch.inference_mode():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up outside the capture (cuDNN's plans, the allocator)
                    eager()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                captured = eager()
            graph.replay()
            ref = eager()
            _sync(dev)
            res["graph_equals_eager"] = all(torch.equal(a, b) for a, b in zip(captured, ref))
        passes["cuda_graph"] = lambda: (graph.replay(), captured)[1]
    stop = threading.Event()

    def python_work():
        while not stop.is_set():
            sum(range(2000))

    def median_ms(run) -> float:  # 20 passes, or as many as 3 s allow (at least 3)
        times = []
        with torch.inference_mode():
            run()
            while len(times) < 3 or (len(times) < 20 and sum(times) < 3.0):
                t0 = time.perf_counter()
                run()
                _sync(dev)
                times.append(time.perf_counter() - t0)
        return round(statistics.median(times) * 1e3, 2)

    interval = sys.getswitchinterval()
    for name, run in passes.items():
        res[f"{name}_ms_alone"] = median_ms(run)
        # Python's default switch interval (5 ms: how long a thread waiting for the GIL waits before
        # asking for it), and 0.1 ms, a remedy that needs no GPU-specific code
        for switch in (interval, 1e-4) if name == "eager" else (interval,):
            stop.clear()
            sys.setswitchinterval(switch)
            workers = [threading.Thread(target=python_work, daemon=True) for _ in range(8)]
            for w in workers:
                w.start()
            try:
                res[f"{name}_ms_beside_8_python_threads_switch_{switch * 1e3:g}ms"] = median_ms(run)
            finally:
                stop.set()
                for w in workers:
                    w.join()
                sys.setswitchinterval(interval)
    return res


def eval_check(args, work: Path) -> dict:
    bench = synth_bench(args, work)
    # the synthetic benchmark's own weights: the quick protocol reads their heads, trained on its labels
    r = ppar("eval", "--data", bench, "--weights", REPO / "weights" / "ppar-small.safetensors", "--device", args.device,
             "--max-videos", 12, "--keep", "0.5",
             "--methods", "ppar,raw,random", "--out", work / "eval", "--overwrite", "--quiet")
    out = {"exit": r.returncode, "stderr": r.stderr[-300:]}
    if r.returncode == 0:
        out["records"] = json.loads((work / "eval" / "results.json").read_text())["records"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out")))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small sizes: check the script, not the card")
    ap.add_argument("--only", default="correctness,agreement,startup,contention,stages,model,guard,end_to_end,train,eval,compiled")
    ap.add_argument("--budget", type=float, default=420, help="seconds: later work is skipped past it")
    ap.add_argument("--dtypes", default="bf16,fp32", help="model and compiled sections: these precisions, in this order")
    ap.add_argument("--models", default="base,bundled", help="model and compiled sections: these models (base, bundled)")
    ap.add_argument("--seconds", type=float, default=30, help="length of each of the 16 end-to-end clips")
    ap.add_argument("--first-seconds", type=float, help="the first end-to-end clip's length, where it differs: "
                    "a folder of unequal videos, whose longest ends alone")
    ap.add_argument("--e2e", default="none:1,auto:1",
                    help="end-to-end runs, GUARD:PROCESSES[:VAR=VALUE|:--OPTION=VALUE...] each (environment and "
                         "`ppar anonymize` options of those processes, else its defaults; each run traced by ppar_trace.py)")
    ap.add_argument("--profile", action="store_true", help="the one-process end-to-end runs under py-spy (OUT/spy_RUN.txt)")
    ap.add_argument("--real", type=Path, default=REPO / ".gpuclips", help="real clips for the correctness check")
    args = ap.parse_args()
    global DEADLINE
    DEADLINE = time.monotonic() + args.budget
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "ppar-gpu"
    work.mkdir(parents=True, exist_ok=True)
    import torch

    from ppar_cli.pipeline.runtime import cores, folder_layout

    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    report = {"torch": torch.__version__, "device": args.device,
              "card": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
              "cores": cores(), "default_layout": folder_layout(args.device, None, None),  # (workers, jobs)
              # transparent huge pages ("[madvise]": numpy's large arrays, ppar's frames, ask for them,
              # unless numpy does not: it does not below kernel 4.6, which gVisor reports, or with
              # NUMPY_MADVISE_HUGEPAGE=0): with 4 KiB pages a 720p video's 1 GiB start buffer is
              # 262,144 page faults
              "transparent_hugepage": thp.read_text().strip() if thp.exists() else None,
              "kernel": os.uname().release, "numpy_hugepage": _numpy_hugepage()}
    sections = {"correctness": correctness, "agreement": agreement, "startup": startup, "contention": contention, "model": lambda a, w: model_throughput(a), "guard": guard_check,
                "stages": stages,
                "end_to_end": end_to_end, "train": train_check, "eval": eval_check,
                "compiled": lambda a, w: model_throughput(a, compiled=True)}
    for name in args.only.split(","):
        print(f"== {name} ({DEADLINE - time.monotonic():.0f} s left)", flush=True)
        t0 = time.perf_counter()
        try:
            report[name] = sections[name](args, work)
        except Exception:  # noqa: BLE001 -- recorded, and the next section runs
            report[name] = {"error": traceback.format_exc()[-1500:]}
        report[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)
        (args.out / "gpu.json").write_text(json.dumps(report, indent=1))
    summary(report)


def summary(report: dict) -> None:
    """The headline numbers, last in the output (the full record is gpu.json)."""
    print(f"\n{report['card']} torch {report['torch']}")
    if "correctness" in report:
        c = report["correctness"]
        print("correctness:", {k: c.get(k) for k in ("files", "kept_agreement_min", "kept_agreement_mean", "score_maps_finite_json",
                                                      "jobs4_same_kept", "workers2_same_kept", "device_only_kept_agreement_min",
                                                      "frames_in_memory_same")},
              {d: c.get(d, {}).get("exit") for d in (report["device"], "cpu", "jobs4", "workers2", "device_only")}, c.get("error", "")[-400:])
    for k, v in report.get("agreement", {}).items():
        print("  model alone", k, v)
    for key in ("end_to_end", "model", "compiled"):
        for row in report[key] if isinstance(report.get(key), list) else [report[key]] if key in report else []:
            # a failed run's stderr says why; the cores' curve is in gpu.json
            print(key, {k: v for k, v in row.items() if (k != "stderr" or row.get("exit")) and k != "cores_busy_each_s"})
    for key in ("startup", "contention", "stages", "guard", "train", "eval"):
        if key in report:
            print(key, json.dumps({k: x for k, x in report[key].items() if k != "records"})[:700])
            for rec in report[key].get("records", [])[:6]:
                print("  ", json.dumps(rec)[:300])

if __name__ == "__main__":
    main()
