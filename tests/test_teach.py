"""Pseudo ground truth on real footage: the mask rules (plain NumPy, no teacher needed), the files
`ppar pseudolabel` writes and reads back as a benchmark, and, where mediapipe is installed, the
real teachers on a real clip."""
import json

import numpy as np
import pytest
from helpers import REAL, make_clip, needs_shared

from ppar_cli.errors import UsageError
from ppar_cli.research import teach
from ppar_cli.research.data import ClipSet, open_benchmark
from ppar_cli.research.labels import summarize_labels
from ppar_cli.research.synth import load_masks
from ppar_cli.research.teach import Evidence, compose, head_boxes, split_of

SHAPE = (120, 160)


def evidence(faces=(), keypoints=None, moving=None, selfie=None):
    flow = np.zeros(SHAPE, np.float32)
    if moving is not None:
        flow[moving] = 2.0
    return Evidence(np.array(faces, np.float32).reshape(-1, 4), keypoints, None,
                    np.zeros(SHAPE, np.float32) if selfie is None else selfie, flow)


def standing_pose(cx=80.0):
    """33 keypoints of a person standing at column cx: head at the top, arms down, all visible."""
    kp = np.zeros((33, 3), np.float32)
    kp[:, 2] = 1.0
    kp[:11, :2] = (cx, 20)  # head keypoints
    kp[11], kp[12] = (cx - 12, 35, 1), (cx + 12, 35, 1)  # shoulders
    kp[13], kp[14] = (cx - 14, 55, 1), (cx + 14, 55, 1)  # elbows
    kp[15:23:2], kp[16:23:2] = (cx - 15, 72, 1), (cx + 15, 72, 1)  # wrists and fingers
    kp[23], kp[24] = (cx - 8, 75, 1), (cx + 8, 75, 1)  # hips
    kp[25:33:2], kp[26:33:2] = (cx - 8, 110, 1), (cx + 8, 110, 1)  # legs
    return kp


def test_face_box_grows_to_the_whole_head():
    [(x0, y0, x1, y1)] = head_boxes(np.array([[40, 40, 60, 60]], np.float32), None)
    assert x0 < 40 and x1 > 60 and y0 < 40 - 0.5 * 20 and y1 > 60  # hair above, chin below
    privacy, _, person = compose(evidence(faces=[(40, 40, 60, 60)]), SHAPE)
    assert privacy[50, 50] and privacy[35, 50] and not privacy[50, 10] and person[100, 50]  # a body below


def test_pose_head_without_a_face_still_counts():
    kp = standing_pose()
    kp[:11, 2] = 0.0
    kp[7, 2] = kp[8, 2] = 1.0  # only the ears: a head seen from behind
    privacy, _, _ = compose(evidence(keypoints=kp), SHAPE)
    assert privacy[20, 80] and not privacy[100, 80]


def test_action_is_moving_limbs_not_the_head_nor_still_parts():
    kp = standing_pose()
    moving = np.zeros(SHAPE, bool)
    moving[:, :] = True  # everything moves
    privacy, action, _ = compose(evidence(faces=[(72, 12, 88, 28)], keypoints=kp, moving=moving), SHAPE)
    assert action[55, 66] and action[72, 65]  # left elbow and hand
    assert not (action & privacy).any()
    assert not action[5, 5]  # background: not a person, not a limb
    _, still, _ = compose(evidence(faces=[(72, 12, 88, 28)], keypoints=kp), SHAPE)
    assert not still.any()


def test_split_is_stable_and_near_the_fraction():
    names = [f"fight/fi{i:03d}.mp4" for i in range(500)]
    val = [n for n in names if split_of(n, 0.2) == "val"]
    assert 0.15 < len(val) / 500 < 0.25 and val == [n for n in names if split_of(n, 0.2) == "val"]


class FakeTeachers:
    """A head in the top middle and a moving arm on every frame: the files, not the models, under test."""
    calls = 0

    def __init__(self):
        pass

    def __call__(self, big, small):
        FakeTeachers.calls += 1
        H, W = small.shape[:2]
        moving = np.zeros((H, W), bool)
        moving[H // 2:, : W // 3] = True
        flow = np.where(moving, 2.0, 0.0).astype(np.float32)
        selfie = np.zeros((H, W), np.float32)
        selfie[H // 4:, : W // 2] = 1.0
        return Evidence(np.array([[W * 0.4, 2, W * 0.6, H * 0.25]], np.float32), None, None, selfie, flow)

    def close(self):
        pass


def test_pseudolabel_writes_masks_that_read_back_as_a_benchmark(tmp_path, monkeypatch, tiny_weights):
    monkeypatch.setattr(teach, "Teachers", FakeTeachers)
    src = tmp_path / "in"
    for folder, n in (("fight", 3), ("noFight", 3)):
        (src / folder).mkdir(parents=True)
        for i in range(n):
            make_clip(src / folder / f"{folder}{i}.mp4", 96, 64, 20, audio=False)
    (src / "fight" / "broken.mp4").write_bytes(b"not a video")  # fails alone: the others are labelled
    # a recording cut off after its header: it probes, no frame decodes (it stopped the run with a traceback)
    (src / "noFight" / "cut.mkv").write_bytes(make_clip(tmp_path / "whole.mkv", 96, 64, 20, audio=False).read_bytes()[:1000])
    index = teach.pseudolabel(src, tmp_path / "out", val_fraction=0.5)
    assert len(index["videos"]) == 6 and {r["split"] for r in index["videos"].values()} <= {"train", "val"}
    assert index["failed"] == {"fight/broken.mp4": f"{src / 'fight' / 'broken.mp4'}: no video stream (Invalid data found when "
                                                    f"processing input)",
                               "noFight/cut.mkv": f"{src / 'noFight' / 'cut.mkv'}: no frame decodes"}, index["failed"]
    rec = index["videos"]["fight/fight0.mp4"]
    privacy, action, person = load_masks(tmp_path / "out" / "fight/fight0.mp4.masks.npz", ("privacy", "action", "person"))
    assert privacy.shape == (20, 64, 96) and rec["frames"] == 20 and rec["faces_frames"] == 20
    assert privacy[:, 5, 48].all() and not (action & privacy).any() and action.any(1).any(1).all()
    calls = FakeTeachers.calls
    teach.pseudolabel(src, tmp_path / "out", val_fraction=0.5)  # resumes: nothing redone
    assert FakeTeachers.calls == calls
    bench = open_benchmark(tmp_path / "out")
    assert bench.actions == ["fight", "noFight"] and len(bench.train) + len(bench.test) == 6
    from ppar_cli.core.weights import load_weights

    clips = ClipSet(bench.train, load_weights(tiny_weights).model.cfg)
    assert clips.has_masks and clips.has_person
    assert json.loads((tmp_path / "out" / "pseudo.json").read_text())["format"] == "ppar-pseudo/1"
    summary = summarize_labels(tmp_path / "out")  # `ppar labels OUT_DIR`
    assert summary["format"] == "pseudo" and summary["videos"] == 6 and sum(summary["split"].values()) == 6
    assert summary["teacher_frames"]["faces"] == 1.0 and 0 < summary["positive_rate"]["privacy"] < 1
    (tmp_path / "file").write_text("mine")  # an OUT_DIR that is a file: refused before the first video's teachers
    calls = FakeTeachers.calls
    with pytest.raises(UsageError, match="file: a file, not a folder for the masks"):
        teach.pseudolabel(src, tmp_path / "file")
    assert FakeTeachers.calls == calls and (tmp_path / "file").read_text() == "mine"
    before = (tmp_path / "out" / "pseudo.json").read_bytes()  # another run's labels: refused, not mixed in
    with pytest.raises(UsageError, match=r"another run \(--val 0.5 there, 0.2 now\)"):
        teach.pseudolabel(src, tmp_path / "out")
    (tmp_path / "other").mkdir()
    with pytest.raises(UsageError, match=r"another run \(IN_DIR .*in there\)"):
        teach.pseudolabel(tmp_path / "other", tmp_path / "out", val_fraction=0.5)
    assert FakeTeachers.calls == calls and (tmp_path / "out" / "pseudo.json").read_bytes() == before


@needs_shared
@pytest.mark.slow
def test_real_teachers_find_the_signer(tmp_path):
    pytest.importorskip("mediapipe", reason="the teachers need the teach extra: pip install 'ppar[teach]'")
    src = tmp_path / "in"
    src.mkdir()
    (src / "walk.mkv").write_bytes((REAL / "walk.mkv").read_bytes())
    rec = teach.pseudolabel(src, tmp_path / "out")["videos"]["walk.mkv"]
    assert rec["pose_frames"] == rec["faces_frames"] == rec["frames"] and 0.01 < rec["privacy_share"] < 0.15
    assert rec["action_share"] > 0.01


@needs_shared
@pytest.mark.slow
def test_committed_pseudo_masks_fit_their_videos():
    """teach/pseudo-real-train (made by the command in its pseudo.json) reads back as a benchmark whose
    videos are ../shared's real-train clips, masks frame for frame."""
    from pathlib import Path

    from ppar_cli.media.decode import FrameReader
    from ppar_cli.media.probe import probe

    root = Path(__file__).resolve().parents[1] / "teach" / "pseudo-real-train"
    bench = open_benchmark(root)
    assert bench.actions == ["asl", "fight", "noFight", "people"] and len(bench.train) + len(bench.test) == 257
    for item in (bench.train[:2] + bench.test[:2]):
        privacy, action = load_masks(item.masks)
        frames = sum(len(c) for c in FrameReader(probe(item.path), backend="ffmpeg").chunks(64))
        assert len(privacy) == len(action) == frames and privacy.any()


def test_pseudolabel_cli_names_a_failed_video_and_exits_1(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ppar_cli.cli import app

    monkeypatch.setattr(teach, "Teachers", FakeTeachers)
    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "good.mp4", 96, 64, 10, audio=False)
    (src / "broken.mp4").write_bytes(b"not a video")
    r = CliRunner().invoke(app, ["pseudolabel", str(src), str(tmp_path / "out")])
    assert r.exit_code == 1 and "failed " + str(src / "broken.mp4") + ": no video stream" in " ".join(r.output.split())
    assert "1 failed" in r.output and list(json.loads((tmp_path / "out" / "pseudo.json").read_text())["videos"]) == ["good.mp4"]
    # an error raised while mediapipe's log is moved aside still reaches the caller's stderr (here the runner's)
    r = CliRunner().invoke(app, ["pseudolabel", str(tmp_path / "nowhere"), str(tmp_path / "out2")])
    assert r.exit_code == 2 and "nowhere: no such file or directory" in r.output


def test_a_bug_on_one_video_fails_it_and_the_others_are_labelled(tmp_path, monkeypatch):
    """A teacher raising on one video's frames (here: the narrow one) fails that video with a
    one-line report of the bug; it stopped the run with a traceback."""
    class Narrow(FakeTeachers):
        def __call__(self, big, small):
            if small.shape[1] < 64:
                raise IndexError("index 3 is out of bounds")
            return super().__call__(big, small)

    monkeypatch.setattr(teach, "Teachers", Narrow)
    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "good.mp4", 96, 64, 10, audio=False)
    make_clip(src / "narrow.mp4", 32, 64, 10, audio=False)
    index = teach.pseudolabel(src, tmp_path / "out")
    assert list(index["videos"]) == ["good.mp4"] and list(index["failed"]) == ["narrow.mp4"]
    assert index["failed"]["narrow.mp4"].startswith(f"{src / 'narrow.mp4'}: internal error, a bug in ppar (IndexError: index 3")


def test_teachers_refuse_to_run_without_centerface(monkeypatch):
    """Without the guard's CenterFace the masks would hide fewer heads: refused, not silently weaker."""
    pytest.importorskip("mediapipe", reason="the teachers need the teach extra: pip install 'ppar[teach]'")
    from ppar_cli.faces import detectors

    def unavailable(*args, **kw):
        raise detectors.FacesUnavailable("CenterFace needs onnxruntime and OpenCV: pip install 'ppar[guard]' (gone)")

    monkeypatch.setattr(detectors, "CenterFace", unavailable)
    with pytest.raises(UsageError, match=r"needs the teacher models: pip install 'ppar\[teach\]' \(CenterFace needs"):
        teach.Teachers()
