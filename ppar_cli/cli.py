"""`ppar` command line: a thin Typer layer over the Python API. Exit codes: 0 ok, 1 a file failed, 2 usage."""
from __future__ import annotations

import codecs
import gc
import json
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

# The CLI owns its process: PyTorch's OpenMP threads otherwise spin for a while after every parallel
# region, taking CPU from the decoder and encoder threads beside them (at 1280x720: 6 s of CPU in a
# 27 s run, 8% of the wall time). Read by libgomp when torch loads, so before the import below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ppar_cli.errors import PparError, UsageError  # noqa: E402 -- below the environment setting, on purpose
from ppar_cli.pipeline.guard import GuardConfig  # noqa: E402
from ppar_cli.pipeline.jobs import plan_jobs  # noqa: E402
from ppar_cli.pipeline.options import Options, parse_shard  # noqa: E402
from ppar_cli.research.args import TrainArgs  # noqa: E402
from ppar_cli.views import (  # noqa: E402
    RichReporter,
    audit_table,
    console,
    eval_table,
    info_table,
    printable,
    shown,
    stages,
    summary_table,
)

_OPT = Options()  # the API's defaults are the CLI's: one source
_TRAIN = TrainArgs(data="")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        from ppar_cli import __version__

        typer.echo(f"ppar {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print ppar's version and exit.")) -> None:
    """Privacy-preserving video anonymization by attention-driven tubelet pruning."""


# API parameter -> the flag a user types, where they differ (others: --name-with-dashes)
FLAGS = {"keep_ratio": "--keep", "lambda_priv": "--lambda", "scores_path": "--scores", "keeps": "--keep",
         "guard_threshold": "--guard-threshold", "guard_stride": "--guard-stride", "guard_max_side": "--guard-max-side"}


def fail(error: str | Exception, code: int) -> None:
    message = error.render(FLAGS) if isinstance(error, UsageError) else str(error)
    console.print(f"[bold red]error:[/] {shown(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def anonymize(
    inp: Path = typer.Argument(..., metavar="IN", help="Video file or folder (walked recursively)."),
    out: Path = typer.Argument(..., metavar="OUT", help="Output MP4, or folder mirroring IN."),
    keep: float = typer.Option(_OPT.keep_ratio, help="Fraction of each clip's tubelets left visible, 0..1."),
    lambda_: Optional[float] = typer.Option(None, "--lambda", help="Privacy weight in the tubelet score (default: the weights')."),
    hysteresis: float = typer.Option(_OPT.hysteresis, help="Less flicker: score bonus, in score standard deviations, for tubelets the previous window kept (0: off; 0.5 is mild)."),
    weights: Optional[Path] = typer.Option(None, help="Weights file (.safetensors); default: the bundled weights."),
    device: str = typer.Option(_OPT.device, help="auto, cpu or cuda."),
    batch_size: int = typer.Option(_OPT.batch_size, help="Clips per model batch."),
    fill: str = typer.Option(_OPT.fill, help="Pruned tubelets: black (the method's), blur, pixelate or mean."),
    scores: Optional[Path] = typer.Option(None, help="Score map JSON path (single file; default OUT.json)."),
    no_scores: bool = typer.Option(False, "--no-scores", help="Do not write score maps."),
    preview: Optional[Path] = typer.Option(None, help="Single file: also write a side-by-side MP4 for checking: the UNANONYMIZED original with scores and kept grid | the output. Never share it."),
    audio: bool = typer.Option(True, "--audio/--no-audio", help="Copy the audio stream(s) unchanged: voices and spoken names are not anonymized (--no-audio drops them)."),
    crf: int = typer.Option(_OPT.crf, help="x264 quality, 0 (lossless) .. 51; lower is better."),
    overwrite: bool = typer.Option(False, help="Replace existing outputs (folder mode skips them otherwise)."),
    guard: str = typer.Option(_OPT.guard, help="Face guard: auto (on when installed), centerface, or none."),
    guard_stride: int = typer.Option(_OPT.guard_config.stride, help="Run the face detector on every N-th frame."),
    guard_threshold: float = typer.Option(_OPT.guard_config.threshold, help="Face detector threshold (lower hides more)."),
    guard_max_side: int = typer.Option(_OPT.guard_config.max_side, help="Long side, in pixels, the face detector sees larger frames at; "
                                       "raise it for small faces in large frames (slower; the default is the least)."),
    jobs: int = typer.Option(_OPT.jobs, help="Folder mode: videos anonymized at once in this process (they share the model); more use more cores and memory."),
    workers: int = typer.Option(_OPT.workers, help="Folder mode: processes, each doing --jobs videos at once with its own copy of the model; on a GPU machine 4 workers of --jobs 4 were fastest."),
    shard: Optional[str] = typer.Option(None, help="Folder mode: do shard K of N (0-based K/N); default from torchrun's RANK/WORLD_SIZE."),
    manifest: Optional[Path] = typer.Option(None, help="Folder mode: JSON-lines record of each file (default OUT/ppar-manifest*.jsonl)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summary."),
) -> None:
    """Anonymize a video or a folder of videos: keep the top-k tubelets, black out the rest."""
    try:
        opts = Options(keep_ratio=keep, lambda_priv=lambda_, hysteresis=hysteresis, device=device, batch_size=batch_size, fill=fill, scores=not no_scores,
                       scores_path=scores, preview=preview, audio=audio, crf=crf, overwrite=overwrite, shard=parse_shard(shard), jobs=jobs, workers=workers,
                       guard=guard, guard_config=GuardConfig(threshold=guard_threshold, stride=guard_stride, max_side=guard_max_side),
                       manifest=manifest)
        opts.validate()  # what can be checked without PyTorch is, before it loads (seconds)
        plan_jobs(inp, out)
    except PparError as e:
        fail(e, e.exit_code)
    from ppar_cli.pipeline.api import anonymize as run_anonymize

    progress = None if quiet else Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                           TimeRemainingColumn(), console=console, transient=True)
    # SIGTERM (a scheduler's cancel, `kill`) cleans up like Ctrl-C: temporary outputs removed, exit 130
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if progress:
            progress.start()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = run_anonymize(inp, out, opts, weights=weights, reporter=RichReporter(progress))
        for w in caught:
            console.print(f"[bold yellow]warning:[/] {shown(w.message)}", highlight=False, soft_wrap=True)
    except PparError as e:
        fail(e, e.exit_code)
    except KeyboardInterrupt:
        fail("interrupted; finished outputs are kept, a rerun skips them", 130)
    finally:
        if progress:
            progress.stop()
    failed = [r for r in results if r.status == "failed"]
    if not quiet:
        summary_table(results, inp if inp.is_dir() else None, keep)
    else:  # errors are shown even when quiet
        for r in failed:
            console.print(f"[bold red]error:[/] {shown(r.error)}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@app.command()
def audit(
    original: Path = typer.Argument(..., help="Original video or folder."),
    anonymized: Path = typer.Argument(..., help="Anonymized video, or the folder `ppar anonymize` wrote."),
    threshold: float = typer.Option(0.1, help="CenterFace's threshold (lower finds more, so the audit is stricter)."),
    detectors: str = typer.Option("all", help="centerface, dlib, both comma-separated, or all (every installed one)."),
    identity: str = typer.Option("auto", help="Does what is left where a face was still match the person (dlib's descriptor)? auto|on|off."),
    identity_stride: int = typer.Option(5, min=1, help="Identity check on every N-th frame."),
    max_side: Optional[int] = typer.Option(None, min=32, help="CenterFace sees frames at most this many pixels long "
                                           "(faster on large frames, blind to their small faces); default: full size."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON report."),
) -> None:
    """Face detections before and after anonymization, per video and detector: how many face frames leaked."""
    from ppar_cli.faces.audit import audit as run_audit

    for p in (original, anonymized):
        if not p.exists():
            fail(f"{p}: no such file or directory", 2)
    if identity not in ("auto", "on", "off"):
        fail(f"--identity must be auto, on or off, got {identity!r}", 2)
    try:
        records = run_audit(original, anonymized, threshold, detectors, identity, identity_stride, max_side)
    except ValueError as e:
        fail(str(e), 2)
    except PparError as e:
        fail(e, e.exit_code)
    if as_json:
        typer.echo(json.dumps(records, indent=1))
    else:
        audit_table(records, threshold, max_side)
    if any("error" in r for r in records):
        raise typer.Exit(1)


@app.command()
def info(
    weights: Optional[Path] = typer.Argument(None, help="Weights file; default: the bundled weights."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a weights file's config, classes, attributes, size, provenance and sha256."""
    from ppar_cli.core.weights import describe

    try:
        d = describe(weights)
    except PparError as e:
        fail(e, e.exit_code)
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    info_table(d)


@app.command()
def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write the benchmark into."),
    videos: int = typer.Option(100, help="Number of videos."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same benchmark."),
    size: int = typer.Option(160, help="Frame width and height."),
    frames: int = typer.Option(64, help="Frames per video."),
    fps: float = typer.Option(25.0, help="Frame rate."),
    identities: int = typer.Option(32, help="Distinct people."),
    workers: Optional[int] = typer.Option(None, help="Processes (default: all cores)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Generate the procedural PPAR benchmark (UCF101 layout, privacy labels, ground-truth masks)."""
    from ppar_cli.research.synth import generate

    with stages(quiet) as progress:
        try:
            index = generate(out_dir, videos, seed, size, frames, fps, identities, workers,
                             progress=progress("rendering", videos))
        except PparError as e:
            fail(e, e.exit_code)
    if not quiet:
        console.print(f"[green]ok[/] {shown(out_dir)}: {videos} videos ({videos - index['test_videos']} train, "
                      f"{index['test_videos']} test), {len(index['actions'])} actions, {identities} identities")


@app.command()
def labels(
    path: Path = typer.Argument(..., help="A VP label pickle, a PA-HMDB51 folder, or a benchmark folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Summarise a privacy label file: videos, attributes, positive rates."""
    from ppar_cli.research.labels import summarize_labels

    try:
        summary = summarize_labels(path)
    except PparError as e:
        fail(e, e.exit_code)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=f"{path}  ({summary['format']}, {summary['videos']} videos)")
    table.add_column("attribute")
    table.add_column("positive rate", justify="right")
    table.add_column("detail")
    for a, rate in summary["positive_rate"].items():
        table.add_row(a, f"{rate:.4f}", json.dumps(summary.get("value_frames", {}).get(a, "")) if "value_frames" in summary else "")
    Console().print(table)


@app.command()
def train(
    data: str = typer.Option(..., help="Benchmark folder (or CSV); several, comma-separated, train together."),
    format: str = typer.Option("auto", help="auto, ucf101, hmdb51, synth, pseudo (real videos with `ppar pseudolabel` masks) or csv."),
    labels: Optional[Path] = typer.Option(None, help="VP privacy label pickle, or a PA-HMDB51 folder (with --format hmdb51)."),
    splits: Optional[Path] = typer.Option(None, help="Folder of split files, when not inside --data."),
    split: int = typer.Option(_TRAIN.split, help="Official split number (UCF101/HMDB51: 1, 2 or 3)."),
    config: str = typer.Option(_TRAIN.config, help="small, base, a config JSON or a weights file."),
    set_: list[str] = typer.Option([], "--set", help="Override a config field, e.g. --set grl=false (repeatable)."),
    epochs: int = typer.Option(_TRAIN.epochs, help="Passes over the training clips."),
    batch_size: int = typer.Option(_TRAIN.batch_size, help="Clips per step on each process."),
    accum: int = typer.Option(_TRAIN.accum, help="Gradient accumulation steps."),
    lr: float = typer.Option(_TRAIN.lr, help="Peak learning rate (AdamW, warm-up then cosine decay)."),
    overlap_weight: float = typer.Option(_TRAIN.overlap_weight, help="Penalty on overlapping action/privacy CLS attention."),
    mask_weight: float = typer.Option(_TRAIN.mask_weight, help="Supervise both CLS attentions with ground-truth masks (synthetic benchmark)."),
    separation_weight: float = typer.Option(_TRAIN.separation_weight, help="With masks: penalty on each CLS's attention on the "
                                            "other's mask (the action CLS on heads), which ranks heads low."),
    motion_weight: float = typer.Option(_TRAIN.motion_weight, help="With masks: the action CLS also learns the clip's own "
                                        "motion energy outside the privacy mask."),
    crop_scale: float = typer.Option(_TRAIN.crop_scale, help="Crop each training clip to a random box, each side this "
                                     "to 1 of the frame's, resized back (masks alike); 1: off."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    seed: int = typer.Option(_TRAIN.seed, help="Seed of initialisation and clip order: the same seed gives the same weights."),
    out: Path = typer.Option(Path(_TRAIN.out), help="Final weights file."),
    run_dir: Path = typer.Option(Path(_TRAIN.run_dir), help="Checkpoints and metrics.jsonl; an existing run resumes."),
    max_eval: Optional[int] = typer.Option(None, help="Evaluate on at most this many test videos per epoch."),
    stop_after: Optional[int] = typer.Option(None, help="Run at most this many epochs now; rerun to resume."),
    init: Optional[Path] = typer.Option(None, help="Start from ppar weights (fine-tuning; with --config of the same file) or a public "
                                        "pretrained ViT for the blocks (.safetensors in timm's or Hugging Face's ViT / VideoMAE "
                                        "layout), e.g. DeiT-B for --config base; heads of other labels start fresh."),
    init_inflation: str = typer.Option(_TRAIN.init_inflation, help="2D patch filters over a tubelet's frames: average or central."),
    init_stem: Optional[Path] = typer.Option(None, help="Pretrained stem weights (.safetensors) for a config with stem=mobilenet_v2, "
                                             "e.g. weights/mobilenet_v2_stem.safetensors."),
) -> None:
    """Train the dual-CLS anonymizer (resumes from RUN_DIR; works under torchrun)."""
    from ppar_cli.research.train import TrainArgs
    from ppar_cli.research.train import train as run_train

    overrides = {}
    for item in set_:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    args = TrainArgs(data=str(data), format=format, labels=str(labels) if labels else None,
                     splits_dir=str(splits) if splits else None, split=split, config=config, overrides=overrides,
                     epochs=epochs, batch_size=batch_size, accum=accum, lr=lr, overlap_weight=overlap_weight,
                     mask_weight=mask_weight, separation_weight=separation_weight, motion_weight=motion_weight, crop_scale=crop_scale, threads=threads, seed=seed, out=str(out), run_dir=str(run_dir), max_eval=max_eval, stop_after=stop_after,
                     init_stem=str(init_stem) if init_stem else None, init=str(init) if init else None,
                     init_inflation=init_inflation)
    try:
        run_train(args, log=lambda m: console.print(m, highlight=False, markup=False))
    except PparError as e:
        fail(e, e.exit_code)
    except ValueError as e:
        fail(str(e), 2)


@app.command()
def pseudolabel(
    inp: Path = typer.Argument(..., metavar="IN_DIR", help="Folder of real videos (walked recursively)."),
    out: Path = typer.Argument(..., metavar="OUT_DIR", help="Masks (NAME.masks.npz) and pseudo.json go here; a rerun resumes."),
    val: float = typer.Option(0.2, help="Fraction of the videos assigned to validation (stable by file name)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Pseudo ground truth on real footage: head and moving-body masks from offline teachers (pip install 'ppar\\[teach]').

    Privacy masks cover heads, action masks the moving body parts; the teachers ship inside packages.
    """
    from ppar_cli.media.probe import video_files
    from ppar_cli.research.teach import pseudolabel as run_pseudolabel

    total = len(video_files(inp)) if inp.is_dir() else 0
    with stages(quiet) as progress:
        try:
            index = run_pseudolabel(inp, out, val, progress=progress("pseudo-labelling", total))
        except PparError as e:
            fail(e, e.exit_code)
    if not quiet:
        v = index["videos"].values()
        frames = sum(r["frames"] for r in v) or 1
        console.print(f"[green]ok[/] {shown(out)}: {len(index['videos'])} videos, {frames} frames; person found by pose in "
                      f"{sum(r['pose_frames'] for r in v) / frames:.0%} of frames, a face in "
                      f"{sum(r['faces_frames'] for r in v) / frames:.0%}, any teacher in "
                      f"{sum(r['any_person_frames'] for r in v) / frames:.0%}", highlight=False)


@app.command("eval")
def eval_(
    data: Path = typer.Option(..., help="Benchmark folder (or CSV); its test split is evaluated."),
    format: str = typer.Option("auto", help="auto, ucf101, hmdb51, synth, pseudo (real videos with `ppar pseudolabel` masks) or csv."),
    labels: Optional[Path] = typer.Option(None, help="VP privacy label pickle, or a PA-HMDB51 folder (with --format hmdb51)."),
    splits: Optional[Path] = typer.Option(None, help="Folder of split files, when not inside --data."),
    split: int = typer.Option(1, help="Official split number (UCF101/HMDB51: 1, 2 or 3)."),
    weights: Optional[Path] = typer.Option(None, help="Weights file; default: the bundled weights."),
    keep: str = typer.Option("0.3,0.5,0.7", help="Keep ratios: a list (0.3,0.5) or a sweep start:stop:step."),
    methods: str = typer.Option(",".join(("ppar", "raw", "random", "oracle", "blur", "downsample2", "downsample4", "blacken")),
                                show_default=False,
                                help="Comma-separated methods (default: ppar,raw,random,oracle,blur,downsample2,downsample4,"
                                     "blacken); blacken and oracle need the synthetic benchmark's ground-truth masks."),
    protocol: str = typer.Option("quick", help="quick: the frozen model's own heads read the anonymized clips; "
                                 "full: fresh action model, privacy and re-id attackers trained on anonymized clips."),
    epochs: int = typer.Option(8, help="full: training epochs of each fresh model."),
    max_train_videos: Optional[int] = typer.Option(None, help="full: train the fresh models on at most this many videos."),
    train_windows: int = typer.Option(4, help="full: evenly spaced windows per training video."),
    lambda_: Optional[float] = typer.Option(None, "--lambda", help="Privacy weight in the ppar score (default: the weights')."),
    hysteresis: float = typer.Option(0.0, help="ppar's hysteresis, as in anonymize (quick protocol; acts between back-to-back windows)."),
    max_videos: Optional[int] = typer.Option(None, help="Evaluate at most this many test videos."),
    clips_per_video: int = typer.Option(1, help="Evenly spaced windows per test video."),
    out: Path = typer.Option(Path("results"), help="Folder for results.json, results.csv and tradeoff.png."),
    seeds: str = typer.Option("0", help="Comma-separated seeds; with several, each figure is the mean, with its spread (NAME_std)."),
    device: str = typer.Option("cpu", help="auto, cpu or cuda: where the model and the fresh models run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or table (results are still written)."),
) -> None:
    """Utility/privacy evaluation with baselines, Pareto frontier and a trade-off plot."""
    from ppar_cli.research.evaluate import evaluate_benchmark, parse_keeps

    with stages(quiet) as progress:
        try:
            result = evaluate_benchmark(data, weights, format, split, labels, splits, protocol,
                                        tuple(m.strip() for m in methods.split(",") if m.strip()), tuple(parse_keeps(keep)),
                                        epochs, max_videos, max_train_videos, clips_per_video, lambda_, hysteresis, out,
                                        progress=progress, seeds=_seeds(seeds), device=device,
                                        train_windows=train_windows)
        except PparError as e:
            fail(e, e.exit_code)
    if quiet:
        return
    eval_table(result, protocol)
    console.print(f"wrote {out}/results.json, results.csv, tradeoff.png", markup=False)


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        seeds = ()
    if not seeds:
        fail(UsageError(f"give integers separated by commas, got {text!r}", option="seeds"), 2)
    return seeds


def main() -> None:
    """The `ppar` program. The interpreter's last garbage collection at exit would walk every object
    that importing PyTorch made (0.3 s of a run on 2 cores); frozen, they are skipped. Nothing is
    left to collect in a process that is ending."""
    # a name not routed through views.shown still prints (as printable() shows it) rather than crash
    codecs.register_error("ppar-names", lambda e: (printable(e.object[e.start:e.end]), e.end))
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="ppar-names")
    try:
        app()
    finally:
        gc.freeze()


if __name__ == "__main__":
    main()
