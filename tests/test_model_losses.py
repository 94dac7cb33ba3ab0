"""The loss functions of moe_asr.model_losses, on hand-made tensors."""

import math

import pytest
import torch

from moe_asr.config import MoEConfig
from moe_asr.errors import UserError
from moe_asr.model_losses import (
    attention_loss,
    check_tokens,
    ctc_loss,
    decoder_targets,
    router_losses,
)
from moe_asr.nn.moe import RouterStats, importance_cv2, load_balance_loss, router_z_loss


def test_decoder_targets_shift_by_sos_and_end_with_eos():
    tokens = torch.tensor([[5, 6, 7], [8, -1, -1]])
    ys_in, ys_out = decoder_targets(tokens, torch.tensor([3, 1]), sos=9, eos=9)
    assert ys_in.tolist() == [[9, 5, 6, 7], [9, 8, 9, 9]]
    assert ys_out.tolist() == [[5, 6, 7, 9], [8, 9, -1, -1]]


def test_attention_loss_is_the_mean_token_nll_over_real_targets():
    logits = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    ys_out = torch.tensor([[1, 2, 3], [0, -1, -1]])
    logp = logits.log_softmax(-1)
    expected = -(logp[0, 0, 1] + logp[0, 1, 2] + logp[0, 2, 3] + logp[1, 0, 0]) / 4
    torch.testing.assert_close(attention_loss(logits, ys_out, 0.0), expected)
    # label smoothing moves mass to the other tokens: the loss of a confident right answer grows
    sharp = torch.full((1, 1, 4), -10.0)
    sharp[0, 0, 2] = 10.0
    target = torch.tensor([[2]])
    assert attention_loss(sharp, target, 0.1) > attention_loss(sharp, target, 0.0) + 1.0


def test_ctc_loss_is_per_target_token_and_matches_the_single_path_case():
    # one frame per token and a certain path: the only alignment has probability prod(p)
    probs = torch.tensor([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    log_probs = probs.log()[None]  # (1, T, V)
    loss = ctc_loss(log_probs, torch.tensor([2]), torch.tensor([[1, 2]]), torch.tensor([2]), 0)
    assert loss.item() == pytest.approx(-2 * math.log(0.8) / 2, rel=1e-5)


def _stats(seed: int, similarity: float) -> RouterStats:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, 4, generator=g)
    probs = logits.softmax(-1)
    weight, idx = probs.topk(1, dim=-1)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    return RouterStats(probs, logits, idx, weight, mask, output_similarity=torch.tensor(similarity))


def test_router_losses_average_each_term_over_layers_times_its_weight():
    zero = torch.zeros(())
    stats = [_stats(0, 0.2), _stats(1, 0.4)]
    assert router_losses(MoEConfig(), [], zero) == (zero, zero, zero)
    off = MoEConfig(balance_weight=0, z_loss_weight=0, importance_cv_weight=0)
    assert router_losses(off, stats, zero) == (zero, zero, zero)
    moe = MoEConfig(
        balance_weight=0.01,
        z_loss_weight=0.001,
        importance_cv_weight=0.1,
        output_diversity_weight=0.5,
    )
    balance, z, diversity = router_losses(moe, stats, zero)
    mean = lambda f: (f(stats[0]) + f(stats[1])) / 2  # noqa: E731
    torch.testing.assert_close(balance, 0.01 * mean(load_balance_loss))
    torch.testing.assert_close(z, 0.001 * mean(router_z_loss))
    torch.testing.assert_close(diversity, 0.1 * mean(importance_cv2) + 0.5 * 0.3)


def test_check_tokens_names_the_vocabulary_mismatch():
    check_tokens(torch.tensor([[1, 2, -1]]), torch.tensor([2]), vocab_size=3)
    with pytest.raises(UserError, match=r"token ids must be in 0\.\.2"):
        check_tokens(torch.tensor([[1, 3]]), torch.tensor([2]), vocab_size=3)
    with pytest.raises(UserError, match="rows"):
        check_tokens(torch.tensor([[1, 2]]), torch.tensor([2, 1]), vocab_size=3)
