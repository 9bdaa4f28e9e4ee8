"""What the face guard costs and what it misses, per guard setting, on real clips.

    python benchmarks/guard_recall.py                          # ../shared/data/real
    python benchmarks/guard_recall.py DIR ... --settings 2:640,4:640,4:480

Reference: CenterFace at 0.1 on every frame at full resolution (the issue's definition of a face the
guard must cover; `--min-score S` counts only its boxes scored S or more: at 0.1 a busy scene's goods
and furniture count too). For each setting STRIDE:MAX_SIDE the guard runs exactly as in `ppar
anonymize` (windows of the weights' clip span, the weights' tubelet grid) and a reference face counts as
missed in a frame when less than 90% of its box lies in tubelets the guard forced. The detector's
time is measured in this process (milliseconds per video frame, all frames of all clips).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ppar_cli.core.clips import cell_edges, slab_index
from ppar_cli.core.weights import load_weights
from ppar_cli.faces.detectors import CenterFace
from ppar_cli.media.decode import FrameReader
from ppar_cli.media.probe import VIDEO_EXTENSIONS, probe
from ppar_cli.pipeline.guard import FaceGuard, GuardConfig

REPO = Path(__file__).resolve().parents[1]


class Timed:
    """A detector wrapper that adds up its own time."""

    def __init__(self, det):
        self.det, self.seconds = det, 0.0

    def __call__(self, frame):
        t0 = time.perf_counter()
        out = self.det(frame)
        self.seconds += time.perf_counter() - t0
        return out


def covered(forced_cells: np.ndarray, rows: np.ndarray, cols: np.ndarray, box: np.ndarray) -> float:
    """Share of a box's area inside forced cells (cells given by their pixel edges)."""
    x0, y0, x1, y1 = box
    h = np.clip(np.minimum(rows[1:], y1) - np.maximum(rows[:-1], y0), 0, None)
    w = np.clip(np.minimum(cols[1:], x1) - np.maximum(cols[:-1], x0), 0, None)
    area = h[:, None] * w[None, :]
    return float((area * forced_cells).sum() / max(area.sum(), 1e-9))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="*", default=[str(REPO.parent / "shared" / "data" / "real")])
    ap.add_argument("--settings", default="2:640,3:640,4:640,3:480,4:480,6:480,4:320",
                    help="comma-separated STRIDE:MAX_SIDE[:THRESHOLD[:CARRY]] (the guard's defaults when left out)")
    ap.add_argument("--weights", default=None, help="weights whose grid and clip span the guard follows (default: bundled)")
    ap.add_argument("--min-score", type=float, default=0.1,
                    help="count only reference faces CenterFace scores this or more (a crowded shop's goods score 0.1-0.3)")
    ap.add_argument("--cache", default="/tmp/ppar_guard_ref", help="reference detections are cached here")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    cfg = load_weights(a.weights).model.cfg
    dflt = GuardConfig()
    settings = [tuple(float(v) for v in (s.split(":") + [str(dflt.threshold), str(dflt.carry)][len(s.split(":")) - 2:])[:4])
                for s in a.settings.split(",")]
    files = sorted(p for d in a.dirs for p in Path(d).rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    totals = {s: {"faces": 0, "missed": 0, "center_missed": 0, "frames_missed": 0, "seconds": 0.0, "forced": 0.0, "windows": 0} for s in settings}
    frames_total, face_frames = 0, 0
    for f in files:
        info = probe(f)
        windows = list(FrameReader(info).chunks(cfg.clip_span))
        frames = [fr for w in windows for fr in w]
        key = cache / f"{f.name}.{len(frames)}.json"
        if key.exists():
            ref = [np.array(b, np.float32).reshape(-1, 5) for b in json.loads(key.read_text())]
        else:
            full = CenterFace(0.1, max_side=max(info.width, info.height))
            ref = [full(fr) for fr in frames]
            key.write_text(json.dumps([r.tolist() for r in ref]))
        ref = [r[r[:, 4] >= a.min_score] for r in ref]
        frames_total += len(frames)
        face_frames += sum(len(r) > 0 for r in ref)
        H, W = frames[0].shape[:2]
        rows, cols = np.array(cell_edges(H, cfg.grid[1])), np.array(cell_edges(W, cfg.grid[2]))
        before, per_clip = {s: totals[s]["missed"] for s in settings}, {}
        for s in settings:
            det = Timed(CenterFace(s[2], max_side=int(s[1])))
            guard = FaceGuard(GuardConfig(threshold=s[2], stride=int(s[0]), max_side=int(s[1]), carry=int(s[3])), detector=det)
            i = 0
            for w in windows:
                forced = guard.forced(w, cfg.grid, slab_index(len(w), cfg))
                totals[s]["forced"] += forced.mean()
                totals[s]["windows"] += 1
                slabs = slab_index(len(w), cfg)
                for k in range(len(w)):
                    miss_here = False
                    for box in ref[i + k][:, :4]:
                        share = covered(forced[slabs[k]], rows, cols, box)
                        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                        r, c = np.searchsorted(rows, cy, "right") - 1, np.searchsorted(cols, cx, "right") - 1
                        t = totals[s]
                        t["faces"] += 1
                        t["missed"] += share < 0.9
                        t["center_missed"] += not forced[slabs[k], min(r, cfg.grid[1] - 1), min(c, cfg.grid[2] - 1)]
                        miss_here |= share < 0.9
                    totals[s]["frames_missed"] += miss_here
                i += len(w)
            totals[s]["seconds"] += det.seconds
            per_clip[s] = totals[s]["missed"] - before[s]
        print(f"{f.name}: {len(frames)} frames, {sum(len(r) > 0 for r in ref)} with a face; faces missed per setting "
              + json.dumps({":".join(f"{x:g}" for x in k): v for k, v in per_clip.items()}), file=sys.stderr)
    rows_out = []
    for s, t in totals.items():
        rows_out.append({"stride": int(s[0]), "max_side": int(s[1]), "threshold": s[2], "carry": int(s[3]), "ms_per_frame": 1000 * t["seconds"] / max(frames_total, 1),
                         "faces": t["faces"], "missed_90": t["missed"], "center_missed": t["center_missed"],
                         "frames_with_a_miss": t["frames_missed"], "face_frames": face_frames,
                         "forced_share": t["forced"] / max(t["windows"], 1)})
    if a.json:
        print(json.dumps(rows_out, indent=1))
        return
    print(f"{frames_total} frames, {face_frames} with a reference face (CenterFace {a.min_score:g}, full size), grid {cfg.grid}")
    print("| stride | detector side | threshold | carry | ms / frame | faces under 90% forced | centres not forced | frames with a miss | tubelets forced |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows_out:
        print(f"| {r['stride']} | {r['max_side']} | {r['threshold']:g} | {r['carry']} | {r['ms_per_frame']:.1f} | {r['missed_90']} of {r['faces']} "
              f"({100 * r['missed_90'] / max(r['faces'], 1):.2f}%) | {r['center_missed']} | {r['frames_with_a_miss']} of {face_frames} | {100 * r['forced_share']:.1f}% |")


if __name__ == "__main__":
    main()
