import math

import pytest
import torch

from moe_asr.nn.moe import (
    FeedForward,
    MoEFeedForward,
    MoERouting,
    RouterStats,
    expert_groups,
    importance_cv2,
    load_balance_loss,
    output_similarity,
    router_z_loss,
)

D, FF = 8, 16


def _mask(lens, t):
    return torch.arange(t)[None] < torch.tensor(lens)[:, None]


def _reference(moe: MoEFeedForward, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Every expert on every frame, combined with the module's own routing decision."""
    _, stats = moe(x, mask)
    outs = torch.stack([e(x) for e in moe.experts], -2)  # (B, T, E, D)
    picked = outs.gather(-2, stats.topk_idx[..., None].expand(-1, -1, -1, D))  # (B,T,k,D)
    y = (picked * stats.topk_weight[..., None]).sum(-2)
    for s in moe.shared:
        y = y + s(x)
    return y * mask[..., None]


def test_one_expert_top1_equals_dense():
    torch.manual_seed(0)
    dense = FeedForward(D, FF).eval()
    moe = MoEFeedForward(D, FF, num_experts=1, top_k=1).eval()
    moe.experts[0].load_state_dict(dense.state_dict())
    x = torch.randn(3, 7, D)
    mask = _mask([7, 5, 2], 7)
    y, stats = moe(x, mask)
    torch.testing.assert_close(y[mask], dense(x)[mask], atol=1e-6, rtol=0)
    assert (y[~mask] == 0).all()
    assert torch.equal(stats.topk_weight[mask], torch.ones(14, 1))


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_dispatch_matches_dense_reference(top_k):
    torch.manual_seed(1)
    moe = MoEFeedForward(D, FF, num_experts=4, top_k=top_k, num_shared_experts=1).eval()
    x = torch.randn(2, 9, D)
    mask = _mask([9, 4], 9)
    y, stats = moe(x, mask)
    torch.testing.assert_close(y, _reference(moe, x, mask), atol=1e-5, rtol=1e-5)
    assert stats.probs.shape == (2, 9, 4) and stats.topk_idx.shape == (2, 9, top_k)
    w = stats.topk_weight[mask].sum(-1)
    if top_k > 1:  # renormalised
        torch.testing.assert_close(w, torch.ones_like(w))
    else:  # Switch: the router probability itself
        torch.testing.assert_close(w, stats.probs[mask].max(-1).values)
    assert (stats.probs[~mask] == 0).all()


@pytest.mark.parametrize("top_k", [1, 2])
def test_dispatch_gradients_match_the_dense_reference(top_k):
    """The sorted dispatch (k = 1: a permutation put back) is differentiated as the dense
    every-expert-on-every-frame combination: same input, router and expert gradients."""
    grads = []
    for fn in ("dispatch", "reference"):
        torch.manual_seed(5)
        moe = MoEFeedForward(D, FF, num_experts=4, top_k=top_k)
        x = torch.randn(3, 10, D, requires_grad=True)
        mask = _mask([10, 7, 3], 10)
        y = moe(x, mask)[0] if fn == "dispatch" else _reference(moe, x, mask)
        (y * torch.linspace(-1, 1, D)).pow(2).sum().backward()
        grads.append([x.grad, *(p.grad for p in moe.parameters())])
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("top_k", [1, 2])
def test_gradients_reach_router_and_used_experts(top_k):
    torch.manual_seed(2)
    moe = MoEFeedForward(D, FF, num_experts=4, top_k=top_k)
    x = torch.randn(2, 12, D)
    mask = _mask([12, 8], 12)
    y, stats = moe(x, mask)
    y.pow(2).sum().backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0
    used = set(stats.topk_idx[mask].flatten().tolist())
    assert used, "no expert received frames"
    for e, expert in enumerate(moe.experts):
        g = expert.w1.weight.grad
        assert g is not None  # every expert runs (maybe on 0 frames): DDP-friendly
        assert (g.abs().sum() > 0) == (e in used)


def test_capacity_overflow_passes_through_as_zero():
    moe = MoEFeedForward(D, FF, num_experts=2, top_k=1, capacity_factor=1.0).eval()
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0, 0] = 50.0  # every frame with x[...,0] > 0 prefers expert 0
    x = torch.randn(1, 10, D)
    x[..., 0] = 1.0
    y, stats = moe(x, torch.ones(1, 10, dtype=torch.bool))
    assert (stats.topk_idx == 0).all()
    cap = math.ceil(1.0 * 10 * 1 / 2)  # 5 slots for expert 0, first come first served
    ref = moe.experts[0](x) * stats.topk_weight
    torch.testing.assert_close(y[0, :cap], ref[0, :cap])
    assert (y[0, cap:] == 0).all()


def test_capacity_prefers_first_choices():
    # frames 0,1 prefer expert 1 (second choice 0); frames 2,3 prefer expert 0 (second 1)
    moe = MoEFeedForward(D, FF, num_experts=2, top_k=2, capacity_factor=0.5).eval()
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0, 0] = 3.0
        moe.router.weight[1, 1] = 3.0
    x = torch.randn(1, 4, D)
    x[0, :, :2] = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    y, s = moe(x, torch.ones(1, 4, dtype=torch.bool))
    assert s.topk_idx[0, :, 0].tolist() == [1, 1, 0, 0]
    # capacity ceil(0.5 * 4 * 2 / 2) = 2 per expert: each expert keeps its two first choices,
    # although frames 0,1 come first in frame order for expert 0's second choices
    first = torch.stack([moe.experts[int(e)](x[0, i]) for i, e in enumerate(s.topk_idx[0, :, 0])])
    torch.testing.assert_close(y[0], first * s.topk_weight[0, :, :1])


def test_expert_mask_and_allowed_groups():
    torch.manual_seed(3)
    moe = MoEFeedForward(D, FF, num_experts=4, top_k=2).eval()
    x = torch.randn(2, 6, D)
    mask = torch.ones(2, 6, dtype=torch.bool)
    _, s = moe(x, mask, MoERouting(disabled=(0, 3)))
    assert set(s.topk_idx.flatten().tolist()) <= {1, 2}
    allowed = torch.tensor([[True, True, False, False], [False, False, True, True]])
    _, s = moe(x, mask, MoERouting(allowed=allowed))
    assert set(s.topk_idx[0].flatten().tolist()) <= {0, 1}
    assert set(s.topk_idx[1].flatten().tolist()) <= {2, 3}
    assert (s.probs[0, :, 2:] == 0).all()


def test_router_condition_changes_routing_only_through_router():
    torch.manual_seed(4)
    moe = MoEFeedForward(D, FF, num_experts=1, top_k=1).eval()
    x = torch.randn(2, 5, D)
    mask = torch.ones(2, 5, dtype=torch.bool)
    y0, _ = moe(x, mask)
    y1, _ = moe(x, mask, MoERouting(cond=torch.randn(2, D)))
    torch.testing.assert_close(y0, y1)  # one expert: the condition cannot change the output
    moe4 = MoEFeedForward(D, FF, num_experts=4, top_k=1).eval()
    _, a = moe4(x, mask)
    _, b = moe4(x, mask, MoERouting(cond=torch.tensor([[100.0] * D, [-100.0] * D])))
    assert not torch.equal(a.logits, b.logits)
    assert b.topk_idx[0].unique().numel() == 1 and b.topk_idx[1].unique().numel() == 1


def test_noisy_gate_only_in_training():
    torch.manual_seed(5)
    moe = MoEFeedForward(D, FF, num_experts=4, top_k=1, noisy_gate_std=5.0)
    x = torch.randn(1, 50, D)
    mask = torch.ones(1, 50, dtype=torch.bool)
    moe.eval()
    a, _ = moe(x, mask)
    b, _ = moe(x, mask)
    assert torch.equal(a, b)
    moe.train()
    _, s1 = moe(x, mask)
    _, s2 = moe(x, mask)
    assert not torch.equal(s1.topk_idx, s2.topk_idx)
    torch.testing.assert_close(s1.logits, s2.logits)  # stats keep the clean logits


def _hand_stats() -> RouterStats:
    # 4 real frames + 1 padded frame holding garbage that must be ignored
    probs = torch.tensor([[[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.0, 1.0]]])
    idx = torch.tensor([[[0], [0], [1], [0], [1]]])
    weight = probs.gather(-1, idx)
    logits = torch.zeros(1, 5, 2)
    logits[0, 4] = 30.0
    mask = torch.tensor([[True, True, True, True, False]])
    return RouterStats(probs, logits, idx, weight, mask)


def test_balance_loss_closed_form():
    s = _hand_stats()
    # f = (3/4, 1/4), P = (0.65, 0.35): 2 * (0.75*0.65 + 0.25*0.35) = 1.15
    torch.testing.assert_close(load_balance_loss(s), torch.tensor(1.15))
    uniform = RouterStats(
        torch.full((1, 4, 2), 0.5),
        torch.zeros(1, 4, 2),
        torch.tensor([[[0], [1], [0], [1]]]),
        torch.full((1, 4, 1), 0.5),
        torch.ones(1, 4, dtype=torch.bool),
    )
    torch.testing.assert_close(load_balance_loss(uniform), torch.tensor(1.0))


def test_z_loss_closed_form():
    torch.testing.assert_close(router_z_loss(_hand_stats()), torch.tensor(math.log(2.0) ** 2))


def test_importance_cv2_closed_form():
    # importance = (0.9+0.8+0.6, 0.7) = (2.3, 0.7): mean 1.5, var 0.64, CV^2 = 0.64/2.25
    torch.testing.assert_close(importance_cv2(_hand_stats()), torch.tensor(0.64 / 2.25))


def test_output_similarity_closed_form():
    e1, e2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])
    outs = torch.stack([e1, 3 * e1, e2])[:, None, :].expand(3, 4, 3)  # (E=3, P=4, D=3)
    # pairs: (0,1) cos 1, (0,2) 0, (1,2) 0 -> mean of squares 1/3
    torch.testing.assert_close(output_similarity(outs), torch.tensor(1 / 3))
    v = torch.tensor([1.0, 1.0, 0.0])
    w = torch.tensor([1.0, 0.0, 0.0])  # cos 1/sqrt(2) -> squared 0.5
    torch.testing.assert_close(output_similarity(torch.stack([v, w])[:, None]), torch.tensor(0.5))


def test_diversity_probe_only_in_training():
    moe = MoEFeedForward(D, FF, num_experts=3, top_k=1, probe_diversity=True)
    x = torch.randn(1, 10, D)
    mask = torch.ones(1, 10, dtype=torch.bool)
    _, s = moe.train()(x, mask)
    assert s.output_similarity is not None and 0 <= float(s.output_similarity.detach()) <= 1
    s.output_similarity.backward()
    assert moe.experts[2].w2.weight.grad.abs().sum() > 0
    _, s = moe.eval()(x, mask)
    assert s.output_similarity is None


def test_expert_groups_partition():
    assert expert_groups(8, 3) == [[0, 1], [2, 3, 4], [5, 6, 7]]
    assert expert_groups(2, 2) == [[0], [1]]
    with pytest.raises(ValueError):
        expert_groups(2, 3)


@pytest.mark.parametrize("top_k", [1, 2])
def test_keep_experts_slices_router_rows_and_experts(top_k):
    torch.manual_seed(0)
    moe = MoEFeedForward(D, FF, 5, top_k, num_shared_experts=1).eval()
    x = torch.randn(3, 40, D)
    mask = torch.ones(3, 40, dtype=torch.bool)
    with torch.no_grad():
        y_full, s_full = moe(x, mask)
        keep = [1, 3, 4]
        dropped_experts = [moe.experts[e] for e in (0, 2)]
        router_rows = moe.router.weight[keep].clone()
        moe.keep_experts(keep)
        y, s = moe(x, mask)
    assert moe.num_experts == 3 and len(moe.experts) == 3 and len(moe.shared) == 1
    assert torch.equal(moe.router.weight, router_rows)
    assert not any(e is d for e in moe.experts for d in dropped_experts)
    kept = torch.isin(s_full.topk_idx, torch.tensor(keep)).all(-1)  # (B, T) frames inside keep
    assert 0 < int(kept.sum()) < kept.numel()
    # the same experts, renumbered 0..2
    remap = torch.tensor([-1, 0, -1, 1, 2])
    assert torch.equal(s.topk_idx[kept], remap[s_full.topk_idx[kept]])
    shared = moe.shared[0](x)
    if top_k > 1:  # renormalised weights keep their ratios: the same output
        torch.testing.assert_close(y[kept], y_full[kept], atol=1e-5, rtol=0)
    else:  # the top-1 weight is a softmax over fewer experts: divided by the kept mass
        mass = s_full.probs[..., keep].sum(-1)  # (B, T)
        expected = shared + (y_full - shared) / mass[..., None]
        torch.testing.assert_close(y[kept], expected[kept], atol=1e-5, rtol=1e-5)
        assert float(mass[kept].max()) < 0.999
    with pytest.raises(ValueError, match="distinct"):
        moe.keep_experts([0, 0])
    with pytest.raises(ValueError, match="top_k"):
        moe.keep_experts([])


def test_per_frame_allowed_experts():
    torch.manual_seed(6)
    moe = MoEFeedForward(D, FF, num_experts=4, top_k=1).eval()
    x = torch.randn(2, 5, D)
    mask = _mask([5, 3], 5)
    allowed = torch.zeros(2, 5, 4, dtype=torch.bool)
    allowed[:, :, 0] = True  # frames 0..2: expert 0 only; frames 3..4: expert 3 only
    allowed[:, 3:] = torch.tensor([False, False, False, True])
    y, s = moe(x, mask, MoERouting(allowed=allowed))
    assert (s.topk_idx[:, :3, 0] == 0).all() and (s.topk_idx[0, 3:, 0] == 3).all()
    torch.testing.assert_close(y, _reference_with(moe, x, mask, s))


def _reference_with(moe, x, mask, stats):
    outs = torch.stack([e(x) for e in moe.experts], -2)  # (B, T, E, D)
    picked = outs.gather(-2, stats.topk_idx[..., None].expand(-1, -1, -1, D))
    return (picked * stats.topk_weight[..., None]).sum(-2) * mask[..., None]


def test_free_choice_beside_the_group_choice():
    torch.manual_seed(7)
    moe = MoEFeedForward(D, FF, num_experts=4, top_k=2).eval()
    x = torch.randn(2, 6, D)
    mask = _mask([6, 4], 6)
    allowed = torch.tensor([[True, True, False, False], [False, False, True, True]])
    y, s = moe(x, mask, MoERouting(allowed=allowed, free=1, disabled=(1,)))
    first, second = s.topk_idx[..., 0], s.topk_idx[..., 1]
    assert (first[0][mask[0]] == 0).all()  # group {0, 1} minus the disabled expert 1
    assert set(first[1][mask[1]].tolist()) <= {2, 3}
    assert (first != second)[mask].all() and (second[mask] != 1).all()
    # the free choice is the best remaining expert of all, by the clean router logits
    rest = s.logits.scatter(-1, first[..., None], float("-inf"))
    rest[..., 1] = float("-inf")
    assert torch.equal(second[mask], rest.argmax(-1)[mask])
    torch.testing.assert_close(s.topk_weight.sum(-1)[mask], torch.ones(10))
    torch.testing.assert_close(y, _reference_with(moe, x, mask, s))
    # without a group restriction `free` changes nothing
    a, sa = moe(x, mask, MoERouting(free=1))
    b, sb = moe(x, mask)
    assert torch.equal(sa.topk_idx, sb.topk_idx)


@pytest.mark.parametrize("free", [1, 2])
def test_fixed_group_routes_as_the_group_restriction_of_the_full_layer(free):
    """Keeping a group's experts first (a fixed group) and some others: the cut layer routes as
    the full one restricted to the group with ``free`` free choices, wherever those are kept."""
    torch.manual_seed(8)
    moe = MoEFeedForward(D, FF, num_experts=6, top_k=3, num_shared_experts=1).eval()
    x = torch.randn(3, 30, D)
    mask = _mask([30, 22, 9], 30)
    group = torch.tensor([False, False, True, True, True, False])  # experts 2, 3, 4
    with torch.no_grad():
        y_full, s_full = moe(x, mask, MoERouting(allowed=group[None].expand(3, 6), free=free))
        keep = [2, 3, 4, 5, 0]  # the group first, then two of the others (expert 1 dropped)
        moe.keep_experts(keep, fixed_group=3, fixed_free=free)
        y, s = moe(x, mask)
    assert (moe.fixed_group, moe.fixed_free) == (3, free)
    kept = torch.isin(s_full.topk_idx, torch.tensor(keep)).all(-1) & mask  # (B, T)
    assert 0 < int(kept.sum()) < int(mask.sum())
    remap = torch.tensor([4, -1, 0, 1, 2, 3])
    assert torch.equal(s.topk_idx[kept], remap[s_full.topk_idx[kept]])
    assert (s.topk_idx[..., : 3 - free][mask] < 3).all()  # the group choices stay in the group
    torch.testing.assert_close(y[kept], y_full[kept], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="fixed_group"):
        MoEFeedForward(D, FF, num_experts=4, top_k=2, fixed_group=2, fixed_free=2)
    with pytest.raises(ValueError, match="fixed_group"):
        MoEFeedForward(D, FF, num_experts=4, top_k=3, fixed_group=1, fixed_free=1)
    with pytest.raises(ValueError, match="cut the full layer"):
        moe.keep_experts([0, 1, 2])


def _lean_and_sorted(moe, x, mask, routing, monkeypatch):
    """(y, stats) of the lean inference dispatch and of the (training) sort-and-split one."""
    import moe_asr.nn.moe as moe_mod

    calls = []
    lean = MoEFeedForward._dispatch_inference
    monkeypatch.setattr(
        MoEFeedForward, "_dispatch_inference", lambda *a: calls.append(1) or lean(*a)
    )
    with torch.no_grad():
        fast = moe(x, mask, routing)
        assert calls == [1], "the lean inference dispatch did not run"
        monkeypatch.setattr(moe_mod, "LEAN_INFERENCE", False)
        sorted_ = moe(x, mask, routing)
        monkeypatch.setattr(moe_mod, "LEAN_INFERENCE", True)
    assert calls == [1], "the sorted dispatch ran the lean inference dispatch"
    monkeypatch.setattr(MoEFeedForward, "_dispatch_inference", lean)
    return fast, sorted_


def _assert_same(fast, sorted_):
    (y, s), (y_ref, s_ref) = fast, sorted_
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=1e-6)
    for name in ("probs", "logits", "topk_idx", "topk_weight", "mask"):
        assert torch.equal(getattr(s, name), getattr(s_ref, name)), name
    assert s.output_similarity is None and s_ref.output_similarity is None


_GROUPS = torch.tensor([[True, True, False, False, False], [False, False, True, True, True]])


@pytest.mark.parametrize(
    "top_k,shared,routing",
    [
        (1, 0, "none"),
        (2, 0, "none"),
        (3, 2, "none"),
        (1, 1, "disabled"),
        (2, 1, "allowed"),
        (1, 0, "allowed_frames"),
        (2, 1, "forced"),  # a forced label: its embedding, its group, one free choice, a mask
        (3, 0, "forced"),
    ],
)
def test_inference_dispatch_equals_the_sorted_dispatch(top_k, shared, routing, monkeypatch):
    """Inference takes its own lean dispatch: the same outputs (to 1e-6) and the same
    RouterStats as the sort-and-split dispatch, padding included."""
    torch.manual_seed(2)
    moe = MoEFeedForward(D, FF, num_experts=5, top_k=top_k, num_shared_experts=shared).eval()
    x = torch.randn(3, 9, D)
    mask = _mask([9, 4, 7], 9)
    frames = torch.rand(3, 9, 5) < 0.6
    frames[..., 4] = True  # at least one allowed expert per frame (top-1)
    options = {
        "none": None,
        "disabled": MoERouting(disabled=(0, 3)),
        "allowed": MoERouting(allowed=_GROUPS[[0, 1, 0]]),
        "allowed_frames": MoERouting(allowed=frames),
        "forced": MoERouting(
            cond=torch.randn(3, D), allowed=_GROUPS[[1, 1, 1]], free=1, disabled=(3,)
        ),
    }
    fast, sorted_ = _lean_and_sorted(moe, x, mask, options[routing], monkeypatch)
    _assert_same(fast, sorted_)
    assert (fast[0][~mask] == 0).all()
    # a single frame, and a batch of utterances (hundreds of frames)
    _assert_same(*_lean_and_sorted(moe, x[:1, :1], mask[:1, :1], None, monkeypatch))
    big = torch.randn(3, 400, D)
    _assert_same(*_lean_and_sorted(moe, big, _mask([400, 240, 77], 400), None, monkeypatch))


@pytest.mark.parametrize("free", [0, 1])
def test_inference_dispatch_with_a_fixed_group(free, monkeypatch):
    torch.manual_seed(4)
    moe = MoEFeedForward(
        D,
        FF,
        num_experts=5,
        top_k=2,
        num_shared_experts=1,
        fixed_group=3 if free else 0,
        fixed_free=free,
    ).eval()
    x = torch.randn(2, 11, D)
    mask = _mask([11, 6], 11)
    _assert_same(*_lean_and_sorted(moe, x, mask, None, monkeypatch))


def test_inference_weight_copies_follow_the_parameters(monkeypatch):
    """The cached row-major copies follow in-place changes, load_state_dict (copy and assign),
    a dtype change, keep_experts and optimizer steps (fused too); training mode, autograd and a
    capacity factor take the sorted dispatch."""
    torch.manual_seed(5)
    moe = MoEFeedForward(D, FF, num_experts=4, top_k=2, num_shared_experts=1).eval()
    x = torch.randn(2, 9, D)
    mask = _mask([9, 4], 9)

    def check(m=moe, x=x):
        _assert_same(*_lean_and_sorted(m, x, mask, None, monkeypatch))

    check()
    with torch.no_grad():
        moe.experts[1].w2.bias.add_(1.0)
        moe.shared[0].w1.weight.mul_(2.0)
    check()
    other = MoEFeedForward(D, FF, num_experts=4, top_k=2, num_shared_experts=1).state_dict()
    moe.load_state_dict(other)
    check()
    moe.load_state_dict({k: v * 0.5 for k, v in other.items()}, assign=True)
    check()
    moe.double()
    check(x=x.double())
    moe.float()
    moe.keep_experts([3, 0, 2])
    check()
    # optimizer steps: the fused AdamW kernel does not bump the parameters' version counters
    for fused in (True, False):
        opt = torch.optim.AdamW(moe.parameters(), lr=0.1, fused=fused)
        moe(x, mask)[0].square().sum().backward()
        opt.step()
        check()
    calls = []
    lean = MoEFeedForward._dispatch_inference
    monkeypatch.setattr(
        MoEFeedForward, "_dispatch_inference", lambda *a: calls.append(1) or lean(*a)
    )
    moe(x, mask)  # autograd on
    assert "_inference_cache" in moe.__dict__
    moe.train()  # training mode frees the copies
    assert "_inference_cache" not in moe.__dict__
    moe.train()
    with torch.no_grad():
        moe(x, mask)
    capped = MoEFeedForward(D, FF, num_experts=4, top_k=2, capacity_factor=1.0).eval()
    with torch.no_grad():
        capped(x, mask)
    assert calls == []


def test_dynamic_int8_quantized_experts_run_at_inference():
    """torch.ao dynamic quantization replaces expert Linears (no weight tensor to copy):
    inference then takes the sorted dispatch, close to float."""
    torch.manual_seed(3)
    moe = MoEFeedForward(D, FF, num_experts=4, top_k=2).eval()
    q = torch.ao.quantization.quantize_dynamic(moe, {torch.nn.Linear}, dtype=torch.qint8)
    x, mask = torch.randn(1, 9, D), torch.ones(1, 9, dtype=torch.bool)
    with torch.no_grad():
        ref, got = moe(x, mask)[0], q(x, mask)[0]
    assert got.shape == ref.shape
    assert (got - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.mark.parametrize("lens", [[6, 6], [6, 4]], ids=["all_real", "padded"])
def test_router_delta_adds_a_per_utterance_router_weight(lens):
    torch.manual_seed(0)
    moe = MoEFeedForward(D, 16, 4, 2).eval()
    x, mask = torch.randn(2, 6, D), _mask(lens, 6)
    cond, delta = torch.randn(2, D), torch.randn(2, 4, D)
    _, stats = moe(x, mask, MoERouting(cond=cond, router_delta=delta))
    for b, n in enumerate(lens):
        want = (x[b, :n] + cond[b]) @ (moe.router.weight + delta[b]).T
        torch.testing.assert_close(stats.logits[b, :n], want, atol=1e-5, rtol=1e-5)
    # zero corrections route as no corrections; a per-half (B, 2, E, D) is sliced per half
    y0, _ = moe(x, mask, MoERouting(cond=cond))
    yz, _ = moe(x, mask, MoERouting(cond=cond, router_delta=torch.zeros(2, 4, D)))
    torch.testing.assert_close(yz, y0)
    halves = MoERouting(router_delta=torch.stack([delta, -delta], 1))
    assert torch.equal(halves.for_half(1).router_delta, -delta)
    assert MoERouting(router_delta=delta).for_half(1).router_delta is delta
