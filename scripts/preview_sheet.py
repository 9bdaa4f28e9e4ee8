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

from ppar_cli.video import FrameReader, probe  # noqa: E402


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
    g = meta["grid"]
    rows, cols = np.array(g["row_edges"]), np.array(g["col_edges"])
    per_slab = g["source_frames_per_tubelet"]
    picks = np.linspace(0, len(src) - 1, args.rows + 2).astype(int)[1:-1]
    fig, axes = plt.subplots(len(picks), 2, figsize=(8, 2.6 * len(picks) * src.shape[1] / src.shape[2] + 0.6), dpi=110)
    for ax_row, f in zip(np.atleast_2d(axes), picks):
        w = next(w for w in meta["windows"] if w["start"] <= f < w["start"] + w["frames"])
        slab = (f - w["start"]) // per_slab
        scores, keep = np.array(w["scores"])[slab], np.array(w["keep"], bool)[slab]
        guard = np.array(w["guard"], bool)[slab] if "guard" in w else np.zeros_like(keep)
        a, b = ax_row
        a.imshow(src[f])
        heat = scores[np.searchsorted(rows, np.arange(src.shape[1]), "right") - 1][:, np.searchsorted(cols, np.arange(src.shape[2]), "right") - 1]
        a.imshow(heat, cmap="inferno", alpha=0.45)
        for r in range(len(rows) - 1):
            for c in range(len(cols) - 1):
                if keep[r, c] or guard[r, c]:
                    a.add_patch(plt.Rectangle((cols[c], rows[r]), cols[c + 1] - cols[c], rows[r + 1] - rows[r], fill=False,
                                              ec="red" if guard[r, c] else "white", lw=0.8))
        a.set_title(f"frame {f}: scores, kept (white), face guard (red)", fontsize=7)
        b.imshow(out[f])
        b.set_title(f"anonymized (keep {meta['model']['keep']})", fontsize=7)
        for ax in ax_row:
            ax.axis("off")
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
