"""collect_routing against a fake encoder that follows the RouterStats contract."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from moe_asr.analysis.metrics import analyze, group_id_accuracy
from moe_asr.analysis.routing import NoMoELayersError, RoutingData, collect_routing
from moe_asr.errors import UserError

NUM_ACCENTS = 4
FEAT_DIM = 8


@dataclass
class FakeRouterStats:
    """Same fields as moe_asr.nn.moe.RouterStats."""

    probs: torch.Tensor  # (B, T, E)
    logits: torch.Tensor  # (B, T, E)
    topk_idx: torch.Tensor  # (B, T, k)
    topk_weight: torch.Tensor  # (B, T, k)
    mask: torch.Tensor  # (B, T)
    layer: int
    half: int = 0


class FakeMoEEncoder(torch.nn.Module):
    """Subsamples by 2; each MoE layer routes with a linear router on the features.

    mode "accent": the router reads the accent one-hot channels, so expert = accent.
    mode "random": logits are random per frame. mode "dense": no MoE layers.
    """

    def __init__(
        self, mode: str, *, layers=(1, 3), top_k=2, reverse_topk=False, halves=(0,), min_len=0
    ):
        super().__init__()
        self.mode, self.layers, self.top_k, self.reverse_topk = mode, layers, top_k, reverse_topk
        self.halves, self.min_len = halves, min_len
        self.router = torch.nn.Linear(FEAT_DIM, NUM_ACCENTS, bias=False)
        with torch.no_grad():
            self.router.weight.zero_()
            self.router.weight[:, :NUM_ACCENTS] = 5.0 * torch.eye(NUM_ACCENTS)
        self.gen = torch.Generator().manual_seed(0)
        self.calls: list[object] = []
        self.seen_training: list[bool] = []

    def encode(self, feats, feat_lens, routing=None):
        self.calls.append(routing)
        self.seen_training.append(self.training)
        short = (feat_lens < self.min_len).nonzero().flatten().tolist()
        if short:
            raise UserError(f"batch item(s) {short} have fewer than {self.min_len} frames")
        x = feats[:, ::2]  # (B, T', F)
        lens = (feat_lens + 1) // 2
        mask = torch.arange(x.shape[1])[None, :] < lens[:, None]  # (B, T')
        stats = []
        if self.mode != "dense":
            for layer, half in [(x, h) for x in self.layers for h in self.halves]:
                if self.mode == "accent":
                    logits = self.router(x)
                else:
                    logits = torch.randn(*x.shape[:2], NUM_ACCENTS, generator=self.gen)
                probs = logits.softmax(-1)
                w, idx = probs.topk(self.top_k, dim=-1)
                if self.reverse_topk:  # contract does not promise sorted top-k
                    w, idx = w.flip(-1), idx.flip(-1)
                stats.append(FakeRouterStats(probs, logits, idx, w, mask, layer, half))
        return SimpleNamespace(out=x, lens=lens, router_stats=stats)


def make_batches(n_utts: int, batch_size: int, seed: int = 0):
    """Batches of utterances whose accent (= index % 4) is written in feature channels 0..3.

    Padding frames carry a huge value in channel 0 so that counting them would show up.
    """
    g = torch.Generator().manual_seed(seed)
    accents = {}
    batches = []
    for start in range(0, n_utts, batch_size):
        ids = [f"utt{i:04d}" for i in range(start, min(start + batch_size, n_utts))]
        lens = torch.randint(10, 40, (len(ids),), generator=g)
        feats = torch.full((len(ids), int(lens.max()), FEAT_DIM), 0.0)
        feats[..., 0] = 100.0
        for b, u in enumerate(ids):
            a = int(u[3:]) % NUM_ACCENTS
            accents[u] = f"acc{a}"
            real = 0.1 * torch.randn(int(lens[b]), FEAT_DIM, generator=g)
            real[:, a] += 1.0
            feats[b, : lens[b]] = real
        batches.append(SimpleNamespace(utt_ids=ids, feats=feats, feat_lens=lens))
    return batches, accents


def test_accent_router_counts_real_frames_only_and_routes_by_accent():
    batches, accents = make_batches(12, 5)
    data = collect_routing(FakeMoEEncoder("accent"), batches, progress=False)
    assert data.utt_ids == [f"utt{i:04d}" for i in range(12)]
    assert data.layers == [1, 3] and data.num_experts == 4 and data.top_k == 2
    lens = torch.cat([b.feat_lens for b in batches])
    assert data.frames.tolist() == ((lens + 1) // 2).tolist()
    for u, utt in enumerate(data.utt_ids):
        a = int(accents[utt][3:])
        for li in range(2):
            assert data.top1[u, li, a] == data.frames[u]
            assert data.top1[u, li].sum() == data.frames[u]
            assert data.topk[u, li].sum() == 2 * data.frames[u]
            assert data.prob_sum[u, li].sum() == pytest.approx(data.frames[u], rel=1e-5)
    res = analyze(data, {"accent": accents}, shuffles=0)
    assert res["groups"]["accent"]["per_layer"][0]["nmi"] == pytest.approx(1.0)


def test_top1_is_highest_weight_even_when_topk_unsorted():
    batches, accents = make_batches(8, 4)
    data = collect_routing(FakeMoEEncoder("accent", reverse_topk=True), batches, progress=False)
    for u, utt in enumerate(data.utt_ids):
        assert data.top1[u, 0, int(accents[utt][3:])] == data.frames[u]


def test_accent_router_gives_nmi_one_and_perfect_accent_id():
    batches, accents = make_batches(40, 8)
    data = collect_routing(FakeMoEEncoder("accent"), batches, progress=False)
    res = analyze(data, {"accent": accents})
    acc = res["groups"]["accent"]
    assert all(r["nmi"] > 0.99 for r in acc["per_layer"])
    assert acc["id"]["accuracy"] == 1.0 and acc["id"]["chance"] == 0.25


def test_random_router_gives_nmi_near_zero():
    batches, accents = make_batches(200, 50)
    data = collect_routing(FakeMoEEncoder("random"), batches, progress=False)
    labels = [accents[u] for u in data.utt_ids]
    res = analyze(data, {"accent": accents}, shuffles=5)
    for r in res["groups"]["accent"]["per_layer"]:
        assert r["nmi"] < 0.02
        assert r["nmi_shuffled"] < 0.02
    ident = group_id_accuracy(data, labels)
    assert ident["accuracy"] < 0.5  # chance is 0.25


def test_dense_model_is_a_clear_user_error():
    batches, _ = make_batches(4, 4)
    with pytest.raises(NoMoELayersError, match="no MoE layers.*ffn: moe"):
        collect_routing(FakeMoEEncoder("dense"), batches, progress=False)
    assert issubclass(NoMoELayersError, UserError)


def test_eval_mode_no_grad_options_passed_and_training_flag_restored():
    model = FakeMoEEncoder("accent")
    model.train()
    batches, _ = make_batches(6, 3)
    opts = {"mode": "label_free"}
    collect_routing(model, batches, opts, progress=False)
    assert model.training
    assert model.seen_training == [False, False]
    assert model.calls == [opts, opts]


def test_max_utts_stops_mid_batch_and_dict_batches_work():
    batches, _ = make_batches(10, 4)
    dict_batches = [vars(b) for b in batches]
    model = FakeMoEEncoder("accent")
    data = collect_routing(model, dict_batches, max_utts=6, progress=False)
    assert data.utt_ids == [f"utt{i:04d}" for i in range(6)]
    assert len(model.calls) == 2
    with pytest.raises(UserError, match="positive"):
        collect_routing(model, dict_batches, max_utts=0, progress=False)


def test_duplicate_utterance_and_empty_data_are_user_errors():
    batches, _ = make_batches(4, 4)
    with pytest.raises(UserError, match="utt0000 appears twice"):
        collect_routing(FakeMoEEncoder("accent"), batches + batches, progress=False)
    with pytest.raises(UserError, match="no utterances"):
        collect_routing(FakeMoEEncoder("accent"), [], progress=False)
    with pytest.raises(UserError, match="feat_lens"):
        collect_routing(FakeMoEEncoder("accent"), [{"utt_ids": ["a"]}], progress=False)


def test_save_load_roundtrip_and_subset(tmp_path):
    batches, _ = make_batches(9, 4)
    data = collect_routing(FakeMoEEncoder("random"), batches, progress=False)
    path = data.save(tmp_path / "r" / "routing.npz")
    back = RoutingData.load(path)
    assert back.utt_ids == data.utt_ids and back.layers == data.layers
    assert back.num_experts == 4 and back.top_k == 2
    for name in ("top1", "topk", "prob_sum", "frames", "entropy_sum"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))
    sub = data.subset(["utt0003", "utt0001"])
    np.testing.assert_array_equal(sub.top1, data.top1[[3, 1]])
    with pytest.raises(UserError, match="not in the routing data"):
        data.subset(["nope"])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="bad.npz"):
        RoutingData.load(tmp_path / "bad.npz")


def test_refused_utterances_are_skipped_and_reported_the_rest_kept(capsys, tmp_path):
    batches, accents = make_batches(12, 4)
    lens = {u: int(n) for b in batches for u, n in zip(b.utt_ids, b.feat_lens)}
    model = FakeMoEEncoder("accent", min_len=20)
    data = collect_routing(model, batches, progress=False)
    short = sorted(u for u, n in lens.items() if n < 20)
    assert short and sorted(data.skipped) == short
    assert data.utt_ids == [u for u in sorted(lens) if u not in short]
    assert "skipping utterance " + short[0] in capsys.readouterr().err
    for u, utt in enumerate(data.utt_ids):
        assert data.frames[u] == (lens[utt] + 1) // 2
        assert data.top1[u, 0, int(accents[utt][3:])] == data.frames[u]
    res = analyze(data, {"accent": accents}, shuffles=0)
    assert sorted(res["skipped"]) == short and "refused by the encoder" in res["notes"][0]
    back = RoutingData.load(data.save(tmp_path / "r.npz"))
    assert back.skipped == data.skipped
    with pytest.raises(UserError, match="no utterances to analyse.*refused"):
        collect_routing(FakeMoEEncoder("accent", min_len=99), batches, progress=False)


def test_both_macaron_halves_are_separate_layers():
    batches, accents = make_batches(8, 4)
    model = FakeMoEEncoder("accent", layers=(0, 2), halves=(0, 1))
    data = collect_routing(model, batches, progress=False)
    assert data.layers == [0, 0, 2, 2] and data.halves == [0, 1, 0, 1]
    assert data.layer_names == ["0a", "0b", "2a", "2b"]
    res = analyze(data, {"accent": accents}, shuffles=0)
    assert [r["layer"] for r in res["load"]] == ["0a", "0b", "2a", "2b"]
    assert any("macaron" in n for n in res["notes"])


def test_real_model_contract_label_free_and_expert_mask():
    """The real AsrModel's encode() and RouterStats, tiny and random."""
    from moe_asr.config import DecoderConfig, ModelConfig, MoEConfig
    from moe_asr.model import RoutingOptions, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(
        input_dim=FEAT_DIM,
        d_model=16,
        num_heads=2,
        num_layers=2,
        d_ff=32,
        subsampling_channels=4,
        moe=MoEConfig(num_experts=4, top_k=2),
        decoder=DecoderConfig(num_layers=1, num_heads=2, d_ff=16),
    )
    model = build_model(cfg, 10, None)
    batches, _ = make_batches(8, 4)
    data = collect_routing(model, batches, progress=False)
    assert data.layer_names == ["0a", "0b", "1a", "1b"] and data.top_k == 2
    assert (data.top1.sum(-1) == data.frames[:, None]).all()
    assert (data.topk.sum(-1) == 2 * data.frames[:, None]).all()
    masked = collect_routing(model, batches, RoutingOptions(expert_mask={1: [3]}), progress=False)
    assert masked.topk[:, 2:, 3].sum() == 0 and masked.topk[:, :2, 3].sum() > 0
