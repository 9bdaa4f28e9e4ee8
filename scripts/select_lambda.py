"""Choose the privacy weight lambda of the tubelet score on a validation benchmark (not the test one).

    python scripts/select_lambda.py --weights W --data /work/data/synth_val --lambdas 0.5,1,2,4,8 [--write]
    python scripts/select_lambda.py --weights W --data teach/pseudo-real-train --split test ...  # its validation split
    python scripts/select_lambda.py ... --prune-blocks 2  # prune at block 2 alone at inference

Prints privacy pixels removed, action pixels kept and motion kept / area kept at keep 0.5 for each lambda next to the oracle,
and picks the largest lambda (the most privacy removed) whose action pixels kept stay within 5 points
of the oracle's: half the 10-point budget, as a margin for unseen data. With --privacy-target P it
picks instead the smallest lambda that removes at least P of the privacy pixels: the privacy asked
for, and beyond it as much action as the weights keep (the largest lambda when none reaches P). --write stores the choice in
the weights' config (its provenance records the sweep). --prune-blocks sets the blocks that prune at
inference (the weights were trained with their own; stored with --write too).
"""
from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch

from ppar_cli.core.weights import load_weights, save_weights
from ppar_cli.research.data import ClipSet, open_benchmark
from ppar_cli.research.evaluate import quick_protocol


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--lambdas", default="0.5,1,2,4,8")
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--clips-per-video", type=int, default=3)
    ap.add_argument("--split", choices=("all", "test"), default="all",
                    help="all: a benchmark none of which was trained on; test: only its test (validation) split")
    ap.add_argument("--privacy-target", type=float, default=None)
    ap.add_argument("--prune-blocks", default=None, help="comma-separated 1-based blocks, e.g. 2")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    w = load_weights(args.weights)
    trained_blocks = w.provenance.get("lambda_selection", {}).get("trained_prune_blocks", w.model.cfg.prune_blocks)
    if args.prune_blocks:  # replace() validates the new schedule against the model's depth
        w.model.cfg = dataclasses.replace(w.model.cfg, prune_blocks=tuple(int(b) for b in args.prune_blocks.split(",")))
    bench = open_benchmark(args.data)
    clips = ClipSet(bench.test if args.split == "test" else bench.train + bench.test, w.model.cfg)
    rows = []
    for lam in (float(v) for v in args.lambdas.split(",")):
        recs = quick_protocol(w.model, clips, ("ppar",), (args.keep,), clips_per_video=args.clips_per_video, lambda_priv=lam)
        r = recs[0]
        rows.append({"lambda": lam, "privacy_pixels_removed": r["privacy_pixels_removed"],
                     "action_pixels_kept": r["action_pixels_kept"], "motion_over_area": r["motion_over_area"]})
        print(json.dumps(rows[-1]), flush=True)
    oracle = quick_protocol(w.model, clips, ("oracle", "random"), (args.keep,), clips_per_video=args.clips_per_video)
    for r in oracle:
        print(json.dumps({"method": r["method"], "privacy_pixels_removed": r["privacy_pixels_removed"],
                          "action_pixels_kept": r["action_pixels_kept"]}))
    bound = next(r["action_pixels_kept"] for r in oracle if r["method"] == "oracle")
    if args.privacy_target is None:
        good = [r for r in rows if r["action_pixels_kept"] >= bound - 0.05]
        best = max(good, key=lambda r: r["lambda"]) if good else min(rows, key=lambda r: r["lambda"])
    else:
        enough = [r for r in rows if r["privacy_pixels_removed"] >= args.privacy_target]
        best = min(enough, key=lambda r: r["lambda"]) if enough else max(rows, key=lambda r: r["lambda"])
    print(f"chosen lambda {best['lambda']:g}")
    if args.write:
        w.model.cfg.lambda_priv = best["lambda"]
        prov = dict(w.provenance)
        prov["lambda_selection"] = {"data": args.data, "split": args.split, "keep": args.keep, "sweep": rows,
                                    "prune_blocks": list(w.model.cfg.prune_blocks), "trained_prune_blocks": list(trained_blocks),
                                    "rule": f"privacy target {args.privacy_target}" if args.privacy_target else "action within 5 of oracle",
                                    "oracle": {r["method"]: r["action_pixels_kept"] for r in oracle}}
        save_weights(w.model, args.weights, prov)
        print(f"wrote lambda_priv={best['lambda']:g} into {args.weights}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    np.set_printoptions(precision=3)
    main()
