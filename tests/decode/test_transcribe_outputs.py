"""Transcription outputs: segments with times per window and pause, txt/json/srt/vtt/tsv
files per input, n-best alternatives, confidence without timestamps, arrays at any rate,
the Python API (`Transcriber.load`), `--model`, `--device`. The recognizer is a stub whose
CTC posteriors spell known words at known frames, so every time and text is exact."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from moe_asr.cli import main
from moe_asr.config import DecodeConfig, config_from_dict
from moe_asr.data.tokenizer import TokenizerConfig, train_tokenizer
from moe_asr.decode.formats import format_result
from moe_asr.decode.search import Recognition, Recognizer
from moe_asr.decode.transcribe import Transcriber
from moe_asr.model import build_model
from moe_asr.package import ModelPackage, save_package
from tests.decode_model import _CONFIG

SR = 16000
FRAME = 0.04  # encoder frame of the tiny config (subsampling 4 x 10 ms)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """An untrained tiny model (the stub recognizer replaces its outputs) and its file."""
    conf = copy.deepcopy(_CONFIG)
    conf["model"]["moe"]["guidance"] = {"labels": []}
    cfg = config_from_dict(conf)
    tok = train_tokenizer(["abc", "bad cab", "face"], TokenizerConfig(type="char"))
    torch.manual_seed(0)
    model = build_model(cfg.model, tok.vocab_size, None).eval()
    path = tmp_path_factory.mktemp("pkg") / "model.pt"
    save_package(
        path,
        config=cfg,
        model_state=model.state_dict(),
        tokenizer_bytes=tok.to_bytes(),
        label_vocab=None,
    )
    return ModelPackage(model, cfg, tok, None, {}), path


def _posteriors(tok, n_frames: int, spelled: dict[int, str]) -> torch.Tensor:
    """(n_frames, V) log-probs: blank everywhere except ``frame -> piece`` (p = 0.9)."""
    v = tok.vocab_size
    lp = torch.full((n_frames, v), 0.1 / (v - 1)).log()
    lp[:, 0] = np.log(0.9)
    for frame, piece in spelled.items():
        lp[frame] = np.log(0.1 / (v - 1))
        lp[frame, tok.tokens.index(piece)] = np.log(0.9)
    return lp


def _stub(tok, script, calls):
    """recognize(): window i gets script[i % len(script)] = ({frame: piece}, nbest)."""

    def recognize(self, feats, routing=None):
        out = []
        for f in feats:
            spelled, nbest = script[len(calls) % len(script)]
            calls.append(f.clone())
            n = max(1, (f.shape[0] - 3) // 4)
            frames = sorted(spelled)
            ids = [tok.tokens.index(spelled[k]) for k in frames]
            out.append(
                Recognition(
                    text=nbest[0][0],
                    tokens=ids,
                    score=nbest[0][1],
                    nbest=nbest,
                    hyps=[],
                    log_probs=_posteriors(tok, n, spelled),
                )
            )
        return out

    return recognize


# "abc" at frames 2-4, then a 1.2 s pause (30 frames), then "cab" at 35-37
_TWO_WORDS = (
    {2: "a", 3: "b", 4: "c", 20: "▁", 35: "c", 36: "a", 37: "b"},
    [("abc cab", -1.5), ("abc cap", -2.25)],
)


def test_segments_split_at_windows_and_pauses_and_every_format_is_exact(package, monkeypatch):
    pkg, _ = package
    calls: list = []
    monkeypatch.setattr(Recognizer, "recognize", _stub(pkg.tokenizer, [_TWO_WORDS], calls))
    # 4 s of noise with 20 ms of silence at 2.0 s: windows of <= 2.2 s are cut there
    wav = (0.1 * np.random.default_rng(0).standard_normal(4 * SR)).astype(np.float32)
    wav[31840:32160] = 0.0
    t = Transcriber(pkg, DecodeConfig(window_seconds=2.2), pause_seconds=1.0)
    r = t.transcribe(wav, sample_rate=SR)
    assert r.error is None and len(calls) == 2
    assert r.text == "abc cab abc cab"
    assert [w.word for w in r.words] == ["abc", "cab"] * 2
    # two windows, each split once at its 1.2 s pause between the words
    got = [(round(g.start, 3), round(g.end, 3), g.text) for g in r.segments]
    assert got == [
        (0.0, round(5 * FRAME, 3), "abc"),
        (round(35 * FRAME, 3), 2.0, "cab"),
        (2.0, round(2.0 + 5 * FRAME, 3), "abc"),
        (round(2.0 + 35 * FRAME, 3), 4.0, "cab"),
    ]
    assert r.alternatives == [("abc cab abc cab", -3.0), ("abc cap abc cap", -4.5)]
    assert format_result(r, "tsv").splitlines()[:3] == [
        "start\tend\ttext",
        "0\t200\tabc",
        "1400\t2000\tcab",
    ]
    srt = format_result(r, "srt")
    assert srt.startswith(
        "1\n00:00:00,000 --> 00:00:00,200\nabc\n\n2\n00:00:01,400 --> 00:00:02,000\ncab\n"
    )
    vtt = format_result(r, "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:00.200\nabc\n\n")
    assert vtt.count(" --> ") == 4
    d = json.loads(format_result(r, "json"))
    assert [s["text"] for s in d["segments"]] == ["abc", "cab", "abc", "cab"]
    assert d["alternatives"][1] == {"text": "abc cap abc cap", "score": -4.5}
    assert format_result(r, "txt") == "abc cab abc cab\n"
    # pause_seconds 0: one segment per window
    r = Transcriber(pkg, DecodeConfig(window_seconds=2.2), pause_seconds=0).transcribe(
        wav, sample_rate=SR
    )
    assert [(g.start, g.end, g.text) for g in r.segments] == [
        (0.0, 2.0, "abc cab"),
        (2.0, 4.0, "abc cab"),
    ]


def test_confidence_without_timestamps_and_arrays_at_any_rate(package, monkeypatch, tmp_path):
    pkg, _ = package
    calls: list = []
    monkeypatch.setattr(Recognizer, "recognize", _stub(pkg.tokenizer, [_TWO_WORDS], calls))
    rng = np.random.default_rng(0)
    wav8k = (0.1 * rng.standard_normal(8000 * 2)).astype(np.float32)
    path = tmp_path / "x8k.wav"
    sf.write(path, wav8k, 8000, subtype="FLOAT")
    t = Transcriber(pkg, DecodeConfig(), timestamps=False)
    from_file = t.transcribe(path)
    from_array = t.transcribe(wav8k, sample_rate=8000)
    stereo = t.transcribe(np.stack([wav8k, wav8k], 1), sample_rate=8000)
    assert from_file.error is None and from_array.error is None and stereo.error is None
    assert torch.allclose(calls[0], calls[1]) and torch.allclose(calls[1], calls[2])
    assert calls[0].shape[0] == pytest.approx(2.0 / 0.01, abs=3)  # resampled to 16 kHz
    # confidence: the mean token posterior of the alignment (0.9 by construction)
    assert from_file.confidence == pytest.approx(0.9, abs=1e-3)
    d = from_file.to_dict()
    assert d["words"] == [] and "words" not in d["segments"][0] and d["confidence"] == 0.9
    assert t.transcribe(wav8k).error == "<array>: transcribe(array): give sample_rate="


def test_cli_writes_one_file_per_input_and_format(package, monkeypatch, tmp_path, capsys):
    pkg, model = package
    calls: list = []
    monkeypatch.setattr(Recognizer, "recognize", _stub(pkg.tokenizer, [_TWO_WORDS], calls))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for p in (tmp_path / "a" / "talk.wav", tmp_path / "b" / "talk.flac"):
        sf.write(p, np.zeros(SR * 2, dtype=np.float32), SR)
    out = tmp_path / "out"
    args = ["transcribe", "--model", str(model), str(tmp_path / "a"), str(tmp_path / "b")]
    assert main([*args, "--output-dir", str(out), "-f", "all"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        f"{s}.{f}" for s in ("talk", "talk-2") for f in ("txt", "json", "srt", "vtt", "tsv")
    )
    assert (out / "talk.txt").read_text() == "abc cab\n"
    assert json.loads((out / "talk-2.json").read_text())["path"].endswith("talk.flac")
    capsys.readouterr()
    # stdout: txt is path<TAB>text, srt under a header per file; the model positional works too
    assert main(["transcribe", str(model), str(tmp_path / "a"), "-f", "srt"]) == 0
    assert capsys.readouterr().out.startswith(f"==> {tmp_path / 'a' / 'talk.wav'} <==\n1\n")
    assert main([*args, "-f", "srt,vtt"]) == 1
    assert "need --output-dir" in capsys.readouterr().err
    assert main([*args, "--json", "--nbest", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["text"] for a in rows[0]["alternatives"]] == ["abc cab", "abc cap"]


def test_python_api_and_device_give_the_models_own_output(package, tmp_path, capsys):
    """No stub: the CLI, `Transcriber.load` and `decode` agree with the model on one input."""
    pkg, model = package
    rng = np.random.default_rng(1)
    path = tmp_path / "noise.wav"
    sf.write(path, (0.1 * rng.standard_normal(SR)).astype(np.float32), SR)
    own = Transcriber(pkg, pkg.config.decode).transcribe(path)
    api = Transcriber.load(model, mode="ctc_greedy").transcribe(str(path))
    assert api.error is None and api.text == own.text and api.words == own.words
    assert main(["transcribe", str(model), str(path), "--json", "--device", "cpu"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["text"] == own.text
    with pytest.raises(ValueError, match="unknown decode option"):
        Transcriber.load(model, beams=3)
    if not torch.cuda.is_available():
        assert main(["transcribe", str(model), str(path), "--device", "cuda"]) == 1
        assert "CUDA is not available" in capsys.readouterr().err
    else:
        assert main(["transcribe", str(model), str(path), "--json", "--device", "cuda"]) == 0
        assert json.loads(capsys.readouterr().out)["text"] == own.text
