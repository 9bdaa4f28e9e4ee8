"""What `ppar anonymize` is asked to do, and what it reports back: plain data, checked without
loading PyTorch, so the CLI answers --help and usage errors at once."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ppar_cli.core.config import MAX_LAMBDA
from ppar_cli.errors import UsageError, check_counts
from ppar_cli.faces.detectors import check_threshold
from ppar_cli.pipeline.fill import FILLS
from ppar_cli.pipeline.guard import GuardConfig


# Above this the previous window's tubelets always win, and the kept set freezes instead of following
# the people: on a 139 s real clip, guard off, head pixels visible 0.096 at 0, 0.071 at 5, 0.17 at 20
# and 0.47 at 50 (frozen to the first window), moving-body pixels kept 0.85, 0.45, 0.35, 0.32
# (README, "Flicker and hysteresis").
MAX_HYSTERESIS = 5.0


@dataclass
class Options:
    keep_ratio: float = 0.5  # fraction of each clip's tubelets left visible (--keep)
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
    jobs: int | None = None  # folder mode: videos anonymized at once in each process (they share its model); None: runtime.folder_layout
    workers: int | None = None  # folder mode: processes, each anonymizing `jobs` videos at once (workers.py); None: one (api.layout_used)
    manifest: Path | None = None  # folder mode: JSON lines, one per file; default OUT/ppar-manifest[.shard].jsonl

    def validate(self) -> None:
        check_device(self.device)
        if not isinstance(self.keep_ratio, (int, float)) or math.isnan(self.keep_ratio) or not 0 <= self.keep_ratio <= 1:
            raise UsageError(f"must be a number between 0 and 1, got {self.keep_ratio}", option="keep_ratio")
        if self.lambda_priv is not None and not (0 <= self.lambda_priv <= MAX_LAMBDA):
            raise UsageError(f"must lie in 0..{MAX_LAMBDA:g} (past it the privacy attention alone ranks), "
                             f"got {self.lambda_priv}", option="lambda_priv")
        if not 0 <= self.hysteresis <= MAX_HYSTERESIS:
            raise UsageError(f"must lie in 0..{MAX_HYSTERESIS:g} (above it the kept set stops following the video), "
                             f"got {self.hysteresis}", option="hysteresis")
        check_counts(batch_size=self.batch_size)
        if self.fill not in FILLS:
            raise UsageError(f"must be one of {', '.join(FILLS)}, got {self.fill!r}", option="fill")
        if not 0 <= self.crf <= 51:
            raise UsageError(f"must lie in 0..51, got {self.crf}", option="crf")
        if self.guard not in ("auto", "centerface", "none"):
            raise UsageError(f"must be auto, centerface or none, got {self.guard!r}", option="guard")
        g = self.guard_config
        if isinstance(g.stride, bool) or not isinstance(g.stride, int) or not 1 <= g.stride <= 1000:
            raise UsageError(f"must be an integer in 1..1000, got {g.stride}", option="guard_stride")
        check_threshold(g.threshold, "guard_threshold")
        least = GuardConfig.max_side  # smaller detector inputs lose small faces: only more pixels than the default are allowed
        if isinstance(g.max_side, bool) or not isinstance(g.max_side, int) or not least <= g.max_side <= 8192:
            raise UsageError(f"must be an integer in {least}..8192, got {g.max_side}", option="guard_max_side")
        if not (0 <= g.margin <= 2 and 0 <= g.carry <= 100):
            raise UsageError(f"guard settings out of range: {g}")
        for name in ("jobs", "workers"):  # None: chosen from the machine
            n = getattr(self, name)
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64):
                raise UsageError(f"must be an integer in 1..64, got {n}", option=name)
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise UsageError(f"K/N needs 0 <= K < N, got {self.shard[0]}/{self.shard[1]}", option="shard")
        if self.scores_path is not None and not self.scores:
            raise UsageError("names a score map, but score maps are off (<scores>): give one or the other", option="scores_path")


def check_device(name: str) -> None:
    """auto, cpu or cuda, checked before PyTorch loads; a GPU is chosen by its environment
    (CUDA_VISIBLE_DEVICES, or torchrun's LOCAL_RANK), not by an index here."""
    if name in ("auto", "cpu", "cuda"):
        return
    hint = ""
    if isinstance(name, str) and name.startswith("cuda:") and name[5:].isdigit():
        hint = f" (to use GPU {name[5:]}: CUDA_VISIBLE_DEVICES={name[5:]} ... --device cuda)"
    raise UsageError(f"must be auto, cpu or cuda, got {name!r}{hint}", option="device")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``K/N`` (0-based K, as RANK and SLURM_ARRAY_TASK_ID count), or torchrun's RANK/WORLD_SIZE
    when no shard is given and more than one process was launched."""
    if text is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
            return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        return None
    k, sep, n = text.partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit() or int(n) < 1:
        raise UsageError(f"must look like K/N (e.g. 0/4), got {text!r}", option="shard")
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
    """Progress, called from the threads that anonymize the files (several at once with jobs > 1)."""
    def start_batch(self, n_files: int) -> None: ...
    def start_file(self, src: Path, total_frames: int | None) -> None: ...
    def advance(self, src: Path, frames: int) -> None: ...
    def end_file(self, result: FileResult) -> None: ...


class Silent:
    def start_batch(self, n_files: int) -> None: ...
    def start_file(self, src: Path, total_frames: int | None) -> None: ...
    def advance(self, src: Path, frames: int) -> None: ...
    def end_file(self, result: FileResult) -> None: ...
