"""What a video file holds, read through PyAV (FFmpeg's libraries): size, rate, rotation, audio
streams, each frame's timestamp and the pixel aspect ratio."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ppar_cli.errors import PparError

# The file names `ppar anonymize` reads in a folder.
VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mkv", ".avi", ".mov", ".qt", ".webm", ".gif", ".apng", ".mpg", ".mpeg", ".mpe",
                    ".wmv", ".asf", ".flv", ".f4v", ".ts", ".3gp", ".3g2", ".divx", ".ogv", ".ogm", ".rm", ".rmvb", ".nut",
                    ".mts", ".m2ts", ".mod", ".tod", ".dv", ".mxf", ".vob", ".wtv",  # camcorders, broadcast, DVD, TV recorders
                    ".dav",  # CCTV recorders' exports (Dahua's; FFmpeg's dhav demuxer)
                    ".h264", ".264", ".h265", ".265", ".hevc", ".m1v", ".m2v", ".ivf", ".mjpeg", ".mjpg", ".y4m"}  # raw streams
# FFmpeg's demuxers of elementary streams: no container, so no timestamps of their own; the rate is
# the one in the codec's header (H.264's and HEVC's VUI), where the demuxer assumes 25 fps.
ELEMENTARY = {"h264", "hevc", "vvc", "m4v", "mpegvideo"}


def video_files(folder: Path) -> list[Path]:
    """The video files under ``folder`` (by their names), sorted; hidden names are left out."""
    return sorted(p for p in folder_files(folder) if p.suffix.lower() in VIDEO_EXTENSIONS)


def folder_files(folder: Path):
    """The files under ``folder``, hidden names (a dot first, in the file's or a folder's name below
    ``folder``) left out: macOS's ._NAME.mp4 companions are no videos."""
    return (p for p in folder.rglob("*") if not any(part.startswith(".") for part in p.relative_to(folder).parts)
            and p.is_file())


class VideoError(PparError):
    """A video that cannot be read or written; the message names the file and the problem."""


DEFAULT, ATTACHED_PIC = 0x1, 0x400  # FFmpeg's AV_DISPOSITION_* flags


def video_stream(container):
    """The video stream to anonymize, as FFmpeg's players pick it: not a cover picture (a file's
    attached thumbnail, one frame), then the one marked default, then the largest; ties, the first.
    A container may list a cover or a second angle first: the first stream alone gave a 1-frame
    output of the cover, "ok"."""
    def rank(s):
        flags = int(getattr(s, "disposition", 0))
        return flags & ATTACHED_PIC != 0, flags & DEFAULT == 0, -s.codec_context.width * s.codec_context.height, s.index

    return min(container.streams.video, key=rank)


def first_frame(container, stream):
    """The first frame of the video ``stream`` that decodes (None if none does): packets the
    decoder rejects are passed over, so a file damaged at its start is still read."""
    import av

    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            continue
        if frames:
            return frames[0]
    return None


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


MAX_FPS = 1000  # frames a second; a rate above it is a container's time base, not the video's
TS_DISCONT = 0x200  # FFmpeg's AVFMT_TS_DISCONT: formats whose clock may restart (MPEG-TS, MPEG-PS)
RESTART = 0.5  # seconds: a stream's time going back further is its clock restarting; a shorter step back, jitter
LEAP = 10.0  # seconds: a stream's time leaping further ahead is a restart too (ffmpeg's -dts_delta_threshold)


class Continuity:
    """Packet times of a file whose clock may restart, as players play it. Recordings joined with
    `cat` (MPEG-TS or MPEG-PS chunks of a camera or a recorder) each start again at their own time
    (FFmpeg's demuxer unwraps the 33-bit clock itself, not these): from such a jump, back or more
    than LEAP ahead, each stream's packets are moved to follow on from the packet before. Taken as
    they were, the later part's frames were sorted in among the earlier part's, and its audio
    stopped the muxer. Other formats' times are taken as they are."""

    def __init__(self, container):
        self.on = bool(container.format.flags & TS_DISCONT)
        self._shift: dict[int, int] = {}  # stream index -> added to its times, in its time base
        self._last: dict[int, tuple[int, int]] = {}  # stream index -> (last dts, where it ends), shifted
        self.restarted = False  # whether the packet last given starts a restart of its stream's clock

    def __call__(self, p) -> int:
        """What to add to packet ``p``'s pts and dts; call it on each packet, in demux order. A step
        back shorter than RESTART (a muxer's jitter) moves that packet alone just after the one
        before, which the output's muxer needs: shifting all that follow would add up to a drift.
        A leap ahead past LEAP is where FFmpeg's demuxer took a clock restarting low for its 33-bit
        wrap and added 26.5 hours."""
        self.restarted = False
        if not self.on:
            return 0
        i = p.stream.index
        shift = self._shift.get(i, 0)
        if p.dts is None:
            return shift
        if i in self._last:
            last, end = self._last[i]
            back = (last - p.dts - shift) * p.time_base  # seconds behind the packet before
            if 0 < back <= RESTART:
                self._last[i] = (last + 1, max(end, last + 1))
                return last + 1 - p.dts
            if back > RESTART or (p.dts + shift - end) * p.time_base > LEAP:
                shift = self._shift[i] = end - p.dts
                self.restarted = True
        dts = p.dts + shift
        self._last[i] = (dts, dts + max(1, p.duration or 0))
        return shift


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
    dropped: int = 0  # listed frames the decoder did not give, taken out of ``known`` (see decoded)
    ends_early: str | None = None  # why the file looks cut short (its packets end before its header says)
    # Seconds of the input's timeline that become the output's 0: the file's start, as ffmpeg's program
    # takes it. An MPEG-TS clock is a device's (hours into its day), an FLV or Matroska file cut from a
    # stream keeps the stream's time: kept, the MP4 would begin with an empty edit that long, and be
    # that much longer for players. The streams keep their offsets to one another.
    origin: Fraction = Fraction(0)
    # Audio streams (by index) whose sample rate or channels change where a joined recording's
    # clock restarts: copied as they are, the later part would play at the first part's rate.
    audio_changes: dict[int, str] = field(default_factory=dict)

    @classmethod
    def constant(cls, fps: Fraction, sar: Fraction | None = None) -> "FrameTimes":
        fps = Fraction(fps) if fps > 0 else Fraction(25)
        return cls(1 / fps, np.zeros(0, np.int64), Fraction(1), 0, sar)

    def decoded(self, i: int, pts: int | None) -> None:
        """The decoder's frame ``i`` has the timestamp ``pts``. Listed frames before it that the
        decoder did not give (a file that starts after a keyframe, a damaged stretch) leave
        ``known``, so every frame keeps its own time and the audio stays in sync; without this the
        frames after a gap would move forward by the length of the gap. A time that is not listed
        changes nothing."""
        known = self.known
        if pts is None or i >= len(known) or known[i] == pts:
            return
        j = int(np.searchsorted(known, pts))
        if i < j < len(known) and known[j] == pts:
            self.known = np.delete(known, np.s_[i:j])  # a new array: the encoder's thread reads one or the other
            self.dropped += j - i

    def pts(self, i: int) -> int:
        """Timestamp of frame ``i``; for one past the last frame, the time the last frame ends."""
        n = len(self.known)
        if i < n:
            return int(self.known[i])
        if n == 0:
            return int(round(i * self.step))
        tail = self.last_duration if self.last_duration > 0 else self.step
        return int(round(self.known[-1] + tail + (i - n) * self.step))


# Containers whose header states the duration (others estimate it), and how far short of it the
# last packet of every stream must end for the file to count as cut short.
STATED_DURATION = ("matroska", "mov")
CUT_SHORT = (0.5, 0.02)  # seconds, fraction of the duration: whichever is larger


def read_frame_times(path: Path, fps: Fraction, rotation: int, stream: int = 0) -> FrameTimes:
    """The video's frame timestamps and pixel aspect ratio (PyAV demux, no decode); a constant rate
    from ``fps`` when the container cannot be read that way. A file whose streams all end well
    before the duration its header states was cut short (``ends_early``): the demuxer says so only
    on FFmpeg's log, which PyAV cannot read safely (see decode.FrameReader._av_chunks)."""
    import av

    try:
        with av.open(str(path)) as c:
            v = c.streams[stream]
            sar = Fraction(v.sample_aspect_ratio) if v.sample_aspect_ratio else None
            pts, last_duration, ends = [], 0, {}  # stream -> where its packets end, in its time base
            continuity, changes = Continuity(c), {}
            # an elementary stream's times are its demuxer's 25 fps guess: none are read, fps is the header's
            for p in () if c.format.name in ELEMENTARY else c.demux():
                shift = continuity(p)
                if continuity.restarted and p.stream.type == "audio" and p.stream.index not in changes:
                    if (change := _audio_change(p)) is not None:
                        changes[p.stream.index] = change
                if p.pts is not None and p.size:
                    i = p.stream.index
                    ends[i] = max(ends.get(i, p.pts + shift), p.pts + shift + (p.duration or 0))
                if p.stream.index != v.index:
                    continue
                t = p.pts if p.pts is not None else p.dts
                if t is not None and p.size and not p.is_discard:  # discard: before an edit list's start (a cut with -c copy)
                    pts.append(t + shift)
                    last_duration = p.duration or 0
            tb = Fraction(v.time_base)
            end = max((float(t * c.streams[i].time_base) for i, t in ends.items()), default=0.0)
            # the file's start as FFmpeg tells it (the earliest stream's; an AAC track's priming not counted)
            origin = Fraction(c.start_time, 1_000_000) if c.start_time is not None else Fraction(0)
            stated = (c.start_time or 0) / 1e6 + c.duration / 1e6 \
                if c.duration and any(k in c.format.name for k in STATED_DURATION) else None
    except (av.error.FFmpegError, IndexError, ValueError, ZeroDivisionError, TypeError):
        return FrameTimes.constant(fps)
    if sar is not None and (sar <= 0 or sar == 1):
        sar = None
    if sar is not None and rotation in (90, 270):
        sar = 1 / sar
    known = np.unique(np.asarray(pts, np.int64))  # sorted into display order; a repeated time is one frame
    if len(known) < 2:
        return FrameTimes.constant(fps, sar)
    early = None
    if stated and end < stated - max(CUT_SHORT[0], CUT_SHORT[1] * stated):
        early = f"its streams end at {end:.1f} s, its header says {stated:.1f} s: cut short"
    return FrameTimes(tb, known, Fraction(int(known[-1] - known[0]), len(known) - 1), int(last_duration), sar,
                      ends_early=early, origin=origin, audio_changes=changes)


def _audio_change(p) -> str | None:
    """How audio packet ``p``, the first after its clock restarts (a joined recording's next part),
    differs from its stream's start in sample rate or channels, decoded on its own (ADTS AAC, MPEG
    audio and AC-3 frames carry their own headers); None when it does not, or cannot be told."""
    import av

    cc = p.stream.codec_context
    try:
        frames = av.CodecContext.create(cc.name, "r").decode(p)
    except (av.error.FFmpegError, ValueError):
        return None
    if not frames:
        return None
    f = frames[0]
    if (f.sample_rate, f.layout.nb_channels) == (cc.sample_rate, cc.channels):
        return None
    return f"{cc.sample_rate} Hz, {cc.channels} ch, then {f.sample_rate} Hz, {f.layout.nb_channels} ch"


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

    def frame_times(self) -> FrameTimes:
        if self.times is None:
            self.times = read_frame_times(self.path, self.fps, self.rotation, self.stream)
        return self.times

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
                     video_streams=streams, mirror=mirror)
