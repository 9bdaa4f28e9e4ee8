"""Fixtures: small random-weight models and clips made with ffmpeg (no files shipped); the shared
helpers live in helpers.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import make_clip

from ppar_cli.core.config import PPARConfig
from ppar_cli.core.model import PPARModel
from ppar_cli.core.weights import save_weights


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Random-init weights of a tiny config: for pipeline tests only, never shipped."""
    torch.manual_seed(0)
    cfg = PPARConfig(name="test-tiny", frames=8, frame_stride=2, image_size=32, tubelet=(2, 8, 8), dim=32, depth=2,
                     heads=2, prune_blocks=(1, 2), actions=["a", "b", "c"])
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(PPARModel(cfg), path, {"note": "random init for tests"})
    return path


@pytest.fixture(scope="session")
def odd_clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "odd.mp4", 333, 201, 50)
