"""`ppar` command line: a thin Typer layer over the Python API. Exit codes: 0 ok, 1 a file failed, 2 usage."""
from __future__ import annotations

import codecs
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import List, NoReturn, Optional

import typer

# The CLI owns its process: PyTorch's OpenMP threads otherwise spin for a while after every parallel
# region, taking CPU from the decoder and encoder threads beside them (at 1280x720: 6 s of CPU in a
# 27 s run, 8% of the wall time). Read by libgomp when torch loads, so before the import below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ppar_cli.cli_research import RESEARCH_COMMANDS  # noqa: E402 -- below the environment setting, on purpose
from ppar_cli.errors import PparError  # noqa: E402
from ppar_cli.pipeline.guard import GuardConfig  # noqa: E402
from ppar_cli.pipeline.jobs import plan_jobs  # noqa: E402
from ppar_cli.pipeline.options import FileResult, Options, parse_shard  # noqa: E402
from ppar_cli.pipeline.runtime import end_process, folder_layout  # noqa: E402
from ppar_cli.views import (  # noqa: E402
    RichReporter,
    audit_table,
    console,
    fail,
    info_table,
    printable,
    progress_bars,
    show_report,
    shown,
    stages,
    summary_table,
)

_OPT = Options()  # the API's defaults are the CLI's: one source

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


@app.command()
def anonymize(
    inp: List[Path] = typer.Argument(None, metavar="IN", show_default=False, help="Video file or folder (walked recursively); several go into the folder OUT."),
    out: Path = typer.Argument(..., metavar="OUT", help="Output MP4, or folder mirroring IN (several: each file as OUT/NAME.mp4, each folder under OUT/FOLDER)."),
    keep: float = typer.Option(_OPT.keep_ratio, help="Fraction of each clip's tubelets left visible, 0..1."),
    lambda_: Optional[float] = typer.Option(None, "--lambda", help="Privacy weight in the tubelet score, 0..10000 (default: the weights'; 0: action alone ranks)."),
    hysteresis: float = typer.Option(_OPT.hysteresis, help="Less flicker: score bonus, in score standard deviations, for tubelets the previous window kept (0: off; 0.5 is mild)."),
    weights: Optional[Path] = typer.Option(None, help="Weights file (.safetensors); default: the bundled weights."),
    device: str = typer.Option(_OPT.device, help="auto, cpu or cuda."),
    batch_size: int = typer.Option(_OPT.batch_size, help="Clips per model batch."),
    fill: str = typer.Option(_OPT.fill, help="Pruned tubelets: black (the method's), blur, pixelate or mean."),
    scores: Optional[Path] = typer.Option(None, help="Score map JSON path (single file; default OUT.json; - prints it to stdout)."),
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
    jobs: Optional[int] = typer.Option(None, show_default="auto: 4 with a GPU, else 2; fewer on little memory",
                                       help="Folder mode: videos anonymized at once in each process (they share its model); more use more cores and memory."),
    workers: Optional[int] = typer.Option(None, show_default="auto: cores/jobs with a GPU, else 1; fewer on little memory",
                                          help="Folder mode: processes, each doing --jobs videos at once with its own copy of the model."),
    shard: Optional[str] = typer.Option(None, help="Do shard K of N (0-based K/N) of a folder's files (a single file is shard 0's); default from torchrun's RANK/WORLD_SIZE."),
    manifest: Optional[Path] = typer.Option(None, help="Folder mode: JSON-lines record of each file (default OUT/ppar-manifest*.jsonl)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summary."),
) -> None:
    """Anonymize a video or a folder of videos: keep the top-k tubelets, black out the rest."""
    _check_out_given(inp, out)
    if scores == Path("-"):  # the score map on stdout, for a pipe (`--scores - | jq .summary`)
        asked = {k: v for k, v in locals().items() if k != "scores"}
        with tempfile.TemporaryDirectory(prefix="ppar-scores-") as spool:
            anonymize(**asked, scores=Path(spool) / "scores.json")  # a failure exits from here, the spool removed
            with open(Path(spool) / "scores.json", encoding="utf-8") as f:
                shutil.copyfileobj(f, sys.stdout)
        return
    try:
        opts = Options(keep_ratio=keep, lambda_priv=lambda_, hysteresis=hysteresis, device=device, batch_size=batch_size, fill=fill, scores=not no_scores,
                       scores_path=scores, preview=preview, audio=audio, crf=crf, overwrite=overwrite, shard=parse_shard(shard), jobs=jobs,
                       # this program can start worker processes (its main is guarded): as many as the machine suits
                       workers=workers if workers is not None else folder_layout(device, None, jobs)[0],
                       guard=guard, guard_config=GuardConfig(threshold=guard_threshold, stride=guard_stride, max_side=guard_max_side),
                       manifest=manifest)
        opts.validate()  # what can be checked without PyTorch is, before it loads (seconds)
        plan_jobs(inp, out)
    except PparError as e:
        fail(e, e.exit_code)
    from ppar_cli.pipeline.api import anonymize as run_anonymize

    progress = progress_bars(quiet)
    # SIGTERM (a scheduler's cancel, `kill`) cleans up like Ctrl-C: temporary outputs removed, exit 130
    signal.signal(signal.SIGTERM, _interrupt)
    t0 = time.perf_counter()
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
        summary_table(results, inp[0] if len(inp) == 1 and inp[0].is_dir() else None, keep, _how(opts, results, time.perf_counter() - t0))
    else:  # errors are shown even when quiet
        for r in failed:
            console.print(f"[bold red]error:[/] {shown(r.error)}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _check_out_given(inputs: list[Path], out: Path, names: tuple[str, str] = ("IN", "OUT")) -> None:
    """IN... OUT with one path given: Click takes it for OUT and leaves IN empty."""
    if not inputs:
        raise typer.BadParameter(f"missing: one path given ({out}); {names[0]} comes first, then {names[1]}",
                                 param_hint=f"'{names[1]}'")


def _how(opts: Options, results: list[FileResult], seconds: float) -> str:
    """A folder run's time and layout (ppar chooses the layout from the machine unless told)."""
    from ppar_cli.pipeline.api import layout_used

    videos = sum(r.status != "skipped" for r in results)
    if not videos:
        return f"in {seconds:.1f} s"
    processes, at_once = layout_used(opts, videos)
    where = "in one process" if processes == 1 else f"in each of {processes} processes"
    return f"in {seconds:.1f} s, {at_once} video{'s' if at_once > 1 else ''} at once {where}"


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@app.command()
def audit(
    original: List[Path] = typer.Argument(None, metavar="ORIGINAL", show_default=False, help="Original video or folder, or several (as given to `ppar anonymize`)."),
    anonymized: Path = typer.Argument(..., metavar="ANONYMIZED", help="Anonymized video, or the folder `ppar anonymize` wrote."),
    threshold: float = typer.Option(0.1, help="CenterFace's threshold (lower finds more, so the audit is stricter)."),
    detectors: str = typer.Option("all", help="centerface, dlib, both comma-separated, or all (every installed one)."),
    identity: str = typer.Option("auto", help="Does what is left where a face was still match the person (dlib's descriptor)? auto|on|off."),
    identity_stride: int = typer.Option(5, min=1, help="Identity check on every N-th frame."),
    max_side: Optional[int] = typer.Option(None, min=32, help="CenterFace sees frames at most this many pixels long "
                                           "(faster on large frames, blind to their small faces); default: full size."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON report."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Face detections before and after anonymization, per video and detector: how many face frames leaked."""
    from ppar_cli.faces.audit import audit as run_audit

    _check_out_given(original, anonymized, ("ORIGINAL", "ANONYMIZED"))
    for p in (*original, anonymized):
        if not p.exists():
            fail(f"{p}: no such file or directory", 2)
    if identity not in ("auto", "on", "off"):
        fail(f"--identity must be auto, on or off, got {identity!r}", 2)
    try:
        with stages(quiet) as progress:
            records = run_audit(original, anonymized, threshold, detectors, identity, identity_stride, max_side, progress)
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

    show_report(lambda: describe(weights), info_table, as_json)


# the research commands, after the product's in `ppar --help`
for _name, _command in RESEARCH_COMMANDS.items():
    app.command(_name)(_command)


def main() -> None:
    """The `ppar` command line in this process: raises SystemExit with its exit code (:func:`run`
    is the program)."""
    # a name not routed through views.shown still prints (as printable() shows it) rather than crash
    codecs.register_error("ppar-names", lambda e: (printable(e.object[e.start:e.end]), e.end))
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="ppar-names")
    app()


def run() -> NoReturn:
    """`ppar` as a program (its console script, `python -m ppar_cli.cli`): :func:`main`, then the
    process ends at once (runtime.end_process), its outputs committed, instead of tearing the
    interpreter down. Anything but SystemExit (a bug) ends as usual, with its traceback."""
    try:
        main()
        code = 0
    except SystemExit as e:
        code = exit_code(e)
    end_process(code)


def exit_code(e: SystemExit) -> int:
    """The process's exit status for ``e``, as Python makes it: None is 0, a message is 1 (shown)."""
    if e.code is None or isinstance(e.code, int):
        return e.code or 0
    print(e.code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    run()
