"""The arguments of `ppar train`, as plain data: the CLI takes its defaults from here without
loading PyTorch."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ppar_cli.errors import UsageError, check_counts

INFLATIONS = ("average", "central")


@dataclass
class TrainArgs:
    data: str  # a benchmark folder (or CSV); several, comma-separated, are trained on together
    out: str = "weights/ppar-small.safetensors"
    overwrite: bool = False  # replace an existing `out` (in a source checkout the default is the bundled synthetic weights)
    run_dir: str = "runs/train"
    format: str = "auto"
    labels: str | None = None
    splits_dir: str | None = None
    split: int = 1
    config: str = "small"  # a preset name or a weights/config JSON file
    overrides: dict = field(default_factory=dict)  # config fields, e.g. {"grl": false}
    epochs: int = 30
    batch_size: int = 32
    accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    overlap_weight: float = 0.0  # penalty on the overlap of action and privacy CLS attention
    # Mask-supervised attention (needs ground-truth masks, i.e. the synthetic benchmark): at every
    # pruning block, cross-entropy from each CLS's attention to its mask's per-tubelet pixel share.
    mask_weight: float = 0.0
    # With masks: penalty on the attention mass each CLS puts on the other's mask (action CLS on
    # heads, privacy CLS on moving limbs). The score is their difference, so this is what ranks heads low.
    separation_weight: float = 0.0
    # With masks: the action CLS's attention also learns the clip's own motion energy (frame
    # differences) outside the privacy mask, so moving parts the teachers missed are kept too.
    motion_weight: float = 0.0
    # With masks: the score anonymize ranks by (action minus lambda privacy attention) itself: at
    # every pruning block, each tubelet with action pixels pushed above the median of the clip's
    # live tubelets, each with privacy pixels below it (keep 0.5's cut).
    rank_weight: float = 0.0
    # Each training clip cropped to a random box (each side min..1 of the frame, anywhere in it) and
    # resized back, masks alike: heads and limbs at other places and scales than the footage's
    # cameras put them, so position alone does not tell them. 1: off.
    crop_scale: float = 1.0
    seed: int = 0
    max_eval: int | None = None  # cap on evaluation videos per epoch
    stop_after: int | None = None  # run at most this many epochs now; a rerun resumes (time-sliced machines)
    threads: int | None = None
    init_stem: str | None = None  # safetensors of a pretrained stem (scripts/convert_mobilenet_stem.py)
    init: str | None = None  # ppar weights to fine-tune, or a public pretrained ViT (timm / Hugging Face ViT or VideoMAE safetensors)
    init_inflation: str = "average"  # 2D patch filters over the tubelet's frames: average or central

    @property
    def uses_masks(self) -> bool:
        """Whether a loss term needs the benchmark's ground-truth masks."""
        return bool(self.mask_weight or self.separation_weight or self.motion_weight or self.rank_weight)

    def validate(self) -> None:
        """Refuse, before any video is decoded, what would crash later (a batch of 0) or train
        nothing or garbage without a word (0 epochs, a learning rate of 0, a NaN loss weight)."""
        check_counts(epochs=self.epochs, batch_size=self.batch_size, accum=self.accum, max_eval=self.max_eval,
                     stop_after=self.stop_after)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"must be a number above 0, got {self.lr}", option="lr")
        for name in ("overlap_weight", "mask_weight", "separation_weight", "motion_weight", "rank_weight", "weight_decay", "warmup_epochs"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise UsageError(f"must be a number of at least 0, got {v}", option=name)
        if not 0 <= self.min_lr_ratio <= 1:
            raise UsageError(f"must lie in 0..1, got {self.min_lr_ratio}", option="min_lr_ratio")
        if not 0 < self.crop_scale <= 1:
            raise UsageError(f"must lie in (0, 1], got {self.crop_scale}", option="crop_scale")
        if self.threads is not None and self.threads < 0:
            raise UsageError(f"must be at least 1 (0: PyTorch's default), got {self.threads}", option="threads")
        if self.init_inflation not in INFLATIONS:
            raise UsageError(f"must be {' or '.join(INFLATIONS)}, got {self.init_inflation!r}", option="init_inflation")
