"""Streaming encoder: chunk masks, chunk-by-chunk encoding with caches equals the full
forward under the same chunk mask (dense, MoE, guided), bounded caches, rel-pos offsets,
dynamic chunk draws from the training RNG."""

from __future__ import annotations

import pytest
import torch

from moe_asr.config import ConfigError, config_from_dict
from moe_asr.data.labels import LabelVocab
from moe_asr.errors import UserError
from moe_asr.model import RoutingOptions, build_model
from moe_asr.nn.attention import RelPositionBias
from moe_asr.nn.conformer import ConvModule
from moe_asr.nn.streaming import chunk_mask, draw_chunk
from tests.stream_encode import encode_in_chunks

F_IN = 20
VOCAB = 8


def _model(
    ffn: str = "moe", guided: bool = False, subsampling: int = 4, streaming=True, conv="causal"
):
    moe = {"num_experts": 3, "top_k": 2, "num_shared_experts": 1}
    vocab = None
    if guided:  # True: label groups; "layer": the label embedding added to layer inputs
        moe = {"num_experts": 4, "top_k": 1, "guidance": {"labels": ["accent"], "embed": True}}
        if guided == "layer":
            moe["guidance"].update(condition="layer")
        else:
            moe["guidance"].update(hard_groups=True, router_loss_weight=0.1)
        vocab = LabelVocab.from_tables({"accent": {0: "x", 1: "y"}}, ["accent"])
    cfg = config_from_dict(
        {
            "model": {
                "input_dim": F_IN,
                "d_model": 16,
                "num_heads": 2,
                "num_layers": 3,
                "d_ff": 32,
                "conv_kernel": 5,
                "dropout": 0.0,
                "subsampling": subsampling,
                "subsampling_channels": 4,
                "max_rel_pos": 6,
                "ffn": ffn,
                "moe": moe,
                "decoder": {"num_layers": 1, "num_heads": 2, "d_ff": 16, "dropout": 0.0},
                "streaming": {"enabled": streaming, "conv": conv},
            }
        }
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, VOCAB, vocab)
    with torch.no_grad():  # non-zero rel-pos bias and CMVN, so that both are exercised
        model.encoder.pos_bias.table.normal_()
        model.cmvn_mean.normal_()
        model.cmvn_std.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize(
    ("ffn", "guided", "subsampling", "chunk", "left", "conv"),
    [
        ("dense", False, 4, 4, -1, "causal"),
        ("dense", False, 6, 3, 2, "causal"),
        ("moe", False, 4, 5, 1, "causal"),
        ("moe", False, 8, 2, 0, "causal"),
        ("moe", True, 4, 4, 2, "causal"),
        ("dense", False, 4, 4, -1, "chunk"),
        ("dense", False, 6, 1, 2, "chunk"),  # a chunk shorter than the kernel's half width
        ("moe", False, 4, 5, 1, "chunk"),
        ("moe", True, 8, 3, -1, "chunk"),
        ("moe", "layer", 4, 4, 1, "chunk"),
    ],
)
def test_chunk_by_chunk_with_caches_equals_full_forward_with_chunk_mask(
    ffn, guided, subsampling, chunk, left, conv
):
    model = _model(ffn, guided, subsampling, conv=conv)
    feats = torch.randn(1, 203, F_IN)  # not a whole number of chunks: a short last chunk
    routings = [None]
    if guided:
        routings.append(RoutingOptions(mode="forced", forced={"accent": "y"}))
    for routing in routings:
        with torch.no_grad():
            full = model.encode(
                feats,
                torch.tensor([feats.shape[1]]),
                routing,
                chunk_frames=chunk,
                left_chunks=left,
            ).out
            streamed = encode_in_chunks(model, feats, chunk, left, routing).out
        assert streamed.shape == full.shape
        torch.testing.assert_close(streamed, full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("conv", ["causal", "chunk"])
def test_chunk_mask_changes_the_output_and_full_context_does_not_leak(conv):
    model = _model("moe", conv=conv)
    feats = torch.randn(1, 120, F_IN)
    lens = torch.tensor([120])
    with torch.no_grad():
        full = model.encode(feats, lens).out
        chunked = model.encode(feats, lens, chunk_frames=4, left_chunks=1).out
        # future frames beyond the first chunk cannot change it
        other = feats.clone()
        other[:, 40:] = torch.randn(1, 80, F_IN)
        chunked2 = model.encode(other, lens, chunk_frames=4, left_chunks=1).out
    assert (full - chunked).abs().max() > 1e-3
    # encoder frames 0..3 read input frames < 4*3 + 7 = 19 < 40
    torch.testing.assert_close(chunked[:, :4], chunked2[:, :4])


@pytest.mark.parametrize("conv", ["causal", "chunk"])
def test_chunk_mask_batched_equals_alone(conv):
    """Padding invariance holds under the chunk mask too (padded rows never NaN)."""
    model = _model("moe", conv=conv)
    a, b = torch.randn(1, 90, F_IN), torch.randn(1, 60, F_IN)
    x = torch.zeros(2, 90, F_IN)
    x[0], x[1, :60] = a[0], b[0]
    with torch.no_grad():
        both = model.encode(x, torch.tensor([90, 60]), chunk_frames=3, left_chunks=0)
        alone = model.encode(b, torch.tensor([60]), chunk_frames=3, left_chunks=0)
    n = int(alone.lens[0])
    assert torch.isfinite(both.out).all()
    torch.testing.assert_close(both.out[1, :n], alone.out[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 4, 7, 40])  # kernel 5: < 4 and >= 4 take two paths
def test_chunk_convolution_reads_its_chunk_and_the_past_only(chunk):
    """The chunk-mode depthwise convolution of a frame equals the centred convolution of an
    input in which every frame after the end of its chunk is zero (brute force per frame)."""
    torch.manual_seed(0)
    conv = ConvModule(6, 5, mode="chunk").eval()
    centred = ConvModule(6, 5, mode="centred").eval()
    centred.load_state_dict(conv.state_dict())
    x, t = torch.randn(2, 23, 6), 23
    mask = torch.ones(2, t, dtype=torch.bool)
    mask[1, 17:] = False
    with torch.no_grad():
        got = conv(x, mask, chunk)
        for i in range(t):
            end = (i // chunk + 1) * chunk
            cut = mask.clone()
            cut[:, end:] = False  # masked frames are zeroed before the depthwise convolution
            want = centred(x, cut)[:, i]
            torch.testing.assert_close(got[:, i], want, atol=1e-5, rtol=1e-5)
        # full context is the non-streaming convolution
        torch.testing.assert_close(conv(x, mask), centred(x, mask))


def test_chunk_conv_streaming_model_at_full_context_is_the_non_streaming_model():
    """Same weights: a chunk-convolution streaming model decoded with full context computes
    exactly what the non-streaming model computes (so one is a warm start for the other)."""
    streaming, plain = _model("moe", conv="chunk"), _model("moe", streaming=False)
    plain.load_state_dict(streaming.state_dict())
    feats, lens = torch.randn(2, 150, F_IN), torch.tensor([150, 97])
    with torch.no_grad():
        torch.testing.assert_close(streaming.encode(feats, lens).out, plain.encode(feats, lens).out)


def test_cache_shapes_stop_growing_after_left_chunks():
    model = _model("moe")
    feats = torch.randn(1, 6000, F_IN)  # 60 s of 10 ms frames
    chunk, left = 4, 2
    shapes = encode_in_chunks(model, feats, chunk, left).cache_shapes
    assert len(shapes) > 300
    # after left_chunks chunks the attention cache holds exactly left * chunk frames
    steady = shapes[left]
    assert all(s == steady for s in shapes[left:-1])
    assert steady[1][3] == left * chunk  # (B, 2, H, S, dh) of layer 0
    assert shapes[0][1][3] == chunk


def test_rel_position_bias_with_cache_offset_matches_full_table():
    rel = RelPositionBias(num_heads=2, max_dist=3)
    with torch.no_grad():
        rel.table.normal_()
    full = rel(10)  # (1, H, 10, 10)
    # the last 4 queries over all 10 keys (6 cached) are the last 4 rows of the full table
    torch.testing.assert_close(rel(4, 10), full[:, :, 6:, :])


def test_chunk_mask_sees_own_chunk_and_left_chunks():
    m = chunk_mask(6, 2, 1, torch.device("cpu"))
    # frame 4 (chunk 2) sees chunks 1 and 2 (frames 2..5), not chunk 0
    assert m[4].tolist() == [False, False, True, True, True, True]
    assert m[0].tolist() == [True, True, False, False, False, False]
    assert chunk_mask(6, 2, -1, torch.device("cpu"))[5].all()


def test_chunk_draw_is_deterministic_from_the_rng_and_covers_the_range():
    cfg = config_from_dict(
        {"model": {"streaming": {"enabled": True, "min_chunk": 2, "max_chunk": 5}}}
    ).model.streaming
    torch.manual_seed(3)
    first = [draw_chunk(cfg, 30) for _ in range(200)]
    torch.manual_seed(3)
    again = [draw_chunk(cfg, 30) for _ in range(200)]
    assert first == again
    assert {c for c, _ in first} == {0, 2, 3, 4, 5}
    assert {left for _, left in first} == {-1}
    assert 60 < [c for c, _ in first].count(0) < 140  # full_context_prob 0.5
    cfg.dynamic_left_chunks = True
    draws = [draw_chunk(cfg, 30) for _ in range(1000)]
    lefts = {c: {left for c2, left in draws if c2 == c} for c in (2, 5)}
    assert lefts[2] == set(range(15)) and lefts[5] == set(range(6))  # 0 .. (30 - 1) // c


def test_chunk_draws_start_after_full_context_steps_without_touching_the_rng_before():
    cfg = config_from_dict(
        {"model": {"streaming": {"enabled": True, "full_context_steps": 5}}}
    ).model.streaming
    torch.manual_seed(7)
    early = [draw_chunk(cfg, 30, step) for step in range(5)]
    late = [draw_chunk(cfg, 30, step) for step in range(5, 205)]
    assert early == [(0, -1)] * 5
    assert any(c > 0 for c, _ in late) and any(c == 0 for c, _ in late)
    # the first draw after the warm-up is the first draw of a run without one
    cfg.full_context_steps = 0
    torch.manual_seed(7)
    assert [draw_chunk(cfg, 30, step) for step in range(200)] == late
    # without a step (a caller outside the trainer) the warm-up does not apply: it draws
    cfg.full_context_steps = 5
    torch.manual_seed(7)
    assert draw_chunk(cfg, 30) == late[0] and late[0][0] > 0  # a chunk, not the warm-up's 0


def test_training_before_full_context_steps_is_the_full_context_forward():
    feats, lens = torch.randn(2, 80, F_IN), torch.tensor([80, 70])
    model = _model("moe", streaming=True)  # dropout 0: train and eval forwards agree
    st = model.cfg.streaming
    st.full_context_steps, st.full_context_prob, st.min_chunk, st.max_chunk = 3, 0.0, 2, 2
    tokens, token_lens = torch.tensor([[2, 3], [4, -1]]), torch.tensor([2, 1])
    with torch.no_grad():
        full = model.eval().encode(feats, lens).out
        chunk2 = model.encode(feats, lens, chunk_frames=2).out
        model.train()

        def trained_on(step):
            return model(feats, lens, tokens, token_lens, step=step).encoder.out

        for step in (0, 2):
            torch.testing.assert_close(trained_on(step), full)
        torch.testing.assert_close(trained_on(3), chunk2)
    assert not torch.allclose(chunk2, full)
    with pytest.raises(ConfigError, match="full_context_steps"):
        cfg = {"model": {"streaming": {"enabled": True, "full_context_steps": -1}}}
        build_model(config_from_dict(cfg).model, VOCAB, None)


def test_dual_mode_draws_only_chunks_after_the_warm_up():
    cfg = config_from_dict(
        {"model": {"streaming": {"enabled": True, "dual_mode": True, "full_context_steps": 3}}}
    ).model.streaming
    torch.manual_seed(0)
    draws = [draw_chunk(cfg, 30, step) for step in range(200)]
    assert draws[:3] == [(0, -1)] * 3
    assert all(1 <= c <= cfg.max_chunk for c, _ in draws[3:])  # full_context_prob 0.5 unused


def test_dual_mode_training_loss_is_the_mean_of_full_context_and_chunk_passes(monkeypatch):
    import moe_asr.model as model_mod

    monkeypatch.setattr(model_mod, "draw_chunk", lambda cfg, frames, step=None: (3, -1))
    feats, lens = torch.randn(2, 80, F_IN), torch.tensor([80, 70])
    tokens, token_lens = torch.tensor([[2, 3], [4, -1]]), torch.tensor([2, 1])
    model = _model("moe", streaming=True, conv="chunk")  # dropout 0: train = eval forwards
    model.cfg.streaming.dual_mode = True
    with torch.no_grad():
        dual = model.train()(feats, lens, tokens, token_lens)
        model.cfg.streaming.dual_mode = False
        chunk3 = model(feats, lens, tokens, token_lens)
        model.cfg.streaming.enabled = False  # the same weights, full context
        full = model(feats, lens, tokens, token_lens)
    for name in ("loss", "ctc", "att", "moe_balance"):
        want = (getattr(full, name) + getattr(chunk3, name)) / 2
        torch.testing.assert_close(getattr(dual, name), want)
    assert not torch.allclose(full.ctc, chunk3.ctc)  # the two passes differ
    torch.testing.assert_close(dual.encoder.out, full.encoder.out)  # monitoring: full context
    assert dual.router_stats is dual.encoder.router_stats


def test_training_step_of_a_streaming_model_uses_a_drawn_chunk(monkeypatch):
    import moe_asr.model as model_mod

    drawn = []

    def fake_draw(cfg, num_frames, step=None):
        drawn.append(num_frames)
        return 3, -1

    monkeypatch.setattr(model_mod, "draw_chunk", fake_draw)
    feats, lens = torch.randn(2, 80, F_IN), torch.tensor([80, 70])
    tokens, token_lens = torch.tensor([[2, 3], [4, -1]]), torch.tensor([2, 1])
    for streaming in (True, False):
        model = _model("moe", streaming=streaming)
        with torch.no_grad():
            want = model.encode(feats, lens, chunk_frames=3 if streaming else 0).out
            got = model.train()(feats, lens, tokens, token_lens).encoder.out
        torch.testing.assert_close(got, want)
    assert drawn == [19]  # once, for the streaming model only: ((80 - 1) // 2 - 1) // 2


def test_non_streaming_model_refuses_chunked_decoding_and_streaming_config_is_checked():
    model = _model("dense", streaming=False)
    with pytest.raises(UserError, match="model.streaming.enabled"):
        model.encode(torch.randn(1, 40, F_IN), torch.tensor([40]), chunk_frames=4)
    with pytest.raises(UserError, match="model.streaming.enabled"):
        model.init_stream()
    cfg = config_from_dict(
        {"model": {"streaming": {"enabled": True, "min_chunk": 5, "max_chunk": 2}}}
    )
    with pytest.raises(ConfigError, match="min_chunk"):
        build_model(cfg.model, VOCAB, None)
