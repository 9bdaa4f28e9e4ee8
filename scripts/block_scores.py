"""Each pruning block's CLS attention on the validation clips, with every token alive, and what
ranking by that block's score alone would keep at keep 0.5.

    python scripts/block_scores.py --weights weights/ppar-real.safetensors --data teach/pseudo-real-train \
        --lambdas 0.3,1,1.5,2

`a_priv_on_privacy` in a training run's metrics.jsonl is the first pruning block's; this shows the
others', and whether one block's ranking alone (a schedule that prunes there only: `select_lambda.py
--prune-blocks`) would trade privacy against action better than the cascade of all of them.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from ppar_cli.core.weights import load_weights
from ppar_cli.research.data import ClipSet, open_benchmark
from ppar_cli.research.evaluate import Windows, score_batches
from ppar_cli.research.metrics import attention_mass, motion_metrics, pixel_metrics, tubelet_motion


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="weights/ppar-real.safetensors")
    ap.add_argument("--data", default="teach/pseudo-real-train")
    ap.add_argument("--lambdas", default="0.3,1,1.5,2")
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--clips-per-video", type=int, default=2)
    args = ap.parse_args()
    model = load_weights(args.weights).model.eval()
    cfg = model.cfg
    w = Windows.of(ClipSet(open_benchmark(args.data).test, cfg), args.clips_per_video)
    out = score_batches(model, w.raw, 1.0, torch.device("cpu"), batch_size=16)  # keep 1: every block scores every token
    a_act, a_priv = out["a_act"], out["a_priv"]  # (clips, pruning blocks, N)
    motion = tubelet_motion(w.raw, cfg)
    k = round(args.keep * cfg.num_tokens)
    print(f"privacy tubelets: {(w.priv > 0).mean():.3f} of all")
    for j, block in enumerate(cfg.prune_blocks):
        print(f"block {block}: privacy CLS on privacy tubelets {attention_mass(a_priv[:, j], w.priv):.3f}, "
              f"action CLS on them {attention_mass(a_act[:, j], w.priv):.3f}")
        for lam in (float(v) for v in args.lambdas.split(",")):
            s = a_act[:, j] - lam * a_priv[:, j]
            kept = np.zeros(s.shape, bool)
            np.put_along_axis(kept, np.argsort(-s, axis=1, kind="stable")[:, :k], True, axis=1)
            r = {**pixel_metrics(kept, w.priv, w.act), **motion_metrics(kept, motion)}
            print(f"  this block alone, lambda {lam:g}: privacy pixels removed {r['privacy_pixels_removed']:.3f}, "
                  f"action pixels kept {r['action_pixels_kept']:.3f}, motion / area {r['motion_over_area']:.3f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
