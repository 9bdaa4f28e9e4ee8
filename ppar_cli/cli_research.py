"""The research commands of `ppar` (synth, labels, train, pseudolabel, eval): Typer functions over
the research API, which `cli.py` registers after the product's commands."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ppar_cli.errors import PparError, UsageError
from ppar_cli.research.args import TrainArgs
from ppar_cli.views import console, eval_table, fail, labels_table, native_stderr_to, show_report, shown, stages

_TRAIN = TrainArgs(data="")  # the API's defaults are the CLI's: one source


def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write the benchmark into."),
    videos: int = typer.Option(100, help="Number of videos."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same benchmark."),
    size: int = typer.Option(160, help="Frame width and height."),
    frames: int = typer.Option(64, help="Frames per video."),
    fps: float = typer.Option(25.0, help="Frame rate."),
    identities: int = typer.Option(32, help="Distinct people."),
    workers: Optional[int] = typer.Option(None, help="Processes (default: all cores)."),
    overwrite: bool = typer.Option(False, help="Write into a folder that is not empty (its files of the same names are replaced)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Generate the procedural PPAR benchmark (UCF101 layout, privacy labels, ground-truth masks)."""
    from ppar_cli.research.synth import generate

    with stages(quiet) as progress:
        try:
            index = generate(out_dir, videos, seed, size, frames, fps, identities, workers,
                             progress=progress("rendering", videos), overwrite=overwrite)
        except PparError as e:
            fail(e, e.exit_code)
    if not quiet:
        console.print(f"[green]ok[/] {shown(out_dir)}: {videos} videos ({videos - index['test_videos']} train, "
                      f"{index['test_videos']} test), {len(index['actions'])} actions, {identities} identities", soft_wrap=True)


def labels(
    path: Path = typer.Argument(..., help="A VP label pickle, a PA-HMDB51 folder or .json file, or a folder `ppar synth` or `ppar pseudolabel` wrote."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Summarise a privacy label file: videos, attributes, positive rates."""
    from ppar_cli.research.labels import summarize_labels

    show_report(lambda: summarize_labels(path), lambda summary: labels_table(path, summary), as_json)


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
    mask_weight: float = typer.Option(_TRAIN.mask_weight, help="Supervise both CLS attentions with ground-truth masks (synthetic or `ppar pseudolabel` benchmarks)."),
    separation_weight: float = typer.Option(_TRAIN.separation_weight, help="With masks: penalty on each CLS's attention on the "
                                            "other's mask (the action CLS on heads), which ranks heads low."),
    motion_weight: float = typer.Option(_TRAIN.motion_weight, help="With masks: the action CLS also learns the clip's own "
                                        "motion energy outside the privacy mask."),
    rank_weight: float = typer.Option(_TRAIN.rank_weight, help="With masks: the tubelet score itself (action minus lambda "
                                      "privacy attention) learns to rank action tubelets above the median, heads below."),
    crop_scale: float = typer.Option(_TRAIN.crop_scale, help="Crop each training clip to a random box, each side this "
                                     "to 1 of the frame's, resized back (masks alike); 1: off."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    seed: int = typer.Option(_TRAIN.seed, help="Seed of initialisation and clip order: the same seed gives the same weights."),
    out: Path = typer.Option(Path(_TRAIN.out), help="Final weights file."),
    overwrite: bool = typer.Option(_TRAIN.overwrite, help="Replace an existing --out file (refused otherwise, before training)."),
    run_dir: Path = typer.Option(Path(_TRAIN.run_dir), help="Checkpoints and metrics.jsonl; an existing run resumes."),
    max_eval: Optional[int] = typer.Option(None, help="Evaluate on at most this many test videos per epoch."),
    stop_after: Optional[int] = typer.Option(None, help="Run at most this many epochs now; rerun to resume."),
    init: Optional[Path] = typer.Option(None, help="Start from ppar weights (fine-tuning; with --config of the same file) or a public "
                                        "pretrained ViT for the blocks (.safetensors in timm's or Hugging Face's ViT / VideoMAE "
                                        "layout), e.g. DeiT-B for --config base; heads of other labels start fresh."),
    init_inflation: str = typer.Option(_TRAIN.init_inflation, help="2D patch filters over a tubelet's frames: average or central."),
    init_stem: Optional[Path] = typer.Option(None, help="Pretrained stem weights (.safetensors) for a config with stem=mobilenet_v2, "
                                             "e.g. weights/mobilenet_v2_stem.safetensors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars (each epoch's metrics line still prints)."),
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
                     mask_weight=mask_weight, separation_weight=separation_weight, motion_weight=motion_weight, rank_weight=rank_weight, crop_scale=crop_scale, threads=threads, seed=seed, out=str(out), overwrite=overwrite, run_dir=str(run_dir), max_eval=max_eval, stop_after=stop_after,
                     init_stem=str(init_stem) if init_stem else None, init=str(init) if init else None,
                     init_inflation=init_inflation)
    try:
        with stages(quiet) as progress:
            run_train(args, log=lambda m: console.print(m, highlight=False, markup=False, soft_wrap=True), progress=progress)
    except PparError as e:
        fail(e, e.exit_code)
    except ValueError as e:
        fail(str(e), 2)


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
    with native_stderr_to(out / "teachers.log"), stages(quiet) as progress:
        try:
            index = run_pseudolabel(inp, out, val, progress=progress("pseudo-labelling", total))
        except PparError as e:
            fail(e, e.exit_code)
    failed = index["failed"]
    for error in failed.values():  # each names its video; the others were labelled: a batch goes on
        console.print(f"[red]failed[/] {shown(error)}", highlight=False, soft_wrap=True)
    if not quiet:
        v = index["videos"].values()
        frames = sum(r["frames"] for r in v) or 1
        console.print(f"{'[red]' + str(len(failed)) + ' failed[/], ' if failed else '[green]ok[/] '}{shown(out)}: "
                      f"{len(index['videos'])} videos, {frames} frames; person found by pose in "
                      f"{sum(r['pose_frames'] for r in v) / frames:.0%} of frames, a face in "
                      f"{sum(r['faces_frames'] for r in v) / frames:.0%}, any teacher in "
                      f"{sum(r['any_person_frames'] for r in v) / frames:.0%}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


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
    overwrite: bool = typer.Option(False, help="Replace an earlier evaluation's results in --out (refused otherwise, before any work)."),
    seeds: str = typer.Option("0", help="Comma-separated seeds; with several, each figure is the mean, with its spread (NAME_std)."),
    device: str = typer.Option("auto", help="auto (a GPU where PyTorch sees one, as `ppar train` and `ppar anonymize` do), cpu or cuda: where the model and the fresh models run."),
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
                                        train_windows=train_windows, overwrite=overwrite)
        except PparError as e:
            fail(e, e.exit_code)
    for note in result.notes:  # even when quiet: they say what the figures are worth
        console.print(f"[bold yellow]warning:[/] {shown(note)}", highlight=False, soft_wrap=True)
    if quiet:
        return
    eval_table(result, protocol)
    console.print(f"wrote {out}/results.json, results.csv, tradeoff.png", markup=False, soft_wrap=True)


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        seeds = ()
    if not seeds:
        fail(UsageError(f"give integers separated by commas, got {text!r}", option="seeds"), 2)
    return seeds


RESEARCH_COMMANDS = {"synth": synth, "labels": labels, "train": train, "pseudolabel": pseudolabel, "eval": eval_}
