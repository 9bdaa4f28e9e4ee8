"""What a video file holds, read through PyAV (FFmpeg's libraries): the stream players pick, its size,
rate, rotation and colours, its audio streams; its frame times are times.py's."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import chain
from pathlib import Path
from typing import Iterator

import numpy as np

from ppar_cli.errors import PparError
from ppar_cli.media.times import ELEMENTARY, TS_DISCONT, FrameTimes, read_frame_times

# The file names `ppar anonymize` reads in a folder.
VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mkv", ".avi", ".mov", ".qt", ".webm", ".gif", ".apng", ".mpg", ".mpeg", ".mpe",
                    ".wmv", ".asf", ".flv", ".f4v", ".ts", ".3gp", ".3g2", ".divx", ".ogv", ".ogm", ".rm", ".rmvb", ".nut",
                    ".mts", ".m2ts", ".mod", ".tod", ".dv", ".mxf", ".vob", ".wtv",  # camcorders, broadcast, DVD, TV recorders
                    ".dav",  # CCTV recorders' exports (Dahua's; FFmpeg's dhav demuxer)
                    ".h264", ".264", ".h265", ".265", ".hevc", ".m1v", ".m2v", ".ivf", ".mjpeg", ".mjpg", ".y4m"}  # raw streams


def video_files(folder: Path) -> list[Path]:
    """The video files under ``folder`` (by their names), sorted; hidden names are left out."""
    return sorted(p for p in folder_files(folder) if p.suffix.lower() in VIDEO_EXTENSIONS)


def folder_files(folder: Path) -> Iterator[Path]:
    """The files under ``folder``, hidden names (a dot first, in the file's or a folder's name below
    ``folder``) left out: macOS's ._NAME.mp4 companions are no videos."""
    return (p for p in folder.rglob("*") if not any(part.startswith(".") for part in p.relative_to(folder).parts)
            and p.is_file())


class VideoError(PparError):
    """A video that cannot be read or written; the message names the file and the problem."""


DEFAULT, ATTACHED_PIC = 0x1, 0x400  # FFmpeg's AV_DISPOSITION_* flags


def video_stream(container):
    """The video stream to anonymize, as FFmpeg's players pick it (``av_find_best_stream``): not a
    cover picture (a file's attached thumbnail, one frame), then the one marked default, then one
    of several frames rather than a still (up to 5 counted, as FFmpeg counts), then the largest;
    ties, the first. A container may list a cover, a still or a second angle first: the first
    stream alone gave a 1-frame output of the cover, "ok", and so did a larger still."""
    def rank(s):
        flags = int(getattr(s, "disposition", 0))
        return flags & ATTACHED_PIC != 0, flags & DEFAULT == 0, -frames.get(s.index, 0), -s.codec_context.width * s.codec_context.height, s.index

    candidates = [s for s in container.streams.video if not int(getattr(s, "disposition", 0)) & ATTACHED_PIC]
    frames = _frames_seen(container.name, candidates) if len(candidates) > 1 else {}
    return min(container.streams.video, key=rank)


def _frames_seen(path: str, streams: list, enough: int = 5, packets: int = 1000) -> dict[int, int]:
    """Packets of each of ``streams`` (by index) among a file's first ``packets``, at most ``enough``
    each: where the container lists its frames (MP4), its counts, else read from a second opening
    of the file, so the caller's container stays at its start."""
    import av

    if all(s.frames for s in streams):
        return {s.index: min(int(s.frames), enough) for s in streams}
    seen = dict.fromkeys((s.index for s in streams), 0)
    try:
        with av.open(path) as c:
            for i, p in enumerate(c.demux(*(c.streams[k] for k in seen))):
                if p.size:
                    seen[p.stream.index] = min(seen[p.stream.index] + 1, enough)
                if i >= packets or min(seen.values()) >= enough:
                    break
    except av.error.FFmpegError:  # what was read counts
        pass
    return seen


def first_frame(container, stream, packets: Iterator | None = None):
    """The first frame of the video ``stream`` that decodes (None if none does), from its packets
    in ``container`` or those given: packets the decoder rejects are passed over, so a file
    damaged at its start is still read."""
    import av

    for packet in packets if packets is not None else container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            continue
        if frames:
            return frames[0]
    return None


def sizes_along(info: VideoInfo, points: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)) -> Iterator[tuple[int, int]]:
    """The decoded size of the first keyframe after a seek to each point of the stream (a share of
    its length): of its time, to the keyframe before, where the container has one clock; of its
    bytes, to the keyframe after, where the clock may restart (MPEG-TS and -PS: joined recordings
    are where sizes change, and there a time names a place in each part). Points where no
    keyframe is found are passed over."""
    import av

    with av.open(str(info.path)) as c:
        v = c.streams.video[info.stream]
        if c.format.flags & TS_DISCONT:
            start, length, by = 0, info.path.stat().st_size, {"unsupported_byte_offset": True}
        elif v.duration is not None:
            start, length, by = v.start_time or 0, v.duration, {"stream": v}
        elif c.duration is not None:  # the container's, in microseconds
            start, length, by = 0, c.duration, {}
        else:
            return
        for point in points:
            try:
                c.seek(start + int(length * point), **by)
                packets = c.demux(v)
                first = next((p for p in packets if p.is_keyframe), None)
                frame = None if first is None else first_frame(c, v, chain([first], packets))
            except av.error.FFmpegError:
                continue
            if frame is not None:
                yield frame.width, frame.height


def orientation(frame) -> tuple[int, bool]:
    """How a decoded frame is shown upright, as FFmpeg's program shows it (its autorotate, in
    fftools/ffmpeg_filter.c, read from the frame's display matrix): (k, mirror), turn k quarter
    turns counterclockwise (np.rot90), then flip left and right where mirror. A mirrored matrix (a
    selfie camera's, `ffmpeg -display_hflip`) read as a rotation alone was turned 180 degrees, upside
    down. A matrix that turns by other than quarter turns is left as decoded."""
    side = frame.side_data.get("DISPLAYMATRIX") if frame is not None else None
    if side is None:
        return 0, False
    m = np.frombuffer(bytes(side), np.int32)
    theta = -round(frame.rotation)  # clockwise degrees, 0 <= theta < 360, as ffmpeg's get_rotation
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    a = np.arange(6).reshape(2, 3)  # what ffmpeg's filters do to a 2x3 picture
    if abs(theta - 90) < 1:
        shown = a.T if m[3] > 0 else np.rot90(a, -1)  # transpose=cclock_flip, or clock
    elif abs(theta - 180) < 1:
        shown = a[:, ::-1] if m[0] < 0 else a  # hflip
        shown = shown[::-1] if m[4] < 0 else shown  # vflip
    elif abs(theta - 270) < 1:
        shown = np.rot90(a, -1)[::-1] if m[3] < 0 else np.rot90(a, 1)  # clock_flip, or cclock
    else:
        shown = a[::-1] if abs(theta) < 1 and m[4] < 0 else a  # vflip
    return next((k, mirror) for k in range(4) for mirror in (False, True)
                if np.array_equal(np.rot90(a, k)[:, ::-1] if mirror else np.rot90(a, k), shown))


def codec_name(stream) -> str:
    """A stream's codec as FFmpeg names it (mp3, not its decoder mp3float; av1, not libdav1d)."""
    cc = stream.codec_context
    return cc.codec.canonical_name if cc.codec else cc.name


def _kind(stream) -> str:
    """A stream's codec; for data (telemetry, timecode) and attachments, which have none, what the
    container says of it (its handler's name, its MIME type)."""
    if stream.codec_context is not None:
        return codec_name(stream)
    return stream.metadata.get("handler_name") or stream.metadata.get("mimetype") or "unnamed"


MAX_FPS = 1000  # frames a second; a rate above it is a container's time base, not the video's


@dataclass(frozen=True)
class YUVFormat:
    """A video's pixel format and colour tags, as its decoder gives them."""
    pix_fmt: str  # yuv420p, yuvj420p (full range), yuv422p10le, ...
    colorspace: int
    color_range: int
    color_primaries: int
    color_trc: int
    size: tuple[int, int] = (0, 0)  # of the decoded frame, before any rotation

    @property
    def black(self) -> int:
        """Luma of black: 0 in full range, 16 in limited."""
        return 0 if self.pix_fmt == "yuvj420p" or self.color_range == 2 else 16


@dataclass
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: Fraction
    num_frames: int | None  # None when only a full decode can tell
    audio_codecs: list[str]
    rotation: int  # counterclockwise quarter turns to show it upright, in degrees (0, 90, 180, 270)
    codec: str
    source: YUVFormat | None = None  # the first decodable frame's pixel format and colour tags
    # Fields, not frames (broadcast and camcorder video): decoding deinterlaces (media/decode.py)
    interlaced: bool = False
    times: FrameTimes | None = None  # frame timestamps and pixel aspect ratio, read on demand
    stream: int = 0  # the container's index of the video stream read (video_stream)
    video_streams: int = 1  # how many the container holds
    mirror: bool = False  # after the rotation, flipped left and right (a mirrored display matrix)
    left_out: list[str] = field(default_factory=list)  # streams ppar does not write: subtitles, data (telemetry), attachments
    _one_size: bool | None = field(default=None, repr=False)  # keeps_its_size, read on demand

    def frame_times(self) -> FrameTimes:
        if self.times is None:
            self.times = read_frame_times(self.path, self.fps, self.rotation, self.stream)
        return self.times

    def keeps_its_size(self) -> bool:
        """No frame at another size than the first, as far as five keyframes along the stream tell
        (:func:`sizes_along`; recordings joined, a camera's mode changed): decord, which the research
        path seeks with, reads such a stream as if it had one size, garbage. False where no point
        could be read."""
        if self._one_size is None:
            sizes = list(sizes_along(self)) if self.source else []
            self._one_size = bool(sizes) and all(size == self.source.size for size in sizes)
        return self._one_size

    def listed_frames(self) -> int | None:
        """The frames the container lists (a progress bar's total; a damaged file decodes fewer)."""
        return self.num_frames or len(self.frame_times().known) or None


def unfinished_mp4(path: Path) -> bool:
    """An MP4/MOV file (an ``ftyp`` box first) whose top-level boxes, as far as the file goes, hold
    no ``moov``: the index a camera writes last, so a recording cut off has none."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        at, kinds = 0, []
        while at + 8 <= size and len(kinds) < 1000:
            f.seek(at)
            head = f.read(16)
            length, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if length == 1 and len(head) == 16:
                length = int.from_bytes(head[8:16], "big")
            kinds.append(kind)
            if length < 8:  # 0: to the end of the file (a box still being written), or damage
                break
            at += length
    return bool(kinds) and kinds[0] == b"ftyp" and b"moov" not in kinds


def probe(path: str | os.PathLike) -> VideoInfo:
    """The video's facts; the rotation and mirror are the first frame's display matrix, as ffmpeg's
    program applies it (orientation). (Until 0.3.7 ``ffmpeg -i``'s text was parsed where the
    program was installed: a process a file, and rates rounded as printed, 29.97 for 30000/1001.)"""
    import av

    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a directory, expected a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file")
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise VideoError(f"{path}: no video stream")
            v = video_stream(c)
            first = first_frame(c, v)
            index, streams = v.index, len(c.streams.video)  # read while the container is open
            header_rate = v.codec_context.framerate if c.format.name in ELEMENTARY else None
            # the first plausible of them: FFmpeg's DV demuxer gives an average rate of 60000
            rate = next((r for r in (header_rate, v.average_rate, v.guessed_rate, v.base_rate) if r and 0 < r <= MAX_FPS), None)
            audio = [codec_name(a) for a in c.streams.audio]
            left_out = [f"{s.type} ({_kind(s)})" for s in c.streams if s.type not in ("video", "audio")]
            codec, w, h = codec_name(v), v.codec_context.width, v.codec_context.height
            # FFmpeg's AVFieldOrder: 2..5 are the interlaced orders (TT, BB, TB, BT)
            interlaced = v.codec_context.field_order in (2, 3, 4, 5) or bool(first is not None and first.interlaced_frame)
    except av.error.FFmpegError as e:
        if unfinished_mp4(path):
            raise VideoError(f"{path}: an MP4 or MOV without its index (no moov box): a recording stopped before it "
                             f"was finished (a battery, a card full); no player can read it as it is, a repair tool "
                             f"given a good file from the same camera may") from None
        raise VideoError(f"{path}: no video stream ({e.strerror})") from None
    fps = Fraction(rate).limit_denominator(1001) if rate else Fraction(25)
    k, mirror = orientation(first)
    rotation = 90 * k
    if rotation in (90, 270):
        w, h = h, w
    if first is None and (w < 1 or h < 1):  # FFmpeg's webp decoder, say, rejects an animated WebP's frames
        raise VideoError(f"{path}: no frame of its {codec} video stream decodes")
    if w < 1 or h < 1:
        raise VideoError(f"{path}: invalid frame size {w}x{h}")
    source = None if first is None else YUVFormat(first.format.name, first.colorspace, first.color_range,
                                                  first.color_primaries, first.color_trc, (first.width, first.height))
    return VideoInfo(path, w, h, fps, None, audio, rotation, codec, source, interlaced=interlaced, stream=index,
                     video_streams=streams, mirror=mirror, left_out=left_out)
