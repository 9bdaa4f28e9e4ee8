"""decode -> clips -> model -> masks -> fill -> encode, for one file or a folder tree.

The Python API behind `ppar anonymize`: :func:`anonymize` takes a file or a folder and returns one
:class:`FileResult` per video. Frames reach the encoder only after their clip was scored and
filled, so a failure anywhere leaves no unanonymized frame behind (privacy fails closed).
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch

from . import __version__
from .errors import PparError, UsageError
from .files import atomic_path
from .jobs import Job, check_outputs, plan_jobs
from .faces import CenterFace, FacesUnavailable
from .guard import FaceGuard, GuardConfig
from .masks import FILLS, cell_edges, fill_clip
from .model import PPARConfig, PPARModel, keep_counts, resize_frames, sample_clip, slab_index
from .preview import side_by_side
from .scoring import score_clips
from .video import FrameReader, VideoError, VideoInfo, VideoWriter, probe
from .weights import LoadedWeights, load_weights

SCHEMA = "ppar-scores/1"


class OutputError(PparError):
    """An output of the whole run (the manifest) cannot be written: the batch stops (exit 1)."""
# Full-resolution frames waiting for their batch to be scored are held up to about this many bytes
# (fewer clips per batch at 4K); memory stays flat in the video's length either way.
PENDING_BYTES = 384 * 2**20


@dataclass
class Options:
    keep: float = 0.5
    lambda_priv: float | None = None  # privacy weight in the tubelet score; default: the weights' own
    hysteresis: float = 0.0  # score bonus (in score std) for tubelets the previous window kept; 0: off
    device: str = "auto"
    batch_size: int = 4
    fill: str = "black"
    scores: bool = True
    scores_path: Path | None = None  # single-file mode only; default OUT.json
    preview: Path | None = None  # single-file mode only: a side-by-side video of scores and output
    audio: bool = True
    crf: int = 20
    preset: str = "veryfast"
    overwrite: bool = False
    guard: str = "auto"  # auto: the face guard when installed (a warning otherwise) | centerface | none
    guard_config: GuardConfig = field(default_factory=GuardConfig)
    shard: tuple[int, int] | None = None  # (k, n): this process does the sorted jobs with index % n == k
    manifest: Path | None = None  # folder mode: JSON lines, one per file; default OUT/ppar-manifest[.shard].jsonl

    def validate(self) -> None:
        try:
            keep_counts(1, self.keep, 1)
        except (ValueError, TypeError):
            raise UsageError(f"--keep must be a number between 0 and 1, got {self.keep}") from None
        if self.lambda_priv is not None and not (0 <= self.lambda_priv < float("inf")):
            raise UsageError(f"--lambda must be a non-negative number, got {self.lambda_priv}")
        if not 0 <= self.hysteresis < float("inf"):
            raise UsageError(f"--hysteresis must be a non-negative number, got {self.hysteresis}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.fill not in FILLS:
            raise UsageError(f"--fill must be one of {', '.join(FILLS)}, got {self.fill!r}")
        if not 0 <= self.crf <= 51:
            raise UsageError(f"--crf must lie in 0..51, got {self.crf}")
        if self.guard not in ("auto", "centerface", "none"):
            raise UsageError(f"--guard must be auto, centerface or none, got {self.guard!r}")
        g = self.guard_config
        if isinstance(g.stride, bool) or not isinstance(g.stride, int) or not 1 <= g.stride <= 1000:
            raise UsageError(f"--guard-stride must be an integer in 1..1000, got {g.stride}")
        if not 0 < g.threshold < 1:  # NaN fails too: a threshold of 1 or more would find no face at all
            raise UsageError(f"--guard-threshold must lie strictly between 0 and 1, got {g.threshold}")
        if not (0 <= g.margin <= 2 and 0 <= g.carry <= 100 and 32 <= g.max_side <= 8192):
            raise UsageError(f"guard settings out of range: {g}")
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise UsageError(f"--shard K/N needs 0 <= K < N, got {self.shard[0]}/{self.shard[1]}")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``K/N`` (0-based K, as RANK and SLURM_ARRAY_TASK_ID count), or torchrun's RANK/WORLD_SIZE
    when no shard is given and more than one process was launched."""
    if text is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
            return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        return None
    k, sep, n = text.partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit() or int(n) < 1:
        raise UsageError(f"--shard must look like K/N (e.g. 0/4), got {text!r}")
    return int(k), int(n)


@dataclass
class FileResult:
    src: Path
    dst: Path
    status: str  # ok | skipped | failed
    frames: int = 0
    kept_fraction: float | None = None
    seconds: float = 0.0
    error: str | None = None
    notes: list[str] = field(default_factory=list)


class Reporter(Protocol):
    def start_batch(self, n_files: int) -> None: ...
    def start_file(self, src: Path, total_frames: int | None) -> None: ...
    def advance(self, frames: int) -> None: ...
    def end_file(self, result: FileResult) -> None: ...


class _Silent:
    def start_batch(self, n_files: int) -> None: ...
    def start_file(self, src: Path, total_frames: int | None) -> None: ...
    def advance(self, frames: int) -> None: ...
    def end_file(self, result: FileResult) -> None: ...


def resolve_device(name: str) -> torch.device:
    """cpu, or cuda (the LOCAL_RANK-th GPU when launched by torchrun)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available to PyTorch here (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device(name)


def _window_record(start: int, n: int, out, b: int, keep: np.ndarray, forced: np.ndarray | None, cfg: PPARConfig) -> dict:
    probs = out.action_logits[b].softmax(-1)
    top = probs.topk(min(5, len(cfg.actions)))
    priv = out.privacy_logits[b].sigmoid()
    rec = {
        "start": start,
        "frames": n,
        "kept_fraction": round(float(keep.mean()), 6),
        "scores": np.round(out.scores[b].view(cfg.grid).numpy(), 6).tolist(),
        "keep": keep.astype(np.uint8).tolist(),
        "actions": [{"label": cfg.actions[i], "p": round(float(p), 6)} for p, i in zip(top.values, top.indices)],
        "privacy": {a: round(float(p), 6) for a, p in zip(cfg.attributes, priv)},
    }
    if forced is not None:
        rec["guard"] = forced.astype(np.uint8).tolist()  # tubelets the face guard pruned whatever their score
    return rec


def anonymize_file(src: Path, dst: Path, weights: LoadedWeights, opts: Options, device: torch.device,
                   reporter: Reporter | None = None, scores_path: Path | None = None, detector=None,
                   preview: Path | None = None) -> FileResult:
    """Anonymize one video. Raises nothing for bad input: failures come back as a failed result."""
    reporter = reporter or _Silent()
    t0 = time.perf_counter()
    result = FileResult(src, dst, "failed")
    writer = shown = None
    try:
        info = probe(src)
        reader = FrameReader(info, backend="ffmpeg")  # decord's reader grows with the video's length
        reporter.start_file(src, info.num_frames)
        if info.width % 2 or info.height % 2:
            result.notes.append(f"odd size {info.width}x{info.height}: encoded as yuv444p to keep the exact size")
        dst.parent.mkdir(parents=True, exist_ok=True)
        times = info.frame_times()
        writer = VideoWriter(dst, info.width, info.height, info.fps, crf=opts.crf, preset=opts.preset,
                             audio_from=info if opts.audio else None, times=times)
        if preview is not None:
            preview.parent.mkdir(parents=True, exist_ok=True)
            shown = VideoWriter(preview, 2 * info.width, info.height, info.fps, crf=opts.crf, preset=opts.preset,
                                times=times)
        guard = FaceGuard(opts.guard_config, detector) if detector is not None else None
        windows = _process_stream(reader, writer, weights.model, opts, device, reporter, guard, shown)
        if not windows:
            raise VideoError(f"{src}: no decodable frames")
        if reader.damage:  # every frame written was scored; say that the input itself is damaged
            result.notes.append(f"damaged input, {writer.frames} frames decoded ({reader.damage})")
        elif writer.frames < len(times.known):
            result.notes.append(f"damaged input: {writer.frames} of the {len(times.known)} frames its container "
                                f"lists could be decoded")
        result.frames = writer.frames
        result.kept_fraction = float(np.mean([w["kept_fraction"] for w in windows]))
        result.seconds = time.perf_counter() - t0
        # The score map is written beside the video first and renamed into place only once the
        # video (and preview) are complete: outputs appear together or not at all.
        with contextlib.ExitStack() as stack:
            if scores_path is not None:
                tmp = stack.enter_context(atomic_path(scores_path))
                tmp.write_text(json.dumps(_score_map(info, result, windows, weights, opts, reader.backend),
                                          separators=(",", ":"), allow_nan=False))
            # an input decoded only in part keeps the audio of the part written, not the rest
            cut_short = reader.damage is not None or writer.frames < len(times.known)
            if shown is not None:
                shown.commit()
            writer.commit(trim_audio=cut_short)
        result.status = "ok"
    except (VideoError, OSError, RuntimeError, ValueError) as e:
        for w in (writer, shown):
            if w is not None:
                w.abort()
        if isinstance(e, OSError) and not isinstance(e, VideoError):
            e = f"{e.strerror or e} while writing {dst}"  # disk full, permissions: name the output too
        result.error = str(e) if str(src) in str(e) else f"{src}: {e}"
    except BaseException:  # KeyboardInterrupt and friends: clean up, then let them through
        for w in (writer, shown):
            if w is not None:
                w.abort()
        raise
    result.seconds = time.perf_counter() - t0
    reporter.end_file(result)
    return result


def _decoded_clips(reader: FrameReader, cfg: PPARConfig, guard: FaceGuard | None) -> Iterator[tuple]:
    """Per window: source frames, what the model sees of them (sampled, resized once, uint8), and
    the tubelets the face guard forces (None without a guard)."""
    scratch = None
    for frames in reader.chunks(cfg.clip_span):
        sampled = sample_clip(frames, cfg)
        if sampled.shape[1:3] != (cfg.image_size, cfg.image_size):
            # Resizing a strided view would first copy it to fresh memory (page faults every window):
            # gather it into one reused buffer. Only when resizing, which returns new memory.
            if scratch is None or scratch.shape != sampled.shape:
                scratch = np.empty_like(sampled)
            np.copyto(scratch, sampled)
            sampled = scratch
        small = resize_frames(torch.from_numpy(sampled), cfg.image_size)
        forced = guard.forced(frames, cfg.grid, slab_index(len(frames), cfg)) if guard else None
        yield frames, small, forced


def _ahead(items: Iterator, depth: int) -> Iterator:
    """Run a generator in a thread, ``depth`` items ahead of the consumer (decoding and resizing
    release the GIL, so they overlap the model). Exceptions surface in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            q.put((done, None))
        except BaseException as e:  # noqa: BLE001 -- handed to the consumer
            q.put((done, e))
        finally:
            items.close()

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            item, err = q.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        deadline = time.monotonic() + 3.0
        while t.is_alive() and time.monotonic() < deadline:  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.05)
        # A producer stuck inside a decoder call is a daemon thread: it is left behind rather than
        # holding up Ctrl-C, and it ends with the process.


def _process_stream(reader: FrameReader, writer: VideoWriter, model: PPARModel, opts: Options,
                    device: torch.device, reporter: Reporter, guard: FaceGuard | None,
                    shown: VideoWriter | None = None) -> list[dict]:
    cfg = model.cfg
    windows: list[dict] = []
    start = 0
    pending: list[tuple] = []
    last_keep = None  # the model's keep mask of the previous window, for hysteresis

    def flush() -> None:
        nonlocal start, last_keep
        out = score_clips(model, torch.stack([small for _, small, _ in pending]), opts.keep, device, opts.lambda_priv,
                          hysteresis=opts.hysteresis, prev_keep=last_keep)
        if not all(torch.isfinite(t).all() for t in (out.scores, out.action_logits, out.privacy_logits)):
            # NaN scores sort in grid order: the kept tubelets would be arbitrary, so nothing is written
            raise VideoError(f"non-finite tubelet scores in the window at frame {start}; no frame of it was written")
        last_keep = out.keep_mask[-1]
        for b, (frames, _, forced) in enumerate(pending):
            keep = out.keep_mask[b].numpy()
            if forced is not None:
                keep = keep & ~forced
            slab = slab_index(len(frames), cfg)
            original = frames.copy() if shown is not None else None  # fill_clip works in place
            filled = fill_clip(frames, keep, slab, opts.fill)
            writer.write(filled)
            windows.append(_window_record(start, len(frames), out, b, keep, forced, cfg))
            if shown is not None:
                shown.write(side_by_side(original, filled, windows[-1], slab))
            start += len(frames)
            reporter.advance(len(frames))
        pending.clear()

    for clip in _ahead(_decoded_clips(reader, cfg, guard), depth=2):
        pending.append(clip)
        if len(pending) >= min(opts.batch_size, max(1, PENDING_BYTES // clip[0].nbytes)):
            flush()
    if pending:
        flush()
    return windows


def _score_map(info: VideoInfo, result: FileResult, windows: list[dict], weights: LoadedWeights,
               opts: Options, backend: str) -> dict:
    cfg = weights.model.cfg
    gt, gh, gw = cfg.grid
    return {
        "schema": SCHEMA,
        "ppar_version": __version__,
        "input": {"path": str(info.path), "fps": float(info.fps), "fps_rational": str(info.fps), "frames": result.frames,
                  "width": info.width, "height": info.height, "decoder": backend},
        "model": {"name": cfg.name, "weights": str(weights.path), "weights_sha256": weights.sha256,
                  "keep": opts.keep, "lambda_priv": cfg.lambda_priv if opts.lambda_priv is None else opts.lambda_priv,
                  "hysteresis": opts.hysteresis, "fill": opts.fill, "guard": _guard_record(windows, opts)},
        "grid": {"shape": [gt, gh, gw], "tubelet": list(cfg.tubelet), "clip_frames": cfg.frames,
                 "frame_stride": cfg.frame_stride, "clip_span": cfg.clip_span,
                 "source_frames_per_tubelet": cfg.tubelet[0] * cfg.frame_stride,
                 "row_edges": cell_edges(info.height, gh), "col_edges": cell_edges(info.width, gw)},
        "windows": windows,
        "summary": {"kept_fraction": round(result.kept_fraction, 6), "windows": len(windows),
                    "flicker": flicker(windows), "seconds": round(result.seconds, 3), "notes": result.notes},
    }


def flicker(windows: list[dict]) -> float | None:
    """Fraction of tubelet positions whose kept state changes from one window to the next (None for one window)."""
    keeps = [np.asarray(w["keep"], bool) for w in windows]
    if len(keeps) < 2:
        return None
    return round(float(np.mean([(a != b).mean() for a, b in zip(keeps, keeps[1:])])), 6)


def _guard_record(windows: list[dict], opts: Options) -> dict | None:
    if "guard" not in windows[0]:
        return None
    forced = [np.mean(w["guard"]) for w in windows]
    return {"detector": "centerface", **asdict(opts.guard_config), "forced_fraction": round(float(np.mean(forced)), 6)}


def _flat_heap() -> None:
    """Serve every buffer above 1 MiB straight from mmap (glibc). Frame buffers are allocated in
    three threads; with glibc's adaptive threshold they land in per-thread arenas that fragment, and
    peak memory crept up with the video's length (benchmarks/bench.py --long 8 checks it)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def anonymize(inp: str | os.PathLike, out: str | os.PathLike, opts: Options | None = None,
              weights: str | os.PathLike | LoadedWeights | None = None, reporter: Reporter | None = None) -> list[FileResult]:
    """Anonymize a video file or a folder of videos (mirrored recursively under ``out``).

    In folder mode each finished file appends one JSON line to the manifest, so a sharded run over
    many machines leaves a record of every file; a rerun skips outputs that exist. No output of
    any kind replaces an input, and none replaces an existing file without ``overwrite``.
    """
    opts = opts or Options()
    opts.validate()
    inp, out = Path(inp), Path(out)
    jobs = plan_jobs(inp, out)
    single = inp.is_file()
    if not single and (opts.preview is not None or opts.scores_path is not None):
        raise UsageError("a preview video or a score-map path names one file: give a single input file")
    manifest = None
    if not single:
        if opts.shard:
            jobs = jobs[opts.shard[0]::opts.shard[1]]
        tag = f".shard-{opts.shard[0]}-of-{opts.shard[1]}" if opts.shard else ""
        manifest = Path(opts.manifest) if opts.manifest else out / f"ppar-manifest{tag}.jsonl"
    scores: Path | bool = (Path(opts.scores_path) if opts.scores_path else True) if opts.scores else False
    check_outputs(jobs, {"preview": opts.preview, "manifest": manifest}, scores)
    if single:
        job = jobs[0]
        existing = [p for p in (job.dst, scores if isinstance(scores, Path) else job.scores if scores else None,
                                opts.preview) if p is not None and p.exists()]
        if existing and not opts.overwrite:
            raise UsageError(f"{existing[0]}: already exists (pass --overwrite to replace it)")
    if manifest is not None:
        _check_manifest(manifest)
    _flat_heap()
    device = resolve_device(opts.device)
    loaded = weights if isinstance(weights, LoadedWeights) else load_weights(weights)
    loaded.model.to(device)
    detector = None
    if opts.guard != "none":
        try:
            detector = CenterFace(opts.guard_config.threshold, opts.guard_config.max_side)
        except FacesUnavailable as e:
            if opts.guard == "centerface":
                raise UsageError(f"--guard centerface: {e}") from None
            warnings.warn(f"no face guard: {e}; faces are hidden only where the learned scores prune them", stacklevel=2)
    if opts.preview is not None:
        warnings.warn(f"{opts.preview} shows the unanonymized input beside the output: do not share it", stacklevel=2)
    reporter = reporter or _Silent()
    reporter.start_batch(len(jobs))
    results = []
    for job in jobs:
        score_path = (scores if isinstance(scores, Path) else job.scores) if scores else None
        if not opts.overwrite and (job.dst.exists() or (score_path is not None and score_path.exists())):
            # folder mode: a finished file is skipped; a score map without its video is someone else's file
            result = FileResult(job.src, job.dst, "skipped")
            if not job.dst.exists():
                result.status, result.error = "failed", f"{score_path}: already exists (pass --overwrite to replace it)"
            reporter.end_file(result)
        else:
            result = anonymize_file(job.src, job.dst, loaded, opts, device, reporter, scores_path=score_path,
                                    detector=detector, preview=opts.preview if single else None)
        results.append(result)
        if manifest is not None:
            _append_manifest(manifest, result, loaded, opts)
    return results


def _check_manifest(path: Path) -> None:
    """The manifest is appended to, so it must be writable and, if it exists, a manifest."""
    try:
        if path.is_file() and path.stat().st_size:
            with open(path, "rb") as f:
                first = json.loads(f.readline())
            if not isinstance(first, dict) or "src" not in first:
                raise ValueError
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"{path}: exists and is not a ppar manifest; choose another --manifest") from None
    except OSError as e:
        raise OutputError(f"{path}: cannot write the manifest ({e.strerror or e})") from None


def _append_manifest(path: Path, r: FileResult, weights: LoadedWeights, opts: Options) -> None:
    rec = {"src": str(r.src), "dst": str(r.dst), "status": r.status, "frames": r.frames,
           "kept_fraction": r.kept_fraction, "seconds": round(r.seconds, 3), "error": r.error, "notes": r.notes,
           "keep": opts.keep, "weights_sha256": weights.sha256, "shard": list(opts.shard) if opts.shard else None,
           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ppar_version": __version__}
    try:
        with open(path, "a", encoding="utf-8") as f:  # one short line per write: appends do not interleave
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    except OSError as e:
        raise OutputError(f"{path}: cannot write the manifest ({e.strerror or e}); finished outputs are kept") from None
