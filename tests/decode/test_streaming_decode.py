"""Streaming decoding: the incremental CTC prefix beam search equals the one-shot search,
partials are the search over the audio so far, rescoring keeps the LM score; the
streaming recognizer equals offline decoding with the chunk mask, is independent of the
piece sizes it is fed, keeps its caches bounded over 60 s, and the CLI streams."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from moe_asr.cli import main
from moe_asr.config import DecodeConfig
from moe_asr.decode.ctc import CtcBeamDecoder, Hypothesis
from moe_asr.decode.rescore import attention_rescore
from moe_asr.decode.search import Recognizer
from moe_asr.decode.streaming import StreamingRecognizer
from moe_asr.errors import UserError
from moe_asr.lm import train_ngram
from moe_asr.package import load_package
from tests.decode_model import TEXTS, train_tiny_package, write_datadir_of
from tests.tone_corpus import tone_wave

torch.set_flush_denormal(True)

PIECES = ["<blank>", "<unk>", "a", "b", "c", "d", "e", "f", "▁", "<sos/eos>"]
CHUNK = 4


def _spell(word: str) -> list[int]:
    return [PIECES.index(c) for c in word]


def _splits(total: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    cuts = sorted(rng.choice(np.arange(1, total), size=5, replace=False).tolist())
    return [0, *cuts, total]


def _log_probs(seed: int, frames: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(frames, len(PIECES), generator=g) * 3).log_softmax(-1)


@pytest.fixture(scope="module")
def arpa(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "lm.arpa"
    train_ngram(["bad cafe", "cafe bad", "bad", "face fed"], 2).write_arpa(path)
    return path


@pytest.mark.parametrize("lm", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_incremental_prefix_beam_search_equals_one_shot(seed, lm, arpa):
    opts = {"beam": 6, "nbest": 3}
    if lm:
        opts.update(lm_path=arpa, lm_weight=0.8, lm_unit="word", spell=_spell)
    lp = _log_probs(seed)
    offline = CtcBeamDecoder(PIECES, **opts)(lp[None], torch.tensor([lp.shape[0]]))[0]
    dec = CtcBeamDecoder(PIECES, **opts)
    dec.begin()
    bounds = _splits(lp.shape[0], seed)
    for a, b in zip(bounds, bounds[1:]):
        dec.step(lp[a:b])
    online = dec.end()
    assert [h.tokens for h in online] == [h.tokens for h in offline]
    assert [h.frames for h in online] == [h.frames for h in offline]
    for h_on, h_off in zip(online, offline):
        assert h_on.score == pytest.approx(h_off.score, abs=1e-4)
        assert (h_on.lm_score != 0.0) == lm


def test_partials_are_the_search_over_the_frames_so_far_and_end_in_the_final():
    lp = _log_probs(7, frames=36)
    dec = CtcBeamDecoder(PIECES, beam=6)
    dec.begin()
    partials = []
    for a in range(0, 36, 6):
        dec.step(lp[a : a + 6])
        part = dec.partial()
        prefix = CtcBeamDecoder(PIECES, beam=6)(lp[None, : a + 6], torch.tensor([a + 6]))
        assert part.tokens == prefix[0][0].tokens
        partials.append(part.tokens)
    final = dec.end()[0]
    assert final.tokens == partials[-1]
    assert len({tuple(p) for p in partials}) > 2  # the partials do change along the way


def test_word_lm_partials_hold_only_lm_words(arpa):
    letters = "bad▁cafe▁bad"
    lp = torch.full((len(letters), len(PIECES)), math.log(0.1 / (len(PIECES) - 1)))
    for t, c in enumerate(letters):
        lp[t, PIECES.index(c)] = math.log(0.9)
    dec = CtcBeamDecoder(PIECES, beam=8, lm_path=arpa, lm_weight=1.0, lm_unit="word", spell=_spell)
    dec.begin()
    seen = []
    for t in range(len(letters)):
        dec.step(lp[t : t + 1])
        text = "".join(PIECES[i] for i in dec.partial().tokens)
        seen.append(text)
        assert all(w in ("bad", "cafe") for w in text.split("▁") if w)
    assert "bad" in seen and "bad▁cafe" in seen  # complete words appear before the end
    assert "".join(PIECES[i] for i in dec.end()[0].tokens) == letters


def test_rescoring_keeps_the_lm_score_when_asked():
    memory = torch.zeros(3, 4)
    lp = torch.full((3, len(PIECES)), math.log(1.0 / len(PIECES)))
    hyps = [Hypothesis([2], -1.0, [0], lm_score=-10.0), Hypothesis([3], -2.0, [0], lm_score=0.0)]

    def decoder(mem, mem_lens, ys_in):  # prefers token 2 a little
        logits = torch.zeros(*ys_in.shape, len(PIECES))
        logits[..., 2] = 1.0
        return logits

    common = {"ctc_weight": 0.5, "sos": 9, "eos": 9}
    plain = attention_rescore(decoder, memory, lp, hyps, **common)
    kept = attention_rescore(decoder, memory, lp, hyps, **common, keep_lm=True)
    assert plain[0].tokens == [2] and kept[0].tokens == [3]
    by_tokens = {tuple(h.tokens): h for h in plain}
    assert kept[1].score == pytest.approx(by_tokens[(2,)].score - 10.0)


# ----------------------------------------------------------------------------- recognizer


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    guidance = {"labels": ["accent"], "embed": True, "label_dropout": 0.0}
    streaming = {"enabled": True, "min_chunk": 2, "max_chunk": 8, "left_chunks": 2}
    path = train_tiny_package(root / "exp", steps=60, guidance=guidance, streaming=streaming)
    return load_package(path)


@pytest.fixture(scope="module")
def chunkconv_package(tmp_path_factory):
    """Guided streaming model with the dynamic chunk convolution (centred kernel)."""
    root = tmp_path_factory.mktemp("stream_chunkconv")
    guidance = {"labels": ["accent"], "embed": True, "label_dropout": 0.0}
    streaming = {"enabled": True, "min_chunk": 2, "max_chunk": 8, "conv": "chunk"}
    path = train_tiny_package(root / "exp", steps=40, guidance=guidance, streaming=streaming)
    return load_package(path)


def _wave() -> np.ndarray:
    return np.concatenate([tone_wave(t, seed=i) for i, t in enumerate(TEXTS)])


def _cfg(mode: str) -> DecodeConfig:
    return DecodeConfig(mode=mode, beam=4, nbest=2, chunk_frames=CHUNK, left_chunks=2)


@pytest.mark.parametrize("mode", ["ctc_greedy", "ctc_prefix_beam", "attention_rescoring"])
def test_streaming_equals_offline_decoding_with_the_chunk_mask(package, mode):
    from moe_asr.data.features import compute_fbank

    wav = _wave()
    rec = StreamingRecognizer(package, _cfg(mode))
    rec.accept_waveform(wav)
    final = rec.finalize()
    feats = compute_fbank(wav, package.config.data.features)
    offline = Recognizer.from_package(package, _cfg(mode)).recognize([feats])[0]
    assert final.tokens == offline.tokens
    assert final.score == pytest.approx(offline.score, abs=1e-2)
    assert len(final.tokens) > 3
    ends = [w.end for w in final.words]
    assert ends == sorted(ends) and ends[-1] <= final.duration + 1e-6


def test_chunk_convolution_model_streams_as_it_decodes_offline(chunkconv_package):
    from moe_asr.data.features import compute_fbank

    wav = _wave()
    cfg = _cfg("attention_rescoring")
    rec = StreamingRecognizer(chunkconv_package, cfg)
    rng = np.random.default_rng(1)
    pos = 0
    while pos < len(wav):  # pieces that do not fall on chunk boundaries
        n = int(rng.integers(1, 4000))
        rec.accept_waveform(wav[pos : pos + n])
        pos += n
    final = rec.finalize()
    feats = compute_fbank(wav, chunkconv_package.config.data.features)
    offline = Recognizer.from_package(chunkconv_package, cfg).recognize([feats])[0]
    assert final.tokens == offline.tokens
    assert final.score == pytest.approx(offline.score, abs=1e-2)


def test_pieces_of_any_size_give_the_result_of_one_piece(package):
    wav = _wave()
    rec = StreamingRecognizer(package, _cfg("attention_rescoring"))
    rec.accept_waveform(wav)
    whole = rec.finalize()
    rng = np.random.default_rng(0)
    for _ in range(2):
        rec.reset()
        pos = 0
        while pos < len(wav):
            n = int(rng.integers(1, 4000))
            rec.accept_waveform(wav[pos : pos + n])
            pos += n
        got = rec.finalize()
        assert got.tokens == whole.tokens
        assert got.score == pytest.approx(whole.score, abs=1e-3)
        assert got.duration == pytest.approx(whole.duration)


def test_greedy_partials_grow_as_prefixes_and_end_in_the_final_text(package):
    wav = _wave()
    rec = StreamingRecognizer(package, _cfg("ctc_greedy"))
    partials = []
    for a in range(0, len(wav), rec.chunk_samples):
        partials.append(rec.accept_waveform(wav[a : a + rec.chunk_samples]))
    final = rec.finalize()
    times = [p.time for p in partials]
    assert times == sorted(times) and times[-1] > 0
    tokens = [p.tokens for p in partials] + [final.tokens]
    for before, after in zip(tokens, tokens[1:]):
        assert after[: len(before)] == before
    assert len({tuple(t) for t in tokens}) > 2


def test_sixty_seconds_stream_with_bounded_caches(package):
    rec = StreamingRecognizer(package, _cfg("ctc_prefix_beam"), left_chunks=2)
    wave = _wave()
    reps = int(math.ceil(60 * 16000 / len(wave)))
    wav = np.tile(wave, reps)[: 60 * 16000]
    shapes = []
    for a in range(0, len(wav), 16000):  # one-second pieces
        rec.accept_waveform(wav[a : a + 16000])
        shapes.append(rec.cache.shapes())
    final = rec.finalize()
    assert final.duration == pytest.approx(60.0)
    assert all(s == shapes[1] for s in shapes[1:])  # after 2 chunks of 4 frames: constant
    assert shapes[1][1][3] == 2 * CHUNK  # layer 0 keys/values: left_chunks * chunk frames
    assert rec.cache.offset == 60 * 100 // 4 - 2  # every encoder frame was produced


def test_non_streaming_model_and_unstreamable_mode_are_refused(package, tmp_path):
    from moe_asr.decode.ctc import DecodeError

    with pytest.raises(DecodeError, match="cannot stream"):
        StreamingRecognizer(package, DecodeConfig(mode="attention"))
    plain = load_package(train_tiny_package(tmp_path / "plain", steps=1))
    with pytest.raises(UserError, match="model.streaming.enabled"):
        StreamingRecognizer(plain, DecodeConfig())
    with pytest.raises(DecodeError, match="not trained for streaming"):
        Recognizer.from_package(plain, DecodeConfig(chunk_frames=4))


def test_cli_transcribe_streaming_json_and_decode_with_chunk_frames(package, tmp_path, capsys):
    from moe_asr.package import save_package

    model = save_package(
        tmp_path / "model.pt",
        config=package.config,
        model_state=package.model.state_dict(),
        tokenizer_bytes=package.tokenizer.to_bytes(),
        label_vocab=package.label_vocab,
    )
    data = write_datadir_of(tmp_path, TEXTS[:2])
    wav = next((tmp_path / "wav").glob("*.wav"))
    args = ["--chunk-frames", str(CHUNK), "--left-chunks", "2", "--mode", "ctc_prefix_beam"]
    assert main(["transcribe", str(model), str(wav), "--streaming", "--json", *args]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) > 3 and all("partial" in x and "time" in x for x in lines[:-1])
    final = lines[-1]
    assert final["path"] == str(wav) and "final_latency" in final and final["words"]
    out = tmp_path / "dec"
    assert (
        main(["decode", "--model", str(model), "--data", str(data), "--out", str(out)] + args) == 0
    )
    hyps = dict(line.split(" ", 1) for line in (out / "hyp.txt").read_text().splitlines())
    utt = wav.stem
    assert hyps[utt].strip() == final["text"]
