"""The training losses of an ``AsrModel``, as functions of tensors (no module state).

``loss = ctc_weight * ctc + (1 - ctc_weight) * att + moe_balance + z_loss + diversity
+ label_loss + clean_target``; the router terms come already multiplied by their
coefficients. ``ctc`` is summed over the batch and divided by the number of target tokens;
``att`` is the label-smoothed cross-entropy per token. Label guidance's loss is owned by
``moe_asr.nn.guidance.LabelGuidance``, the clean-feature loss by
``moe_asr.nn.clean_target.CleanFeatureHead``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from moe_asr.config import MoEConfig
from moe_asr.errors import UserError
from moe_asr.nn.conformer import lengths_to_mask
from moe_asr.nn.moe import RouterStats, importance_cv2, load_balance_loss, router_z_loss

__all__ = [
    "LOSS_FIELDS",
    "check_tokens",
    "ctc_loss",
    "decoder_targets",
    "attention_loss",
    "router_losses",
]

# the scalar losses of ModelOutput (what training logs, sums and averages over passes)
LOSS_FIELDS = (
    "loss",
    "ctc",
    "att",
    "moe_balance",
    "z_loss",
    "diversity",
    "label_loss",
    "clean_target",
)


def check_tokens(tokens: Tensor, token_lens: Tensor, vocab_size: int) -> None:
    """UserError unless tokens (B, L) padded with -1 hold ids in 0..vocab_size-1."""
    if tokens.shape[0] != token_lens.shape[0]:
        raise UserError(f"tokens has {tokens.shape[0]} rows, token_lens {token_lens.shape[0]}")
    real = tokens[lengths_to_mask(token_lens, tokens.shape[1])]
    if real.numel() and (int(real.min()) < 0 or int(real.max()) >= vocab_size):
        raise UserError(
            f"token ids must be in 0..{vocab_size - 1}; the tokenizer and the model's "
            "vocab_size disagree"
        )


def ctc_loss(
    log_probs: Tensor, lens: Tensor, tokens: Tensor, token_lens: Tensor, blank: int
) -> Tensor:
    """log_probs (B, T', V) float32 -> CTC summed over the batch, per target token."""
    loss = F.ctc_loss(
        log_probs.transpose(0, 1),
        tokens.clamp_min(0),
        lens,
        token_lens,
        blank=blank,
        reduction="sum",
        zero_infinity=True,
    )
    return loss / token_lens.sum().clamp_min(1)


def decoder_targets(
    tokens: Tensor, token_lens: Tensor, sos: int, eos: int
) -> tuple[Tensor, Tensor]:
    """Teacher forcing: decoder inputs ``<sos> y`` (padded with eos) and outputs ``y <eos>``
    (padded with -1, ignored), both (B, L + 1)."""
    b, length = tokens.shape
    pad = torch.arange(length, device=tokens.device)[None] >= token_lens[:, None]
    ys_in = torch.cat([tokens.new_full((b, 1), sos), tokens.masked_fill(pad, eos)], 1)
    ys_out = torch.cat([tokens.masked_fill(pad, -1), tokens.new_full((b, 1), -1)], 1)
    ys_out[torch.arange(b, device=tokens.device), token_lens] = eos
    return ys_in, ys_out


def attention_loss(logits: Tensor, ys_out: Tensor, label_smoothing: float) -> Tensor:
    """logits (B, L + 1, V) of the decoder -> label-smoothed cross-entropy per token."""
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        ys_out.reshape(-1),
        ignore_index=-1,
        label_smoothing=label_smoothing,
    )


def router_losses(
    moe: MoEConfig, stats: list[RouterStats], zero: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(balance, z-loss, diversity) averaged over the MoE layers' ``stats``, each times its
    coefficient in ``model.moe``; zeros without MoE layers or with a coefficient of 0."""
    if not stats:
        return zero, zero, zero
    n = len(stats)
    balance = z = diversity = zero
    if moe.balance_weight > 0:
        balance = moe.balance_weight * sum(load_balance_loss(s) for s in stats) / n
    if moe.z_loss_weight > 0:
        z = moe.z_loss_weight * sum(router_z_loss(s) for s in stats) / n
    if moe.importance_cv_weight > 0:
        diversity = moe.importance_cv_weight * sum(importance_cv2(s) for s in stats) / n
    sims = [s.output_similarity for s in stats if s.output_similarity is not None]
    if moe.output_diversity_weight > 0 and sims:
        diversity = diversity + moe.output_diversity_weight * sum(sims) / len(sims)
    return balance, z, diversity
