"""Clean-feature reconstruction (``model.clean_target``): the head's L1 error over real frames,
the states it reads (after the configured layer), its place in the model's loss, and that a
model without it is built exactly as before."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from moe_asr.config import CleanTargetConfig, Config, ConfigError, validate_config
from moe_asr.model import build_model
from moe_asr.model_losses import LOSS_FIELDS
from moe_asr.nn.clean_target import CleanFeatureHead
from tests.tiny_config import tiny_model_config

F_IN, V = 40, 7


def _model(weight: float = 0.5, layer: int = 1, seed: int = 0):
    cfg = dataclasses.replace(
        tiny_model_config(), clean_target=CleanTargetConfig(weight=weight, layer=layer)
    )
    torch.manual_seed(seed)
    return build_model(cfg, V, None)


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([37, 29])
    feats = torch.randn(2, 37, F_IN, generator=g)
    clean = feats - 0.5 * torch.randn(2, 37, F_IN, generator=g)  # "noise" on top of clean
    tokens = torch.tensor([[2, 3, 4], [5, 2, -1]])
    return feats, lens, tokens, torch.tensor([3, 2]), clean


def test_head_error_is_mean_absolute_error_over_frames_real_on_both_sides():
    torch.manual_seed(0)
    head = CleanFeatureHead(d_model=8, feat_dim=6, factor=4)
    states = torch.randn(3, 5, 8)
    state_lens = torch.tensor([5, 3, 4])
    target = head(states).detach().clone()  # (3, 20, 6): a perfect prediction
    target_lens = torch.tensor([20, 14, 13])  # item 1: states cover 12 frames, item 2: 13
    real = 20 + 12 + 13
    assert float(head.loss(states, state_lens, target, target_lens).detach()) == pytest.approx(
        0, abs=1e-6
    )
    off = target.clone()
    off[1, 12:] += 100.0  # beyond item 1's states: not scored
    off[2, 13:] -= 100.0  # beyond item 2's features: not scored
    assert float(head.loss(states, state_lens, off, target_lens).detach()) == pytest.approx(
        0, abs=1e-6
    )
    off[0, 3, 2] += 2.0  # one real value 2 off
    got = float(head.loss(states, state_lens, off, target_lens).detach())
    assert got == pytest.approx(2.0 / (real * 6), rel=1e-4)
    longer = torch.cat([off, torch.zeros(3, 7, 6)], 1)  # targets longer than T' * factor
    assert float(head.loss(states, state_lens, longer, target_lens).detach()) == pytest.approx(got)


def test_the_loss_trains_the_layers_below_the_chosen_one_only():
    model = _model(layer=1).train()
    feats, lens, tokens, tok_lens, clean = _batch()
    out = model(feats, lens, tokens, tok_lens, clean_feats=clean)
    assert float(out.clean_target.detach()) > 0
    out.clean_target.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    touched = {
        n.split(".")[0] + "." + n.split(".")[2]
        for n, g in grads.items()
        if g is not None and g.abs().sum() > 0 and n.startswith("encoder.layers")
    }
    assert touched == {"encoder.0"}
    assert grads["encoder.frontend.out.weight"].abs().sum() > 0
    assert grads["clean_head.proj.weight"].abs().sum() > 0
    assert all(
        grads[n] is None or not grads[n].any()
        for n in grads
        if n.startswith(("ctc_head", "decoder"))
    )


@torch.no_grad()
def test_loss_is_part_of_the_total_in_training_only():
    model = _model(layer=2).train()
    feats, lens, tokens, tok_lens, clean = _batch()
    out = model(feats, lens, tokens, tok_lens, clean_feats=clean)
    parts = sum(getattr(out, f) for f in LOSS_FIELDS if f not in ("loss", "ctc", "att"))
    w = model.cfg.ctc_weight
    assert float(out.loss) == pytest.approx(
        float(w * out.ctc + (1 - w) * out.att + parts), rel=1e-5
    )
    assert float(out.clean_target) > 0
    assert torch.equal(out.encoder.clean_states, out.encoder.out)  # layer 2 of 2: the output
    assert float(model(feats, lens, tokens, tok_lens).clean_target) == 0  # no targets given
    model.eval()
    assert model.encode(feats, lens).clean_states is None
    assert float(model(feats, lens, tokens, tok_lens, clean_feats=clean).clean_target) == 0


def test_head_learns_to_denoise_a_toy_batch():
    """Clean frames constant over 4-frame steps (what one encoder frame can carry), the noisy
    input those plus a stationary offset per utterance (a noise floor)."""
    model = _model(layer=1).train()
    g = torch.Generator().manual_seed(1)
    clean = torch.randn(2, 10, F_IN, generator=g).repeat_interleave(4, 1)[:, :37]
    feats = clean + 2.0 * torch.randn(2, 1, F_IN, generator=g)
    _, lens, tokens, tok_lens, _ = _batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        out = model(feats, lens, tokens, tok_lens, clean_feats=clean)
        first = float(out.clean_target.detach()) if first is None else first
        opt.zero_grad()
        out.clean_target.backward()
        opt.step()
    assert float(out.clean_target.detach()) < 0.5 * first  # 0.22x on the AMD VM: a wide margin


def test_model_without_it_is_built_exactly_as_before():
    base, with_head = _model(weight=0.0), _model(weight=0.5)
    assert base.clean_head is None
    extra = set(with_head.state_dict()) - set(base.state_dict())
    assert extra == {"clean_head.proj.weight", "clean_head.proj.bias"}
    assert all(torch.equal(v, with_head.state_dict()[k]) for k, v in base.state_dict().items())


def test_config_needs_noise_or_rooms_in_training_and_a_real_layer():
    cfg = Config(model=dataclasses.replace(tiny_model_config(), input_dim=80))
    cfg.model.clean_target = CleanTargetConfig(weight=0.2, layer=2)
    with pytest.raises(ConfigError, match="model.clean_target.weight"):
        validate_config(cfg)
    cfg.data.augment.reverb_prob = 0.3
    validate_config(cfg)
    cfg.model.clean_target.layer = 3
    with pytest.raises(ConfigError, match="model.clean_target.layer"):
        validate_config(cfg)
