"""Contact sheet of a synthetic benchmark: one row per action, frames across, then the ground-truth
masks (red: privacy, green: action).  Usage: python scripts/synth_sheet.py BENCH_DIR OUT.png"""
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ppar_cli.research.data import decode_resized
from ppar_cli.research.synth import load_masks

root, out = Path(sys.argv[1]), Path(sys.argv[2])
index = json.loads((root / "labels.json").read_text())
rows = []
for a, action in enumerate(index["actions"]):
    name = next(n for n, v in index["videos"].items() if v["action"] == a)
    video = decode_resized(root / name, index["size"])
    priv, act = load_masks((root / name).with_suffix(".masks.npz"))
    n = len(video)
    frames = [video[f] for f in np.linspace(0, n - 1, 5).astype(int)]
    f = n // 2
    overlay = np.where(priv[f][..., None], [255, 40, 40], np.where(act[f][..., None], [40, 255, 40], video[f] // 2)).astype(np.uint8)
    rows.append((action, index["videos"][name]["attributes"], np.concatenate(frames + [overlay], 1)))
fig, axes = plt.subplots(len(rows), 1, figsize=(12, 2.1 * len(rows)), dpi=80)
for ax, (action, attrs, img) in zip(axes, rows):
    ax.imshow(img)
    ax.set_axis_off()
    ax.set_title(f"{action}   " + ", ".join(f"{k}={v}" for k, v in zip(index["attributes"], attrs)), fontsize=9, loc="left")
fig.tight_layout()
fig.savefig(out)
