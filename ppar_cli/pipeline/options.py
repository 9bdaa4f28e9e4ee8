"""What `ppar anonymize` is asked to do, and what it reports back: plain data, checked without
loading PyTorch, so the CLI answers --help and usage errors at once."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ppar_cli.errors import UsageError
from ppar_cli.pipeline.fill import FILLS
from ppar_cli.pipeline.guard import GuardConfig


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
        if not isinstance(self.keep, (int, float)) or math.isnan(self.keep) or not 0 <= self.keep <= 1:
            raise UsageError(f"--keep must be a number between 0 and 1, got {self.keep}")
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


class Silent:
    def start_batch(self, n_files: int) -> None: ...
    def start_file(self, src: Path, total_frames: int | None) -> None: ...
    def advance(self, frames: int) -> None: ...
    def end_file(self, result: FileResult) -> None: ...
