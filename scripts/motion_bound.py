"""Where the motion is lost: the weights' keep masks against bounds that swap one CLS for the truth.

    python scripts/motion_bound.py --weights weights/ppar-real.safetensors --data teach/pseudo-real-train

On the validation split's windows at keep 0.5 (as `ppar eval --clips-per-video 2`) it prints motion
kept / area kept and privacy pixels removed for:
- the weights (their lambda, or --lambda);
- the motion bound: every privacy tubelet dropped, then the most moving ones kept;
- the true privacy mask with the weights' action attention ranking the rest (is a_act the limit?);
- the motion itself as the action attention against the weights' privacy attention, over lambdas
  (is a_priv the limit?);
and the share of each CLS's attention on privacy tubelets.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from ppar_cli.core.model import keep_counts
from ppar_cli.core.weights import load_weights
from ppar_cli.research.data import ClipSet, open_benchmark
from ppar_cli.research.evaluate import Windows
from ppar_cli.research.metrics import attention_mass, motion_metrics, oracle_keep, pixel_metrics, tubelet_motion


def top(scores: np.ndarray, k: int) -> np.ndarray:
    keep = np.zeros(scores.shape, bool)
    np.put_along_axis(keep, np.argsort(-scores, axis=1)[:, :k], True, axis=1)
    return keep


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="weights/ppar-real.safetensors")
    ap.add_argument("--data", default="teach/pseudo-real-train")
    ap.add_argument("--lambda", dest="lam", type=float, default=None)
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--clips-per-video", type=int, default=2)
    args = ap.parse_args()
    model = load_weights(args.weights).model.eval()
    w = Windows.of(ClipSet(open_benchmark(args.data).test, model.cfg), args.clips_per_video)
    motion, priv = tubelet_motion(w.raw, model.cfg), w.priv > 0
    k = keep_counts(model.cfg.num_tokens, args.keep, 1)[0]
    out = w.score(model, args.keep, torch.device("cpu"), args.lam)
    a_act, a_priv = out["a_act"][:, 0], out["a_priv"][:, 0]  # the first pruning block's

    def row(name: str, keep: np.ndarray) -> None:
        px = pixel_metrics(keep, w.priv, w.act)
        print(json.dumps({"keep_rule": name, "privacy_pixels_removed": round(px["privacy_pixels_removed"], 4),
                          **{m: round(v, 4) for m, v in motion_metrics(keep, motion).items()}}))

    def truth_first(rank: np.ndarray) -> np.ndarray:  # the oracle's rule, ranked by something else
        return np.stack([oracle_keep(p, r, k) for p, r in zip(w.priv, rank)])

    row("weights", out["keep"])
    row("motion bound: privacy tubelets dropped, then the most moving", truth_first(motion))
    row("true privacy, the weights' a_act ranks the rest", truth_first(a_act))
    share = motion / motion.sum(1, keepdims=True).clip(1e-9)
    for lam in (0.5, 1, 2, 4, 8):
        row(f"motion as a_act, the weights' a_priv, lambda {lam:g}", top(share - lam * a_priv, k))
    print(json.dumps({"privacy_tubelet_area": round(float(priv.mean()), 4),
                      "motion_in_privacy_tubelets": round(float(motion[priv].sum() / motion.sum()), 4),
                      "a_priv_on_privacy_tubelets": round(attention_mass(a_priv, w.priv), 4),
                      "a_act_on_privacy_tubelets": round(attention_mass(a_act, w.priv), 4)}))


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
