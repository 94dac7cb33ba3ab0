"""Block routing (``model.moe.route_block``): one expert choice per block of frames (the
streaming chunk under a chunk mask), padding-invariant, equal chunk by chunk with caches."""

from __future__ import annotations

import copy

import pytest
import torch

from moe_asr.config import (
    ConfigError,
    MoEConfig,
    StreamingConfig,
    config_from_dict,
    validate_config,
)
from moe_asr.model import build_model
from moe_asr.nn.conformer import lengths_to_mask
from moe_asr.nn.moe import MoEFeedForward, MoERouting
from tests.stream_encode import encode_in_chunks
from tests.tiny_config import tiny_model_config

D, FF = 8, 16


def _layers(top_k=1, block=4):
    torch.manual_seed(0)
    frame = MoEFeedForward(D, FF, num_experts=4, top_k=top_k).eval()
    blocked = copy.deepcopy(frame)
    blocked.route_block = block
    return frame, blocked


def _blocks_of(lens, t, block):
    """(utterance, first frame, end frame) of every non-empty block of the real frames."""
    return [(u, s, min(s + block, n)) for u, n in enumerate(lens) for s in range(0, n, block)]


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize(("block", "chunk"), [(4, 0), (3, 0), (4, 5)])
def test_frames_of_a_block_share_the_choice_made_on_their_mean_logits(top_k, block, chunk):
    frame, blocked = _layers(top_k, block)
    lens, t = [11, 7, 2], 11
    x, mask = torch.randn(3, t, D), lengths_to_mask(torch.tensor(lens), t)
    with torch.no_grad():
        _, per_frame = frame(x, mask)
        y, stats = blocked(x, mask, chunk=chunk)
    size = chunk or block  # a chunk mask's chunk replaces route_block
    for u, s, e in _blocks_of(lens, t, size):
        mean = per_frame.logits[u, s:e].mean(0)
        torch.testing.assert_close(stats.logits[u, s:e], mean.expand(e - s, -1))
        want_w, want_i = mean.softmax(-1).topk(top_k)
        if top_k > 1:
            want_w = want_w / want_w.sum()
        assert (stats.topk_idx[u, s:e] == want_i).all()
        torch.testing.assert_close(stats.topk_weight[u, s:e], want_w.expand(e - s, -1))
    # the frames are still computed by their block's experts, each on its own input
    ref = torch.stack([ex(x) for ex in blocked.experts], -2)  # (B, T, E, D)
    picked = ref.gather(-2, stats.topk_idx[..., None].expand(-1, -1, -1, D))
    want = (picked * stats.topk_weight[..., None]).sum(-2) * mask[..., None]
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)


def test_block_routing_is_padding_invariant_and_trains_the_router():
    _, blocked = _layers(1, 4)
    x, mask = torch.randn(2, 9, D), lengths_to_mask(torch.tensor([9, 6]), 9)
    with torch.no_grad():
        batched, _ = blocked(x, mask)
        alone, _ = blocked(x[1:, :6], lengths_to_mask(torch.tensor([6]), 6))
    torch.testing.assert_close(batched[1, :6], alone[0], atol=1e-6, rtol=1e-6)
    blocked.train()
    y, _ = blocked(x, mask)
    y.sum().backward()
    assert blocked.router.weight.grad is not None and blocked.router.weight.grad.abs().sum() > 0


def _streaming_model(route_block: int):
    moe = MoEConfig(num_experts=4, top_k=1, route_block=route_block)
    cfg = tiny_model_config(moe=moe, input_dim=20)
    cfg.streaming = StreamingConfig(enabled=True, conv="chunk")
    torch.manual_seed(0)
    return build_model(cfg, 8, None).eval()


@pytest.mark.parametrize("chunk", [3, 4])
def test_chunk_by_chunk_block_routing_equals_the_chunk_masked_forward_one_choice_per_chunk(chunk):
    model = _streaming_model(route_block=16)
    feats = torch.randn(1, 150, 20)  # a short last chunk
    with torch.no_grad():
        full = model.encode(feats, torch.tensor([150]), chunk_frames=chunk)
        streamed = encode_in_chunks(model, feats, chunk)
    for enc in streamed.chunks:  # every feed-forward of every layer: one expert per chunk
        for s in enc.router_stats:
            assert s.topk_idx.unique().numel() == 1
    torch.testing.assert_close(streamed.out, full.out, atol=1e-4, rtol=1e-4)
    for s in full.router_stats:  # the masked full forward routes per chunk too
        idx = s.topk_idx[0, :, 0]
        for start in range(0, idx.numel(), chunk):
            assert idx[start : start + chunk].unique().numel() == 1


def test_full_context_routes_blocks_of_route_block_frames_and_negative_is_refused():
    model = _streaming_model(route_block=5)
    with torch.no_grad():
        enc = model.encode(torch.randn(1, 150, 20), torch.tensor([150]))
    idx = enc.router_stats[0].topk_idx[0, :, 0]
    assert all(idx[s : s + 5].unique().numel() == 1 for s in range(0, idx.numel(), 5))
    with pytest.raises(ConfigError, match="model.moe.route_block"):
        validate_config(config_from_dict({"model": {"ffn": "moe", "moe": {"route_block": -1}}}))


@pytest.mark.parametrize(
    ("top_k", "shared", "b", "frame_groups"),
    [(1, 0, 1, False), (2, 1, 1, False), (3, 0, 1, False), (2, 0, 2, False), (1, 0, 1, True)],
)
def test_one_block_inference_equals_the_sorted_dispatch_and_the_general_block_mean(
    top_k, shared, b, frame_groups, monkeypatch
):
    """A streaming chunk (all frames real, no longer than the block) takes the one-block
    paths: its mean in one reduction and, for one stream, each chosen expert on all rows."""
    import moe_asr.nn.moe as moe_module

    torch.manual_seed(0)
    layer = MoEFeedForward(D, FF, 4, top_k, num_shared_experts=shared, route_block=16).eval()
    x, mask = torch.randn(b, 9, D), torch.ones(b, 9, dtype=torch.bool)
    routing = pad_routing = None
    if frame_groups:  # per-frame expert groups: frames of one block may differ
        allowed = torch.zeros(b, 11, 4, dtype=torch.bool)
        allowed[:, 0::2, :2] = True
        allowed[:, 1::2, 2:] = True
        routing, pad_routing = MoERouting(allowed=allowed[:, :9]), MoERouting(allowed=allowed)
    with torch.no_grad():
        y, stats = layer(x, mask, routing, chunk=9)
        monkeypatch.setattr(moe_module, "LEAN_INFERENCE", False)
        y_sorted, _ = layer(x, mask, routing, chunk=9)
        # the general path: padding makes the block mean go through its scatter
        pad = torch.cat([x, torch.randn(b, 2, D)], 1)
        pad_mask = torch.cat([mask, torch.zeros(b, 2, dtype=torch.bool)], 1)
        y_general, s_general = layer(pad, pad_mask, pad_routing)
    torch.testing.assert_close(y, y_sorted, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(y, y_general[:, :9], atol=1e-6, rtol=1e-6)
    assert torch.equal(stats.topk_idx, s_general.topk_idx[:, :9])
