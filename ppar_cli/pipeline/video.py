"""One video, front to published outputs: its windows scored, filled and encoded, its score map
written, everything renamed into place together; any failure is a failed result, with nothing
half-written left."""
from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ppar_cli.errors import PparError, internal_error, reason
from ppar_cli.media.decode import FrameReader
from ppar_cli.media.encode import VideoWriter
from ppar_cli.media.files import publish, scratch
from ppar_cli.media.probe import VideoError
from ppar_cli.pipeline.fill import fill_clip
from ppar_cli.pipeline.front import SCORE_SIDE, Front
from ppar_cli.pipeline.options import FileResult, Options, Reporter, Silent
from ppar_cli.pipeline.preview import side_by_side

if TYPE_CHECKING:
    import torch

    from ppar_cli.core.weights import LoadedWeights
    from ppar_cli.pipeline.gpu_start import GpuStart


def anonymize_file(src: Path, dst: Path, weights: LoadedWeights, opts: Options, device: torch.device,
                   reporter: Reporter | None = None, scores_path: Path | None = None, detector=None,
                   preview: Path | None = None, front: Front | None = None,
                   then: Callable[[], None] | None = None, cancel: threading.Event | None = None,
                   gpu: GpuStart | None = None) -> FileResult:
    """Anonymize one video (``front``: its decoding and guard, already started). ``then`` is called
    once every frame is with the encoder, whose flush and the commit are still ahead: the next
    video's front starts there. ``cancel``, once set, stops the video at its next window as Ctrl-C
    would (videos in other threads). ``gpu``: the model's start on a GPU (``device``), while which
    its windows are scored on the CPU (`anonymize_jobs` makes one). Raises nothing for bad
    input: failures come back as a failed result."""
    from ppar_cli.pipeline.scoremap import ScoreLog, names_real_actions
    from ppar_cli.pipeline.stream import fill_pass, score_windows

    reporter = reporter or Silent()
    t0 = time.perf_counter()
    result = FileResult(src, dst, "failed")
    writer = shown = log = None
    try:
        front = front or Front(src, weights.model.cfg, detector, opts.guard_config, yuv=stays_yuv(opts, preview))
        info = front.info
        reporter.start_file(src, info.listed_frames())
        if info.width % 2 or info.height % 2:
            result.notes.append(f"odd size {info.width}x{info.height}: encoded as yuv444p to keep the exact size")
        if info.left_out:  # dropped, as metadata is: a subtitle may name the people shown, telemetry where they were
            result.notes.append(f"left out: {', '.join(info.left_out)} (ppar writes the video and its sound; "
                                f"subtitles, telemetry and attachments may name people or places)")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if scores_path is not None:
            scores_path.parent.mkdir(parents=True, exist_ok=True)
        log = ScoreLog(scores_path.parent if scores_path is not None else None)
        times = info.frame_times()
        writer = VideoWriter(dst, info.width, info.height, info.fps, crf=opts.crf, preset=opts.preset,
                             audio_from=info if opts.audio else None, times=times, yuv=front.reader.yuv,
                             source=info.source)
        if preview is not None:
            preview.parent.mkdir(parents=True, exist_ok=True)
            shown = VideoWriter(preview, 2 * info.width, info.height, info.fps, crf=opts.crf, preset=opts.preset,
                                times=times, source=info.source)

        def fill_and_write(frames: np.ndarray, kept: np.ndarray, slab: np.ndarray, record: dict) -> None:
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt
            original = frames.copy() if shown is not None else None  # fill_clip works in place
            filled = fill_clip(frames, kept, slab, opts.fill)
            writer.write(filled)
            if shown is not None:
                shown.write(side_by_side(original, filled, record, slab))
            reporter.advance(src, len(frames))

        def emit(frames: np.ndarray, kept: np.ndarray, slab: np.ndarray, record: dict) -> None:
            fill_and_write(frames, kept, slab, record)
            log.add(record)

        model = weights.model
        reader = front.reader
        if not front.two_passes:
            score_windows(front.windows, model, opts, device, emit, names_real_actions(weights), gpu)
        else:  # very large frames: decide on small ones, then fill the full-size ones a few at a time
            windows: list[dict] = []  # records of the scoring pass, for the fill pass

            def collect(frames: np.ndarray, kept: np.ndarray, slab: np.ndarray, record: dict) -> None:
                windows.append(record)

            score_windows(front.windows, model, opts, device, collect, names_real_actions(weights), gpu)
            reader = FrameReader(info, backend="ffmpeg", times=times, threads=front.reader.threads)
            if windows:
                fill_pass(reader, windows, model.cfg, fill_and_write)
            excess = sum(w["frames"] for w in windows) - writer.frames  # the second decode ended early
            while excess > 0:
                cut = min(excess, windows[-1]["frames"])
                windows[-1]["frames"] -= cut
                excess -= cut
                if windows[-1]["frames"] == 0:
                    windows.pop()
            for record in windows:
                log.add(record)
            result.notes.append(f"{info.width}x{info.height}: scored at {SCORE_SIDE} px, then filled at full size (two passes)")
        if not log.windows:
            raise VideoError(f"{src}: no decodable frames")
        if then is not None:
            then()
        damage = reader.damage or times.ends_early
        if damage:  # every frame written was scored; say that the input itself is damaged
            result.notes.append(f"damaged input, {writer.frames} frames decoded ({damage})")
        elif writer.frames < len(times.known) + times.dropped:
            result.notes.append(f"damaged input: {writer.frames} of the {len(times.known) + times.dropped} frames "
                                f"its container lists could be decoded")
        if reader.resized:
            result.notes.append(f"the frame size changes midway ({reader.resized}): such frames are fitted into "
                                f"{info.width}x{info.height} with black bars, as one H.264 stream keeps one size")
        result.frames = writer.frames
        result.kept_fraction = log.kept_fraction
        if front.guard is not None and result.kept_fraction < opts.keep_ratio - 1 / weights.model.cfg.num_tokens:
            result.notes.append(f"the face guard hid more than --keep {opts.keep_ratio:g} asked: {result.kept_fraction:.3f} of "
                                f"the video visible on average, {log.kept_low:.3f} in the window with the most faces")
        result.seconds = time.perf_counter() - t0
        # Each output is finished beside its destination, then all are renamed into place together:
        # they appear together or not at all, and without overwrite they replace nothing, not even
        # what another run into the same folder wrote meanwhile.
        with contextlib.ExitStack() as stack:
            # an input decoded only in part keeps the audio of the part written, not the rest
            cut_short = damage is not None or writer.frames < len(times.known) + times.dropped
            finished = [(writer.finish(trim_audio=cut_short), dst)]
            if shown is not None:
                finished.append((shown.finish(), shown.dest))
            if scores_path is not None:
                finished.append((stack.enter_context(scratch(scores_path)), scores_path))
                log.write(finished[-1][0], info, result, weights, opts, reader.backend)
            publish(finished, replace=opts.overwrite)
        if writer.audio_rejected:
            result.notes.append(f"damaged audio: {writer.audio_rejected} packet(s) left out, silent there; the rest in sync")
        if writer.audio_joined:
            result.notes.append(f"audio {', '.join(writer.audio_joined)}: recordings joined, re-encoded to AAC at the "
                                f"first part's rate throughout (copied, the later part would play too fast or slow)")
        if writer.audio_reencoded:
            result.notes.append(f"audio {', '.join(sorted(set(writer.audio_reencoded)))} re-encoded to AAC: "
                                f"{dst.suffix} cannot hold it as it is" + (" (.mkv holds more)" if dst.suffix.lower() != ".mkv" else ""))
        result.status = "ok"
    except BaseException as e:  # nothing half-written is left; KeyboardInterrupt and friends go on up
        for w in (writer, shown):
            if w is not None:
                w.abort()
        if not isinstance(e, Exception):
            raise
        if isinstance(e, OSError) and not isinstance(e, VideoError):
            e = f"{reason(e)} while writing {dst}"  # disk full, permissions: name the output too
        elif not isinstance(e, (PparError, RuntimeError, ValueError)):  # a bug: this file fails, a batch goes on
            e = internal_error(e)
        result.error = str(e) if str(src) in str(e) else f"{src}: {e}"
    finally:
        if front is not None:
            front.close()
        if log is not None:
            log.close()
    result.seconds = time.perf_counter() - t0
    reporter.end_file(result)
    return result


def stays_yuv(opts: Options, preview: Path | None) -> bool:
    """Frames stay 4:2:0 from decoder to encoder for the black fill; the other fills and the
    preview are computed in RGB."""
    return opts.fill == "black" and preview is None
