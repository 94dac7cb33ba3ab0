"""Specialization metrics on RoutingData built directly from known routing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moe_asr.analysis.metrics import (
    analyze,
    group_id_accuracy,
    group_metrics,
    load_metrics,
    normalized_mutual_info,
)
from moe_asr.analysis.routing import RoutingData
from moe_asr.errors import UserError


def make_data(hist: np.ndarray, frames: np.ndarray, *, probs: np.ndarray | None = None):
    """RoutingData with one layer from per-utterance top-1 counts ``hist`` (U, E)."""
    u, e = hist.shape
    probs = hist / frames[:, None] if probs is None else probs
    ent = -(np.where(probs > 0, probs * np.log(np.maximum(probs, 1e-30)), 0)).sum(-1)
    return RoutingData(
        utt_ids=[f"u{i:03d}" for i in range(u)],
        layers=[0],
        num_experts=e,
        top_k=1,
        top1=hist[:, None],
        topk=hist[:, None],
        prob_sum=(probs * frames[:, None])[:, None],
        frames=frames,
        entropy_sum=(ent * frames)[:, None],
    )


def _h(p):
    p = p[p > 0] / p.sum()
    return -(p * np.log(p)).sum()


def test_nmi_matches_entropy_identity_and_limits():
    rng = np.random.default_rng(0)
    joint = rng.integers(0, 50, (5, 3)).astype(float)
    mi = _h(joint.sum(1)) + _h(joint.sum(0)) - _h(joint.ravel())
    assert normalized_mutual_info(joint) == pytest.approx(mi / _h(joint.sum(1)))
    assert normalized_mutual_info(np.diag([10.0, 20.0, 5.0])) == pytest.approx(1.0)
    # expert determines group (two experts per group) -> 1; independence -> 0
    assert normalized_mutual_info(np.array([[3, 4, 0, 0], [0, 0, 5, 1.0]])) == pytest.approx(1.0)
    assert normalized_mutual_info(np.outer([1, 2, 3], [4, 1, 1])) == pytest.approx(0.0, abs=1e-12)
    assert normalized_mutual_info(np.array([[3.0, 4.0, 5.0]])) == 0.0  # H(G) = 0
    assert normalized_mutual_info(np.zeros((2, 2))) == 0.0


def test_load_metrics_balance_dead_expert_and_entropy():
    hist = np.array([[6, 2, 0], [6, 2, 0]])
    data = make_data(hist, hist.sum(1))
    (m,) = load_metrics(data)
    assert m["top1_share"] == [0.75, 0.25, 0.0]
    load = np.array([12.0, 4.0, 0.0])
    assert m["cv"] == pytest.approx(load.std() / load.mean(), abs=1e-6)
    assert m["max_min_ratio"] is None and m["dead_experts"] == [2]
    assert m["load_entropy_normalized"] == pytest.approx(_h(load) / math.log(3), abs=1e-6)
    # uniform router probabilities: per-frame entropy is log E
    probs = np.full((2, 3), 1 / 3)
    hist = np.array([[2, 2, 2], [1, 1, 1]])
    (m,) = load_metrics(make_data(hist, hist.sum(1), probs=probs))
    assert m["entropy_normalized"] == pytest.approx(1.0)
    assert m["cv"] == 0.0 and m["max_min_ratio"] == 1.0 and m["dead_experts"] == []


def test_preferred_group_uses_lift_not_group_size():
    # big group "a" (90 frames) spread over both experts; small "b" (10) only on expert 1
    hist = np.array([[60, 30], [0, 10]])
    data = make_data(hist, hist.sum(1))
    gm = group_metrics(data, ["a", "b"], shuffles=0)
    e0, e1 = gm["per_layer"][0]["preferred"]
    assert e0["group"] == "a" and e0["lift"] == pytest.approx(1 / 0.9, abs=1e-5)
    # P(b | e1) = 10/40 = 0.25, P(b) = 0.1 -> lift 2.5 although "a" has most e1 frames
    assert e1["group"] == "b" and e1["lift"] == pytest.approx(2.5)
    assert gm["per_layer"][0]["top1_share"] == [
        pytest.approx([2 / 3, 1 / 3], abs=1e-6),
        [0.0, 1.0],
    ]
    assert gm["frames"] == [90, 10] and gm["labels"] == ["a", "b"]


def test_unlabelled_utterances_are_unk_kept_in_nmi_left_out_of_id():
    hist = np.array([[5, 0], [5, 0], [0, 5], [0, 5], [3, 3]])
    data = make_data(hist, hist.sum(1))
    table = {"u000": "x", "u001": "x", "u002": "y", "u003": "y"}
    res = analyze(data, {"accent": table, "noise": {"other": "clean"}}, shuffles=0)
    acc = res["groups"]["accent"]
    assert acc["labels"] == ["x", "y", "unk"] and acc["utts"] == [2, 2, 1]
    assert acc["id"]["n_eval"] == 4 and acc["id"]["accuracy"] == 1.0
    assert "noise" not in res["groups"]
    assert any("'noise'" in n and "skipped" in n for n in res["notes"])


def test_no_groups_gives_load_and_entropy_only():
    hist = np.array([[5, 1], [2, 4]])
    res = analyze(make_data(hist, hist.sum(1)), {})
    assert res["groups"] == {} and len(res["load"]) == 1
    assert "load and entropy only" in res["notes"][0]


def _speaker_data(per_spk: int = 20):
    """accents A (speakers s0, s1) and B (s2, s3); routing encodes the speaker, not the accent."""
    rng = np.random.default_rng(1)
    hists, accents, spk = [], {}, {}
    for s in range(4):
        for _ in range(per_spk):
            h = rng.integers(0, 3, 4)
            h[s] += 30
            utt = f"u{len(hists):03d}"
            hists.append(h)
            accents[utt] = "A" if s < 2 else "B"
            spk[utt] = f"s{s}"
    hist = np.array(hists)
    return make_data(hist, hist.sum(1)), accents, spk


def test_group_id_holds_out_speakers_so_speaker_routing_does_not_leak():
    data, accents, spk = _speaker_data()
    labels = [accents[u] for u in data.utt_ids]
    by_utt = group_id_accuracy(data, labels)
    assert by_utt["split_by"] == "utterance" and by_utt["accuracy"] == 1.0
    by_spk = group_id_accuracy(data, labels, speakers=spk)
    assert by_spk["split_by"] == "speaker" and by_spk["n_folds"] == 2
    assert by_spk["accuracy"] <= 0.75  # an unseen speaker's experts say nothing about accent
    assert by_spk["chance"] == 0.5
    assert np.array(by_spk["confusion"]).sum() == 80


def test_group_id_falls_back_to_utterance_split_with_one_speaker_per_label():
    data, accents, _ = _speaker_data(per_spk=5)
    labels = [accents[u] for u in data.utt_ids]
    one_each = {u: ("s0" if accents[u] == "A" else "s2") for u in data.utt_ids}
    res = group_id_accuracy(data, labels, speakers=one_each)
    assert res["split_by"] == "utterance" and "one speaker" in res["split_note"]


def test_group_id_needs_two_labels_and_rejects_bad_options():
    hist = np.array([[5, 1], [2, 4], [1, 1]])
    data = make_data(hist, hist.sum(1))
    res = group_id_accuracy(data, ["a", "a", "b"])
    assert res["accuracy"] is None and res["dropped_labels"] == ["b"] and "note" in res
    with pytest.raises(UserError, match="cosine or euclidean"):
        group_id_accuracy(data, ["a", "a", "b"], metric="manhattan")
    with pytest.raises(UserError, match="at least 2 folds"):
        group_id_accuracy(data, ["a", "a", "b"], folds=1)


def test_group_id_euclidean_and_random_routing_near_chance():
    rng = np.random.default_rng(3)
    hist = rng.multinomial(40, [0.25] * 4, size=400)
    data = make_data(hist, hist.sum(1))
    labels = [f"g{i % 4}" for i in range(400)]
    for metric in ("cosine", "euclidean"):
        res = group_id_accuracy(data, labels, metric=metric)
        assert res["chance"] == 0.25 and res["n_folds"] == 5
        assert abs(res["accuracy"] - 0.25) < 0.1
    gm = group_metrics(data, labels, shuffles=10)
    assert gm["per_layer"][0]["nmi"] < 0.02
