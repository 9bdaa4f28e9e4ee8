"""What an evaluation's records say together: the Pareto frontier of action top-1 against privacy
cMAP, its named sweet spots, means over seeds, and the results files (JSON, CSV, the trade-off plot)."""
from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ppar_cli.media.files import atomic_path

RESULT_FILES = ("results.json", "results.csv", "tradeoff.png")  # what an evaluation writes into its --out


def pareto_front(records: list[dict]) -> list[dict]:
    """Records not dominated in (higher action top-1, lower privacy cMAP)."""
    pts = [r for r in records if r.get("privacy_cmap") is not None]
    return sorted((r for r in pts if not any(
        o["action_top1"] >= r["action_top1"] and o["privacy_cmap"] <= r["privacy_cmap"]
        and (o["action_top1"] > r["action_top1"] or o["privacy_cmap"] < r["privacy_cmap"]) for o in pts)),
        key=lambda r: r["action_top1"])


def sweet_spots(records: list[dict], tolerance: float = 0.02) -> dict:
    """The lowest leakage within ``tolerance`` of raw utility, and the knee of the Pareto frontier."""
    front = pareto_front(records)
    raw = next((r for r in records if r["method"] == "raw"), None)
    spots = {}
    if raw is not None:
        ok = [r for r in records if r.get("privacy_cmap") is not None and r["action_top1"] >= raw["action_top1"] - tolerance]
        if ok:
            spots["lowest_leakage_near_raw_utility"] = min(ok, key=lambda r: r["privacy_cmap"])
    if len(front) >= 3:  # farthest frontier point from the chord between its ends, in normalised units
        a, b = np.array([front[0]["action_top1"], front[0]["privacy_cmap"]]), np.array([front[-1]["action_top1"], front[-1]["privacy_cmap"]])
        scale = np.maximum(np.abs(b - a), 1e-9)
        u = (b - a) / scale

        def dist(r):
            v = (np.array([r["action_top1"], r["privacy_cmap"]]) - a) / scale
            return abs(u[0] * v[1] - u[1] * v[0])

        spots["knee"] = max(front[1:-1], key=dist)
    return spots


def aggregate(per_seed: list[list[dict]]) -> list[dict]:
    """Records of the same runs under several seeds -> one record per run: each number the mean,
    with its standard deviation as ``NAME_std`` and the number of seeds as ``seeds``."""
    if len(per_seed) == 1:
        return per_seed[0]
    out = []
    for recs in zip(*per_seed):
        rec = dict(recs[0])
        for k, v in recs[0].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "keep":
                vals = np.array([r[k] for r in recs], float)
                rec[k], rec[f"{k}_std"] = float(np.nanmean(vals)), float(np.nanstd(vals))
            elif isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values()):
                rec[k] = {a: float(np.nanmean([r[k][a] for r in recs])) for a in v}
        rec["seeds"] = len(recs)
        out.append(rec)
    return out


def label(r: dict) -> str:
    """A run's name in tables, plots and caches: ``method@keep`` (``raw`` for the pixel methods)."""
    return r["method"] if r["keep"] is None else f"{r['method']}@{r['keep']:g}"


def write_results(records: list[dict], out: Path, title: str, methods: tuple[str, ...], notes: Sequence[str] = ()) -> dict:
    """results.json, results.csv and tradeoff.png in ``out``; returns the sweet spots. ``methods``:
    every method's name in a fixed order, which gives each its colour in every plot; ``notes``: what
    the figures do not say, kept in results.json. The three are
    written beside their places and renamed into them together: no half-written or mixed set."""
    out.mkdir(parents=True, exist_ok=True)
    spots = sweet_spots(records)
    front = pareto_front(records)
    with contextlib.ExitStack() as stack:
        path_json, path_csv, path_png = (stack.enter_context(atomic_path(out / name, Path(name).suffix)) for name in RESULT_FILES)
        path_json.write_text(json.dumps({"records": records, "pareto_front": [label(r) for r in front],
                                         "sweet_spots": {k: label(v) for k, v in spots.items()}, "notes": list(notes)},
                                        indent=1))
        cols = ["method", "keep", "action_top1", "privacy_cmap", "privacy_f1", "reid_top1", "privacy_pixels_removed",
                "action_pixels_kept", "flicker"]
        attrs = sorted({a for r in records for a in r.get("per_attribute_ap", {})})
        with open(path_csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols + [f"ap_{a}" for a in attrs])
            for r in records:
                w.writerow([r.get(c, "") for c in cols] + [r.get("per_attribute_ap", {}).get(a, "") for a in attrs])
        _plot(records, front, spots, path_png, title, methods)
    return spots


def _plot(records, front, spots, path: Path, title: str, methods: tuple[str, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=120)
    colors = dict(zip(methods, plt.get_cmap("tab10").colors))
    for m in dict.fromkeys(r["method"] for r in records):
        rs = [r for r in records if r["method"] == m and r.get("privacy_cmap") is not None]
        ax.plot([r["action_top1"] * 100 for r in rs], [r["privacy_cmap"] * 100 for r in rs], "o-" if len(rs) > 1 else "o",
                color=colors.get(m), label=m, ms=7)
        keeps: dict[tuple[float, float], list[str]] = {}  # keeps that land on one point share a label
        for r in rs:
            if r["keep"] is not None:
                keeps.setdefault((r["action_top1"] * 100, r["privacy_cmap"] * 100), []).append(f"{r['keep']:g}")
        for xy, said in keeps.items():
            ax.annotate(", ".join(said), xy, fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.plot([r["action_top1"] * 100 for r in front], [r["privacy_cmap"] * 100 for r in front], "--", color="gray",
            lw=1, label="Pareto frontier", zorder=0)
    at: dict[tuple[float, float], list[str]] = {}  # spots on one point share a circle and a label, not overprint
    for name, r in spots.items():
        at.setdefault((r["action_top1"] * 100, r["privacy_cmap"] * 100), []).append(name.replace("_", " "))
    for xy, names in at.items():
        ax.scatter(*([v] for v in xy), s=260, facecolors="none", edgecolors="black", lw=1.5)
        ax.annotate(", ".join(names), xy, fontsize=8, xytext=(8, -14), textcoords="offset points")
    for axis, key in ((ax.set_xlim, "action_top1"), (ax.set_ylim, "privacy_cmap")):  # a few points wide at least,
        values = [r[key] * 100 for r in records if r.get(key) is not None]  # not 0.08 of a point when all agree
        if values:
            lo, hi = min(values), max(values)
            pad = max(2.0, 0.08 * (hi - lo))
            axis(lo - pad, hi + pad)
    ax.annotate("better", xy=(0.97, 0.04), xycoords="axes fraction", xytext=(0.80, 0.17), textcoords="axes fraction",
                arrowprops=dict(arrowstyle="->"), fontsize=9)
    ax.set_xlabel("action top-1 (%)  (higher is better)")
    ax.set_ylabel("privacy cMAP (%)  (lower is better)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
