import json
import subprocess
import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest
from helpers import REAL, ffmpeg_exe, make_clip, needs_shared, stray

from ppar_cli import Options, anonymize, anonymize_frames
from ppar_cli.core.clips import pixel_mask, resize_frames, sample_clip, slab_index
from ppar_cli.core.config import PPARConfig
from ppar_cli.core.weights import load_weights, save_weights
from ppar_cli.errors import UsageError
from ppar_cli.media.decode import FrameReader
from ppar_cli.media.probe import probe
from ppar_cli.pipeline.options import FileResult, parse_shard
from ppar_cli.pipeline.front import Ahead
from ppar_cli.pipeline.guard import GuardConfig
from ppar_cli.pipeline.stream import ModelInput


def decode(path):
    return np.concatenate(list(FrameReader(probe(path)).chunks(64)))


def test_end_to_end_odd_size_with_audio(tmp_path, odd_clip, tiny_weights):
    out = tmp_path / "out.mp4"
    [r] = anonymize(odd_clip, out, Options(keep_ratio=0.5, crf=0, guard="none"), weights=tiny_weights)
    assert r.status == "ok", r.error
    info = probe(out)
    assert (info.width, info.height) == (333, 201)
    assert info.audio_codecs == ["aac"]
    assert float(info.fps) == 25
    src, dst = decode(odd_clip), decode(out)
    assert dst.shape == src.shape == (50, 201, 333, 3)
    scores = json.loads(out.with_suffix(".json").read_text())
    cfg = load_weights(tiny_weights).model.cfg
    n = cfg.num_tokens
    assert scores["schema"] == "ppar-scores/1"
    assert scores["input"]["frames"] == 50 and scores["input"]["width"] == 333 and scores["input"]["height"] == 201
    assert abs(scores["summary"]["kept_fraction"] - 0.5) <= 1 / n
    span = cfg.clip_span
    assert [w["start"] for w in scores["windows"]] == list(range(0, 50, span))
    assert sum(w["frames"] for w in scores["windows"]) == 50
    # pruned rectangles black, kept rectangles equal to the input (crf 0 -> only 4:4:4 conversion loss)
    for w in scores["windows"]:
        keep = np.array(w["keep"], bool)
        assert abs(keep.mean() - 0.5) <= 1 / n
        for f in range(w["start"], w["start"] + w["frames"]):
            slab = ((f - w["start"]) // cfg.frame_stride) // cfg.tubelet[0]
            m = pixel_mask(keep[slab], 201, 333)
            assert dst[f][~m].max() <= 3
            assert np.abs(dst[f][m].astype(int) - src[f][m]).mean() < 3


def test_score_map_numbers_keep_four_significant_digits():
    """Scores are about 1/N: fixed decimals made ties of most of them, and float32 values printed 17 digits."""
    from ppar_cli.pipeline.scoremap import significant

    a = np.array([[4.8e-05, -1.2345678e-07], [0.0, 3.14159]], np.float32)
    assert json.dumps(significant(a)) == "[[4.8e-05, -1.235e-07], [0.0, 3.142]]"
    # computed in array operations: the same numbers as formatting each one, over 17 decades, at
    # powers of ten and their neighbours, and every float32 of a stretch dense in ties (x.xxx5)
    rng = np.random.default_rng(0)
    tens = np.array([10.0 ** i for i in range(-14, 4)], np.float32)
    dense = np.arange(*np.float32([1.0, 1.25]).view(np.int32), 7, dtype=np.int32).view(np.float32)
    a = np.concatenate([rng.choice([-1, 1], 20000) * 10 ** rng.uniform(-14, 3, 20000), tens, np.nextafter(tens, 0),
                        np.nextafter(tens, 1), [9.9995, 0.99995, -0.0], dense]).astype(np.float32)
    assert significant(a) == [float(f"{v:.4g}") for v in a.astype(np.float64)]


def test_a_videos_windows_are_not_held_in_memory(tmp_path, tiny_weights):
    """A window's score-map record is about 95 KB as Python objects: the log keeps running sums and
    sends records to a temporary file, so a long video's memory does not grow with its windows,
    and the score map written from it holds every record, the guard's fraction and the flicker."""
    import tracemalloc

    from ppar_cli.pipeline.options import FileResult
    from ppar_cli.pipeline.scoremap import ScoreLog, flicker

    def record(i: int) -> dict:  # made afresh, as the pipeline makes each window's
        rng = np.random.default_rng(i)
        return {"start": 32 * i, "frames": 32, "kept_fraction": 0.5, "scores": rng.normal(0, 1e-3, (4, 20, 20)).tolist(),
                "keep": (rng.random((4, 20, 20)) < 0.5).astype(np.uint8).tolist(),
                "guard": (rng.random((4, 20, 20)) < 0.1).astype(np.uint8).tolist()}

    log = ScoreLog(tmp_path)
    log.add(record(0))  # its first imports whatever it imports
    tracemalloc.start()
    for i in range(1, 300):
        log.add(record(i))
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert held < 200_000  # the 300 records are 30 MB as objects
    weights = load_weights(tiny_weights)
    result = FileResult(tmp_path / "a.mp4", tmp_path / "b.mp4", "ok", frames=9600, kept_fraction=0.5)
    log.write(tmp_path / "s.json", probe(make_clip(tmp_path / "a.mp4", 64, 48, 4)), result, weights, Options(), "ffmpeg")
    log.close()
    m = json.loads((tmp_path / "s.json").read_text())
    records = [record(i) for i in range(300)]
    assert m["windows"] == records and m["summary"]["windows"] == 300
    assert m["summary"]["flicker"] == flicker(np.array([r["keep"] for r in records]))
    assert m["model"]["guard"]["forced_fraction"] == round(float(np.mean([np.mean(r["guard"]) for r in records])), 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "s.json"]  # no temporary file left


def test_keep_one_and_zero(tmp_path, odd_clip, tiny_weights):
    for keep in (0.0, 1.0):
        out = tmp_path / f"k{keep}.mp4"
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            [r] = anonymize(odd_clip, out, Options(keep_ratio=keep, audio=False, guard="none"), weights=tiny_weights)
        assert r.status == "ok" and r.kept_fraction == keep
        assert any("NOT anonymized" in str(w.message) for w in said) == (keep == 1)
        dst = decode(out)
        assert (dst.max() <= 3) if keep == 0 else (dst.mean() > 50)
        assert probe(out).audio_codecs == []


def test_lambda_zero_says_that_privacy_no_longer_ranks(tmp_path, odd_clip, tiny_weights):
    """--lambda 0 ranks tubelets by the action attention alone: on a real clip with the guard off the
    face stayed in 86 of 89 frames, without a word. It is a choice (the action-only ablation),
    so it is allowed, and said; a small lambda is not."""
    for lam, guard, said_as in ((0.0, "none", "faces are NOT hidden on purpose"), (0.0, "centerface", "only where the guard"),
                                (0.01, "none", None), (None, "none", None)):
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            [r] = anonymize(odd_clip, tmp_path / "o.mp4", Options(lambda_priv=lam, guard=guard, overwrite=True), weights=tiny_weights)
        assert r.status == "ok", r.error
        lines = [str(w.message) for w in said if "--lambda 0" in str(w.message)]
        assert (lines and said_as in lines[0]) if said_as else not lines, (lam, guard, lines)
    zero = tmp_path / "zero.safetensors"  # weights whose own lambda is 0 say so as theirs
    model = load_weights(tiny_weights).model
    model.cfg = replace(model.cfg, lambda_priv=0.0)
    save_weights(model, zero, {})
    with pytest.warns(UserWarning, match="the weights' lambda_priv 0 \\(test-tiny\\) ranks the tubelets by the action attention alone"):
        anonymize(odd_clip, tmp_path / "o.mp4", Options(guard="none", overwrite=True), weights=zero)


@pytest.mark.parametrize("fill", ["black", "blur", "pixelate", "mean"])
def test_a_fill_that_keeps_colours_says_so(tmp_path, odd_clip, tiny_weights, fill):
    """blur, pixelate and mean hide faces from a detector but keep the colours of what they hide
    (skin tone is one of the privacy attributes): chosen for looks, they are said."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        [r] = anonymize(odd_clip, tmp_path / "o.mp4", Options(fill=fill, guard="none"), weights=tiny_weights)
    assert r.status == "ok"
    lines = [str(w.message) for w in said if "keeps the colours" in str(w.message)]
    assert lines == ([] if fill == "black" else [f"--fill {fill} keeps the colours of the regions it hides (skin tone, "
                                                 "hair, clothes), which the black fill removes"])


def test_short_video_even_size(tmp_path, tiny_weights):
    clip = make_clip(tmp_path / "short.mkv", 64, 48, 3, audio=False)
    [r] = anonymize(clip, tmp_path / "s.mp4", Options(), weights=tiny_weights)
    assert r.status == "ok" and r.frames == 3
    assert decode(tmp_path / "s.mp4").shape == (3, 48, 64, 3)


def test_usage_errors(tmp_path, odd_clip, tiny_weights):
    for opts in (Options(keep_ratio=1.5), Options(keep_ratio=float("nan")), Options(batch_size=0), Options(fill="sparkle"),
                 Options(jobs=0), Options(jobs=True), Options(jobs=65), Options(hysteresis=5.5)):
        with pytest.raises(UsageError):
            anonymize(odd_clip, tmp_path / "x.mp4", opts, weights=tiny_weights)
    with pytest.raises(UsageError):
        anonymize(odd_clip, odd_clip, Options(overwrite=True), weights=tiny_weights)
    with pytest.raises(UsageError, match="p.webm: ppar writes H.264 in .* name the preview"):  # failed the video at its end
        anonymize(odd_clip, tmp_path / "x.mp4", Options(preview=tmp_path / "p.webm"), weights=tiny_weights)
    assert not (tmp_path / "x.mp4").exists()
    with pytest.raises(UsageError):
        anonymize(tmp_path / "missing.mp4", tmp_path / "x.mp4", Options(), weights=tiny_weights)
    with pytest.raises(UsageError, match="got 'cuda:1' \\(to use GPU 1: CUDA_VISIBLE_DEVICES=1"):  # before PyTorch loads
        Options(device="cuda:1").validate()


def test_folder_mode_with_corrupt_file(tmp_path, tiny_weights):
    src = tmp_path / "in"
    (src / "sub dir").mkdir(parents=True)
    make_clip(src / "a.mp4", 96, 64, 20, audio=False)
    make_clip(src / "sub dir" / "b ü.avi", 80, 60, 10, audio=False, extra=["-c:v", "mpeg4"])
    make_clip(src / "cam01.asf", 64, 48, 10, audio=False, extra=["-c:v", "wmv2"])  # a CCTV recorder's export
    (src / "bad.mp4").write_bytes(b"this is not a video" * 100)
    (src / "notes.txt").write_text("ignored")
    (src / "sub dir" / "CAM02").write_bytes(b"a recorder's file without an extension")
    (src / "._a.mp4").write_bytes(b"\x00\x05\x16\x07" + bytes(4000))  # macOS's companion of a.mp4: hidden, skipped
    (src / ".trash").mkdir()
    (src / ".trash" / "c.mp4").write_bytes(b"not a video either")
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=r"in: 2 files left out, not named as videos: .*no extension \(1\)") as said:
        results = anonymize(src, out, Options(), weights=tiny_weights)
    assert any(".txt (1)" in str(w.message) for w in said)
    status = {r.src.name: r.status for r in results}
    assert status == {"a.mp4": "ok", "b ü.avi": "ok", "cam01.asf": "ok", "bad.mp4": "failed"}
    bad = next(r for r in results if r.status == "failed")
    assert "bad.mp4" in bad.error
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["a.json", "a.mp4", "cam01.json", "cam01.mp4", "ppar-manifest.jsonl",
                     "sub dir/b ü.json", "sub dir/b ü.mp4"]  # nothing half-written
    manifest = [json.loads(line) for line in (out / "ppar-manifest.jsonl").read_text().splitlines()]
    assert {(m["src"].rsplit("/", 1)[-1], m["status"]) for m in manifest} == set(status.items())
    assert before == {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}  # inputs untouched
    with pytest.warns(UserWarning, match="2 files left out"):  # OUT's own files are not counted
        again = anonymize(src, out, Options(), weights=tiny_weights)
    assert {r.src.name: r.status for r in again} == {"a.mp4": "skipped", "b ü.avi": "skipped", "cam01.asf": "skipped",
                                                      "bad.mp4": "failed"}


def test_shards_cover_folder_like_one_run(tmp_path, tiny_weights, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(5):
        make_clip(src / f"v{i}.mp4", 64 + 16 * i, 48, 12, audio=False)
    whole = anonymize(src, tmp_path / "whole", Options(), weights=tiny_weights)
    assert [r.status for r in whole] == ["ok"] * 5
    done = []
    for k in range(3):
        done += [r.src.name for r in anonymize(src, tmp_path / "sharded", Options(shard=(k, 3)), weights=tiny_weights)]
    assert sorted(done) == [f"v{i}.mp4" for i in range(5)]  # each file once
    for i in range(5):  # the same decisions and frames (x264's threads may order bits differently)
        a, b = (json.loads((tmp_path / d / f"v{i}.json").read_text())["windows"] for d in ("whole", "sharded"))
        assert [w["keep"] for w in a] == [w["keep"] for w in b]
        fa, fb = (decode(tmp_path / d / f"v{i}.mp4") for d in ("whole", "sharded"))
        assert fa.shape == fb.shape and np.abs(fa.astype(int) - fb).mean() < 1
    manifests = sorted(p.name for p in (tmp_path / "sharded").glob("ppar-manifest*"))
    assert manifests == [f"ppar-manifest.shard-{k}-of-3.jsonl" for k in range(3)]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert parse_shard(None) == (1, 3)
    assert parse_shard("2/4") == (2, 4)
    for bad in ("3", "a/b", "1/0"):
        with pytest.raises(UsageError):
            parse_shard(bad)
    with pytest.raises(UsageError):
        anonymize(src, tmp_path / "x", Options(shard=(3, 3)), weights=tiny_weights)


def test_a_single_file_is_shard_0s_and_has_no_manifest(tmp_path, tiny_weights):
    # Under torchrun every rank is given the same arguments: one file must not be anonymized by
    # each rank at once into the same output. A manifest is a folder run's record.
    clip = make_clip(tmp_path / "v.mp4", 64, 48, 12, audio=False)
    with pytest.warns(UserWarning, match="shard 0's, nothing to do for shard 1/2"):
        assert anonymize(clip, tmp_path / "o.mp4", Options(shard=(1, 2)), weights=tiny_weights) == []
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o.json").exists()
    [r] = anonymize(clip, tmp_path / "o.mp4", Options(shard=(0, 2)), weights=tiny_weights)
    assert r.status == "ok" and (tmp_path / "o.mp4").exists()
    with pytest.raises(UsageError, match="manifest records a folder's files"):
        anonymize(clip, tmp_path / "p.mp4", Options(manifest=tmp_path / "m.jsonl"), weights=tiny_weights)
    assert not (tmp_path / "p.mp4").exists() and not (tmp_path / "m.jsonl").exists()


@pytest.mark.slow
def test_workers_do_a_folder_as_one_process_does(tmp_path, tiny_weights):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        make_clip(src / f"v{i}.mp4", 64 + 16 * i, 48, 12, audio=False)
    (src / "bad.mp4").write_bytes(b"not a video")
    one = anonymize(src, tmp_path / "one", Options(guard="none"), weights=tiny_weights)

    class Seen:
        def __init__(self):
            self.batch, self.started, self.ended, self.frames = None, [], [], 0

        def start_batch(self, n): self.batch = n
        def start_file(self, s, total): self.started.append(s.name)
        def advance(self, s, n): self.frames += n
        def end_file(self, r): self.ended.append(r.src.name)

    seen = Seen()
    many = anonymize(src, tmp_path / "many", Options(guard="none", workers=3), weights=tiny_weights, reporter=seen)
    assert [(r.src.name, r.status) for r in many] == [(r.src.name, r.status) for r in one]  # the folder's order
    assert [r.status for r in many].count("ok") == 4 and "bad.mp4" in next(r.error for r in many if r.status == "failed")
    assert seen.batch == 5 and sorted(seen.ended) == sorted(r.src.name for r in many) and seen.frames == 4 * 12
    for i in range(4):  # the same decisions as one process
        a, b = (json.loads((tmp_path / d / f"v{i}.json").read_text())["windows"] for d in ("one", "many"))
        assert [w["keep"] for w in a] == [w["keep"] for w in b]
    lines = [json.loads(x) for x in (tmp_path / "many" / "ppar-manifest.jsonl").read_text().splitlines()]
    assert sorted(m["src"].rsplit("/", 1)[-1] for m in lines) == sorted(r.src.name for r in many)  # one manifest, whole lines
    again = anonymize(src, tmp_path / "many", Options(guard="none", workers=2), weights=tiny_weights)
    assert sorted(r.status for r in again) == ["failed"] + ["skipped"] * 4


@pytest.mark.slow
def test_a_workers_usage_error_reaches_the_user_as_one(tmp_path, tiny_weights):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        make_clip(src / f"v{i}.mp4", 64, 48, 8, audio=False)
    r = subprocess.run([sys.executable, "-m", "ppar_cli.cli", "anonymize", str(src), str(tmp_path / "o"), "--weights",
                        str(tiny_weights), "--workers", "2", "--device", "cuda", "-q"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == ["error: --device cuda: no CUDA GPU is available to PyTorch here (use cpu or auto)"]


@pytest.mark.parametrize("guard", ["none", "centerface"])
def test_frames_in_memory_are_anonymized_as_their_file_is(tmp_path, odd_clip, tiny_weights, guard):
    """anonymize_frames (a data loader's frames) keeps the tubelets that anonymize keeps for the
    file they came from, window by window, guard and hysteresis included; its input is left as it was."""
    from ppar_cli.pipeline.fill import fill_clip

    frames = np.concatenate(list(FrameReader(probe(odd_clip), backend="ffmpeg").chunks(64)))  # as the file path decodes
    before = frames.copy()
    opts = Options(guard=guard, hysteresis=1.0, audio=False)
    out = anonymize_frames(frames, opts, weights=load_weights(tiny_weights))
    assert np.array_equal(frames, before) and out.shape == frames.shape and out.dtype == np.uint8
    anonymize(odd_clip, tmp_path / "o.mp4", opts, weights=tiny_weights)
    windows = json.loads((tmp_path / "o.json").read_text())["windows"]
    cfg, start = load_weights(tiny_weights).model.cfg, 0
    for w in windows:
        keep = np.array(w["keep"], bool)
        assert 0 < keep.mean() < 1
        want = fill_clip(frames[start:start + w["frames"]].copy(), keep, slab_index(w["frames"], cfg))
        assert np.array_equal(out[start:start + w["frames"]], want), start
        start += w["frames"]
    assert start == len(frames)


def test_frames_in_memory_bad_input_and_keep_all(tiny_weights):
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    for bad in (frames.astype(np.float32), frames[..., 0], frames[:0], [[[[0, 0, 0]]]]):
        with pytest.raises(UsageError, match="uint8 array"):
            anonymize_frames(bad, Options(guard="none"), weights=tiny_weights)
    with pytest.raises(UsageError, match="frames must convert to a NumPy array"):
        anonymize_frames([[1, 2], [3]], Options(guard="none"), weights=tiny_weights)
    import torch  # a data loader's tensor (torchvision's read_video gives T, H, W, 3) is taken as it is

    assert np.array_equal(anonymize_frames(torch.from_numpy(frames + 9), Options(guard="none"), weights=tiny_weights),
                          anonymize_frames(frames + 9, Options(guard="none"), weights=tiny_weights))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        anonymize_frames(frames, Options(guard="none", keep_ratio=1.0), weights=tiny_weights)
    assert any("NOT anonymized" in str(w.message) for w in said)


def test_scores_deterministic(tmp_path, odd_clip, tiny_weights):
    for name in ("r1", "r2"):
        anonymize(odd_clip, tmp_path / f"{name}.mp4", Options(audio=False), weights=tiny_weights)
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("r1", "r2"))
    assert a["windows"] == b["windows"]


def test_preview_side_by_side(tmp_path, tiny_weights):
    src = make_clip(tmp_path / "in.mp4", 160, 96, 40, audio=False)
    out, prev = tmp_path / "out.mp4", tmp_path / "prev.mp4"
    [r] = anonymize(src, out, Options(guard="none", preview=prev, crf=0), weights=tiny_weights)
    assert r.status == "ok", r.error
    p, o, s = decode(prev), decode(out), decode(src)
    assert p.shape == (40, 96, 320, 3)
    assert np.abs(p[:, :, 160:].astype(int) - o).mean() < 1  # right: the output
    keep = np.array(json.loads(out.with_suffix(".json").read_text())["windows"][0]["keep"], bool)[0]
    white = (p[0, :, :160] > 250).all(-1)  # left: kept cells outlined in white, nothing else white
    assert white.any() and not white[~pixel_mask(keep, 96, 160)].any()
    assert np.abs(p[:, :, :160].astype(int) - s).mean() > 10  # heatmap blended over the original
    with pytest.raises(UsageError):
        anonymize(src, tmp_path / "o2.mp4", Options(preview=src), weights=tiny_weights)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    [r] = anonymize(bad, tmp_path / "o3.mp4", Options(guard="none", preview=tmp_path / "p3.mp4"), weights=tiny_weights)
    assert r.status == "failed" and not list(tmp_path.glob("*p3*")) and not list(tmp_path.glob(".p3*"))


def test_each_videos_progress_has_its_frame_count(tmp_path, tiny_weights):
    """A file's bar had no total where decord was not used (PyAV reads every video of the product
    path): a pulsing bar and no time left, on an hour-long video too. Its total is the frames the
    container lists, and the bar reaches it."""
    from ppar_cli.pipeline.options import Silent

    class Count(Silent):
        def __init__(self):
            self.totals, self.done = {}, {}

        def start_file(self, src, total_frames):
            self.totals[src.name], self.done[src.name] = total_frames, 0

        def advance(self, src, frames):
            self.done[src.name] += frames

    seen = Count()
    make_clip(tmp_path / "a.mp4", 64, 48, 37, audio=False)
    make_clip(tmp_path / "b.mkv", 64, 48, 20, audio=False)
    for name in ("a.mp4", "b.mkv"):
        [r] = anonymize(tmp_path / name, tmp_path / f"o_{name}.mp4", Options(guard="none"), weights=tiny_weights, reporter=seen)
        assert r.status == "ok"
    assert seen.totals == seen.done == {"a.mp4": 37, "b.mkv": 20}


def test_hysteresis_reduces_flicker_at_the_same_kept_fraction(tmp_path, tiny_weights):
    src = make_clip(tmp_path / "long.mp4", 96, 64, 200, audio=False)
    meta = {}
    for h in (0.0, 3.0):
        out = tmp_path / f"h{h}.mp4"
        [r] = anonymize(src, out, Options(hysteresis=h, guard="none", batch_size=3), weights=tiny_weights)
        assert r.status == "ok", r.error
        meta[h] = json.loads(out.with_suffix(".json").read_text())
    assert meta[3.0]["model"]["hysteresis"] == 3.0 and len(meta[3.0]["windows"]) >= 6
    assert meta[3.0]["summary"]["kept_fraction"] == meta[0.0]["summary"]["kept_fraction"]
    assert meta[3.0]["summary"]["flicker"] < 0.5 * meta[0.0]["summary"]["flicker"]
    with pytest.raises(UsageError):
        anonymize(src, tmp_path / "bad.mp4", Options(hysteresis=-1), weights=tiny_weights)


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize("name", sorted(p.name for p in REAL.glob("*")) if REAL.is_dir() else [])
def test_real_clips(tmp_path, tiny_weights, name):
    src = REAL / name
    out = tmp_path / "o.mp4"
    [r] = anonymize(src, out, Options(keep_ratio=0.5), weights=tiny_weights)
    assert r.status == "ok", r.error
    i, o = probe(src), probe(out)
    assert (o.width, o.height) == (i.width, i.height)
    ti, to = i.frame_times(), o.frame_times()
    seconds = lambda t: (t.known - t.known[0]) * float(t.time_base)  # noqa: E731
    assert len(to.known) == len(ti.known) and np.abs(seconds(to) - seconds(ti)).max() < 0.002
    assert abs(float(to.known[0] * to.time_base) - float(ti.known[0] * ti.time_base - ti.origin)) < 0.002  # same start, from the file's
    assert bool(o.audio_codecs) == bool(i.audio_codecs)
    assert len(decode(out)) == r.frames == len(decode(src))


@pytest.mark.parametrize("name,w,h,extra", [
    ("portrait_vp9.webm", 120, 200, ["-c:v", "libvpx-vp9", "-deadline", "realtime"]),
    ("alpha_vp9.webm", 96, 64, ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-pix_fmt", "yuva420p"]),
    ("prores.mov", 96, 64, ["-c:v", "prores"]),
    ("prores_422_10bit.mov", 96, 64, ["-c:v", "prores_ks", "-pix_fmt", "yuv422p10le"]),
    ("mjpeg.avi", 80, 60, ["-c:v", "mjpeg"]),
    ("grey.mkv", 96, 64, ["-c:v", "ffv1", "-pix_fmt", "gray"]),
    ("hevc.mp4", 96, 64, ["-c:v", "libx265", "-x265-params", "log-level=error"]),
    ("av1.mkv", 96, 64, ["-c:v", "libaom-av1", "-cpu-used", "8"]),
])
def test_containers_and_codecs(tmp_path, tiny_weights, name, w, h, extra):
    # Whatever the codec and pixel format (VP9 with alpha, which FFmpeg's own decoder drops; grey;
    # 10-bit 4:2:2), the output has the input's frames, and the tubelets kept show the input's
    # pixels as a plain lossless re-encode to 4:2:0 does (4:2:2's chroma costs both the same): a
    # colour or range mistake would not.
    clip = make_clip(tmp_path / name, w, h, 20, audio=False, extra=extra)
    out, ref = tmp_path / "o.mp4", tmp_path / "ref.mp4"
    [r] = anonymize(clip, out, Options(crf=0), weights=tiny_weights)
    assert r.status == "ok", r.error
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-i", str(clip), "-c:v", "libx264", "-crf", "0",
                    "-pix_fmt", "yuv420p", str(ref)], check=True)
    src, got, plain = (decode(p).astype(int) for p in (clip, out, ref))
    assert got.shape == src.shape == plain.shape == (20, h, w, 3)
    # kept pixels (pruned ones are black; testsrc2's own dark ones aside) 2 px or more from a pruned
    # one: black in 4:2:0 also blacks the chroma of a kept pixel beside it (fill._black_yuv)
    shown = np.pad(got.max(-1) > 40, ((0, 0), (2, 2), (2, 2)))
    shown = np.logical_and.reduce([shown[:, 2 + dy:h + 2 + dy, 2 + dx:w + 2 + dx] for dy in range(-2, 3) for dx in range(-2, 3)])
    assert shown.mean() > 0.1
    assert np.abs(got - src)[shown].mean() <= np.abs(plain - src)[shown].mean() + 0.5


def test_rotated_phone_video_is_upright(tmp_path, tiny_weights):
    clip = make_clip(tmp_path / "land.mp4", 96, 64, 10, audio=False)
    rotated = tmp_path / "rot.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-display_rotation", "90", "-i", str(clip), "-c", "copy", str(rotated)], check=True)
    info = probe(rotated)
    assert info.rotation in (90, 270) and (info.width, info.height) == (64, 96)
    [r] = anonymize(rotated, tmp_path / "o.mp4", Options(), weights=tiny_weights)
    assert r.status == "ok", r.error
    assert decode(tmp_path / "o.mp4").shape == (10, 96, 64, 3)


@pytest.mark.parametrize("size", [32, 48])
def test_windows_in_flight_keep_their_own_model_input(size):
    # The decoder runs ahead of the model: a window waiting for its batch must still hold its own
    # frames, at the model's size (no resize) and above it (resized through a reused buffer).
    import torch

    cfg = PPARConfig(frames=4, frame_stride=2, image_size=32, tubelet=(2, 8, 8))
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, 256, (cfg.clip_span, size, size, 3), dtype=np.uint8) for _ in range(4)]
    model_input = ModelInput(cfg)
    held = [model_input(frames) for frames in Ahead(c.copy() for c in chunks)]
    for chunk, small in zip(chunks, held, strict=True):
        assert torch.equal(small, resize_frames(torch.from_numpy(sample_clip(chunk, cfg)), cfg.image_size))


def test_score_map_names_no_synthetic_action_on_real_video(tmp_path, tiny_weights):
    src = make_clip(tmp_path / "in.mp4", 96, 64, 20, audio=False)
    w = load_weights(tiny_weights)
    for label_set, named in (("synth", False), ("pseudo-real-train", True)):
        path = tmp_path / f"{label_set}.safetensors"
        save_weights(w.model, path, {"label_set": label_set})
        out = tmp_path / f"{label_set}.mp4"
        [r] = anonymize(src, out, Options(guard="none"), weights=path)
        meta = json.loads(out.with_suffix(".json").read_text())
        assert meta["model"]["action_labels"] == {"classes": 3, "label_set": label_set, "named": named}
        assert (meta["windows"][0]["actions"] is not None) == named


def test_gil_handed_on_quickly_while_anonymizing(tmp_path, tiny_weights, monkeypatch):
    """Python's switch interval is 0.1 ms while the model scores (each PyTorch operation's wait for
    the GIL beside busy threads), and the caller's comes back afterwards."""
    import sys

    import ppar_cli.pipeline.stream as stream

    seen = []
    real = stream.score_clips
    monkeypatch.setattr(stream, "score_clips", lambda *a, **k: (seen.append(sys.getswitchinterval()), real(*a, **k))[1])
    before = sys.getswitchinterval()
    src = make_clip(tmp_path / "a.mp4", 64, 48, 10)
    [r] = anonymize(src, tmp_path / "o.mp4", Options(guard="none"), weights=tiny_weights)
    assert r.status == "ok" and seen and max(seen) <= 1e-4
    assert sys.getswitchinterval() == before


def test_worker_processes_share_the_model_threads(monkeypatch):
    from ppar_cli.pipeline.runtime import torch_threads

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert [torch_threads(p) for p in (1, 2, 4, 8)] == [7, 3, 1, 1]  # one process leaves half the cores, and one more
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert torch_threads() == torch_threads(2) == 1


def test_a_folder_uses_the_cores_where_a_gpu_runs_the_model(monkeypatch):
    """--workers and --jobs, when not given: a video at once for every core, 4 to a process (or
    --jobs), where the model may run on a GPU (the fastest layout measured on an H100 machine); one
    process of 2 videos elsewhere; fewer where memory would not hold a 4K video for each; what the user gives is kept,
    and torchrun's processes on a machine share it."""
    from ppar_cli.pipeline import runtime

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(runtime, "memory", lambda: 128 * 2**30)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(runtime, "gpu_may_be_here", lambda: True)
    assert runtime.folder_layout("auto", None, None) == runtime.folder_layout("cuda", None, None) == (4, 4)
    assert runtime.folder_layout("cpu", None, None) == (1, 2)
    assert runtime.folder_layout("auto", 2, None) == (2, 4) and runtime.folder_layout("auto", None, 2) == (8, 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert runtime.folder_layout("cuda", None, None) == (2, 4)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    for gib, layout in ((32, (2, 4)), (8, (1, 2)), (4, (1, 1))):  # a video at once per 3 GiB
        monkeypatch.setattr(runtime, "memory", lambda: gib * 2**30)
        assert runtime.folder_layout("cuda", None, None) == layout, gib
    assert runtime.folder_layout("cpu", None, None) == (1, 1) and runtime.folder_layout("cpu", 3, 2) == (3, 2)
    monkeypatch.setattr(runtime, "memory", lambda: 128 * 2**30)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert runtime.folder_layout("cuda", None, None) == (1, 4)
    monkeypatch.setattr(runtime, "gpu_may_be_here", lambda: False)
    assert runtime.folder_layout("auto", None, None) == (1, 2) and runtime.folder_layout("cuda", None, None) == (1, 4)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(512)))
    monkeypatch.setattr(runtime, "memory", lambda: 2**40)
    assert runtime.folder_layout("cuda", None, None) == (64, 4)  # the most --workers allows


def _machine(monkeypatch, files: dict[str, str]) -> dict[str, str]:
    """A machine of 16 GiB whose system files are ``files`` (path: text), and no others; returned,
    so that a test can change them."""
    from ppar_cli.pipeline import runtime

    def read_text(self, *a, **k):
        if str(self) not in files:
            raise FileNotFoundError(self)
        return files[str(self)] + "\n"

    monkeypatch.setattr(runtime.Path, "read_text", read_text)
    monkeypatch.setattr("os.sysconf", lambda name: {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 2**22}[name])
    return files


def test_memory_is_the_containers_where_it_is_less(monkeypatch):
    """A cgroup's memory limit (cgroup v2 or v1) counts where it is below the machine's memory."""
    from ppar_cli.pipeline import runtime

    files = _machine(monkeypatch, {"/sys/fs/cgroup/memory.max": "max", "/sys/fs/cgroup/memory/memory.limit_in_bytes": str(6 * 2**30)})
    assert runtime.memory() == 6 * 2**30
    files["/sys/fs/cgroup/memory/memory.limit_in_bytes"] = str(2**63 - 4096)  # no limit
    assert runtime.memory() == 16 * 2**30


def test_memory_free_is_what_the_machine_or_the_container_leaves(monkeypatch):
    """The machine's available memory, or a cgroup's limit less its use, where its inactive file
    cache (which the kernel reclaims first) does not count as used: a container that has read many
    videos is not full."""
    from ppar_cli.pipeline import runtime

    files = _machine(monkeypatch, {"/proc/meminfo": "MemTotal: 16777216 kB\nMemAvailable: 10485760 kB", "/sys/fs/cgroup/memory.max": "max"})
    assert runtime.memory_free() == 10 * 2**30  # no limit: the machine's available memory
    files.update({"/sys/fs/cgroup/memory.max": str(8 * 2**30), "/sys/fs/cgroup/memory.current": str(7 * 2**30),
                  "/sys/fs/cgroup/memory.stat": f"anon {2**30}\ninactive_file {3 * 2**30}\nactive_file {2**30}"})
    assert runtime.memory_free() == 4 * 2**30  # 8 - 7 + 3 (the inactive cache)
    files["/sys/fs/cgroup/memory.current"] = str(9 * 2**30)  # over its limit for a moment
    files["/sys/fs/cgroup/memory.stat"] = "inactive_file 0"
    assert runtime.memory_free() == 0

def test_the_program_takes_its_layout_from_the_machine_and_the_api_stays_in_one_process(tmp_path, monkeypatch):
    """`ppar anonymize` without --workers/--jobs runs a folder in the machine's layout (a process
    for every 4 cores where a GPU may run the model); the Python API starts worker processes only
    when asked (spawning imports the caller's main module again), with the machine's --jobs."""
    from typer.testing import CliRunner

    import ppar_cli.pipeline.api as api
    import ppar_cli.pipeline.workers as workers
    from ppar_cli import cli
    from ppar_cli.pipeline import runtime

    (tmp_path / "in").mkdir()
    for name in "abcde":
        make_clip(tmp_path / "in" / f"{name}.mp4", 64, 48, 4, audio=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(runtime, "memory", lambda: 64 * 2**30)
    monkeypatch.setattr(runtime, "gpu_may_be_here", lambda: True)
    seen = []
    monkeypatch.setattr(workers, "run_workers", lambda jobs, opts, weights, reporter: seen.append((opts.workers, opts.jobs))
                        or [FileResult(j.src, j.dst, "ok") for j in jobs])
    monkeypatch.setattr(api, "anonymize_jobs", lambda jobs, opts, *a: seen.append(("one process", opts.jobs))
                        or [FileResult(j.src, j.dst, "ok") for j in jobs])
    given = Options()
    anonymize(tmp_path / "in", tmp_path / "out", given)
    anonymize(tmp_path / "in", tmp_path / "out", Options(workers=2))
    anonymize(tmp_path / "in", tmp_path / "out", Options(workers=2, jobs=3))
    assert seen == [("one process", 4), (2, 4), (2, 3)]
    assert given.workers is None and given.jobs is None  # the caller's options are left as they were
    seen.clear()
    r = CliRunner().invoke(cli.app, ["anonymize", str(tmp_path / "in"), str(tmp_path / "out2"), "-q"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli.app, ["anonymize", str(tmp_path / "in"), str(tmp_path / "out3"), "-q", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert seen == [(2, 4), ("one process", 4)]

def test_a_rerun_skips_finished_videos_before_any_model_or_worker(tmp_path, tiny_weights, monkeypatch):
    """Finished files are skipped before the model loads or a worker starts, each with its manifest
    line; weights that are not ppar's still fail as loading them would."""
    import ppar_cli.pipeline.api as api
    import ppar_cli.pipeline.workers as workers
    from ppar_cli.core.config import WeightsError, sha256_of

    (tmp_path / "in").mkdir()
    for name in "ab":
        make_clip(tmp_path / "in" / f"{name}.mp4", 64, 48, 4, audio=False)
    anonymize(tmp_path / "in", tmp_path / "out", Options(guard="none"), weights=tiny_weights)

    def never(*a, **k):
        raise AssertionError("a finished folder needs no model and no worker")

    monkeypatch.setattr(api, "anonymize_jobs", never)
    monkeypatch.setattr(workers, "run_workers", never)
    again = anonymize(tmp_path / "in", tmp_path / "out", Options(guard="none", workers=2), weights=tiny_weights)
    assert [r.status for r in again] == ["skipped", "skipped"]
    lines = [json.loads(x) for x in (tmp_path / "out" / "ppar-manifest.jsonl").read_text().splitlines()]
    assert [m["status"] for m in lines] == ["ok", "ok", "skipped", "skipped"]
    assert {m["weights_sha256"] for m in lines} == {sha256_of(tiny_weights)}
    with pytest.raises(WeightsError, match="nothere.safetensors"):
        anonymize(tmp_path / "in", tmp_path / "out", Options(guard="none"), weights=tmp_path / "nothere.safetensors")


def test_a_rerun_with_other_settings_says_which_outputs_it_leaves_as_they_were(tmp_path, tiny_weights):
    """A rerun skips the outputs that exist. One with more protection than the run before (the
    guard on, less kept) said `skipped` and nothing more, leaving the less protected videos in place;
    each such output now has a note naming how it was made, from the manifest."""
    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "a.mp4", 64, 48, 12, audio=False)
    out = tmp_path / "out"
    first = Options(guard="none", keep_ratio=0.8, fill="blur")
    [r] = anonymize(src, out, first, weights=tiny_weights)
    assert r.status == "ok" and r.notes == []
    [r] = anonymize(src, out, Options(keep_ratio=0.5, lambda_priv=2.0), weights=tiny_weights)
    assert r.status == "skipped" and r.notes == [
        "made by an earlier run with --keep 0.8, --lambda 0.5, --fill blur, --guard none "  # 0.5: the weights' own
        "(this run: --keep 0.5, --lambda 2.0, --fill black, --guard on); --overwrite redoes it"], r.notes
    [r] = anonymize(src, out, replace(first, guard_config=GuardConfig(threshold=0.3), lambda_priv=0.5), weights=tiny_weights)
    assert r.status == "skipped" and r.notes == []  # as it was made (the guard's settings mean nothing without it)
    lines = [json.loads(x) for x in (out / "ppar-manifest.jsonl").read_text().splitlines()]
    assert [(m["status"], m["keep"], m["guard"]) for m in lines] == [
        ("ok", 0.8, "none"), ("skipped", 0.5, {"threshold": 0.05, "stride": 8, "max_side": 640}), ("skipped", 0.8, "none")]
    assert [m["lambda_priv"] for m in lines] == [None, 2.0, 0.5]  # as the runs gave it
    anonymize(src, out, Options(keep_ratio=0.5, overwrite=True), weights=tiny_weights)  # redone as now asked
    [r] = anonymize(src, out, Options(keep_ratio=0.5), weights=tiny_weights)
    assert r.status == "skipped" and r.notes == []


def test_a_folder_without_videos_says_so(tmp_path, tiny_weights):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("no video")
    with pytest.warns(UserWarning, match=r"in: no video files here \(ppar looks for .*\.mp4"):
        assert anonymize(tmp_path / "in", tmp_path / "out", Options(guard="none"), weights=tiny_weights) == []
    assert not (tmp_path / "out").exists()  # nor an empty manifest in a folder made for it


def test_videos_start_largest_first(tmp_path):
    """A folder's videos start with the largest files (ties and unreadable files in the folder's
    order), so that a run does not end on one long video alone."""
    from ppar_cli.pipeline.jobs import Job, largest_first

    sizes = {"a": 10, "b": 300, "c": 10, "d": 50}
    for name, n in sizes.items():
        (tmp_path / name).write_bytes(b"x" * n)
    jobs = [Job(tmp_path / name, tmp_path / "out" / name) for name in ("gone", *sizes)]
    assert [jobs[i].src.name for i in largest_first(jobs)] == ["b", "d", "a", "c", "gone"]


def test_a_process_does_the_videos_it_is_handed_in_that_order(tmp_path, tiny_weights):
    """anonymize_jobs does the videos ``take`` hands it, one after another (how a worker process
    gets the next video from the parent, whichever worker is free), and returns them in the folder's order."""
    from ppar_cli.pipeline.api import anonymize_jobs
    from ppar_cli.pipeline.jobs import plan_jobs
    from ppar_cli.pipeline.options import Silent

    (tmp_path / "in").mkdir()
    for name in "abcd":
        make_clip(tmp_path / "in" / f"{name}.mp4", 64, 48, 8, audio=False)
    jobs = plan_jobs(tmp_path / "in", tmp_path / "out")
    for at_once in (1, 2, None):  # None: the machine's number
        handed, started = iter([3, 0, None]), []

        class Seen(Silent):
            def start_file(self, src, total):
                started.append(src.name)

        out = [(r.src.name, r.status) for r in anonymize_jobs(jobs, Options(guard="none", jobs=at_once, overwrite=True),
                                                               tiny_weights, Seen(), take=lambda: next(handed, None))]
        assert out == [("a.mp4", "ok"), ("d.mp4", "ok")] and sorted(started) == ["a.mp4", "d.mp4"]
        assert at_once != 1 or started == ["d.mp4", "a.mp4"]


def test_videos_at_once_share_the_cores_among_their_decoders(tmp_path, tiny_weights, monkeypatch):
    """Each of several videos at once decodes on its share of the cores, the processes of
    --workers counted, as many places as there are videos at most (runtime.decoder_threads); a
    video that is more of the folder than that share, its part of the cores; one video at a time,
    on FFmpeg's choice (about a thread per core, which behind each of 2 videos on 2 cores slowed
    PyTorch's import about 1.6 times and their decoding by a tenth)."""
    from helpers import decoder_threads_seen

    from ppar_cli.pipeline import runtime
    from ppar_cli.pipeline.api import anonymize_jobs
    from ppar_cli.pipeline.jobs import plan_jobs

    (tmp_path / "in").mkdir()
    for name in "abc":  # with 2 at once, the third starts later, in the thread of whichever ends first
        make_clip(tmp_path / "in" / f"{name}.mp4", 64, 48, 8, audio=False)
    (tmp_path / "long").mkdir()
    for name, frames in (("a", 8), ("b", 96), ("c", 8)):  # b: about four fifths of the folder's bytes
        make_clip(tmp_path / "long" / f"{name}.mp4", 64, 48, frames, audio=False)
    counts = decoder_threads_seen(monkeypatch)
    monkeypatch.setattr(runtime, "cores", lambda: 16)
    # (videos at once in a process, processes, threads each): 3 videos in 4 places have 5 threads each
    for at_once, processes, threads in ((2, 1, 8), (2, 2, 5), (1, 1, 0)):
        for folder in ("in", "long"):
            counts.clear()
            results = anonymize_jobs(plan_jobs(tmp_path / folder, tmp_path / "out"),
                                     Options(guard="none", jobs=at_once, overwrite=True), tiny_weights, processes=processes)
            assert [r.status for r in results] == ["ok"] * 3
            if folder == "in" or threads == 0:
                assert counts == [threads] * 3
            else:  # the largest, b, on more than the others' share (their decoders start in any order)
                assert sorted(counts)[:2] == [threads] * 2 and max(counts) > threads, counts


def test_a_decoder_takes_the_cores_its_part_of_the_folder_asks_for(tmp_path, monkeypatch):
    """A video's part of the folder's bytes (jobs.byte_shares) gives its decoder that part of the
    cores where it is more than the even share, up to FFmpeg's 16, so that a long video, left alone
    at the folder's end, does not decode on one thread while the other cores wait; the cores are
    this process's share where torchrun started several on the machine."""
    from ppar_cli.pipeline import runtime
    from ppar_cli.pipeline.jobs import Job, byte_shares

    monkeypatch.setattr(runtime, "cores", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert [runtime.decoder_threads(16, share) for share in (0.0, 1 / 16, 0.1, 0.44, 1.0)] == [1, 1, 2, 7, 16]
    assert [runtime.decoder_threads(3, share) for share in (0.2, 0.5)] == [5, 8]
    assert runtime.decoder_threads(1, 0.9) == 0  # one video: FFmpeg's choice
    monkeypatch.setattr(runtime, "cores", lambda: 64)
    assert runtime.decoder_threads(64, 1.0) == 16
    monkeypatch.setattr(runtime, "cores", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun's 2 processes on this machine: 8 cores each
    assert (runtime.decoder_threads(4), runtime.decoder_threads(4, 1.0), runtime.torch_threads()) == (2, 8, 3)
    for name, n in (("a", 30), ("b", 10)):
        (tmp_path / name).write_bytes(b"x" * n)
    assert byte_shares([Job(tmp_path / name, tmp_path / "o") for name in ("a", "gone", "b")]) == [0.75, 0.0, 0.25]
    assert byte_shares([Job(tmp_path / "gone", tmp_path / "o")]) == [0.0]


def test_model_threads_leave_cores_to_the_other_stages_and_are_restored(tmp_path, tiny_weights, monkeypatch):
    """On 2 cores the model runs on one PyTorch thread (the guard, decoder and encoder have the
    rest); the caller's setting is back afterwards; OMP_NUM_THREADS, when set, is left to decide."""
    import torch

    import ppar_cli.pipeline.stream as stream

    seen = []
    real = stream.score_clips
    monkeypatch.setattr(stream, "score_clips", lambda *a, **k: (seen.append(torch.get_num_threads()), real(*a, **k))[1])
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    src = make_clip(tmp_path / "a.mp4", 64, 48, 10)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        [r] = anonymize(src, tmp_path / "o.mp4", Options(guard="none"), weights=tiny_weights)
        assert r.status == "ok" and seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
        seen.clear()
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        [r] = anonymize(src, tmp_path / "o2.mp4", Options(guard="none"), weights=tiny_weights)
        assert r.status == "ok" and set(seen) == {2}
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("gpu_may_be_here,guard", [(False, "none"), (True, "none"), (False, "auto"), (True, "auto")])
def test_first_videos_start_decoding_before_pytorch_loads(tmp_path, tiny_weights, gpu_may_be_here, guard):
    """The fronts (decoder and face guard) of the videos a process begins with (--jobs 2 here)
    start before PyTorch is imported, so they work while PyTorch loads (and CUDA starts), with the
    GIL handed on quickly; with the guard where a GPU may be too, its detector coming later, and
    every window is still searched. In a fresh process, since this one has PyTorch."""
    import sys

    (tmp_path / "in").mkdir()
    for name in "abc":
        make_clip(tmp_path / "in" / f"{name}.mp4", 64, 48, 10, audio=False)
    code = (
        "import sys\n"
        "import ppar_cli.pipeline.api as api\n"
        "import ppar_cli.pipeline.front as front\n"
        f"api.gpu_may_be_here = lambda: {gpu_may_be_here}\n"
        "seen = []\n"
        "init = front.Front.__init__\n"
        "front.Front.__init__ = lambda self, *a, **k: (seen.append(('torch' in sys.modules, sys.getswitchinterval() <= 1e-4)),"
        " init(self, *a, **k))[1]\n"
        "from ppar_cli import Options, anonymize\n"
        f"rs = anonymize({str(tmp_path / 'in')!r}, {str(tmp_path / 'out')!r}, Options(guard={guard!r}, jobs=2), weights={str(tiny_weights)!r})\n"
        "assert [r.status for r in rs] == ['ok'] * 3, [r.error for r in rs]\n"
        "print(seen[:2])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str([(False, True)] * 2)
    for name in "abc":  # the guard searched every window, the first videos' too
        windows = json.loads((tmp_path / "out" / f"{name}.json").read_text())["windows"]
        assert all(("guard" in w) == (guard != "none") for w in windows)


def test_a_late_detector_lets_the_front_decode_ahead_and_fails_closed(tmp_path, monkeypatch):
    """A front whose detector is still being made (on a GPU, after PyTorch and CUDA) decodes up to
    its start buffer meanwhile, then searches those windows once it arrives; if making it fails,
    the front raises instead of handing on unsearched windows."""
    import time

    import ppar_cli.pipeline.front as front_mod
    from ppar_cli.pipeline.front import Front, LateDetector

    clip = tmp_path / "a.mp4"
    make_clip(clip, 64, 48, 80, audio=False)  # 5 windows of 16 frames with the config below
    cfg = PPARConfig(frames=4, image_size=32, tubelet=(2, 8, 8), dim=32, depth=2, heads=2, prune_blocks=(1, 2))
    monkeypatch.setattr(front_mod, "START_BYTES", 3 * cfg.clip_span * 64 * 48 * 3)  # three windows ahead
    searched, decoded = [], []
    chunks = FrameReader.chunks
    monkeypatch.setattr(FrameReader, "chunks", lambda self, n: (decoded.append(len(c)) or c for c in chunks(self, n)))

    def detector(frame):
        searched.append(len(decoded))
        return np.zeros((0, 5), np.float32)

    late = LateDetector()
    f = Front(clip, cfg, late)
    deadline = time.monotonic() + 10
    while len(decoded) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the decoder stops at the start buffer, and no search waits on the way
    assert len(decoded) == 3 and not searched
    late.set(detector)
    windows = list(f.windows)
    assert len(windows) == 5 and all(forced is not None and not forced.any() for _, forced in windows)
    assert searched and searched[0] == 3 and f.guard is not None  # the first search came after 3 decoded

    late = LateDetector()
    f = Front(clip, cfg, late)
    late.fail(RuntimeError("no detector"))
    with pytest.raises(RuntimeError, match="no detector"):
        list(f.windows)
    f.close()


def test_next_video_starts_decoding_while_the_encoder_finishes(tmp_path, tiny_weights, monkeypatch):
    """In a folder of one video at a time (--jobs 1), each next video's front starts once the video
    before it is with the encoder, before that one's flush and commit; a video that fails still
    lets the batch go on."""
    import ppar_cli.pipeline.api as api
    from ppar_cli.media.encode import VideoWriter

    (tmp_path / "in").mkdir()
    for name in ("a", "b", "c"):
        make_clip(tmp_path / "in" / f"{name}.mp4", 64, 48, 10, audio=False)
    (tmp_path / "in" / "b.mp4").write_bytes(b"not a video")
    events = []
    init, finish = api.Front.__init__, VideoWriter.finish

    def front(self, src, *a, **k):
        events.append(f"front {src.stem}")
        init(self, src, *a, **k)

    def finished(self, *a, **k):
        events.append(f"commit {self.dest.stem}")
        return finish(self, *a, **k)

    monkeypatch.setattr(api.Front, "__init__", front)
    monkeypatch.setattr(VideoWriter, "finish", finished)
    results = anonymize(tmp_path / "in", tmp_path / "out", Options(guard="none", jobs=1), weights=tiny_weights)
    assert [r.status for r in results] == ["ok", "failed", "ok"]  # in the folder's order
    # the largest files first: b, damaged (11 bytes), comes last, and its front is tried again
    assert events == ["front a", "front c", "commit a", "front b", "commit c", "front b"]


def test_videos_at_once_give_what_one_at_a_time_gives(tmp_path, tiny_weights):
    """--jobs: several videos at once, the same outputs and results (in the folder's order), a
    damaged one failing alone, every video in the manifest."""
    (tmp_path / "in").mkdir()
    for name, frames in (("a", 40), ("b", 10), ("c", 70), ("d", 25)):
        make_clip(tmp_path / "in" / f"{name}.mp4", 64, 48, frames)
    (tmp_path / "in" / "b.mp4").write_bytes(b"not a video")
    runs = {n: anonymize(tmp_path / "in", tmp_path / f"out{n}", Options(guard="none", jobs=n), weights=tiny_weights)
            for n in (1, 3)}
    assert [(r.src.name, r.status, r.frames) for r in runs[3]] == [(r.src.name, r.status, r.frames) for r in runs[1]]
    assert [r.status for r in runs[3]] == ["ok", "failed", "ok", "ok"]
    for name in ("a", "c", "d"):
        maps = [json.loads((tmp_path / f"out{n}" / f"{name}.json").read_text())["windows"] for n in (1, 3)]
        assert [w["keep"] for w in maps[0]] == [w["keep"] for w in maps[1]]
    lines = (tmp_path / "out3" / "ppar-manifest.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["src"] for line in lines) == sorted(str(r.src) for r in runs[3])


def test_ctrl_c_stops_every_video_running_at_once(tmp_path, tiny_weights):
    """Ctrl-C while several videos run: all stop at their next window, none is left half-written."""
    from ppar_cli.pipeline.options import Silent

    (tmp_path / "in").mkdir()
    for name in "abcd":
        make_clip(tmp_path / "in" / f"{name}.mp4", 64, 48, 400, audio=False)

    class Interrupt(Silent):
        def advance(self, src, frames):
            if src.name == "b.mp4":
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        anonymize(tmp_path / "in", tmp_path / "out", Options(guard="none", jobs=2), weights=tiny_weights, reporter=Interrupt())
    assert not stray(tmp_path / "out")
    assert not [p.name for p in (tmp_path / "out").glob("*.mp4")]  # a stopped with b; c and d never started


def test_front_runs_further_ahead_only_until_the_model_starts():
    """While PyTorch loads, the front may fill a deeper queue; once the model takes a window, two."""
    import threading
    import time

    made = []
    more = threading.Event()

    def items():
        for i in range(20):
            made.append(i)
            more.set()
            yield i

    def settle():
        while more.wait(0.2):
            more.clear()

    ahead = Ahead(items(), depth=2, start_depth=5)
    settle()
    assert len(made) == 6  # the start-up allowance waiting, and the next one made, no more
    assert next(ahead) == 0
    settle()
    assert len(made) == 6  # 5 waiting: above the running depth of 2
    assert [next(ahead) for _ in range(3)] == [1, 2, 3]
    settle()
    assert len(made) == 7  # back to 2 waiting (4 and 5) and one made
    ahead.close()
    time.sleep(0.05)
    assert len(made) == 7


def test_scores_are_exact_fp32_on_every_device(tiny_weights, monkeypatch):
    """The kept set is a top-k over near-ties: scoring runs without autocast, and on a GPU without
    TF32 (which PyTorch allows in cuDNN by default), so a GPU keeps what the CPU keeps; the user's
    flags come back."""
    import torch

    from ppar_cli.core.scoring import exact_fp32, score_clips

    model = load_weights(tiny_weights).model
    seen = []
    forward = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, *a, **k: (
        seen.append((torch.is_autocast_enabled("cuda"), torch.is_autocast_enabled("cpu"))), forward(self, *a, **k))[1])
    cfg = model.cfg
    clips = torch.randint(0, 255, (2, cfg.frames, 40, 40, 3), dtype=torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast does not reach the model
        out = score_clips(model, clips, 0.5, torch.device("cpu"))
    assert seen == [(False, False)] and out.scores.dtype == torch.float32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with exact_fp32():  # what score_clips wraps a GPU's calls in
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


def test_gpu_passes_replayed_from_graphs_keep_what_eager_passes_keep(tiny_weights, monkeypatch):
    """On a GPU each pass is replayed from a CUDA graph, the batch padded to a power of two so that
    few graphs serve every batch size (scoring.graphed). Run here on the CPU through a stand-in
    for the capture: every batch size keeps the tubelets the eager pass keeps, one graph per
    padded size, each caller's outputs its own (a later replay does not overwrite them)."""
    import torch

    from ppar_cli.core.scoring import score_clips
    from helpers import graphs_on_the_cpu

    model = load_weights(tiny_weights).model
    cpu = torch.device("cpu")
    clips = torch.randint(0, 255, (9, model.cfg.frames, 40, 40, 3), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(3))
    eager = [score_clips(model, clips[:b], 0.5, cpu) for b in range(1, 10)]
    captured = graphs_on_the_cpu(monkeypatch)
    replayed = [score_clips(model, clips[:b], 0.5, cpu) for b in range(1, 10)]
    assert [s[0] for s in captured] == [1, 2, 4, 8, 16]
    for e, r in zip(eager, replayed):
        assert all(a.shape == b.shape for a, b in zip(e, r))
        assert torch.equal(e.kept, r.kept) and torch.allclose(e.scores, r.scores, atol=1e-5)
    score_clips(model, clips.flip(0)[:4], 0.5, cpu)  # other clips through the graph that replayed[3] came from
    assert torch.allclose(replayed[3].scores, eager[3].scores, atol=1e-5)
    score_clips(model, clips[:2], 0.7, cpu)  # another keep ratio is another graph
    assert len(captured) == 6
    captured = graphs_on_the_cpu(monkeypatch)  # a video's full batches, then its last, shorter one:
    score_clips(model, clips, 0.5, cpu)
    last = score_clips(model, clips[:6], 0.5, cpu)  # replayed from the graph of 16, not captured at 8
    assert [s[0] for s in captured] == [16]
    assert torch.equal(last.kept, eager[5].kept) and torch.allclose(last.scores, eager[5].scores, atol=1e-5)


def test_hysteresis_passes_replayed_from_graphs_keep_what_eager_passes_keep(tiny_weights, monkeypatch):
    """With --hysteresis each window is a pass of its own, leaning on the previous window's kept
    tubelets: on a GPU two graphs (the first window, then the others with that bonus as a second
    input) replay them all."""
    import torch

    from ppar_cli.core.scoring import score_clips
    from helpers import graphs_on_the_cpu

    model = load_weights(tiny_weights).model
    cpu = torch.device("cpu")
    clips = torch.randint(0, 255, (6, model.cfg.frames, 40, 40, 3), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(4))
    eager = [score_clips(model, clips[:3], 0.5, cpu, hysteresis=h) for h in (0.0, 2.0)]
    eager.append(score_clips(model, clips[3:], 0.5, cpu, hysteresis=2.0, prev_kept=eager[1].kept[-1]))
    assert not torch.equal(eager[0].kept, eager[1].kept)  # the bonus changes what is kept
    captured = graphs_on_the_cpu(monkeypatch)
    first = score_clips(model, clips[:3], 0.5, cpu, hysteresis=2.0)
    rest = score_clips(model, clips[3:], 0.5, cpu, hysteresis=2.0, prev_kept=first.kept[-1])
    assert torch.equal(first.kept, eager[1].kept) and torch.equal(rest.kept, eager[2].kept)
    assert len(captured) == 2 and all(shape[0] == 1 for shape in captured)  # one window a pass


def test_a_graph_that_cannot_be_captured_or_differs_leaves_the_passes_eager(tiny_weights, monkeypatch):
    """A capture that fails (an operation or a PyTorch build that cannot be captured) or a replay
    that differs from the eager pass on the same input: a warning, the eager pass's outputs, and no
    more tries for that graph."""
    import torch

    from ppar_cli.core import scoring
    from helpers import graphs_on_the_cpu

    model = load_weights(tiny_weights).model
    cpu = torch.device("cpu")
    clips = torch.randint(0, 255, (4, model.cfg.frames, 40, 40, 3), dtype=torch.uint8)
    eager = scoring.score_clips(model, clips, 0.5, cpu)
    captured = graphs_on_the_cpu(monkeypatch, replay_offset=1e-3)
    with pytest.warns(UserWarning, match="gave other outputs"):
        first = scoring.score_clips(model, clips, 0.5, cpu)
    again = scoring.score_clips(model, clips, 0.5, cpu)  # eager, with no new capture
    for out in (first, again):
        assert torch.equal(out.scores, eager.scores) and torch.equal(out.kept, eager.kept)
    assert len(captured) == 1

    def cannot(run, inputs, pool):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(scoring, "capture", cannot)
    with pytest.warns(UserWarning, match="could not be captured.*operation not permitted"):
        out = scoring.score_clips(model, clips[:1], 0.5, cpu)  # a batch of 1: another graph
    assert torch.equal(out.kept, eager.kept[:1])


def _held_gpu_start(monkeypatch, fail: BaseException | None = None):
    """From here on a GpuStart's first pass on its device waits for the event returned (then raises
    ``fail``, if given)."""
    import threading

    from ppar_cli.pipeline import gpu_start

    release, real = threading.Event(), gpu_start.score_clips

    def first_pass(*args, **kwargs):
        if threading.current_thread().name == "ppar-gpu-start":  # not the window timed on the CPU
            assert release.wait(10)
            if fail is not None:
                raise fail
        return real(*args, **kwargs)
    monkeypatch.setattr(gpu_start, "score_clips", first_pass)
    return release


def test_a_gpus_first_windows_are_scored_on_the_cpu_while_it_starts(tmp_path, tiny_weights, monkeypatch):
    """On a GPU the model moves there and makes its first pass (the CUDA graph's capture) in a
    thread (gpu_start.GpuStart), while a copy on the CPU scores the video's first windows, one at
    a time; the windows after that start go to the device. Here the device is the CPU and the start
    is held until the copy has scored a window: the copy scored the first, the started model the
    rest, and the video keeps the tubelets that a run with the model alone keeps."""
    import threading

    import torch

    from ppar_cli.pipeline import gpu_start
    from ppar_cli.pipeline.video import anonymize_file

    src = make_clip(tmp_path / "a.mp4", 64, 48, 128, audio=False)  # 8 windows: 2 batches of 4
    opts, cpu = Options(guard="none", batch_size=4), torch.device("cpu")
    alone = anonymize_file(src, tmp_path / "alone.mp4", load_weights(tiny_weights), opts, cpu, scores_path=tmp_path / "alone.json")
    release = _held_gpu_start(monkeypatch)
    monkeypatch.setattr(gpu_start, "CPU_WINDOW_SECONDS", 60.0)  # however slow this machine is today
    loaded = load_weights(tiny_weights)
    passes, forward = [], type(loaded.model).forward

    def spy(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        passes.append(("started" if self is loaded.model else "copy", threading.current_thread().name, len(args[0])))
        if self is not loaded.model and passes[-1][1] == "MainThread":  # the video's first batch is done:
            release.set()  # let the start go, and wait for it
            with start._changed:
                assert start._changed.wait_for(lambda: start._ready, 10)
        return out
    monkeypatch.setattr(type(loaded.model), "forward", spy)
    start = gpu_start.GpuStart(loaded.model, cpu, opts)
    r = anonymize_file(src, tmp_path / "o.mp4", loaded, opts, cpu, scores_path=tmp_path / "o.json", gpu=start)
    assert alone.status == r.status == "ok", r.error
    # one window timed on the CPU; the video's first window there, the rest of its batch and the
    # next batch on the started model (the start's own pass: the batch of 4 it captures on a GPU)
    assert passes == [("copy", "ppar-cpu-timing", 1), ("copy", "MainThread", 1), ("started", "ppar-gpu-start", 4),
                      ("started", "MainThread", 3), ("started", "MainThread", 4)]
    kept = [[w["keep"] for w in json.loads((tmp_path / f"{n}.json").read_text())["windows"]] for n in ("alone", "o")]
    assert len(kept[0]) == 8 and kept[0] == kept[1]


@pytest.mark.parametrize("hysteresis,shapes", [(0.0, [4]), (2.0, [1, 1])])
def test_a_gpus_start_captures_the_graphs_its_videos_replay(tmp_path, tiny_weights, monkeypatch, hysteresis, shapes):
    """The start's first pass has the shapes of the videos' batches (--batch-size windows, a shorter
    last batch padded to them; with hysteresis one window alone, then after another), so on a GPU
    it captures the CUDA graphs that the videos then replay, none captured on their way (a stand-in
    capture on the CPU here, as in the tests above)."""
    import torch

    from helpers import graphs_on_the_cpu
    from ppar_cli.pipeline.video import anonymize_file
    from ppar_cli.pipeline.gpu_start import GpuStart

    src = make_clip(tmp_path / "a.mp4", 64, 48, 80, audio=False)  # 5 windows: a batch of 4, then of 1
    opts, cpu = Options(guard="none", hysteresis=hysteresis), torch.device("cpu")
    captured = graphs_on_the_cpu(monkeypatch)
    loaded = load_weights(tiny_weights)
    start = GpuStart(loaded.model, cpu, opts)
    with start._changed:
        assert start._changed.wait_for(lambda: start._ready and start._window_s is not None, 10)
    assert sorted(s[0] for s in captured) == sorted([1] + shapes)  # and the copy's, of the window timed on the CPU
    r = anonymize_file(src, tmp_path / "o.mp4", loaded, opts, cpu, gpu=start)
    assert r.status == "ok", r.error
    assert sorted(s[0] for s in captured) == sorted([1] + shapes)


@pytest.mark.parametrize("limit", ["CPU_SECONDS", "CPU_WINDOW_SECONDS", "the CPU fails"])
def test_a_gpu_is_waited_for_where_the_cpu_is_slow_or_has_scored_long_enough(tiny_weights, monkeypatch, limit):
    """The CPU scores while the GPU starts only within gpu_start.CPU_SECONDS of the start, only if
    a window took it less than CPU_WINDOW_SECONDS (timed once: a large model waits for the GPU),
    and not if it cannot score at all: otherwise the windows wait for the GPU."""
    import threading

    import torch

    from ppar_cli.pipeline import gpu_start

    if limit == "the CPU fails":
        real = gpu_start.score_clips
        monkeypatch.setattr(gpu_start, "score_clips", lambda model, clips, *a, **k: (
            real(model, clips, *a, **k) if threading.current_thread().name == "ppar-gpu-start" else 1 / 0))
    else:
        monkeypatch.setattr(gpu_start, limit, 0.0)
    release = _held_gpu_start(monkeypatch)
    loaded = load_weights(tiny_weights)
    start = gpu_start.GpuStart(loaded.model, torch.device("cpu"), Options(guard="none"))
    got = []
    asking = threading.Thread(target=lambda: got.append(start.now()))
    asking.start()
    asking.join(0.5)
    assert asking.is_alive() and not got  # waiting for the start
    release.set()
    asking.join(10)
    assert got == [(loaded.model, torch.device("cpu"))]


def test_a_gpu_that_cannot_start_fails_the_videos(tmp_path, tiny_weights, monkeypatch):
    """A GPU whose start fails (out of memory, a broken driver) fails the videos with its error and
    writes nothing: the CPU does not carry on alone."""
    import torch

    from ppar_cli.pipeline import gpu_start
    from ppar_cli.pipeline.video import anonymize_file

    src = make_clip(tmp_path / "a.mp4", 64, 48, 32, audio=False)
    opts, cpu = Options(guard="none", batch_size=1), torch.device("cpu")
    _held_gpu_start(monkeypatch, fail=RuntimeError("CUDA error: out of memory")).set()
    loaded = load_weights(tiny_weights)
    start = gpu_start.GpuStart(loaded.model, cpu, opts)
    r = anonymize_file(src, tmp_path / "o.mp4", loaded, opts, cpu, scores_path=tmp_path / "o.json", gpu=start)
    assert r.status == "failed" and "could not start on cpu: RuntimeError: CUDA error: out of memory" in r.error
    assert str(src) in r.error and not stray(tmp_path) and not (tmp_path / "o.mp4").exists()
    assert not (tmp_path / "o.json").exists()


def test_videos_score_at_once_on_the_cpu(tiny_weights, monkeypatch):
    """With --jobs, the videos' model calls overlap on the CPU (each on its own threads): on 2 cores
    a folder of 320x240 clips took a quarter less time than with one call at a time."""
    import threading

    import torch

    from ppar_cli.core.scoring import score_clips

    model = load_weights(tiny_weights).model
    both = threading.Barrier(2, timeout=10)  # passed only when two calls are inside the model together
    forward = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, *a, **k: (both.wait(), forward(self, *a, **k))[1])
    clips = torch.randint(0, 255, (1, model.cfg.frames, 40, 40, 3), dtype=torch.uint8)
    outs = []
    threads = [threading.Thread(target=lambda: outs.append(score_clips(model, clips, 0.5, torch.device("cpu"))))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outs) == 2 and torch.equal(outs[0].kept, outs[1].kept)


def test_a_folder_walk_finds_camera_formats_in_any_case_and_leaves_hidden_names(tmp_path):
    """Camcorders write .MTS and .m2ts (AVCHD), broadcast .mxf, DVDs .vob: a folder of them once held
    "no video files here". Hidden names (macOS's ._NAME companions, dot folders) stay out."""
    from ppar_cli.media.probe import video_files

    for name in ("a.MTS", "b.m2ts", "c.mxf", "d.VOB", "e.ogv", "f.mp4", "._f.mp4", ".cache/g.mp4", "notes.txt",
                 "h.264", "i.h264", "j.hevc"):  # the last: recorders' elementary streams
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in video_files(tmp_path)] == ["a.MTS", "b.m2ts", "c.mxf", "d.VOB", "e.ogv", "f.mp4",
                                                       "h.264", "i.h264", "j.hevc"]
