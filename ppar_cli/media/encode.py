"""Encoding: H.264 through FFmpeg's libraries (PyAV) into a temporary file beside the destination,
renamed only when complete; each frame at its source timestamp, the audio beside it (audio.py)."""
from __future__ import annotations

import functools
import os
import queue
import sys
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from ppar_cli.errors import reason
from ppar_cli.media.audio import AUDIO_AS_IS, AudioCopy
from ppar_cli.media.decode import YUVFrames
from ppar_cli.media.files import publish, temp_beside
from ppar_cli.media.probe import VideoError, VideoInfo, YUVFormat
from ppar_cli.media.times import FrameTimes

# Containers by output suffix: ppar writes H.264 in these (an output name must end in one of them).
OUTPUT_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}

ENCODER_NICE = 10
BEHIND_MAX_PIXELS = 640 * 480  # larger frames: the encoder keeps its normal priority
X264_MAX_SIDE = 16384  # pixels, the longest side x264 encodes


def _behind_the_rest() -> None:
    """The calling thread, and the x264 threads it starts, at nice ENCODER_NICE (Linux). The encoder
    is the stream's last stage and has a queue: it can fall behind and catch up, while the decoder,
    face guard and model ahead of it, which it waits on anyway, get the cores first (on 2 cores a
    640x360 run with the guard was faster so). Only for frames up to BEHIND_MAX_PIXELS: at 1280x720
    the encoder is half of the work, the run was no faster, and more frames waited for it."""
    if sys.platform.startswith("linux"):  # elsewhere a thread id is not what setpriority takes
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ENCODER_NICE)
        except OSError:
            pass


def video_frame(rgb: np.ndarray, pix_fmt: str):
    """An RGB frame as an av.VideoFrame for an encoder of ``pix_fmt``. For yuv420p, OpenCV converts
    it (BT.601, limited range, as FFmpeg's swscale does; luma within 1 level of it): 0.14 ms a
    640x360 frame, against 1.1 ms for the conversion the encoder would otherwise do (1.7 of a 60 s
    640x360 run's 22 CPU-seconds). Without OpenCV (no `ppar[guard]`), the encoder converts.

    The frame wraps the array's memory instead of copying it (``from_numpy_buffer``): the copy held
    the GIL, which several videos at once (--jobs) share, and the encoder's own conversion or x264
    copies the picture before ``encode`` returns. `benchmarks/bench.py --frame` times both."""
    import av

    cv2 = _opencv()
    if pix_fmt == "yuv420p" and cv2 is not None:
        return av.VideoFrame.from_numpy_buffer(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
    return av.VideoFrame.from_numpy_buffer(np.ascontiguousarray(rgb), format="rgb24")


@functools.cache
def _opencv():
    """OpenCV, or None where it is not installed: looked up once, not for every frame."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


BT601, LIMITED = 6, 1  # FFmpeg's AVCOL_SPC_SMPTE170M and AVCOL_RANGE_MPEG


class VideoWriter:
    """H.264 through FFmpeg's libraries (PyAV), in the container the file name asks for, written to
    a temporary file beside ``dest``: ``commit()`` renames it into place, ``abort()`` (or an
    exception) removes it.

    Each frame keeps its source timestamp (``times``), so variable frame rates, GIF delays and a
    video that starts after its audio play as in the input; the pixel aspect ratio is kept; audio
    packets are copied with their own timestamps, interleaved as the video advances.

    Frames are RGB, or YUVFrames of the source's 4:2:0 format ``yuv``, encoded as they are with its
    colour tags. RGB frames are encoded as BT.601 limited range and tagged so, with the primaries
    and transfer of ``source`` (the source's format), so that players show the source's colours.
    """

    def __init__(self, dest: str | os.PathLike, width: int, height: int, fps: Fraction, crf: int = 20,
                 preset: str = "veryfast", audio_from: VideoInfo | None = None, times: "FrameTimes | None" = None,
                 yuv: YUVFormat | None = None, source: YUVFormat | None = None):
        import av

        self.dest = Path(dest)
        if max(width, height) > X264_MAX_SIDE:  # x264 refuses at its first frame: "Generic error in an external library"
            raise VideoError(f"{self.dest}: H.264 (x264) encodes frames of at most {X264_MAX_SIDE} pixels a side, "
                             f"not {width}x{height}")
        self.size = (width, height)
        self.times = times or FrameTimes.constant(fps)
        self._origin = round(self.times.origin / self.times.time_base)  # the input's time of the output's 0
        fmt = OUTPUT_CONTAINERS.get(self.dest.suffix.lower())
        if fmt is None:
            raise VideoError(f"{self.dest}: cannot write this container; name the output .mp4, .m4v, .mov or .mkv")
        self.tmp = temp_beside(self.dest, self.dest.suffix.lower())
        self._fmt = fmt
        self.frames = 0
        self.audio_rejected = 0  # damaged audio packets left out
        self.audio_reencoded: list[str] = []  # codecs of the audio tracks the container cannot hold, now AAC
        self.audio_joined: list[str] = []  # audio tracks whose rate or channels change midway, now AAC
        self._failed: str | None = None
        try:
            self._out = av.open(str(self.tmp), "w", format=fmt,
                                container_options={"movflags": "+faststart"} if fmt in ("mp4", "mov") else {})
            vs = self._out.add_stream("libx264", rate=fps)
            vs.width, vs.height = width, height
            # YUVFrames: the source's 4:2:0 as it is. RGB: yuv420p needs even sizes; odd sizes keep their
            # exact size through 4:4:4 instead of a pad or crop.
            vs.pix_fmt = yuv.pix_fmt if yuv else "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
            cc, tags = vs.codec_context, yuv or source
            if yuv is not None:  # and its colour tags
                cc.colorspace, cc.color_range = yuv.colorspace, yuv.color_range
            else:  # what RGB frames become (video_frame, or the encoder's own conversion): untagged, an HD player would take BT.709
                cc.colorspace, cc.color_range = BT601, LIMITED
            if tags is not None:  # the RGB values are still in the source's primaries and transfer (HDR's PQ or HLG too)
                cc.color_primaries, cc.color_trc = tags.color_primaries, tags.color_trc
            vs.time_base = self.times.time_base
            vs.codec_context.time_base = self.times.time_base
            if self.times.sar:
                vs.codec_context.sample_aspect_ratio = self.times.sar
            vs.options = {"crf": str(crf), "preset": preset}
            # x264's frame threads, as the ffmpeg program uses (PyAV defaults to slices: 25% slower at 720p)
            vs.codec_context.thread_type, vs.codec_context.thread_count = "FRAME", 0
            self._video = vs
            self._audio = AudioCopy(self._out, audio_from, AUDIO_AS_IS[fmt], self.times) \
                if audio_from and audio_from.audio_codecs else None
            self.audio_reencoded = self._audio.reencoded if self._audio else []
            self.audio_joined = self._audio.joined if self._audio else []
        except Exception as e:  # noqa: BLE001 -- FFmpeg's errors, a damaged audio track, anything: no temp file left
            self.abort()
            raise VideoError(f"{self.dest}: cannot start the encoder ({reason(e)})") from None
        self.pix_fmt, self.yuv = vs.pix_fmt, yuv
        self._durations: dict[int, int] = {}  # a frame's pts -> its length, until its packet is out
        self._first_dts: int | None = None
        # Frames are encoded in a thread (FFmpeg releases the GIL), so the caller can score the
        # next clip meanwhile; at most two writes wait in between.
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        if self.size[0] * self.size[1] <= BEHIND_MAX_PIXELS:
            _behind_the_rest()
        while (item := self._queue.get()) is not None:
            if self._failed:
                continue
            try:
                self._encode(*item)
            except Exception as e:  # noqa: BLE001 -- FFmpeg's errors, disk full, anything: reported by write/commit
                self._failed = reason(e)

    def _encode(self, frames: np.ndarray | None, first: int) -> None:
        import av

        if frames is None:  # flush
            packets = list(self._video.encode())
        else:
            packets = []
            for i, frame in enumerate(frames):
                vf = av.VideoFrame.from_numpy_buffer(frame, format=self.pix_fmt) if self.yuv else video_frame(frame, self.pix_fmt)
                vf.pts, vf.time_base = self.times.pts(first + i) - self._origin, self.times.time_base
                self._durations[vf.pts] = self.times.pts(first + i + 1) - self.times.pts(first + i)
                packets += self._video.encode(vf)
        if self._first_dts is None and packets:
            self._first_dts = packets[0].dts
        if frames is None and packets and None not in (packets[-1].dts, self._first_dts) and self._fmt != "matroska":
            # An MP4 track lasts the sum of its packets' decoding steps, the last packet's its duration
            # (Matroska: each frame's own): that one ends the track where the video's last frame does
            last = packets[-1]
            self._durations[last.pts] = max(1, self.times.pts(first) - self.times.pts(0) - (last.dts - self._first_dts))
        for packet in packets:
            # each frame lasts until the next, the last one too (a GIF's last delay): x264's packets
            # carry the stream rate's tick, which the MP4 muxer takes for the last frame's length
            packet.duration = self._durations.pop(packet.pts, packet.duration)
            if self._audio is not None:  # audio up to this point of the video, so the muxer holds little
                self._audio.mux_until(float((packet.pts + self._origin) * packet.time_base))
            self._out.mux(packet)

    def write(self, frames: np.ndarray | YUVFrames) -> None:
        """RGB frames (k, H, W, 3), or YUVFrames when the writer was made for them."""
        if frames.shape[1:] != (self.size[1], self.size[0], 3) or frames.dtype != np.uint8 \
                or isinstance(frames, YUVFrames) != (self.yuv is not None):
            raise VideoError(f"{self.dest}: frame shape {frames.shape} does not match {self.size}")
        if self._failed or not self._thread.is_alive():
            raise VideoError(f"{self.dest}: encoder stopped ({self._failed or 'unknown error'})")
        self._queue.put((frames.data if self.yuv else np.ascontiguousarray(frames), self.frames))
        self.frames += len(frames)

    @property
    def end_time(self) -> float:
        """Seconds, in the input's timeline, at which the last written frame ends."""
        return float(self.times.pts(self.frames) * self.times.time_base) if self.frames else 0.0

    def commit(self, trim_audio: bool = False) -> None:
        """Finish the file and rename it into place (:meth:`finish`)."""
        publish([(self.finish(trim_audio), self.dest)])

    def finish(self, trim_audio: bool = False) -> Path:
        """Finish the file and return its temporary, complete, for the caller to publish with
        others; ``trim_audio`` cuts audio at the end of the video written (an input that could
        be decoded only in part), else all of the input's audio is kept."""
        self._queue.put((None, self.frames))
        self._queue.put(None)
        self._thread.join()
        try:
            if not self._failed and self._audio is not None:
                self._audio.mux_until(self.end_time if trim_audio else float("inf"), trim=trim_audio)
        except Exception as e:  # noqa: BLE001
            self._failed = reason(e)
        try:
            self._close()
        except Exception as e:  # noqa: BLE001 -- the trailer write can fail on a full disk
            self._failed = self._failed or reason(e)
        if self._failed:
            msg = self._failed
            self.abort()
            raise VideoError(f"{self.dest}: encoding failed ({msg})")
        return self.tmp

    def _close(self) -> None:
        audio, self._audio = getattr(self, "_audio", None), None
        if audio is not None:
            self.audio_rejected = audio.rejected
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
