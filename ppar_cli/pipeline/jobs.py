"""Which file goes where: the one naming rule shared by `ppar anonymize` and `ppar audit`, and the
checks that no output of a run can land on an input or on another output."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ppar_cli.errors import UsageError
from ppar_cli.media.encode import OUTPUT_CONTAINERS
from ppar_cli.media.probe import VIDEO_EXTENSIONS, folder_files, video_files


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path

    @property
    def scores(self) -> Path:
        """The score map's default place: beside the video, as NAME.json."""
        return self.dst.with_suffix(".json")


def inputs_of(inp: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """One input or several (a shell's glob), as paths, each once."""
    paths = [Path(inp)] if isinstance(inp, (str, os.PathLike)) else [Path(p) for p in inp]
    if not paths:
        raise UsageError("<inp>: no input given")
    first: dict[Path, Path] = {}
    for p in paths:
        first.setdefault(p.absolute(), p)
    return list(first.values())


def plan_jobs(inp: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike, writes: bool = True) -> list[Job]:
    """A file maps to OUT (or OUT/NAME.mp4 when OUT is a folder); a folder is walked and mirrored
    under OUT as .mp4 files (``a.avi`` beside ``a.mp4`` become ``a.avi.mp4`` and ``a.mp4.mp4``),
    hidden files and folders (names starting with a dot) left out. Several inputs (``ppar
    anonymize *.mov OUT``) go into the folder OUT, as `cp` puts them: a file as OUT/NAME.mp4 (named
    as a folder's files are, where two share a name), a folder mirrored under OUT/FOLDER. A path the system cannot look at (a name over 255 bytes, a
    file where a folder is meant) is a usage error, not a traceback. ``writes``: OUT is to be
    written, so a file's name must be one of ppar's containers (the audit reads OUT, which another
    tool may have written)."""
    inputs, out = inputs_of(inp), Path(out)
    try:
        return _plan_jobs(inputs[0], out, writes) if len(inputs) == 1 else _plan_several(inputs, out, writes)
    except OSError as e:
        raise UsageError(f"{e.filename if e.filename is not None else out}: {e.strerror or e}") from None


def _plan_several(inputs: list[Path], out: Path, writes: bool) -> list[Job]:
    if out.exists() and not out.is_dir() or not out.exists() and out.suffix.lower() in VIDEO_EXTENSIONS:
        raise UsageError(f"{out}: {len(inputs)} inputs go into a folder, not a file")
    files = {job.src: job for job in _as_mp4([(p, out / p.name) for p in inputs if not p.is_dir()])}
    jobs: list[Job] = []
    for inp in inputs:
        jobs += _plan_jobs(inp, out / inp.resolve().name if inp.is_dir() else files[inp].dst, writes)
    out_abs, by_source = out.resolve(), {}  # a file given alone and in its folder too is done once
    for job in jobs:
        if out_abs not in job.src.resolve().parents:  # OUT inside an input folder: not its own outputs
            by_source.setdefault(job.src.resolve(), job)
    by_target: dict[Path, Job] = {}
    for job in by_source.values():
        other = by_target.setdefault(job.dst.resolve(), job)
        if other is not job:
            raise UsageError(f"{other.src} and {job.src} would both be written to {job.dst}; "
                             f"give their folders instead, or anonymize them one at a time")
    return list(by_source.values())


def _plan_jobs(inp: Path, out: Path, writes: bool) -> list[Job]:
    if not inp.exists():
        raise UsageError(f"{inp}: no such file or directory")
    if not inp.is_file() and not inp.is_dir():  # ppar reads a video several times: probe, timestamps, decode
        raise UsageError(f"{inp}: not a file or folder (a pipe or a device cannot be read as a video)")
    above = next((p for p in out.parents if p.exists()), None)  # the output's folder, or the part of it made already
    if above is not None and not above.is_dir():
        raise UsageError(f"{above}: a file, not a folder for {out}")
    if inp.is_file():
        if out.is_dir():
            out = out / (inp.stem + ".mp4")
        elif writes and not out.suffix:  # `ppar anonymize a.mp4 outdir/`: the trailing slash is gone by now
            raise UsageError(f"{out}: no such folder (make it first to write {out / (inp.stem + '.mp4')} there), "
                             f"and no file name ppar writes ({', '.join(sorted(OUTPUT_CONTAINERS))})")
        elif writes:
            check_container(out, "output")
        return [Job(inp, out)]
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: input is a folder, so the output must be a folder too")
    if out.suffix.lower() in VIDEO_EXTENSIONS and not out.exists():
        raise UsageError(f"{out}: input is a folder, so the output must be a folder, not a video file name")
    in_abs, out_abs = inp.resolve(), out.resolve()
    if out_abs == in_abs or out_abs in in_abs.parents:
        raise UsageError(f"{out}: the output folder is the input folder or contains it; choose a folder beside "
                         f"or inside {inp}")
    return _as_mp4([(p, out / p.relative_to(inp)) for p in video_files(inp) if out_abs not in p.resolve().parents])


def _as_mp4(placed: list[tuple[Path, Path]]) -> list[Job]:
    """Each source at its place (its name under OUT) as .mp4; where two would share a name
    (``a.avi`` beside ``a.mp4``), each keeps its extension (``a.avi.mp4``, ``a.mp4.mp4``)."""
    by_target: dict[Path, list[tuple[Path, Path]]] = {}
    for src, place in placed:
        by_target.setdefault(place.with_suffix(".mp4"), []).append((src, place))
    return [Job(src, target if len(group) == 1 else place.with_name(place.name + ".mp4"))
            for target, group in by_target.items() for src, place in group]


def left_out(inp: Path, out: Path) -> str | None:
    """What a folder's walk leaves out by name (not counting OUT inside it), said in one line: a
    recorder's files under a name ppar does not know (a CCTV export's, say) would otherwise be
    missing from OUT without a word."""
    if not inp.is_dir():
        return None
    out_abs = Path(out).resolve()
    kinds = Counter(p.suffix.lower() or "no extension" for p in folder_files(inp)
                    if p.suffix.lower() not in VIDEO_EXTENSIONS and out_abs not in p.resolve().parents)
    if not kinds:
        return None
    n, common = sum(kinds.values()), kinds.most_common(5)
    listed = ", ".join(f"{kind} ({k})" for kind, k in common) + (", ..." if len(kinds) > len(common) else "")
    return (f"{inp}: {n} file{'s' * (n != 1)} left out, not named as videos: {listed}; "
            f"give such a file alone to anonymize it")


def _size(job: Job) -> int:
    """The source's bytes, the measure of a video's work here (0 where it cannot be read)."""
    try:
        return job.src.stat().st_size
    except OSError:
        return 0


def largest_first(jobs: list[Job]) -> list[int]:
    """The order in which a folder's videos start: the largest files first (ties, and files that
    cannot be read, in the folder's order), so that the run does not end with one long video going
    on alone while the other videos' cores wait."""
    return sorted(range(len(jobs)), key=lambda i: -_size(jobs[i]))


def byte_shares(jobs: list[Job]) -> list[float]:
    """Each video's part of the folder's bytes (all 0 where none can be read): how much of the run
    it is, for its decoder's threads (runtime.decoder_threads)."""
    sizes = [_size(job) for job in jobs]
    total = sum(sizes)
    return [size / total if total else 0.0 for size in sizes]


def check_container(path: Path, what: str) -> None:
    """A video ppar writes is H.264 in one of OUTPUT_CONTAINERS: any other name is refused before
    the work (a preview named .webm failed its video at the end)."""
    if path.suffix.lower() not in OUTPUT_CONTAINERS:
        raise UsageError(f"{path}: ppar writes H.264 in {', '.join(sorted(OUTPUT_CONTAINERS))} files; "
                         f"name the {what} with one of these extensions")


def check_outputs(jobs: list[Job], extra: dict[str, Path | None], scores: Path | None | bool = True) -> None:
    """Refuse a run in which any output (videos, score maps, ``extra`` such as the preview and the
    manifest) is an input or another output. ``scores``: False for none, True for each video's
    default, or one path (single file)."""
    inputs = {j.src.resolve(): j.src for j in jobs}
    seen: dict[Path, str] = {}

    def claim(path: Path, what: str, named: bool = False) -> None:
        """``named``: a path the user gave for one file, refused at once if it is a folder."""
        if named and path.is_dir():
            raise UsageError(f"{path}: the {what} names a folder; give a file name")
        key = path.resolve()
        if key in inputs:
            raise UsageError(f"{path}: the {what} would overwrite the input {inputs[key]}")
        if key in seen:
            raise UsageError(f"{path}: the {what} and the {seen[key]} would be the same file")
        seen[key] = what

    for j in jobs:
        claim(j.dst, "output video")
        if scores is True:
            claim(j.scores, "score map")
    if isinstance(scores, Path):
        claim(scores, "score map", named=True)
    for what, path in extra.items():
        if path is not None:
            claim(path, what, named=True)
