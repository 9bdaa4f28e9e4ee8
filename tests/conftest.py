"""Shared fixtures: small random-weight models and clips made with ffmpeg (no files shipped)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from ppar_cli.model import PPARConfig, PPARModel
from ppar_cli.video import ffmpeg_exe
from ppar_cli.weights import save_weights

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL = SHARED / "data" / "real"
ANNOTATIONS = SHARED / "data" / "annotations"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared (real clips and label files) is not beside this checkout")


def stray(folder: Path) -> list[Path]:
    """Temporary outputs left behind anywhere under folder (ppar names them .NAME.HOST-PID.XXXX.partial[.ext])."""
    return [p for p in folder.rglob("*") if p.is_file() and ".partial" in p.name]


def make_clip(path: Path, width: int, height: int, frames: int, fps: int = 25, audio: bool = True, extra: list[str] | None = None) -> Path:
    """A test-pattern video (moving, so every frame differs) with an optional sine-tone audio track."""
    cmd = [ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={width + width % 2}x{height + height % 2}:rate={fps},scale={width}:{height}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    cmd += ["-frames:v", str(frames)] + (extra or [])
    if width % 2 or height % 2:
        cmd += ["-pix_fmt", "yuv444p"]  # 4:2:0 would crop odd sizes
    if audio:
        cmd += ["-c:a", "aac", "-shortest"]
    cmd += [str(path)]
    subprocess.run(cmd, check=True)
    return path


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
