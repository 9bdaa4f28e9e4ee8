"""End-to-end speed and memory of `ppar anonymize` against a plain ffmpeg re-encode of the same clip.

    python benchmarks/bench.py                      # 640x360 and 1280x720, 3 alternating repeats
    python benchmarks/bench.py --sizes 640x360 --seconds 20 --repeats 5 --long 8

For each size a source clip is made from a real video of ../shared (or ffmpeg's testsrc2 when it is
absent), scaled and looped to the length asked for and encoded as H.264. ffmpeg (libx264, the same
preset and crf as ppar) and ppar then run alternately; medians, the ppar/ffmpeg throughput ratio
and peak RSS are printed. `--long K` also anonymizes a clip K times longer, for the memory check.
`--batch K` times a folder of K such clips in one `ppar anonymize` against K ffmpeg runs: the way a
dataset is processed, where ppar's start-up (importing PyTorch, about 1.5 s) is paid once.
`--free-model` runs ppar with a network too small to cost anything in the bundled weights' geometry:
everything but the model is then timed, which is what a GPU leaves to the CPU.
`--model` times the model alone in clip-frames/s. deface is measured in the same run when installed.
`--frame` only times making the encoder's frames from RGB ones (a copy, or wrapping the array).
`--stages` only times each stage of ppar's path one after another, in CPU-ms a frame, against a
plain re-encode of the same clip through the same FFmpeg libraries.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real" / "walk.mkv"


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def make_clip(dst: Path, w: int, h: int, seconds: float, source: Path = REAL, fps: int = 25) -> None:
    """``source`` looped and scaled to cover w x h; a test pattern where it is missing."""
    if source.exists():
        src = ["-stream_loop", "-1", "-i", str(source)]
        vf = f"scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h},fps={fps}"
    else:
        src = ["-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={fps}"]
        vf = "null"
    subprocess.run([ffmpeg(), "-v", "error", "-y", *src, "-t", str(seconds), "-vf", vf, "-an",
                    "-c:v", "libx264", "-preset", "medium", "-crf", "18", "-pix_fmt", "yuv420p", str(dst)], check=True)


def cpu_seconds(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str]) -> tuple[float, dict]:
    """Wall seconds of a command and the JSON line it printed last (if any), with the CPU seconds
    of the command and everything it ran (``cpu_s``)."""
    t0, c0 = time.perf_counter(), cpu_seconds(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {r.stderr.strip()[-500:]}")
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    return dt, {**(json.loads(lines[-1]) if lines else {}), "cpu_s": round(cpu_seconds(resource.RUSAGE_CHILDREN) - c0, 1)}


def run_ppar_child(src: str, dst: str, extra: list[str]) -> None:
    """In a fresh process, as the `ppar` program runs (cli.run): anonymize, print its peak RSS, CPU
    seconds and page faults (since 0.3.7 it starts no other process), then end as the program does."""
    from ppar_cli.cli import exit_code, main
    from ppar_cli.pipeline.runtime import end_process

    sys.argv = ["ppar", "anonymize", src, dst, "--overwrite", "--quiet", "--no-scores", *extra]
    code = 0
    try:
        main()
    except SystemExit as e:
        code = exit_code(e)
    own = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"rss_mb": round(own.ru_maxrss / 1024, 1),
                      "user_s": round(own.ru_utime, 1), "sys_s": round(own.ru_stime, 1), "page_faults": own.ru_minflt}))
    end_process(code)


def free_model(dst: Path) -> Path:
    """Weights with the bundled weights' clips and grid (frames, stride, image size, tubelets) and a
    network that costs next to nothing, written to ``dst``: a linear stem, width 8, and one block,
    which prunes; its attention is then only the two CLS rows (O(N)). 0.3.14's free model had a
    second block with full attention (O(N^2)): 16.0 ms a window on one core here against 5.6 with
    one block (batch 4, one-off timing)."""
    from dataclasses import replace

    import torch

    from ppar_cli.core.config import DEFAULT_WEIGHTS, read_metadata
    from ppar_cli.core.model import PPARModel
    from ppar_cli.core.weights import save_weights

    torch.manual_seed(0)
    cfg = replace(read_metadata(DEFAULT_WEIGHTS)[0], name="free", stem="linear", dim=8, depth=1, heads=1,
                  mlp_ratio=1.0, prune_blocks=(1,))
    save_weights(PPARModel(cfg), dst, {"note": "benchmarks/bench.py --free-model: random, next to no network"})
    return dst


def frames_of(path: Path) -> int:
    r = subprocess.run([ffmpeg(), "-i", str(path), "-map", "0:v:0", "-f", "null", "-"], capture_output=True, text=True)
    return int(r.stderr.rsplit("frame=", 1)[1].split()[0])


def bench_size(w: int, h: int, args, tmp: Path) -> dict:
    src = tmp / f"src_{w}x{h}.mp4"
    make_clip(src, w, h, args.seconds, args.source)
    n = frames_of(src)
    ff_cmd = [ffmpeg(), "-v", "error", "-y", "-i", str(src), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
              "-an", str(tmp / "ff.mp4")]
    pp_cmd = [sys.executable, __file__, "--child", str(src), str(tmp / "pp.mp4"), *args.ppar_args]
    deface = shutil.which("deface")
    df_cmd = [deface, str(src), "-o", str(tmp / "df.mp4")] if deface and not args.no_deface else None
    times = {"ffmpeg": [], "ppar": [], "deface": []}
    rss = []
    for i in range(args.repeats):
        times["ffmpeg"].append(timed(ff_cmd)[0])
        dt, mem = timed(pp_cmd)
        times["ppar"].append(dt)
        rss.append(mem)
        if df_cmd and i == 0:  # once: it is an order of magnitude slower
            times["deface"].append(timed(df_cmd)[0])
    med = {k: statistics.median(v) for k, v in times.items() if v}
    row = {"size": f"{w}x{h}", "frames": n, **{f"{k}_fps": round(n / v, 1) for k, v in med.items()},
           "ratio_ppar_to_ffmpeg": round(med["ffmpeg"] / med["ppar"], 3),
           "ppar_rss_mb": max(m["rss_mb"] for m in rss),
           # every run, so the spread on a noisy machine shows beside the medians
           "ffmpeg_s": [round(t, 2) for t in times["ffmpeg"]], "ppar_s": [round(t, 2) for t in times["ppar"]],
           "ppar_cpu_s": [m["cpu_s"] for m in rss]}
    if args.batch > 1:
        folder = tmp / f"batch_{w}x{h}"
        folder.mkdir()
        for i in range(args.batch):
            shutil.copy(src, folder / f"clip{i:03d}.mp4")
        t0 = time.perf_counter()
        for i in range(args.batch):
            timed([*ff_cmd[:5], str(folder / f"clip{i:03d}.mp4"), *ff_cmd[6:]])
        ff_batch = time.perf_counter() - t0
        pp_batch, mem = timed([sys.executable, __file__, "--child", str(folder), str(tmp / f"out_{w}x{h}"), *args.ppar_args])
        row.update({"batch_clips": args.batch, "batch_ffmpeg_fps": round(args.batch * n / ff_batch, 1),
                    "batch_ppar_fps": round(args.batch * n / pp_batch, 1),
                    "batch_ratio_ppar_to_ffmpeg": round(ff_batch / pp_batch, 3), "batch_ppar_rss_mb": mem["rss_mb"]})
    if args.long > 1:
        long_src = tmp / f"long_{w}x{h}.mp4"
        make_clip(long_src, w, h, args.seconds * args.long, args.source)
        n_long = frames_of(long_src)
        ff_long, ff_mem = timed([*ff_cmd[:5], str(long_src), *ff_cmd[6:]])
        pp_long, mem = timed([sys.executable, __file__, "--child", str(long_src), str(tmp / "pp_long.mp4"), *args.ppar_args])
        row.update({"long_frames": n_long, "long_ffmpeg_fps": round(n_long / ff_long, 1), "long_ppar_fps": round(n_long / pp_long, 1),
                    "long_ratio_ppar_to_ffmpeg": round(ff_long / pp_long, 3), "long_ppar_rss_mb": mem["rss_mb"],
                    "rss_growth": round(mem["rss_mb"] / row["ppar_rss_mb"] - 1, 3),
                    # where the CPU time goes: ffmpeg's re-encode, and ppar's process
                    "long_ffmpeg_cpu_s": ff_mem["cpu_s"],
                    "long_ppar_cpu": {k: mem[k] for k in ("cpu_s", "user_s", "sys_s", "page_faults")}})
    return row


def bench_model(name: str, batch: int, repeats: int) -> list[dict]:
    """Model-only clip-frames/s for a config, plain and with the CPU options that might help."""
    import torch

    from ppar_cli.core.config import PRESETS, PPARConfig
    from ppar_cli.core.model import PPARModel
    from ppar_cli.core.weights import DEFAULT_WEIGHTS, load_weights

    model = load_weights(DEFAULT_WEIGHTS).model if name == "bundled" else PPARModel(PPARConfig(**PRESETS[name], actions=list("abcdefghij")))
    model.eval()
    cfg = model.cfg
    x = torch.randn(batch, 3, cfg.frames, cfg.image_size, cfg.image_size)
    variants = {"fp32": (model, torch.float32), "bf16": (model, torch.bfloat16)}
    if hasattr(torch, "compile"):
        variants["compile"] = (torch.compile(model), torch.float32)
    rows, ref = [], None
    for vname, (m, dtype) in variants.items():
        try:
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                out = m(x, keep_ratio=0.5)  # warm-up (and compilation)
                t0 = time.perf_counter()
                for _ in range(repeats):
                    out = m(x, keep_ratio=0.5)
                dt = (time.perf_counter() - t0) / repeats
        except Exception as e:  # compile needs a C compiler; report, do not fail the benchmark
            rows.append({"model": name, "variant": vname, "error": str(e).splitlines()[0][:120]})
            continue
        keep = out.kept
        exact = ref is None or bool((keep == ref).all())
        ref = keep if ref is None else ref
        rows.append({"model": name, "variant": vname, "clip_frames_per_s": round(batch * cfg.frames / dt, 1),
                     "same_keep_as_fp32": exact})
    return rows


def reencode(pair: tuple[str, str]) -> int:
    """A plain re-encode with ppar's encoder settings (libx264, veryfast, crf 20), through the same
    FFmpeg libraries as the ffmpeg program; returns the frames."""
    import av

    src, dst = pair
    n = 0
    with av.open(src) as inp, av.open(dst, "w") as out:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        vs = out.add_stream("libx264", rate=vin.average_rate)
        vs.width, vs.height, vs.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vs.options = {"preset": "veryfast", "crf": "20"}
        vs.codec_context.thread_type = "FRAME"
        for frame in inp.decode(vin):
            frame.pts, frame.time_base = n, 1 / Fraction(vin.average_rate)  # numbered as ppar's encoder does
            out.mux(vs.encode(frame))
            n += 1
        out.mux(vs.encode())
    return n


def bench_stages(clip: Path, device: str = "cpu", tmp: Path | None = None) -> dict:
    """CPU-ms per frame of each stage of `ppar anonymize --guard none` on ``clip``, run one after
    another in this process with nothing else running, and of a plain re-encode of the same clip
    (`reencode`). Their sum against a whole run's CPU per frame says how much of it the stages
    themselves are and how much is their running together (threads, the GIL, start-up). Each
    stage counts every thread it uses (the decoder's and x264's too); the model's pass on a GPU
    counts what it costs the CPU (launches, waiting)."""
    import torch

    from ppar_cli.core.clips import slab_index
    from ppar_cli.core.scoring import score_clips
    from ppar_cli.core.weights import load_weights
    from ppar_cli.media.decode import FrameReader, YUVFrames, yuv_format
    from ppar_cli.media.encode import VideoWriter
    from ppar_cli.media.probe import probe
    from ppar_cli.pipeline.fill import fill_clip
    from ppar_cli.pipeline.stream import ModelInput

    tmp = tmp or Path(tempfile.mkdtemp(prefix="ppar-stages-"))
    weights = load_weights()
    cfg, dev = weights.model.cfg, torch.device(device)
    weights.model.to(dev)
    info = probe(clip)
    fmt = yuv_format(info)  # as front.Front and the black fill read it: 4:2:0 from decoder to encoder where it can
    row = {"clip": f"{info.width}x{info.height}", "device": device, "frames_as": fmt.pix_fmt if fmt else "rgb24"}

    def cpu() -> float:
        return cpu_seconds(resource.RUSAGE_SELF) + cpu_seconds(resource.RUSAGE_CHILDREN)

    for run in ("warm-up", "measured"):  # the first run pays the imports, page faults and kernels' first calls
        ms, t = {}, cpu()
        frames = sum(len(c) for c in FrameReader(info, "ffmpeg", yuv=fmt).chunks(cfg.clip_span))
        ms["decode"], t = cpu() - t, cpu()
        windows = [YUVFrames(c.data.copy(), fmt) if fmt else c.copy() for c in FrameReader(info, "ffmpeg", yuv=fmt).chunks(cfg.clip_span)]
        t = cpu()
        model_input = ModelInput(cfg)
        small = [model_input(w) for w in windows]
        ms["model_input"], t = cpu() - t, cpu()
        kept = [k.numpy() for i in range(0, len(small), 4)
                for k in score_clips(weights.model, torch.stack(small[i:i + 4]), 0.5, dev).kept]
        ms["model_pass"], t = cpu() - t, cpu()
        for w, k in zip(windows, kept):
            fill_clip(w, k, slab_index(len(w), cfg))
        ms["black_fill"], t = cpu() - t, cpu()
        writer = VideoWriter(tmp / "stages.mp4", info.width, info.height, info.fps, times=info.frame_times(), yuv=fmt)
        for w in windows:
            writer.write(w)
        writer.commit()
        ms["encode"], t = cpu() - t, cpu()
        reencode((str(clip), str(tmp / "reencoded.mp4")))
        ms["reencode"] = cpu() - t
    row.update({f"{k}_ms": round(v / frames * 1e3, 3) for k, v in ms.items()})
    row["stages_sum_ms"] = round(sum(v for k, v in ms.items() if k != "reencode") / frames * 1e3, 3)
    row["frames"] = frames
    return row


def bench_frame(w: int, h: int, repeats: int = 300) -> dict:
    """ms to make the encoder's frame from an RGB frame: PyAV's copy (from_ndarray, GIL held) against
    the wrapper ppar uses (video_frame: from_numpy_buffer), for the yuv420p and rgb24 encoder inputs;
    video_frame_ms includes OpenCV's RGB -> I420 conversion."""
    import av
    import numpy as np

    from ppar_cli.media.encode import _opencv, video_frame

    rgb = np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)
    cv2 = _opencv()
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420) if cv2 is not None else None

    def ms(make) -> float:
        make()
        t0 = time.perf_counter()
        for _ in range(repeats):
            make()
        return round((time.perf_counter() - t0) / repeats * 1e3, 3)

    row = {"size": f"{w}x{h}", "rgb24_copy_ms": ms(lambda: av.VideoFrame.from_ndarray(rgb, format="rgb24")),
           "rgb24_wrapped_ms": ms(lambda: av.VideoFrame.from_numpy_buffer(rgb, format="rgb24"))}
    if yuv is not None:
        row.update({"yuv420p_copy_ms": ms(lambda: av.VideoFrame.from_ndarray(yuv, format="yuv420p")),
                    "yuv420p_wrapped_ms": ms(lambda: av.VideoFrame.from_numpy_buffer(yuv, format="yuv420p")),
                    "video_frame_ms": ms(lambda: video_frame(rgb, "yuv420p"))})
    return row


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return run_ppar_child(sys.argv[2], sys.argv[3], sys.argv[4:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="640x360,1280x720")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--source", type=Path, default=REAL, help="the real clip the benchmark clips are made from")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--long", type=int, default=0, help="also measure peak RSS on a clip this many times longer")
    ap.add_argument("--batch", type=int, default=0, help="also time a folder of this many clips in one run")
    ap.add_argument("--model", action="store_true", help="also time the model alone (bundled and base configs)")
    ap.add_argument("--free-model", action="store_true", help="ppar with a network that costs next to nothing: all but the model")
    ap.add_argument("--no-deface", action="store_true", help="skip deface (minutes on long 720p clips)")
    ap.add_argument("--frame", action="store_true", help="only time making the encoder's frames, at each size")
    ap.add_argument("--stages", action="store_true", help="only time each stage of ppar's path, in CPU-ms a frame, at each size")
    ap.add_argument("ppar_args", nargs="*", help="extra `ppar anonymize` options, after --")
    args = ap.parse_args()
    if args.frame:
        for size in args.sizes.split(","):
            print(json.dumps(bench_frame(*(int(v) for v in size.split("x")))), flush=True)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="ppar-bench-") as d:
        if args.free_model:
            args.ppar_args += ["--weights", str(free_model(Path(d) / "free.safetensors"))]
        if args.stages:
            for size in args.sizes.split(","):
                make_clip(Path(d) / f"{size}.mp4", *(int(v) for v in size.split("x")), args.seconds, args.source)
                print(json.dumps(bench_stages(Path(d) / f"{size}.mp4", tmp=Path(d))), flush=True)
            return
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.split("x"))
            rows.append(bench_size(w, h, args, Path(d)))
            print(json.dumps(rows[-1]), flush=True)
    if args.model:
        for name, batch in (("bundled", 8), ("base", 2)):
            for row in bench_model(name, batch, repeats=3):
                print(json.dumps(row), flush=True)
                if name == "bundled" and row.get("variant") == "fp32" and "clip_frames_per_s" in row:
                    print(json.dumps(model_share(rows, row["clip_frames_per_s"])), flush=True)


def model_share(rows: list[dict], clip_frames_per_s: float) -> dict:
    """The bundled model's share of each end-to-end run: the seconds its forward takes for that run's
    windows (one clip of cfg.frames per cfg.clip_span source frames), over the run's seconds."""
    from ppar_cli.core.config import DEFAULT_WEIGHTS, read_metadata

    cfg = read_metadata(DEFAULT_WEIGHTS)[0]

    def share(frames: int, fps: float) -> float:
        return round(-(-frames // cfg.clip_span) * cfg.frames / clip_frames_per_s / (frames / fps), 3)

    out = {}
    for r in rows:
        out[r["size"]] = share(r["frames"], r["ppar_fps"])
        if "long_frames" in r:
            out[r["size"] + " long"] = share(r["long_frames"], r["long_ppar_fps"])
    return {"model_share_of_end_to_end": out}


if __name__ == "__main__":
    main()
