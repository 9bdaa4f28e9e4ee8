"""Pretrained weights into ppar's layers: torchvision's ImageNet MobileNetV2 file (a pickle, read
once with ``weights_only=True``, which refuses code) -> the stem's safetensors; ViT backbones in
timm's or Hugging Face's layouts (safetensors) -> ppar's blocks; and ppar's own weights files, to
fine-tune them on other footage (`ppar train --init`)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ppar_cli.core.clips import PIXEL_MEAN, PIXEL_STD
from ppar_cli.core.config import WeightsError, is_ppar_weights, sha256_of, unreadable
from ppar_cli.core.stem import BLOCKS
from ppar_cli.core.weights import load_weights
from ppar_cli.errors import DataError, reason
from ppar_cli.research.args import INFLATIONS

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _fold(sd: dict, conv: str, bn: str, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """A conv (no bias) followed by batch norm -> one conv's weight and bias."""
    scale = sd[f"{bn}.weight"] / torch.sqrt(sd[f"{bn}.running_var"] + eps)
    w = sd[f"{conv}.weight"] * scale.view(-1, 1, 1, 1)
    b = sd[f"{bn}.bias"] - sd[f"{bn}.running_mean"] * scale
    return w, b


def mobilenet_v2_stem(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """torchvision's ``mobilenet_v2-b0353104.pth`` -> state dict of :class:`~ppar_cli.core.stem.MobileNetStem`,
    batch norms folded, and the first conv rescaled so ppar's input normalisation (mean 0.45, std
    0.25 for every channel) gives exactly ImageNet's per-channel normalisation."""
    path = Path(path)
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- a pickle that is not plain tensors is refused, whatever it is
        raise DataError(f"{path}: not a torchvision MobileNetV2 state dict ({reason(e)})") from None
    out = {}
    try:
        w, b = _fold(sd, "features.0.0", "features.0.1")
        # x_imagenet = (x_ppar * PIXEL_STD + PIXEL_MEAN - mean_c) / std_c, folded into the first conv
        mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        out["first.weight"] = w * PIXEL_STD / std
        out["first.bias"] = b + (w * (PIXEL_MEAN - mean) / std).sum((1, 2, 3))
        for i, (expand, _, _) in enumerate(BLOCKS):
            src, dst = f"features.{i + 1}.conv", f"blocks.{i}"
            parts = (["expand"] if expand != 1 else []) + ["depthwise"]
            for j, name in enumerate(parts):
                out[f"{dst}.{name}.weight"], out[f"{dst}.{name}.bias"] = _fold(sd, f"{src}.{j}.0", f"{src}.{j}.1")
            n = len(parts)
            out[f"{dst}.project.weight"], out[f"{dst}.project.bias"] = _fold(sd, f"{src}.{n}", f"{src}.{n + 1}")
    except KeyError as e:
        raise DataError(f"{path}: not a torchvision MobileNetV2 state dict (no {e})") from None
    return out


# -- ViT backbones: timm and Hugging Face layouts onto ppar's blocks ------------------------------

def _canonical(sd: dict) -> tuple[dict, str]:
    """Any supported layout -> {"patch", "cls", "pos", "norm", "blocks": [{name: (weight, bias)}]}
    with 'patch' (weight, bias), 'cls' (1, 1, D) or None, 'pos' (1, n, D) or None; and the layout's name."""
    for prefix in ("vit.", "videomae.", "model.", ""):
        keys = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if "patch_embed.proj.weight" in keys:
            return _from_timm(keys), "timm ViT"
        if "embeddings.patch_embeddings.projection.weight" in keys:
            video = keys["embeddings.patch_embeddings.projection.weight"].ndim == 5
            return _from_hf(keys), "Hugging Face " + ("VideoMAE" if video else "ViT")
    raise KeyError("no patch embedding under a known name (timm: patch_embed.proj; Hugging Face: embeddings.patch_embeddings)")


def _pair(sd: dict, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    w = sd[f"{name}.weight"]
    b = sd.get(f"{name}.bias")
    return w, b if b is not None else torch.zeros(w.shape[0])


def _from_timm(sd: dict) -> dict:
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    names = {"norm1": "norm1", "qkv": "attn.qkv", "proj": "attn.proj", "norm2": "norm2", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
    return {"patch": _pair(sd, "patch_embed.proj"), "cls": sd.get("cls_token"), "pos": sd.get("pos_embed"),
            "norm": _pair(sd, "norm") if "norm.weight" in sd else None,
            "blocks": [{n: _pair(sd, f"blocks.{i}.{k}") for n, k in names.items()} for i in range(depth)]}


def _from_hf(sd: dict) -> dict:
    """Hugging Face ViT and VideoMAE: the layout of published checkpoints (encoder.layer.N...) and
    that of transformers 5 (layers.N...)."""
    classic = any(k.startswith("encoder.layer.") for k in sd)
    base = "encoder.layer" if classic else "layers"
    depth = 1 + max(int(k.split(".")[2 if classic else 1]) for k in sd if k.startswith(base + "."))
    blocks = []
    for i in range(depth):
        p = f"{base}.{i}"
        if classic:
            qkv_names = [f"{p}.attention.attention.{n}" for n in ("query", "key", "value")]
            names = {"proj": f"{p}.attention.output.dense", "fc1": f"{p}.intermediate.dense", "fc2": f"{p}.output.dense"}
        else:
            qkv_names = [f"{p}.attention.{n}_proj" for n in ("q", "k", "v")]
            names = {"proj": f"{p}.attention.o_proj", "fc1": f"{p}.mlp.fc1", "fc2": f"{p}.mlp.fc2"}
        q, k, v = (_pair(sd, n) for n in qkv_names)
        if f"{p}.attention.attention.q_bias" in sd:  # VideoMAE's original checkpoints: q and v biases apart, no k bias
            q = (q[0], sd[f"{p}.attention.attention.q_bias"])
            v = (v[0], sd[f"{p}.attention.attention.v_bias"])
        block = {"qkv": (torch.cat([q[0], k[0], v[0]]), torch.cat([q[1], k[1], v[1]])),
                 "norm1": _pair(sd, f"{p}.layernorm_before"), "norm2": _pair(sd, f"{p}.layernorm_after")}
        block.update({n: _pair(sd, k) for n, k in names.items()})
        blocks.append(block)
    return {"patch": _pair(sd, "embeddings.patch_embeddings.projection"), "cls": sd.get("embeddings.cls_token"),
            "pos": sd.get("embeddings.position_embeddings"),
            "norm": _pair(sd, "layernorm") if "layernorm.weight" in sd else None, "blocks": blocks}


def sinusoid_table(n: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed position encoding (its checkpoints carry none): (1, n, dim)."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None]
    angle = pos / torch.pow(10000.0, 2 * (j // 2) / dim)
    return torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle)).float()[None]


def _inflate(w: torch.Tensor, t: int, inflation: str) -> torch.Tensor:
    """2D patch filters (D, 3, p, p) -> tubelet filters (D, 3, t, p, p)."""
    if inflation == "average":  # a static video gives the image's tokens
        return w[:, :, None].repeat(1, 1, t, 1, 1) / t
    w3 = torch.zeros(*w.shape[:2], t, *w.shape[2:])
    w3[:, :, t // 2] = w
    return w3


def init_from_pretrained(model, path: str | os.PathLike, inflation: str = "average") -> dict:
    """Load a ppar weights file (see :func:`init_from_ppar`) or a public pretrained ViT (timm or
    Hugging Face ViT, Hugging Face VideoMAE; safetensors) into a ppar model of the same width and
    depth: blocks and final norm as they are, the patch embedding inflated over the tubelet's frames
    when it is 2D ("average": w/t in every frame; "central": w in the middle frame), the position
    embedding repeated over time, the pretrained CLS copied into both CLS tokens. Heads start
    fresh. Returns what was loaded (for provenance)."""
    from safetensors.torch import load_file

    path = Path(path)
    if inflation not in INFLATIONS:
        raise DataError(f"inflation must be {' or '.join(INFLATIONS)}, got {inflation!r}")
    if is_ppar_weights(path):  # unreadable files go on to the ViT path, which reports them
        return init_from_ppar(model, path)
    try:
        sd = load_file(str(path))
    except Exception as e:  # noqa: BLE001 -- safetensors raises its own types
        raise DataError(unreadable(path, e)) from None
    try:
        c, layout = _canonical(sd)
    except (KeyError, ValueError) as e:
        raise DataError(f"{path}: not a ViT checkpoint ppar can map ({e})") from None
    cfg = model.cfg
    t, p, _ = cfg.tubelet
    gt, gh, gw = cfg.grid
    w, b = c["patch"]
    problems = []
    if len(c["blocks"]) != cfg.depth:
        problems.append(f"depth {len(c['blocks'])}, the config has {cfg.depth}")
    if w.shape[0] != cfg.dim:
        problems.append(f"width {w.shape[0]}, the config has {cfg.dim}")
    if w.shape[-1] != p or cfg.stem != "linear" or cfg.frame_diff or (w.ndim == 5 and w.shape[2] != t):
        problems.append(f"patches {tuple(w.shape[2:])} need a linear stem without frame differences and that tubelet; "
                        f"the config has tubelet {list(cfg.tubelet)}, stem {cfg.stem}, frame_diff {cfg.frame_diff}")
    if problems:
        raise DataError(f"{path}: {layout} does not fit: " + "; ".join(problems))
    state = {"embed.proj.weight": _inflate(w, t, inflation) if w.ndim == 4 else w, "embed.proj.bias": b}
    pos = c["pos"]
    if pos is None:  # VideoMAE: its fixed sinusoid table, in ppar's (t, h, w) token order
        state["pos"] = sinusoid_table(gt * gh * gw, cfg.dim)
    else:
        grid = pos[:, 1:] if pos.shape[1] == 1 + gh * gw else pos
        if grid.shape[1] != gh * gw:
            raise DataError(f"{path}: {grid.shape[1]} position embeddings, the config's frame grid has {gh * gw}")
        state["pos"] = grid.repeat(1, gt, 1)
    cls = c["cls"] if c["cls"] is not None else torch.zeros(1, 1, cfg.dim)
    state["cls"] = cls.reshape(1, 1, cfg.dim).repeat(1, 2, 1)
    for i, blk in enumerate(c["blocks"]):
        for name, key in (("norm1", "norm1"), ("qkv", "attn.qkv"), ("proj", "attn.proj"), ("norm2", "norm2"),
                          ("fc1", "mlp.0"), ("fc2", "mlp.2")):
            state[f"blocks.{i}.{key}.weight"], state[f"blocks.{i}.{key}.bias"] = blk[name]
    if c["norm"] is not None:
        state["norm.weight"], state["norm.bias"] = c["norm"]
    expected = model.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items() if v.shape != expected[k].shape]
    if bad:
        raise DataError(f"{path}: {layout} tensors do not fit: {', '.join(bad[:3])}")
    model.load_state_dict(state, strict=False)
    return {"file": str(path), "layout": layout, "inflation": inflation if w.ndim == 4 else None, "loaded": len(state),
            "fresh": sorted(k for k in expected if k not in state),
            "cls": "pretrained" if c["cls"] is not None else "zeros",
            "pos": "pretrained, repeated over time" if pos is not None else "VideoMAE sinusoid table"}


def init_from_ppar(model, path: str | os.PathLike) -> dict:
    """Fine-tuning: every tensor of a ppar weights file into a model of the same architecture
    (train with ``--config FILE`` to take the file's). The action and privacy heads are taken only
    when the file's label lists are the model's: other labels start fresh heads, so the bundled
    weights' scores can be trained on new footage and new actions."""
    path = Path(path)
    try:
        src = load_weights(path).model
    except WeightsError as e:
        raise DataError(str(e)) from None
    heads = {"action_head": src.cfg.actions == model.cfg.actions, "privacy_head": src.cfg.attributes == model.cfg.attributes}
    state = {k: v for k, v in src.state_dict().items() if heads.get(k.split(".")[0], True)}
    expected = model.state_dict()
    bad = [f"{k} not in this config" if k not in expected else f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
           for k, v in state.items() if k not in expected or v.shape != expected[k].shape]
    bad += [f"{k} not in the file" for k in expected if k not in state and k.split(".")[0] not in heads]
    if bad:
        raise DataError(f"{path}: ppar weights of another architecture ({', '.join(bad[:3])}); "
                        f"train with --config {path} to take the file's")
    model.load_state_dict(state, strict=False)
    return {"file": str(path), "layout": "ppar weights", "sha256": sha256_of(path), "loaded": len(state),
            "fresh": sorted(k for k in expected if k not in state)}
