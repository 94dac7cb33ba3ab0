"""Tokenizers: special ids, round trips, determinism, quiet training, serialisation, CLI."""

from __future__ import annotations

import random

import pytest

from moe_asr.cli import main
from moe_asr.config import TokenizerConfig
from moe_asr.data.tokenizer import (
    SOS_EOS,
    SPACE,
    Tokenizer,
    TokenizerError,
    read_transcripts,
    train_tokenizer,
)

WORDS = "the quick brown fox jumps over a lazy dog while seven cats sleep near home".split()


def _texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(n)]


@pytest.fixture(scope="module")
def trained() -> dict[str, Tokenizer]:
    texts = _texts()
    return {
        "char": train_tokenizer(texts, TokenizerConfig(type="char")),
        "bpe": train_tokenizer(texts, TokenizerConfig(type="bpe", vocab_size=60)),
        "unigram": train_tokenizer(texts, TokenizerConfig(type="unigram", vocab_size=40)),
    }


@pytest.mark.parametrize("kind", ["char", "bpe", "unigram"])
def test_special_ids_and_round_trip(trained, kind):
    tok = trained[kind]
    assert tok.tokens[0] == "<blank>" and tok.tokens[1] == "<unk>"
    assert tok.tokens[-1] == SOS_EOS and tok.sos_eos_id == tok.vocab_size - 1
    assert len(tok.tokens) == tok.vocab_size == len(set(tok.tokens))
    for text in _texts(20, seed=1):
        ids = tok.encode(text)
        assert ids and all(2 <= i < tok.sos_eos_id for i in ids)  # no specials, no unk
        assert tok.decode(ids) == text
        # blank and sos/eos anywhere are ignored by decode
        assert tok.decode([0, tok.sos_eos_id, *ids, 0, tok.sos_eos_id]) == text
    assert tok.encode("   ") == []
    assert tok.decode(tok.encode("  the   dog ")) == "the dog"


def test_requested_vocab_size_and_soft_limit(trained):
    assert trained["bpe"].vocab_size == 60 and trained["unigram"].vocab_size == 40
    big = train_tokenizer(_texts(50), TokenizerConfig(type="unigram", vocab_size=5000))
    assert 10 < big.vocab_size < 5000  # the text supports fewer pieces: no crash


def test_char_tokenizer_space_and_unknown(trained):
    tok = trained["char"]
    assert SPACE in tok.tokens and " " not in tok.tokens
    chars = sorted(set("".join(WORDS)))
    assert tok.tokens[2:-1] == sorted([*chars, SPACE])
    ids = tok.encode("a dog")
    assert [tok.tokens[i] for i in ids] == ["a", SPACE, "d", "o", "g"]
    unk = tok.encode("a zoo!")
    assert unk[-1] == tok.unk_id and tok.decode(unk).endswith("⁇")
    assert trained["bpe"].encode("dog ∑")[-1] == 1  # unseen character -> unk in sentencepiece too


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_training_is_deterministic_and_quiet(kind, capfd):
    cfg = TokenizerConfig(type=kind, vocab_size=40)
    a = train_tokenizer(_texts(), cfg)
    b = train_tokenizer(_texts(), cfg)
    assert a.to_bytes() == b.to_bytes()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_load_and_bytes(trained, tmp_path, kind):
    tok = trained[kind]
    tok.save(tmp_path / kind)
    assert (tmp_path / kind / "tokens.txt").read_text().splitlines()[0] == "<blank> 0"
    assert (tmp_path / kind / "tokenizer.model").exists() == (kind != "char")
    for back in (Tokenizer.load(tmp_path / kind), Tokenizer.from_bytes(tok.to_bytes())):
        assert back.tokens == tok.tokens and back.kind == tok.kind
        text = "seven lazy cats"
        assert back.encode(text) == tok.encode(text)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(TokenizerError, match="unknown; choose one of char, bpe, unigram"):
        train_tokenizer(["a"], TokenizerConfig(type="wordpiece"))
    with pytest.raises(TokenizerError, match="no non-empty transcript"):
        train_tokenizer(["", "  "], TokenizerConfig(type="char"))
    with pytest.raises(TokenizerError, match="nothing.*cannot read tokenizer"):
        Tokenizer.load(tmp_path / "nothing")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "tokenizer.json").write_text("[1, 2]")
    with pytest.raises(TokenizerError, match="not a tokenizer file"):
        Tokenizer.load(tmp_path / "t")
    with pytest.raises(TokenizerError, match="not a serialised"):
        Tokenizer.from_bytes(b"\xff\x00")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        train_tokenizer(["ab"], TokenizerConfig(type="char")).decode([99])


def test_cli_train_tokenizer(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    texts = _texts(100)
    (data / "text").write_text("".join(f"u{i:03d} {t}\n" for i, t in enumerate(texts)))
    assert read_transcripts(data) == texts
    out = tmp_path / "tok"
    args = ["train-tokenizer", "--data", str(data / "text"), "--type", "bpe", "--vocab-size", "40"]
    assert main([*args, "--out", str(out)]) == 0
    tok = Tokenizer.load(out)
    assert tok.kind == "bpe" and tok.vocab_size == 40
    assert "40 ids" in capsys.readouterr().out
    assert main([*args, "--out", str(out)]) == 1  # not replaced silently
    assert "--overwrite" in capsys.readouterr().err
    assert main(["train-tokenizer", "--data", str(data), "--out", str(out), "--overwrite"]) == 0
    assert Tokenizer.load(out).kind == "char"
    assert (
        main(["train-tokenizer", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "t2")])
        == 1
    )
    assert "no such text file" in capsys.readouterr().err
