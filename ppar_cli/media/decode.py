"""Decoding: consecutive RGB frames in fixed-size chunks through FFmpeg's libraries (PyAV; decord
where it reads the file as it is), so memory stays flat in the video's length."""
from __future__ import annotations

import sys
import threading
from typing import Iterator

import numpy as np

from ppar_cli.errors import reason
from ppar_cli.media.probe import VideoError, VideoInfo, YUVFormat
from ppar_cli.media.times import FrameTimes


POOL_BYTES = 2**30  # chunk buffers kept for reuse, in all (12 at most)
_SWS = threading.local()  # each thread's swscale context (see to_rgb)


def to_rgb(frame, **scale) -> np.ndarray:
    """``frame.to_ndarray(format="rgb24", **scale)``, the same pixels, through one swscale context
    per thread, on one thread. PyAV makes a context for every frame it converts, and since PyAV 17
    each starts a thread per core: 1.0 against 0.4 CPU-ms a 1280x720 frame here on 2 cores
    (0.35 against 0.07 at 320x240), and on an H100 machine's 16 cores 16 threads started for every
    frame the model or the face guard sees. The videos of a run already keep the cores busy."""
    r = getattr(_SWS, "reformatter", None)
    if r is None:
        import av
        from av.video.reformatter import VideoReformatter

        r = _SWS.reformatter = VideoReformatter()
        _SWS.one_thread = {"threads": 1} if int(av.__version__.split(".")[0]) >= 17 else {}
    return r.reformat(frame, format="rgb24", **scale, **_SWS.one_thread).to_ndarray()


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


def yuv_format(info: VideoInfo) -> YUVFormat | None:
    """The video's format where its frames can stay 4:2:0 from decoder to encoder (yuv420p or
    yuvj420p, no rotation or mirroring to apply, an even width and a height that is a multiple of
    4: PyAV wraps no other I420 buffers); else None."""
    fmt = info.source
    if info.rotation or info.mirror or info.width % 2 or info.height % 4 or fmt is None:
        return None
    if fmt.pix_fmt not in ("yuv420p", "yuvj420p") or fmt.size != (info.width, info.height):
        return None
    return fmt


class YUVFrames:
    """k frames as decoded, 4:2:0 (the I420 layout: k x H*3/2 x W), so that ppar fills and encodes
    them without a trip through RGB and back: the kept pixels are the source's own, and at 720p the
    two conversions cost about 2 CPU-ms a frame (`benchmarks/bench.py --stages`). Indexing gives RGB
    (one frame, or a stack for a slice) converted as the decoder's RGB output would be, bit for bit
    (the same swscale, colour space and range): the model and the face guard see a few frames of
    each window, and see them exactly as before."""

    def __init__(self, data: np.ndarray, fmt: YUVFormat):
        self.data, self.fmt = data, fmt
        k, rows, w = data.shape
        self.shape, self.dtype = (k, rows * 2 // 3, w, 3), np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    @property
    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of Y (k, H, W), U and V (k, H/2, W/2)."""
        return _planes(self.data, *self.shape[1:3])

    def __getitem__(self, i: int | slice) -> np.ndarray:
        if isinstance(i, slice):
            picked = range(*i.indices(len(self)))
            return np.stack([self.rgb(j) for j in picked]) if picked else np.empty((0, *self.shape[1:]), np.uint8)
        return self.rgb(i)

    def rgb(self, i: int) -> np.ndarray:
        import av

        f = av.VideoFrame.from_numpy_buffer(self.data[i], format=self.fmt.pix_fmt)
        f.colorspace, f.color_range = self.fmt.colorspace, self.fmt.color_range
        return to_rgb(f)


class Deinterlacer:
    """bwdif on the frames flagged interlaced, one frame out for each frame in, at its time: the
    output is progressive and plays at the source's frame rate as a player shows the source. (Kept
    interlaced, the frames would be written as progressive frames that comb on every movement: the
    encoder takes the field order from each frame's flags, which PyAV cannot set.) The model and the
    face guard see whole frames, not two fields woven together."""

    def __init__(self):
        self._graph = self._shape = None

    def _build(self, f):
        import av.filter

        g = av.filter.Graph()
        src = g.add_buffer(width=f.width, height=f.height, format=f.format, time_base=f.time_base)
        bwdif = g.add("bwdif", "mode=send_frame:parity=auto:deint=interlaced")
        sink = g.add("buffersink")
        src.link_to(bwdif)
        bwdif.link_to(sink)
        g.configure()
        self._graph, self._shape = g, (f.format.name, f.width, f.height)

    def __call__(self, frames: list) -> Iterator:
        for f in frames:
            if self._graph is not None and (f.format.name, f.width, f.height) != self._shape:
                yield from self.flush()  # a stream that changes size midway: a graph for the new size
            if self._graph is None:
                self._build(f)
            self._graph.push(f)
            yield from self._pull()

    def flush(self) -> Iterator:
        if self._graph is not None:
            self._graph.push(None)
            yield from self._pull()
            self._graph = None

    def _pull(self) -> Iterator:
        import av

        while True:
            try:
                yield self._graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return


class FrameReader:
    """Consecutive RGB frames in chunks: through decord for backend "auto" where it reads the file
    as it is, else (backend "ffmpeg", GIFs, rotations, interlaced video, scaled or 4:2:0 reads,
    files with several video streams) through PyAV, from the stream probe chose."""

    def __init__(self, info: VideoInfo, backend: str = "auto", max_side: int | None = None,
                 yuv: YUVFormat | None = None, times: FrameTimes | None = None, threads: int = 0):
        """``times``: the video's frame times, told of the listed frames the decoder does not give.
        ``threads``: the decoder's (0: FFmpeg's choice, about one per core, up to 16)."""
        self.info, self.times, self.threads = info, times, threads
        self.yuv = yuv if max_side is None else None  # chunks of YUVFrames (4:2:0 as decoded), not RGB
        self.backend = "ffmpeg"
        self.damage: str | None = None  # the decoder's complaint about a file it still decoded (truncated, corrupt)
        # a stream that changes size midway: the first other size and where (such frames are fitted in, _fit)
        self.resized: str | None = None
        self._vr = None
        # max_side: frames scaled down (area averaging) so their long side is at most this
        s = min(1.0, max_side / max(info.width, info.height)) if max_side else 1.0
        self.width, self.height = max(1, round(info.width * s)), max(1, round(info.height * s))
        # decord reads the stream it picks itself: only where there is no other to pick; it reads a
        # stream that changes size as if it had one (the first's, or the last's in MPEG-TS), garbage
        if backend != "ffmpeg" and s == 1.0 and info.rotation == 0 and not info.mirror and info.codec != "gif" and self.yuv is None \
                and not info.interlaced and info.video_streams == 1 and info.keeps_its_size():
            try:
                import decord

                vr = decord.VideoReader(str(info.path), num_threads=1)
                if len(vr) > 0 and vr[0].shape[:2] == (info.height, info.width):
                    self._vr, self.backend = vr, "decord"
                    info.num_frames = len(vr)
            except Exception:  # decord raises its own error types for anything it cannot open
                self._vr = None

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """One frame as the chunks hold it: (H*3/2, W) in 4:2:0, else (H, W, 3)."""
        return (self.height * 3 // 2, self.width) if self.yuv else (self.height, self.width, 3)

    @property
    def frame_bytes(self) -> int:
        return int(np.prod(self.frame_shape))

    def _pool(self, n: int) -> BufferPool:
        """Buffers for chunks of n frames, as many as POOL_BYTES allows (2 to 12)."""
        return BufferPool(self.frame_bytes * n, keep=max(2, min(12, POOL_BYTES // (self.frame_bytes * n))))

    def chunks(self, n: int) -> Iterator[np.ndarray | YUVFrames]:
        """Yield uint8 arrays (k, H, W, 3), k <= n, covering every frame once, in order (YUVFrames
        with ``yuv``)."""
        if n < 1:
            raise ValueError(f"chunk size must be at least 1, got {n}")
        yield from self._decord_chunks(n) if self._vr is not None else self._av_chunks(n)

    def window(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) as one uint8 array (fewer where the video ends first), the frames
        :meth:`chunks` gives there: decord seeks to them; PyAV decodes from the start and drops
        those before. RGB only."""
        if self._vr is not None:
            stop = min(stop, len(self._vr))
            if stop <= start:
                return np.zeros((0, *self.frame_shape), np.uint8)
            try:
                return self._vr.get_batch(list(range(start, stop))).asnumpy()
            except Exception:  # decord rejects some files only when decoding: use PyAV, as chunks does
                self._vr, self.backend, self.info.num_frames = None, "ffmpeg", None
        out, left = [], stop - start
        for chunk in self._av_chunks(min(64, left), skip=start) if left > 0 else ():
            out.append(chunk[:left].copy())  # the pool reuses its buffers
            left -= len(out[-1])
            if left <= 0:
                break
        return np.concatenate(out) if out else np.zeros((0, *self.frame_shape), np.uint8)

    def _decord_chunks(self, n: int) -> Iterator[np.ndarray]:
        total = len(self._vr)
        for start in range(0, total, n):
            try:
                batch = self._vr.get_batch(list(range(start, min(start + n, total)))).asnumpy()
            except Exception as e:
                if start == 0:  # decord rejects some files only when decoding (e.g. narrow frames): use PyAV
                    self._vr, self.backend, self.info.num_frames = None, "ffmpeg", None
                    yield from self._av_chunks(n)
                    return
                raise VideoError(f"{self.info.path}: decode failed at frame {start} ({reason(e)})") from None
            yield batch

    def _av_chunks(self, n: int, skip: int = 0) -> Iterator[np.ndarray | YUVFrames]:
        """Every decoded frame once, upright, scaled by area averaging, each straight into a pooled
        chunk buffer (no list of frames to stack, no fresh memory for every window); the first
        ``skip`` frames are decoded (a window read from its file starts there) but not converted.
        Each frame's own timestamp goes to ``times``, so frames after an undecodable stretch keep
        their place; a packet the decoder rejects is skipped and, as a frame decoded with errors,
        noted in ``damage``. (Until 0.3.7, ffmpeg's program decoded through a pipe where it was
        installed: its raw frames carry no timestamps.)

        FFmpeg's log is left off: PyAV hands it to Python, so a decoder thread that logs waits for
        the GIL, and a codec freed meanwhile (which holds the GIL) waits for that thread: a
        deadlock, met in the tests. A file that ends early, which the demuxer tells only on that log
        ("File ended prematurely"), is told by its header instead (times.read_frame_times)."""
        import av

        k = self.info.rotation // 90  # the display matrix's angle, counterclockwise
        w, h = (self.height, self.width) if k % 2 else (self.width, self.height)  # before rotating
        size = (self.info.height, self.info.width) if k % 2 else (self.info.width, self.info.height)  # as decoded
        scaled = (self.width, self.height) != (self.info.width, self.info.height)
        shape, pool = self.frame_shape, self._pool(n)
        chunk, got, index, corrupt, rejected = pool.get().reshape(n, *shape), 0, 0, 0, None
        # Frames are placed by their own timestamps only at the start and once the stream is seen
        # damaged: a healthy AVI with packed B-frames gives frames whose times are out of order.
        damaged = False

        def decoded(c, v) -> Iterator:
            nonlocal rejected, corrupt, damaged
            deinterlace = Deinterlacer() if self.info.interlaced else None
            for packet in c.demux(v):
                damaged |= packet.is_corrupt  # the demuxer saw a gap (a transport stream's lost packets)
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError as e:
                    rejected, damaged = e.strerror, True
                    continue
                for f in frames:
                    corrupt += f.is_corrupt
                    damaged |= f.is_corrupt
                yield from deinterlace(frames) if deinterlace else frames
            if deinterlace:
                yield from deinterlace.flush()

        try:
            with av.open(str(self.info.path)) as c:
                v = c.streams[self.info.stream]
                v.thread_type, v.thread_count = "AUTO", self.threads
                for f in decoded(c, v):
                    if self.times is not None and (damaged or index == 0):
                        self.times.decoded(index, f.pts)
                    index += 1
                    if index <= skip:
                        continue
                    other_size = (f.width, f.height) != size
                    if other_size and self.resized is None:
                        self.resized = f"{f.width}x{f.height} from frame {index - 1}"
                    if self.yuv:
                        _copy_i420(f, chunk[got], self.yuv)
                    else:
                        rgb = _fit_rgb(f, w, h) if other_size else \
                            to_rgb(f, width=w, height=h, interpolation="AREA" if scaled else None)
                        rgb = np.rot90(rgb, k) if k else rgb
                        chunk[got] = rgb[:, ::-1] if self.info.mirror else rgb
                    got += 1
                    if got == n:
                        yield YUVFrames(chunk, self.yuv) if self.yuv else chunk
                        chunk, got = pool.get().reshape(n, *shape), 0
        except av.error.FFmpegError as e:
            raise VideoError(f"{self.info.path}: decode failed ({e.strerror})") from None
        if rejected or corrupt:
            self.damage = (rejected or f"{corrupt} frame{'s' * (corrupt > 1)} decoded with errors")[:200]
        if got:
            yield YUVFrames(chunk[:got], self.yuv) if self.yuv else chunk[:got]


def _planes(data: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V views of I420 frames (k, h*3/2, w): the chroma planes start mid-row when h % 4."""
    flat = data.reshape(len(data), -1)
    q = h * w // 4
    return (flat[:, :4 * q].reshape(-1, h, w), flat[:, 4 * q:5 * q].reshape(-1, h // 2, w // 2),
            flat[:, 5 * q:].reshape(-1, h // 2, w // 2))


def _fit(width: int, height: int, w: int, h: int) -> tuple[int, int, int, int]:
    """Where a frame of another size than the stream's first goes in its w x h: x, y, width, height
    of the largest rectangle of its aspect, centred, on even pixels (4:2:0's chroma). A stream can
    change size midway (a recording across a camera's mode change, a WebRTC call, spliced segments);
    one H.264 stream cannot, so such frames are fitted in with black bars, never stretched as
    FFmpeg's scaler would."""
    s = min(w / width, h / height)
    fw, fh = (min(n, max(1, 2 * round(m * s / 2))) for n, m in ((w, width), (h, height)))
    return (w - fw) // 4 * 2, (h - fh) // 4 * 2, fw, fh


def _fit_rgb(f, w: int, h: int) -> np.ndarray:
    """A frame of another size fitted into w x h RGB, black around it (_fit)."""
    x, y, fw, fh = _fit(f.width, f.height, w, h)
    out = np.zeros((h, w, 3), np.uint8)
    out[y:y + fh, x:x + fw] = to_rgb(f, width=fw, height=fh, interpolation="AREA")
    return out


def _copy_i420(f, out: np.ndarray, fmt: YUVFormat) -> None:
    """A decoded frame's three planes into ``out`` (H*3/2 x W, I420), without their row padding; a
    frame of another size fitted in, black around it (_fit)."""
    h, w = out.shape[0] * 2 // 3, out.shape[1]
    planes = _planes(out[None], h, w)
    x = y = 0
    if (f.width, f.height) != (w, h):
        x, y, fw, fh = _fit(f.width, f.height, w, h)
        f = f.reformat(width=fw, height=fh, format=fmt.pix_fmt, interpolation="AREA")
        for dst, value in zip(planes, (fmt.black, 128, 128)):
            dst[0] = value
    elif f.format.name != fmt.pix_fmt:  # a stream that changes format midway
        f = f.reformat(format=fmt.pix_fmt)
    for i, (plane, dst) in enumerate(zip(f.planes, planes)):
        d = 2 if i else 1  # chroma: half the size, half the offsets
        rows, cols = f.height // d, f.width // d
        dst[0, y // d:y // d + rows, x // d:x // d + cols] = \
            np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:rows, :cols]
