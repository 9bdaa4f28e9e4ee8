"""The output plays like the input: frame times, start offset against the audio, pixel aspect
ratio, duration, the container the name asks for (clips made with ffmpeg's lavfi sources)."""
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED, ffmpeg, ffmpeg_exe, make_clip, needs_shared

from ppar_cli import Options, anonymize
from ppar_cli.errors import UsageError
from ppar_cli.media.probe import probe


def streams(path):
    """{type: (start seconds, duration seconds)} per stream, and the video's frame times in seconds."""
    import av

    with av.open(str(path)) as c:
        out = {s.type: (float(s.start_time * s.time_base) if s.start_time is not None else 0.0,
                        float(s.duration * s.time_base) if s.duration else None) for s in c.streams}
        v = c.streams.video[0]
        times = np.array(sorted(float(p.pts * p.time_base) for p in c.demux(v) if p.size and p.pts is not None))
    return out, times


def run(src, dst, **kw):
    [r] = anonymize(src, dst, Options(guard="none", **kw), weights=run.weights)
    assert r.status == "ok", r.error
    return r


@pytest.fixture(autouse=True)
def _weights(tiny_weights):
    run.weights = tiny_weights


def test_video_that_starts_after_its_audio_stays_in_sync(tmp_path):
    v = make_clip(tmp_path / "v.mp4", 96, 64, 75, audio=False)
    src = tmp_path / "late.mp4"
    ffmpeg("-itsoffset", "0.844", "-i", v, "-f", "lavfi", "-i", "sine=frequency=440:duration=4",
           "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", src)
    run(src, tmp_path / "o.mp4")
    out, times = streams(tmp_path / "o.mp4")
    assert abs(out["video"][0] - 0.844) < 0.005 and abs(out["audio"][0] - 0.0) < 0.005, out
    assert abs(times[0] - 0.844) < 0.005 and len(times) == 75


def test_pixel_aspect_ratio_is_kept(tmp_path):
    src = make_clip(tmp_path / "sar.mp4", 96, 64, 20, audio=False, extra=["-vf", "setsar=64/51"])
    run(src, tmp_path / "o.mp4")
    import av

    with av.open(str(tmp_path / "o.mp4")) as c:
        assert Fraction(c.streams.video[0].sample_aspect_ratio) == Fraction(64, 51)


@pytest.mark.parametrize("kind", ["gif15", "vfr_mp4"])
def test_frame_times_and_duration_are_kept(tmp_path, kind):
    if kind == "gif15":  # 15 fps: GIF delays of 6 and 7 centiseconds, 2.99-3.0 s in all
        src = tmp_path / "in.gif"
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=15", "-t", "3", src)
    else:  # variable frame rate: jittered timestamps
        src = tmp_path / "vfr.mp4"
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=30", "-vf", "setpts='PTS+0.02*random(0)/TB'",
               "-fps_mode", "vfr", "-t", "2", "-c:v", "libx264", src)
    run(src, tmp_path / "o.mp4")
    (_, t_in), (out, t_out) = streams(src), streams(tmp_path / "o.mp4")
    assert len(t_out) == len(t_in) and np.abs(t_out - t_in).max() < 0.002
    frame = np.diff(t_in).mean()
    assert abs(out["video"][1] - (t_in[-1] - t_in[0] + frame)) <= frame  # duration within one frame


def test_a_held_last_frame_and_a_camcorders_dv_keep_their_length(tmp_path):
    """x264's packets last a tick of the stream's rate, and an MP4 track ends at its last packet in
    decoding order: a GIF whose last frame is held 2 s came out 1.0 s long instead of 2.9, and a DV
    file (whose demuxer states 60000 fps) 2.96 s instead of 3.0, at 25.34 fps. The last packet now
    ends the track with the video, and an implausible rate is passed over."""
    import av

    gif, dv = tmp_path / "hold.gif", tmp_path / "cam.dv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=10", "-t", 1, "-final_delay", 200, gif)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=720x576:rate=25", "-t", 1, "-vf", "setsar=64/45", "-c:v", "dvvideo",
           "-pix_fmt", "yuv420p", dv)
    assert probe(dv).fps == 25
    for src, length in ((gif, 2.9), (dv, 1.0)):
        for suffix in (".mp4", ".mov", ".mkv"):
            out = tmp_path / f"{src.stem}{suffix}"
            run(src, out, scores_path=tmp_path / f"{src.stem}{suffix}.json")
            with av.open(str(out)) as c:
                assert abs(c.duration / 1e6 - length) < 0.005, (out.name, c.duration / 1e6)
                if suffix != ".mkv":
                    assert abs(movie_seconds(out) - length) < 0.005
                    assert abs(float(c.streams.video[0].average_rate) - len(streams(src)[1]) / length) < 0.01


@pytest.mark.parametrize("codec,suffix", [("libx264", ".h264"), ("libx265", ".hevc")])
def test_an_elementary_stream_plays_at_its_headers_rate(tmp_path, codec, suffix):
    """A recorder's raw .h264 or .hevc export has no container and no timestamps: FFmpeg's demuxer
    assumes 25 fps, so 30 fps footage came out 20% slow. The rate is the codec header's (VUI)."""
    src = tmp_path / f"raw{suffix}"
    quiet = ["-x265-params", "log-level=none"] if codec == "libx265" else []  # x265 logs past -v error
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=30", "-t", "2", "-c:v", codec, *quiet, src)
    assert probe(src).fps == 30
    run(src, tmp_path / "o.mp4")
    out, times = streams(tmp_path / "o.mp4")
    assert len(times) == 60 and np.allclose(np.diff(times), 1 / 30, atol=1e-3) and abs(out["video"][1] - 2.0) < 0.01


@pytest.mark.parametrize("suffix,codec", [(".mkv", ["-c:v", "mjpeg"]), (".mp4", ["-movflags", "+faststart"])])
def test_damaged_input_keeps_only_the_audio_of_the_video_written(tmp_path, suffix, codec):
    """A file cut short, every packet it still holds whole: its header states a longer duration
    than its streams reach (the demuxer says "File ended prematurely" only on FFmpeg's log)."""
    src = tmp_path / f"full{suffix}"
    make_clip(src, 96, 64, 300, audio=True, extra=codec)
    data = src.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])  # half the file: about half the video
    r = run(cut, tmp_path / "o.mp4")
    out, times = streams(tmp_path / "o.mp4")
    assert 0 < r.frames < 300 and any("damaged input" in n and "cut short" in n for n in r.notes), r.notes
    assert run(cut, tmp_path / "again.mp4").notes == r.notes  # a rerun says the same
    end = times[-1] + 0.04
    assert out["audio"][1] is not None and out["audio"][0] + out["audio"][1] <= end + 0.1, (out, end)


@pytest.mark.parametrize("suffix,fmt", [(".mkv", "matroska"), (".mov", "mov"), (".m4v", "mp4")])
def test_output_container_follows_the_name(tmp_path, suffix, fmt):
    src = make_clip(tmp_path / "in.mp4", 96, 64, 12)
    run(src, tmp_path / f"o{suffix}")
    import av

    with av.open(str(tmp_path / f"o{suffix}")) as c:
        assert fmt in c.format.name and c.streams.video[0].codec_context.name == "h264"
        assert len(c.streams.audio) == 1
    assert (tmp_path / "o.json").exists()


def test_output_name_that_would_lie_is_refused(tmp_path):
    src = make_clip(tmp_path / "in.mp4", 96, 64, 12, audio=False)
    for name in ("o.avi", "o.webm", "o"):  # "o": `ppar anonymize in.mp4 o/` meant a folder that is not there
        said = "extension" if "." in name else "o: no such folder \\(make it first to write .*o/in.mp4 there\\)"
        with pytest.raises(UsageError, match=said):
            anonymize(src, tmp_path / name, Options(guard="none"), weights=run.weights)
        assert not (tmp_path / name).exists()


def test_audio_that_mp4_cannot_hold_becomes_aac(tmp_path):
    src = make_clip(tmp_path / "pcm.mkv", 96, 64, 25, audio=False)
    withpcm = tmp_path / "pcm2.mkv"
    ffmpeg("-i", src, "-f", "lavfi", "-i", "sine=frequency=300:duration=1", "-map", "0:v", "-map", "1:a",
           "-c:v", "copy", "-c:a", "pcm_s16le", withpcm)
    said = run(withpcm, tmp_path / "o.mp4").notes  # and says so
    assert said == ["audio pcm_s16le re-encoded to AAC: .mp4 cannot hold it as it is (.mkv holds more)"], said
    assert run(withpcm, tmp_path / "k.mkv").notes == []
    assert probe(tmp_path / "o.mp4").audio_codecs == ["aac"]
    assert probe(tmp_path / "k.mkv").audio_codecs == ["pcm_s16le"]
    out, _ = streams(tmp_path / "o.mp4")
    assert abs(out["audio"][1] - 1.0) < 0.1
    # nor can Matroska hold everything: a security camera's mu-law sound failed the video into .mkv
    mulaw = tmp_path / "cam.mov"
    ffmpeg("-i", src, "-f", "lavfi", "-i", "sine=frequency=300:duration=1:sample_rate=8000", "-map", "0:v", "-map", "1:a",
           "-c:v", "copy", "-c:a", "pcm_mulaw", mulaw)
    assert run(mulaw, tmp_path / "m.mkv").notes == ["audio pcm_mulaw re-encoded to AAC: .mkv cannot hold it as it is"]
    assert probe(tmp_path / "m.mkv").audio_codecs == ["aac"]


@pytest.mark.parametrize("codec", ["flac", "libopus", "alac", "ac3", "libmp3lame", "pcm_s24le", "pcm_mulaw"])
def test_every_container_takes_the_sound_as_it_is_or_as_aac(tmp_path, codec):
    """Each of ppar's containers holds a track as it is where it can, else as AAC, and the video
    never fails for its sound: Opus and FLAC into .mov failed (`encoding failed (Invalid
    argument)`), mu-law into .mkv too."""
    from ppar_cli.media.audio import AUDIO_AS_IS
    from ppar_cli.media.encode import OUTPUT_CONTAINERS

    src = tmp_path / "in.mov" if codec == "pcm_mulaw" else tmp_path / "in.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000",
           "-t", 1, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", codec, *(["-ar", 8000] if codec == "pcm_mulaw" else []), src)
    [name] = probe(src).audio_codecs
    for suffix in (".mp4", ".mov", ".mkv"):
        out = tmp_path / f"o{suffix}"
        said = run(src, out, scores_path=tmp_path / f"o{suffix}.json").notes
        [got] = probe(out).audio_codecs
        holds = AUDIO_AS_IS[OUTPUT_CONTAINERS[suffix]]
        assert got == name if holds is not None and name in holds else got in (name, "aac"), (suffix, got)
        assert bool(said) == (got != name), (suffix, said)


@pytest.mark.parametrize("rate,channels", [(192000, 1), (5512, 1), (48000, 10)])
def test_sound_that_aac_cannot_take_as_it_is_is_resampled_or_mixed(tmp_path, rate, channels):
    """A pro recorder's 192 kHz PCM, an old 5.5 kHz track, a microphone array's 10 channels: into
    .mp4 they are AAC, whose encoder takes none of them, and the video failed with `encoding failed
    (Invalid argument)`. The rate is AAC's nearest above (or its highest), more than 8 channels are
    mixed to stereo, and the note says so."""
    src = tmp_path / "pcm.mkv"
    mix = "|".join(f"c{i}=c0" for i in range(channels))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-f", "lavfi", "-i", f"sine=frequency=300:sample_rate={rate}",
           "-t", 1, "-filter_complex", f"[1:a]pan={channels}c|{mix}[a]", "-map", "0:v", "-map", "[a]",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", src)
    said = run(src, tmp_path / "o.mp4").notes
    assert len(said) == 1 and ("mixed to stereo" in said[0]) == (channels > 8), said
    import av

    with av.open(str(tmp_path / "o.mp4")) as c:
        a = c.streams.audio[0]
        assert a.codec_context.name == "aac" and a.codec_context.channels == min(channels, 2)
        assert a.codec_context.sample_rate == {192000: 96000, 5512: 7350, 48000: 48000}[rate]
        assert abs(float(a.duration * a.time_base) - 1.0) < 0.05


def test_two_pass_path_for_huge_frames_gives_the_same_video(tmp_path, monkeypatch):
    """Above a window's byte budget a file is scored on small frames, then filled at full size a few
    frames at a time; on a clip already below the scoring size both paths must give the same frames."""
    from ppar_cli.media.decode import FrameReader
    from ppar_cli.pipeline import front, stream

    src = make_clip(tmp_path / "in.mp4", 96, 64, 70)
    one = run(src, tmp_path / "one.mp4")
    monkeypatch.setattr(front, "WINDOW_BYTES", 1)
    monkeypatch.setattr(stream, "FILL_BYTES", 3 * 96 * 64 * 3)  # three frames per chunk: chunks straddle windows
    two = run(src, tmp_path / "two.mp4")
    assert any("two passes" in n for n in two.notes) and one.frames == two.frames == 70
    import json

    k1, k2 = (np.array([w["keep"] for w in json.loads((tmp_path / f"{n}.json").read_text())["windows"]]) for n in ("one", "two"))
    assert k1.shape == k2.shape and (k1 == k2).mean() >= 0.97  # the same decisions (float near-ties aside)
    a, b = (np.concatenate(list(FrameReader(probe(tmp_path / n)).chunks(32))) for n in ("one.mp4", "two.mp4"))
    assert a.shape == b.shape and np.abs(a.astype(int) - b).mean() < 3
    assert probe(tmp_path / "two.mp4").audio_codecs == ["aac"]


def test_colours_reach_the_encoder_as_ffmpeg_would_convert_them():
    """The encoder's RGB -> yuv420p conversion (OpenCV's, for speed) keeps the colours as well as
    FFmpeg's own: luma within a level of it, decoded RGB no further from the input than FFmpeg's
    round trip, black stays black (a swapped channel order or a full-range matrix would be tens of
    levels off)."""
    import av

    from ppar_cli.media.encode import video_frame

    pytest.importorskip("cv2")
    g = np.random.default_rng(0)
    rgb = np.repeat(np.repeat(g.integers(0, 256, (18, 32, 3), dtype=np.uint8), 4, 0), 4, 1)  # 4x4 blocks of colour
    rgb[:8] = 0
    ours = video_frame(rgb, "yuv420p")
    assert ours.format.name == "yuv420p"
    ref = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    H = rgb.shape[0]
    assert np.abs(ours.to_ndarray()[:H].astype(int) - ref.to_ndarray()[:H]).max() <= 1
    err = [np.abs(f.to_ndarray(format="rgb24").astype(int) - rgb).mean() for f in (ours, ref)]
    assert err[0] <= err[1] + 0.5, err
    assert (ours.to_ndarray()[:8] == 16).all()  # black: the limited range's floor


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="thread priorities are read from /proc")
def test_encoder_runs_behind_the_rest(tmp_path):
    """The encoder's thread (and x264's, which it starts) yields the cores to the stages ahead of it,
    for frames up to 640x480; larger ones keep their priority (lagging would only hold more frames)."""
    import time

    from ppar_cli.media.encode import ENCODER_NICE, VideoWriter

    for (width, height), nice in (((64, 48), ENCODER_NICE), ((1280, 720), 0)):
        w = VideoWriter(tmp_path / f"o{width}.mp4", width, height, Fraction(25))
        try:
            w.write(np.zeros((2, height, width, 3), np.uint8))
            while not w._queue.empty():  # taken: the thread is past its priority setting
                time.sleep(0.01)
            stat = open(f"/proc/self/task/{w._thread.native_id}/stat").read()
            assert int(stat[stat.rindex(")") + 2:].split()[16]) == nice  # field 19: nice
        finally:
            w.commit()


def i420(path):
    """Every frame of a 4:2:0 file as decoded (k, H*3/2, W), with its format."""
    from ppar_cli.media.decode import FrameReader, yuv_format

    info = probe(path)
    fmt = yuv_format(info)
    return np.concatenate([c.data.copy() for c in FrameReader(info, "ffmpeg", yuv=fmt).chunks(32)]), fmt


@pytest.mark.parametrize("tags", [["-pix_fmt", "yuv420p"],
                                  ["-pix_fmt", "yuvj420p"],
                                  ["-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_range", "tv"]])
def test_black_fill_keeps_the_sources_own_4_2_0_pixels_and_tags(tmp_path, tags):
    """With the black fill, frames stay 4:2:0 from decoder to encoder: at crf 0 every kept pixel is
    the source's own (no trip through RGB), pruned luma is the format's black and pruned chroma
    neutral, and the output carries the source's range and colour space. The model and the face
    guard still see exactly the RGB they saw before (the same tubelets as the RGB path's mean fill)."""
    import json

    from ppar_cli.core.clips import pixel_mask, slab_index
    from ppar_cli.core.weights import load_weights
    from ppar_cli.media.decode import FrameReader

    # 90x68: cell edges fall on odd pixels, so some chroma samples straddle a kept and a pruned cell
    src = make_clip(tmp_path / "s.mp4", 90, 68, 40, audio=False, extra=["-c:v", "libx264", "-crf", "18", *tags])
    run(src, tmp_path / "o.mp4", crf=0)
    run(src, tmp_path / "m.mp4", crf=0, fill="mean")
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["windows"] for n in ("o", "m"))
    assert [w["keep"] for w in a] == [w["keep"] for w in b]
    (s, fmt), (o, ofmt) = i420(src), i420(tmp_path / "o.mp4")
    assert ofmt == fmt and fmt is not None
    rgb = np.concatenate(list(FrameReader(probe(tmp_path / "o.mp4"), "ffmpeg").chunks(32)))
    H, W, cfg = 68, 90, load_weights(run.weights).model.cfg
    for w in a:
        keep = np.array(w["keep"], bool)
        for f, slab in zip(range(w["start"], w["start"] + w["frames"]), slab_index(w["frames"], cfg)):
            m = pixel_mask(keep[slab], H, W)
            assert (o[f][:H][m] == s[f][:H][m]).all()  # luma: the source's own
            assert (o[f][:H][~m] == fmt.black).all() and (rgb[f][~m] == 0).all()  # black as a player shows it
            chroma = o[f][H:].reshape(2, H // 2, W // 2)
            fully_kept = m.reshape(H // 2, 2, W // 2, 2).all(axis=(1, 3))  # 2x2 blocks wholly kept
            assert (chroma[:, fully_kept] == s[f][H:].reshape(2, H // 2, W // 2)[:, fully_kept]).all()
            assert (chroma[:, ~fully_kept] == 128).all()  # any pruned pixel under it: neutral


def test_yuv_frames_give_the_decoders_rgb_bit_for_bit(tmp_path):
    """What the model and the face guard see of 4:2:0 frames equals the decoder's RGB output, by
    PyAV, for limited and full range and a BT.709 source."""
    from ppar_cli.media.decode import FrameReader, yuv_format

    for i, tags in enumerate((["-pix_fmt", "yuvj420p"], ["-pix_fmt", "yuv420p", "-colorspace", "bt709"])):
        src = make_clip(tmp_path / f"c{i}.mp4", 96, 64, 20, audio=False, extra=["-c:v", "libx264", *tags])
        info = probe(src)
        rgb = np.concatenate(list(FrameReader(info, "ffmpeg").chunks(8)))
        reader = FrameReader(info, "ffmpeg", yuv=yuv_format(info))
        got = np.concatenate([c[:] for c in reader.chunks(8)])
        assert got.shape == rgb.shape and (got == rgb).all()
    odd = make_clip(tmp_path / "h66.mp4", 90, 66, 4, audio=False, extra=["-c:v", "libx264", "-pix_fmt", "yuv420p"])
    assert yuv_format(probe(odd)) is None  # PyAV wraps 4:2:0 buffers only for heights that are multiples of 4


@pytest.mark.parametrize("pix_fmt,matrix,tags,want,close", [
    ("yuv420p", "bt709", "colorspace=bt709:color_primaries=bt709:color_trc=bt709", (1, 1), 2.5),
    # HLG, 10 bits: sharper losses on this saturated pattern (3.6 as tagged, 7.6 taken for BT.709)
    ("yuv420p10le", "bt2020", "colorspace=bt2020nc:color_primaries=bt2020:color_trc=arib-std-b67", (9, 18), 5.5),
])
def test_rgb_frames_are_tagged_as_encoded_with_the_sources_primaries_and_transfer(tmp_path, pix_fmt, matrix, tags, want, close):
    """Frames through RGB (here the mean fill) are encoded as BT.601 limited range, and the output
    says so: untagged, an HD player takes BT.709 (0.85 levels from the source's RGB as tagged, 5.4
    taken for BT.709, on this pattern). The source's primaries and transfer stay, so an HDR (HLG,
    PQ) video is still shown as HDR."""
    import json

    import av

    from ppar_cli.core.clips import pixel_mask, slab_index
    from ppar_cli.core.weights import load_weights
    from ppar_cli.media.decode import FrameReader

    vf = f"scale=out_color_matrix={matrix}:out_range=tv,format={pix_fmt},setparams={tags}:range=tv"
    src = make_clip(tmp_path / "s.mp4", 96, 64, 20, audio=False, extra=["-vf", vf, "-c:v", "libx264", "-crf", "10"])
    run(src, tmp_path / "o.mp4", crf=0, fill="mean")
    with av.open(str(tmp_path / "o.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]  # as tagged
        f = c.streams.video[0].codec_context
    assert (f.colorspace, f.color_range, f.color_primaries, f.color_trc) == (6, 1, *want)
    s = np.concatenate(list(FrameReader(probe(src), "ffmpeg").chunks(32))).astype(int)
    cfg, errors = load_weights(run.weights).model.cfg, []
    for w in json.loads((tmp_path / "o.json").read_text())["windows"]:
        keep = np.array(w["keep"], bool)
        for i, slab in zip(range(w["start"], w["start"] + w["frames"]), slab_index(w["frames"], cfg)):
            m = pixel_mask(keep[slab], 64, 96)
            errors.append(np.abs(frames[i][m] - s[i][m]).mean())
    assert np.mean(errors) < close


def test_the_sources_metadata_is_not_carried(tmp_path):
    """A phone's location, a title naming someone, a stream's name: none reaches the output."""
    import av

    src = make_clip(tmp_path / "c.mp4", 96, 64, 10)
    tagged = tmp_path / "tagged.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(src), "-c", "copy", "-metadata", "title=Jane Doe at home",
                    "-metadata", "location=+37.7749-122.4194/", "-metadata:s:v:0", "title=Jane's phone",
                    "-movflags", "use_metadata_tags", str(tagged)], check=True)
    run(tagged, tmp_path / "o.mp4")
    with av.open(str(tmp_path / "o.mp4")) as c:
        said = " ".join([*c.metadata.values(), *(v for s in c.streams for v in s.metadata.values())])
    assert "Jane" not in said and "37.7749" not in said, said


def test_subtitles_are_not_carried(tmp_path):
    """Subtitles can name the people the picture no longer shows, telemetry say where they were:
    only video and audio are written, and a note says what was left out (it said nothing)."""
    import av

    srt = tmp_path / "s.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,300\nJane Doe, 42 Elm Street\n")
    src, out = tmp_path / "sub.mkv", tmp_path / "o.mkv"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(make_clip(tmp_path / "c.mp4", 96, 64, 10)), "-i", str(srt),
                    "-map", "0", "-map", "1", "-c:v", "copy", "-c:a", "copy", "-c:s", "srt", str(src)], check=True)
    assert b"Jane" in src.read_bytes()
    said = run(src, out).notes
    with av.open(str(out)) as c:
        assert sorted(s.type for s in c.streams) == ["audio", "video"]
    assert b"Jane" not in out.read_bytes()
    assert said == ["left out: subtitle (subrip) (ppar writes the video and its sound; subtitles, telemetry and attachments "
                    "may name people or places)"], said
    timed = tmp_path / "tc.mov"  # a camera's timecode track: a data stream
    ffmpeg("-i", tmp_path / "c.mp4", "-c", "copy", "-timecode", "01:00:00:00", timed)
    assert run(timed, tmp_path / "tc_out.mov").notes[0].startswith("left out: data (")


@pytest.mark.parametrize("fill", ["black", "blur"])  # 4:2:0 from decoder to encoder, and through RGB
def test_a_stream_that_changes_size_midway_is_fitted_in_not_stretched(tmp_path, fill):
    """Spliced segments, a camera's mode change, a WebRTC call: a stream can change size midway.
    One H.264 stream cannot, so the later frames are fitted into the first size with their aspect
    kept and black bars around them (they were stretched, as FFmpeg's scaler does), with a note."""
    parts = []
    for i, (size, colour) in enumerate((("320x240", "gray"), ("640x240", "white"))):
        parts.append(tmp_path / f"{i}.ts")
        ffmpeg("-f", "lavfi", "-i", f"color={colour}:size={size}:rate=25", "-frames:v", 20, "-pix_fmt", "yuv420p",
               "-c:v", "libx264", parts[-1])
    src, out = tmp_path / "spliced.ts", tmp_path / "out.mp4"
    src.write_bytes(b"".join(p.read_bytes() for p in parts))  # what `cat` of two recordings gives
    r = run(src, out, keep_ratio=1.0, fill=fill)
    assert any("640x240 from frame 20" in n and "fitted into 320x240" in n for n in r.notes), r.notes
    ys = _luma(out)
    assert ys.shape == (40, 240, 320)
    assert np.all(np.abs(ys[:20] - ys[0, 120, 160]) < 3)  # the first size as it was
    later = ys[20:]  # 640x240 in 320x240: 320x120 in the middle, 60 rows of black above and below
    assert later[:, :56].max() < 20 and later[:, -56:].max() < 20, (later[:, :56].max(), later[:, -56:].max())
    assert later[:, 64:176].min() > 230


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_recordings_joined_with_other_sound_play_at_their_own_pitch(tmp_path, suffix):
    """Two recordings joined with `cat` whose sound differs (48 kHz mono, then 44.1 kHz stereo): the
    track was copied with the first part's rate, so the second part played 9% fast and high (654
    Hz for 600) and the track ended 0.1 s early. It is re-encoded to AAC at one rate, with a note."""
    import av

    parts = []
    for i, (tone, rate, channels) in enumerate(((300, 48000, 1), (600, 44100, 2))):
        parts.append(tmp_path / f"{i}.ts")
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate={rate}",
               "-t", 2, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", channels, parts[-1])
    src, out = tmp_path / "joined.ts", tmp_path / f"out{suffix}"
    src.write_bytes(b"".join(p.read_bytes() for p in parts))
    said = run(src, out).notes
    assert said == ["audio aac (48000 Hz, 1 ch, then 44100 Hz, 2 ch): recordings joined, re-encoded to AAC at the first "
                    "part's rate throughout (copied, the later part would play too fast or slow)"], said
    with av.open(str(out)) as c:
        sound = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
        rate = c.streams.audio[0].codec_context.sample_rate
    assert rate == 48000 and abs(len(sound) / rate - 4.0) < 0.1
    for start, tone in ((0.5, 300), (1.5, 300), (2.5, 600), (3.5, 600)):
        piece = sound[int(start * rate):int((start + 0.2) * rate)]
        assert abs(np.fft.rfftfreq(len(piece), 1 / rate)[np.abs(np.fft.rfft(piece)).argmax()] - tone) < 10, (start, tone)


def movie_seconds(path):
    """The length an MP4's movie header states (`mvhd`), which players and file managers show; an
    empty edit at the start counts in it."""
    data = Path(path).read_bytes()
    i = data.index(b"mvhd") + 4
    if data[i] == 1:  # version 1: 64-bit times
        scale, length = int.from_bytes(data[i + 20:i + 24], "big"), int.from_bytes(data[i + 24:i + 32], "big")
    else:
        scale, length = int.from_bytes(data[i + 12:i + 16], "big"), int.from_bytes(data[i + 16:i + 20], "big")
    return length / scale


@pytest.mark.parametrize("suffix", [".ts", ".mpg", ".mkv", ".flv", ".mp4"])
def test_a_late_start_is_not_an_hours_long_wait(tmp_path, suffix):
    """A file's clock may start late: an MPEG-TS clock is a device's (a broadcast recording at 10
    hours), an FLV or Matroska file cut from a live stream keeps the stream's time. Kept, the MP4
    began with a 10-hour empty edit: players that honour it show nothing until then, and every
    player and file manager called the 2 s clip 10 hours long. The file's start is the output's 0,
    as ffmpeg's program makes it; video and sound keep their offset."""
    src = tmp_path / f"late{suffix}"
    codecs = ["-c:v", "mpeg2video", "-c:a", "mp2"] if suffix == ".mpg" else ["-c:v", "libx264", "-c:a", "aac"]
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-t", 2, *codecs, "-output_ts_offset", 36000, src)
    run(src, tmp_path / "o.mp4")
    (ins, t_in), (outs, t_out) = streams(src), streams(tmp_path / "o.mp4")
    start = min(ins["video"][0], ins["audio"][0])
    assert start > 35999 and abs(outs["video"][0] - (ins["video"][0] - start)) < 0.002, (ins, outs)
    assert abs(outs["audio"][0] - (ins["audio"][0] - start)) < 0.03, (ins, outs)  # AAC's priming, told or not
    assert len(t_out) == 50 and np.abs(t_out - (t_in - start)).max() < 0.002
    assert abs(movie_seconds(tmp_path / "o.mp4") - 2.0) < 0.1


def test_recordings_joined_with_cat_play_one_after_the_other(tmp_path):
    """MPEG-TS chunks of a recorder joined with `cat` each start their clock again: players play
    them one after the other. Taken as they were, the second chunk's audio stopped the muxer (the
    video failed), and its frames were sorted in among the first chunk's (here 20 ms apart)."""
    parts = []
    for i, (tone, offset) in enumerate(((300, 0), (600, 0.02))):
        parts.append(tmp_path / f"{i}.ts")
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=48000",
               "-t", 2, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-output_ts_offset", offset, parts[-1])
    src, out = tmp_path / "joined.ts", tmp_path / "out.mp4"
    src.write_bytes(b"".join(p.read_bytes() for p in parts))
    run(src, out, keep_ratio=1.0, crf=0)
    got, times = streams(out)
    assert len(times) == 100 and np.allclose(np.diff(times), 0.04, atol=1e-3), np.diff(times)
    assert abs(got["video"][1] - 4.0) < 0.05 and abs(got["audio"][1] - 4.0) < 0.1, got
    ys, source = _luma(out), _luma(src)  # the frames in the order they were recorded
    assert np.abs(ys - source).mean(axis=(1, 2)).max() < 3
    import av

    with av.open(str(out)) as c:  # the first chunk's tone, then the second's, from 2 s on
        a = c.streams.audio[0]
        pcm = np.concatenate([f.to_ndarray()[0] for f in c.decode(a)])
    tone = [np.argmax(np.abs(np.fft.rfft(pcm[k * 4800:(k + 1) * 4800]))) * 10 for k in range(len(pcm) // 4800)]
    assert set(tone[2:18]) == {300} and set(tone[22:38]) == {600}, tone


def test_frames_after_undecodable_ones_keep_their_times(tmp_path):
    """A stream that starts after a keyframe (a cut recording, a segment) and one with a stretch
    missing in the middle: every frame written keeps the time its decoder gives it, so the picture
    stays with the sound. Before 0.3.7 (ffmpeg's pipe, no timestamps) frames moved forward by the
    frames lost (a second a GOP)."""
    import av

    full = tmp_path / "full.ts"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
           "-t", "4", "-c:v", "libx264", "-g", "25", "-bf", "0", "-c:a", "aac", full)
    data, cells = full.read_bytes(), full.stat().st_size // 188  # TS packets of 188 bytes
    cases = {"start": data[cells // 8 * 188:],  # from about 0.5 s in: nothing decodes before the keyframe at 1 s
             "gap": data[:cells * 3 // 8 * 188] + data[cells // 2 * 188:]}
    for name, cut in cases.items():
        (tmp_path / f"{name}.ts").write_bytes(cut)
        src = tmp_path / f"{name}.ts"
        with av.open(str(src)) as c:
            decoded = np.array([float(f.time) for f in c.decode(video=0)])
        listed = streams(src)[1]
        assert len(decoded) < len(listed) - 5 and (decoded[0] > listed[0] + 0.2) == (name == "start")  # the case at hand
        r = run(src, tmp_path / f"{name}.mp4")
        assert any("damaged input" in n for n in r.notes), r.notes
        (ins, _), (outs, written) = streams(src), streams(tmp_path / f"{name}.mp4")
        origin = min(ins["video"][0], ins["audio"][0])  # a transport stream's clock: its start is the output's 0
        assert len(written) == len(decoded) and np.abs(written - (decoded - origin)).max() < 0.002, (name, written[:3], decoded[:3])
        assert abs(outs["audio"][0] - (ins["audio"][0] - origin)) < 0.03  # the sound starts where it did


def test_a_file_whose_first_frame_is_undecodable_is_read_from_the_next_keyframe(tmp_path):
    """The first video packet rejected outright (a broken NAL length): probing passes over it as
    decoding does, the video starts at the next keyframe's time, and the note says so."""
    import av

    src = make_clip(tmp_path / "s.mp4", 96, 64, 50, extra=["-g", "10"])
    with av.open(str(src)) as c:
        pos = next(p.pos for p in c.demux(video=0) if p.size)
    data = bytearray(src.read_bytes())
    data[pos:pos + 4] = b"\x7f\xff\xff\xff"
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with av.open(str(bad)) as c:
        with pytest.raises(av.error.InvalidDataError):
            next(c.decode(video=0))  # what a plain first-frame read meets
    r = run(bad, tmp_path / "o.mp4")
    assert any("damaged input" in n for n in r.notes), r.notes
    written = streams(tmp_path / "o.mp4")[1]
    assert len(written) == r.frames and 30 <= r.frames < 50 and abs(written[0] - 0.4) < 0.002  # from frame 10


def test_a_clip_cut_without_reencoding_keeps_its_times_and_sound(tmp_path):
    """`ffmpeg -ss 1.3 -i IN -c copy OUT` keeps the frames from the keyframe before 1.3 s and an edit
    list that hides them: the decoder drops them, so they are no frames of the video. Until 0.3.7
    they were counted: the picture ran 1.3 s ahead of the sound, with a false damaged-input note."""
    import av

    full = make_clip(tmp_path / "full.mp4", 96, 64, 150, extra=["-g", "50"])
    cut = tmp_path / "cut.mp4"
    ffmpeg("-ss", "1.3", "-i", full, "-c", "copy", cut)
    with av.open(str(cut)) as c:
        decoded = np.array([float(f.time) for f in c.decode(video=0)])
    r = run(cut, tmp_path / "o.mp4")
    assert r.notes == [], r.notes
    (ins, _), (outs, written) = streams(cut), streams(tmp_path / "o.mp4")
    assert len(written) == len(decoded) and np.abs(written - decoded).max() < 0.002, (written[:3], decoded[:3])
    assert abs(outs["audio"][0] - ins["audio"][0]) < 0.03 and abs(outs["video"][0] - ins["video"][0]) < 0.002


@needs_shared
def test_no_real_clip_reads_as_cut_short():
    """The header check for files cut short (`read_frame_times`) on every clip of ../shared, whole
    files of many sources: none is taken for one."""
    from fractions import Fraction

    from ppar_cli.media.probe import VIDEO_EXTENSIONS
    from ppar_cli.media.times import read_frame_times

    clips = [p for p in (SHARED / "data").rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS]
    assert len(clips) > 200
    assert [p.name for p in clips if read_frame_times(p, Fraction(25), 0).ends_early] == []


def _luma(path):
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="gray").astype(np.float32) for f in c.decode(video=0)])


def _combs(ys):
    """|row - mean of the rows above and below| of the luma: two fields woven from different
    moments comb on every movement."""
    return np.abs(ys[:, 1:-1] - (ys[:, :-2] + ys[:, 2:]) / 2)


@pytest.mark.parametrize("order", ["tff", "bff"])
def test_interlaced_video_comes_out_progressive_at_its_own_frame_times(tmp_path, order):
    """Fields are woven into frames (broadcast, camcorders): written as they are, they would be
    flagged progressive and comb on every movement; ppar deinterlaces them at the source's rate."""
    src, out = tmp_path / "il.mp4", tmp_path / "out.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=50", "-t", "2", "-vf", f"interlace=scan={order},format=yuv420p",
           "-c:v", "libx264", "-flags", "+ilme+ildct", src)
    assert probe(src).interlaced and not probe(make_clip(tmp_path / "p.mp4", 64, 48, 5)).interlaced
    run(src, out, crf=0)  # lossless: what combing there is, is the frames'
    assert np.array_equal(streams(src)[1], streams(out)[1])  # the same frame times
    ys, source = _luma(out), _luma(src)
    inside = (ys[:, 1:-1] > 24) & (ys[:, :-2] > 24) & (ys[:, 2:] > 24)  # kept pixels, away from pruned cells
    before, after = _combs(source), _combs(ys)
    inside &= before > 8  # where the source combs: its moving edges
    before, after = before[inside].mean(), after[inside].mean()
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("container", [".mp4", ".mkv"])
def test_audio_tracks_keep_their_languages_and_nothing_else(tmp_path, tiny_weights, container):
    """A film's dubs: each audio track keeps its language tag, so players can name it (it came out
    "und"); the title and other metadata, which may name people, are still not copied."""
    import av

    clip = make_clip(tmp_path / "v.mp4", 64, 48, 20, audio=False)
    src = tmp_path / "two.mkv"
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-i", str(clip), "-f", "lavfi", "-i", "sine=f=300:d=1", "-f", "lavfi",
                    "-i", "sine=f=500:d=1", "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "copy", "-c:a", "pcm_s16le",
                    "-metadata", "title=Alice at home", "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra",
                    str(src)], check=True)
    [r] = anonymize(src, tmp_path / f"o{container}", Options(guard="none"), weights=tiny_weights)
    assert r.status == "ok", r.error
    with av.open(str(tmp_path / f"o{container}")) as c:
        assert [s.metadata.get("language") for s in c.streams.audio] == ["eng", "fra"]
        assert "title" not in c.metadata and "Alice" not in str(dict(c.metadata))
