"""Attention beam search with joint CTC prefix scoring (Watanabe et al. 2017), one pass.

Each step extends every live hypothesis ``g`` by candidate tokens ``c`` and scores

    score(g + c) = score(g) + (1 - ctc_weight) * log p_att(c | g, X)
                            + ctc_weight * (psi(g + c) - psi(g))

where ``psi`` is the CTC prefix probability (the probability that a CTC path's
label sequence starts with the prefix); for ``<eos>`` ``psi`` is the probability of
the whole sequence. Prefix probabilities never grow as a prefix grows, so search
stops exactly once the best finished hypothesis beats every live one.

``CtcPrefixScorer`` computes ``psi`` for all (hypothesis, candidate) pairs at once:
the recursion over time is a loop of tensor ops over ``(N, K)``, in the manner of
ESPnet's ``CTCPrefixScoreTH``. Candidates are the top ``pre_beam`` attention tokens, or
the whole vocabulary when ``ctc_weight == 1`` (then the attention decoder is not run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from moe_asr.decode.ctc import Hypothesis

__all__ = ["CtcPrefixScorer", "CtcPrefixState", "joint_beam_search"]

_NEG = -1.0e10

# (memory (N, S, D), memory_lens (N,), ys (N, l)) -> next-token log-probs (N, V)
StepFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass
class CtcPrefixState:
    """Forward variables of N prefixes: r (T, 2, N) [non-blank, blank], psi (N,), last (N,)."""

    r: Tensor
    psi: Tensor
    last: Tensor  # last token of each prefix, -1 for the empty prefix
    length: Tensor  # prefix lengths (N,)

    def select(self, index: Tensor) -> CtcPrefixState:
        return CtcPrefixState(
            self.r[:, :, index], self.psi[index], self.last[index], self.length[index]
        )


class CtcPrefixScorer:
    """CTC prefix scores of one utterance. log_probs: (T, V), frames beyond T excluded."""

    def __init__(self, log_probs: Tensor, blank: int = 0, eos: int = -1) -> None:
        self.x = log_probs.float()  # (T, V)
        self.T, self.V = self.x.shape
        self.blank = blank
        self.eos = eos if eos >= 0 else self.V - 1

    def initial(self) -> CtcPrefixState:
        """State of the empty prefix (one hypothesis)."""
        r = self.x.new_full((self.T, 2, 1), _NEG)
        r[:, 1, 0] = torch.cumsum(self.x[:, self.blank], 0)
        zero = torch.zeros(1, dtype=torch.long, device=self.x.device)
        return CtcPrefixState(r, self.x.new_zeros(1), zero - 1, zero)

    def score(self, state: CtcPrefixState, cand: Tensor) -> tuple[Tensor, Tensor]:
        """Prefix scores of every extension.

        state: N prefixes; cand: (N, K) token ids -> (psi (N, K), r (T, 2, N, K)).
        ``psi`` of the eos candidate is the full-sequence log-probability of the prefix.
        """
        T = self.T
        n, k = cand.shape
        xc = self.x[:, cand]  # (T, N, K)
        r_prev = state.r  # (T, 2, N)
        r_sum = torch.logaddexp(r_prev[:, 0], r_prev[:, 1])  # (T, N)
        # phi: probability of the prefix ending at t-1 such that c may follow at t
        phi = r_sum[:, :, None].expand(T, n, k).clone()
        same = cand == state.last[:, None]  # (N, K): repeating c needs a blank between
        phi = torch.where(same[None], r_prev[:, 1, :, None].expand(T, n, k), phi)
        r = self.x.new_full((T, 2, n, k), _NEG)
        empty = (state.length == 0)[:, None].expand(n, k)
        r[0, 0] = torch.where(empty, xc[0], torch.full_like(xc[0], _NEG))
        # a prefix of length l needs at least l frames: start the recursion there
        start = max(1, int(state.length.min()))
        log_psi = r[0, 0].clone()
        if start > 1:
            log_psi.fill_(_NEG)
        xb = self.x[:, self.blank]
        for t in range(start, T):
            r[t, 0] = torch.logaddexp(r[t - 1, 0], phi[t - 1]) + xc[t]
            r[t, 1] = torch.logaddexp(r[t - 1, 0], r[t - 1, 1]) + xb[t]
        if T > start:
            log_psi = torch.logaddexp(
                log_psi, torch.logsumexp(phi[start - 1 : T - 1] + xc[start:T], dim=0)
            )
        is_eos = cand == self.eos
        log_psi = torch.where(is_eos, r_sum[-1][:, None].expand(n, k), log_psi)
        return log_psi, r

    def advance(
        self, state: CtcPrefixState, cand: Tensor, psi: Tensor, r: Tensor, hyp: Tensor, col: Tensor
    ) -> CtcPrefixState:
        """State of the chosen extensions: hypothesis ``hyp[j]`` extended by ``cand[hyp[j], col[j]]``."""
        return CtcPrefixState(
            r[:, :, hyp, col], psi[hyp, col], cand[hyp, col], state.length[hyp] + 1
        )


@torch.no_grad()
def joint_beam_search(
    ctc_log_probs: Tensor,
    memory: Tensor | None,
    step: StepFn | None,
    *,
    beam: int = 10,
    ctc_weight: float = 0.3,
    sos: int,
    eos: int,
    blank: int = 0,
    nbest: int = 1,
    pre_beam: int | None = None,
    max_len: int | None = None,
) -> list[Hypothesis]:
    """Beam search for one utterance.

    ctc_log_probs: (T, V); memory: (T, D) encoder output (unused when ctc_weight == 1);
    step: the attention decoder's step function. Returns the ``nbest`` best finished
    hypotheses, best first, scores as defined in the module docstring.
    """
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
    use_att = ctc_weight < 1.0
    if use_att and (memory is None or step is None):
        raise ValueError("attention scoring needs the encoder memory and a decoder step")
    use_ctc = ctc_weight > 0.0
    T, V = ctc_log_probs.shape
    device = ctc_log_probs.device
    max_len = T if max_len is None else max_len
    k_pre = V if not use_att else min(V, pre_beam or int(1.5 * beam) + 1)
    scorer = CtcPrefixScorer(ctc_log_probs, blank, eos) if use_ctc else None
    state = scorer.initial() if scorer is not None else None
    ys = torch.full((1, 1), sos, dtype=torch.long, device=device)  # (N, l) with <sos>
    scores = torch.zeros(1, device=device)  # (N,)
    att_tot = torch.zeros(1, device=device)
    finished: list[Hypothesis] = []
    # tokens a hypothesis may never emit: blank and sos (= eos, handled as eos)
    banned = torch.zeros(V, dtype=torch.bool, device=device)
    banned[blank] = True
    for i in range(max_len + 1):
        n = ys.shape[0]
        if use_att:
            mem = memory[None].expand(n, -1, -1)
            att = step(mem, torch.full((n,), memory.shape[0], device=device), ys).float()
        else:
            att = torch.zeros(n, V, device=device)
        att = att.masked_fill(banned, _NEG)
        if i == max_len:  # only <eos> is allowed at the length limit
            att = torch.full_like(att, _NEG)
            att[:, eos] = 0.0
        if use_att:
            cand = att.topk(k_pre, dim=-1).indices  # (N, K)
        else:
            cand = torch.arange(V, device=device)[None].expand(n, V)
        cand_att = att.gather(1, cand)
        total = scores[:, None] + (1.0 - ctc_weight) * cand_att
        if scorer is not None:
            psi, r = scorer.score(state, cand)
            total = total + ctc_weight * (psi - state.psi[:, None])
        total = total.masked_fill(cand_att <= _NEG / 2, _NEG)  # banned tokens
        flat = total.flatten()
        top = flat.topk(min(beam, flat.numel())).indices
        hyp, col = top // cand.shape[1], top % cand.shape[1]
        tok = cand[hyp, col]
        new_scores = total[hyp, col]
        new_att = att_tot[hyp] + cand_att[hyp, col]
        keep = []
        for j in range(len(top)):
            if new_scores[j] <= _NEG / 2:
                continue
            if int(tok[j]) == eos:
                seq = ys[hyp[j], 1:].tolist()
                ctc_s = float(psi[hyp[j], col[j]]) if scorer is not None else None
                finished.append(Hypothesis(seq, float(new_scores[j]), [], ctc_s, float(new_att[j])))
            else:
                keep.append(j)
        done = sorted((h.score for h in finished), reverse=True)
        if not keep or (len(done) >= nbest and done[nbest - 1] >= float(new_scores[keep].max())):
            break
        idx = torch.tensor(keep, device=device)
        ys = torch.cat([ys[hyp[idx]], tok[idx, None]], dim=1)
        scores, att_tot = new_scores[idx], new_att[idx]
        if scorer is not None:
            state = scorer.advance(state, cand, psi, r, hyp[idx], col[idx])
    finished.sort(key=lambda h: h.score, reverse=True)
    return finished[:nbest] or [Hypothesis([], float("-inf"))]
