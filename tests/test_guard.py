import json

import numpy as np
import pytest
from helpers import REAL, needs_shared

from ppar_cli import Options, anonymize
from ppar_cli.pipeline.guard import FaceGuard, GuardConfig, overlapped, sweep
from ppar_cli.pipeline.scoremap import flicker


class FakeDetector:
    """Finds one 10x10 face at a fixed place in the frames listed in `on` (by frame number)."""

    def __init__(self, on):
        self.on = set(on)

    def __call__(self, frame):
        hit = int(frame[0, 0, 0]) in self.on  # the frame number is painted into pixel (0, 0)
        return np.array([[40, 20, 50, 30, 0.9]], np.float32) if hit else np.zeros((0, 5), np.float32)


def frames(start, n, h=80, w=160):
    f = np.zeros((n, h, w, 3), np.uint8)
    f[:, 0, 0, 0] = np.arange(start, start + n)
    return f


def test_guard_forces_cells_under_the_face_and_carries_it():
    g = FaceGuard(GuardConfig(stride=2, margin=0.0, carry=1), detector=FakeDetector(on={6}))
    slab = np.arange(8) // 2  # 4 temporal slabs of 2 frames
    out = g.forced(frames(0, 8), (4, 4, 8), slab)
    # the box x 40..50, y 20..30 covers grid column 2 (x 40..60) and row 1 (y 20..40)
    assert out[:, 1, 2].tolist() == [False, False, True, True]  # from the search before (frame 4) on
    assert out.sum() == 2
    nxt = g.forced(frames(8, 8), (4, 4, 8), slab)  # carried into the next window, then forgotten
    assert nxt[0, 1, 2] and not nxt[3].any()


class MovingDetector:
    """A 10 px face moving 4 px right per frame (x = 4 * frame number)."""

    def __call__(self, frame):
        x = 4.0 * int(frame[0, 0, 0])
        return np.array([[x, 20, x + 10, 30, 0.9]], np.float32)


def test_guard_covers_a_face_between_searches_by_its_sweep():
    # searches at frames 0 and 4 see x 0..10 and 16..26; in between the face crosses x 12..16 (cell 3
    # of 4 px cells), which neither box touches: only the sweep from one search to the next covers it
    g = FaceGuard(GuardConfig(stride=4, margin=0.0, carry=1), detector=MovingDetector())
    out = g.forced(frames(0, 5, w=160), (5, 20, 40), np.arange(5))
    assert out[1:4, 5, 3].all()  # rows of 4 px: the face (y 20..30) starts in row 5
    far = sweep(np.array([[0, 0, 10, 10]], np.float32), np.array([[100, 0, 110, 10]], np.float32))
    assert len(far) == 0  # two faces far apart are not one face moving


def test_overlapped_cells_are_those_a_box_shares_area_with():
    """Cell (r, c) spans pixels rows[r]..rows[r+1] x cols[c]..cols[c+1]; it is overlapped when some
    box shares a positive area with it (boxes may reach past the frame)."""
    rng = np.random.default_rng(0)
    rows, cols = np.array([0, 18, 36, 54, 72, 90]), np.array([0, 32, 64, 96, 128, 160])
    for k in (0, 1, 5, 40):
        xy = rng.uniform(-30, 170, (k, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(0, 60, (k, 2))], 1).astype(np.float32)
        want = np.zeros((5, 5), bool)
        for x0, y0, x1, y1 in boxes:
            for r in range(5):
                for c in range(5):
                    want[r, c] |= min(y1, rows[r + 1]) > max(y0, rows[r]) and min(x1, cols[c + 1]) > max(x0, cols[c])
        assert (overlapped(boxes, rows, cols) == want).all(), k


def test_centerface_decoding_and_suppression():
    from ppar_cli.faces.detectors import decode

    heat = np.zeros((10, 10), np.float32)
    heat[2, 3], heat[2, 4], heat[8, 8] = 0.9, 0.5, 0.3  # two neighbours (one face) and one far away
    scale = np.full((2, 10, 10), np.log(3.0), np.float32)  # exp(s) * 4: 12 px boxes
    boxes = decode(heat, scale, np.zeros((2, 10, 10), np.float32), 0.2, (40, 40))
    # the stride-4 cell (2, 3) is centred at x 14, y 10; the neighbour overlaps it by IoU 0.5 and goes
    assert np.allclose(boxes, [[8, 4, 20, 16, 0.9], [28, 28, 40, 40, 0.3]])
    assert len(decode(heat, scale, np.zeros((2, 10, 10), np.float32), 0.4, (40, 40))) == 1
    assert decode(heat * 0, scale, scale, 0.1, (40, 40)).shape == (0, 5)


def test_flicker():
    kept = np.array([[[1, 0]], [[1, 1]], [[1, 1]]], bool)
    assert flicker(kept) == 0.25 and flicker(kept[:1]) is None
    assert flicker(kept, follows=[False, False, True]) == 0.0  # only window 2 follows its predecessor
    assert flicker(kept, follows=[False, False, False]) is None


@pytest.mark.slow
@needs_shared
def test_guard_hides_the_face_on_a_real_clip(tmp_path, tiny_weights):
    pytest.importorskip("onnxruntime", reason="the face guard needs the guard extra (onnxruntime)")
    from ppar_cli.faces.audit import audit

    out = tmp_path / "walk.mp4"
    [r] = anonymize(REAL / "walk.mkv", out, Options(keep_ratio=1.0), weights=tiny_weights)  # keep all: only the guard prunes
    assert r.status == "ok", r.error
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["model"]["guard"]["forced_fraction"] > 0
    [rec] = audit(REAL / "walk.mkv", out, detectors="centerface")
    cf = rec["detectors"]["centerface"]
    assert cf["face_frames_before"] > 0.9 * rec["frames"] and cf["confident_leaked_frames"] == 0
    # every 8th frame searched: a box CenterFace finds on one frame only (her hand, at 0.29, frame 6) can stay
    assert cf["leaked_frames"] <= 1
    if "identity" in rec:  # the audit extra is installed: nothing left where the face was matches her
        assert rec["identity"]["checked"] > 10 and rec["identity"]["matches"] == 0


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize("fill", ["blur", "pixelate", "mean"])
def test_fills_defeat_the_detector(fill):
    pytest.importorskip("onnxruntime", reason="the face guard needs the guard extra (onnxruntime)")
    from ppar_cli.faces.detectors import CenterFace
    from ppar_cli.media.decode import FrameReader
    from ppar_cli.media.probe import probe
    from ppar_cli.pipeline.fill import smooth_fill

    cf = CenterFace(threshold=0.1)
    for name in ("walk.mkv", "ucf101_v_ApplyEyeMakeup_g01_c01.avi"):
        frames = next(FrameReader(probe(REAL / name)).chunks(24))[::6]
        for before, after in zip(frames, smooth_fill(np.ascontiguousarray(frames), fill, (8, 8))):
            assert len(cf(before)) > 0  # the face is there
            assert len(cf(after)) == 0  # and gone after the fill
