"""How the full protocol's fresh action model came to be: each design step of ClipNet, trained from
scratch on raw synthetic video and tested on the benchmark's test windows (top-1, one seed).

    ppar synth /work/data/synth_test --videos 500 --seed 77
    python scripts/action_model_ablation.py /work/data/synth_test --steps mean:2,max:2,max:4,clipnet:4

A step is MODEL:WINDOWS: `mean` (3D convolutions, mean over space and time), `max` (max over space,
mean over time), `clipnet` (max over space, a temporal layer, mean and max over time: the one in
research/full_protocol.py); WINDOWS training windows per video. Each takes a few minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ppar_cli.core.weights import bundled, load_weights
from ppar_cli.research.data import ClipSet, open_benchmark
from ppar_cli.research.evaluate import Windows
from ppar_cli.research.full_protocol import ClipNet, _conv_stack, fit


class MeanPool(ClipNet):
    """ClipNet's convolutions, mean over space and time, a linear head."""

    def __init__(self, classes: int):
        torch.nn.Module.__init__(self)  # only the body and a head, made in that order (the seed's draws)
        self.body = _conv_stack(torch.nn.Conv3d, (32, 64, 128, 128), (1, 2, 2), cin=6)
        self.head = torch.nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3, 4)))


class MaxPool(MeanPool):
    """The same, max over space, mean over time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).amax((3, 4)).mean(2))


MODELS = {"mean": MeanPool, "max": MaxPool, "clipnet": ClipNet}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--steps", default="mean:2,max:2,max:4,clipnet:4")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--max-train-videos", type=int, default=400)
    args = ap.parse_args()
    cfg = load_weights(bundled("ppar-small.safetensors")).model.cfg  # the synthetic benchmark's windows
    bench = open_benchmark(args.data, "auto", 1, None, None)
    train, test = ClipSet(bench.train[:args.max_train_videos], cfg), ClipSet(bench.test, cfg)
    test_w = Windows.of(test, 1)
    for step in args.steps.split(","):
        name, windows = step.split(":")
        train_w = Windows.of(train, int(windows))
        torch.manual_seed(0)
        t0 = time.perf_counter()
        n_act = int(max(train_w.actions.max(), test_w.actions.max())) + 1
        best = fit(MODELS[name](n_act), train_w.raw, torch.from_numpy(train_w.actions), test_w.raw, F.cross_entropy,
                   lambda lg: {"top1": float((lg.argmax(1).numpy() == test_w.actions).mean())}, "top1", args.epochs)
        print(f"{step}: raw top-1 {100 * best['top1']:.1f}% ({len(train_w.raw)} training windows, "
              f"{time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
