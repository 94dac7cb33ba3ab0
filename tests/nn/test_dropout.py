import pytest
import torch
from torch import nn

from moe_asr.nn import dropout as dropout_mod
from moe_asr.nn.dropout import Dropout, cpu_dropout


def test_by_default_it_is_torch_dropout_draw_for_draw():
    """Without the fast block: the same masks as nn.Dropout for a seed (earlier runs' numbers)."""
    x = torch.randn(7, 33, 20)
    torch.manual_seed(3)
    ref = nn.Dropout(0.1).train()(x)
    torch.manual_seed(3)
    assert torch.equal(Dropout(0.1).train()(x), ref)


def test_fast_masks_drop_p_and_keep_the_mean():
    """1M elements: dropped fraction within 5 sigma of p, kept values x * exact inverse keep
    probability, dropped ones 0; the gradient is the same mask and scale."""
    n, p = 1_000_000, 0.1
    x = torch.rand(n) + 0.5  # no zeros: a zero output is a dropped element
    x.requires_grad_(True)
    torch.manual_seed(0)
    with cpu_dropout("fast"):
        y = Dropout(p).train()(x)
    dropped = y == 0
    cut = round(p * 65536)
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(dropped.float().mean().item() - cut / 65536) < 5 * sigma
    scale = 65536 / (65536 - cut)
    assert torch.equal(y[~dropped], x.detach()[~dropped] * scale)
    y.backward(torch.full_like(y, 2.0))
    assert torch.equal(x.grad, torch.where(dropped, 0.0, 2.0 * scale))


def test_fast_masks_are_uniform_over_positions():
    """The four 16-bit numbers of each 64-bit draw drop alike (no lane biased)."""
    torch.manual_seed(1)
    with cpu_dropout("fast"):
        y = Dropout(0.5).train()(torch.ones(400_000, 4))
    rate = (y == 0).float().mean(0)  # per position of the four numbers in a draw
    assert (rate - 0.5).abs().max() < 5 * (0.25 / 400_000) ** 0.5


def test_fast_masks_follow_the_seed_and_differ_between_calls():
    x = torch.randn(5, 17, 9)
    layer = Dropout(0.3).train()
    with cpu_dropout("fast"):
        torch.manual_seed(4)
        a, b = layer(x), layer(x)
        torch.manual_seed(4)
        assert torch.equal(layer(x), a)
    assert not torch.equal(a, b)


def test_identity_in_eval_and_at_p_0_zeros_at_p_1():
    x = torch.randn(3, 8)
    with cpu_dropout("fast"):
        assert Dropout(0.4).eval()(x) is x
        assert Dropout(0.0).train()(x) is x
        assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
        # a non-contiguous input keeps its shape and values where kept
        t = torch.randn(6, 10).t()
        out = Dropout(0.5).train()(t)
        kept = out != 0
        assert out.shape == t.shape and torch.allclose(out[kept], t[kept] * 2.0)


def test_the_block_restores_the_kind_and_refuses_unknown_ones():
    assert dropout_mod._kind == "torch"
    with pytest.raises(RuntimeError), cpu_dropout("fast"):
        assert dropout_mod._kind == "fast"
        raise RuntimeError
    assert dropout_mod._kind == "torch"
    with pytest.raises(ValueError, match="fast, torch"), cpu_dropout("quick"):
        pass
    with pytest.raises(ValueError, match="between 0 and 1"):
        Dropout(1.5)
