"""The verdict on routing built with a known answer: the right expert named for each accent,
"does not specialise" (with its numbers) for a router that ignores the group, a weak
association told apart from specialisation, and the untestable cases said so."""

from __future__ import annotations

import numpy as np
import pytest

from moe_asr.analysis.metrics import analyze, default_shuffles, group_metrics
from moe_asr.analysis.routing import RoutingData
from moe_asr.analysis.verdict import group_verdict

# accent a is routed to expert EXPERT_OF[a] in the first layer; experts 2 and 4 get only
# the leftover frames of every accent
EXPERT_OF = {"es": 3, "fr": 0, "in": 5, "us": 1}


def routed(
    n_utts: int = 80,
    *,
    expert_of: dict[str, list[int]] | None = None,
    focus: float = 0.85,
    n_experts: int = 6,
    seed: int = 0,
):
    """Two MoE layers: layer 1 sends ``focus`` of an utterance's frames to its accent's
    experts (split evenly) and the rest uniformly; layer 3 routes uniformly at random."""
    expert_of = expert_of or {a: [e] for a, e in EXPERT_OF.items()}
    accents = sorted(expert_of)
    rng = np.random.default_rng(seed)
    frames = rng.integers(40, 90, n_utts)
    top1 = np.zeros((n_utts, 2, n_experts), dtype=np.int64)
    table, noise = {}, {}
    for u in range(n_utts):
        a = accents[u % len(accents)]
        p = np.full(n_experts, (1 - focus) / n_experts)
        p[expert_of[a]] += focus / len(expert_of[a])
        top1[u, 0] = rng.multinomial(frames[u], p)
        top1[u, 1] = rng.multinomial(frames[u], [1 / n_experts] * n_experts)
        utt = f"spk{u % 16:02d}-u{u:03d}"
        table[utt], noise[utt] = a, ("clean" if rng.random() < 0.5 else "noisy")
    data = RoutingData(
        utt_ids=list(table),
        layers=[1, 3],
        num_experts=n_experts,
        top_k=1,
        top1=top1,
        topk=top1,
        prob_sum=top1.astype(np.float64),
        frames=frames,
        entropy_sum=np.ones((n_utts, 2)),
    )
    return data, table, noise


def test_verdict_names_the_right_expert_for_each_accent():
    data, accents, noise = routed()
    res = analyze(data, {"accent": accents, "noise": noise})
    v = res["groups"]["accent"]["verdict"]
    assert v["specialises"] is True and v["layer"] == "1"
    assert v["significant_layers"] == ["1"] and list(v["served"]) == ["1"]
    assert {a: [x["expert"] for x in ex] for a, ex in v["by_label"].items()} == {
        a: [e] for a, e in EXPERT_OF.items()
    }
    assert sorted(x["expert"] for x in v["experts"]) == [0, 1, 3, 5]  # 2 and 4 serve nobody
    for a, e in EXPERT_OF.items():
        assert f"expert {e} -> {a} (lift " in v["text"]
    assert "Expert(s) 2, 4 serve no single accent value" in v["text"]
    (served,) = v["by_label"]["es"]
    row = res["groups"]["accent"]["per_layer"][0]
    gi = res["groups"]["accent"]["labels"].index("es")
    assert served["lift"] == row["lift"][gi][3] >= 1.5
    assert served["lift"] > row["lift_shuffled_max"][gi][3]
    assert served["coverage"] == row["top1_share"][gi][3] > 0.8
    # noise is unrelated to routing: not specialised, with the numbers and the baseline
    nv = res["groups"]["noise"]["verdict"]
    assert nv["specialises"] is False and nv["layer"] is None and nv["experts"] == []
    assert nv["text"].startswith("noise: routing does not specialise.")
    closest = min(res["groups"]["noise"]["per_layer"], key=lambda r: (r["nmi_p_value"], -r["nmi"]))
    assert f"layer {closest['layer']}: NMI {closest['nmi']:.3f} vs " in nv["text"]
    assert f"{closest['nmi_shuffled']:.3f} with shuffled labels" in nv["text"]
    assert f"over {default_shuffles(2)} shuffles" in nv["text"]
    assert closest["nmi_p_value"] > 0.05 / 2


def test_two_experts_per_accent_are_both_named_and_unk_is_never_served():
    split = {"es": [0, 1], "fr": [2, 3], "in": [4, 5], "us": [6, 7]}
    data, accents, _ = routed(160, expert_of=split, n_experts=8, focus=0.9)
    unlabelled = [u for i, u in enumerate(data.utt_ids) if i % 4 == 0]  # all "es" utterances
    partial = {u: a for u, a in accents.items() if u not in unlabelled}
    res = analyze(data, {"accent": partial})
    v = res["groups"]["accent"]["verdict"]
    assert "unk" in res["groups"]["accent"]["labels"] and "unk" not in v["by_label"]
    assert {a: sorted(x["expert"] for x in ex) for a, ex in v["by_label"].items()} == {
        "fr": [2, 3],
        "in": [4, 5],
        "us": [6, 7],
    }
    assert all(g["group"] != "unk" for ex in v["experts"] for g in ex["groups"])
    assert all(0.35 < x["coverage"] < 0.65 for ex in v["by_label"].values() for x in ex)


def test_random_routing_does_not_specialise_with_numbers():
    data, accents, _ = routed(focus=0.0)
    stats = analyze(data, {"accent": accents})["groups"]["accent"]
    v = stats["verdict"]
    assert v["specialises"] is False and v["significant_layers"] == []
    assert "No layer's NMI is above the shuffled-label baseline (p <= 0.025 = 0.05 / 2" in v["text"]
    assert all(r["nmi_p_value"] > 0.025 for r in stats["per_layer"])


def test_a_weak_association_is_not_specialisation():
    # every accent leans a little towards its expert: NMI is clearly above the shuffled
    # baseline, but no expert's frames hold an accent 1.5 times as often as the data does
    data, accents, _ = routed(400, focus=0.1, n_experts=4, expert_of={"a": [0], "b": [1]})
    stats = analyze(data, {"accent": accents})["groups"]["accent"]
    v = stats["verdict"]
    assert v["significant_layers"] == ["1"] and v["specialises"] is False
    assert max(x for row in stats["per_layer"][0]["lift"] for x in row) < 1.5
    assert "But no expert's lift reaches 1.5 above its chance band" in v["text"]
    assert "A weak association, not experts serving accent values." in v["text"]
    # the same routing with a lower bar: expert 0 serves a, 1 serves b
    lax = group_verdict(stats, name="accent", min_lift=1.05)
    assert lax["specialises"] is True
    assert {a: [x["expert"] for x in ex] for a, ex in lax["by_label"].items()} == {
        "a": [0],
        "b": [1],
    }


def test_permutation_numbers_and_untestable_cases():
    data, accents, _ = routed(40)
    labels = [accents[u] for u in data.utt_ids]
    gm = group_metrics(data, labels, shuffles=99, seed=3)
    first = gm["per_layer"][0]
    assert gm["shuffles"] == 99 and first["nmi_p_value"] == pytest.approx(0.01)
    assert first["nmi_shuffled"] <= first["nmi_shuffled_max"] < first["nmi"]
    share = np.array(first["share_of_expert"])  # (G, E): each expert's frames over accents
    np.testing.assert_allclose(share.sum(axis=0), 1.0, atol=1e-5)
    lift = np.array(first["lift"], dtype=float)
    prior = np.array(gm["frames"]) / sum(gm["frames"])
    np.testing.assert_allclose(lift, share / prior[:, None], rtol=1e-4)
    assert np.array(first["lift_shuffled_max"]).shape == (4, 6)
    assert default_shuffles(1) == 199 and default_shuffles(12) == 479  # 1/(n+1) <= 0.05/(2*12)
    # 99 shuffles reach p = 0.01 > 0.05 / 12 layers: not tested, and says how many are needed
    wide = {**gm, "per_layer": gm["per_layer"] * 6}
    v = group_verdict(wide, name="accent")
    assert v["specialises"] is None and "use at least 239" in v["text"]
    none = group_metrics(data, labels, shuffles=0)
    assert none["per_layer"][0]["nmi_p_value"] is None
    v = group_verdict(none, name="accent")
    assert v["specialises"] is None and "not tested" in v["text"]
    one = group_metrics(data, ["es"] * data.num_utts, shuffles=19)
    v = group_verdict(one, name="accent")
    assert v["specialises"] is None and "nothing to tell apart" in v["text"]


def test_an_unused_expert_has_no_lift_and_serves_nobody():
    data, accents, _ = routed()
    data.top1[:, :, 4] += data.top1[:, :, 2]  # nothing ever goes to expert 2
    data.top1[:, :, 2] = 0
    res = analyze(data, {"accent": accents})
    row = res["groups"]["accent"]["per_layer"][0]
    assert all(r[2] is None for r in row["lift"]) and all(
        r[2] is None for r in row["lift_shuffled_max"]
    )
    assert 2 not in [x["expert"] for x in res["groups"]["accent"]["verdict"]["experts"]]
    assert res["groups"]["accent"]["verdict"]["specialises"] is True
