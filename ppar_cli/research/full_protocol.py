"""The `full` evaluation protocol: fresh models trained on anonymized clips (SPEC section 5).

For every method (and keep ratio) the training windows are anonymized once (cached on disk for
reruns) and the test windows alongside; then, from scratch on the anonymized training windows:
  - an action model (a small 3D CNN with a temporal layer) reports top-1 on the anonymized test windows;
  - a privacy attacker (a frame-level 2D CNN whose logits are averaged over a clip's frames) reports
    cMAP and macro F1 at 0.5, at its best-cMAP epoch (the defender's worst case);
  - on the synthetic benchmark, a re-identification attacker (the same frame model over the
    identities, which appear in both splits) reports identity top-1 at its best epoch.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ppar_cli.core.clips import normalize
from ppar_cli.core.model import PPARModel, with_frame_diff
from ppar_cli.media.files import atomic_path
from ppar_cli.research.evaluate import Windows, anonymize_windows, runs
from ppar_cli.research.report import label
from ppar_cli.research.metrics import privacy_metrics


def _to_input(clips: np.ndarray) -> torch.Tensor:
    """uint8 (B, T, S, S, 3) -> float (B, 3, T, S, S), normalised as the anonymizer's input."""
    return normalize(torch.from_numpy(clips)).permute(0, 4, 1, 2, 3).contiguous()


def _conv_stack(conv: type, widths: tuple[int, ...], stride, cin: int = 3) -> nn.Sequential:
    layers = []
    for c in widths:
        layers += [conv(cin, c, 3, stride, 1), nn.BatchNorm3d(c) if conv is nn.Conv3d else nn.BatchNorm2d(c), nn.ReLU()]
        cin = c
    return nn.Sequential(*layers)


class ClipNet(nn.Module):
    """Action model: four strided 3D convolutions on the frames and their temporal differences,
    each frame's features max-pooled over space (the person fills a small part of the frame), a
    temporal convolution, and a linear head on the mean and the max over time. Each of these steps
    raised raw top-1 on the synthetic benchmark (scripts/action_model_ablation.py, README)."""

    DIFF_SCALE = 8.0  # differences are about 20x smaller than frames (as in the anonymizer's input)

    def __init__(self, classes: int):
        super().__init__()
        self.body = _conv_stack(nn.Conv3d, (32, 64, 128, 128), (1, 2, 2), cin=6)
        self.temporal = nn.Sequential(nn.Conv1d(128, 128, 3, 1, 1), nn.ReLU())
        self.head = nn.Linear(256, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, S, S) -> (B, 128, T, s, s)."""
        return self.body(with_frame_diff(x, self.DIFF_SCALE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.temporal(self.features(x).amax((3, 4)))  # (B, 128, T)
        return self.head(torch.cat([f.mean(2), f.amax(2)], 1))


class FrameNet(nn.Module):
    """Frame-level attacker: a 2D CNN on every frame, logits averaged over the clip."""

    def __init__(self, outputs: int):
        super().__init__()
        self.body = _conv_stack(nn.Conv2d, (32, 64, 128, 128), 2)
        self.head = nn.Linear(128, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        frames = x.transpose(1, 2).reshape(B * T, C, H, W)
        return self.head(self.body(frames).mean((2, 3))).view(B, T, -1).mean(1)


def fit(net: nn.Module, x_train: np.ndarray, y_train: torch.Tensor, x_test: np.ndarray, loss_fn: Callable,
        score_fn: Callable[[torch.Tensor], dict], key: str, epochs: int, batch: int = 64, seed: int = 0,
        device: torch.device = torch.device("cpu")) -> dict:
    """Train from scratch; the test metrics of the epoch with the best ``key`` (higher is better)."""
    g = torch.Generator().manual_seed(seed)
    net, y_train = net.to(device), y_train.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * -(-len(x_train) // batch))
    best: dict = {}
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x_train), generator=g).split(batch):
            x = _to_input(x_train[idx.numpy()]).to(device)
            flip = torch.rand(len(idx), generator=g) < 0.5
            x[flip] = x[flip].flip(-1)
            loss = loss_fn(net(x), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.inference_mode():
            logits = torch.cat([net(_to_input(x_test[i:i + 256]).to(device)).cpu() for i in range(0, len(x_test), 256)])
        scores = score_fn(logits)
        if not best or scores[key] > best[key]:
            best = scores
    return best


def _cached(cache: Path | None, tag: str, make: Callable[[], np.ndarray]) -> np.ndarray:
    if cache is None:
        return make()
    path = cache / f"{tag}.npy"
    if path.exists():
        return np.load(path)
    arr = make()
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".npy") as tmp:  # a run stopped meanwhile leaves no half entry to load
        np.save(tmp, arr)
    return arr


def full_protocol(model: PPARModel, train: Windows, test: Windows, methods, keeps, epochs: int = 8,
                  cache: Path | None = None, lambda_priv: float | None = None, seed: int = 0, progress=None,
                  device: torch.device = torch.device("cpu")) -> list[dict]:
    """One record per (method, keep): fresh models trained (from ``seed``) on anonymized training
    windows and tested on anonymized test windows."""
    cfg = model.cfg
    model.eval()
    sig = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()[:12]
    data = hashlib.sha256(np.ascontiguousarray(train.raw).data).hexdigest()[:8]  # other videos or windows: another cache entry
    records = []
    has_masks = train.priv is not None and test.priv is not None
    for method, keep in runs(methods, keeps, has_masks, train.person is not None and test.person is not None):
        tag = label({"method": method, "keep": keep}) + (f"_{sig}_l{lambda_priv}" if method in ("ppar", "static") else "")
        tag += (f"_s{seed}" if method == "random" else "") + f"_{data}"
        rng = np.random.default_rng(seed)
        rec = {"method": method, "keep": keep, "protocol": "full"}
        x_tr = _cached(cache, f"{tag}_train", lambda: anonymize_windows(model, train, method, keep, rng, device,
                                                                        lambda_priv=lambda_priv)[0])
        x_te, extra = anonymize_windows(model, test, method, keep, np.random.default_rng(seed + 1), device,
                                        lambda_priv=lambda_priv)
        rec.update(extra)
        torch.manual_seed(seed)
        y_act = torch.from_numpy(train.actions)
        n_act = int(max(train.actions.max(), test.actions.max())) + 1
        rec["action_top1"] = fit(ClipNet(n_act), x_tr, y_act, x_te, F.cross_entropy,
                                 lambda lg: {"top1": float((lg.argmax(1).numpy() == test.actions).mean())}, "top1", epochs, seed=seed, device=device)["top1"]
        if train.attrs is not None and test.attrs is not None:
            torch.manual_seed(seed)
            y = torch.from_numpy(train.attrs).float()
            names = cfg.attributes if len(cfg.attributes) == y.shape[1] else [f"attr{i}" for i in range(y.shape[1])]
            best = fit(FrameNet(y.shape[1]), x_tr, y, x_te, F.binary_cross_entropy_with_logits,
                       lambda lg: privacy_metrics(lg.sigmoid().numpy(), test.attrs, names), "privacy_cmap", epochs,
                       seed=seed, device=device)
            rec.update(best)
        if train.identities is not None and test.identities is not None:
            torch.manual_seed(seed)
            n_id = int(max(train.identities.max(), test.identities.max())) + 1
            rec["reid_top1"] = fit(FrameNet(n_id), x_tr, torch.from_numpy(train.identities).long(), x_te, F.cross_entropy,
                                   lambda lg: {"top1": float((lg.argmax(1).numpy() == test.identities).mean())}, "top1", epochs,
                                   seed=seed, device=device)["top1"]
        records.append(rec)
        if progress:
            progress()
    return records
