"""What the CLI shows: progress, the summary and audit tables, weights info and eval results, on
the terminal through rich. Presentation only: every number comes from the Python API."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.markup import escape
from rich.table import Table

from ppar_cli.errors import PparError, UsageError
from ppar_cli.pipeline.options import FileResult

console = Console(stderr=True)  # messages and progress; tables and JSON go to stdout


# API parameter -> the flag a user types, where they differ (others: --name-with-dashes)
FLAGS = {"keep_ratio": "--keep", "lambda_priv": "--lambda", "scores_path": "--scores", "scores": "--no-scores", "keeps": "--keep",
         "guard_threshold": "--guard-threshold", "guard_stride": "--guard-stride", "guard_max_side": "--guard-max-side"}


def fail(error: str | Exception, code: int) -> None:
    """Print a one-line error (a UsageError with the flag the user typed) and exit with ``code``."""
    message = error.render(FLAGS) if isinstance(error, UsageError) else str(error)
    console.print(f"[bold red]error:[/] {shown(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def show_report(fetch: Callable[[], dict], table: Callable[[dict], None], as_json: bool) -> None:
    """A command that reports one result: ``fetch()`` from the API, printed as JSON or by ``table``;
    an API error is one line and its exit code."""
    try:
        result = fetch()
    except PparError as e:
        fail(e, e.exit_code)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        table(result)


def printable(text: str) -> str:
    """``text`` as a UTF-8 terminal can show it, on one line: a file name that is not UTF-8 (an old
    archive's Latin-1, a camera's card) reaches Python with its bytes as lone surrogates, each shown
    here as the byte it stands for (clip_\\xe9.mp4); any other lone surrogate, and any character a
    terminal would act on rather than show (a newline, ESC that starts a colour or cursor sequence,
    a zero-width or bidi mark), as a Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else
                   f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else
                   repr(c)[1:-1] if c.isascii() else f"\\u{ord(c):04x}" for c in text)


def shown(text: object) -> str:
    """User text (names, errors, notes) for rich: printable, and its brackets not read as markup."""
    return escape(printable(str(text)))


class RichReporter:
    """Progress per file and for the batch; files may run at once (``--jobs``), each with its bar."""

    def __init__(self, progress: Progress | None):
        self.progress = progress
        self.batch = None
        self.tasks: dict[Path, int] = {}

    def start_batch(self, n_files: int) -> None:
        if self.progress and n_files > 1:
            self.batch = self.progress.add_task("files", total=n_files)

    def start_file(self, src: Path, total_frames: int | None) -> None:
        if self.progress:
            self.tasks[src] = self.progress.add_task(shown(src.name[-40:]), total=total_frames)

    def advance(self, src: Path, frames: int) -> None:
        if self.progress and src in self.tasks:
            self.progress.advance(self.tasks[src], frames)

    def end_file(self, result: FileResult) -> None:
        if not self.progress:
            return
        task = self.tasks.pop(result.src, None)
        if task is not None:
            self.progress.remove_task(task)
        if self.batch is not None:
            self.progress.advance(self.batch)
        if result.status == "failed":
            self.progress.console.print(f"[red]failed[/] {shown(result.error)}", highlight=False, soft_wrap=True)
        for note in result.notes:
            self.progress.console.print(f"[yellow]note[/] {shown(f'{result.src}: {note}')}", highlight=False,
                                        soft_wrap=True)


def summary_table(results: list[FileResult], root: Path | None, keep: float, how: str = "") -> None:
    """One file's line, or a folder's table with its counts and ``how`` (time and layout)."""
    def kept(r: FileResult) -> str:
        if r.kept_fraction is None:
            return ""
        below = r.kept_fraction < keep - 0.01  # the face guard pruned more than --keep asked
        return f"{r.kept_fraction:.3f}" + (f" (guard; asked {keep:g})" if below else "")

    if len(results) == 1 and results[0].status == "ok":
        r = results[0]
        console.print(f"[green]ok[/] {shown(r.dst)}  {r.frames} frame{'s' * (r.frames != 1)}, visible {kept(r)}, {r.seconds:.1f} s "
                      f"({r.frames / max(r.seconds, 1e-9):.1f} fps)", highlight=False, soft_wrap=True)
        return
    table = Table(title="ppar anonymize")
    table.add_column("file", overflow="fold")  # whole names, relative to the input folder: never cut
    for col in ("frames", "visible", "time (s)", "status"):
        table.add_column(col, justify="left" if col == "status" else "right", no_wrap=True)
    for r in results:
        style = {"ok": "green", "skipped": "yellow", "failed": "red"}[r.status]
        name = r.src.relative_to(root).as_posix() if root is not None else str(r.src)
        table.add_row(shown(name), str(r.frames) if r.frames else "", kept(r),
                      f"{r.seconds:.1f}" if r.status != "skipped" else "", f"[{style}]{r.status}[/]")
    if results:  # no videos: the warning said so, an empty table says nothing
        console.print(table)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    console.print(f"{counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed {how}".rstrip(), soft_wrap=True)


def audit_table(records: list[dict], threshold: float, max_side: int | None) -> None:
    names = next((list(r["detectors"]) for r in records if "detectors" in r), [])
    ident = any("identity" in r for r in records)
    size = "full size" if max_side is None else f"at most {max_side} px"
    table = Table(title=f"ppar audit: face frames before -> leaked (CenterFace at {threshold}, {size})")
    cols = ["video", "frames"] + [f"{n}: faces / any after / leaked (confident)" for n in names]
    cols += ["identity matches"] if ident else []
    for col in cols + ["kept"]:
        table.add_column(col, justify="left" if col == "video" else "right", overflow="fold" if col == "video" else "ellipsis")
    for r in records:
        if "error" in r:
            table.add_row(shown(Path(r["original"]).name), f"[red]{shown(r['error'])}[/]", *[""] * (len(cols) - 1))
            continue
        cells = [f"{d['face_frames_before']} / {d['face_frames_after']} / {d['leaked_frames']} ({d['confident_leaked_frames']})"
                 for d in r["detectors"].values()]
        if ident:
            i = r.get("identity")
            cells.append(f"{i['matches']} of {i['checked']} ({i['blank']} blank)" if i else "")
        table.add_row(shown(Path(r["original"]).name), str(r["frames"]), *cells,
                      f"{r['kept_fraction']:.3f}" if "kept_fraction" in r else "")
    Console().print(table)


def info_table(d: dict) -> None:
    table = Table(show_header=False, title=shown(d["path"]), title_justify="left")
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("sha256", d["sha256"])
    table.add_row("parameters", f"{d['parameters']:,}")
    table.add_row("tokens / grid", f"{d['tokens']} = {' x '.join(map(str, d['grid']))}")
    for k, v in d["config"].items():  # every field, whatever the config holds
        table.add_row(k, shown(", ".join(map(str, v)) if isinstance(v, list) else str(v)))
    out = Console()
    out.print(table)
    out.print("[bold]provenance[/]")
    for k, v in _flatten(d["provenance"]):
        out.print(f"  {k}: {v}", highlight=False, soft_wrap=True, markup=False)


def _flatten(data, prefix: str = ""):
    """Nested provenance as (dotted key, value) lines that a person can read."""
    if isinstance(data, dict) and data:
        for k, v in data.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(data, list) and data and any(isinstance(v, (dict, list)) for v in data):
        for i, v in enumerate(data):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix or "(none)", json.dumps(data) if not isinstance(data, str) else data


@contextlib.contextmanager
def native_stderr_to(log: Path):
    """Lines that C++ libraries write straight to the process's stderr (mediapipe's logging, four a
    video: a thousand over real-train) go to ``log`` (appended, where its folder exists by the end);
    Python's stderr, so ppar's messages and progress, stays on the terminal. Where Python's stderr
    is not the process's (a test runner's capture, a notebook), nothing is moved."""
    try:
        ours = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        ours = False
    if not ours:
        yield
        return
    sys.stderr.flush()
    fd, spool = tempfile.mkstemp(prefix="ppar-native-", suffix=".log")
    terminal, before = os.dup(2), sys.stderr
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = open(terminal, "w", buffering=1, encoding=before.encoding, errors=before.errors)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)
        sys.stderr.close()
        sys.stderr = before
        if os.path.getsize(spool) and log.parent.is_dir():
            with open(spool, "rb") as f, open(log, "ab") as out:
                shutil.copyfileobj(f, out)
        os.unlink(spool)


def progress_bars(quiet: bool) -> Progress | None:
    """The progress display, None when quiet. It draws only on a terminal: a log or a pipe gets the
    results, not the blank line a stopped display leaves there."""
    if quiet:
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


@contextlib.contextmanager
def stages(quiet: bool):
    """A rich progress display; yields ``stage(name, total) -> advance`` for the API's progress hooks."""
    progress = progress_bars(quiet) or Progress(disable=True)

    def stage(what: str, total: int | None):
        task, left = progress.add_task(what, total=total), total

        def advance() -> None:
            nonlocal left
            if left == 0:  # done, and gone
                return
            progress.advance(task)
            if left is not None:
                left -= 1
                if left == 0:
                    progress.remove_task(task)  # a training run's 40 epochs do not pile up
        return advance

    with progress:
        yield stage


def eval_table(result, protocol: str) -> None:
    from ppar_cli.research.report import label

    # Whole methods and header words in 80 columns (ppar@0.3 and ppar@0.5 cut to "ppar@0…" read the
    # same): the headers wrap between words, and cells are padded on the right only.
    table = Table(title=f"ppar eval ({protocol}) - {result.test_videos} test videos", padding=(0, 1, 0, 0))
    methods = [label(r) for r in result.records]
    table.add_column("method", no_wrap=True, min_width=max(map(len, methods), default=6))
    for col in ("action top-1", "privacy cMAP", "privacy F1", "re-id top-1", "privacy px removed", "action px kept", "motion / area"):
        table.add_column(col, justify="right", min_width=7)
    fmt = lambda v: "" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for method, r in zip(methods, result.records):
        table.add_row(method, fmt(r["action_top1"]), fmt(r.get("privacy_cmap")), fmt(r.get("privacy_f1")),
                      fmt(r.get("reid_top1")), fmt(r.get("privacy_pixels_removed")), fmt(r.get("action_pixels_kept")),
                      "" if r.get("motion_over_area") is None else f"{r['motion_over_area']:.2f}")
    Console().print(table)
    for name, r in result.spots.items():
        console.print(f"{name.replace('_', ' ')}: {label(r)}", soft_wrap=True)


def labels_table(path: Path, summary: dict) -> None:
    """`ppar labels`: each attribute's positive rate (and, for PA-HMDB51, its values' frames)."""
    table = Table(title=f"{shown(path)}  ({summary['format']}, {summary['videos']} videos)")
    table.add_column("attribute")
    table.add_column("positive rate", justify="right")
    table.add_column("detail")
    for a, rate in summary["positive_rate"].items():
        detail = json.dumps(summary["value_frames"][a]) if "value_frames" in summary else ""
        table.add_row(a, f"{rate:.4f}", detail or ("share of the mask's pixels" if "teacher_frames" in summary else ""))
    Console().print(table)
    if "teacher_frames" in summary:  # a pseudo-label folder
        found = ", ".join(f"{t.replace('_', ' ')} {v:.2f}" for t, v in summary["teacher_frames"].items())
        Console().print(f"{summary['split']['train']} train, {summary['split']['val']} val videos; "
                        f"frames on which a teacher found someone: {found}", highlight=False, soft_wrap=True)
