"""What the research path's clips cost: a ClipSet's build (seconds, CPU, peak memory) and its
windows read in batches, with every video's frames held in memory or read from the files.

    python benchmarks/clipset.py VIDEOS --mode held        # then --mode read, in a fresh process each
    python benchmarks/clipset.py teach/pseudo-real-train --mode held --preset weights/ppar-real.safetensors --crops

VIDEOS: a folder of videos (each is one item, no labels), or a benchmark that `open_benchmark`
reads (its training split). `--preset` names a config preset or a weights file whose config to use
(default: base, the paper's 16 frames at stride 2 and 224 px). `--pyav`: as where decord is not
installed (ARM Linux, macOS), every video through PyAV. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import resource
import time
from pathlib import Path

import numpy as np

from ppar_cli.core.config import PRESETS, PPARConfig, read_metadata
from ppar_cli.media.probe import video_files
from ppar_cli.research.data import ClipSet, Item, open_benchmark, random_crop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", type=Path)
    ap.add_argument("--mode", choices=("held", "read"), required=True)
    ap.add_argument("--preset", default="base")
    ap.add_argument("--crops", action="store_true", help="as training with --crop-scale 0.6 (needs masks)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--pyav", action="store_true", help="decord hidden: every video through PyAV")
    args = ap.parse_args()
    if args.pyav:
        sys.modules["decord"] = None  # FrameReader falls back to PyAV where decord cannot be imported
    if args.preset in PRESETS:
        cfg = PPARConfig(**{**PRESETS[args.preset], "actions": ["a"]})
    else:
        cfg = read_metadata(Path(args.preset))[0]
    bench = any((args.videos / name).exists() for name in ("labels.json", "pseudo.json"))  # synthetic, pseudo-labelled
    items = open_benchmark(args.videos).train if bench else [Item(p, 0) for p in video_files(args.videos)]
    t, c = time.perf_counter(), time.process_time()
    clips = ClipSet(items, cfg, crops=args.crops, hold=None if args.mode == "held" else 0)
    built = {"build_s": round(time.perf_counter() - t, 1), "build_cpu_s": round(time.process_time() - c, 1)}
    rng = np.random.default_rng(0)
    plan = []
    for _ in range(args.batches):
        idx = rng.integers(len(items), size=args.batch).tolist()
        plan.append((idx, [clips.starts(i, rng) for i in idx],
                     [random_crop(rng, cfg.image_size, 0.6) if args.crops else None for _ in idx]))
    t, c = time.perf_counter(), time.process_time()
    n = sum(len(b) for b in clips.batches(plan))
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    print(json.dumps({"mode": args.mode, "videos": len(items), "image_size": cfg.image_size, "frames": cfg.frames,
                      "frame_stride": cfg.frame_stride, **built, "windows": n, "windows_per_s": round(n / wall, 1),
                      "cpu_ms_per_window": round(1000 * cpu / n, 1),
                      "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}))


if __name__ == "__main__":
    main()
