"""What leaked, as a picture: every frame `ppar audit` counted as leaked for CenterFace, the original
with its input boxes (red) beside the output with the boxes found again there (yellow), each score
written beside its box. A leak is a box found again where one was found before, so looking is how
a hand or a shirt that CenterFace scores low is told from a face.

    ppar audit ../shared/data/real /tmp/real_out --json > audit.json
    python scripts/leak_sheet.py audit.json docs/audit_leaks.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ppar_cli.faces.detectors import CenterFace  # noqa: E402
from ppar_cli.media.decode import FrameReader  # noqa: E402
from ppar_cli.media.probe import probe  # noqa: E402


def frames(path: Path, indices: set[int]) -> dict[int, np.ndarray]:
    """The frames at ``indices``, in one pass over the file, decoded as the audit decodes."""
    out, seen = {}, 0
    for chunk in FrameReader(probe(path), backend="ffmpeg").chunks(32):
        out.update({i: chunk[i - seen].copy() for i in indices if seen <= i < seen + len(chunk)})
        seen += len(chunk)
    return out


def draw(ax, image: np.ndarray, boxes: np.ndarray, color: str, title: str) -> None:
    ax.imshow(image)
    for x0, y0, x1, y1, score in boxes:
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=color, lw=1.5))
        ax.text(x0, max(y0 - 3, 8), f"{score:.2f}", color=color, fontsize=8)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audit_json", type=Path, help="the output of `ppar audit ORIGINAL ANONYMIZED --json`")
    ap.add_argument("png", type=Path)
    ap.add_argument("--max", type=int, default=8, help="at most this many leaked frames")
    args = ap.parse_args()
    records = json.loads(args.audit_json.read_text())
    leaks = [(r, i) for r in records if "detectors" in r
             for i in r["detectors"].get("centerface", {}).get("leaked_frame_indices", [])][:args.max]
    if not leaks:
        raise SystemExit(f"{args.audit_json}: no frame leaked for CenterFace")
    judge = leaks[0][0]["detectors"]["centerface"]
    # the audit's judge, as it ran (audits before 0.3.10 record no size: they looked at 640 px)
    det = CenterFace(judge["threshold"] or 0.1, judge.get("max_side", 640))
    fig, axes = plt.subplots(len(leaks), 2, figsize=(9, 3.2 * len(leaks)), dpi=100, squeeze=False)
    wanted: dict[str, set[int]] = {}
    for rec, i in leaks:
        for key in ("original", "anonymized"):
            wanted.setdefault(rec[key], set()).add(i)
    decoded = {path: frames(Path(path), indices) for path, indices in wanted.items()}
    for (rec, i), (left, right) in zip(leaks, axes):
        before, after = decoded[rec["original"]][i], decoded[rec["anonymized"]][i]
        name = Path(rec["original"]).name
        draw(left, before, det(before), "red", f"{name}, frame {i}: original")
        draw(right, after, det(after), "yellow", "anonymized")
    fig.tight_layout()
    fig.savefig(args.png)
    print(f"wrote {args.png} ({len(leaks)} leaked frames)")


if __name__ == "__main__":
    main()
