"""Dual-CLS video ViT with utility-privacy token pruning (SPEC section 1).

Token layout inside the network: [action CLS, privacy CLS, patch tokens..., (fused token)].
At each pruning block the patch tokens are scored by ``s_i = a_act_i - lambda * a_priv_i``
(CLS-to-token attention of that block, head-averaged, renormalised over the patch tokens),
the top-k stay and the rest are fused into one token (EViT). The tokens still alive after
the last pruning block are the tubelets that stay visible in the anonymized video. The last block
computes the two CLS tokens alone: the patch tokens it would output feed nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ppar_cli.core.config import PPARConfig


def keep_counts(num_tokens: int, keep: float, num_blocks: int) -> list[int]:
    """Tokens alive after each pruning block so that a fraction ``keep`` survives the last one.

    Each block keeps ``keep ** (1/n)`` of what reaches it; counts are rounded on the cumulative
    product, so the final count is ``round(keep * num_tokens)`` exactly.
    """
    if not 0.0 <= keep <= 1.0 or math.isnan(keep):
        raise ValueError(f"keep must lie in [0, 1], got {keep}")
    return [int(round(num_tokens * keep ** ((j + 1) / num_blocks))) for j in range(num_blocks)]


def utility_privacy_scores(cls_attn: torch.Tensor, lambda_priv: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score patch tokens from the two CLS rows of a head-averaged attention map.

    cls_attn: (B, 2, P) post-softmax attention of the action (row 0) and privacy (row 1) CLS
    to the P patch tokens. Returns (scores, a_act, a_priv), each (B, P), with a_* summing to 1.
    """
    a = cls_attn / cls_attn.sum(-1, keepdim=True).clamp_min(1e-12)
    a_act, a_priv = a[:, 0], a[:, 1]
    return a_act - lambda_priv * a_priv, a_act, a_priv


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeff):  # type: ignore[override]
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float) -> torch.Tensor:
    return _GradReverse.apply(x, coeff)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, want_cls: bool, cls_only: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the attention output and, with ``want_cls``, the two CLS rows of the head-averaged
        attention (B, 2, N). ``cls_only``: only the CLS tokens' outputs (B, 2, C) are computed."""
        B, N, C = x.shape
        d = C // self.heads
        if cls_only:  # 2 query rows: O(N) instead of O(N^2), and no queries for the patch tokens
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, :2], w[:C], b[:C]).view(B, 2, self.heads, d).transpose(1, 2)
            k, v = F.linear(x, w[C:], b[C:]).view(B, N, 2, self.heads, d).permute(2, 0, 3, 1, 4)
            attn = ((q * d ** -0.5) @ k.transpose(-2, -1)).float().softmax(-1)  # (B, heads, 2, N)
            out = (attn.to(v.dtype) @ v).transpose(1, 2).reshape(B, 2, C)
            return self.proj(out), attn.mean(1) if want_cls else None
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)
        cls = None
        if want_cls:  # only the two CLS query rows are needed for scoring: cheap to recompute exactly
            logits = (q[:, :, :2] * d ** -0.5) @ k.transpose(-2, -1)
            cls = logits.float().softmax(-1).mean(1)  # (B, 2, N)
        return self.proj(out), cls


class Block(nn.Module):
    """Pre-norm transformer block. A pruning block also returns the two CLS rows of its attention,
    which score the patch tokens before the MLP runs on the survivors."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, prune: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                cls_only: bool = False) -> torch.Tensor:
        """``prune(x, cls_attn) -> x``: drops tokens between attention and MLP (None: not a pruning block).
        ``cls_only`` (the last block, whose patch tokens feed nothing): returns the two CLS tokens alone,
        after pruning still records which patch tokens survive."""
        h, cls_attn = self.attn(self.norm1(x), want_cls=prune is not None, cls_only=cls_only)
        if cls_only:
            if prune is not None:
                prune(x, cls_attn)  # for the kept tubelets it records; the tokens it returns feed nothing
            x = x[:, :2] + h
        else:
            x = x + h
            if prune is not None:
                x = prune(x, cls_attn)
        return x + self.mlp(self.norm2(x))


@dataclass
class Pruning:
    """What a forward pass carries from one pruning block to the next."""

    ids: torch.Tensor  # (B, n) grid index of each live patch token
    scores: torch.Tensor  # (B, N) s_i at the last pruning block each token reached
    has_fused: bool = False  # an EViT fused token sits at the end of the sequence
    a_act: list[torch.Tensor] = field(default_factory=list)  # per pruning block, (B, N), 0 where pruned
    a_priv: list[torch.Tensor] = field(default_factory=list)


class TubeletEmbed(nn.Module):
    """Clips -> tubelet tokens (B, N, dim) in (t, h, w) order. Frame differences (motion) join the
    input: as 3 more pixel channels before a conv or linear stem, or as feature differences after
    the per-frame MobileNetV2 stem."""

    def __init__(self, cfg: PPARConfig):
        super().__init__()
        t, p, _ = cfg.tubelet
        self.frame_diff, self.diff_scale = cfg.frame_diff, cfg.diff_scale
        self.stem = None
        if cfg.stem == "mobilenet_v2":
            from ppar_cli.core.stem import CHANNELS, STRIDE, MobileNetStem

            self.stem = MobileNetStem()
            cin, k = CHANNELS * (2 if cfg.frame_diff else 1), p // STRIDE
            self.proj = nn.Conv3d(cin, cfg.dim, (t, k, k), (t, k, k))
        elif cfg.stem == "conv":
            cin, w = 6 if cfg.frame_diff else 3, max(32, cfg.dim // 4)
            self.proj = nn.Sequential(
                nn.Conv3d(cin, w, (1, 3, 3), (1, 2, 2), (0, 1, 1)), nn.GELU(),
                nn.Conv3d(w, 2 * w, (1, 3, 3), (1, 2, 2), (0, 1, 1)), nn.GELU(),
                nn.Conv3d(2 * w, cfg.dim, (t, p // 4, p // 4), (t, p // 4, p // 4)),
            )
        else:
            self.proj = nn.Conv3d(6 if cfg.frame_diff else 3, cfg.dim, (t, p, p), (t, p, p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem is not None:
            B, C, T, H, W = x.shape
            f = self.stem(x.transpose(1, 2).reshape(B * T, C, H, W))
            x = f.view(B, T, *f.shape[1:]).transpose(1, 2)
        if self.frame_diff:
            x = with_frame_diff(x, self.diff_scale)
        return self.proj(x).flatten(2).transpose(1, 2)


def with_frame_diff(x: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, 2C, T, H, W): the frames and their temporal differences, times ``scale``."""
    diff = torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, 1:] - x[:, :, :-1]], dim=2) * scale
    return torch.cat([x, diff], dim=1)


class Output(NamedTuple):
    action_logits: torch.Tensor  # (B, actions)
    privacy_logits: torch.Tensor  # (B, attributes)
    kept: torch.Tensor  # (B, gt, gh, gw) bool: tubelets visible in the anonymized video
    scores: torch.Tensor  # (B, N) s_i at the last pruning block the token reached
    a_act: torch.Tensor  # (B, n_prune, N) renormalised action-CLS attention at each pruning block, 0 where pruned
    a_priv: torch.Tensor  # (B, n_prune, N) same for the privacy CLS


class PPARModel(nn.Module):
    def __init__(self, cfg: PPARConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = TubeletEmbed(cfg)
        self.cls = nn.Parameter(torch.zeros(1, 2, cfg.dim))
        self.pos = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.action_head = nn.Linear(cfg.dim, len(cfg.actions))
        self.privacy_head = nn.Linear(cfg.dim, len(cfg.attributes))
        if self.pos.device.type != "meta":  # a skeleton for a weights file's tensors needs no random init,
            # and normal_ on meta makes PyTorch 2.11 import torch._dynamo (4.7 s of an H100 machine's start-up)
            nn.init.trunc_normal_(self.pos, std=0.02)
            nn.init.trunc_normal_(self.cls, std=0.02)
            self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, keep_ratio: float | None = None, grl_coeff: float | None = None,
                lambda_priv: float | None = None, sticky: torch.Tensor | None = None) -> Output:
        """x: (B, 3, T, S, S) normalised clips. keep_ratio: fraction of tubelets left visible
        (default: the training schedule). grl_coeff: gradient-reversal coefficient on the privacy
        feature (None: no reversal). lambda_priv: weight of privacy attention in the score (default:
        the config's). sticky: (B, N) bonus, in standard deviations of a clip's scores, added to each
        token's score at every pruning block (hysteresis: tubelets kept in the previous window win
        close calls)."""
        cfg = self.cfg
        lam = cfg.lambda_priv if lambda_priv is None else lambda_priv
        n_blocks = len(cfg.prune_blocks)
        if keep_ratio is None:
            keep_ratio = cfg.train_keep_rate ** n_blocks
        counts = dict(zip(cfg.prune_blocks, keep_counts(cfg.num_tokens, keep_ratio, n_blocks)))
        tokens = self.embed(x) + self.pos
        B, N, _ = tokens.shape
        x = torch.cat([self.cls.expand(B, -1, -1), tokens], dim=1)
        state = Pruning(ids=torch.arange(N, device=x.device).expand(B, N), scores=torch.zeros(B, N, device=x.device))
        for i, blk in enumerate(self.blocks, start=1):
            prune = None
            if i in counts:
                def prune(x, cls_attn, k=counts[i]):
                    return self._prune(x, cls_attn, state, k, lam, sticky)
            x = blk(x, prune, cls_only=i == len(self.blocks))
        x = self.norm(x)
        priv = x[:, 1] if grl_coeff is None else grad_reverse(x[:, 1], grl_coeff)
        kept = torch.zeros(B, N, dtype=torch.bool, device=x.device).scatter(1, state.ids, True)
        return Output(self.action_head(x[:, 0]), self.privacy_head(priv), kept.view(B, *cfg.grid),
                      state.scores, torch.stack(state.a_act, 1), torch.stack(state.a_priv, 1))

    def _prune(self, x: torch.Tensor, cls_attn: torch.Tensor, state: Pruning, k: int, lambda_priv: float,
               sticky: torch.Tensor | None) -> torch.Tensor:
        """Score the live patch tokens, record the scores, keep the top ``k`` and fuse the rest."""
        B, n = state.ids.shape
        patch_attn = cls_attn[:, :, 2:2 + n]
        s, a_act, a_priv = utility_privacy_scores(patch_attn, lambda_priv)
        if sticky is not None and n > 1:
            s = s + sticky.to(s.dtype).gather(1, state.ids) * s.std(dim=1, keepdim=True)
        full = torch.zeros(B, self.cfg.num_tokens, device=x.device)
        state.scores = state.scores.scatter(1, state.ids, s)
        state.a_act.append(full.scatter(1, state.ids, a_act))
        state.a_priv.append(full.scatter(1, state.ids, a_priv))
        if k >= n:
            return x
        order = s.argsort(dim=1, descending=True, stable=True)
        keep_idx, drop_idx = order[:, :k], order[:, k:]
        patches = x[:, 2:2 + n]

        def gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return t.gather(1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))

        # EViT fusion: pruned tokens (and the previous fused token) averaged, weighted by action-CLS attention.
        w = patch_attn[:, 0].gather(1, drop_idx)
        fuse_x = gather(patches, drop_idx)
        if state.has_fused:
            w = torch.cat([w, cls_attn[:, 0, -1:]], dim=1)
            fuse_x = torch.cat([fuse_x, x[:, -1:]], dim=1)
        w = (w / w.sum(1, keepdim=True).clamp_min(1e-12)).to(x.dtype)
        fused = (fuse_x * w.unsqueeze(-1)).sum(1, keepdim=True)
        state.ids, state.has_fused = state.ids.gather(1, keep_idx), True
        return torch.cat([x[:, :2], gather(patches, keep_idx), fused], dim=1)
