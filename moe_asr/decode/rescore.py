"""Attention rescoring of a CTC n-best list (two-pass decoding, as in WeNet).

The CTC prefix beam search proposes hypotheses; each is then scored by the exact CTC
log-likelihood (forward algorithm, ``F.ctc_loss``) and by the attention decoder with
teacher forcing (``<sos> y`` -> ``y <eos>``), both batched over the n-best:

    score = ctc_weight * log p_ctc(y | X) + (1 - ctc_weight) * log p_att(y | X)

``keep_lm`` adds the first pass's LM part (``Hypothesis.lm_score``: LM weight times the
n-gram log-probability plus word scores), so an LM still counts after rescoring.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from moe_asr.decode.ctc import Hypothesis

__all__ = ["ctc_sequence_scores", "attention_scores", "attention_rescore"]

# (memory (N, S, D), memory_lens (N,), ys_in (N, L)) -> logits (N, L, V)
DecoderFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def ctc_sequence_scores(log_probs: Tensor, hyps: list[list[int]], blank: int = 0) -> Tensor:
    """Exact CTC log-likelihood of each token sequence. log_probs: (T, V) -> (N,)."""
    n = len(hyps)
    lens = torch.tensor([len(h) for h in hyps], dtype=torch.long)
    targets = torch.zeros(n, max(1, int(lens.max())), dtype=torch.long)
    for i, h in enumerate(hyps):
        targets[i, : len(h)] = torch.tensor(h, dtype=torch.long)
    lp = log_probs.float().cpu()[:, None].expand(-1, n, -1)  # (T, N, V)
    in_lens = torch.full((n,), lp.shape[0], dtype=torch.long)
    nll = F.ctc_loss(lp, targets, in_lens, lens, blank=blank, reduction="none")
    return -nll  # impossible alignments give -inf


def attention_scores(
    decoder: DecoderFn, memory: Tensor, hyps: list[list[int]], *, sos: int, eos: int
) -> Tensor:
    """Teacher-forced attention log-likelihood of each sequence including <eos>.

    memory: (S, D) encoder output of one utterance -> (N,).
    """
    n = len(hyps)
    device = memory.device
    length = max(len(h) for h in hyps) + 1
    ys_in = torch.full((n, length), eos, dtype=torch.long, device=device)
    ys_out = torch.full((n, length), -1, dtype=torch.long, device=device)
    ys_in[:, 0] = sos
    for i, h in enumerate(hyps):
        t = torch.tensor(h, dtype=torch.long, device=device)
        ys_in[i, 1 : len(h) + 1] = t
        ys_out[i, : len(h)] = t
        ys_out[i, len(h)] = eos
    mem = memory[None].expand(n, -1, -1)
    mem_lens = torch.full((n,), memory.shape[0], dtype=torch.long, device=device)
    logp = decoder(mem, mem_lens, ys_in).float().log_softmax(-1)  # (N, L, V)
    picked = logp.gather(-1, ys_out.clamp_min(0)[..., None])[..., 0]
    return picked.masked_fill(ys_out < 0, 0.0).sum(-1)


@torch.no_grad()
def attention_rescore(
    decoder: DecoderFn,
    memory: Tensor,
    ctc_log_probs: Tensor,
    nbest: list[Hypothesis],
    *,
    ctc_weight: float,
    sos: int,
    eos: int,
    blank: int = 0,
    keep_lm: bool = False,
) -> list[Hypothesis]:
    """Rescore one utterance's CTC n-best; returns the hypotheses best first.

    memory: (S, D); ctc_log_probs: (S, V). Token frames of the CTC search are kept.
    """
    hyps = [h for h in nbest if h.score > float("-inf")]
    if not hyps:
        return nbest
    seqs = [h.tokens for h in hyps]
    ctc = ctc_sequence_scores(ctc_log_probs, seqs, blank)
    att = attention_scores(decoder, memory, seqs, sos=sos, eos=eos).cpu()
    total = ctc_weight * ctc + (1.0 - ctc_weight) * att
    if keep_lm:
        total = total + torch.tensor([h.lm_score or 0.0 for h in hyps], dtype=total.dtype)
    out = [
        Hypothesis(h.tokens, float(s), h.frames, float(c), float(a), h.lm_score)
        for h, s, c, a in zip(hyps, total, ctc, att)
    ]
    out.sort(key=lambda h: h.score, reverse=True)
    return out
