"""Search algorithms on hand-made log-probabilities and toy decoders (no trained model):
greedy == prefix beam at beam 1, CTC prefix scores == brute-force enumeration, joint beam
search finds the best sequence, rescoring reorders by the decoder, KenLM changes the result."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from moe_asr.decode.ctc import CtcBeamDecoder, DecodeError, Hypothesis, ctc_greedy
from moe_asr.decode.joint import CtcPrefixScorer, joint_beam_search
from moe_asr.decode.rescore import attention_rescore, ctc_sequence_scores

torch.set_flush_denormal(True)

# ids: 0 blank, 1 unk, 2 "a", 3 "b", 4 "▁", 5 <sos/eos>
PIECES = ["<blank>", "<unk>", "a", "b", "▁", "<sos/eos>"]


def _peaky(path: list[int], vocab: int = 6, p: float = 0.9) -> torch.Tensor:
    """(T, V) log-probs whose best path is ``path``."""
    x = torch.full((len(path), vocab), (1 - p) / (vocab - 1))
    x[torch.arange(len(path)), torch.tensor(path)] = p
    return x.log()


def _collapse(path) -> tuple[int, ...]:
    out, prev = [], None
    for c in path:
        if c != prev and c != 0:
            out.append(c)
        prev = c
    return tuple(out)


def test_greedy_collapses_repeats_and_blanks_and_reports_first_frames():
    lp = _peaky([2, 2, 0, 2, 3, 3, 0, 4, 3])[None]
    (hyps,) = ctc_greedy(lp, torch.tensor([9]))
    assert hyps[0].tokens == [2, 2, 3, 4, 3]
    assert hyps[0].frames == [0, 3, 4, 7, 8]
    assert hyps[0].score == pytest.approx(9 * math.log(0.9), abs=1e-4)


def test_greedy_respects_lengths_in_a_padded_batch():
    lp = torch.stack([_peaky([2, 0, 3, 0]), _peaky([3, 3, 2, 2])])
    out = ctc_greedy(lp, torch.tensor([4, 2]))
    assert out[0][0].tokens == [2, 3] and out[1][0].tokens == [3]


@pytest.mark.parametrize("seed", range(5))
def test_prefix_beam_with_beam_one_equals_greedy(seed):
    g = torch.Generator().manual_seed(seed)
    lp = (torch.randn(3, 30, 6, generator=g) * 3).log_softmax(-1)
    lens = torch.tensor([30, 22, 9])
    beam = CtcBeamDecoder(PIECES, beam=1, nbest=1)(lp, lens)
    greedy = ctc_greedy(lp, lens)
    for b in range(3):
        # the beam search strips separators at either end; so does decoding text
        tokens = greedy[b][0].tokens
        frames = greedy[b][0].frames
        while tokens and tokens[0] == 4:
            tokens, frames = tokens[1:], frames[1:]
        while tokens and tokens[-1] == 4:
            tokens, frames = tokens[:-1], frames[:-1]
        assert beam[b][0].tokens == tokens
        assert beam[b][0].frames == frames
        assert beam[b][0].score == pytest.approx(greedy[b][0].score, abs=1e-3)


def test_prefix_beam_nbest_is_sorted_and_distinct_for_bpe_pieces():
    pieces = ["<blank>", "<unk>", "▁a", "b", "▁b", "<sos/eos>"]  # no standalone separator
    g = torch.Generator().manual_seed(1)
    lp = torch.randn(1, 12, 6, generator=g).log_softmax(-1)
    (nbest,) = CtcBeamDecoder(pieces, beam=8, nbest=4)(lp, torch.tensor([12]))
    assert len(nbest) == 4
    scores = [h.score for h in nbest]
    assert scores == sorted(scores, reverse=True)
    assert len({tuple(h.tokens) for h in nbest}) == 4
    assert all(0 < t < 6 for h in nbest for t in h.tokens)  # no blank, no added separator


def test_kenlm_weight_changes_the_decision(tmp_path):
    # acoustics slightly prefer "a", the unigram LM strongly prefers "b"
    lp = torch.tensor([[[0.1, 0.0, 0.5, 0.4, 0.0, 0.0]]]).clamp_min(1e-6).log()
    arpa = tmp_path / "lm.arpa"
    arpa.write_text(
        "\\data\\\nngram 1=6\nngram 2=1\n\n\\1-grams:\n"
        "-1.0\t<s>\t0\n-1.0\t</s>\n-1.0\t<unk>\n-3.0\ta\n-0.1\tb\n-1.0\t|\n\n"
        "\\2-grams:\n-0.1\t<s> b\n\n\\end\\\n"
    )
    plain = CtcBeamDecoder(PIECES, beam=4)(lp, torch.tensor([1]))[0][0]
    with_lm = CtcBeamDecoder(PIECES, beam=4, lm_path=arpa, lm_weight=1.0)(lp, torch.tensor([1]))
    assert plain.tokens == [2]
    assert with_lm[0][0].tokens == [3]
    with pytest.raises(DecodeError, match="not found"):
        CtcBeamDecoder(PIECES, lm_path=tmp_path / "missing.arpa")


def _brute_force(x: torch.Tensor):
    """Prefix and full-sequence probabilities by enumerating every CTC path."""
    T, V = x.shape
    full: dict[tuple, float] = {}
    pref: dict[tuple, float] = {}
    for path in itertools.product(range(V), repeat=T):
        p = math.exp(sum(float(x[t, c]) for t, c in enumerate(path)))
        s = _collapse(path)
        full[s] = full.get(s, 0.0) + p
        for n in range(len(s) + 1):
            pref[s[:n]] = pref.get(s[:n], 0.0) + p
    return full, pref


def test_ctc_prefix_scores_equal_brute_force():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, generator=g).log_softmax(-1)  # blank 0, tokens 1 2, eos 3
    full, pref = _brute_force(x)
    scorer = CtcPrefixScorer(x, blank=0, eos=3)
    state = scorer.initial()
    cand = torch.tensor([[1, 2, 3]])
    psi, r = scorer.score(state, cand)
    assert psi.exp()[0].tolist() == pytest.approx([pref[(1,)], pref[(2,)], full[()]], rel=1e-4)
    state2 = scorer.advance(state, cand, psi, r, torch.tensor([0, 0]), torch.tensor([0, 1]))
    psi2, _ = scorer.score(state2, torch.tensor([[1, 2, 3], [1, 2, 3]]))
    want = [
        [pref[(1, 1)], pref[(1, 2)], full[(1,)]],
        [pref[(2, 1)], pref[(2, 2)], full[(2,)]],
    ]
    assert psi2.exp().tolist()[0] == pytest.approx(want[0], rel=1e-4)
    assert psi2.exp().tolist()[1] == pytest.approx(want[1], rel=1e-4)


def test_joint_search_with_ctc_weight_one_finds_the_most_probable_sequence():
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(5, 4, generator=g) * 2).log_softmax(-1)
    x[:, 3] = -30.0  # eos is never emitted by CTC
    x = x.log_softmax(-1)
    full, _ = _brute_force(x)
    best = max(full, key=full.get)
    hyps = joint_beam_search(x, None, None, beam=6, ctc_weight=1.0, sos=3, eos=3, nbest=3)
    assert tuple(hyps[0].tokens) == best
    assert hyps[0].score == pytest.approx(math.log(full[best]), abs=1e-3)
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


def _toy_decoder(target: list[int], vocab: int, eos: int):
    """A decoder that spells ``target`` then <eos>: step and full-sequence versions."""

    def next_logp(prefix: list[int]) -> torch.Tensor:
        pos = len(prefix) - 1  # prefix starts with <sos>
        want = target[pos] if pos < len(target) else eos
        logits = torch.full((vocab,), -4.0)
        logits[want] = 4.0
        return logits.log_softmax(-1)

    def step(memory, memory_lens, ys):
        return torch.stack([next_logp(row.tolist()) for row in ys])

    def full(memory, memory_lens, ys_in):
        return torch.stack(
            [
                torch.stack([next_logp(row[: i + 1].tolist()) for i in range(ys_in.shape[1])])
                for row in ys_in
            ]
        )

    return step, full


def test_joint_search_with_attention_only_follows_the_decoder():
    step, _ = _toy_decoder([3, 2, 3], vocab=6, eos=5)
    ctc = _peaky([2, 0, 2, 0, 2, 0])  # CTC says "a a a"
    memory = torch.zeros(6, 4)
    att = joint_beam_search(ctc, memory, step, beam=3, ctc_weight=0.0, sos=5, eos=5)
    assert att[0].tokens == [3, 2, 3]
    ctc_only = joint_beam_search(ctc, memory, step, beam=3, ctc_weight=1.0, sos=5, eos=5)
    assert ctc_only[0].tokens == [2, 2, 2]


def test_attention_rescoring_prefers_the_decoders_choice_and_keeps_ctc_scores():
    _, full = _toy_decoder([3, 3], vocab=6, eos=5)
    ctc = _peaky([2, 0, 2, 0, 3, 0, 3])
    nbest = [Hypothesis([2, 2, 3, 3], -1.0, [0, 2, 4, 6]), Hypothesis([3, 3], -5.0, [4, 6])]
    memory = torch.zeros(7, 4)
    out = attention_rescore(full, memory, ctc, nbest, ctc_weight=0.1, sos=5, eos=5)
    assert out[0].tokens == [3, 3]
    exact = ctc_sequence_scores(ctc, [[2, 2, 3, 3], [3, 3]])
    assert {tuple(h.tokens): h.ctc_score for h in out} == pytest.approx(
        {(2, 2, 3, 3): float(exact[0]), (3, 3): float(exact[1])}
    )
    kept = attention_rescore(full, memory, ctc, nbest, ctc_weight=1.0, sos=5, eos=5)
    assert kept[0].tokens == [2, 2, 3, 3] and kept[0].frames == [0, 2, 4, 6]
