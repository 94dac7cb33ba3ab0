"""The optimizer and learning-rate schedule of training (moe_asr.train.schedule)."""

from __future__ import annotations

import copy

import torch

from moe_asr.config import TrainConfig
from moe_asr.train.schedule import build_optimizer, lr_factor


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4)
    )


def test_updates_equal_the_reference_adamw_and_spare_1d_parameters_from_decay():
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1)
    model, ref = _model(), _model()
    opt = build_optimizer(model, cfg)
    decayed = [g["weight_decay"] for g in opt.param_groups]
    assert decayed == [0.1, 0.0]
    assert all(g["fused"] for g in opt.param_groups)  # the CPU has the fused kernel
    assert all(p.ndim >= 2 for p in opt.param_groups[0]["params"])
    assert all(p.ndim == 1 for p in opt.param_groups[1]["params"])
    # the per-tensor loop of torch's AdamW with the same groups and hyper-parameters
    ref_groups = [
        {
            **{k: v for k, v in g.items() if k != "params"},
            "params": [
                dict(ref.named_parameters())[n]
                for n, p in model.named_parameters()
                if any(p is q for q in g["params"])
            ],
        }
        for g in opt.param_groups
    ]
    for g in ref_groups:
        g["fused"], g["foreach"] = None, False
    ref_opt = torch.optim.AdamW(ref_groups)
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)


def test_optimizer_state_round_trips_through_a_state_dict():
    model = _model()
    opt = build_optimizer(model, TrainConfig(lr=1e-3))
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    again = build_optimizer(copy.deepcopy(model), TrainConfig(lr=1e-3))
    again.load_state_dict(opt.state_dict())
    assert again.state_dict()["state"].keys() == opt.state_dict()["state"].keys()


def test_cosine_schedule_warms_up_then_decays_to_zero():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, scheduler="cosine")
    assert lr_factor(0, cfg, 100) == 0.1
    assert lr_factor(9, cfg, 100) == 1.0
    assert lr_factor(99, cfg, 100) < 1e-3
