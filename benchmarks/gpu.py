"""The GPU check, in one call on a lent machine (issue: the GPU path, verified and measured).

    bash benchmarks/gpu_wheels.sh                    # here, once: the wheel the device image lacks (PyAV) into .wheels/
    # on the device (carry .wheels), from the repository root:
    #   python3 -m pip install -q --no-index --no-deps --target /tmp/site .wheels/*.whl && \
    #   PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu.py --out $OUT
    python benchmarks/gpu.py --device cpu --quick    # the same script on a CPU, to check the script itself

Sections, each recorded in OUT/gpu.json (an error in one is recorded and the next runs):
  correctness  anonymize a folder (synthetic samples, lavfi 720p clips) on the device and on the CPU:
               exit codes, finite scores, agreement of the kept masks
  model        clips/s of the bundled and base presets at batch 8/32/128, fp32 and bf16, eager and
               torch.compile, with model FLOPs utilisation against the bf16 peak
  end_to_end   frames/s of `ppar anonymize` on a folder of 720p clips, guard off and on, against a
               plain re-encode of the same folder (FFmpeg's libraries through PyAV, as the device has
               no ffmpeg program; ppar itself decodes through PyAV there); GPU busy fraction from
               nvidia-smi samples
  train        `ppar train` steps/s on one GPU and under torchrun --nproc_per_node 1, and a resumed run
               that must equal the uninterrupted one
  eval         `ppar eval --device` (quick protocol) on a small synthetic benchmark
A table of the headline numbers is printed last.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEAK_BF16 = 790e12  # FLOP/s, dense bf16 on H100/H200 SXM (the card's datasheet; measured ceilings go in the notes)


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def ppar(*args) -> subprocess.CompletedProcess:
    return sh([sys.executable, "-m", "ppar_cli.cli", *args])


def make_clips(folder: Path, n: int, seconds: float, size: str = "1280x720") -> Path:
    """Clips of a moving colour pattern, H.264 through PyAV: the device has no ffmpeg program."""
    import av
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    w, h = (int(v) for v in size.split("x"))
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 3) % 256], -1).astype(np.uint8)
    for i in range(n):
        with av.open(str(folder / f"clip{i:02d}.mp4"), "w") as out:
            vs = out.add_stream("libx264", rate=25)
            vs.width, vs.height, vs.pix_fmt, vs.options = w, h, "yuv420p", {"preset": "veryfast", "crf": "18"}
            for t in range(int(seconds * 25)):
                frame = av.VideoFrame.from_ndarray(np.roll(base, (i + 1) * 4 * t, axis=1), format="rgb24")
                out.mux(vs.encode(frame))
            out.mux(vs.encode())
    return folder


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
            frame.pts = None
            out.mux(vs.encode(frame))
            n += 1
        out.mux(vs.encode())
    return n


def kept_masks(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.rglob("*.json")):
        if p.name.startswith("ppar-manifest"):
            continue
        d = json.loads(p.read_text())
        out[p.relative_to(folder).as_posix()] = [w["keep"] for w in d["windows"]]
    return out


def strict_json(path: Path) -> bool:
    """Valid JSON without NaN or Infinity (which Python's parser would otherwise accept)."""
    def reject(token: str):
        raise ValueError(token)

    try:
        json.loads(path.read_text(), parse_constant=reject)
        return True
    except ValueError:
        return False


def correctness(args, work: Path) -> dict:
    src = work / "corr_in"
    make_clips(src, 2, 4 if args.quick else 8)
    for sample in (REPO / "samples").glob("*.mp4"):
        shutil.copy(sample, src / sample.name)
    res = {}
    for dev in (args.device, "cpu"):
        out = work / f"corr_{dev}"
        r = ppar("anonymize", src, out, "--device", dev, "--guard", "none", "--quiet", "--overwrite")
        res[dev] = {"exit": r.returncode, "stderr": r.stderr[-500:]}
    a, b = kept_masks(work / f"corr_{args.device}"), kept_masks(work / "corr_cpu")
    import numpy as np

    agree = [float((np.array(a[k]) == np.array(b[k])).mean()) for k in a if k in b]
    finite = all(strict_json(p) for p in (work / f"corr_{args.device}").rglob("*.json") if not p.name.startswith("ppar-manifest"))
    res.update({"files": len(a), "kept_agreement_min": min(agree) if agree else None,
                "kept_agreement_mean": statistics.mean(agree) if agree else None, "score_maps_finite_json": finite})
    return res


def model_throughput(args) -> list[dict]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ppar_cli.core.config import PRESETS, PPARConfig
    from ppar_cli.core.model import PPARModel
    from ppar_cli.core.weights import load_weights

    dev = torch.device(args.device)
    rows = []
    for name in ("bundled", "base"):
        model = load_weights().model if name == "bundled" else PPARModel(PPARConfig(**PRESETS["base"], actions=list("abcdefghij")))
        model = model.to(dev).eval()
        cfg = model.cfg
        for bs in (2, 8) if args.quick else (8, 32, 128):
            x = torch.randn(bs, 3, cfg.frames, cfg.image_size, cfg.image_size, device=dev)
            with torch.inference_mode(), FlopCounterMode(display=False) as fc:
                model(x, keep_ratio=0.5)
            flops = fc.get_total_flops()
            for dtype in ("fp32", "bf16"):
                for compiled in (False, True):
                    row = {"model": name, "batch": bs, "dtype": dtype, "compile": compiled}
                    try:
                        m = torch.compile(model) if compiled else model
                        ctx = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
                        with torch.inference_mode(), ctx:
                            for _ in range(3):
                                m(x, keep_ratio=0.5)
                            _sync(dev)
                            reps = 3 if args.quick else 20
                            t0 = time.perf_counter()
                            for _ in range(reps):
                                m(x, keep_ratio=0.5)
                            _sync(dev)
                        dt = (time.perf_counter() - t0) / reps
                        row.update({"clips_per_s": round(bs / dt, 2), "tflops": round(flops / dt / 1e12, 2),
                                    "mfu_bf16_peak": round(flops / dt / PEAK_BF16, 4)})
                    except Exception as e:  # noqa: BLE001 -- recorded; the next variant runs
                        row["error"] = str(e).splitlines()[0][:200]
                    rows.append(row)
    return rows


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


class GpuBusy:
    """nvidia-smi utilisation samples every 200 ms while a block runs (None without nvidia-smi)."""

    def __enter__(self):
        self.samples, self.proc = [], None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "200"], stdout=subprocess.PIPE, text=True)
            self.thread = threading.Thread(target=lambda: [self.samples.append(float(v)) for v in self.proc.stdout
                                                           if v.strip().replace(".", "").isdigit()], daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.proc:
            self.proc.terminate()

    @property
    def busy(self) -> float | None:
        return round(statistics.mean(self.samples) / 100, 3) if self.samples else None


def end_to_end(args, work: Path) -> list[dict]:
    from multiprocessing import Pool

    src = make_clips(work / "e2e_in", 2 if args.quick else 16, 4 if args.quick else 20)
    files = sorted(src.glob("*.mp4"))
    rows = []
    t0 = time.perf_counter()
    with Pool(len(files)) as pool:  # all files at once, one process each
        frames = sum(pool.map(reencode, [(str(p), str(work / f"ff_{p.name}")) for p in files]))
    ff = time.perf_counter() - t0
    rows.append({"what": "plain re-encode (libx264 veryfast crf 20), all files at once", "fps": round(frames / ff, 1)})
    for guard in ("none", "auto"):
        out = work / f"e2e_{guard}"
        with GpuBusy() as g:
            t0 = time.perf_counter()
            r = ppar("anonymize", src, out, "--device", args.device, "--guard", guard, "--quiet", "--overwrite",
                     "--batch-size", "16")
            dt = time.perf_counter() - t0
        rows.append({"what": f"ppar --guard {guard}", "fps": round(frames / dt, 1), "ratio_to_reencode": round(ff / dt, 3),
                     "gpu_busy": g.busy, "exit": r.returncode, "stderr": r.stderr[-300:]})
    return rows


def synth_bench(args, work: Path) -> Path:
    bench = work / "synth"
    if not (bench / "labels.json").exists():
        r = ppar("synth", bench, "--videos", 24 if args.quick else 200, "--seed", 3, "--size", 64, "--frames", 32, "-q")
        if r.returncode:
            raise RuntimeError(r.stderr[-300:])
    return bench


def train_check(args, work: Path) -> dict:
    bench = synth_bench(args, work)
    common = ["--data", bench, "--batch-size", 8, "--epochs", 2, "--seed", 1]
    res = {}
    t0 = time.perf_counter()
    r = ppar("train", *common, "--out", work / "full.safetensors", "--run-dir", work / "run_full")
    res["one_gpu_s"], res["one_gpu_exit"] = round(time.perf_counter() - t0, 1), r.returncode
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


def eval_check(args, work: Path) -> dict:
    bench = synth_bench(args, work)
    r = ppar("eval", "--data", bench, "--device", args.device, "--max-videos", 12, "--keep", "0.5",
             "--methods", "ppar,raw,random", "--out", work / "eval", "--quiet")
    out = {"exit": r.returncode, "stderr": r.stderr[-300:]}
    if r.returncode == 0:
        out["records"] = json.loads((work / "eval" / "results.json").read_text())["records"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out")))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small sizes: check the script, not the card")
    ap.add_argument("--only", default="correctness,model,end_to_end,train,eval")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "ppar-gpu"
    work.mkdir(parents=True, exist_ok=True)
    import torch

    report = {"torch": torch.__version__, "device": args.device,
              "card": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    sections = {"correctness": correctness, "model": lambda a, w: model_throughput(a), "end_to_end": end_to_end,
                "train": train_check, "eval": eval_check}
    for name in args.only.split(","):
        t0 = time.perf_counter()
        try:
            report[name] = sections[name](args, work)
        except Exception:  # noqa: BLE001 -- recorded, and the next section runs
            report[name] = {"error": traceback.format_exc()[-1500:]}
        report[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)
        (args.out / "gpu.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "model"}, indent=1)[:6000])
    for row in report.get("model", []) if isinstance(report.get("model"), list) else []:
        print(row)


if __name__ == "__main__":
    main()
