"""Contact sheet of pseudo masks: one row per video, frames evenly spaced, privacy tinted red,
action green, the person mask's outline blue.

    python scripts/pseudo_sheet.py PSEUDO_DIR sheet.png [--videos 12] [--frames 5]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ppar_cli.core.clips import resize_frames
from ppar_cli.media.decode import FrameReader
from ppar_cli.media.probe import probe
from ppar_cli.research.synth import load_masks


def overlay(frame: np.ndarray, privacy: np.ndarray, action: np.ndarray, person: np.ndarray) -> np.ndarray:
    out = frame.astype(np.float32)
    out[privacy] = 0.45 * out[privacy] + 0.55 * np.array([255, 0, 0])
    out[action] = 0.45 * out[action] + 0.55 * np.array([0, 255, 0])
    edge = person & ~(np.roll(person, 1, 0) & np.roll(person, -1, 0) & np.roll(person, 1, 1) & np.roll(person, -1, 1))
    out[edge] = (40, 120, 255)
    return out.clip(0, 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pseudo", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--frames", type=int, default=5)
    args = ap.parse_args()
    meta = json.loads((args.pseudo / "pseudo.json").read_text())
    index, root = meta["videos"], args.pseudo / meta.get("root", "")
    names = sorted(index)[:: max(1, len(index) // args.videos)][: args.videos]
    rows = []
    for name in names:
        privacy, action, person = load_masks(args.pseudo / (name + ".masks.npz"), ("privacy", "action", "person"))
        F, H, W = privacy.shape
        frames = np.concatenate(list(FrameReader(probe(index[name].get("source", root / name)), backend="ffmpeg").chunks(64)))[:F]
        picks = np.linspace(1, F - 1, args.frames).astype(int)
        small = resize_frames(torch.from_numpy(frames[picks]), (H, W)).numpy()
        row = [overlay(f, privacy[i], action[i], person[i]) for f, i in zip(small, picks)]
        row = [np.asarray(Image.fromarray(r).resize((240, 180))) for r in row]
        rows.append(np.concatenate(row, 1))
    Image.fromarray(np.concatenate(rows, 0)).save(args.out)
    print(f"wrote {args.out}: {len(rows)} videos")


if __name__ == "__main__":
    main()
