"""Weights files: safetensors with the config and provenance in the header, never pickles."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ppar_cli.core.config import DEFAULT_WEIGHTS, PPARConfig, WeightsError, bundled, read_metadata, sha256_of  # noqa: F401 -- part of this module's API
from ppar_cli.core.model import PPARModel
from ppar_cli.media.files import atomic_path


@dataclass
class LoadedWeights:
    model: PPARModel
    path: Path
    sha256: str
    provenance: dict


def save_weights(model: PPARModel, path: str | os.PathLike, provenance: dict | None = None) -> None:
    """Atomically write the model's tensors with its config and provenance as metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "ppar-weights/1", "config": model.cfg.to_json(), "provenance": json.dumps(provenance or {}, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_weights(path: str | os.PathLike | None = None, device: str = "cpu") -> LoadedWeights:
    """Read and check a weights file: tensor names and shapes against the config (before the model
    is allocated), and every value finite (NaN weights would score every tubelet NaN)."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        if path == DEFAULT_WEIGHTS:
            raise WeightsError(f"{path}: no bundled weights found; train some with `ppar train` or pass --weights FILE")
        raise WeightsError(f"{path}: {'a folder, not a weights file' if path.is_dir() else 'weights file not found'}")
    cfg, provenance = read_metadata(path)
    with torch.device("meta"):  # a skeleton: no memory for a config that does not match the file
        model = PPARModel(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            missing = sorted(set(expected) - set(shapes))
            unexpected = sorted(set(shapes) - set(expected))
            if missing or unexpected:
                raise WeightsError(f"{path}: tensors do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
            for k, shape in shapes.items():
                if shape != expected[k]:
                    raise WeightsError(f"{path}: tensor {k} has shape {shape}, config wants {expected[k]}")
            state = {k: f.get_tensor(k) for k in shapes}
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{path}: cannot read tensors ({e})") from None
    for k, v in state.items():
        if not v.is_floating_point():
            raise WeightsError(f"{path}: tensor {k} is {v.dtype}, not floating point")
        if not torch.isfinite(v).all():
            raise WeightsError(f"{path}: tensor {k} holds NaN or infinite values")
    model.load_state_dict({k: v.float() for k, v in state.items()}, assign=True)  # the file's tensors become the parameters
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
