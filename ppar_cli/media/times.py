"""Frame times: each frame's timestamp as the container lists it (no decoding), followed across a
clock that restarts (recordings joined with `cat`), and the sound's changes where it does."""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

# FFmpeg's demuxers of elementary streams: no container, so no timestamps of their own; the rate is
# the one in the codec's header (H.264's and HEVC's VUI), where the demuxer assumes 25 fps.
ELEMENTARY = {"h264", "hevc", "vvc", "m4v", "mpegvideo"}


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
