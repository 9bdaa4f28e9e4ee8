"""Weights files: safetensors with the config and provenance in the header, never pickles."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .files import atomic_path
from .model import PPARConfig, PPARModel

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "ppar-small.safetensors"


class WeightsError(Exception):
    """A weights file that cannot be used; the message names the file and the problem."""


@dataclass
class LoadedWeights:
    model: PPARModel
    path: Path
    sha256: str
    provenance: dict


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_weights(model: PPARModel, path: str | os.PathLike, provenance: dict | None = None) -> None:
    """Atomically write the model's tensors with its config and provenance as metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "ppar-weights/1", "config": model.cfg.to_json(), "provenance": json.dumps(provenance or {}, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_metadata(path: Path) -> tuple[PPARConfig, dict]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable safetensors weights file ({e})") from None
    if "config" not in meta:
        raise WeightsError(f"{path}: no ppar config in the file's metadata (not a ppar weights file)")
    try:
        cfg = PPARConfig.from_json(meta["config"])
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{path}: invalid config metadata ({e})") from None
    return cfg, json.loads(meta.get("provenance", "{}"))


def load_weights(path: str | os.PathLike | None = None, device: str = "cpu") -> LoadedWeights:
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        if path == DEFAULT_WEIGHTS:
            raise WeightsError(f"{path}: no bundled weights found; train some with `ppar train` or pass --weights FILE")
        raise WeightsError(f"{path}: weights file not found")
    cfg, provenance = read_metadata(path)
    model = PPARModel(cfg)
    expected = model.state_dict()
    state = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for k in f.keys():
                state[k] = f.get_tensor(k)
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{path}: cannot read tensors ({e})") from None
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(f"{path}: tensors do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise WeightsError(f"{path}: tensor {k} has shape {tuple(v.shape)}, config wants {tuple(expected[k].shape)}")
    model.load_state_dict(state)
    model.eval().to(device)
    return LoadedWeights(model, path, sha256_of(path), provenance)


def describe(path: str | os.PathLike | None = None) -> dict:
    """Everything `ppar info` shows, as data."""
    w = load_weights(path)
    cfg = w.model.cfg
    return {
        "path": str(w.path),
        "sha256": w.sha256,
        "parameters": count_params(w.model),
        "config": json.loads(cfg.to_json()),
        "tokens": cfg.num_tokens,
        "grid": list(cfg.grid),
        "provenance": w.provenance,
    }


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
