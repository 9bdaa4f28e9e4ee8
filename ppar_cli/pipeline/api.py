"""decode -> clips -> model -> masks -> fill -> encode, for one file or a folder tree.

The Python API behind `ppar anonymize`: :func:`anonymize` takes a file or a folder and returns one
:class:`FileResult` per video. Frames reach the encoder only after their clip was scored and
filled, so a failure anywhere leaves no unanonymized frame behind (privacy fails closed).
"""
from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ppar_cli.core.config import DEFAULT_WEIGHTS, PPARConfig, read_metadata, weights_sha256
from ppar_cli.errors import PparError, UsageError, reason
from ppar_cli.faces.detectors import CenterFace, FacesUnavailable
from ppar_cli.media.files import taken
from ppar_cli.media.probe import VIDEO_EXTENSIONS
from ppar_cli.pipeline.fill import fill_clip
from ppar_cli.pipeline.front import Front, LateDetector
from ppar_cli.pipeline.jobs import Job, byte_shares, check_container, check_outputs, inputs_of, largest_first, left_out, plan_jobs
from ppar_cli.pipeline.manifest import OutputError, append_manifest, check_manifest, differences, made_with, settings  # noqa: F401 -- OutputError: part of the API
from ppar_cli.pipeline.options import FileResult, Options, Reporter, Silent, parse_shard  # noqa: F401 -- parse_shard: part of the API
from ppar_cli.pipeline.runtime import (decoder_threads, flat_heap, folder_layout, gpu_may_be_here, guard_threads,
                                      model_threads, quick_gil_handoff, resolve_device)
from ppar_cli.pipeline.video import anonymize_file, stays_yuv

# PyTorch and what needs it are imported where first used, after the first videos' fronts have
# started (front.py; with the guard where a GPU may be, before them): importing it takes seconds.
if TYPE_CHECKING:
    import torch

    from ppar_cli.core.weights import LoadedWeights


def anonymize(inp: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike, opts: Options | None = None,
              weights: str | os.PathLike | LoadedWeights | None = None, reporter: Reporter | None = None) -> list[FileResult]:
    """Anonymize a video file or a folder of videos (mirrored recursively under ``out``), or
    several of either into the folder ``out`` (:func:`~ppar_cli.pipeline.jobs.plan_jobs`).

    In folder mode (a folder, or several inputs) each finished file appends one JSON line to the
    manifest, so a sharded run over many machines leaves a record of every file; a rerun skips
    outputs that exist. No output of any kind replaces an input, and none replaces an existing
    file without ``overwrite``.
    """
    opts = opts or Options()
    opts.validate()
    inputs, out = inputs_of(inp), Path(out)
    jobs = plan_jobs(inputs, out)
    single = len(inputs) == 1 and inputs[0].is_file()
    if not single and (opts.preview is not None or opts.scores_path is not None):
        raise UsageError("<preview> and <scores_path> name one file: give a single input file")
    if single and opts.manifest is not None:
        raise UsageError("<manifest> records a folder's files: give a folder as input")
    if opts.shard:  # a single file is shard 0's (torchrun's other ranks have nothing to do)
        jobs = jobs[opts.shard[0]::opts.shard[1]]
    manifest = None
    if not single:
        tag = f".shard-{opts.shard[0]}-of-{opts.shard[1]}" if opts.shard else ""
        manifest = Path(opts.manifest) if opts.manifest else out / f"ppar-manifest{tag}.jsonl"
    scores = _scores(opts)
    check_outputs(jobs, {"preview": opts.preview, "manifest": manifest}, scores)
    if single and jobs:
        job = jobs[0]
        existing = [p for p in (job.dst, scores if isinstance(scores, Path) else job.scores if scores else None,
                                opts.preview) if p is not None and taken(p)]
        if existing and not opts.overwrite:
            raise UsageError(f"{existing[0]}: already exists (<overwrite> replaces it)")
    if opts.preview is not None:
        check_container(Path(opts.preview), "preview")
    named = ", ".join(map(str, inputs))
    if not jobs and single:
        warnings.warn(f"{named}: a single file is shard 0's, nothing to do for shard {opts.shard[0]}/{opts.shard[1]}", stacklevel=2)
    elif not jobs:
        warnings.warn(f"{named}: no video files here{' for this shard' if opts.shard else ''} "
                      f"(ppar looks for {', '.join(sorted(VIDEO_EXTENSIONS))}, hidden names left out)", stacklevel=2)
    for others in filter(None, (left_out(folder, out) for folder in inputs)):
        warnings.warn(others, stacklevel=2)
    if manifest is not None and jobs:  # nothing to do (an empty folder, a shard without files): nothing made
        check_manifest(manifest)
    opts = replace(opts, manifest=manifest)
    reporter = reporter or Silent()
    reporter.start_batch(len(jobs))
    # a folder's finished files are skipped here, so that a rerun loads no model for them
    finished = [job for job in jobs if _skipped(job, _score_path(job, scores), opts)]
    sha = weights_sha256(weights) if finished and manifest is not None else ""
    earlier = made_with(manifest) if finished and manifest is not None else {}
    own = _config_of(weights) if earlier else None  # the weights' lambda, where a run gave none
    results = {job.src: _skip(job, _score_path(job, scores), opts, sha, reporter, earlier.get(str(job.src)),
                              own.lambda_priv if own is not None else None) for job in finished}
    todo = [job for job in jobs if job.src not in results]
    processes, at_once = layout_used(opts, len(todo))
    opts = replace(opts, workers=processes, jobs=at_once)
    if manifest is not None and processes > 1:
        from ppar_cli.pipeline.workers import run_workers

        done = run_workers(todo, opts, getattr(weights, "path", weights), reporter)
    else:
        if opts.preview is not None:
            warnings.warn(f"{opts.preview} shows the unanonymized input beside the output: do not share it", stacklevel=2)
        done = anonymize_jobs(todo, opts, weights, reporter) if todo else []
    results.update((r.src, r) for r in done)
    return [results[job.src] for job in jobs]


def layout_used(opts: Options, videos: int) -> tuple[int, int]:
    """(processes, videos at once in each) of a folder run with ``videos`` to do: ``opts.jobs`` or
    the machine's (runtime.folder_layout), in ``opts.workers`` processes or one, and no more of
    either than there are videos. Worker processes only when asked for: they start by spawning,
    which imports the caller's main module again (call from under ``if __name__ ==
    "__main__":``); the `ppar` program asks for the machine's number."""
    workers, at_once = folder_layout(opts.device, opts.workers or 1, opts.jobs)
    return (min(workers, videos) if videos > 1 else 1), max(1, min(at_once, videos))


@quick_gil_handoff()  # from the fronts' start: decoding ahead is then not held back by PyTorch's import
def anonymize_jobs(jobs: list[Job], opts: Options, weights: str | os.PathLike | LoadedWeights | None = None,
                   reporter: Reporter | None = None, take: Callable[[], int | None] | None = None,
                   processes: int = 1) -> list[FileResult]:
    """The videos of ``jobs`` (planned and checked by :func:`anonymize`), ``opts.jobs`` at a time
    (or the machine's number: `layout_used`), each appending its line to ``opts.manifest`` if
    there is one. ``take`` gives the index of the next video to do, or None when none is left (by
    default, the largest first: `largest_first`); worker processes ask the parent, which hands
    each next video to whichever is free. ``processes``: how many do this at once on the machine
    (the workers), which share its cores. Returns the results of the videos taken, in the folder's
    order."""
    take = take or _one_at_a_time(largest_first(jobs))
    cancel, manifest_lock = threading.Event(), threading.Lock()

    def next_job() -> int | None:
        return None if cancel.is_set() else take()

    first = next_job()
    if first is None:  # a worker the others left nothing to: no model to load
        return []
    at_once = layout_used(opts, len(jobs))[1]
    shares = byte_shares(jobs)

    def threads(i: int) -> int:  # the decoder's, for video i: fewer videos than places share the cores
        return decoder_threads(min(len(jobs), processes * at_once), shares[i])

    flat_heap()
    # The fronts of the first videos start while PyTorch loads (front.py), and on a GPU machine
    # while CUDA starts. With the face guard where a GPU may be, its detector is made once the
    # device is known, so that it searches there too: the fronts decode meanwhile (LateDetector).
    gpu_later = opts.guard != "none" and (opts.device == "cuda" or (opts.device == "auto" and gpu_may_be_here()))
    late = LateDetector() if gpu_later else None
    detector = late or _detector(opts, at_once, None)
    cfg = _config_of(weights)
    scores = _scores(opts)
    starts = [first] + [next_job() for _ in range(at_once - 1)]
    fronts: dict[int, Front | None] = {i: _start_front(jobs[i], opts, cfg, detector, threads(i)) for i in starts if i is not None}
    try:
        device = resolve_device(opts.device)
        if late is not None:
            detector = _detector(opts, at_once, device if device.type == "cuda" else None)
            late.set(detector)
        if cfg is not None:
            _warn_if_unprotected(opts, cfg, detector is not None, stacklevel=4)
        with model_threads():
            from ppar_cli.core.weights import LoadedWeights, load_weights

            loaded = weights if isinstance(weights, LoadedWeights) else load_weights(weights)
            gpu = None
            if device.type == "cuda":  # the first windows on the CPU while the model starts there
                from ppar_cli.pipeline.gpu_start import GpuStart

                gpu = GpuStart(loaded.model, device, opts)
            else:
                loaded.model.to(device)
            reporter = reporter or Silent()
            done: dict[int, FileResult] = {}

            def run(i: int, then: Callable[[], None] | None = None) -> None:
                job = jobs[i]
                # started ahead, or now (a later video with several at once); None: anonymize_file says why not
                front = fronts.pop(i) if i in fronts else _start_front(job, opts, loaded.model.cfg, detector, threads(i))
                result = anonymize_file(job.src, job.dst, loaded, opts, device, reporter, scores_path=_score_path(job, scores),
                                        detector=detector, preview=opts.preview, front=front, then=then, cancel=cancel,
                                        gpu=gpu)
                if opts.manifest is not None:
                    with manifest_lock:
                        append_manifest(opts.manifest, result, loaded.sha256, opts)
                done[i] = result

            if at_once == 1:
                i = first
                while i is not None:  # each next video's front starts while the encoder finishes this one
                    following: list[int | None] = []

                    def start_next() -> None:
                        following.append(next_job())
                        if following[0] is not None:
                            fronts[following[0]] = _start_front(jobs[following[0]], opts, loaded.model.cfg, detector, threads(following[0]))

                    run(i, then=start_next)
                    i = following[0] if following else next_job()
                return [done[i] for i in sorted(done)]

            def videos(i: int | None) -> None:
                """One of ``at_once`` threads: videos one after another, while there are any."""
                while i is not None:
                    run(i)
                    i = next_job()

            # Several videos at once, each with its own decoder, guard and encoder threads; they
            # share the model (on a GPU one call at a time: scoring.py).
            with ThreadPoolExecutor(at_once, thread_name_prefix="ppar-video") as pool:
                futures = [pool.submit(videos, i) for i in starts if i is not None]
                try:
                    # in slices: a signal that another thread of the process received (Ctrl-C, SIGTERM)
                    # runs its handler only once this thread wakes, else after the last video
                    pending = futures
                    while pending:
                        finished, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                        for f in finished:
                            if f.exception() is not None:
                                raise f.exception()
                    return [done[i] for i in sorted(done)]
                except BaseException:  # Ctrl-C, a manifest that cannot be written: stop the others too
                    cancel.set()
                    raise
    finally:
        if late is not None and not late.ready():  # stopped before the detector was made: so are the fronts
            late.fail(RuntimeError("stopped before the face guard's detector was made"))
        for front in fronts.values():
            if front is not None:
                front.close()


def _one_at_a_time(order: list[int]) -> Callable[[], int | None]:
    """The indices of ``order``, then None, to threads one at a time."""
    lock, handed = threading.Lock(), iter(order)

    def take() -> int | None:
        with lock:
            return next(handed, None)

    return take


def anonymize_frames(frames: np.ndarray, opts: Options | None = None,
                     weights: str | os.PathLike | LoadedWeights | None = None) -> np.ndarray:
    """Anonymize frames held in memory, one video's consecutive frames, (T, H, W, 3) uint8 RGB (a
    NumPy array, or a PyTorch tensor on the CPU) in, a NumPy array out, as :func:`anonymize` does a
    file's (the same windows, face guard, scores and fill): for a data loader or a notebook that
    has its frames already; nothing is read or written. ``opts`` gives the keep ratio, lambda,
    hysteresis, fill, guard, device and batch size; its file options are not used. Pass a
    LoadedWeights (`ppar_cli.core.weights.load_weights`) to load the model once for many calls."""
    from ppar_cli.core.clips import slab_index
    from ppar_cli.core.weights import LoadedWeights, load_weights
    from ppar_cli.pipeline.guard import FaceGuard
    from ppar_cli.pipeline.stream import score_windows

    opts = opts or Options()
    opts.validate()
    try:  # a NumPy array, or what converts to one as it is (a PyTorch tensor on the CPU)
        array = np.asarray(frames)
    except (TypeError, ValueError, RuntimeError) as e:
        raise UsageError(f"must convert to a NumPy array ({reason(e)})", option="frames") from None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape:
        raise UsageError(f"must be RGB frames, a uint8 array (T, H, W, 3) with T, H, W >= 1; got "
                         f"{array.dtype} {array.shape}", option="frames")
    device = resolve_device(opts.device)
    with model_threads():
        loaded = weights if isinstance(weights, LoadedWeights) else load_weights(weights)
        model, cfg = loaded.model.to(device), loaded.model.cfg
        detector = _detector(opts, 1, device if device.type == "cuda" else None)
        _warn_if_unprotected(opts, cfg, detector is not None, stacklevel=3)
        guard = FaceGuard(opts.guard_config, detector) if detector is not None else None
        out = array.copy()  # filled in place, window by window

        def windows():
            for i in range(0, len(out), cfg.clip_span):
                w = out[i:i + cfg.clip_span]
                yield w, guard.forced(w, cfg.grid, slab_index(len(w), cfg)) if guard else None

        score_windows(windows(), model, opts, device, lambda w, kept, slab, record: fill_clip(w, kept, slab, opts.fill))
    return out


def _warn_if_unprotected(opts: Options, cfg: PPARConfig, guarded: bool, stacklevel: int) -> None:
    """Say so where an option switches the learned protection off: a keep ratio that keeps every
    tubelet (keep_counts' last count; core.model would import PyTorch), or a lambda of 0, which
    ranks the tubelets by the action attention alone. Only the guard's faces are hidden then. A
    fill other than black keeps the colours of what it hides, privacy attributes among them."""
    if opts.fill != "black":
        warnings.warn(f"--fill {opts.fill} keeps the colours of the regions it hides (skin tone, hair, clothes), "
                      f"which the black fill removes", stacklevel=stacklevel)
    lam = cfg.lambda_priv if opts.lambda_priv is None else opts.lambda_priv
    if round(opts.keep_ratio * cfg.num_tokens) >= cfg.num_tokens:
        warnings.warn(f"--keep {opts.keep_ratio} keeps every tubelet: " + (
            "only the faces the guard finds are hidden" if guarded else "the output is NOT anonymized"), stacklevel=stacklevel)
    elif lam == 0:
        said = "--lambda 0" if opts.lambda_priv is not None else f"the weights' lambda_priv 0 ({cfg.name})"
        warnings.warn(f"{said} ranks the tubelets by the action attention alone, not privacy: " + (
            "faces are hidden only where the guard finds them" if guarded else "faces are NOT hidden on purpose"), stacklevel=stacklevel)


def _scores(opts: Options) -> Path | bool:
    """Where score maps go: the path given (one file), beside each output (True), or nowhere."""
    return (Path(opts.scores_path) if opts.scores_path else True) if opts.scores else False


def _detector(opts: Options, videos: int, gpu: torch.device | None) -> CenterFace | None:
    """The face guard's CenterFace: on ``gpu`` when the model runs on one (PyTorch), else on the CPU
    (onnxruntime, threads for ``videos`` at once); None without the guard."""
    if opts.guard == "none":
        return None
    g = opts.guard_config
    try:
        if gpu is not None:
            try:
                return CenterFace(g.threshold, g.max_side, device=gpu)
            except FacesUnavailable as e:
                warnings.warn(f"the face guard searches on the CPU: {e}", stacklevel=4)
        return CenterFace(g.threshold, g.max_side, guard_threads(videos))
    except FacesUnavailable as e:
        if opts.guard == "centerface":
            raise UsageError(f"centerface: {e}", option="guard") from None
        warnings.warn(f"no face guard: {e}; faces are hidden only where the learned scores prune them", stacklevel=4)
        return None


def _score_path(job: Job, scores: Path | bool) -> Path | None:
    return (scores if isinstance(scores, Path) else job.scores) if scores else None


def _skipped(job: Job, score_path: Path | None, opts: Options) -> bool:
    return not opts.overwrite and (taken(job.dst) or (score_path is not None and taken(score_path)))


def _skip(job: Job, score_path: Path | None, opts: Options, weights_sha: str, reporter: Reporter,
          made: dict | None = None, own_lambda: float | None = None) -> FileResult:
    """A folder's finished file, skipped; a score map without its video is someone else's file.
    ``made``: the settings the manifest says its output was made with, noted where they differ."""
    result = FileResult(job.src, job.dst, "skipped")
    if not taken(job.dst):
        result.status, result.error = "failed", f"{score_path}: already exists (overwrite replaces it)"
    elif made is not None and (changed := differences(made, settings(opts, weights_sha), own_lambda)):
        result.notes.append(changed)
    reporter.end_file(result)
    if opts.manifest is not None:
        append_manifest(opts.manifest, result, weights_sha, opts)
    return result


def _config_of(weights) -> PPARConfig | None:
    """The model's config without importing PyTorch: a LoadedWeights' own, else the weights file's
    header; None where that cannot be read (load_weights then says why)."""
    model = getattr(weights, "model", None)
    if model is not None:
        return model.cfg
    try:
        return read_metadata(Path(weights) if weights else DEFAULT_WEIGHTS)[0]
    except PparError:
        return None


def _start_front(job: Job, opts: Options, cfg: PPARConfig | None, detector, threads: int) -> Front | None:
    """A video's front (decoding and the face guard), started ahead of its turn: the first videos'
    before PyTorch is imported, so that they work while PyTorch loads (front.py); each next one
    while the encoder finishes the video before it, instead of one video's start waiting for the
    end of the last. None where there is no config or the front cannot start:
    anonymize_file then starts it, or reports why not, as for any other video."""
    if cfg is None:
        return None
    try:
        return Front(job.src, cfg, detector, opts.guard_config, yuv=stays_yuv(opts, opts.preview), threads=threads)
    except Exception:  # noqa: BLE001 -- a bug too: anonymize_file meets it again and fails that video alone
        return None
