"""How --hysteresis trades flicker for following the video, on one long clip with pseudo masks
(`ppar pseudolabel`): per value, flicker, the share of head pixels left visible and the share of
moving-body pixels kept, over the whole clip, guard off (the learned scores alone).

    python scripts/hysteresis_sweep.py ../shared/data/real-train/people/one-by-one-person-detection.mp4 \
        teach/pseudo-real-train/people/one-by-one-person-detection.mp4.masks.npz 0 2 5
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from ppar_cli import Options, anonymize
from ppar_cli.core.clips import pixel_mask
from ppar_cli.research.synth import load_masks


def main() -> None:
    src, masks, values = Path(sys.argv[1]), Path(sys.argv[2]), [float(v) for v in sys.argv[3:]]
    privacy, action = load_masks(masks)
    frames, mh, mw = privacy.shape
    print("| hysteresis | flicker | head pixels visible | moving-body pixels kept |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for h in values:
            out = Path(tmp) / f"h{h:g}.mp4"
            [r] = anonymize(src, out, Options(guard="none", hysteresis=h))
            assert r.status == "ok", r.error
            score_map = json.loads(out.with_suffix(".json").read_text())
            per_tubelet = score_map["grid"]["source_frames_per_tubelet"]
            seen = {"privacy": [0, 0], "action": [0, 0]}
            for w in score_map["windows"]:
                for j, grid in enumerate(w["keep"]):
                    kept = pixel_mask(np.array(grid, bool), mh, mw)
                    first = w["start"] + j * per_tubelet
                    for f in range(first, min(first + per_tubelet, w["start"] + w["frames"], frames)):
                        for name, m in (("privacy", privacy[f]), ("action", action[f])):
                            seen[name][0] += int((m & kept).sum())
                            seen[name][1] += int(m.sum())
            print(f"| {h:g} | {score_map['summary']['flicker']:.3f} | {seen['privacy'][0] / seen['privacy'][1]:.3f} "
                  f"| {seen['action'][0] / seen['action'][1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
