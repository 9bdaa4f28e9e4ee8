import json
import pickle
import sys

import numpy as np
import pytest
from helpers import ANNOTATIONS, needs_shared

from ppar_cli.errors import DataError
from ppar_cli.research.data import open_benchmark, read_hmdb51, read_ucf101
from ppar_cli.research.labels import (
    pa_clip_labels,
    read_label_pickle,
    read_pa_hmdb51,
    summarize_labels,
)


@needs_shared
@pytest.mark.parametrize("name,videos,rates", [
    # positive rates counted independently of the reader (a logging unpickler over the raw files)
    ("hmdb51", 6766, [0.90289684, 0.61986403, 0.91560745, 0.26825303, 0.21149867]),
    ("ucf101", 13320, [0.91163664, 0.60015015, 0.89707207, 0.24692192, 0.25337838]),
])
def test_vp_label_pickles(name, videos, rates):
    path = ANNOTATIONS / f"{name}_privacy_attribute_label.pickle"
    labels = read_label_pickle(path)
    assert len(labels) == videos
    assert all(v.shape == (5,) and set(np.unique(v)) <= {0, 1} for v in labels.values())
    s = summarize_labels(path)
    assert s["videos"] == videos
    assert np.allclose(list(s["positive_rate"].values()), rates, atol=1e-7)


@needs_shared
def test_pa_hmdb51_counts_match_raw_json():
    folder = ANNOTATIONS / "pa-hmdb51" / "PrivacyAttributes"
    s = summarize_labels(ANNOTATIONS / "pa-hmdb51")
    assert s["videos"] == 515 == len(read_pa_hmdb51(folder))
    pos = tot = 0
    for f in folder.glob("*.json"):  # a direct count of face frames with a non-zero value
        for entry in json.loads(f.read_text()).values():
            for a, b, v in entry["face"]:
                vals = v if isinstance(v, list) else [v]
                tot += b - a + 1
                pos += (b - a + 1) if any(x != 0 for x in vals) else 0
    assert s["positive_rate"]["face"] == pytest.approx(pos / tot)


def test_pa_clip_labels_multi_value():
    segs = {a: [(0, 9, frozenset([0]))] for a in ["face", "skin_color", "gender", "nudity", "relationship"]}
    segs["gender"] = [(0, 4, frozenset([0])), (5, 9, frozenset([1, 2]))]
    assert pa_clip_labels(segs, 0, 4).tolist() == [0, 0, 0, 0, 0]
    assert pa_clip_labels(segs, 3, 6).tolist() == [0, 0, 1, 0, 0]


def test_malicious_pickle_refused_unexecuted(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "labels.pickle"
    path.write_bytes(pickle.dumps({"a/b.mp4": Evil()}))
    with pytest.raises(DataError, match="refused global"):
        read_label_pickle(path)
    assert not marker.exists()


def _ucf_fixture(root, overlap=False, test_labels=False):
    (root / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 YoYo\n")
    (root / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nYoYo/v_YoYo_g09_c02.avi 2\n")
    test = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "YoYo/v_YoYo_g02_c01.avi"]
    if overlap:
        test.append("YoYo/v_YoYo_g09_c02.avi")
    (root / "testlist01.txt").write_text("".join(t + (" 1" if test_labels else "") + "\n" for t in test))
    labels = {"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.mp4": np.array([[1, 0, 1, 0, 0]]),
              "YoYo/v_YoYo_g09_c02.mp4": np.array([[0, 1, 0, 1, 1]]),
              "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.mp4": np.array([[1, 1, 1, 1, 1]]),
              "YoYo/v_YoYo_g02_c01.mp4": np.array([[0, 0, 0, 0, 0]])}
    (root / "labels.pickle").write_bytes(pickle.dumps(labels))


@pytest.mark.parametrize("test_labels", [False, True])
def test_ucf101_reader(tmp_path, test_labels):
    _ucf_fixture(tmp_path, test_labels=test_labels)
    b = read_ucf101(tmp_path, 1, tmp_path / "labels.pickle")
    assert b.actions == ["ApplyEyeMakeup", "YoYo"]
    assert [(i.key, i.action) for i in b.test] == [("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0), ("YoYo/v_YoYo_g02_c01.avi", 1)]
    assert b.train[1].attributes.tolist() == [0, 1, 0, 1, 1]  # .avi split entry matched to the .mp4 label key
    assert open_benchmark(tmp_path, "auto").actions == b.actions


def test_split_leak_refused(tmp_path):
    _ucf_fixture(tmp_path, overlap=True)
    with pytest.raises(DataError, match="both train and test"):
        read_ucf101(tmp_path)


def test_hmdb51_reader(tmp_path):
    (tmp_path / "brush_hair_test_split1.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    (tmp_path / "wave_test_split1.txt").write_text("d.avi 2\ne.avi 1\n")
    (tmp_path / "wave_test_split2.txt").write_text("d.avi 1\ne.avi 2\n")
    b = read_hmdb51(tmp_path / "videos", tmp_path, 1)
    assert b.actions == ["brush_hair", "wave"]
    assert sorted(i.key for i in b.train) == ["brush_hair/a.avi", "wave/e.avi"]
    assert sorted(i.key for i in b.test) == ["brush_hair/b.avi", "wave/d.avi"]
    b2 = read_hmdb51(tmp_path / "videos", tmp_path, 2)
    assert sorted(i.key for i in b2.test) == ["wave/e.avi"]


def test_csv_reader(tmp_path):
    (tmp_path / "d.csv").write_text("path,action,face,nudity,split\nv1.mp4,run,1,0,train\nv2.mp4,walk,0,1,test\n")
    b = open_benchmark(tmp_path / "d.csv")
    assert b.attributes == ["face", "nudity"] and b.actions == ["run", "walk"]
    assert b.test[0].attributes.tolist() == [0, 1]
    # a spreadsheet's byte-order mark is no part of the header
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfpath,action,face\nv1.mp4,run,1\n")
    assert open_benchmark(tmp_path / "bom.csv", "csv").attributes == ["face"]
    # a row that does not fit is named by its line, before any video is read (a traceback or a
    # training split where a typo meant test, before)
    for rows, said in (("v1.mp4,run\n", "line 2: fewer fields than the header's 3"),
                       ("v1.mp4,run,1,0\n", "line 2: more fields than the header's 3"),
                       ("v1.mp4,run,1\nv2.mp4,walk,yes\n", r"line 3: attributes are numbers \(1 present, 0 absent\), got face='yes'")):
        (tmp_path / "bad.csv").write_text("path,action,face\n" + rows)
        with pytest.raises(DataError, match=f"bad.csv: {said}"):
            open_benchmark(tmp_path / "bad.csv", "csv")
    (tmp_path / "bad.csv").write_text("path,action,split\nv1.mp4,run,tset\n")
    with pytest.raises(DataError, match="bad.csv: line 2: split is train or test, got 'tset'"):
        open_benchmark(tmp_path / "bad.csv", "csv")


def test_hmdb51_with_pa_labels_per_window(tmp_path):
    from helpers import make_clip

    from ppar_cli.core.config import PPARConfig
    from ppar_cli.research.data import ClipSet

    splits, videos, pa = tmp_path / "splits", tmp_path / "videos", tmp_path / "pa"
    for d in (splits, videos / "wave", pa):
        d.mkdir(parents=True)
    (splits / "wave_test_split1.txt").write_text("a.avi 1\nb.avi 2\nunlabelled.avi 2\n")
    seg = lambda v: [[0, 39, v]]  # noqa: E731
    doc = {"a.avi": {"face": [[0, 9, 0], [10, 39, [1, 2]]], "skin_color": seg(1), "gender": seg(0), "nudity": seg(0), "relationship": seg(0)},
           "b.avi": {"face": seg(0), "skin_color": seg(0), "gender": seg(2), "nudity": seg(0), "relationship": seg(1)}}
    (pa / "wave.json").write_text(json.dumps(doc))
    for name in ("a.avi", "b.avi"):
        make_clip(videos / "wave" / name, 64, 48, 40, audio=False, extra=["-c:v", "mpeg4"])
    b = open_benchmark(videos, "hmdb51", labels=pa, splits_dir=splits)
    assert [i.key for i in b.train] == ["wave/a.avi"] and [i.key for i in b.test] == ["wave/b.avi"]  # unlabelled dropped
    cfg = PPARConfig(frames=4, frame_stride=2, image_size=32, tubelet=(2, 8, 8), dim=32, depth=1, heads=2, prune_blocks=(1,), actions=["wave"])
    cs = ClipSet(b.train, cfg)
    assert cs.has_attributes and cs.windows(0, 3) == [0, 16, 32]
    assert cs.attributes(0, 0).tolist() == [0, 1, 0, 0, 0]  # frames 0-7: face not visible yet
    assert cs.attributes(0, 16).tolist() == [1, 1, 0, 0, 0]


def test_without_decord_clips_come_through_pyav_and_are_the_same(tmp_path, monkeypatch):
    """decord has wheels for x86-64 Linux and Windows only (pyproject's marker): on ARM Linux (a
    GH200) or macOS the research path reads every video through PyAV, held or from its file, and
    must give the clips decord gives."""
    from helpers import decoder_threads_seen

    from ppar_cli.core.config import PPARConfig
    from ppar_cli.media.decode import FrameReader
    from ppar_cli.media.probe import probe
    from ppar_cli.research.data import ClipSet
    from ppar_cli.research.synth import generate

    generate(tmp_path / "b", 2, seed=5, size=48, frames=40, workers=1)
    items = open_benchmark(tmp_path / "b").train
    cfg = PPARConfig(frames=4, frame_stride=2, image_size=32, tubelet=(2, 8, 8), dim=32, depth=1, heads=2, prune_blocks=(1,),
                     actions=["a", "b", "c"])
    plan = [([0, 0, 0], [0, 13, 32], [None] * 3)]
    assert FrameReader(probe(items[0].path)).backend == "decord"
    expected = next(ClipSet(items, cfg).batches(plan))
    monkeypatch.setitem(sys.modules, "decord", None)  # as where it is not installed
    assert FrameReader(probe(items[0].path)).backend == "ffmpeg"
    for hold in (None, 0):
        threads = decoder_threads_seen(monkeypatch)
        assert np.array_equal(next(ClipSet(items, cfg, hold=hold).batches(plan)), expected)
        # read from the file: each window on one decoder thread, the batch's windows in parallel
        assert hold != 0 or threads == [1, 1, 1]


def test_videos_read_from_their_files_give_the_clips_held_ones_give(tmp_path):
    """UCF101's training videos at 224 px do not fit in memory (about 260 GB), so a ClipSet holds
    the frames of what fits and reads the others from their files window by window: the clips,
    crops, mask counts and evaluation windows must not depend on which. The synthetic benchmark
    goes through decord; a GIF and a rotated video through PyAV (decord reads neither)."""
    import subprocess

    from helpers import ffmpeg_exe, make_clip

    from ppar_cli.core.config import PPARConfig
    from ppar_cli.research.data import ClipSet, Item, VideoFrames, random_crop
    from ppar_cli.research.evaluate import Windows
    from ppar_cli.research.synth import generate

    generate(tmp_path / "b", 4, seed=5, size=48, frames=40, workers=1)
    bench = open_benchmark(tmp_path / "b")
    make_clip(tmp_path / "up.mp4", 64, 48, 37, audio=False)
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-display_rotation", "90", "-i", str(tmp_path / "up.mp4"), "-c", "copy",
                    str(tmp_path / "rot.mp4")], check=True)
    odd = [Item(make_clip(tmp_path / "a.gif", 40, 30, 23, audio=False), 0), Item(tmp_path / "rot.mp4", 0)]
    cfg = PPARConfig(frames=4, frame_stride=2, image_size=32, tubelet=(2, 8, 8), dim=32, depth=1, heads=2, prune_blocks=(1,),
                     actions=bench.actions)
    rng = np.random.default_rng(0)
    for items, crops in ((bench.train + bench.test, True), (odd, False)):
        held, read = ClipSet(items, cfg, crops=crops), ClipSet(items, cfg, crops=crops, hold=0)
        assert all(isinstance(f, np.ndarray) for f in held.frames) and all(isinstance(f, VideoFrames) for f in read.frames)
        assert [len(f) for f in held.frames] == [len(f) for f in read.frames]
        plan = [(list(range(len(items))), [held.starts(i, rng) for i in range(len(items))],
                 [random_crop(rng, 32, 0.6) if crops else None for _ in items]) for _ in range(3)]
        plan.append((list(range(len(items))), [len(f) - 3 for f in held.frames], [None] * len(items)))  # padded at the end
        for (idx, starts, boxes), a, b in zip(plan, held.batches(plan), read.batches(plan), strict=True):
            assert np.array_equal(a, np.stack([held.clip(i, s, box) for i, s, box in zip(idx, starts, boxes)]))
            assert a.shape == (len(items), 4, 32, 32, 3) and np.array_equal(a, b)
            if crops:
                for i, s, box in zip(idx, starts, boxes):
                    assert all(np.array_equal(x, y) for x, y in zip(held.counts(i, s, box), read.counts(i, s, box)))
        wa, wb = Windows.of(held, 3), Windows.of(read, 3)
        assert np.array_equal(wa.raw, wb.raw) and np.array_equal(wa.follows, wb.follows)
    gif = read.frames[0]  # a container that lists more frames than decode: a window past them gives the last ones
    gif.count += 50
    assert np.array_equal(gif[gif.count - 8:gif.count], held.frames[0][-8:])


@pytest.mark.parametrize("suffix", [".ts", ".mkv"])
def test_a_video_that_changes_size_midway_reads_the_same_for_research(tmp_path, suffix):
    """decord reads a stream that changes size (two recordings joined) as if it had one size: the
    joined MPEG-TS came out white throughout (the second part's frames), the Matroska file
    squeezed. Such a video is read through PyAV, whose frames are fitted in as ``ppar anonymize``
    fits them; a video of one size still goes through decord."""
    from helpers import ffmpeg

    from ppar_cli.media.decode import FrameReader
    from ppar_cli.media.probe import probe
    from ppar_cli.research.data import VideoFrames, decode_resized

    parts = []
    for i, (size, colour) in enumerate((("64x48", "gray"), ("128x48", "white"))):
        parts.append(tmp_path / f"{i}.ts")
        ffmpeg("-f", "lavfi", "-i", f"color={colour}:size={size}:rate=25", "-frames:v", 30, "-pix_fmt", "yuv420p",
               "-c:v", "libx264", "-g", 10, parts[-1])
    joined = tmp_path / f"joined{suffix}"
    (tmp_path / "joined.ts").write_bytes(b"".join(p.read_bytes() for p in parts))
    if suffix != ".ts":
        ffmpeg("-i", tmp_path / "joined.ts", "-c", "copy", joined)
    frames = FrameReader(probe(joined), backend="ffmpeg").window(0, 60)  # as ppar anonymize reads it
    assert len(frames) == 60 and abs(int(frames[0].mean()) - 128) < 4 and frames[45, 24, 32].min() > 230  # gray, then white
    assert frames[45, :8].max() < 20  # the wider frames fitted in: black bars above and below
    held = decode_resized(joined, 32)  # as training holds it
    assert len(held) == 60 and abs(int(held[0].mean()) - 128) < 4 and held[45, 16, 16].min() > 230 and held[45, :4].max() < 20
    assert np.array_equal(VideoFrames(joined, 32)[20:50], held[20:50])  # as training reads it from the file
    assert FrameReader(probe(joined)).backend == "ffmpeg"
    assert FrameReader(probe(parts[0])).backend == "decord"


def test_masks_are_read_one_file_at_a_time(tmp_path, monkeypatch):
    """NumPy parses .npy headers with ast.literal_eval, which two threads of CPython 3.11 cannot run
    at once ("SystemError: AST constructor recursion depth mismatch" stopped two training tests, and a
    stress run of training's loader threads): every mask file is read under one lock."""
    from ppar_cli.research import synth

    masks = {k: np.random.default_rng(0).random((3, 8, 20)) > 0.5 for k in ("privacy", "action")}
    synth.save_masks(tmp_path / "m.masks.npz", **masks)
    held, load = [], np.load

    def watched(*a, **k):
        held.append(synth._NPZ_READ.locked())
        return load(*a, **k)

    monkeypatch.setattr(np, "load", watched)
    got = synth.load_masks(tmp_path / "m.masks.npz")
    assert held == [True] and all((g == masks[k]).all() for g, k in zip(got, ("privacy", "action")))
