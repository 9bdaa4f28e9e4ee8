"""Evaluation of a frozen anonymizer on benchmark clips (the `quick` protocol).

For each keep ratio: action top-1 and privacy cMAP / macro F1 of the model's own heads, and on the
synthetic benchmark the pixel metrics of ppar's pruning next to the oracle and random pruning at the
same budget, plus where the two CLS tokens put their attention.
"""
from __future__ import annotations

import numpy as np
import torch

from .data import ClipSet
from .metrics import attention_mass, oracle_keep, pixel_metrics, privacy_metrics, random_keep
from .model import PPARModel, keep_counts, prepare_clips


@torch.inference_mode()
def evaluate_clips(model: PPARModel, clips: ClipSet, keeps=(1.0, 0.5), device=torch.device("cpu"),
                   batch_size: int = 16, seed: int = 0) -> dict:
    cfg = model.cfg
    model.eval()
    starts = [clips.starts(i, None) for i in range(len(clips))]
    labels = np.array([it.action for it in clips.items])
    attrs = np.stack([it.attributes for it in clips.items]) if all(it.attributes is not None for it in clips.items) else None
    counts = [clips.counts(i, s) for i, s in enumerate(starts)] if clips.has_masks else None
    res: dict = {}
    for keep in keeps:
        logits, probs, masks, a_act, a_priv = [], [], [], [], []
        for b in range(0, len(clips), batch_size):
            idx = range(b, min(b + batch_size, len(clips)))
            x = torch.from_numpy(np.stack([clips.clip(i, starts[i]) for i in idx])).to(device)
            out = model(prepare_clips(x, cfg), keep=keep)
            logits.append(out.action_logits.float().cpu())
            probs.append(out.privacy_logits.float().sigmoid().cpu())
            masks.append(out.keep_mask.reshape(len(idx), -1).cpu())
            a_act.append(out.a_act.cpu())
            a_priv.append(out.a_priv.cpu())
        tag = f"@{keep:g}"
        res[f"action_top1{tag}"] = float((torch.cat(logits).argmax(1).numpy() == labels).mean())
        if attrs is not None:
            pm = privacy_metrics(torch.cat(probs).numpy(), attrs, cfg.attributes)
            res[f"privacy_cmap{tag}"], res[f"privacy_f1{tag}"] = pm["privacy_cmap"], pm["privacy_f1"]
        if counts is None or keep >= 1.0:
            continue
        priv = np.stack([c[0] for c in counts])
        act = np.stack([c[1] for c in counts])
        keep_mask = torch.cat(masks).numpy()
        k = keep_counts(cfg.num_tokens, keep, 1)[0]
        rng = np.random.default_rng(seed)
        for name, m in (("ppar", keep_mask),
                        ("oracle", np.stack([oracle_keep(p, a, k) for p, a in zip(priv, act)])),
                        ("random", np.stack([random_keep(cfg.num_tokens, k, rng) for _ in priv]))):
            for key, v in pixel_metrics(m, priv, act).items():
                res[f"{name}_{key}{tag}"] = v
        A, P = torch.cat(a_act).numpy(), torch.cat(a_priv).numpy()
        res["a_priv_on_privacy"] = attention_mass(P, priv)
        res["a_act_on_privacy"] = attention_mass(A, priv)
        res["a_act_on_action"] = attention_mass(A, act)
        res["privacy_token_share"] = float((priv > 0).mean())
    return res
