"""Contact sheet of an anonymization: per row one frame of the original with the tubelet scores as a
heatmap, the kept grid (white) and the guard's forced tubelets (red) drawn over it, then the output.

    ppar anonymize ../shared/data/real/walk.mkv /tmp/walk.mp4
    python scripts/preview_sheet.py ../shared/data/real/walk.mkv /tmp/walk.mp4 docs/preview_walk.png --rows 4
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ppar_cli.media.decode import FrameReader  # noqa: E402
from ppar_cli.media.probe import probe
from ppar_cli.pipeline.preview import side_by_side  # noqa: E402


def frames(path: Path) -> np.ndarray:
    return np.concatenate(list(FrameReader(probe(path)).chunks(64)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("original", type=Path)
    ap.add_argument("anonymized", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--rows", type=int, default=4)
    args = ap.parse_args()
    meta = json.loads(args.anonymized.with_suffix(".json").read_text())
    src, out = frames(args.original), frames(args.anonymized)
    per_slab = meta["grid"]["source_frames_per_tubelet"]
    picks = np.linspace(0, len(src) - 1, args.rows + 2).astype(int)[1:-1]
    fig, axes = plt.subplots(len(picks), 1, figsize=(8, len(picks) * (4 * src.shape[1] / src.shape[2] + 0.3)), dpi=110)
    for ax, f in zip(np.atleast_1d(axes), picks):
        w = next(w for w in meta["windows"] if w["start"] <= f < w["start"] + w["frames"])
        slab = np.array([(f - w["start"]) // per_slab])
        ax.imshow(side_by_side(src[f:f + 1], out[f:f + 1], w, slab)[0])
        ax.set_title(f"frame {f}: scores, kept (white), face guard (red) | anonymized (keep {meta['model']['keep']})", fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
