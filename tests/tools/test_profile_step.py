"""tools/profile_step.py: its forward labels and op categories (not its timings)."""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from tests.tools.tool_module import load_tool


def _tool():
    return load_tool("profile_step")


def test_forward_ranges_label_each_feed_forward_router_and_expert_call():
    tool = _tool()
    args = type("Args", (), {"attention_dropout": 0.0})()
    counts = {}
    for ffn, experts in (("dense", 1), ("moe", 4)):
        torch.manual_seed(0)
        model = tool.build_model(tool._model_config(args, ffn, experts, 1), tool._VOCAB, None)
        tool._label_forward(model)
        model.eval()  # with autograd on: the sorted dispatch, where experts are module calls
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.encode(torch.randn(2, 400, 80), torch.tensor([400, 400]))
        counts[ffn] = {e.key: e.count for e in prof.key_averages()}
    layers = 6  # two macaron feed-forwards per layer
    assert counts["dense"]["dense_ffn"] == 2 * layers and "moe_ffn" not in counts["dense"]
    assert counts["moe"]["moe_ffn"] == counts["moe"]["router"] == 2 * layers
    assert 2 * layers <= counts["moe"]["experts"] <= 4 * 2 * layers  # experts that got frames
    assert "dense_ffn" not in counts["moe"]  # an expert is not counted as a dense FFN


def test_ops_fall_into_their_category():
    tool = _tool()
    assert tool._category("aten::addmm") == "matmul"
    assert tool._category("aten::index_add_") == "dispatch/indexing"
    assert tool._category("aten::_foreach_mul_") == "optimizer"
    assert tool._category("aten::convolution_backward") == "convolution"
    assert tool._category("aten::silu") == "other"


def test_inference_step_runs_encoder_and_ctc_head_without_autograd():
    tool = _tool()
    args = type("Args", (), {"attention_dropout": 0.1})()
    torch.manual_seed(0)
    model = tool.build_model(tool._model_config(args, "moe", 4, 1), tool._VOCAB, None)
    step = tool._inference_step(model, torch.randn(2, 400, 80), torch.tensor([400, 300]))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    ops = {e.key for e in prof.key_averages()}
    assert not model.training  # dropout off, as in decoding
    assert "aten::_log_softmax" in ops  # the CTC head ran
    assert not any(k.startswith("autograd::engine") for k in ops)  # no backward
    assert all(p.grad is None for p in model.parameters())
