"""An exported model is usable: `transcribe` and `decode` run the `.onnx` (onnxruntime) in
the CTC modes, with and without a word LM, and give the texts the PyTorch package gives on
the same inputs; the attention modes and --accent are refused with a message."""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from moe_asr.cli import main
from moe_asr.decode.onnx import OnnxAcousticModel, load_model
from moe_asr.lm import train_ngram
from tests.decode_model import SR, TEXTS, train_tiny_package, write_datadir_of
from tests.tone_corpus import tone_wave


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    model = train_tiny_package(root / "exp")
    assert main(["export", "--model", str(model), "--format", "onnx"]) == 0
    audio = root / "audio"
    audio.mkdir()
    for i, t in enumerate(TEXTS):
        sf.write(audio / f"{i}.wav", tone_wave(t, seed=10 + i), SR)
    lm = train_ngram(TEXTS, 2).write_arpa(root / "2gram.arpa")
    data = write_datadir_of(root, TEXTS)
    return {"root": root, "pt": model, "onnx": model.with_name("model.onnx"), "audio": audio,
            "lm": lm, "data": data}  # fmt: skip


def _texts(capsys, *args) -> dict[str, str]:
    assert main(["transcribe", *args, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return {r["path"]: r["text"] for r in rows}


@pytest.mark.parametrize(
    "mode, lm", [("ctc_greedy", False), ("ctc_prefix_beam", False), ("ctc_prefix_beam", True)]
)
def test_transcribe_onnx_equals_pytorch(setup, capsys, mode, lm):
    extra = ["--mode", mode, *(["--lm", str(setup["lm"])] if lm else [])]
    ref = _texts(capsys, str(setup["pt"]), str(setup["audio"]), *extra)
    got = _texts(capsys, str(setup["onnx"]), str(setup["audio"]), *extra)
    assert got == ref
    assert sum(bool(t) for t in ref.values()) >= 3  # the model says something to compare


def test_decode_onnx_writes_the_same_hypotheses(setup, capsys):
    outs = {}
    for name in ("pt", "onnx"):
        out = setup["root"] / f"decode_{name}"
        args = ["decode", "--model", str(setup[name]), "--data", str(setup["data"])]
        assert main([*args, "--out", str(out), "--mode", "ctc_prefix_beam", "--no-progress"]) == 0
        outs[name] = (out / "hyp.txt").read_text()
    assert outs["onnx"] == outs["pt"] and outs["pt"].strip()
    capsys.readouterr()


def test_onnx_refuses_what_it_cannot_run_and_falls_back_by_default(setup, capsys):
    pkg = load_model(setup["onnx"])
    assert isinstance(pkg.model, OnnxAcousticModel) and pkg.label_vocab is None
    f = str(setup["audio"] / "0.wav")
    assert main(["transcribe", str(setup["onnx"]), f, "--mode", "attention_rescoring"]) == 1
    assert "encoder + CTC head only" in capsys.readouterr().err
    assert main(["transcribe", str(setup["onnx"]), f, "--accent", "x"]) == 1
    assert "accent" in capsys.readouterr().err
    # no --mode: the package's decode mode if it is a CTC one, else ctc_prefix_beam
    assert main(["transcribe", str(setup["onnx"]), f]) == 0
    sidecar = setup["onnx"].with_name("model.onnx.json")
    meta = json.loads(sidecar.read_text())
    old = setup["root"] / "old.onnx"
    old.write_bytes(setup["onnx"].read_bytes())
    meta.pop("tokenizer")
    old.with_name("old.onnx.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["transcribe", str(old), f]) == 1
    assert "export the model again" in capsys.readouterr().err
