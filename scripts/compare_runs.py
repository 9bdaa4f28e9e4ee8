"""Markdown table of the last validation record of training runs.
Usage: python scripts/compare_runs.py RUN_DIR [RUN_DIR ...]"""
import json
import sys
from pathlib import Path

COLS = [("raw/action_top1", "action top-1 (keep 1)"), ("raw/privacy_cmap", "privacy cMAP (keep 1)"),
        ("ppar@0.5/a_priv_on_privacy", "a_priv mass on privacy tubelets"),
        ("ppar@0.5/a_act_on_privacy", "a_act mass on privacy tubelets"),
        ("ppar@0.5/privacy_token_share", "privacy tubelet share"),
        ("ppar@0.5/privacy_pixels_removed", "ppar: privacy px removed @0.5"),
        ("ppar@0.5/action_pixels_kept", "ppar: action px kept @0.5"),
        ("ppar@0.5/action_top1", "ppar: action top-1 @0.5"),
        ("random@0.5/privacy_pixels_removed", "random: privacy px removed"),
        ("random@0.5/action_pixels_kept", "random: action px kept"),
        ("oracle@0.5/action_pixels_kept", "oracle: action px kept")]

runs = [Path(p) for p in sys.argv[1:]]
last = {r.name: json.loads((r / "metrics.jsonl").read_text().splitlines()[-1]) for r in runs}
print("| metric | " + " | ".join(f"{n} (epoch {m['epoch']})" for n, m in last.items()) + " |")
print("|---|" + "---|" * len(last))
for key, title in COLS:
    print(f"| {title} | " + " | ".join(f"{100 * m[key]:.1f}" if key in m else "" for m in last.values()) + " |")
