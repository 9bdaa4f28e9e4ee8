"""The bundled CenterFace's ONNX graph run by PyTorch, so that the face guard can search on a GPU.

onnxruntime runs it on the CPU, where it is three times faster than PyTorch; on a GPU machine that
CPU work was the guard's whole cost (docs/speed.md, "On a GPU: one H100"). The graph is a plain CNN: its six
operator types map one to one onto PyTorch functions, in the graph's own order, with its weights.
Reading the file needs the `onnx` package (in `ppar[guard]`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


class OnnxConvNet:
    """(B, 3, H, W) float32 -> the graph's outputs, on ``device``."""

    def __init__(self, path: Path, device: torch.device):
        import onnx
        from onnx import helper, numpy_helper

        graph = onnx.load(str(path)).graph
        self.weights = {t.name: torch.from_numpy(np.array(numpy_helper.to_array(t))).to(device) for t in graph.initializer}
        self.nodes = [(n.op_type, list(n.input), list(n.output), {a.name: helper.get_attribute_value(a) for a in n.attribute})
                      for n in graph.node]
        unknown = {op for op, *_ in self.nodes} - set(_OPS)
        if unknown:
            raise ValueError(f"{path}: operators {', '.join(sorted(unknown))} are not supported here")
        self.input = graph.input[0].name

    def __call__(self, x: torch.Tensor, outputs: list[str]) -> list[torch.Tensor]:
        values = {**self.weights, self.input: x}
        for op, ins, outs, attrs in self.nodes:
            values[outs[0]] = _OPS[op]([values[i] if i else None for i in ins], attrs)
        return [values[o] for o in outputs]


def _pads(attrs: dict) -> tuple[int, int]:
    top, left, bottom, right = attrs.get("pads", (0, 0, 0, 0))
    if (top, left) != (bottom, right):
        raise ValueError(f"asymmetric padding {attrs['pads']} is not supported here")
    return top, left


def _conv(v: list, a: dict) -> torch.Tensor:
    return F.conv2d(v[0], v[1], v[2] if len(v) > 2 else None, a.get("strides", 1), _pads(a), a.get("dilations", 1),
                    a.get("group", 1))


def _deconv(v: list, a: dict) -> torch.Tensor:
    return F.conv_transpose2d(v[0], v[1], v[2] if len(v) > 2 else None, a.get("strides", 1), _pads(a),
                              a.get("output_padding", 0), a.get("group", 1), a.get("dilations", 1))


_OPS = {
    "Conv": _conv,
    "ConvTranspose": _deconv,
    "BatchNormalization": lambda v, a: F.batch_norm(v[0], v[3], v[4], v[1], v[2], False, 0.0, a.get("epsilon", 1e-5)),
    "Relu": lambda v, a: F.relu(v[0]),
    "Sigmoid": lambda v, a: torch.sigmoid(v[0]),
    "Add": lambda v, a: v[0] + v[1],
}
