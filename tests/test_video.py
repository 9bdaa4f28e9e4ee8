"""Decoding: the buffer reuse (a chunk still in use anywhere is never overwritten by the next one),
and PyAV alone, no ffmpeg program."""
from __future__ import annotations

import subprocess

import numpy as np
import torch
from helpers import ffmpeg_exe, make_clip, without_ffmpeg

from ppar_cli.media.decode import BufferPool, FrameReader, yuv_format
from ppar_cli.media.probe import probe


def test_pool_never_hands_out_a_buffer_in_use():
    pool = BufferPool(120)
    a = pool.get()
    view = a[:60].reshape(2, 10, 3)  # what the decoder yields
    del a
    b = pool.get()
    assert b is not view.base  # a view keeps its buffer busy
    data = np.ascontiguousarray(view).data  # what waits in the encoder's queue
    del view
    c = pool.get()
    assert c is not data.obj.base and c is not b
    tensor = torch.from_numpy(c[:30].reshape(10, 3))  # what the model reads
    del c
    d = pool.get()
    assert d is not tensor.numpy().base
    busy = {id(data.obj.base), id(tensor.numpy().base)}
    del data, tensor, d
    assert id(pool.get()) in busy  # released buffers come back
    assert len(pool._bufs) == 4


def test_pool_keeps_at_most_its_cap():
    pool = BufferPool(8, keep=2)
    held = [pool.get() for _ in range(5)]
    assert len({id(h) for h in held}) == 5 and len(pool._bufs) == 2


def test_chunks_held_by_the_consumer_stay_intact(tmp_path):
    # Hold every chunk: each must still show its own frames after the decoder moved on.
    path = make_clip(tmp_path / "c.mp4", 64, 48, 70, audio=False)
    held = list(FrameReader(probe(path), backend="ffmpeg").chunks(8))
    assert [len(c) for c in held] == [8] * 8 + [6]
    assert len({id(c.base) for c in held}) == len(held)
    streamed, buffers = [], set()  # the same frames, consumed and dropped one chunk at a time
    for chunk in FrameReader(probe(path), backend="ffmpeg").chunks(8):
        streamed.append(chunk.copy())
        buffers.add(id(chunk.base))
    assert len(buffers) <= 3  # reused
    np.testing.assert_array_equal(np.concatenate(held), np.concatenate(streamed))
    assert len({c.tobytes() for c in held}) == len(held)  # the pattern moves: a reused buffer would show


def test_ppar_needs_no_ffmpeg_program(tmp_path, monkeypatch, tiny_weights):
    """ppar probes, decodes and encodes through PyAV alone (imageio-ffmpeg is for the tests): with
    its program out of reach, a rotated clip is read upright, scaled and anonymized."""
    from ppar_cli import Options, anonymize

    clip = make_clip(tmp_path / "c.mp4", 96, 64, 30, fps=30)
    rotated = tmp_path / "rot.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-display_rotation", "90", "-i", str(clip), "-c", "copy", str(rotated)],
                   check=True)
    upright = tmp_path / "upright.mkv"  # as ffmpeg's program shows it (it applies the rotation), lossless
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-i", str(rotated), "-c:v", "ffv1", str(upright)], check=True)
    shown = np.concatenate(list(FrameReader(probe(upright), "ffmpeg").chunks(7))).astype(int)
    without_ffmpeg(monkeypatch)
    assert probe(rotated).rotation in (90, 270) and (probe(rotated).width, probe(rotated).height) == (64, 96)
    assert np.abs(np.concatenate(list(FrameReader(probe(rotated), "ffmpeg").chunks(7))) - shown).mean() < 2.0
    # a scaled read (the two-pass path's) is upright and the area average of the full-size frames
    import cv2

    info = probe(rotated)
    full = np.concatenate(list(FrameReader(info, "ffmpeg").chunks(7)))
    small = np.concatenate(list(FrameReader(info, "ffmpeg", 40).chunks(7)))
    assert small.shape == (30, 40, 27, 3)
    want = np.stack([cv2.resize(f, (27, 40), interpolation=cv2.INTER_AREA) for f in full])
    # the same picture: swscale's and OpenCV's area averages differ at this sharp pattern's edges
    assert np.abs(small.astype(int) - want).mean() < 10.0 and np.corrcoef(small.ravel(), want.ravel())[0, 1] > 0.95
    [r] = anonymize(rotated, tmp_path / "o.mp4", Options(guard="none"), weights=tiny_weights)
    assert r.status == "ok", r.error
    out = probe(tmp_path / "o.mp4")
    assert (out.width, out.height) == (64, 96) and out.audio_codecs == ["aac"]
    assert sum(len(c) for c in FrameReader(out, "ffmpeg").chunks(16)) == 30


def test_every_display_matrix_is_shown_as_ffmpegs_program_shows_it(tmp_path):
    """Phones store how to show a video (turned, and mirrored by some selfie cameras) in a display
    matrix. Every quarter turn with and without each flip reads as ffmpeg's program shows it; a
    mirrored matrix was read as a rotation alone and came out upside down."""
    clip = make_clip(tmp_path / "c.mp4", 48, 32, 2, audio=False)
    for turn in (0, 90, 180, 270):
        for flips in ([], ["-display_hflip"], ["-display_vflip"], ["-display_hflip", "-display_vflip"]):
            stored, shown = tmp_path / "stored.mp4", tmp_path / "shown.mkv"
            subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-display_rotation", str(turn), *flips, "-i", str(clip),
                            "-c", "copy", str(stored)], check=True)
            subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-i", str(stored), "-c:v", "ffv1", str(shown)], check=True)
            want = np.concatenate(list(FrameReader(probe(shown), "ffmpeg").chunks(2))).astype(int)
            info = probe(stored)
            assert (info.width, info.height) == want.shape[2:0:-1], (turn, flips)
            for reader in (FrameReader(info, "auto"), FrameReader(info, "ffmpeg", yuv=yuv_format(info))):
                got = np.concatenate([c if isinstance(c, np.ndarray) else c[:] for c in reader.chunks(2)])
                assert np.abs(got - want).mean() < 2.0, (turn, flips, np.abs(got - want).mean())


def test_rgb_is_pyavs_own_through_one_swscale_context_per_thread(tmp_path):
    """to_rgb gives PyAV's frame.to_ndarray(format="rgb24") pixels (limited and full range, BT.709,
    scaled by area averaging) and keeps one swscale context for each thread, not one per frame."""
    import threading

    import av

    from ppar_cli.media import decode

    clips = [make_clip(tmp_path / f"c{i}.mp4", 96, 64, 6, audio=False, extra=["-c:v", "libx264", *tags])
             for i, tags in enumerate((["-pix_fmt", "yuvj420p"], ["-pix_fmt", "yuv420p", "-colorspace", "bt709"]))]
    for clip in clips:
        with av.open(str(clip)) as c:
            for f in c.decode(video=0):
                assert (decode.to_rgb(f) == f.to_ndarray(format="rgb24")).all()
                scaled = {"width": 40, "height": 26, "interpolation": "AREA"}
                assert (decode.to_rgb(f, **scaled) == f.to_ndarray(format="rgb24", **scaled)).all()
    mine = decode._SWS.reformatter
    with av.open(str(clips[0])) as c:
        decode.to_rgb(next(c.decode(video=0)))
    assert decode._SWS.reformatter is mine
    theirs = []
    t = threading.Thread(target=lambda: theirs.append((decode.to_rgb(f), decode._SWS.reformatter)))
    t.start()
    t.join()
    assert theirs[0][1] is not mine


def test_the_video_stream_is_the_one_players_pick_not_a_cover_listed_first(tmp_path, tiny_weights):
    """Phones and downloads attach a thumbnail as a second video stream, and a container may list it
    first (or a second, smaller angle, or a larger still as a track): the first stream alone once
    gave a 1-frame output of the cover, "ok". The video read is the one marked default, of several
    frames and largest, never the cover, which is not copied to the output (it may show a face)."""
    from ppar_cli import Options, anonymize

    clip = make_clip(tmp_path / "c.mp4", 96, 64, 30, audio=False)
    cover = make_clip(tmp_path / "cover.jpg", 32, 32, 1, audio=False)
    still = make_clip(tmp_path / "still.jpg", 160, 160, 1, audio=False)
    for name, maps in (("first.mkv", ["-i", str(cover), "-i", str(clip), "-map", "0", "-map", "1", "-disposition:v:0", "0",
                                      "-disposition:v:1", "default"]),
                       ("pic.mp4", ["-i", str(clip), "-i", str(cover), "-map", "0", "-map", "1",
                                    "-disposition:v:1", "attached_pic"]),
                       # a larger still as a track of its own, no flags: FFmpeg's players pass it over too
                       ("still.mkv", ["-i", str(still), "-i", str(clip), "-map", "0", "-map", "1", "-disposition:v:0", "0",
                                      "-disposition:v:1", "0"])):
        src = tmp_path / name
        subprocess.run([ffmpeg_exe(), "-y", "-v", "error", *maps, "-c", "copy", str(src)], check=True)
        info = probe(src)
        assert info.video_streams == 2 and (info.width, info.height) == (96, 64), name
        [r] = anonymize(src, tmp_path / f"o_{name}.mp4", Options(guard="none"), weights=tiny_weights)
        assert r.status == "ok" and r.frames == 30, (name, r.error)
        out = probe(tmp_path / f"o_{name}.mp4")
        assert (out.width, out.height, out.video_streams) == (96, 64, 1), name


def test_a_clock_that_restarts_is_followed_on_and_jitter_moves_one_packet():
    """Continuity on a transport stream's packets (90 kHz): a clock that restarts (recordings joined
    with cat) shifts every later packet to follow on; a step back of a few ticks (a muxer's jitter)
    moves that packet alone, just after the one before, so that no drift adds up."""
    from fractions import Fraction
    from types import SimpleNamespace

    from ppar_cli.media.times import Continuity

    ts = SimpleNamespace(format=SimpleNamespace(flags=0x200))
    stream = SimpleNamespace(index=1)

    def shifts(dts: list[int]) -> list[int]:
        c = Continuity(ts)
        return [c(SimpleNamespace(stream=stream, dts=d, duration=1920, time_base=Fraction(1, 90000))) for d in dts]

    assert shifts([0, 1920, 3840, 5760]) == [0, 0, 0, 0]
    assert shifts([0, 1920, 3840, 3800, 5760, 7680]) == [0, 0, 0, 41, 0, 0]  # jitter: 40 ticks back
    assert shifts([90000, 91920, 93840, 0, 1920]) == [0, 0, 0, 95760, 95760]  # restarted 1 s back
    # restarted at a low time, which FFmpeg's demuxer took for its 33-bit clock's wrap: 26.5 hours ahead
    assert shifts([45126000, 45127920, 2**33 + 126000, 2**33 + 127920]) == [0, 0] + [45129840 - 2**33 - 126000] * 2
    assert shifts([0, 1920, 9 * 90000]) == [0, 0, 0]  # 9 s ahead: a gap in the recording, kept
    assert Continuity(SimpleNamespace(format=SimpleNamespace(flags=0)))(SimpleNamespace(stream=stream, dts=0)) == 0
