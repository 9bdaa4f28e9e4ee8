"""The model's configuration, apart from the model, and the weights files' header it is read from:
no PyTorch here, so the decoder and the face guard can start on the first video while PyTorch is
still loading (about a second)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from safetensors import SafetensorError, safe_open

from ppar_cli.errors import PparError, reason

# The privacy attributes of VP-UCF101, VP-HMDB51 and PA-HMDB51 (STPrivacy's list and order), which the
# synthetic benchmark renders too.
PRIVACY_ATTRIBUTES = ("face", "skin_color", "gender", "nudity", "relationship")

# Sane bounds for a config read from a file: the largest is well above ViT-L, and a model is never
# built from a config outside them.
MAX_IMAGE_SIZE = 1024
_INT_BOUNDS = {"frames": (1, 256), "frame_stride": (1, 64), "image_size": (8, MAX_IMAGE_SIZE), "dim": (8, 4096),
               "depth": (1, 64), "heads": (1, 64)}
MAX_LAMBDA = 1e4  # far past where the privacy attention alone ranks; 1e308 overflowed the scores
_FLOAT_BOUNDS = {"diff_scale": (0.0, 1e4), "mlp_ratio": (0.25, 16.0), "train_keep_rate": (0.0, 1.0),
                 "lambda_priv": (0.0, MAX_LAMBDA)}
MAX_TOKENS = 16384
STEMS = {"conv": 4, "linear": 1, "mobilenet_v2": 8}  # stem -> its stride (the patch size must be a multiple)
MAX_PARAMS = 10**9  # about 12 * dim^2 per block: ViT-L has 0.3e9


@dataclass
class PPARConfig:
    name: str = "ppar-small"
    frames: int = 8  # frames the model sees per clip
    frame_stride: int = 4  # a clip spans frames * frame_stride source frames (4: 1.3 s at 25 fps; 2 learned actions slower)
    image_size: int = 64
    tubelet: tuple[int, int, int] = (2, 8, 8)  # t, p, p in model frames / pixels
    frame_diff: bool = True  # add temporal differences as 3 extra channels (SPEC section 7)
    # Frame differences are about 20x smaller than the frames; scaled so the embedding sees motion
    # from the first step (unscaled, the small model learned no action in 150 steps).
    diff_scale: float = 8.0
    # before tokenisation: "conv" (a small convolutional stem, SPEC section 7), "linear" (the paper's
    # single Conv3d) or "mobilenet_v2" (ImageNet MobileNetV2's first blocks on every frame, core/stem.py)
    stem: str = "conv"
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    actions: list[str] = field(default_factory=lambda: ["action"])
    attributes: list[str] = field(default_factory=lambda: list(PRIVACY_ATTRIBUTES))
    prune_blocks: tuple[int, ...] = (2, 3, 4)  # 1-based blocks after whose attention tokens are pruned
    train_keep_rate: float = 0.9  # per pruning block, used while training
    lambda_priv: float = 0.5
    grl: bool = True  # gradient reversal on the privacy feature (the paper's recipe)

    def __post_init__(self) -> None:
        """Check every field before anything is built: a config comes from a file's header, and a
        bad one must be a clear error, not a hang (frame_stride 0), a traceback or gigabytes."""
        try:
            self.tubelet = tuple(int(v) for v in self.tubelet)
            self.prune_blocks = tuple(int(v) for v in self.prune_blocks)
            self.actions, self.attributes = [str(a) for a in self.actions], [str(a) for a in self.attributes]
        except (TypeError, ValueError):
            raise ValueError("tubelet, prune_blocks, actions and attributes must be lists") from None
        for name, (lo, hi) in _INT_BOUNDS.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {v!r}")
        for name, (lo, hi) in _FLOAT_BOUNDS.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:  # NaN fails too
                raise ValueError(f"{name} must be a finite number in {lo}..{hi}, got {v!r}")
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}, got {self.stem!r}")
        for name in ("frame_diff", "grl"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.name, str):
            raise ValueError(f"name must be a string, got {self.name!r}")
        if 12 * self.dim ** 2 * self.depth > MAX_PARAMS:
            raise ValueError(f"dim {self.dim} x depth {self.depth} is over {MAX_PARAMS:.0e} parameters")
        if len(self.tubelet) != 3 or any(not 1 <= v <= 64 for v in self.tubelet) or self.tubelet[1] != self.tubelet[2]:
            raise ValueError(f"tubelet must be [t, p, p] with sizes in 1..64, got {list(self.tubelet)}")
        t, p, _ = self.tubelet
        if self.frames % t or self.image_size % p:
            raise ValueError(f"frames ({self.frames}) and image_size ({self.image_size}) must be multiples of the tubelet {self.tubelet}")
        if self.num_tokens > MAX_TOKENS:
            raise ValueError(f"{self.num_tokens} tubelet tokens per clip, more than {MAX_TOKENS}")
        if self.stem != "linear" and p % STEMS[self.stem]:
            raise ValueError(f"the {self.stem} stem needs a patch size that is a multiple of {STEMS[self.stem]}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        if not self.prune_blocks or any(not 1 <= b <= self.depth for b in self.prune_blocks):
            raise ValueError(f"prune_blocks must name blocks between 1 and depth={self.depth}")
        if not self.actions or not self.attributes or len(self.actions) > 10_000 or len(self.attributes) > 1_000:
            raise ValueError("actions and attributes must be non-empty lists of labels")

    @property
    def grid(self) -> tuple[int, int, int]:
        t, p, _ = self.tubelet
        return self.frames // t, self.image_size // p, self.image_size // p

    @property
    def num_tokens(self) -> int:
        gt, gh, gw = self.grid
        return gt * gh * gw

    @property
    def clip_span(self) -> int:
        """Source frames covered by one clip."""
        return self.frames * self.frame_stride

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PPARConfig":
        """Raises ValueError for anything but a JSON object of known, valid fields."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("the config must be a JSON object")
        if "conv_stem" in data:  # weights written before the stem field (ppar 0.2)
            data.setdefault("stem", "conv" if data.pop("conv_stem") else "linear")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**data)


PRESETS = {
    "small": dict(),
    # For real footage: an ImageNet MobileNetV2 stem under the dual-CLS transformer, 112 px frames in
    # 8 px tubelets (a 14x14 grid, the paper's), 784 tokens per clip.
    "real": dict(name="ppar-real", image_size=112, tubelet=(2, 8, 8), stem="mobilenet_v2"),
    # The paper's reference backbone: ViT-B, 16 frames at stride 2, 224 px, tubelets 2x16x16.
    "base": dict(name="ppar-base", frames=16, frame_stride=2, image_size=224, tubelet=(2, 16, 16), frame_diff=False, stem="linear",
                 dim=768, depth=12, heads=12, prune_blocks=(3, 6, 9)),
}


DEFAULT_NAME = "ppar-real.safetensors"  # ppar-small.safetensors: the synthetic benchmark's weights


def bundled(name: str) -> Path:
    """A bundled file (weights, the guard's detector): inside the installed package
    (ppar_cli.bundled, the repository's weights/ folder), in a wheel and in an editable install alike."""
    try:
        return Path(str(resources.files("ppar_cli.bundled").joinpath(name)))
    except ModuleNotFoundError:  # running from a source tree that was never installed
        return Path(__file__).resolve().parents[2] / "weights" / name


DEFAULT_WEIGHTS = bundled(DEFAULT_NAME)


class WeightsError(PparError):
    """A weights file that cannot be used; the message names the file and the problem."""

    exit_code = 2


def sha256_of(path: Path) -> str:
    """A weights file's SHA-256, as score maps and manifests record it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_sha256(weights) -> str:
    """The SHA-256 that a manifest records for ``weights``: a loaded model's (its ``sha256``), a
    file's, or the bundled file's for None. Without PyTorch; a file that is not ppar weights raises
    the WeightsError that loading it would."""
    if hasattr(weights, "sha256"):
        return weights.sha256
    path = Path(weights) if weights else DEFAULT_WEIGHTS
    read_metadata(path)
    return sha256_of(path)


def is_ppar_weights(path: Path) -> bool:
    """A readable safetensors file whose header carries a ppar config (what `ppar train` writes),
    whether or not that config is valid (read_metadata says what is wrong with it)."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            return "config" in (f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return False


def pickle_like(path: Path) -> bool:
    """Whether ``path`` starts as a pickle of protocol 2 or later does (the VP labels), or as
    torch.save writes one (a zip archive)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def unreadable(path: Path, e: Exception, what: str = "safetensors file") -> str:
    """The message for ``path`` that safetensors could not read (``e``); a PyTorch checkpoint,
    which ppar never loads, is named as one."""
    if pickle_like(path):
        return f"{path}: a PyTorch checkpoint (a pickle, which can run code when loaded); ppar reads only safetensors"
    return f"{path}: not a readable {what} ({reason(e)})"


def read_metadata(path: Path) -> tuple[PPARConfig, dict]:
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(unreadable(path, e, "safetensors weights file")) from None
    if "config" not in meta:
        raise WeightsError(f"{path}: no ppar config in the file's metadata (not a ppar weights file)")
    try:
        cfg = PPARConfig.from_json(meta["config"])
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{path}: invalid config metadata ({e})") from None
    try:
        provenance = json.loads(meta.get("provenance", "{}"))
    except ValueError:
        provenance = None
    if not isinstance(provenance, dict):
        raise WeightsError(f"{path}: the provenance metadata is not a JSON object")
    return cfg, provenance
