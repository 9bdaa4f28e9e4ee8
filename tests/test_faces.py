"""The face detectors (CenterFace, the audit's dlib HOG) and the identity descriptor, on a real clip."""
import numpy as np
import pytest
from helpers import REAL, needs_shared

pytestmark = [needs_shared, pytest.mark.slow]


@pytest.fixture(scope="module")
def walk_frames():
    from ppar_cli.media.decode import FrameReader
    from ppar_cli.media.probe import probe

    return next(FrameReader(probe(REAL / "walk.mkv")).chunks(40))


def test_centerface_finds_the_face_at_every_size(walk_frames):
    pytest.importorskip("onnxruntime", reason="CenterFace needs the guard extra (onnxruntime)")
    from ppar_cli.faces.detectors import CenterFace

    det = CenterFace(0.3)
    full = det(walk_frames[0])
    assert full.shape == (1, 5) and full[0, 4] > 0.8  # her face, and nothing else at 0.3
    # one session for every size: a half-size frame, then the full one again, give the same face
    half = det(np.ascontiguousarray(walk_frames[0][::2, ::2]))
    assert len(half) == 1 and np.abs(half[0, :4] * 2 - full[0, :4]).max() < 12
    assert np.allclose(det(walk_frames[0]), full)
    assert len(det(np.zeros((1080, 1920, 3), np.uint8))) == 0 and np.allclose(det(walk_frames[0]), full)


def test_one_thread_a_search_finds_the_same_faces(walk_frames):
    """Several videos at once search with one onnxruntime thread each (runtime.guard_threads): the
    same boxes as onnxruntime's default threads, from a session of its own."""
    pytest.importorskip("onnxruntime", reason="CenterFace needs the guard extra (onnxruntime)")
    from ppar_cli.faces.detectors import CenterFace
    from ppar_cli.pipeline.runtime import guard_threads

    one, default = CenterFace(0.05, threads=guard_threads(4)), CenterFace(0.05)
    assert one._session.get_session_options().intra_op_num_threads == 1
    assert one._session is not default._session
    for frame in walk_frames[::13]:
        assert np.allclose(one(frame), default(frame), atol=1e-3)


def test_pytorch_finds_the_faces_onnxruntime_finds(walk_frames):
    """The guard on a GPU runs CenterFace's graph in PyTorch (onnx_torch.py): on the CPU here it
    finds the same boxes as onnxruntime, within a thousandth of a pixel and of a score."""
    pytest.importorskip("onnx", reason="CenterFace in PyTorch reads the graph with onnx (the guard extra)")
    import torch

    from ppar_cli.faces.detectors import CenterFace

    ort, pt = CenterFace(0.05), CenterFace(0.05, device=torch.device("cpu"))
    found = 0
    for frame in walk_frames[::17]:
        a, b = ort(frame), pt(frame)
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-3)
        found += len(a)
    assert found > 0


def test_searches_replayed_from_graphs_find_what_eager_searches_find(walk_frames, monkeypatch):
    """On a GPU the guard's searches are replayed from a CUDA graph per input size, as the model's
    passes are (scoring.graphed); here through the CPU stand-in: the same boxes, one capture."""
    pytest.importorskip("onnx", reason="CenterFace in PyTorch reads the graph with onnx (the guard extra)")
    import torch
    from helpers import graphs_on_the_cpu

    from ppar_cli.faces.detectors import CenterFace

    pt = CenterFace(0.05, device=torch.device("cpu"))
    frames = walk_frames[::17]
    eager = [pt(frame) for frame in frames]
    captured = graphs_on_the_cpu(monkeypatch)
    for frame, boxes in zip(frames, eager):
        assert np.array_equal(pt(frame), boxes)
    assert len(frames) > 1 and len(captured) == 1 and sum(map(len, eager)) > 0


def test_a_gpu_guard_without_onnx_searches_on_the_cpu(monkeypatch):
    """Where CenterFace cannot run in PyTorch, the guard still runs (onnxruntime on the CPU), with a
    warning: a missing package never turns the guard off on a GPU machine."""
    pytest.importorskip("onnxruntime", reason="CenterFace needs the guard extra (onnxruntime)")
    import torch

    import ppar_cli.faces.detectors as detectors
    from ppar_cli.pipeline.api import _detector
    from ppar_cli.pipeline.options import Options

    def missing(device):
        raise detectors.FacesUnavailable("onnx is not installed")

    monkeypatch.setattr(detectors, "_torch_net", missing)
    with pytest.warns(UserWarning, match="searches on the CPU: onnx is not installed"):
        det = _detector(Options(), 1, torch.device("cpu"))
    assert det is not None and det.device is None and det._session is not None
    assert _detector(Options(guard="none"), 1, torch.device("cpu")) is None


def test_full_size_sees_a_small_face_that_640_px_blurs(walk_frames):
    """The audit looks at full size: her face a quarter size on a 2560x1440 frame (15 px wide) is
    found sharp and sure there; scaled to 640 px it is only a low-score blob."""
    pytest.importorskip("onnxruntime", reason="CenterFace needs the guard extra (onnxruntime)")
    import cv2

    from ppar_cli.faces.detectors import CenterFace

    canvas = np.full((1440, 2560, 3), 90, np.uint8)
    canvas[700:820, 1200:1360] = cv2.resize(walk_frames[0], (160, 120), interpolation=cv2.INTER_AREA)
    full, scaled = CenterFace(0.1, None)(canvas), CenterFace(0.1, 640)(canvas)
    assert len(full) == 1 and full[0, 4] > 0.6 and full[0, 2] - full[0, 0] < 20
    assert scaled[:, 4].max() < 0.5


def test_dlib_hog_finds_the_face_and_not_in_black(walk_frames):
    pytest.importorskip("dlib", reason="the second detector needs the audit extra (dlib)")
    from ppar_cli.faces.detectors import DlibHOG

    det = DlibHOG()
    boxes = det(walk_frames[0])
    assert boxes.shape == (1, 5)
    x0, y0, x1, y1, _ = boxes[0]
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480 and 40 < x1 - x0 < 300
    assert len(DlibHOG(max_side=320)(walk_frames[0])) == 1  # boxes come back in source pixels when scaled
    assert len(det(np.zeros_like(walk_frames[0]))) == 0


def test_identity_matches_the_person_not_a_filled_face(walk_frames):
    pytest.importorskip("dlib", reason="the identity check needs the audit extra (dlib)")
    pytest.importorskip("onnxruntime", reason="boxes from CenterFace (the guard extra)")
    from ppar_cli.faces.detectors import SAME_PERSON, CenterFace, FaceDescriptor
    from ppar_cli.pipeline.fill import smooth_fill

    ident, cf = FaceDescriptor(), CenterFace(0.5)
    a, b = walk_frames[0], walk_frames[39]
    box_a, box_b = cf(a)[:1], cf(b)[:1]
    da, db = ident.describe(a, box_a), ident.describe(b, box_b)
    assert da.shape == (1, 128)
    assert np.linalg.norm(da - db) < SAME_PERSON  # the same woman, 40 frames apart
    for filled in (np.zeros_like(a), smooth_fill(a[None].copy(), "pixelate", (8, 8))[0]):
        assert np.linalg.norm(da - ident.describe(filled, box_a)) > SAME_PERSON


def test_audit_of_the_original_itself_leaks_everything(tmp_path):
    pytest.importorskip("dlib", reason="the audit's second detector needs the audit extra (dlib)")
    pytest.importorskip("onnxruntime", reason="the audit needs the guard extra (onnxruntime)")
    from ppar_cli.faces.audit import audit
    from ppar_cli.media.decode import FrameReader
    from ppar_cli.media.encode import VideoWriter
    from ppar_cli.media.probe import probe

    info = probe(REAL / "help.mkv")
    copy = tmp_path / "help.mp4"
    with VideoWriter(copy, info.width, info.height, info.fps, crf=18) as w:
        for chunk in FrameReader(info).chunks(32):
            w.write(chunk)
        w.commit()
    [rec] = audit(REAL / "help.mkv", copy, identity_stride=10)
    assert set(rec["detectors"]) == {"centerface", "dlib-hog"}
    for d in rec["detectors"].values():
        assert d["face_frames_before"] > 0.8 * rec["frames"]
        assert d["leaked_frames"] >= 0.95 * d["face_frames_before"]
        assert len(d["faces_per_frame"]["before"]) == rec["frames"] == len(d["faces_per_frame"]["after"])
    assert rec["identity"]["checked"] >= 5 and rec["identity"]["matches"] == rec["identity"]["checked"]
