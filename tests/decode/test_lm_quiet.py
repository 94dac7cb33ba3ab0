"""KenLM's "Loading the LM will be faster if you build a binary file" banner and progress
bar, written to the process's stderr on every load of an ARPA file, are kept out of the
logs; other stderr output passes."""

from __future__ import annotations

import os

import torch

from moe_asr.decode.ctc import CtcBeamDecoder, _drop_kenlm_banner
from moe_asr.lm import train_ngram

PIECES = ["<blank>", "<unk>", "▁", "a", "b", "c", "<sos/eos>"]


def test_word_lm_loads_without_the_kenlm_banner(tmp_path, capfd):
    from torchaudio.models.decoder import ctc_decoder

    arpa = train_ngram(["ab c", "c ab", "ab ab"], 2).write_arpa(tmp_path / "lm.arpa")
    tokens = ["<blank>", "<unk>", "|", "a", "b", "c", "<sos/eos>"]
    try:  # as it comes (it fails after loading the LM: no blank given, no matter)
        ctc_decoder(lexicon=None, tokens=tokens, lm=str(arpa), blank_token="<blank>")
    except (RuntimeError, ValueError):
        pass
    banner = capfd.readouterr().err
    assert "Loading the LM will be faster" in banner  # KenLM does print it
    dec = CtcBeamDecoder(PIECES, beam=4, lm_path=arpa, lm_unit="word", spell=_spell)
    err = capfd.readouterr().err
    assert "Loading the LM" not in err and "****" not in err and "--100" not in err
    lp = torch.full((1, 6, len(PIECES)), -9.0)
    for t, k in enumerate([3, 4, 0, 2, 5, 0]):  # "ab c"
        lp[0, t, k] = 0.0
    assert dec(lp.log_softmax(-1), torch.tensor([6]))[0][0].tokens == [3, 4, 2, 5]


def test_other_native_stderr_output_passes(capfd):
    with _drop_kenlm_banner():
        os.write(2, b"Reading x.arpa\n****\nreal problem: disk full\n")
    err = capfd.readouterr().err
    assert "real problem: disk full" in err and "Reading" not in err and "****" not in err


def _spell(word: str) -> list[int]:
    return [PIECES.index(c) for c in word]
