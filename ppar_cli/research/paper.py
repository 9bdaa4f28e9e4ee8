"""One command per table of the paper (SPEC: Table 1): train the anonymizer on a benchmark's
training split, then run the full protocol (fresh action model, privacy attacker) on its test split
for raw video, ppar and the baselines, and write the table: action top-1 / privacy cMAP / F1.

    python scripts/paper_table.py ucf101 --data UCF-101/ --splits ucfTrainTestlist/ --labels ucf101_privacy_attribute_label.pickle
    python scripts/paper_table.py hmdb51 --data hmdb51/ --splits testTrainMulti_7030_splits/ --labels PA-HMDB51/

Everything runs through the same API as `ppar train` and `ppar eval`; a rerun resumes the training
run and reuses the cached anonymized clips.
"""
from __future__ import annotations

import csv
from pathlib import Path

from ppar_cli.research.args import TrainArgs
from ppar_cli.research.evaluate import Evaluation, evaluate_benchmark
from ppar_cli.research.report import label

# The paper's recipe: ViT-B, keep 0.5 at test, the baselines of its Table 1.
TABLE_METHODS = ("raw", "ppar", "random", "blur", "downsample2", "downsample4")


def paper_table(name: str, data: Path, out: Path, fmt: str, labels: Path | None = None, splits: Path | None = None,
                split: int = 1, config: str = "base", init: Path | None = None, epochs: int = 30, batch_size: int = 32,
                eval_epochs: int = 8, keep_ratio: float = 0.5, seeds: tuple[int, ...] = (0, 1, 2), device: str = "auto",
                log=print, overrides: dict | None = None) -> Evaluation:
    """Train on ``name``'s training split (resumable, in ``out/train``), evaluate by the full
    protocol, and write ``out/table.csv`` and ``out/table.md`` (one row per method)."""
    from ppar_cli.research.train import train

    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"ppar-{name}.safetensors"
    if not weights.exists():
        train(TrainArgs(data=str(data), format=fmt, labels=str(labels) if labels else None,
                        splits_dir=str(splits) if splits else None, split=split, config=config, epochs=epochs,
                        batch_size=batch_size, out=str(weights), run_dir=str(out / "train"), overrides=overrides or {},
                        init=str(init) if init else None), log=log)
    result = evaluate_benchmark(data, weights, fmt, split, labels, splits, "full", TABLE_METHODS, (keep_ratio,),
                                eval_epochs, out=out / "eval", seeds=seeds, device=device, overwrite=True)
    rows = [{"dataset": name, "method": label(r), "action_top1": r["action_top1"], "privacy_cmap": r.get("privacy_cmap"),
             "privacy_f1": r.get("privacy_f1"), "seeds": r.get("seeds", 1),
             "action_top1_std": r.get("action_top1_std"), "privacy_cmap_std": r.get("privacy_cmap_std")}
            for r in result.records]
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    pct = lambda v, s=None: "" if v is None else f"{100 * v:.2f}" + (f" ± {100 * s:.2f}" if s else "")  # noqa: E731
    lines = [f"| {name} | action top-1 | privacy cMAP | privacy F1 |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | {pct(r['action_top1'], r['action_top1_std'])} | {pct(r['privacy_cmap'], r['privacy_cmap_std'])} "
              f"| {pct(r['privacy_f1'])} |" for r in rows]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    return result
