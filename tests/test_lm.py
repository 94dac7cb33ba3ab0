"""Word n-gram LM: normalised probabilities, a valid ARPA, and lexicon-constrained decoding."""

import math

import pytest
import torch

from moe_asr.cli import main
from moe_asr.decode.ctc import CtcBeamDecoder, ctc_greedy
from moe_asr.lm import EOS, UNK, LmError, arpa_vocabulary, train_ngram

TEXT = ["the cat sat", "the cat ran", "a dog sat", "the dog ran fast", "a cat sat down"]


@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_history_gives_a_distribution(order):
    lm = train_ngram(TEXT, order)
    words = [*lm.vocabulary, EOS, UNK]
    for history in [(), ("the",), ("<s>", "the"), ("cat", "sat"), ("never", "seen")]:
        total = sum(10 ** lm.logprob(w, history) for w in words)
        assert total == pytest.approx(1.0, abs=1e-9), history


def test_kneser_ney_prefers_seen_continuations_and_writes_arpa(tmp_path):
    lm = train_ngram(TEXT, 3)
    assert lm.logprob("sat", ("the", "cat")) > lm.logprob("dog", ("the", "cat"))
    # "sat" follows 3 contexts, "fast" one: continuation counts rank them for a new history
    assert lm.logprob("sat", ("new",)) > lm.logprob("fast", ("new",))
    path = lm.write_arpa(tmp_path / "lm.arpa")
    text = path.read_text()
    assert "\\data\\" in text and "ngram 3=" in text and text.rstrip().endswith("\\end\\")
    assert sorted(arpa_vocabulary(path)) == lm.vocabulary
    with pytest.raises(LmError, match="empty"):
        train_ngram(["", "  "], 2)


PIECES = ["<blank>", "<unk>", "a", "b", "c", "d", "e", "f", "▁", "<sos/eos>"]


def _emissions(frames: list[dict[str, float]]) -> torch.Tensor:
    """Log-probs (1, T, V) with the given probabilities per frame, rest spread evenly."""
    out = []
    for probs in frames:
        rest = (1.0 - sum(probs.values())) / (len(PIECES) - len(probs))
        row = [probs.get(p, rest) for p in PIECES]
        out.append([math.log(x) for x in row])
    return torch.tensor([out])


def _spell(word: str) -> list[int]:
    return [PIECES.index(c) for c in word]


def test_word_lm_restricts_output_to_known_words(tmp_path):
    arpa = tmp_path / "lm.arpa"
    train_ngram(["bad cafe", "cafe bad", "bad"], 2).write_arpa(arpa)
    # greedy reads "bac" (not a word): the last letter is a close call between c and d
    lp = _emissions([{"b": 0.9}, {"<blank>": 0.9}, {"a": 0.9}, {"c": 0.5, "d": 0.45}])
    lens = torch.tensor([lp.shape[1]])
    greedy = ctc_greedy(lp, lens)[0][0].tokens
    assert [PIECES[i] for i in greedy] == ["b", "a", "c"]
    dec = CtcBeamDecoder(PIECES, beam=8, lm_path=arpa, lm_weight=0.5, lm_unit="word", spell=_spell)
    best = dec(lp, lens)[0][0].tokens
    assert "".join(PIECES[i] for i in best).strip("▁") == "bad"
    with pytest.raises(Exception, match="spell"):
        CtcBeamDecoder(PIECES, lm_path=arpa, lm_unit="word")


def test_train_lm_cli(tmp_path, capsys):
    text = tmp_path / "text"
    text.write_text("".join(f"u{i} {s}\n" for i, s in enumerate(TEXT)))
    out = tmp_path / "lm" / "lm.arpa"
    assert main(["train-lm", "--data", str(text), "--order", "2", "--out", str(out)]) == 0
    assert "2-grams" in capsys.readouterr().out and out.exists()
    assert main(["train-lm", "--data", str(text), "--out", str(out)]) == 1  # no overwrite


def test_word_lm_finds_words_the_model_ran_together(tmp_path):
    """A char model that drops the separator between two words still gets both words, and
    the text is rebuilt with the separator between them."""
    arpa = tmp_path / "lm.arpa"
    train_ngram(["bad cafe", "cafe bad", "bad"], 2).write_arpa(arpa)
    letters = "badcafe"  # no separator frame between "bad" and "cafe"
    lp = _emissions([{c: 0.9} for c in letters])
    dec = CtcBeamDecoder(PIECES, beam=8, lm_path=arpa, lm_weight=1.0, lm_unit="word", spell=_spell)
    hyp = dec(lp, torch.tensor([len(letters)]))[0][0]
    assert "".join(PIECES[i] for i in hyp.tokens) == "bad▁cafe"
    assert hyp.frames == sorted(hyp.frames) and len(hyp.frames) == len(hyp.tokens)
