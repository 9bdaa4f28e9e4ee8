"""How far an output's colours are from its source's, decoded as its tags say and as a player takes
an untagged HD video (BT.709): mean absolute RGB difference over the first frame, in levels.

    python scripts/colour_check.py                 # a 1280x720 BT.709 clip through --fill mean (RGB)
    python scripts/colour_check.py SRC OUT         # any pair (kept tubelets differ: use --keep 1)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np


def first_rgb(path: Path, colorspace: int | None = None) -> np.ndarray:
    with av.open(str(path)) as c:
        f = next(c.decode(video=0))
        if colorspace is not None:
            f.colorspace = colorspace
        return f.to_ndarray(format="rgb24").astype(int)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", nargs="?", type=Path)
    ap.add_argument("out", nargs="?", type=Path)
    args = ap.parse_args()
    if args.src is None:
        tmp = Path(tempfile.mkdtemp(prefix="ppar-colour-"))
        args.src, args.out = tmp / "bt709.mp4", tmp / "out.mp4"
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-t", "1",
                        "-vf", "scale=out_color_matrix=bt709:out_range=tv,setparams=colorspace=bt709:range=tv",
                        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(args.src)], check=True)
        subprocess.run([sys.executable, "-m", "ppar_cli.cli", "anonymize", str(args.src), str(args.out), "--fill", "mean",
                        "--keep", "1", "--guard", "none", "--quiet", "--no-scores"], check=True)
    src = first_rgb(args.src)
    with av.open(str(args.out)) as c:
        tag = next(c.decode(video=0)).colorspace
    print(f"output colorspace tag {tag}; mean |RGB - source|: as tagged {np.abs(first_rgb(args.out) - src).mean():.2f}, "
          f"taken as BT.709 {np.abs(first_rgb(args.out, 1) - src).mean():.2f}")


if __name__ == "__main__":
    main()
