"""Public pretrained weights into ppar's layers, converted once: torchvision's ImageNet MobileNetV2
file (a pickle, read with ``weights_only=True``, which refuses code) -> the stem's safetensors."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ppar_cli.core.clips import PIXEL_MEAN, PIXEL_STD
from ppar_cli.core.stem import BLOCKS
from ppar_cli.errors import DataError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _fold(sd: dict, conv: str, bn: str, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """A conv (no bias) followed by batch norm -> one conv's weight and bias."""
    scale = sd[f"{bn}.weight"] / torch.sqrt(sd[f"{bn}.running_var"] + eps)
    w = sd[f"{conv}.weight"] * scale.view(-1, 1, 1, 1)
    b = sd[f"{bn}.bias"] - sd[f"{bn}.running_mean"] * scale
    return w, b


def mobilenet_v2_stem(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """torchvision's ``mobilenet_v2-b0353104.pth`` -> state dict of :class:`~ppar_cli.core.stem.MobileNetStem`,
    batch norms folded, and the first conv rescaled so ppar's input normalisation (mean 0.45, std
    0.25 for every channel) gives exactly ImageNet's per-channel normalisation."""
    path = Path(path)
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- a pickle that is not plain tensors is refused, whatever it is
        raise DataError(f"{path}: not a torchvision MobileNetV2 state dict ({str(e).splitlines()[0][:160]})") from None
    out = {}
    try:
        w, b = _fold(sd, "features.0.0", "features.0.1")
        # x_imagenet = (x_ppar * PIXEL_STD + PIXEL_MEAN - mean_c) / std_c, folded into the first conv
        mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        out["first.weight"] = w * PIXEL_STD / std
        out["first.bias"] = b + (w * (PIXEL_MEAN - mean) / std).sum((1, 2, 3))
        for i, (expand, _, _) in enumerate(BLOCKS):
            src, dst = f"features.{i + 1}.conv", f"blocks.{i}"
            parts = (["expand"] if expand != 1 else []) + ["depthwise"]
            for j, name in enumerate(parts):
                out[f"{dst}.{name}.weight"], out[f"{dst}.{name}.bias"] = _fold(sd, f"{src}.{j}.0", f"{src}.{j}.1")
            n = len(parts)
            out[f"{dst}.project.weight"], out[f"{dst}.project.bias"] = _fold(sd, f"{src}.{n}", f"{src}.{n + 1}")
    except KeyError as e:
        raise DataError(f"{path}: not a torchvision MobileNetV2 state dict (no {e})") from None
    return out
