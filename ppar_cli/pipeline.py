"""decode -> clips -> model -> masks -> fill -> encode, for one file or a folder tree.

The Python API behind `ppar anonymize`: :func:`anonymize` takes a file or a folder and returns one
:class:`FileResult` per video. Frames reach the encoder only after their clip was scored and
filled, so a failure anywhere leaves no unanonymized frame behind (privacy fails closed).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from . import __version__
from .files import atomic_path
from .masks import FILLS, cell_edges, fill_clip
from .model import PPARConfig, PPARModel, keep_counts, prepare_clips, sample_clip, slab_index
from .video import VIDEO_EXTENSIONS, FrameReader, VideoError, VideoInfo, VideoWriter, probe
from .weights import LoadedWeights, load_weights

SCHEMA = "ppar-scores/1"


class UsageError(Exception):
    """A mistake in what the user asked for (exit code 2), as opposed to a file that failed."""


@dataclass
class Options:
    keep: float = 0.5
    device: str = "auto"
    batch_size: int = 4
    fill: str = "black"
    scores: bool = True
    scores_path: Path | None = None  # single-file mode only; default OUT.json
    audio: bool = True
    crf: int = 20
    preset: str = "veryfast"
    overwrite: bool = False

    def validate(self) -> None:
        try:
            keep_counts(1, self.keep, 1)
        except (ValueError, TypeError):
            raise UsageError(f"--keep must be a number between 0 and 1, got {self.keep}") from None
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.fill not in FILLS:
            raise UsageError(f"--fill must be one of {', '.join(FILLS)}, got {self.fill!r}")
        if not 0 <= self.crf <= 51:
            raise UsageError(f"--crf must lie in 0..51, got {self.crf}")


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
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available to PyTorch here (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def score_clips(model: PPARModel, clips: torch.Tensor, keep: float, device: torch.device):
    """Run the model on uint8 clips (B, T, H, W, 3) sampled at the clip stride; outputs on the CPU."""
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        x = prepare_clips(clips.to(device, non_blocking=True), model.cfg)
        out = model(x, keep=keep)
    return type(out)(*(t.float().cpu() if t.is_floating_point() else t.cpu() for t in out))


def _window_record(start: int, n: int, out, b: int, cfg: PPARConfig) -> dict:
    probs = out.action_logits[b].softmax(-1)
    top = probs.topk(min(5, len(cfg.actions)))
    priv = out.privacy_logits[b].sigmoid()
    return {
        "start": start,
        "frames": n,
        "kept_fraction": round(float(out.keep_mask[b].float().mean()), 6),
        "scores": np.round(out.scores[b].view(cfg.grid).numpy(), 6).tolist(),
        "keep": out.keep_mask[b].to(torch.uint8).tolist(),
        "actions": [{"label": cfg.actions[i], "p": round(float(p), 6)} for p, i in zip(top.values, top.indices)],
        "privacy": {a: round(float(p), 6) for a, p in zip(cfg.attributes, priv)},
    }


def anonymize_file(src: Path, dst: Path, weights: LoadedWeights, opts: Options, device: torch.device,
                   reporter: Reporter | None = None, scores_path: Path | None = None) -> FileResult:
    """Anonymize one video. Raises nothing for bad input: failures come back as a failed result."""
    reporter = reporter or _Silent()
    t0 = time.perf_counter()
    result = FileResult(src, dst, "failed")
    writer = None
    try:
        info = probe(src)
        reader = FrameReader(info)
        reporter.start_file(src, info.num_frames)
        if info.width % 2 or info.height % 2:
            result.notes.append(f"odd size {info.width}x{info.height}: encoded as yuv444p to keep the exact size")
        dst.parent.mkdir(parents=True, exist_ok=True)
        writer = VideoWriter(dst, info.width, info.height, info.fps, crf=opts.crf, preset=opts.preset,
                             audio_from=info if opts.audio else None)
        windows = _process_stream(reader, writer, weights.model, opts, device, reporter)
        if not windows:
            raise VideoError(f"{src}: no decodable frames")
        result.frames = writer.frames
        result.kept_fraction = float(np.mean([w["kept_fraction"] for w in windows]))
        result.seconds = time.perf_counter() - t0
        if opts.scores:
            _write_json(scores_path or dst.with_suffix(".json"),
                        _score_map(info, result, windows, weights, opts, reader.backend))
        writer.commit()
        result.status = "ok"
    except (VideoError, OSError, RuntimeError, ValueError) as e:
        if writer is not None:
            writer.abort()
        result.error = str(e) if str(src) in str(e) else f"{src}: {e}"
    except BaseException:  # KeyboardInterrupt and friends: clean up, then let them through
        if writer is not None:
            writer.abort()
        raise
    result.seconds = time.perf_counter() - t0
    reporter.end_file(result)
    return result


def _process_stream(reader: FrameReader, writer: VideoWriter, model: PPARModel, opts: Options,
                    device: torch.device, reporter: Reporter) -> list[dict]:
    cfg = model.cfg
    span = cfg.clip_span
    windows: list[dict] = []
    start = 0
    for chunk in reader.chunks(span * opts.batch_size):
        clips = [chunk[i:i + span] for i in range(0, len(chunk), span)]
        batch = torch.from_numpy(np.stack([sample_clip(c, cfg) for c in clips]))
        out = score_clips(model, batch, opts.keep, device)
        for b, frames in enumerate(clips):
            keep = out.keep_mask[b].numpy()
            writer.write(fill_clip(frames, keep, slab_index(len(frames), cfg), opts.fill))
            windows.append(_window_record(start, len(frames), out, b, cfg))
            start += len(frames)
        reporter.advance(len(chunk))
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
                  "keep": opts.keep, "lambda_priv": cfg.lambda_priv, "fill": opts.fill},
        "grid": {"shape": [gt, gh, gw], "tubelet": list(cfg.tubelet), "clip_frames": cfg.frames,
                 "frame_stride": cfg.frame_stride, "clip_span": cfg.clip_span,
                 "source_frames_per_tubelet": cfg.tubelet[0] * cfg.frame_stride,
                 "row_edges": cell_edges(info.height, gh), "col_edges": cell_edges(info.width, gw)},
        "windows": windows,
        "summary": {"kept_fraction": round(result.kept_fraction, 6), "windows": len(windows),
                    "seconds": round(result.seconds, 3), "notes": result.notes},
    }


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, separators=(",", ":")))


def plan_jobs(inp: Path, out: Path) -> list[tuple[Path, Path]]:
    """(source, destination) pairs: a file maps to OUT; a folder is walked and mirrored under OUT as .mp4 files."""
    if not inp.exists():
        raise UsageError(f"{inp}: no such file or directory")
    if inp.is_file():
        if out.exists() and out.is_dir():
            out = out / (inp.stem + ".mp4")
        if out.resolve() == inp.resolve():
            raise UsageError(f"{out}: output would overwrite the input")
        return [(inp, out)]
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: input is a folder, so the output must be a folder too")
    out_abs = out.resolve()
    sources = sorted(p for p in inp.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
                     and out_abs not in p.resolve().parents)
    by_target: dict[Path, list[Path]] = {}
    for p in sources:
        by_target.setdefault(out / p.relative_to(inp).with_suffix(".mp4"), []).append(p)
    jobs = []
    for target, group in by_target.items():
        for p in group:  # a.avi and a.mp4 side by side: keep both, as a.avi.mp4 and a.mp4.mp4
            dst = target if len(group) == 1 else out / p.relative_to(inp).with_name(p.name + ".mp4")
            if dst.resolve() == p.resolve():
                raise UsageError(f"{dst}: output would overwrite an input")
            jobs.append((p, dst))
    return jobs


def anonymize(inp: str | os.PathLike, out: str | os.PathLike, opts: Options | None = None,
              weights: str | os.PathLike | LoadedWeights | None = None, reporter: Reporter | None = None) -> list[FileResult]:
    """Anonymize a video file or a folder of videos (mirrored recursively under ``out``)."""
    opts = opts or Options()
    opts.validate()
    device = resolve_device(opts.device)
    inp, out = Path(inp), Path(out)
    jobs = plan_jobs(inp, out)
    single = inp.is_file()
    if single and out.exists() and not opts.overwrite:
        raise UsageError(f"{out}: already exists (pass --overwrite to replace it)")
    loaded = weights if isinstance(weights, LoadedWeights) else load_weights(weights)
    loaded.model.to(device)
    reporter = reporter or _Silent()
    reporter.start_batch(len(jobs))
    results = []
    for src, dst in jobs:
        if dst.exists() and not opts.overwrite:
            results.append(FileResult(src, dst, "skipped"))
            reporter.end_file(results[-1])
            continue
        results.append(anonymize_file(src, dst, loaded, opts, device, reporter,
                                      scores_path=opts.scores_path if single else None))
    return results
