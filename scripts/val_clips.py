"""Link the validation clips of a pseudo-labelled benchmark into a folder, mirroring their class
folders, so the README's guard and audit figures can be rerun on the same clips.

    python scripts/val_clips.py teach/pseudo-real-train /tmp/VAL                     # all 51
    python scripts/val_clips.py teach/pseudo-real-train /tmp/VAL_SUBSET --first 6 --classes fight,noFight,asl
    python scripts/val_clips.py teach/pseudo-real-train /tmp/VAL_REST --skip 6 --classes fight,noFight

Clips are taken per class in name order (the order `ppar pseudolabel` records them in).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ppar_cli.research.data import read_pseudo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("benchmark", type=Path, help="a folder `ppar pseudolabel` wrote (pseudo.json)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--classes", default=None, help="comma-separated class folders (default: all)")
    ap.add_argument("--skip", type=int, default=0, help="leave out the first N clips of each class")
    ap.add_argument("--first", type=int, default=None, help="then take at most N clips of each class")
    a = ap.parse_args()
    bench = read_pseudo(a.benchmark)
    classes = a.classes.split(",") if a.classes else bench.actions
    n = 0
    for name in classes:
        clips = sorted(i.path for i in bench.test if bench.actions[i.action] == name)[a.skip:]
        for src in clips[:a.first]:
            dst = a.out / name / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                os.symlink(src.resolve(), dst)
            n += 1
    print(f"{n} clips linked under {a.out}")


if __name__ == "__main__":
    main()
