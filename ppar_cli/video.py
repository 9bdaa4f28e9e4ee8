"""Video decode (decord, with an ffmpeg fallback) and encode (the ffmpeg binary of imageio-ffmpeg).

Decoding streams fixed-size chunks so memory stays flat in the video's length. Encoding writes
to a temporary file beside the destination, renamed only when ffmpeg finished cleanly.
"""
from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import PparError
from .files import temp_beside

# Audio codecs an MP4 can carry as they are; anything else is re-encoded to AAC.
MP4_AUDIO = {"aac", "mp3", "opus", "ac3", "eac3", "alac", "flac"}


class VideoError(PparError):
    """A video that cannot be read or written; the message names the file and the problem."""


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: Fraction
    num_frames: int | None  # None when only a full decode can tell
    audio_codecs: list[str]
    rotation: int
    codec: str


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read stream facts from ``ffmpeg -i`` (imageio-ffmpeg ships no ffprobe)."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a directory, expected a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file")
    r = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True, errors="replace")
    text = r.stderr
    m = re.search(r"Stream #\d+:\d+.*?: Video: (\w+).*?, (\d{1,5})x(\d{1,5})", text)
    if not m:
        last = text.strip().splitlines()[-1] if text.strip() else "unknown error"
        raise VideoError(f"{path}: no video stream ({last})")
    codec, w, h = m.group(1), int(m.group(2)), int(m.group(3))
    vline = text[m.start():].splitlines()[0]
    fm = re.search(r"([\d.]+)(k?) fps", vline) or re.search(r"([\d.]+)(k?) tbr", vline)
    fps = Fraction(fm.group(1)) * (1000 if fm and fm.group(2) else 1) if fm else Fraction(25)
    fps = fps.limit_denominator(1001)
    rot = re.search(r"rotation of (-?[\d.]+) degrees", text) or re.search(r"rotate\s*:\s*(-?\d+)", text)
    rotation = int(round(float(rot.group(1)))) % 360 if rot else 0
    if rotation in (90, 270):
        w, h = h, w
    audio = re.findall(r"Stream #\d+:\d+.*?: Audio: (\w+)", text)
    if w < 1 or h < 1:
        raise VideoError(f"{path}: invalid frame size {w}x{h}")
    return VideoInfo(path, w, h, fps, None, audio, rotation, codec)


def _widen_pipe(f) -> None:
    """Raw frames cross the pipes to and from ffmpeg: 1 MiB pipe buffers (Linux; 64 KiB by default)
    take 16 times fewer system calls and context switches."""
    try:
        import fcntl

        fcntl.fcntl(f.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):  # not Linux, or capped below 1 MiB: keep the default
        pass


class BufferPool:
    """Chunk buffers handed out again once nothing refers to them. A fresh buffer per window costs a
    page fault per 4 KiB page: at 1280x720 that was 7 s of system time in a 27 s run.

    A buffer is free when its reference count is back to the pool's own: every array, tensor or
    memoryview over its memory holds a reference to it (NumPy views keep their base), so a buffer in
    use by the model or still waiting for the encoder is never handed out and overwritten."""

    def __init__(self, nbytes: int, keep: int = 12):
        self.nbytes, self.keep = nbytes, keep
        self._bufs: list[np.ndarray] = []

    def get(self) -> np.ndarray:
        for buf in self._bufs:
            if sys.getrefcount(buf) <= 3:  # the list, the loop variable and getrefcount's argument
                return buf
        buf = np.empty(self.nbytes, np.uint8)  # not zeroed: chunks are filled in place
        if len(self._bufs) < self.keep:
            self._bufs.append(buf)
        return buf


class FrameReader:
    """Consecutive RGB frames in chunks. decord first; ffmpeg's own decoder when decord cannot
    open the file (GIFs, some containers) or the video carries a rotation decord would ignore."""

    def __init__(self, info: VideoInfo, backend: str = "auto"):
        self.info = info
        self.backend = "ffmpeg"
        self.damage: str | None = None  # the decoder's complaint about a file it still decoded (truncated, corrupt)
        self._vr = None
        if backend != "ffmpeg" and info.rotation == 0 and info.codec != "gif":
            try:
                import decord

                vr = decord.VideoReader(str(info.path), num_threads=1)
                if len(vr) > 0 and vr[0].shape[:2] == (info.height, info.width):
                    self._vr, self.backend = vr, "decord"
                    info.num_frames = len(vr)
            except Exception:  # decord raises its own error types for anything it cannot open
                self._vr = None

    def chunks(self, n: int) -> Iterator[np.ndarray]:
        """Yield uint8 arrays (k, H, W, 3), k <= n, covering every frame once, in order."""
        if n < 1:
            raise ValueError(f"chunk size must be at least 1, got {n}")
        if self._vr is not None:
            yield from self._decord_chunks(n)
        else:
            yield from self._ffmpeg_chunks(n)

    def _decord_chunks(self, n: int) -> Iterator[np.ndarray]:
        total = len(self._vr)
        for start in range(0, total, n):
            try:
                batch = self._vr.get_batch(list(range(start, min(start + n, total)))).asnumpy()
            except Exception as e:
                if start == 0:  # decord rejects some files only when decoding (e.g. narrow frames): use ffmpeg
                    self._vr, self.backend, self.info.num_frames = None, "ffmpeg", None
                    yield from self._ffmpeg_chunks(n)
                    return
                raise VideoError(f"{self.info.path}: decode failed at frame {start} ({str(e).splitlines()[0][:200]})") from None
            yield batch

    def _ffmpeg_chunks(self, n: int) -> Iterator[np.ndarray]:
        w, h = self.info.width, self.info.height
        frame_bytes = w * h * 3
        cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(self.info.path), "-map", "0:v:0",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-fps_mode", "passthrough", "-"]
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, bufsize=0)
            _widen_pipe(proc.stdout)
            finished = False
            pool = BufferPool(frame_bytes * n)
            try:
                while not finished:
                    buf = pool.get()
                    view, got = memoryview(buf), 0
                    while got < len(buf):
                        r = proc.stdout.readinto(view[got:])
                        if not r:
                            finished = True
                            break
                        got += r
                    k = got // frame_bytes
                    if k:
                        yield buf[:k * frame_bytes].reshape(k, h, w, 3)
            finally:
                if not finished:  # the consumer stopped early: do not leave ffmpeg running
                    proc.kill()
                proc.stdout.close()
                rc = proc.wait()
            err.seek(0)
            msg = err.read().decode(errors="replace").strip()
        if rc == 0 and msg:
            self.damage = msg.splitlines()[-1][:200]
        if rc != 0:
            raise VideoError(f"{self.info.path}: decode failed ({msg.splitlines()[-1][:200] if msg else f'ffmpeg exit {rc}'})")


class VideoWriter:
    """H.264 MP4 through an ffmpeg subprocess fed raw RGB on stdin, written to a temporary file
    beside ``dest``. ``commit()`` renames it into place; ``abort()`` (or an exception) removes it."""

    def __init__(self, dest: str | os.PathLike, width: int, height: int, fps: Fraction, crf: int = 20,
                 preset: str = "veryfast", audio_from: VideoInfo | None = None):
        self.dest = Path(dest)
        self.size = (width, height)
        self.tmp = temp_beside(self.dest, ".mp4")
        # yuv420p needs even sizes; odd sizes keep their exact size through 4:4:4 instead of a pad or crop.
        self.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        cmd = [ffmpeg_exe(), "-nostdin", "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", str(fps), "-i", "-"]
        if audio_from is not None and audio_from.audio_codecs:
            copy = all(c in MP4_AUDIO for c in audio_from.audio_codecs)
            cmd += ["-i", str(audio_from.path), "-map", "0:v:0", "-map", "1:a?", "-c:a", "copy" if copy else "aac"]
        cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", self.pix_fmt,
                "-movflags", "+faststart", "-f", "mp4", str(self.tmp)]
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=self._err)
        _widen_pipe(self.proc.stdin)
        self.frames = 0
        # Frames go to ffmpeg from a thread (pipe writes release the GIL), so the caller can score
        # the next clip while the encoder is busy; at most two writes wait in between.
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._failed = False
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._failed:
                continue
            try:
                self.proc.stdin.write(data)
            except (BrokenPipeError, OSError, ValueError):
                self._failed = True

    def write(self, frames: np.ndarray) -> None:
        if frames.shape[1:] != (self.size[1], self.size[0], 3) or frames.dtype != np.uint8:
            raise VideoError(f"{self.dest}: frame shape {frames.shape} does not match {self.size}")
        if self._failed or not self._thread.is_alive():
            raise VideoError(f"{self.dest}: encoder stopped ({self._error_text()})")
        self._queue.put(np.ascontiguousarray(frames).data)
        self.frames += len(frames)

    def _drain(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _error_text(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._err.seek(0)
        text = self._err.read().decode(errors="replace").strip()
        return text.splitlines()[-1][:200] if text else f"ffmpeg exit {self.proc.returncode}"

    def commit(self) -> None:
        self._drain()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        rc = self.proc.wait()
        if rc != 0 or self._failed:
            msg = self._error_text()
            self.abort()
            raise VideoError(f"{self.dest}: encoding failed ({msg})")
        self._err.close()
        os.replace(self.tmp, self.dest)

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._thread.is_alive():
            self._failed = True
            self._drain()
        for f in (self.proc.stdin, self._err):
            try:
                f.close()
            except OSError:
                pass
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
