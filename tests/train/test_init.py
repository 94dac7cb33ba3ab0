"""Init from a model: dense -> MoE upcycling keeps the function (top-k >= 2), MoE -> MoE
loads everything, mismatches are skipped and reported, packages and checkpoints both
work, token/label-indexed layers are not loaded across vocabularies, bad files are refused."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from moe_asr.config import (
    Config,
    GuidanceConfig,
    ModelConfig,
    MoEConfig,
    dump_config,
)
from moe_asr.data.labels import LabelVocab
from moe_asr.data.tokenizer import Tokenizer
from moe_asr.model import build_model
from moe_asr.nn.moe import FeedForward, MoEFeedForward
from moe_asr.package import save_package
from moe_asr.train.checkpoint import atomic_save
from moe_asr.train.init import InitError, init_from
from tests.tiny_config import tiny_model_config

F_IN = 16
TOK = Tokenizer("char", ["<blank>", "<unk>", "a", "b", "c", "▁", "<sos/eos>"])
OTHER_TOK = Tokenizer("char", ["<blank>", "<unk>", "a", "b", "d", "▁", "<sos/eos>"])


def _cfg(ffn: str = "moe", **moe_kw) -> ModelConfig:
    dec_ff = moe_kw.pop("dec_ff", 32)
    moe = MoEConfig(**{"num_experts": 3, "top_k": 2, **moe_kw})
    return tiny_model_config(ffn=ffn, moe=moe, input_dim=F_IN, dec_ff=dec_ff)


def _model(cfg: ModelConfig, seed: int, vocab: LabelVocab | None = None):
    torch.manual_seed(seed)
    model = build_model(cfg, TOK.vocab_size, vocab).eval()
    model.set_cmvn(torch.randn(F_IN), torch.rand(F_IN) + 0.5)
    return model


def _package(tmp_path, cfg: ModelConfig, model, tok=TOK, vocab=None, name="init.pt"):
    return save_package(
        tmp_path / name,
        config=Config(model=cfg),
        model_state=model.state_dict(),
        tokenizer_bytes=tok.to_bytes(),
        label_vocab=vocab,
    )


def _feats(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 40, F_IN, generator=g), torch.tensor([40, 29])


def _ctc(model, feats, lens):
    """(N, V) CTC log-probs of the real frames (MoE feed-forwards leave padding at zero)."""
    with torch.no_grad():
        enc = model.encode(feats, lens)
        mask = torch.arange(enc.out.shape[1])[None] < enc.lens[:, None]
        return model.ctc_log_probs(enc)[mask]


def test_dense_to_moe_top2_upcycling_keeps_the_function(tmp_path):
    dense_cfg = _cfg("dense")
    dense = _model(dense_cfg, seed=0)
    path = _package(tmp_path, dense_cfg, dense)
    moe = _model(_cfg(top_k=2), seed=5)  # other weights and CMVN everywhere
    fresh_router = moe.encoder.layers[0].ff1.router.weight.clone()
    report = init_from(moe, path, tokenizer=TOK)

    feats, lens = _feats()
    torch.testing.assert_close(_ctc(moe, feats, lens), _ctc(dense, feats, lens), atol=1e-5, rtol=0)
    # 2 layers x 2 halves x 3 experts x (w1, b1, w2, b2)
    assert len(report.upcycled) == 48
    assert (
        report.upcycled["encoder.layers.1.ff2.experts.2.w2.bias"] == "encoder.layers.1.ff2.w2.bias"
    )
    assert sorted(report.new) == [
        f"encoder.layers.{i}.{h}.router.weight" for i in (0, 1) for h in ("ff1", "ff2")
    ]
    assert "cmvn_mean" in report.loaded and "ctc_head.weight" in report.loaded
    assert report.skipped == [] and report.unused == []
    assert torch.equal(moe.encoder.layers[0].ff1.router.weight, fresh_router)  # routers fresh
    assert report.kind == "package"


def test_dense_to_moe_top1_scales_each_frame_by_its_router_probability(tmp_path):
    """top-1 keeps the router probability as the weight (Switch): not function-preserving."""
    dense_cfg = _cfg("dense")
    dense = _model(dense_cfg, seed=0)
    moe = _model(_cfg(top_k=1), seed=5)
    init_from(moe, _package(tmp_path, dense_cfg, dense), tokenizer=TOK)
    ffn: FeedForward = dense.encoder.layers[0].ff1
    moe_ffn: MoEFeedForward = moe.encoder.layers[0].ff1
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        y, stats = moe_ffn(x, torch.ones(2, 7, dtype=torch.bool))
        expected = ffn(x) * stats.topk_weight  # (B, T, D) * (B, T, 1)
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-5)
    assert float(stats.topk_weight.max()) < 0.99  # so the whole model differs from dense
    feats, lens = _feats()
    assert not torch.allclose(_ctc(moe, feats, lens), _ctc(dense, feats, lens), atol=1e-3)


def test_upcycling_noise_is_relative_and_seeded(tmp_path):
    dense_cfg = _cfg("dense")
    path = _package(tmp_path, dense_cfg, _model(dense_cfg, seed=0))
    a, b = _model(_cfg(), seed=5), _model(_cfg(), seed=6)
    report = init_from(
        a, path, tokenizer=TOK, noise=0.01, generator=torch.Generator().manual_seed(3)
    )
    init_from(b, path, tokenizer=TOK, noise=0.01, generator=torch.Generator().manual_seed(3))
    src = torch.load(path, weights_only=True)["model_state"]["encoder.layers.0.ff1.w1.weight"]
    experts = a.encoder.layers[0].ff1.experts
    deltas = [e.w1.weight.detach() - src for e in experts]
    for d in deltas:
        assert 0.005 < float(d.std() / src.std()) < 0.02
    assert not torch.allclose(deltas[0], deltas[1])  # independent noise per expert
    sa, sb = a.state_dict(), b.state_dict()
    for name in report.upcycled:  # same generator seed, same copies (DDP ranks agree)
        assert torch.equal(sa[name], sb[name]), name


def test_moe_to_moe_loads_everything(tmp_path):
    vocab = LabelVocab({"accent": ["unk", "a", "b"]})
    cfg = _cfg(guidance=GuidanceConfig(labels=["accent"], embed=True))
    src = _model(cfg, seed=0, vocab=vocab)
    dst = _model(cfg, seed=5, vocab=vocab)
    report = init_from(dst, _package(tmp_path, cfg, src, vocab=vocab), tokenizer=TOK)
    assert report.new == [] and report.skipped == [] and report.upcycled == {}
    assert report.unused == [] and report.notes == []
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k

    # another accent vocabulary: its embedding is not loaded, the rest is
    other = LabelVocab({"accent": ["unk", "a", "c"]})
    dst2 = _model(cfg, seed=5, vocab=other)
    before = dst2.guidance.embed["accent"].weight.clone()
    r2 = init_from(dst2, tmp_path / "init.pt", tokenizer=TOK)
    assert [s.name for s in r2.skipped] == ["guidance.embed.accent.weight"]
    assert torch.equal(dst2.guidance.embed["accent"].weight, before)
    assert "accent" in " ".join(r2.notes)


def test_shape_mismatches_are_skipped_and_reported_with_both_shapes(tmp_path):
    src_cfg = _cfg(num_experts=2, dec_ff=24)
    src = _model(src_cfg, seed=0)
    path = _package(tmp_path, src_cfg, src)
    dst = _model(_cfg(num_experts=3), seed=5)
    report = init_from(dst, path, tokenizer=TOK)
    skipped = {s.name: s for s in report.skipped}
    router = skipped["encoder.layers.0.ff1.router.weight"]
    assert (router.model_shape, router.init_shape, router.reason) == (
        [3, 16],
        [2, 16],
        "shape mismatch",
    )
    dec = skipped["decoder.layers.0.ffn.w1.weight"]
    assert (dec.model_shape, dec.init_shape) == ([32, 16], [24, 16])
    assert "encoder.layers.0.ff1.experts.2.w1.weight" in report.new  # no third expert in init
    assert "encoder.layers.0.ff1.experts.1.w1.weight" in report.loaded
    assert torch.equal(
        dst.encoder.layers[0].ff1.experts[1].w1.weight,
        src.encoder.layers[0].ff1.experts[1].w1.weight,
    )
    out = report.save(tmp_path / "init.json")
    data = json.loads(out.read_text())
    assert {
        "name": "decoder.layers.0.ffn.w1.weight",
        "reason": "shape mismatch",
        "model_shape": [32, 16],
        "init_shape": [24, 16],
    } in data["skipped"]
    assert len(report.skipped) == 4 + 3  # 4 routers; decoder w1 weight/bias, w2 weight
    assert "7 skipped" in report.summary()


def test_training_checkpoint_and_tokenizer_rules(tmp_path):
    dense_cfg = _cfg("dense")
    dense = _model(dense_cfg, seed=0)
    exp = tmp_path / "exp"
    ckpt = exp / "checkpoints" / "last.pt"
    atomic_save(
        {
            "model": dense.state_dict(),
            "config_yaml": dump_config(Config(model=dense_cfg)),
            "state": {"step": 3},
        },
        ckpt,
    )
    # no tokenizer in the exp dir: the token layers cannot be trusted
    moe = _model(_cfg(), seed=5)
    head = moe.ctc_head.weight.clone()
    report = init_from(moe, ckpt, tokenizer=TOK)
    assert report.kind == "checkpoint"
    assert {s.name for s in report.skipped} == {
        "ctc_head.weight",
        "ctc_head.bias",
        "decoder.embed.weight",
        "decoder.out.weight",
        "decoder.out.bias",
    }
    assert torch.equal(moe.ctc_head.weight, head) and "unknown" in report.notes[0]
    assert len(report.upcycled) == 48
    # with the exp dir's tokenizer (the one a trainer writes) it all loads
    TOK.save(exp / "tokenizer")
    (exp / "label_vocab.json").write_text("{}")
    moe = _model(_cfg(top_k=2), seed=5)
    report = init_from(moe, ckpt, tokenizer=TOK)
    assert report.skipped == [] and "ctc_head.weight" in report.loaded
    feats, lens = _feats()
    torch.testing.assert_close(_ctc(moe, feats, lens), _ctc(dense, feats, lens), atol=1e-5, rtol=0)
    # a package with another tokenizer (same size): token layers skipped, the rest loaded
    path = _package(tmp_path, dense_cfg, dense, tok=OTHER_TOK)
    moe = _model(_cfg(), seed=5)
    report = init_from(moe, path, tokenizer=TOK)
    assert {s.name for s in report.skipped} == {
        "ctc_head.weight",
        "ctc_head.bias",
        "decoder.embed.weight",
        "decoder.out.weight",
        "decoder.out.bias",
    }
    assert (
        "another tokenizer" in report.notes[0] and "decoder.layers.0.ffn.w1.weight" in report.loaded
    )


def test_bad_init_files_give_one_line_errors(tmp_path):
    model = _model(_cfg(), seed=0)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    raw = tmp_path / "raw.pt"
    torch.save(model.state_dict(), raw)  # a bare state dict: not a package or checkpoint
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "other/1", "weights": {}}, foreign)
    for path, words in [
        (tmp_path / "missing.pt", "does not exist"),
        (text, "not a moe_asr model package or checkpoint"),
        (raw, "not a moe_asr model package or training checkpoint"),
        (foreign, "format 'other/1'"),
    ]:
        with pytest.raises(InitError) as e:
            init_from(model, path, tokenizer=TOK)
        msg = str(e.value)
        assert words in msg and "\n" not in msg and "EXP/model.pt" in msg, msg
    with pytest.raises(InitError, match="noise"):
        init_from(model, raw, tokenizer=TOK, noise=-1.0)


def test_dense_init_of_a_guided_moe_leaves_guidance_new_without_notes(tmp_path):
    dense_cfg = _cfg("dense")
    path = _package(tmp_path, dense_cfg, _model(dense_cfg, seed=0))
    vocab = LabelVocab({"accent": ["unk", "a", "b"]})
    guided = _model(_cfg(guidance=GuidanceConfig(labels=["accent"], embed=True)), 5, vocab)
    report = init_from(guided, path, tokenizer=TOK)
    assert "guidance.embed.accent.weight" in report.new
    assert report.notes == [] and report.skipped == []


def test_init_across_centred_and_causal_convolutions_is_noted(tmp_path):
    dense = _cfg("dense")
    streaming = dataclasses.replace(
        dense, streaming=dataclasses.replace(dense.streaming, enabled=True)
    )
    centred_pkg = _package(tmp_path, dense, _model(dense, 0), name="centred.pt")
    causal_pkg = _package(tmp_path, streaming, _model(streaming, 0), name="causal.pt")
    to_causal = init_from(_model(streaming, 1), centred_pkg, tokenizer=TOK)
    to_centred = init_from(_model(dense, 1), causal_pkg, tokenizer=TOK)
    same = init_from(_model(streaming, 1), causal_pkg, tokenizer=TOK)
    assert any("init model's are centred, this model's causal" in n for n in to_causal.notes)
    assert any("init model's are causal, this model's centred" in n for n in to_centred.notes)
    assert not any("convolutions" in n for n in same.notes)
    assert "depthwise convolutions" in to_causal.summary()
    assert not to_causal.skipped  # same shapes: still loaded, only noted
    # a chunk-mode convolution keeps the centred kernel: a non-streaming model is a warm start
    chunk_conv = dataclasses.replace(
        dense, streaming=dataclasses.replace(dense.streaming, enabled=True, conv="chunk")
    )
    to_chunk = init_from(_model(chunk_conv, 1), centred_pkg, tokenizer=TOK)
    assert not any("convolutions" in n for n in to_chunk.notes)
    assert not to_chunk.skipped and not to_chunk.new
