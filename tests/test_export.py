"""`moe-asr export`: the ONNX / TorchScript encoder + CTC head agrees with PyTorch on new
batch and time sizes; int8 export is smaller and still decodes the memorised texts."""

from __future__ import annotations

import json

import pytest
import torch

from moe_asr.cli import main
from moe_asr.data.features import compute_fbank
from moe_asr.decode.ctc import ctc_greedy
from moe_asr.decode.search import pad_features
from moe_asr.export import _EncoderCtc, _run_onnx, export_model
from moe_asr.package import load_package
from tests.decode_model import TEXTS, train_tiny_package
from tests.tone_corpus import tone_wave


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model = train_tiny_package(root / "exp")
    pkg = load_package(model)
    feats = [
        compute_fbank(tone_wave(t, seed=i), pkg.config.data.features) for i, t in enumerate(TEXTS)
    ]
    x, lens = pad_features(feats)  # batch 4, a time size the export never saw
    with torch.no_grad():
        ref, ref_lens = _EncoderCtc(pkg.model)(x, lens)
    return {"model": model, "pkg": pkg, "x": x, "lens": lens, "ref": ref, "ref_lens": ref_lens}


def _texts(pkg, log_probs, lens):
    return [pkg.tokenizer.decode(h[0].tokens) for h in ctc_greedy(log_probs, lens)]


def _assert_close(got, ref, lens, tol):
    for i, n in enumerate(lens.tolist()):
        assert (got[i, :n] - ref[i, :n]).abs().max() < tol


def test_onnx_matches_pytorch_on_new_shapes(setup, capsys):
    assert main(["export", "--model", str(setup["model"]), "--format", "onnx"]) == 0
    out = setup["model"].with_name("model.onnx")
    assert out.is_file() and str(out) in capsys.readouterr().out
    lp, lens = _run_onnx(out, setup["x"], setup["lens"])
    assert lens.tolist() == setup["ref_lens"].tolist()
    _assert_close(lp, setup["ref"], lens, 1e-3)
    assert _texts(setup["pkg"], lp, lens) == TEXTS
    meta = json.loads(out.with_name("model.onnx.json").read_text())
    assert meta["tokens"] == setup["pkg"].tokenizer.tokens and meta["frame_seconds"] == 0.04
    # an existing export is not overwritten silently
    assert main(["export", "--model", str(setup["model"]), "--format", "onnx"]) == 1
    assert "exists" in capsys.readouterr().err


def test_torchscript_matches_pytorch_on_new_shapes(setup, tmp_path):
    res = export_model(setup["pkg"], tmp_path / "m.ts", format="torchscript")
    assert res.max_abs_diff < 1e-4 and res.argmax_agreement == 1.0
    lp, lens = torch.jit.load(res.path)(setup["x"], setup["lens"])
    _assert_close(lp, setup["ref"], setup["ref_lens"], 1e-4)
    single = torch.jit.load(res.path)(setup["x"][2:3, :100], torch.tensor([100]))
    with torch.no_grad():
        want = _EncoderCtc(setup["pkg"].model)(setup["x"][2:3, :100], torch.tensor([100]))
    _assert_close(single[0], want[0], want[1], 1e-4)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_int8_is_smaller_and_decodes_the_same_texts(setup, tmp_path, fmt):
    fp32 = export_model(setup["pkg"], tmp_path / f"m.{fmt}", format=fmt)
    int8 = export_model(setup["pkg"], tmp_path / f"m.int8.{fmt}", format=fmt, int8=True)
    assert int8.size_bytes < fp32.size_bytes
    assert fp32.max_abs_diff < 1e-3 and fp32.argmax_agreement == 1.0
    assert int8.max_abs_diff > 0 and int8.argmax_agreement > 0.8
    if fmt == "onnx":
        lp, lens = _run_onnx(int8.path, setup["x"], setup["lens"])
    else:
        lp, lens = torch.jit.load(int8.path)(setup["x"], setup["lens"])
    assert _texts(setup["pkg"], lp, lens) == TEXTS


def test_value_router_model_exports_with_its_estimate_driven_routing(tmp_path):
    """Label-free, a value-router model's routers read the accent estimate's mix of
    per-value corrections: the export must compute it too (non-zero corrections here)."""
    from moe_asr.config import Config, DataConfig, FeatureConfig, GuidanceConfig, MoEConfig
    from moe_asr.data.labels import LabelVocab
    from tests.tiny_config import tiny_model_config, untrained_package

    guidance = GuidanceConfig(
        labels=["accent"], utterance_estimate=True, estimate_layer=0, value_routers=True
    )
    moe = MoEConfig(num_experts=4, top_k=1, guidance=guidance)
    cfg = Config(
        model=tiny_model_config(ffn="moe", moe=moe),
        data=DataConfig(features=FeatureConfig(num_mel_bins=40)),
    )

    def corrections(model) -> None:
        with torch.no_grad():
            for rows in model.guidance.value_routers["accent"].values():
                rows.normal_(std=3.0)

    torch.manual_seed(0)
    vocab = LabelVocab({"accent": ["unk", "x", "y"]})
    path = untrained_package(tmp_path / "vr.pt", cfg, TEXTS, vocab, edit=corrections)
    res = export_model(load_package(path), tmp_path / "vr.onnx")
    assert res.max_abs_diff < 1e-3 and res.argmax_agreement == 1.0


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_utterance_normalised_model_exports_its_per_utterance_statistics(tmp_path, fmt):
    """``model.input_norm: utterance`` computes statistics over each item's real frames:
    the export must too (export_model compares it with PyTorch on a padded batch)."""
    from moe_asr.config import Config, DataConfig, FeatureConfig
    from tests.tiny_config import tiny_model_config, untrained_package

    model_cfg = tiny_model_config(ffn="moe")
    model_cfg.input_norm = "utterance"
    cfg = Config(model=model_cfg, data=DataConfig(features=FeatureConfig(num_mel_bins=40)))

    def global_stats(model) -> None:  # so that the per-utterance step has work to do
        model.set_cmvn(torch.linspace(-3, 3, 40), torch.linspace(0.5, 2, 40))

    torch.manual_seed(0)
    path = untrained_package(tmp_path / "un.pt", cfg, TEXTS, edit=global_stats)
    suffix = {"onnx": "onnx", "torchscript": "ts"}[fmt]
    res = export_model(load_package(path), tmp_path / f"un.{suffix}", format=fmt)
    assert res.max_abs_diff < 1e-3 and res.argmax_agreement == 1.0


def test_an_fp32_export_that_differs_from_pytorch_is_refused_and_not_written(
    setup, tmp_path, monkeypatch
):
    import moe_asr.export as export

    monkeypatch.setattr(export, "_compare", lambda got, ref, lens: (0.5, 0.9))
    with pytest.raises(
        export.ExportError, match="differs from PyTorch by 0.5.*nothing was written"
    ):
        export_model(setup["pkg"], tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_block_routed_model_exports_its_blocks_for_any_length(tmp_path, fmt):
    """``model.moe.route_block``: each block's frames share the choice made on their mean
    logits; the export must recompute the blocks for a batch and time size it never saw."""
    from moe_asr.config import Config, DataConfig, FeatureConfig, MoEConfig
    from tests.tiny_config import tiny_model_config, untrained_package

    moe = MoEConfig(num_experts=4, top_k=1, route_block=3)
    cfg = Config(
        model=tiny_model_config(ffn="moe", moe=moe),
        data=DataConfig(features=FeatureConfig(num_mel_bins=40)),
    )
    torch.manual_seed(0)
    pkg = load_package(untrained_package(tmp_path / "blk.pt", cfg, TEXTS))
    suffix = {"onnx": "onnx", "torchscript": "ts"}[fmt]
    res = export_model(pkg, tmp_path / f"blk.{suffix}", format=fmt)
    assert res.max_abs_diff < 1e-3 and res.argmax_agreement == 1.0
    x, lens = torch.randn(3, 157, 40), torch.tensor([157, 121, 64])
    with torch.no_grad():
        ref, ref_lens = _EncoderCtc(pkg.model)(x, lens)
    if fmt == "onnx":
        got, got_lens = _run_onnx(res.path, x, lens)
    else:
        got, got_lens = torch.jit.load(res.path)(x, lens)
    assert got_lens.tolist() == ref_lens.tolist()
    _assert_close(got, ref, ref_lens, 1e-3)
