"""Flicker and kept fraction per video from the score maps of one or more `ppar anonymize` folders.

    python scripts/flicker_table.py /tmp/real_h0 /tmp/real_h1      # one column pair per folder
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    folders = [Path(a) for a in sys.argv[1:]]
    names = sorted({p.relative_to(f) for f in folders for p in f.rglob("*.json")})
    print("| video | " + " | ".join(f"{f.name}: flicker / kept" for f in folders) + " |")
    print("|---" * (len(folders) + 1) + "|")
    cols: list[list[float]] = [[] for _ in folders]
    for name in names:
        cells = []
        for j, f in enumerate(folders):
            summary = json.loads((f / name).read_text())["summary"]
            if summary["flicker"] is None:
                cells.append("one window")
                continue
            cols[j].append(summary["flicker"])
            cells.append(f"{summary['flicker']:.3f} / {summary['kept_fraction']:.3f}")
        print(f"| {name.with_suffix('')} | " + " | ".join(cells) + " |")
    print("| mean | " + " | ".join(f"{np.mean(c):.3f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
