"""The input's audio tracks into the output: packets copied as they are with their own times, or,
where the container cannot hold them (or their rate changes midway), re-encoded to AAC."""
from __future__ import annotations

from fractions import Fraction

from ppar_cli.media.probe import VideoInfo, codec_name
from ppar_cli.media.times import Continuity, FrameTimes

# Audio codecs an MP4 can carry as they are; anything else is re-encoded to AAC.
MP4_AUDIO = {"aac", "mp3", "opus", "ac3", "eac3", "alac", "flac"}

# The audio codecs each output container can carry as they are (others become AAC).
# (QuickTime's MOV: not Opus or FLAC, whose boxes FFmpeg writes into MP4 alone)
_MOV_AUDIO = MP4_AUDIO - {"opus", "flac"} | {"pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_s16be", "pcm_u8"}
AUDIO_AS_IS = {"mp4": MP4_AUDIO, "mov": _MOV_AUDIO, "matroska": None}  # None: any its muxer takes
AAC_CHANNELS = 8  # the most FFmpeg's AAC encoder takes (7.1)


def aac_rate(rate: int) -> int:
    """The sample rate AAC encodes ``rate`` at: its own where FFmpeg's encoder takes it, else the
    lowest above it (no band lost), else its highest (a recorder's 192 kHz PCM: 96 kHz)."""
    import av

    rates = av.codec.Codec("aac", "w").audio_rates or [48000]
    return min((r for r in rates if r >= rate), default=max(rates))


class _Resample:
    """A track's decoded frames in the format, layout and rate of its AAC ``stream``; where the
    input's own change (a joined recording's next part), a new resampler after the old one's last
    samples. ``None`` flushes."""

    def __init__(self, stream):
        self.stream, self.inner, self.of = stream, None, None

    def __call__(self, frame) -> list:
        import av

        of = None if frame is None else (frame.format.name, frame.layout.name, frame.sample_rate)
        out = []
        if self.inner is not None and of != self.of:
            out, self.inner = self.inner.resample(None), None
        if frame is not None:
            if self.inner is None:
                self.inner, self.of = av.AudioResampler(format="fltp", layout=self.stream.layout.name, rate=self.stream.rate), of
            out += self.inner.resample(frame)
        tb = Fraction(1, self.stream.rate)  # one time base for the encoder (a resampler passes frames of its rate through)
        for f in out:
            if f.pts is not None and f.time_base != tb:
                f.pts, f.time_base = round(f.pts * f.time_base / tb), tb
        return out


class AudioCopy:
    """The input's audio streams into the output: packets copied with their own timestamps (less
    ``origin``, the input's time of the output's 0, as the video's), or re-encoded to AAC when the
    container cannot hold the codec or the track's rate or channels change midway (``times``'
    audio_changes). Times given to :meth:`mux_until` are the input's."""

    def __init__(self, out, info: VideoInfo, as_is: set[str] | None, times: FrameTimes):
        import av

        self._in = av.open(str(info.path))
        self.streams = {}
        self.reencoded: list[str] = []  # codecs the container cannot hold
        self.joined: list[str] = []  # tracks whose rate or channels change midway (recordings joined)
        for s in self._in.streams.audio:
            name = codec_name(s)
            if s.index in times.audio_changes:  # copied, the later part would play at the first part's rate
                self.joined.append(f"{name} ({times.audio_changes[s.index]})")
            elif as_is is None or name in as_is:
                try:
                    self.streams[s.index] = (out.add_stream_from_template(s), None)
                except ValueError:  # the muxer refuses it (Matroska: a phone's AMR, a camera's mu-law or ADPCM)
                    pass
            if s.index not in self.streams:
                n = s.codec_context.channels
                if n > AAC_CHANNELS:  # a field recorder's or a microphone array's tracks
                    name, n = f"{name} ({n} channels mixed to stereo)", 2
                if s.index not in times.audio_changes:
                    self.reencoded.append(name)
                o = out.add_stream("aac", rate=aac_rate(s.codec_context.sample_rate or 48000))
                o.layout = {1: "mono", 2: "stereo"}.get(n, f"{n}c")  # PCM often leaves the layout unnamed
                self.streams[s.index] = (o, _Resample(o))
            # the track's language is kept, so that players can name a film's dubs; no other metadata
            if s.metadata.get("language", "und") != "und":
                self.streams[s.index][0].metadata["language"] = s.metadata["language"]
        self._packets = self._in.demux(*self._in.streams.audio)
        self._continuity = Continuity(self._in)  # as the video's times (times.read_frame_times)
        self._origin = times.origin
        self._next = None
        self._out = out
        self.rejected = 0  # damaged packets left out (a stream cut mid-frame): silence there, the rest in sync

    def mux_until(self, t: float, trim: bool = False) -> None:
        """Mux audio packets that start before ``t`` seconds (with ``trim``: that end by ``t``)."""
        import av

        while True:
            if self._next is None:
                self._next = next(self._packets, False)
                if self._next is not False and (shift := self._continuity(self._next)):
                    self._next.dts = None if self._next.dts is None else self._next.dts + shift
                    self._next.pts = None if self._next.pts is None else self._next.pts + shift
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
            try:
                if resampler is None:
                    back = round(self._origin / p.time_base)
                    p.dts, p.pts = p.dts - back, None if p.pts is None else p.pts - back
                    p.stream = o
                    self._out.mux(p)
                else:
                    for frame in p.decode():
                        if frame.pts is not None:
                            frame.pts -= round(self._origin / frame.time_base)
                        self._encode(o, resampler(frame))
            except av.error.InvalidDataError:
                self.rejected += 1

    def _encode(self, stream, frames: list) -> None:
        for frame in frames:
            for q in stream.encode(frame):
                self._out.mux(q)

    def close(self, flush: bool = True) -> None:
        try:
            for o, resampler in self.streams.values() if flush else ():
                if resampler is not None:
                    self._encode(o, resampler(None) + [None])
        finally:
            self._in.close()
