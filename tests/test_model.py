import pytest
import torch

from moe_asr.cli import main as cli_main
from moe_asr.config import (
    Config,
    ConfigError,
    DecoderConfig,
    GuidanceConfig,
    ModelConfig,
    MoEConfig,
    validate_config,
)
from moe_asr.data.labels import LabelVocab
from moe_asr.errors import UserError
from moe_asr.model import RoutingOptions, build_model, moe_layer_indices, parameter_summary
from moe_asr.nn.conformer import lengths_to_mask
from moe_asr.nn.guidance import known_label_loss, router_label_loss
from moe_asr.nn.moe import MoEFeedForward, RouterStats

F_IN, V = 16, 7  # tokens: 0 blank, 1 unk, 2..5 symbols, 6 sos/eos
VOCAB = LabelVocab({"accent": ["unk", "a", "b"]})


def _cfg(**moe_kw) -> ModelConfig:
    guidance = moe_kw.pop("guidance", GuidanceConfig())
    model_kw = {k: moe_kw.pop(k) for k in list(moe_kw) if k in ("ffn", "num_layers", "ctc_weight")}
    return ModelConfig(
        input_dim=F_IN,
        d_model=16,
        num_heads=2,
        d_ff=32,
        conv_kernel=3,
        dropout=0.0,
        subsampling_channels=4,
        max_rel_pos=8,
        decoder=DecoderConfig(num_layers=1, num_heads=2, d_ff=32, dropout=0.0),
        moe=MoEConfig(guidance=guidance, **{"num_experts": 3, "top_k": 2, **moe_kw}),
        **{"num_layers": 2, **model_kw},
    )


def _batch(lens, token_lens, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(len(lens), max(lens), F_IN, generator=g)
    tokens = torch.randint(2, 6, (len(lens), max(token_lens)), generator=g)
    tl = torch.tensor(token_lens)
    tokens[torch.arange(tokens.shape[1])[None] >= tl[:, None]] = -1
    return feats, torch.tensor(lens), tokens, tl


def test_full_model_padding_invariance():
    torch.manual_seed(0)
    model = build_model(_cfg(num_shared_experts=1), V, None).eval()
    model.set_cmvn(torch.randn(F_IN), torch.rand(F_IN) + 0.5)
    feats, lens, tokens, tl = _batch([50, 33, 21], [5, 3, 2])
    feats[1, 33:] = 9.0
    with torch.no_grad():
        out = model(feats, lens, tokens, tl)
        enc = model.encode(feats, lens)
        lp = model.ctc_log_probs(enc)
        ctc_sum = 0.0
        for b in range(3):
            n, m = int(lens[b]), int(tl[b])
            one = model(feats[b : b + 1, :n], lens[b : b + 1], tokens[b : b + 1, :m], tl[b : b + 1])
            enc1 = model.encode(feats[b : b + 1, :n], lens[b : b + 1])
            t = int(enc1.lens[0])
            torch.testing.assert_close(enc.out[b, :t], enc1.out[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(lp[b, :t], model.ctc_log_probs(enc1)[0], atol=1e-5, rtol=0)
            ys = torch.cat([torch.tensor([V - 1]), tokens[b, :m]])[None]
            torch.testing.assert_close(
                model.decoder(enc.out[b : b + 1], enc.lens[b : b + 1], ys),
                model.decoder(enc1.out, enc1.lens, ys),
                atol=1e-5,
                rtol=1e-5,
            )
            ctc_sum += float(one.ctc) * m
    # ctc is a per-token mean: batch value = token-weighted mean of the single values
    assert float(out.ctc) == pytest.approx(ctc_sum / float(tl.sum()), rel=1e-5)


def test_utterance_input_norm_is_padding_invariant_and_removes_a_per_utterance_offset():
    torch.manual_seed(0)
    cfg = _cfg()
    cfg.input_norm = "utterance"
    model = build_model(cfg, V, None).eval()
    model.set_cmvn(torch.randn(F_IN), torch.rand(F_IN) + 0.5)
    feats, lens, _, _ = _batch([50, 33, 21], [5, 3, 2])
    feats[1, 33:] = 9.0  # padding values must not enter the utterance statistics
    # a per-utterance, per-dimension gain and offset (a channel, a stationary noise floor
    # in the log-mel domain) is exactly what per-utterance normalisation takes out
    g = torch.Generator().manual_seed(3)
    shifted = (
        feats * (torch.rand(3, 1, F_IN, generator=g) + 0.5)
        + torch.randn(3, 1, F_IN, generator=g) * 4
    )
    with torch.no_grad():
        enc = model.encode(feats, lens)
        enc_shifted = model.encode(shifted, lens)
        for b in range(3):
            n = int(lens[b])
            one = model.encode(feats[b : b + 1, :n], lens[b : b + 1])
            t = int(one.lens[0])
            torch.testing.assert_close(enc.out[b, :t], one.out[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(enc_shifted.out[b, :t], one.out[0], atol=1e-4, rtol=1e-4)
        # the global-only model sees the offset
        cfg_global = _cfg()
        plain = build_model(cfg_global, V, None).eval()
        plain.load_state_dict(model.state_dict())
        diff = (plain.encode(shifted, lens).out - plain.encode(feats, lens).out).abs().max()
        # a constant dimension (digital silence in a band) has zero variance: centred, not NaN
        flat = feats.clone()
        flat[:, :, 0] = 5.0
        assert bool(torch.isfinite(model.encode(flat, lens).out).all())
    assert float(diff) > 0.1


def test_utterance_input_norm_is_rejected_for_streaming_models():
    cfg = Config()
    cfg.model.input_norm = "utterance"
    cfg.model.streaming.enabled = True
    with pytest.raises(ConfigError, match="model.input_norm"):
        validate_config(cfg)


def test_loss_terms_and_gradients():
    torch.manual_seed(1)
    cfg = _cfg(importance_cv_weight=0.1, output_diversity_weight=0.1)
    model = build_model(cfg, V, None).train()
    out = model(*_batch([40, 30], [4, 3]))
    w = cfg.ctc_weight
    parts = out.moe_balance + out.z_loss + out.diversity + out.label_loss
    torch.testing.assert_close(out.loss, w * out.ctc + (1 - w) * out.att + parts)
    assert min(out.moe_balance.item(), out.z_loss.item(), out.diversity.item()) > 0
    assert float(out.label_loss) == 0.0 and out.label_logits == {}
    assert len(out.router_stats) == 4  # 2 layers x 2 macaron halves
    out.loss.backward()
    for layer in model.encoder.layers:
        assert layer.ff1.router.weight.grad.abs().sum() > 0


def test_one_expert_model_equals_dense_model():
    torch.manual_seed(2)
    dense = build_model(_cfg(ffn="dense"), V, None).eval()
    moe = build_model(_cfg(num_experts=1, top_k=1), V, None).eval()
    state = {}
    for k, v in dense.state_dict().items():
        for half in ("ff1", "ff2"):
            k = k.replace(f".{half}.w", f".{half}.experts.0.w")
        state[k] = v
    missing, unexpected = moe.load_state_dict(state, strict=False)
    assert all(k.endswith("router.weight") for k in missing) and not unexpected
    batch = _batch([30, 20], [3, 2])
    with torch.no_grad():
        a, b = dense(*batch), moe(*batch)
    torch.testing.assert_close(a.ctc, b.ctc, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.att, b.att, atol=1e-6, rtol=0)


def test_state_dict_round_trip():
    cfg = _cfg(
        guidance=GuidanceConfig(
            labels=["accent"], embed=True, utterance_estimate=True, estimate_layer=0
        )
    )
    m1 = build_model(cfg, V, VOCAB).eval()
    m1.set_cmvn(torch.full((F_IN,), 0.5), torch.full((F_IN,), 2.0))
    m2 = build_model(cfg, V, VOCAB).eval()
    m2.load_state_dict(m1.state_dict())
    feats, lens, _, _ = _batch([30, 25], [1, 1])
    with torch.no_grad():
        e1, e2 = m1.encode(feats, lens), m2.encode(feats, lens)
    torch.testing.assert_close(e1.out, e2.out)
    assert set(e1.label_logits) == {"accent"} and e1.label_logits["accent"].shape == (2, 3)


def _toy_batch(n, seed, audio_cue):
    """Utterances whose transcript is decided by the accent label (a -> 2, b -> 3)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(1, 3, (n,), generator=g)
    feats = torch.randn(n, 24, F_IN, generator=g)
    if audio_cue:  # the accent is audible: a shift on one half of the bins
        feats[labels == 1, :, : F_IN // 2] += 1.5
        feats[labels == 2, :, F_IN // 2 :] += 1.5
    tokens = (labels + 1)[:, None]
    return feats, torch.full((n,), 24), tokens, torch.ones(n, dtype=torch.long), labels


def _train(model, steps, audio_cue, lr=1e-2):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        feats, lens, tokens, tl, labels = _toy_batch(16, step, audio_cue)
        out = model(feats, lens, tokens, tl, labels={"accent": labels})
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return model.eval()


def _top1_agreement(stats, labels, layers):
    """Fraction of real frames whose top-1 expert is the label's group (2 experts: a->0, b->1)."""
    hits = total = 0
    for s in stats:
        if s.layer in layers:
            want = (labels - 1)[:, None].expand_as(s.mask)
            hits += int((s.topk_idx[..., 0] == want)[s.mask].sum())
            total += int(s.mask.sum())
    return hits / total


@pytest.fixture(scope="module", params=[True, False], ids=["hard_groups", "soft"])
def guided_model(request):
    """(a) label embedding + (b) router label loss, with or without (c) hard groups; the
    answer is carried only by the label (the audio is noise)."""
    cfg = _cfg(
        num_experts=2,
        top_k=1,
        ctc_weight=1.0,
        guidance=GuidanceConfig(
            labels=["accent"],
            embed=True,
            label_dropout=0.2,
            router_loss_weight=1.0,
            hard_groups=request.param,
        ),
    )
    return _train(build_model(cfg, V, VOCAB), steps=120, audio_cue=False)


def test_guided_router_follows_label_and_label_decides_answer(guided_model):
    feats, lens, tokens, tl, labels = _toy_batch(64, 10_000, audio_cue=False)
    with torch.no_grad():
        enc = guided_model.encode(feats, lens, RoutingOptions(mode="oracle"), {"accent": labels})
    # the router's own preference (clean logits, before the hard-group mask)
    for s in enc.router_stats:
        want = (labels - 1)[:, None].expand_as(s.mask)
        agree = (s.logits.argmax(-1) == want)[s.mask].float().mean()
        assert agree > 0.9, (s.layer, s.half, float(agree))
    pred = guided_model.ctc_log_probs(enc).argmax(-1)  # (B, T')
    answer = pred.max(-1).values  # the one non-blank symbol
    assert (answer == labels + 1).float().mean() > 0.9


def test_trained_model_runs_free_forced_and_masked(guided_model):
    feats, lens, _, _, labels = _toy_batch(32, 20_000, audio_cue=False)
    with torch.no_grad():
        free = guided_model.encode(feats, lens)
        assert free.out.shape[0] == 32 and torch.isfinite(free.out).all()
        for value, token in (("a", 2), ("b", 3)):
            forced = guided_model.encode(
                feats, lens, RoutingOptions(mode="forced", forced={"accent": value})
            )
            answer = guided_model.ctc_log_probs(forced).argmax(-1).max(-1).values
            assert (answer == token).float().mean() > 0.9, value
        masked = guided_model.encode(feats, lens, RoutingOptions(expert_mask={0: [1], 1: [0]}))
    for s in masked.router_stats:
        assert (s.topk_idx[s.mask] == (0 if s.layer == 0 else 1)).all()
    with pytest.raises(UserError, match="knows a, b"):
        guided_model.encode(feats, lens, RoutingOptions(mode="forced", forced={"accent": "zz"}))
    with pytest.raises(UserError, match="layer 5"):
        guided_model.encode(feats, lens, RoutingOptions(expert_mask={5: [0]}))
    with pytest.raises(UserError, match="fewer than top_k"):
        guided_model.encode(feats, lens, RoutingOptions(expert_mask={0: [0, 1]}))
    with pytest.raises(UserError, match="oracle"):
        guided_model.encode(feats, lens, RoutingOptions(mode="oracle"))


def test_layer_condition_carries_the_label_to_the_answer_without_router_guidance():
    """condition: layer, no router loss and no groups: the label reaches the transcript
    only through the embedding added to the layers' input frames (the audio is noise)."""
    cfg = _cfg(
        num_experts=2,
        top_k=1,
        ctc_weight=1.0,
        guidance=GuidanceConfig(
            labels=["accent"], embed=True, label_dropout=0.2, condition="layer"
        ),
    )
    model = _train(build_model(cfg, V, VOCAB), steps=120, audio_cue=False)
    feats, lens, _, _, _ = _toy_batch(32, 50_000, audio_cue=False)
    for value, token in (("a", 2), ("b", 3)):
        with torch.no_grad():
            enc = model.encode(feats, lens, model.forced_routing({"accent": value}))
        answer = model.ctc_log_probs(enc).argmax(-1).max(-1).values
        assert (answer == token).float().mean() > 0.9, value


def test_utterance_estimate_routes_label_free_by_audible_accent():
    cfg = _cfg(
        num_experts=2,
        top_k=1,
        ctc_weight=1.0,
        guidance=GuidanceConfig(
            labels=["accent"],
            embed=False,
            label_dropout=0.5,
            router_loss_weight=1.0,
            router_loss_layers=[1],
            hard_groups=True,
            utterance_estimate=True,
            estimate_layer=0,
            estimate_loss_weight=1.0,
        ),
    )
    model = _train(build_model(cfg, V, VOCAB), steps=120, audio_cue=True)
    feats, lens, _, _, labels = _toy_batch(64, 30_000, audio_cue=True)
    with torch.no_grad():
        enc = model.encode(feats, lens)  # label-free
    est = enc.label_logits["accent"].argmax(-1)
    assert (est == labels).float().mean() > 0.9
    assert _top1_agreement(enc.router_stats, labels, layers={1}) > 0.9
    # the estimate pathway drives the routing: forcing the accent overrides what is heard
    for value, label_id in (("a", 1), ("b", 2)):
        with torch.no_grad():
            forced = model.encode(
                feats, lens, RoutingOptions(mode="forced", forced={"accent": value})
            )
        assert _top1_agreement(forced.router_stats, torch.full_like(labels, label_id), {1}) > 0.9


def test_config_and_input_errors():
    with pytest.raises(ConfigError, match="label vocabulary"):
        build_model(_cfg(guidance=GuidanceConfig(labels=["accent"], embed=True)), V, None)
    with pytest.raises(ConfigError, match="num_experts >= values"):
        big = LabelVocab({"accent": ["unk", "a", "b", "c", "d"]})
        g = GuidanceConfig(labels=["accent"], router_loss_weight=1.0)
        build_model(_cfg(guidance=g), V, big)
    with pytest.raises(ConfigError, match="every_other"):
        build_model(_cfg(layers="first"), V, None)
    model = build_model(_cfg(), V, None)
    feats, lens, tokens, tl = _batch([30, 5], [2, 1])
    with pytest.raises(UserError, match=r"batch item\(s\) \[1\]"):
        model(feats, lens, tokens, tl)
    feats, lens, tokens, tl = _batch([30, 20], [2, 1])
    tokens[0, 0] = V
    with pytest.raises(UserError, match="vocab_size"):
        model(feats, lens, tokens, tl)


def test_moe_layer_indices():
    assert moe_layer_indices("all", 4) == [0, 1, 2, 3]
    assert moe_layer_indices("every_other", 6) == [1, 3, 5]
    assert moe_layer_indices("4, 0", 6) == [0, 4]
    with pytest.raises(ConfigError, match="outside"):
        moe_layer_indices("1,6", 6)
    model = build_model(_cfg(layers="1"), V, None)
    kinds = [isinstance(layer.ff1, MoEFeedForward) for layer in model.encoder.layers]
    assert kinds == [False, True]


def test_parameter_summary_counts_active_experts():
    model = build_model(_cfg(num_experts=4, top_k=1, num_shared_experts=1), V, None)
    rows = {r.component: r for r in parameter_summary(model)}
    total = sum(p.numel() for p in model.parameters())
    assert rows["total"].total == total
    expert = sum(p.numel() for p in model.encoder.layers[0].ff1.experts[0].parameters())
    n_moe = 4  # 2 layers x 2 halves
    assert rows["encoder.moe.experts"].total == n_moe * 4 * expert
    assert rows["encoder.moe.experts"].active == n_moe * 1 * expert
    assert rows["total"].active == total - n_moe * 3 * expert
    assert rows["encoder.moe.shared"].active == rows["encoder.moe.shared"].total > 0
    dense = build_model(_cfg(ffn="dense"), V, None)
    drows = {r.component: r for r in parameter_summary(dense)}
    assert drows["total"].active == drows["total"].total


def test_cli_info(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  moe:\n    num_experts: 4\n    top_k: 2\n")
    assert cli_main(["info", str(cfg), "--set", "model.num_layers=2", "--vocab-size", "50"]) == 0
    out = capsys.readouterr().out
    assert "encoder.moe.experts" in out and "total" in out and "active" in out
    assert cli_main(["info", str(cfg), "--set", "model.moe.top_k=9"]) == 1
    assert "top_k=9" in capsys.readouterr().err


def test_label_losses_closed_form():
    # 4 experts, 2 label values -> groups {0,1} and {2,3}; one utterance of label 2 (b),
    # one unk utterance that must be ignored, one padded frame
    logits = torch.zeros(2, 2, 4)
    logits[0, 0] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    logits[0, 1] = torch.tensor([9.0, 0.0, 0.0, 0.0])  # padded
    mask = torch.tensor([[True, False], [True, True]])
    idx = torch.zeros(2, 2, 1, dtype=torch.long)
    s = RouterStats(logits.softmax(-1), logits, idx, torch.ones(2, 2, 1), mask)
    target = torch.tensor([2, 0])
    # group scores: lse(0,0)=log 2, lse(1,1)=1+log 2 -> CE = log(1 + e^-1)
    expected = torch.log1p(torch.exp(torch.tensor(-1.0)))
    torch.testing.assert_close(router_label_loss(s, target, 3), expected)
    est = torch.tensor([[-1e4, 0.0, 0.0], [-1e4, 5.0, 0.0]])
    torch.testing.assert_close(known_label_loss(est, target), torch.log(torch.tensor(2.0)))


def test_ffn_experts_sets_the_experts_of_each_moe_feedforward():
    model = build_model(_cfg(ffn_experts=[3, 3, 2, 3]), V, None).eval()
    sizes = [m.num_experts for m in model.modules() if isinstance(m, MoEFeedForward)]
    assert sizes == [3, 3, 2, 3]
    assert [
        m.router.weight.shape[0] for m in model.modules() if isinstance(m, MoEFeedForward)
    ] == sizes
    feats, lens, _, _ = _batch([30, 20], [2, 2])
    with torch.no_grad():
        enc = model.encode(feats, lens, RoutingOptions(expert_mask={0: [2]}))
    assert int(enc.router_stats[0].topk_idx.max()) == int(enc.router_stats[1].topk_idx.max()) == 1
    with pytest.raises(UserError, match=r"not in 0\.\.1"):
        model.encode(feats, lens, RoutingOptions(expert_mask={1: [2]}))  # layer 1 ff1 has 2
    for bad in ([3, 2], [3, 2, 2, 1], [3, 2, 2, 4]):
        with pytest.raises(ConfigError, match="ffn_experts"):
            build_model(_cfg(ffn_experts=bad), V, None)
    guided = GuidanceConfig(labels=["accent"], hard_groups=True)
    with pytest.raises(ConfigError, match="ffn_experts cannot be combined"):
        build_model(_cfg(ffn_experts=[3, 2, 2, 3], guidance=guided), V, VOCAB)


def test_ffn_fixed_group_builds_fixed_group_layers_and_is_checked():
    cfg = _cfg(ffn_experts=[3, 3, 2, 3], ffn_fixed_group=[0, 2, 0, 1], fixed_group_free=1)
    model = build_model(cfg, V, None)
    ffns = [m for m in model.modules() if isinstance(m, MoEFeedForward)]
    assert [(m.fixed_group, m.fixed_free) for m in ffns] == [(0, 0), (2, 1), (0, 0), (1, 1)]
    for bad in (
        {"ffn_fixed_group": [0, 2, 0], "fixed_group_free": 1},  # one count per feed-forward
        {"ffn_fixed_group": [0, 4, 0, 0], "fixed_group_free": 1},  # more than its experts
        {"ffn_fixed_group": [0, 2, 0, 0], "fixed_group_free": 0},  # no free choice
    ):
        with pytest.raises(ConfigError, match="ffn_fixed_group|fixed_group_free"):
            build_model(_cfg(ffn_experts=[3, 3, 2, 3], **bad), V, None)
    hier = GuidanceConfig(labels=["accent"], group_router=True, router_loss_weight=0.3)
    with pytest.raises(ConfigError, match="cannot be combined with label groups"):
        build_model(_cfg(ffn_fixed_group=[0, 2, 0, 0], fixed_group_free=1, guidance=hier), V, VOCAB)


def _dec_moe_cfg(**moe_kw) -> ModelConfig:
    cfg = _cfg(ffn="dense", **moe_kw)
    cfg.decoder = DecoderConfig(num_layers=2, num_heads=2, d_ff=32, dropout=0.0, ffn="moe")
    return cfg


def test_decoder_moe_with_one_expert_equals_dense_decoder():
    torch.manual_seed(4)
    dense_cfg = _cfg(ffn="dense")
    dense_cfg.decoder = DecoderConfig(num_layers=2, num_heads=2, d_ff=32, dropout=0.0)
    dense = build_model(dense_cfg, V, None).eval()
    moe = build_model(_dec_moe_cfg(num_experts=1, top_k=1), V, None).eval()
    state = {
        k.replace("decoder.layers.0.ffn.", "decoder.layers.0.ffn.experts.0.").replace(
            "decoder.layers.1.ffn.", "decoder.layers.1.ffn.experts.0."
        ): v
        for k, v in dense.state_dict().items()
    }
    missing, unexpected = moe.load_state_dict(state, strict=False)
    assert missing and all(k.endswith("router.weight") for k in missing) and not unexpected
    batch = _batch([30, 20], [3, 2])
    with torch.no_grad():
        a, b = dense(*batch), moe(*batch)
    torch.testing.assert_close(a.att, b.att, atol=1e-6, rtol=0)


def test_decoder_moe_adds_routing_losses_and_counts_active_experts():
    torch.manual_seed(5)
    model = build_model(_dec_moe_cfg(num_experts=4, top_k=1), V, None).train()
    assert not model.moe_layers  # the encoder stays dense
    feats, lens, tokens, tl = _batch([40, 30], [4, 2])
    out = model(feats, lens, tokens, tl)
    assert out.moe_balance.item() > 0 and out.z_loss.item() > 0
    assert out.router_stats == []  # router stats of the output are the encoder's
    out.loss.backward()
    router = model.decoder.layers[0].ffn.router.weight
    assert router.grad is not None and router.grad.abs().sum() > 0
    # padded token positions are not routed: batched == alone
    model.eval()
    with torch.no_grad():
        enc = model.encode(feats, lens)
        stats: list = []
        ys = torch.cat([torch.full((2, 1), V - 1), tokens.clamp_min(0)], 1)
        both = model.decoder(enc.out, enc.lens, ys, tl + 1, stats)
        one = model.decoder(enc.out[1:], enc.lens[1:], ys[1:, : int(tl[1]) + 1])
    assert len(stats) == 2 and [s.layer for s in stats] == [0, 1]
    assert int(stats[0].mask.sum()) == int((tl + 1).sum())
    torch.testing.assert_close(both[1, : int(tl[1]) + 1], one[0], atol=1e-5, rtol=1e-5)
    rows = {r.component: r for r in parameter_summary(model)}
    expert = sum(p.numel() for p in model.decoder.layers[0].ffn.experts[0].parameters())
    assert rows["decoder.moe.experts"].total == 2 * 4 * expert
    assert rows["decoder.moe.experts"].active == 2 * expert
    assert "encoder.moe.experts" not in rows
    cfg = _dec_moe_cfg()
    cfg.decoder.ffn = "sparse"
    with pytest.raises(ConfigError, match="model.decoder.ffn"):
        build_model(cfg, V, None)


# ---------------------------------------------------------------- hierarchical group routing
FAMILY_VOCAB = LabelVocab({"accent": ["unk", "a1", "a2", "b1", "b2"], "noise": ["unk", "n", "w"]})
FAMILIES = {"a1": "fa", "a2": "fa", "b1": "fb", "b2": "fb"}  # fa -> experts {0, 1}, fb -> {2, 3}


def _family_batch(n, seed):
    """4 accents in 2 families; the family is audible and decides the transcript."""
    g = torch.Generator().manual_seed(seed)
    accent = torch.randint(1, 5, (n,), generator=g)
    family = (accent >= 3).long()  # 0 = fa, 1 = fb
    feats = torch.randn(n, 24, F_IN, generator=g)
    feats[family == 0, :, : F_IN // 2] += 1.5
    feats[family == 1, :, F_IN // 2 :] += 1.5
    tokens = (family + 2)[:, None]
    return feats, torch.full((n,), 24), tokens, torch.ones(n, dtype=torch.long), accent, family


def _hier_cfg(**guidance_kw):
    guidance = GuidanceConfig(
        labels=["accent"],
        groups=FAMILIES,
        group_router=True,
        router_loss_weight=1.0,
        label_dropout=0.2,
        **guidance_kw,
    )
    return _cfg(num_experts=4, top_k=1, ctc_weight=1.0, guidance=guidance)


def test_hierarchical_group_router_picks_the_family_label_free():
    model = build_model(_hier_cfg(), V, FAMILY_VOCAB)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(120):
        feats, lens, tokens, tl, accent, _ = _family_batch(16, step)
        out = model(feats, lens, tokens, tl, labels={"accent": accent}, step=step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    feats, lens, _, _, accent, family = _family_batch(64, 40_000)
    with torch.no_grad():
        enc = model.encode(feats, lens)  # label-free: the group routers decide
    assert set(enc.group_logits) == {0, 1}
    mask = lengths_to_mask(enc.lens, enc.out.shape[1])
    want = family[:, None].expand_as(mask)
    for layer, logits in enc.group_logits.items():
        hits = (logits.argmax(-1) == want)[mask].float().mean()
        assert hits > 0.9, (layer, float(hits))
    for s in enc.router_stats:  # the experts used are the chosen family's
        in_family = (s.topk_idx[..., 0] // 2 == want)[s.mask].float().mean()
        assert in_family > 0.9, (s.layer, s.half, float(in_family))
    probs = model.label_probs(enc)
    assert set(probs) == {"accent_group"} and probs["accent_group"].values == ["fa", "fb"]
    assert (probs["accent_group"].probs.argmax(-1) == family).float().mean() > 0.9
    # forcing an accent routes every frame into its family, whatever is heard
    for value, block in (("a2", (0, 1)), ("b1", (2, 3))):
        with torch.no_grad():
            forced = model.encode(feats, lens, model.forced_routing({"accent": value}))
        for s in forced.router_stats:
            assert set(s.topk_idx[s.mask].flatten().tolist()) <= set(block)


def test_forcing_each_label_and_masking_experts_in_a_model():
    cfg = _cfg(
        num_experts=4,
        top_k=2,
        guidance=GuidanceConfig(
            labels=["accent", "noise"],
            embed=True,
            hard_groups=True,
            groups=FAMILIES,
            free_experts=1,
        ),
    )
    torch.manual_seed(3)
    model = build_model(cfg, V, FAMILY_VOCAB).eval()
    feats, lens, _, _ = _batch([40, 28], [1, 1])
    with torch.no_grad():
        free = model.encode(feats, lens)
        noise = model.encode(feats, lens, model.forced_routing({"noise": "w"}))
        both = model.encode(feats, lens, model.forced_routing({"noise": "w", "accent": "b2"}))
        masked = model.encode(
            feats, lens, model.forced_routing({"accent": "a1"}, {0: [0], 1: [3, 2]})
        )
    # the noise label moves the routers (its embedding), but restricts nothing
    assert not torch.equal(free.router_stats[0].logits, noise.router_stats[0].logits)
    for s in both.router_stats:  # first choice inside fb {2, 3}, the second one free
        assert set(s.topk_idx[..., 0][s.mask].tolist()) <= {2, 3}
    assert any(bool((s.topk_idx[..., 1][s.mask] < 2).any()) for s in both.router_stats)
    for s in masked.router_stats:
        first, anyk = s.topk_idx[..., 0][s.mask], s.topk_idx[s.mask]
        if s.layer == 0:
            assert (first == 1).all() and not (anyk == 0).any()  # fa {0, 1} minus expert 0
        else:
            assert set(first.tolist()) <= {0, 1} and set(anyk.flatten().tolist()) <= {0, 1}
    with pytest.raises(UserError, match="--force noise=x: unknown noise; the model knows n, w"):
        model.forced_routing({"noise": "x"})
    dense = build_model(_cfg(ffn="dense"), V, None)
    assert not dense.is_moe and model.is_moe and dense.forced_routing() == RoutingOptions()
    with pytest.raises(UserError, match="dense model"):
        dense.forced_routing({"accent": "a1"})


def test_label_loss_warmup_and_decay_follow_the_step():
    cfg = _hier_cfg(loss_warmup_steps=10, loss_decay_steps=10, loss_final_scale=0.5)
    cfg.moe.guidance.utterance_estimate = True
    cfg.moe.guidance.estimate_layer = 0
    model = build_model(cfg, V, FAMILY_VOCAB).eval()
    feats, lens, tokens, tl, accent, _ = _family_batch(8, 7)
    oracle = RoutingOptions(mode="oracle")

    def label_loss(step):
        with torch.no_grad():
            out = model(feats, lens, tokens, tl, {"accent": accent}, oracle, step=step)
        return float(out.label_loss)

    full = label_loss(None)
    assert full > 0 and label_loss(0) == 0.0
    assert label_loss(5) == pytest.approx(0.5 * full, rel=1e-5)
    assert label_loss(15) == pytest.approx(0.75 * full, rel=1e-5)
    assert label_loss(500) == pytest.approx(0.5 * full, rel=1e-5)


def test_example_hierarchical_configs_build_with_the_size_of_moe_yaml():
    from pathlib import Path

    from moe_asr.config import load_config
    from moe_asr.nn.groups import placeholder_vocab

    conf = Path(__file__).parent.parent / "egs/synth_accents/asr1/conf"
    active = {}
    for name in ("moe", "moe_hier", "moe_hier_shared", "moe_hier_pairs", "moe_2of8"):
        cfg = load_config(conf / f"{name}.yaml").model
        vocab = placeholder_vocab(cfg.moe.guidance, 4) if cfg.moe.guidance.labels else None
        model = build_model(cfg, 40, vocab)
        rows = {r.component: r for r in parameter_summary(model)}
        active[name] = rows["encoder.moe.experts"].active
        if vocab is not None:  # every accent of the synthetic corpus has a family
            groups = model.guidance.label_groups
            assert groups.families and len(vocab.values["accent"]) == 17
            num_groups = {"moe_hier": 2, "moe_hier_shared": 4, "moe_hier_pairs": 8}[name]
            assert len(groups.names) == num_groups
    for name in ("moe_hier", "moe_hier_shared", "moe_hier_pairs", "moe_2of8"):  # up to biases
        assert abs(active[name] - active["moe"]) / active["moe"] < 0.001, active


def test_chunk_convolution_streaming_config_is_moe_yaml_plus_streaming():
    """conf/moe_streaming_chunkconv.yaml differs from conf/moe_streaming.yaml only in the
    convolution, and its weights are moe.yaml's tensor for tensor (a warm start)."""
    import dataclasses
    from pathlib import Path

    from moe_asr.config import load_config

    conf = Path(__file__).parent.parent / "egs/synth_accents/asr1/conf"
    chunkconv = load_config(conf / "moe_streaming_chunkconv.yaml")
    causal = load_config(conf / "moe_streaming.yaml")
    assert chunkconv.model.streaming.conv == "chunk" and causal.model.streaming.conv == "causal"
    same = dataclasses.replace(
        chunkconv.model, streaming=dataclasses.replace(chunkconv.model.streaming, conv="causal")
    )
    assert same == causal.model and chunkconv.train == causal.train
    plain = build_model(load_config(conf / "moe.yaml").model, 40, None).state_dict()
    streaming = build_model(chunkconv.model, 40, None).state_dict()
    assert {k: v.shape for k, v in plain.items()} == {k: v.shape for k, v in streaming.items()}


def _value_router_cfg(**guidance_kw):
    guidance = GuidanceConfig(labels=["accent"], value_routers=True, **guidance_kw)
    return _cfg(num_experts=2, top_k=1, ctc_weight=1.0, guidance=guidance)


def test_value_router_model_starts_as_the_unguided_model():
    torch.manual_seed(0)
    plain = build_model(_cfg(num_experts=2, top_k=1, ctc_weight=1.0), V, None).eval()
    cfg = _value_router_cfg(utterance_estimate=True, estimate_layer=0, label_dropout=1.0)
    guided = build_model(cfg, V, VOCAB).eval()
    missing, unexpected = guided.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("guidance.") for k in missing)
    feats, lens, _, _ = _batch([30, 22], [1, 1])
    with torch.no_grad():
        a, b = plain.encode(feats, lens), guided.encode(feats, lens)
    torch.testing.assert_close(b.out, a.out)


def test_value_routers_alone_carry_the_label_into_routing():
    """The answer is decided by the label only (the audio is noise) and the label embedding
    is held at zero, so only the per-value router corrections can route by it."""
    cfg = _value_router_cfg(embed=True, label_dropout=0.0)
    model = build_model(cfg, V, VOCAB)
    model.guidance.embed["accent"].weight.requires_grad_(False)
    model = _train(model, steps=120, audio_cue=False)
    assert not model.guidance.embed["accent"].weight.any()
    feats, lens, _, _, _ = _toy_batch(32, 20_000, audio_cue=False)
    for value, token in (("a", 2), ("b", 3)):
        with torch.no_grad():
            forced = model.encode(
                feats, lens, RoutingOptions(mode="forced", forced={"accent": value})
            )
        answer = model.ctc_log_probs(forced).argmax(-1).max(-1).values
        assert (answer == token).float().mean() > 0.9, value
