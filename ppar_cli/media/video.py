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

from ppar_cli.errors import PparError
from ppar_cli.media.files import temp_beside
from ppar_cli.pipeline.jobs import OUTPUT_CONTAINERS

# Audio codecs an MP4 can carry as they are; anything else is re-encoded to AAC.
MP4_AUDIO = {"aac", "mp3", "opus", "ac3", "eac3", "alac", "flac"}


class VideoError(PparError):
    """A video that cannot be read or written; the message names the file and the problem."""


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass
class FrameTimes:
    """Presentation timestamps of the video's frames in ``time_base`` units, display order, read
    from the container's packets (no decoding). Frames past the known ones continue at the average
    interval ``step``; ``sar`` is the pixel aspect ratio to keep (None: square pixels)."""

    time_base: Fraction
    known: np.ndarray  # int64, increasing
    step: Fraction  # average frame interval, in time_base units
    last_duration: int = 0  # of the last known frame (a GIF's last delay), 0: unknown
    sar: Fraction | None = None

    @classmethod
    def constant(cls, fps: Fraction, sar: Fraction | None = None) -> "FrameTimes":
        fps = Fraction(fps) if fps > 0 else Fraction(25)
        return cls(1 / fps, np.zeros(0, np.int64), Fraction(1), 0, sar)

    def pts(self, i: int) -> int:
        """Timestamp of frame ``i``; for one past the last frame, the time the last frame ends."""
        n = len(self.known)
        if i < n:
            return int(self.known[i])
        if n == 0:
            return int(round(i * self.step))
        tail = self.last_duration if self.last_duration > 0 else self.step
        return int(round(self.known[-1] + tail + (i - n) * self.step))


def read_frame_times(path: Path, fps: Fraction, rotation: int) -> FrameTimes:
    """The video's frame timestamps and pixel aspect ratio (PyAV demux, no decode); a constant rate
    from ``fps`` when the container cannot be read that way."""
    import av

    try:
        with av.open(str(path)) as c:
            v = c.streams.video[0]
            sar = Fraction(v.sample_aspect_ratio) if v.sample_aspect_ratio else None
            pts, last_duration = [], 0
            for p in c.demux(v):
                t = p.pts if p.pts is not None else p.dts
                if t is not None and p.size:
                    pts.append(t)
                    last_duration = p.duration or 0
            tb = Fraction(v.time_base)
    except (av.error.FFmpegError, IndexError, ValueError, ZeroDivisionError, TypeError):
        return FrameTimes.constant(fps)
    if sar is not None and (sar <= 0 or sar == 1):
        sar = None
    if sar is not None and rotation in (90, 270):
        sar = 1 / sar
    known = np.unique(np.asarray(pts, np.int64))  # sorted into display order; a repeated time is one frame
    if len(known) < 2:
        return FrameTimes.constant(fps, sar)
    return FrameTimes(tb, known, Fraction(int(known[-1] - known[0]), len(known) - 1), int(last_duration), sar)


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
    times: FrameTimes | None = None  # frame timestamps and pixel aspect ratio, read on demand

    def frame_times(self) -> FrameTimes:
        if self.times is None:
            self.times = read_frame_times(self.path, self.fps, self.rotation)
        return self.times


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


POOL_BYTES = 2**30  # chunk buffers kept for reuse, in all (12 at most)


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

    def __init__(self, info: VideoInfo, backend: str = "auto", max_side: int | None = None):
        self.info = info
        self.backend = "ffmpeg"
        self.damage: str | None = None  # the decoder's complaint about a file it still decoded (truncated, corrupt)
        self._vr = None
        # max_side: frames scaled down (area averaging, in ffmpeg) so their long side is at most this
        s = min(1.0, max_side / max(info.width, info.height)) if max_side else 1.0
        self.width, self.height = max(1, round(info.width * s)), max(1, round(info.height * s))
        if backend != "ffmpeg" and s == 1.0 and info.rotation == 0 and info.codec != "gif":
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
        w, h = self.width, self.height
        frame_bytes = w * h * 3
        scale = ["-vf", f"scale={w}:{h}:flags=area"] if (w, h) != (self.info.width, self.info.height) else []
        cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(self.info.path), "-map", "0:v:0", *scale,
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-fps_mode", "passthrough", "-"]
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, bufsize=0)
            _widen_pipe(proc.stdout)
            finished = False
            pool = BufferPool(frame_bytes * n, keep=max(2, min(12, POOL_BYTES // (frame_bytes * n))))
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
            said = [line for line in msg.splitlines() if not line.lstrip().startswith("Last message repeated")]
            self.damage = (said[-1] if said else msg.splitlines()[-1])[:200]
        if rc != 0:
            raise VideoError(f"{self.info.path}: decode failed ({msg.splitlines()[-1][:200] if msg else f'ffmpeg exit {rc}'})")


# The audio codecs each output container can carry as they are (others become AAC).
_MOV_AUDIO = MP4_AUDIO | {"pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_s16be", "pcm_u8"}
AUDIO_AS_IS = {"mp4": MP4_AUDIO, "mov": _MOV_AUDIO, "matroska": None}  # None: any codec


class VideoWriter:
    """H.264 through FFmpeg's libraries (PyAV), in the container the file name asks for, written to
    a temporary file beside ``dest``: ``commit()`` renames it into place, ``abort()`` (or an
    exception) removes it.

    Each frame keeps its source timestamp (``times``), so variable frame rates, GIF delays and a
    video that starts after its audio play as in the input; the pixel aspect ratio is kept; audio
    packets are copied with their own timestamps, interleaved as the video advances.
    """

    def __init__(self, dest: str | os.PathLike, width: int, height: int, fps: Fraction, crf: int = 20,
                 preset: str = "veryfast", audio_from: VideoInfo | None = None, times: "FrameTimes | None" = None):
        import av

        self.dest = Path(dest)
        self.size = (width, height)
        self.times = times or FrameTimes.constant(fps)
        fmt = OUTPUT_CONTAINERS.get(self.dest.suffix.lower())
        if fmt is None:
            raise VideoError(f"{self.dest}: cannot write this container; name the output .mp4, .m4v, .mov or .mkv")
        self.tmp = temp_beside(self.dest, self.dest.suffix.lower())
        self.frames = 0
        self._failed: str | None = None
        try:
            self._out = av.open(str(self.tmp), "w", format=fmt,
                                container_options={"movflags": "+faststart"} if fmt in ("mp4", "mov") else {})
            vs = self._out.add_stream("libx264", rate=fps)
            vs.width, vs.height = width, height
            # yuv420p needs even sizes; odd sizes keep their exact size through 4:4:4 instead of a pad or crop.
            vs.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
            vs.time_base = self.times.time_base
            vs.codec_context.time_base = self.times.time_base
            if self.times.sar:
                vs.codec_context.sample_aspect_ratio = self.times.sar
            vs.options = {"crf": str(crf), "preset": preset}
            # x264's frame threads, as the ffmpeg program uses (PyAV defaults to slices: 25% slower at 720p)
            vs.codec_context.thread_type, vs.codec_context.thread_count = "FRAME", 0
            self._video = vs
            self._audio = _AudioCopy(self._out, audio_from, AUDIO_AS_IS[fmt]) if audio_from and audio_from.audio_codecs else None
        except Exception as e:  # noqa: BLE001 -- FFmpeg's errors, a damaged audio track, anything: no temp file left
            self.abort()
            raise VideoError(f"{self.dest}: cannot start the encoder ({str(e).splitlines()[0][:200]})") from None
        self.pix_fmt = vs.pix_fmt
        # Frames are encoded in a thread (FFmpeg releases the GIL), so the caller can score the
        # next clip meanwhile; at most two writes wait in between.
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._failed:
                continue
            try:
                self._encode(*item)
            except Exception as e:  # noqa: BLE001 -- FFmpeg's errors, disk full, anything: reported by write/commit
                self._failed = str(e).splitlines()[0][:200] or type(e).__name__

    def _encode(self, frames: np.ndarray | None, first: int) -> None:
        import av

        if frames is None:  # flush
            packets = list(self._video.encode())
        else:
            packets = []
            for i, frame in enumerate(frames):
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                vf.pts, vf.time_base = self.times.pts(first + i), self.times.time_base
                vf.duration = self.times.pts(first + i + 1) - vf.pts  # the last frame's too: the duration is kept
                packets += self._video.encode(vf)
        for packet in packets:
            if self._audio is not None:  # audio up to this point of the video, so the muxer holds little
                self._audio.mux_until(float(packet.pts * packet.time_base))
            self._out.mux(packet)

    def write(self, frames: np.ndarray) -> None:
        if frames.shape[1:] != (self.size[1], self.size[0], 3) or frames.dtype != np.uint8:
            raise VideoError(f"{self.dest}: frame shape {frames.shape} does not match {self.size}")
        if self._failed or not self._thread.is_alive():
            raise VideoError(f"{self.dest}: encoder stopped ({self._failed or 'unknown error'})")
        self._queue.put((np.ascontiguousarray(frames), self.frames))
        self.frames += len(frames)

    @property
    def end_time(self) -> float:
        """Seconds, in the input's timeline, at which the last written frame ends."""
        return float(self.times.pts(self.frames) * self.times.time_base) if self.frames else 0.0

    def commit(self, trim_audio: bool = False) -> None:
        """Finish the file; ``trim_audio`` cuts audio at the end of the video written (an input
        that could be decoded only in part), else all of the input's audio is kept."""
        self._queue.put((None, self.frames))
        self._queue.put(None)
        self._thread.join()
        try:
            if not self._failed and self._audio is not None:
                self._audio.mux_until(self.end_time if trim_audio else float("inf"), trim=trim_audio)
        except Exception as e:  # noqa: BLE001
            self._failed = str(e).splitlines()[0][:200]
        try:
            self._close()
        except Exception as e:  # noqa: BLE001 -- the trailer write can fail on a full disk
            self._failed = self._failed or str(e).splitlines()[0][:200]
        if self._failed:
            msg = self._failed
            self.abort()
            raise VideoError(f"{self.dest}: encoding failed ({msg})")
        os.replace(self.tmp, self.dest)

    def _close(self) -> None:
        audio, self._audio = getattr(self, "_audio", None), None
        out, self._out = getattr(self, "_out", None), None
        try:
            if audio is not None:
                audio.close(flush=out is not None and not self._failed)
        finally:
            if out is not None:
                out.close()

    def abort(self) -> None:
        if getattr(self, "_thread", None) is not None and self._thread.is_alive():
            self._failed = self._failed or "aborted"
            self._queue.put(None)
            self._thread.join()
        try:
            self._close()
        except Exception:  # noqa: BLE001 -- the file is removed anyway
            pass
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


class _AudioCopy:
    """The input's audio streams into the output: packets copied with their own timestamps, or
    re-encoded to AAC when the container cannot hold the codec."""

    def __init__(self, out, info: VideoInfo, as_is: set[str] | None):
        import av

        self._in = av.open(str(info.path))
        self.streams = {}
        for s in self._in.streams.audio:
            name = s.codec_context.codec.name if s.codec_context.codec else s.codec_context.name
            name = {"mp3float": "mp3"}.get(name, name)
            if as_is is None or name in as_is:
                o = out.add_stream_from_template(s)
                self.streams[s.index] = (o, None)
            else:
                o = out.add_stream("aac", rate=s.codec_context.sample_rate or 48000)
                n = s.codec_context.channels
                o.layout = {1: "mono", 2: "stereo"}.get(n, f"{n}c")  # PCM often leaves the layout unnamed
                self.streams[s.index] = (o, av.AudioResampler(format="fltp", layout=o.layout.name, rate=o.rate))
        self._packets = self._in.demux(*self._in.streams.audio)
        self._next = None
        self._out = out

    def mux_until(self, t: float, trim: bool = False) -> None:
        """Mux audio packets that start before ``t`` seconds (with ``trim``: that end by ``t``)."""
        while True:
            if self._next is None:
                self._next = next(self._packets, False)
            p = self._next
            if p is False:
                return
            if p.dts is None or p.size == 0:  # demuxer flush packets and packets without time
                self._next = None
                continue
            start = float((p.pts if p.pts is not None else p.dts) * p.time_base)
            if start >= t:
                return
            self._next = None
            if trim and p.duration and start + float(p.duration * p.time_base) > t + 1e-6:
                return
            o, resampler = self.streams[p.stream.index]
            if resampler is None:
                p.stream = o
                self._out.mux(p)
            else:
                for frame in p.decode():
                    self._encode(o, resampler.resample(frame))

    def _encode(self, stream, frames: list) -> None:
        for frame in frames:
            for q in stream.encode(frame):
                self._out.mux(q)

    def close(self, flush: bool = True) -> None:
        try:
            for o, resampler in self.streams.values() if flush else ():
                if resampler is not None:
                    self._encode(o, resampler.resample(None) + [None])
        finally:
            self._in.close()
