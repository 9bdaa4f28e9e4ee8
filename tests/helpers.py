"""Helpers the tests share (imported as `helpers`; conftest.py holds only fixtures): where the real
clips are, clips made with ffmpeg's lavfi sources, the `ppar` command in a subprocess, leftovers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL = SHARED / "data" / "real"
ANNOTATIONS = SHARED / "data" / "annotations"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared (real clips and label files) is not beside this checkout")


def ppar(*args, **kw) -> subprocess.CompletedProcess:
    """The `ppar` command in a fresh process (where start-up, signals or exit codes are the point)."""
    return subprocess.run([sys.executable, "-m", "ppar_cli.cli", *map(str, args)], capture_output=True, text=True, **kw)


def stray(folder: Path) -> list[Path]:
    """Temporary outputs left behind anywhere under folder (ppar names them .NAME.HOST-PID.XXXX.partial[.ext])."""
    return [p for p in folder.rglob("*") if p.is_file() and ".partial" in p.name]


def ffmpeg_exe() -> str:
    """ffmpeg's program (imageio-ffmpeg, a dev dependency): the tests make their clips with it."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args) -> None:
    """ffmpeg's program with these arguments (each made a string), quiet, overwriting."""
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", *map(str, args)], check=True)


def make_clip(path: Path, width: int, height: int, frames: int, fps: int = 25, audio: bool = True, extra: list[str] | None = None) -> Path:
    """A test-pattern video (moving, so every frame differs) with an optional sine-tone audio track."""
    cmd = [ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={width + width % 2}x{height + height % 2}:rate={fps},scale={width}:{height}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    cmd += ["-frames:v", str(frames)] + (extra or [])
    if width % 2 or height % 2:
        cmd += ["-pix_fmt", "yuv444p"]  # 4:2:0 would crop odd sizes
    if audio:
        cmd += ["-c:a", "aac", "-shortest"]
    cmd += [str(path)]
    subprocess.run(cmd, check=True)
    return path


def without_ffmpeg(monkeypatch) -> None:
    """From here on this process cannot import imageio-ffmpeg (its program): ppar must not need it
    (make the test's input files first)."""
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)


def graphs_on_the_cpu(monkeypatch, replay_offset: float = 0.0) -> list[tuple]:
    """From here on scoring replays passes on the CPU as it does on a GPU (`scoring.graphed`), from a
    stand-in for `scoring.capture` whose replays, like a CUDA graph's, write into the same output
    tensors each time (``replay_offset`` added to their floats: a replay that differs). Returns the
    input shapes captured, as they are captured."""
    from ppar_cli.core import scoring

    captured = []

    def capture(run, inputs, pool):
        captured.append(tuple(inputs[0].shape))
        static = [t.clone() for t in inputs]
        outputs = [t.clone() for t in run(*static)]

        def replay(*given):
            for s, t in zip(static, given):
                s.copy_(t)
            for o, t in zip(outputs, run(*static)):
                o.copy_(t + replay_offset if t.is_floating_point() else t)
            return outputs
        return replay, [t.clone() for t in run(*static)]

    monkeypatch.setattr(scoring, "GRAPH_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(scoring, "capture", capture)
    monkeypatch.setattr(scoring, "_GRAPHS", scoring.weakref.WeakKeyDictionary())
    return captured


def decoder_threads_seen(monkeypatch) -> list[int]:
    """From here on, the thread count each PyAV video decoder that ppar opens (thread type AUTO)
    has when it starts demuxing, in order (a wrapped av.open)."""
    import av

    counts, real_open = [], av.open

    class Seen:
        def __init__(self, c):
            self.c = c

        def __enter__(self):
            self.c.__enter__()
            return self

        def __exit__(self, *exc):
            return self.c.__exit__(*exc)

        def __getattr__(self, name):
            return getattr(self.c, name)

        def demux(self, *streams):
            counts.extend(s.thread_count for s in streams if s.type == "video" and s.thread_type.name == "AUTO")
            return self.c.demux(*streams)

    monkeypatch.setattr(av, "open", lambda *a, **k: Seen(real_open(*a, **k)))
    return counts
