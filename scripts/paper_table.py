"""The paper's Table 1 on one benchmark: train, then the full protocol; see ppar_cli/research/paper.py.

    python scripts/paper_table.py ucf101 --data UCF-101/ --splits ucfTrainTestlist/ \
        --labels ucf101_privacy_attribute_label.pickle --init deit_base_patch16_224.safetensors --out results/ucf101
    python scripts/paper_table.py hmdb51 --data hmdb51/ --splits testTrainMulti_7030_splits/ --labels PA-HMDB51/ \
        --init deit_base_patch16_224.safetensors --out results/pa-hmdb51
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ppar_cli.research.paper import paper_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("benchmark", choices=["ucf101", "hmdb51", "synth"], help="the dataset's layout")
    ap.add_argument("--data", type=Path, required=True, help="the videos' folder")
    ap.add_argument("--splits", type=Path, help="the official split files' folder (when not inside --data)")
    ap.add_argument("--labels", type=Path, help="VP-UCF101 / VP-HMDB51 pickle, or the PA-HMDB51 folder")
    ap.add_argument("--init", type=Path, help="a public pretrained ViT-B (safetensors), as the paper starts from")
    ap.add_argument("--out", type=Path, default=Path("results/table1"))
    ap.add_argument("--config", default="base", help="base (the paper's ViT-B), small, or a config JSON")
    ap.add_argument("--set", action="append", default=[], help="override a config field, e.g. --set depth=2")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--eval-epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    overrides = {k: json.loads(v) for k, _, v in (s.partition("=") for s in args.set)}
    result = paper_table(args.benchmark, args.data, args.out, args.benchmark, args.labels, args.splits, config=args.config,
                         init=args.init, epochs=args.epochs, batch_size=args.batch_size, eval_epochs=args.eval_epochs,
                         seeds=tuple(int(s) for s in args.seeds.split(",")), device=args.device, overrides=overrides)
    print((args.out / "table.md").read_text())
    print(f"{len(result.records)} rows, {result.test_videos} test videos: {args.out}/table.csv")


if __name__ == "__main__":
    main()
