import math

import pytest
import torch

from ppar_cli.core.config import PPARConfig
from ppar_cli.core.model import (
    PPARModel,
    keep_counts,
    utility_privacy_scores,
)


def test_score_formula_hand_computed():
    # two patch tokens' raw CLS attention (already excluding CLS columns), not summing to 1
    attn = torch.tensor([[[0.2, 0.6], [0.3, 0.1]]])  # action row, privacy row
    s, a_act, a_priv = utility_privacy_scores(attn, lambda_priv=0.5)
    assert torch.allclose(a_act, torch.tensor([[0.25, 0.75]]))
    assert torch.allclose(a_priv, torch.tensor([[0.75, 0.25]]))
    assert torch.allclose(s, torch.tensor([[0.25 - 0.375, 0.75 - 0.125]]))


@pytest.mark.parametrize("n", [1, 7, 256, 576, 1568])
@pytest.mark.parametrize("keep", [0.0, 0.1, 0.33, 0.5, 0.729, 0.9, 1.0])
def test_keep_counts_exact_and_monotone(n, keep):
    for blocks in (1, 2, 3):
        counts = keep_counts(n, keep, blocks)
        assert counts[-1] == round(keep * n)
        assert all(a >= b for a, b in zip([n] + counts, counts))


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan])
def test_keep_out_of_range(bad):
    with pytest.raises(ValueError):
        keep_counts(10, bad, 3)


def test_reference_schedule():
    # the paper's 0.9 per block at three blocks, as cumulative rounding of 1568 * 0.9^j
    assert keep_counts(1568, 0.9 ** 3, 3) == [1411, 1270, 1143]


def _model(**kw):
    torch.manual_seed(0)
    cfg = PPARConfig(frames=4, image_size=32, tubelet=(2, 8, 8), dim=32, depth=3, heads=2, prune_blocks=(1, 3),
                     actions=["a", "b"], **kw)
    return PPARModel(cfg).eval()


@pytest.mark.parametrize("keep", [0.0, 0.25, 0.5, 1.0])
def test_model_mask_fraction(keep):
    m = _model()
    with torch.no_grad():
        out = m(torch.randn(3, 3, 4, 32, 32), keep_ratio=keep)
    n = m.cfg.num_tokens
    assert out.kept.shape == (3, *m.cfg.grid)
    assert (out.kept.reshape(3, -1).sum(1) == round(keep * n)).all()
    assert out.action_logits.shape == (3, 2) and out.privacy_logits.shape == (3, 5)


def test_pruning_keeps_top_scores_single_block():
    """With one pruning block the kept set is exactly the top-k of s_i at that block."""
    torch.manual_seed(1)
    cfg = PPARConfig(frames=4, image_size=32, tubelet=(2, 8, 8), dim=32, depth=2, heads=2, prune_blocks=(1,), actions=["a"])
    m = PPARModel(cfg).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 4, 32, 32), keep_ratio=0.5)
    k = cfg.num_tokens // 2
    for b in range(2):
        top = set(out.scores[b].argsort(descending=True)[:k].tolist())
        assert top == set(out.kept[b].reshape(-1).nonzero().flatten().tolist())
        assert torch.allclose(out.scores[b], out.a_act[b, 0] - cfg.lambda_priv * out.a_priv[b, 0], atol=1e-6)


def test_grl_reverses_gradient():
    m = _model()
    x = torch.randn(2, 3, 4, 32, 32)
    grads = []
    for grl in (None, 1.0):
        m.zero_grad()
        m(x, keep_ratio=1.0, grl_coeff=grl).privacy_logits.sum().backward()
        grads.append(m.cls.grad.clone())
    assert torch.allclose(grads[0][:, 1], -grads[1][:, 1], atol=1e-6)
    assert not torch.allclose(grads[0][:, 1], torch.zeros_like(grads[0][:, 1]))


def test_config_validation():
    with pytest.raises(ValueError):
        PPARConfig(image_size=30, tubelet=(2, 8, 8))
    with pytest.raises(ValueError):
        PPARConfig(prune_blocks=(9,), depth=4)


def test_sticky_bonus_pulls_towards_previous_keep():
    """A large bonus on the previous window's kept tubelets reproduces its keep mask exactly;
    without it, another clip keeps other tubelets (so the first assertion could fail)."""
    m = _model()
    with torch.no_grad():
        a = m(torch.randn(1, 3, 4, 32, 32), keep_ratio=0.5).kept
        x = torch.randn(1, 3, 4, 32, 32)
        free = m(x, keep_ratio=0.5).kept
        held = m(x, keep_ratio=0.5, sticky=100.0 * a.reshape(1, -1).float()).kept
    assert torch.equal(held, a) and not torch.equal(free, a)
    assert held.sum() == free.sum()


@pytest.mark.parametrize("prune_blocks", [(1, 3), (1, 2)])  # the last block prunes, or does not
def test_last_block_computes_only_what_feeds_the_heads(prune_blocks, monkeypatch):
    """The last block's patch tokens feed nothing, so it runs for the two CLS tokens alone: the
    same outputs, gradients and kept tubelets as running it whole."""
    from ppar_cli.core import model as model_mod

    torch.manual_seed(0)
    m = PPARModel(PPARConfig(frames=4, image_size=32, tubelet=(2, 8, 8), dim=32, depth=3, heads=2,
                             prune_blocks=prune_blocks, actions=["a", "b"])).train()
    x = torch.randn(2, 3, 4, 32, 32)

    def run():
        m.zero_grad()
        out = m(x, keep_ratio=0.5, grl_coeff=0.5)
        (out.action_logits.sum() + out.privacy_logits.sum() + out.a_priv.sum()).backward()
        return out, [p.grad.clone() for p in m.parameters()]

    fast, fast_grads = run()
    whole = model_mod.Block.forward
    monkeypatch.setattr(model_mod.Block, "forward", lambda self, x, prune=None, cls_only=False: whole(self, x, prune))
    full, full_grads = run()
    assert torch.equal(fast.kept, full.kept) and torch.equal(fast.scores, full.scores)
    assert torch.allclose(fast.action_logits, full.action_logits, atol=1e-5)
    assert torch.allclose(fast.privacy_logits, full.privacy_logits, atol=1e-5)
    assert torch.allclose(fast.a_priv, full.a_priv, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(fast_grads, full_grads))
