"""Bad input, interruptions and injected faults: a clear error, a non-zero exit, the input untouched,
no partial or unanonymized output, and the rest of a batch done."""
import json
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import REAL, ffmpeg_exe, make_clip, needs_shared, stray
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from ppar_cli import Options, anonymize
from ppar_cli.cli import app
from ppar_cli.core.weights import WeightsError, load_weights
from ppar_cli.errors import UsageError
from ppar_cli.media.decode import FrameReader
from ppar_cli.media.encode import VideoWriter
from ppar_cli.media.probe import probe


def frames_in(path):
    return sum(len(c) for c in FrameReader(probe(path)).chunks(64))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("r") / "good.mp4", 96, 64, 40)


def _check_failed(r, src, out_dir):
    assert r.status == "failed" and str(src) in r.error and "\n" not in r.error
    assert not r.dst.exists() and not stray(out_dir)


@pytest.mark.parametrize("case", ["empty", "text", "truncated", "corrupt_middle", "audio_only", "directory"])
def test_bad_files_fail_cleanly(tmp_path, clip, tiny_weights, case, capfd):
    """The decoders' own complaints go into the result, not onto the terminal."""
    src = tmp_path / f"-{case} ü.mp4"  # a leading dash, a space and unicode in the name
    data = clip.read_bytes()
    if case == "empty":
        src.write_bytes(b"")
    elif case == "text":
        src.write_text("not a video\n" * 50)
    elif case == "truncated":
        src.write_bytes(data[: len(data) // 2])
    elif case == "corrupt_middle":
        mid = len(data) // 2
        src.write_bytes(data[:mid] + bytes(random.Random(0).randrange(256) for _ in range(4096)) + data[mid + 4096:])
    elif case == "audio_only":
        subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1", str(src)], check=True)
    elif case == "directory":
        src.mkdir()
    before = src.read_bytes() if src.is_file() else None
    out = tmp_path / "out"
    out.mkdir()
    [r] = anonymize(src, out / "o.mp4", Options(), weights=tiny_weights) if case != "directory" else [None]
    if case == "directory":  # a folder without videos: nothing to do, nothing written, and it says so
        with pytest.warns(UserWarning, match="no video files here"):
            assert anonymize(src, out / "o", Options(), weights=tiny_weights) == []
        return
    if r.status == "ok":  # a damaged file may still decode: then every written frame was scored, and it says so
        scores = json.loads((out / "o.json").read_text())
        assert frames_in(out / "o.mp4") == r.frames == sum(w["frames"] for w in scores["windows"])
        assert any("damaged input" in n for n in r.notes), r.notes
    else:
        _check_failed(r, src, out)
    assert (src.read_bytes() if src.is_file() else None) == before
    assert capfd.readouterr().err == ""


def test_ffmpegs_errors_are_told_without_the_hidden_temporary():
    """An error of FFmpeg's muxer named the hidden temporary file ("Invalid argument:
    '.../.out.mp4.vm-21600.2bmh3no5.partial.mp4' returned 22"); its words are enough."""
    import av

    from ppar_cli.errors import reason

    e = av.error.ArgumentError(22, "Invalid argument", "/tmp/.out.mp4.vm-1.x.partial.mp4")
    assert reason(e) == "Invalid argument"
    assert reason(OSError(28, "No space left on device", "/tmp/.o.partial.mp4")) == "No space left on device"
    assert reason(ValueError("first line\nsecond")) == "first line"


def test_a_stream_no_frame_of_which_decodes_says_so(tmp_path):
    """An animated WebP, whose frames FFmpeg's webp decoder rejects: said so ("invalid frame size
    0x0" said nothing a user could act on)."""
    from PIL import Image

    from ppar_cli.media.probe import VideoError

    src = tmp_path / "anim.webp"
    frames = [Image.new("RGB", (32, 24), (i * 40, 0, 0)) for i in range(3)]
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=100)
    try:
        info = probe(src)
    except VideoError as e:
        assert str(e) == f"{src}: no frame of its webp video stream decodes"
    else:  # an FFmpeg that reads animated WebP
        assert (info.width, info.height) == (32, 24)


@pytest.mark.parametrize("w,h,n", [(1, 1, 5), (7, 5, 9), (64, 48, 1)])
def test_tiny_sizes_and_single_frame(tmp_path, tiny_weights, w, h, n):
    src = make_clip(tmp_path / "s.mkv", w, h, n, audio=False, extra=["-c:v", "ffv1"])
    [r] = anonymize(src, tmp_path / "o.mp4", Options(), weights=tiny_weights)
    assert r.status == "ok", r.error
    info = probe(tmp_path / "o.mp4")
    assert (info.width, info.height) == (w, h) and frames_in(tmp_path / "o.mp4") == n


@pytest.mark.slow
def test_huge_resolution_streams(tmp_path, tiny_weights):
    src = make_clip(tmp_path / "4k.mp4", 4096, 2160, 6, audio=False, extra=["-preset", "ultrafast"])
    [r] = anonymize(src, tmp_path / "o.mp4", Options(preset="ultrafast"), weights=tiny_weights)
    assert r.status == "ok" and r.frames == 6


def test_variable_frame_rate_and_two_audio_streams(tmp_path, tiny_weights):
    vfr = tmp_path / "vfr.mkv"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=30", "-f", "lavfi",
                    "-i", "sine=frequency=300", "-f", "lavfi", "-i", "sine=frequency=600",
                    "-vf", "setpts='PTS+0.02*random(0)/TB'", "-fps_mode", "vfr", "-t", "1",
                    "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:a", "libopus", "-shortest", str(vfr)], check=True)
    [r] = anonymize(vfr, tmp_path / "o.mp4", Options(), weights=tiny_weights)
    assert r.status == "ok", r.error
    assert probe(tmp_path / "o.mp4").audio_codecs == ["opus", "opus"]
    assert frames_in(tmp_path / "o.mp4") == r.frames == frames_in(vfr)


def test_read_only_output_folder_fails_the_file(tmp_path, clip, tiny_weights):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; tests/test_trust.py runs this case as an unprivileged user")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        [r] = anonymize(clip, locked / "o.mp4", Options(), weights=tiny_weights)
        assert r.status == "failed" and "o.mp4" in r.error
    finally:
        locked.chmod(0o700)


def test_output_paths(tmp_path, clip, tiny_weights):
    [r] = anonymize(clip, tmp_path / "file" / "o.mp4", Options(guard="none"), weights=tiny_weights)
    assert r.status == "ok"
    with pytest.raises(UsageError, match="o.mp4: a file, not a folder for .*x.mp4"):  # a file where a folder should be
        anonymize(clip, tmp_path / "file" / "o.mp4" / "x.mp4", Options(guard="none"), weights=tiny_weights)
    os.mkfifo(tmp_path / "pipe.mp4")  # was taken for a folder ("input is a folder, so the output must be a folder")
    with pytest.raises(UsageError, match="pipe.mp4: not a file or folder"):
        anonymize(tmp_path / "pipe.mp4", tmp_path / "p.mp4", Options(guard="none"), weights=tiny_weights)
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.mp4").write_bytes(clip.read_bytes())
    with pytest.raises(UsageError):  # folder in, file out
        anonymize(src, clip, Options(), weights=tiny_weights)
    with pytest.raises(UsageError, match="not a video file name"):  # folder in, a video name out
        anonymize(src, tmp_path / "o.mp4", Options(), weights=tiny_weights)
    assert not (tmp_path / "o.mp4").exists()
    results = anonymize(src, src / "anon", Options(), weights=tiny_weights)  # OUT inside IN: never reads its own outputs
    assert [r.status for r in results] == ["ok"]
    again = anonymize(src, src / "anon", Options(), weights=tiny_weights)
    assert [(r.src.name, r.status) for r in again] == [("a.mp4", "skipped")]


def test_device_cuda_without_gpu(clip, tmp_path, tiny_weights):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UsageError, match="device cuda: no CUDA"):
        anonymize(clip, tmp_path / "o.mp4", Options(device="cuda"), weights=tiny_weights)


def test_cuda_device_is_the_local_rank_th_gpu(monkeypatch):
    """torchrun's ranks and --workers' worker k (which sets LOCAL_RANK to k) spread over the GPUs."""
    from ppar_cli.pipeline.runtime import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for rank, gpu in (("0", 0), ("1", 1), ("3", 1)):
        monkeypatch.setenv("LOCAL_RANK", rank)
        assert resolve_device("cuda") == torch.device("cuda", gpu)
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device("cuda") == torch.device("cuda", 0)


@pytest.mark.parametrize("damage", ["not_safetensors", "truncated", "missing_tensor", "wrong_shape", "no_config", "absent", "folder"])
def test_bad_weights_refused(tmp_path, tiny_weights, damage):
    bad = tmp_path / "w.safetensors"
    data = tiny_weights.read_bytes()
    meta = load_weights(tiny_weights)
    tensors = load_file(str(tiny_weights))
    header = {"config": meta.model.cfg.to_json(), "provenance": "{}"}
    if damage == "not_safetensors":
        bad.write_bytes(b"PK\x03\x04" + data[:100])
    elif damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "missing_tensor":
        tensors.pop(next(iter(tensors)))
        save_file(tensors, str(bad), header)
    elif damage == "wrong_shape":
        k = next(k for k, v in tensors.items() if v.ndim == 2)
        tensors[k] = torch.zeros(3, 3)
        save_file(tensors, str(bad), header)
    elif damage == "no_config":
        save_file(tensors, str(bad), {"provenance": "{}"})
    elif damage == "folder":
        bad.mkdir()
    said = {"absent": "weights file not found", "folder": "a folder, not a weights file"}.get(damage, "")
    with pytest.raises(WeightsError, match=f"w.safetensors: .*{said}"):
        load_weights(bad)


def test_weights_become_the_parameters_without_random_init(tmp_path, tiny_weights, monkeypatch):
    """The file's tensors (bf16 ones too) are the model's fp32 parameters, with no random init drawn
    first: neither on the meta skeleton that checks the shapes (normal_ on meta makes PyTorch 2.11
    import torch._dynamo, 4.7 s of an H100 machine's start-up) nor on a second model."""
    half = tmp_path / "half.safetensors"
    meta = load_weights(tiny_weights)
    tensors = load_file(str(tiny_weights))
    save_file({k: v.bfloat16() for k, v in tensors.items()}, str(half), {"config": meta.model.cfg.to_json(), "provenance": "{}"})
    drawn = []
    monkeypatch.setattr(torch.nn.init, "trunc_normal_", lambda t, *a, **k: drawn.append(t.device.type) or t)
    for path, want in ((tiny_weights, tensors), (half, {k: v.bfloat16().float() for k, v in tensors.items()})):
        state = load_weights(path).model.state_dict()
        assert drawn == [] and set(state) == set(want)
        for k, v in state.items():
            assert v.device.type == "cpu" and v.dtype == torch.float32 and torch.equal(v, want[k]), k


def test_encoder_dying_mid_file_batch_goes_on(tmp_path, tiny_weights, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b", "c"):
        make_clip(src / f"{name}.mp4", 96, 64, 40, audio=False)
    real_encode = VideoWriter._encode

    def encode(self, frames, first):
        if self.dest.name == "b.mp4" and first > 0:
            raise OSError(5, "Input/output error")  # the encoder dies after its first frames
        real_encode(self, frames, first)

    monkeypatch.setattr(VideoWriter, "_encode", encode)
    results = anonymize(src, tmp_path / "out", Options(batch_size=1), weights=tiny_weights)
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert "b.mp4" in results[1].error and not (tmp_path / "out" / "b.mp4").exists()
    assert not stray(tmp_path / "out")


@pytest.mark.slow
@pytest.mark.parametrize("limit_bytes", [4096, 60_000])  # the first writes; the encoder's, part way through
def test_disk_full_leaves_nothing(tmp_path, tiny_weights, limit_bytes):
    """A file-size limit makes the writes fail as on a full disk: the score map's records failed
    to close with a traceback, and the encoder's error named its hidden temporary file."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    clip = make_clip(tmp_path / "in.mp4", 320, 240, 60)  # nearly all kept, losslessly: over 60 KB
    out = tmp_path / "o.mp4"
    r = subprocess.run([sys.executable, "-m", "ppar_cli.cli", "anonymize", str(clip), str(out), "--weights", str(tiny_weights),
                        "--quiet", "--guard", "none", "--crf", "0", "--keep", "0.99"],
                       capture_output=True, text=True, preexec_fn=limit)
    assert r.returncode == 1 and "o.mp4" in r.stderr and "Traceback" not in r.stderr
    # the system's words, on one line, naming the output the user asked for, not its hidden temporary
    assert "File too large" in r.stderr and "partial" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and not out.with_suffix(".json").exists() and stray(tmp_path) == []


@pytest.mark.slow
def test_a_signal_another_thread_receives_stops_videos_running_at_once(tmp_path, tiny_weights):
    """The kernel hands a process's SIGTERM to any of its threads (a decoder's, x264's). With
    several videos at once the main thread only waits for them, and ran the handler once it woke:
    after the last video, which was then written whole. It wakes in slices now."""
    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "a_short.mp4", 96, 64, 10, audio=False)
    make_clip(src / "b_long.mp4", 640, 360, 1500, audio=False, extra=["-preset", "ultrafast"])
    out = tmp_path / "out"
    code = (
        "import signal, threading, time\n"
        "from pathlib import Path\n"
        "from ppar_cli import Options, anonymize\n"
        "def interrupt(*_):\n"
        "    raise KeyboardInterrupt\n"
        "signal.signal(signal.SIGTERM, interrupt)\n"
        "def send():  # from a thread of its own, which then receives it\n"
        f"    while not list(Path({str(out)!r}).glob('.b_long*partial*')):\n"
        "        time.sleep(0.05)\n"
        "    time.sleep(0.5)\n"
        "    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)\n"
        "threading.Thread(target=send, daemon=True).start()\n"
        "try:\n"
        f"    anonymize({str(src)!r}, {str(out)!r}, Options(guard='none', jobs=2, batch_size=1), weights={str(tiny_weights)!r})\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "interrupted", r.stderr[-2000:]
    assert not (out / "b_long.mp4").exists() and not stray(out)


@pytest.mark.slow
@pytest.mark.parametrize("sig,workers", [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGINT, 2)])
def test_interrupt_cleans_up_and_rerun_resumes(tmp_path, tiny_weights, sig, workers):
    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "a_short.mp4", 96, 64, 10, audio=False)
    make_clip(src / "b_long.mp4", 640, 360, 1500, audio=False, extra=["-preset", "ultrafast"])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ppar_cli.cli", "anonymize", str(src), str(out), "--weights", str(tiny_weights), "--quiet",
           "--guard", "none", "--batch-size", "1", "--workers", str(workers)]
    # A shell's background job inherits SIGINT ignored, and Python then keeps ignoring it: reset it.
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".b_long*")) and not list(out.glob("*b_long*tmp*")):
        time.sleep(0.1)  # until the second file's temporary output exists
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert (out / "a_short.mp4").exists() and not (out / "b_long.mp4").exists() and not stray(out)
    r = subprocess.run(cmd + ["--no-scores"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0
    assert (out / "b_long.mp4").exists()
    last = [json.loads(line) for line in (out / "ppar-manifest.jsonl").read_text().splitlines()][-2:]
    assert [(m["src"].rsplit("/", 1)[-1], m["status"]) for m in last] == [("a_short.mp4", "skipped"), ("b_long.mp4", "ok")]


@pytest.mark.slow
def test_a_killed_worker_fails_its_videos_and_the_others_finish(tmp_path, tiny_weights):
    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "a_long.mp4", 640, 360, 1500, audio=False, extra=["-preset", "ultrafast"])
    make_clip(src / "b_short.mp4", 96, 64, 10, audio=False)
    make_clip(src / "c_short.mp4", 96, 64, 10, audio=False)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ppar_cli.cli", "anonymize", str(src), str(out), "--weights",
                             str(tiny_weights), "--quiet", "--guard", "none", "--batch-size", "1", "--workers", "2",
                             "--jobs", "1"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".a_long*partial*")):
        time.sleep(0.1)
    [partial] = out.glob(".a_long*partial*")  # .NAME.HOST-PID.RANDOM.partial.mp4: written by one worker
    os.kill(int(partial.name.split(".")[3].rsplit("-", 1)[1]), signal.SIGKILL)  # as the kernel's OOM killer would
    try:
        _, err = proc.communicate(timeout=120)  # the other worker's messages get through (a shared queue hung here)
    finally:
        proc.kill()  # its workers follow it (they stop with their parent)
    assert proc.returncode == 1 and "Traceback" not in err
    assert err.count("worker process ended (exit code -9)") == 1, err  # a_long's
    # the other worker took both short videos: they were never the dead one's
    assert (out / "b_short.mp4").exists() and (out / "c_short.mp4").exists() and not (out / "a_long.mp4").exists()
    lines = [json.loads(x) for x in (out / "ppar-manifest.jsonl").read_text().splitlines()]
    assert sorted((m["src"].rsplit("/", 1)[-1], m["status"]) for m in lines) == [
        ("a_long.mp4", "failed"), ("b_short.mp4", "ok"), ("c_short.mp4", "ok")]


@pytest.mark.slow
def test_workers_stop_and_clean_up_when_their_parent_is_killed(tmp_path, tiny_weights):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a_long.mp4", "b_long.mp4"):
        make_clip(src / name, 640, 360, 1500, audio=False, extra=["-preset", "ultrafast"])
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ppar_cli.cli", "anonymize", str(src), str(out), "--weights",
                             str(tiny_weights), "--quiet", "--guard", "none", "--batch-size", "1", "--workers", "2"],
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob(".*_long*partial*"))) < 2:
        time.sleep(0.1)
    workers = [int(p.name.split(".")[3].rsplit("-", 1)[1]) for p in out.glob(".*_long*partial*")]
    assert len(workers) == 2
    proc.kill()  # SIGKILL: the parent cleans nothing up itself
    proc.wait()
    deadline = time.time() + 60
    while time.time() < deadline and (stray(out) or any(_alive(pid) for pid in workers)):
        time.sleep(0.2)
    assert not stray(out) and not any(_alive(pid) for pid in workers)
    assert not (out / "a_long.mp4").exists() and not (out / "b_long.mp4").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z")  # a zombie has exited


def test_a_frame_wider_than_h264_takes_is_named_before_any_work(tmp_path):
    """x264 encodes at most 16384 pixels a side: a 17000 px panorama failed at its first frame with
    FFmpeg's `Generic error in an external library`, after its decoding had started."""
    from ppar_cli.media.probe import VideoError

    with pytest.raises(VideoError, match=r"o.mp4: H.264 \(x264\) encodes frames of at most 16384 pixels a side, not 17000x64"):
        VideoWriter(tmp_path / "o.mp4", 17000, 64, 25)
    assert list(tmp_path.iterdir()) == []
    VideoWriter(tmp_path / "o.mp4", 16384, 64, 25).abort()  # the largest x264 takes


def test_a_recording_stopped_before_its_index_says_so(tmp_path):
    """A camera writes an MP4's index (moov) last: a recording cut off by a flat battery has none,
    and no player reads it. The error said only `no video stream (Invalid data found when
    processing input)`; it now says what happened. A fragmented MP4 cut off (an index in each
    fragment) still reads up to its cut."""
    from ppar_cli.media.probe import VideoError

    whole = make_clip(tmp_path / "whole.mp4", 96, 64, 50, audio=False)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    with pytest.raises(VideoError, match=r"cut.mp4: an MP4 or MOV without its index \(no moov box\): a recording stopped"):
        probe(cut)
    frag = make_clip(tmp_path / "frag.mp4", 96, 64, 50, audio=False, extra=["-movflags", "+frag_keyframe+empty_moov", "-g", "10"])
    (tmp_path / "fcut.mp4").write_bytes(frag.read_bytes()[:frag.stat().st_size * 3 // 4])
    assert 0 < frames_in(tmp_path / "fcut.mp4") < 50
    (tmp_path / "text.mp4").write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoError, match=r"text.mp4: no video stream"):
        probe(tmp_path / "text.mp4")


@pytest.mark.slow
def test_corrupted_bytes_many_seeds(tmp_path, clip, tiny_weights):
    """Random bytes overwritten at random offsets: every run ends ok (all written frames scored) or failed cleanly."""
    data = clip.read_bytes()
    w = load_weights(tiny_weights)
    outcomes = []
    for seed in range(12):
        rng = random.Random(seed)
        b = bytearray(data)
        for _ in range(rng.choice([1, 8, 64])):
            off = rng.randrange(len(b))
            b[off:off + 16] = bytes(rng.randrange(256) for _ in range(16))
        src = tmp_path / f"c{seed}.mp4"
        src.write_bytes(bytes(b))
        out = tmp_path / f"o{seed}"
        out.mkdir()
        [r] = anonymize(src, out / "o.mp4", Options(guard="none"), weights=w)
        outcomes.append(r.status)
        if r.status == "ok":
            windows = json.loads((out / "o.json").read_text())["windows"]
            assert frames_in(out / "o.mp4") == r.frames == sum(x["frames"] for x in windows)
        else:
            _check_failed(r, src, out)
        assert src.read_bytes() == bytes(b)
    assert "ok" in outcomes and "failed" in outcomes  # both paths were exercised and checked above


@pytest.mark.slow
def test_cli_option_fuzz(tmp_path, clip, tiny_weights):
    """Random option combinations for 20 s: exit 0, 1 or 2, a one-line error, output only on success."""
    runner = CliRunner()
    rng = random.Random(1)
    values = {"--keep": ["0.5", "0", "1", "-0.1", "1.5", "nan", "abc", "0.25"], "--batch-size": ["1", "3", "0", "-2", "x"],
              "--fill": ["black", "blur", "pixelate", "mean", "sparkle"], "--crf": ["0", "23", "51", "52", "-1"],
              "--lambda": ["0", "0.5", "3", "-1"], "--guard": ["none", "bogus"], "--shard": ["0/1", "1/1", "x"],
              "--device": ["cpu", "auto", "tpu"]}
    deadline, n = time.time() + 20, 0
    while time.time() < deadline:
        args = []
        for opt in rng.sample(sorted(values), rng.randint(1, 4)):
            args += [opt, rng.choice(values[opt])]
        if "--guard" not in args:
            args += ["--guard", "none"]
        out = tmp_path / f"f{n}.mp4"
        res = runner.invoke(app, ["anonymize", str(clip), str(out), "--weights", str(tiny_weights), "--quiet", *args])
        assert res.exit_code in (0, 1, 2), (args, res.output, res.exception)
        assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), (args, res.exception)
        assert out.exists() == (res.exit_code == 0), args
        n += 1
    assert n >= 5 and not stray(tmp_path)


@pytest.mark.slow
@needs_shared
def test_real_clips_mixed_with_corrupted_copies(tmp_path, tiny_weights):
    src = tmp_path / "in"
    src.mkdir()
    good = sorted(p for p in REAL.iterdir() if p.is_file())
    for p in good:
        (src / p.name).write_bytes(p.read_bytes())
        data = p.read_bytes()
        (src / f"cut_{p.name}").write_bytes(data[: len(data) // 3])
        (src / f"junk_{p.stem}.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    results = anonymize(src, tmp_path / "out", Options(guard="none"), weights=tiny_weights)
    status = {r.src.name: r for r in results}
    for p in good:
        assert status[p.name].status == "ok", status[p.name].error
        assert status[f"junk_{p.stem}.mp4"].status == "failed"
        cut = status[f"cut_{p.name}"]  # a third of the file: fails naming it, or its first frames, all scored
        if cut.status == "ok":
            windows = json.loads(cut.dst.with_suffix(".json").read_text())["windows"]
            assert 0 < cut.frames == sum(w["frames"] for w in windows) < status[p.name].frames, cut
        else:
            assert cut.status == "failed" and f"cut_{p.name}" in cut.error
    assert not stray(tmp_path / "out")


ARENAS = """
import ctypes, threading
from ppar_cli.pipeline.runtime import flat_heap
flat_heap()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
together = threading.Barrier(8)
def work():
    together.wait()
    held = [libc.malloc(100000) for _ in range(50)]
    together.wait()
    for p in held:
        libc.free(ctypes.c_void_p(p))
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc.malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
@pytest.mark.parametrize("env,arenas", [({}, 2), ({"MALLOC_ARENA_MAX": "4"}, 4)])
def test_threads_share_two_heap_arenas_unless_told(env, arenas):
    """Memory freed in per-thread arenas crept up with a video's length (runtime.flat_heap): eight
    threads allocating at once get two arenas, or what MALLOC_ARENA_MAX says."""
    r = subprocess.run([sys.executable, "-c", ARENAS], capture_output=True, text=True, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    assert sum(line.startswith("Arena ") for line in r.stderr.splitlines()) == arenas
