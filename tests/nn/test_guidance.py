import pytest
import torch

from moe_asr.config import ConfigError, GuidanceConfig, MoEConfig
from moe_asr.data.labels import LabelVocab
from moe_asr.errors import UserError
from moe_asr.nn.guidance import LabelGuidance, RoutingOptions
from moe_asr.nn.routing import parse_expert_mask, parse_forced

D = 8
VOCAB = LabelVocab(
    {
        "accent": ["unk", "de", "en-gb", "en-us", "fr"],
        "noise": ["unk", "clean", "white"],
        "family": ["unk", "germanic", "native", "romance"],
    }
)
FAMILIES = {"en-gb": "native", "en-us": "native", "de": "other", "fr": "other"}


def _guidance(moe_layers=(0, 1, 2, 3), num_layers=4, experts=4, top_k=1, **kw):
    moe = MoEConfig(num_experts=experts, top_k=top_k, guidance=GuidanceConfig(**kw))
    return LabelGuidance(D, moe, list(moe_layers), num_layers, VOCAB)


def _run(g, routing, labels=None, b=3, t=5):
    """Route every layer of a 4-layer encoder; -> ({layer: MoERouting | None}, group logits)."""
    label_logits, group_logits = {}, {}
    fn = g.route_fn(routing, labels, b, torch.device("cpu"), label_logits, group_logits)
    h, mask = torch.randn(b, t, D), torch.ones(b, t, dtype=torch.bool)
    return {i: fn(i, h, mask) for i in range(4)}, group_logits


def test_parse_force_and_mask_options():
    assert parse_forced(["noise=white", " accent = fr"]) == {"noise": "white", "accent": "fr"}
    assert parse_expert_mask(["3:0,1", "4:2", "3:1,2"]) == {3: [0, 1, 2], 4: [2]}
    for bad in ("accent", "=fr", "accent="):
        with pytest.raises(UserError, match="LABEL=VALUE"):
            parse_forced([bad])
    with pytest.raises(UserError, match="given twice"):
        parse_forced(["accent=fr", "accent=de"])
    for bad in ("3", "x:1", "3:", "-1:0", "3:a"):
        with pytest.raises(UserError, match="LAYER:EXPERT"):
            parse_expert_mask([bad])


@pytest.mark.parametrize("name,value", [("accent", "fr"), ("noise", "white"), ("family", "native")])
def test_forcing_any_guided_label_feeds_its_embedding(name, value):
    g = _guidance(labels=["accent", "noise", "family"], embed=True).eval()
    free, _ = _run(g, g.forced_routing())
    forced, _ = _run(g, g.forced_routing({name: value}))
    table = g.embed[name].weight
    delta = table[VOCAB.index(name, value)] - table[0]  # forced value instead of unk
    for i in range(4):
        torch.testing.assert_close(forced[i].cond - free[i].cond, delta.expand(3, D))


def test_layer_condition_feeds_the_embedding_to_the_guided_layers_input_not_the_router():
    g = _guidance(labels=["accent"], embed=True, condition="layer", guided_layers=[2, 3])
    g.eval()
    routed, _ = _run(g, g.forced_routing({"accent": "fr"}))
    fr = g.embed["accent"].weight[VOCAB.index("accent", "fr")]
    assert routed[0] is None and routed[1] is None  # not guided
    for i in (2, 3):
        assert routed[i].cond is None and routed[i].router_delta is None
        torch.testing.assert_close(routed[i].layer_cond, fr.expand(3, D))


def test_forced_routing_errors_name_the_option():
    g = _guidance(labels=["accent", "noise"], embed=True)
    with pytest.raises(
        UserError, match="--force family=native: cannot force 'family'.*accent, noise"
    ):
        g.forced_routing({"family": "native"})
    with pytest.raises(
        UserError, match="--force noise=pink: unknown noise; the model knows clean, white"
    ):
        g.forced_routing({"noise": "pink"})
    with pytest.raises(UserError, match="layer 7 is not an MoE layer"):
        g.forced_routing(expert_mask={7: [0]})
    with pytest.raises(UserError, match=r"experts \[4\] not in 0..3"):
        g.forced_routing(expert_mask={0: [4]})
    with pytest.raises(UserError, match="fewer than top_k=1"):
        g.forced_routing(expert_mask={0: [0, 1, 2, 3]})
    ok = g.forced_routing({"noise": "white"}, {2: [1, 3]})
    assert ok == RoutingOptions(mode="forced", forced={"noise": "white"}, expert_mask={2: [1, 3]})
    masked, _ = _run(g, ok)
    assert masked[2].disabled == (1, 3) and masked[1].disabled == ()


def test_mask_may_not_empty_a_group_routing_is_restricted_to():
    # groups in vocabulary order: de -> other {0, 1}, then native {2, 3}
    g = _guidance(labels=["accent"], groups=FAMILIES, hard_groups=True)
    g.forced_routing(expert_mask={0: [0, 1]})  # label-free: flat hard groups do not restrict
    g.forced_routing({"accent": "en-us"}, {0: [0, 1]})  # forced to the native group
    with pytest.raises(UserError, match="group 'other'"):
        g.forced_routing({"accent": "fr"}, {0: [0, 1]})
    h = _guidance(labels=["accent"], groups=FAMILIES, group_router=True, router_loss_weight=1.0)
    with pytest.raises(UserError, match="group 'other'"):
        h.forced_routing(expert_mask={0: [0, 1]})  # the group router may pick either group


def test_guidance_only_in_the_configured_upper_layers():
    g = _guidance(
        labels=["accent"],
        embed=True,
        groups=FAMILIES,
        group_router=True,
        router_loss_weight=1.0,
        guided_layers=[2, 3],
    )
    assert set(g.group_routers) == {"2", "3"}
    routes, group_logits = _run(g, g.forced_routing())
    assert routes[0] is None and routes[1] is None  # lower layers route freely
    assert routes[2].cond is not None and routes[2].allowed.shape == (3, 5, 4)
    assert set(group_logits) == {2, 3} and group_logits[2].shape == (3, 5, 2)
    # the router loss layers can narrow the group mechanism further
    g2 = _guidance(
        labels=["accent"],
        embed=True,
        hard_groups=True,
        groups=FAMILIES,
        guided_layers=[1, 2, 3],
        router_loss_layers=[3],
    )
    routes, _ = _run(g2, g2.forced_routing({"accent": "de"}))
    assert routes[0] is None and routes[1].allowed is None and routes[1].cond is not None
    assert routes[3].allowed.tolist() == [[True, True, False, False]] * 3


def test_group_router_decides_label_free_and_the_label_decides_when_given():
    g = _guidance(
        labels=["accent"],
        groups=FAMILIES,
        group_router=True,
        router_loss_weight=1.0,
        top_k=2,
        free_experts=1,
    ).eval()
    torch.manual_seed(0)
    routes, group_logits = _run(g, g.forced_routing())
    for i in range(4):
        choice = group_logits[i].argmax(-1)  # (B, T) 0 = other {0, 1}, 1 = native {2, 3}
        want = torch.stack([choice == 0, choice == 0, choice == 1, choice == 1], -1)
        assert torch.equal(routes[i].allowed, want) and routes[i].free == 1
    routes, _ = _run(g, g.forced_routing({"accent": "en-gb"}))
    assert routes[0].allowed[..., 2:].all() and not routes[0].allowed[..., :2].any()
    labels = {"accent": torch.tensor([1, 0, 3])}  # de (other), unk (router), en-us (native)
    routes, group_logits = _run(g, RoutingOptions(mode="oracle"), labels)
    a = routes[1].allowed
    assert a[0, :, :2].all() and not a[0, :, 2:].any()
    assert a[2, :, 2:].all() and not a[2, :, :2].any()
    router_pick = group_logits[1][1].argmax(-1)
    assert torch.equal(a[1, :, 2], router_pick == 1)


def test_utterance_level_group_decision_is_constant_over_frames():
    g = _guidance(
        labels=["accent"],
        groups=FAMILIES,
        group_router=True,
        router_loss_weight=1.0,
        group_decision="utterance",
    ).eval()
    routes, group_logits = _run(g, g.forced_routing(), t=9)
    for i in range(4):
        a = routes[i].allowed  # (B, T, E)
        assert (a == a[:, :1]).all()
        want = group_logits[i].log_softmax(-1).mean(1).argmax(-1)  # (B,)
        assert torch.equal(a[:, 0, 2], want == 1)


def test_label_loss_schedule():
    g = _guidance(
        labels=["accent"],
        router_loss_weight=1.0,
        loss_warmup_steps=10,
        loss_decay_steps=20,
        loss_final_scale=0.2,
    )
    got = [g.loss_scale(s) for s in (0, 5, 10, 20, 30, 1000)]
    assert got == pytest.approx([0.0, 0.5, 1.0, 0.6, 0.2, 0.2])
    assert g.loss_scale(None) == 1.0
    assert _guidance(labels=["accent"], router_loss_weight=1.0).loss_scale(7) == 1.0


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"hard_groups": True, "group_router": True, "router_loss_weight": 1.0}, "enable one"),
        ({"group_router": True}, "router_loss_weight > 0"),
        ({"hard_groups": True, "free_experts": 1}, "free_experts=1 must be in 1..top_k-1"),
        ({"free_experts": 1, "top_k": 2}, "needs hard_groups or group_router"),
        ({"hard_groups": True, "top_k": 2}, "fewer than the top_k - free_experts = 2"),
        ({"hard_groups": True, "experts": 3}, "num_experts >= values"),
        ({"embed": True, "guided_layers": [0, 5]}, r"guided_layers: layers \[5\]"),
        ({"embed": True, "router_loss_layers": [1], "moe_layers": (0, 2)}, "not MoE layers"),
        ({"embed": True, "group_label": "speaker"}, "group_label='speaker'"),
        ({"group_router": True, "router_loss_weight": 1.0, "group_decision": "x"}, "frame or"),
        ({"embed": True, "loss_warmup_steps": -1}, ">= 0"),
        ({"embed": True, "condition": "encoder"}, "use router .* or layer"),
    ],
)
def test_config_errors(kw, match):
    kw = {"labels": ["accent"], **kw}
    if "free_experts" in kw:
        kw.setdefault("groups", FAMILIES)
    with pytest.raises(ConfigError, match=match):
        _guidance(**kw)


def test_guiding_by_any_label_file_and_grouping_another_label():
    # e.g. utt2family from the corpus: no code knows the name
    g = _guidance(labels=["family"], hard_groups=True, experts=3)
    assert g.label_groups.names == ("germanic", "native", "romance")
    routes, _ = _run(g, g.forced_routing({"family": "romance"}))
    assert routes[0].allowed.tolist() == [[False, False, True]] * 3
    g = _guidance(
        labels=["noise", "accent"], hard_groups=True, group_label="accent", groups=FAMILIES
    )
    routes, _ = _run(g, g.forced_routing({"accent": "de"}))
    assert routes[0].allowed.tolist() == [[True, True, False, False]] * 3


def test_label_probs_for_every_label_of_the_router_loss():
    from moe_asr.nn.moe import RouterStats

    g = _guidance(labels=["accent", "noise"], router_loss_weight=1.0, moe_layers=(0, 1))
    logits = torch.tensor([[[4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 9.0]]])  # (1, 2, 4)
    mask = torch.tensor([[True, False]])  # the second frame is padding
    stats = [
        RouterStats(
            logits.softmax(-1),
            logits,
            logits.argmax(-1, keepdim=True),
            torch.ones(1, 2, 1),
            mask,
            layer=i,
        )
        for i in (0, 1)
    ]
    probs = g.label_probs(stats, {}, {}, mask)
    assert set(probs) == {"accent", "noise"}
    assert probs["accent"].values == ["de", "en-gb", "en-us", "fr"]
    torch.testing.assert_close(probs["accent"].probs, logits[:, 0].softmax(-1))
    # noise: groups {0, 1} clean and {2, 3} white, score = logsumexp of the group's logits
    clean, white = torch.logsumexp(torch.tensor([4.0, 0.0]), 0), torch.log(torch.tensor(2.0))
    torch.testing.assert_close(probs["noise"].probs, torch.stack([clean, white]).softmax(-1)[None])


def test_augmentation_labels_guide_with_a_vocabulary_from_the_config():
    # noise type and SNR bucket recorded by data.augment: no utt2noise / utt2snr needed
    from moe_asr.config import AugmentConfig
    from moe_asr.data.datadir import DataDir
    from moe_asr.data.dataset import build_label_vocab

    aug = AugmentConfig(noise_prob=0.8, noise_types=["white", "babble"], snr_buckets=[0.0, 10.0])
    vocab = build_label_vocab(DataDir(), ["noise", "snr"], aug)
    moe = MoEConfig(
        num_experts=3,
        guidance=GuidanceConfig(labels=["noise", "snr"], embed=True, hard_groups=True),
    )
    g = LabelGuidance(D, moe, [0, 1, 2, 3], 4, vocab)
    assert g.label_groups.names == ("clean", "white", "babble")  # the group label: noise
    routes, _ = _run(g, g.forced_routing({"noise": "white", "snr": "0..10"}))
    assert routes[0].allowed.tolist() == [[False, True, False]] * 3  # one expert per type
    with pytest.raises(UserError, match="unknown snr; the model knows clean, <0, 0..10, >=10"):
        g.forced_routing({"snr": "5"})


def test_value_routers_follow_the_forced_value_and_the_estimate_label_free():
    g = _guidance(
        labels=["accent"],
        utterance_estimate=True,
        estimate_layer=0,
        value_routers=True,
        guided_layers=[2, 3],
    )
    assert sorted(g.value_routers["accent"]) == ["2", "3"]
    assert g.value_routers["accent"]["2"].shape == (5, 2, 4, D)
    assert not g.embed["accent"].weight.any()  # starts at zero: routes as unguided
    with torch.no_grad():
        for rows in g.value_routers["accent"].values():
            rows.normal_()
    forced, _ = _run(g, RoutingOptions(mode="forced", forced={"accent": "fr"}))
    fr = VOCAB.index("accent", "fr")
    assert forced[0] is None and forced[1] is None  # not guided
    for i in (2, 3):
        want = g.value_routers["accent"][str(i)][fr].expand(3, -1, -1, -1)
        torch.testing.assert_close(forced[i].router_delta, want)
    label_logits, group_logits = {}, {}
    fn = g.route_fn(RoutingOptions(), None, 3, torch.device("cpu"), label_logits, group_logits)
    h, mask = torch.randn(3, 5, D), torch.ones(3, 5, dtype=torch.bool)
    free = {i: fn(i, h, mask) for i in range(4)}
    probs = label_logits["accent"].softmax(-1)  # the estimate of layer 0, unk held at 0
    rows = g.value_routers["accent"]["3"]
    want = torch.einsum("bv,vhed->bhed", probs, rows)
    torch.testing.assert_close(free[3].router_delta, want, atol=1e-5, rtol=1e-5)
    # a new value's grown row: the mean of its group's values, or unk's without a group
    grown = g.grown_rows("accent", None)["value_routers.accent.3"]
    assert grown.shape == (6, 2, 4, D) and torch.equal(grown[-1], rows[0])


def test_value_routers_need_a_label_source():
    from moe_asr.config import Config, validate_config

    cfg = Config()
    cfg.model.ffn = "moe"
    cfg.model.moe.guidance = GuidanceConfig(labels=["accent"], value_routers=True)
    with pytest.raises(ConfigError, match="value_routers.*embed or utterance_estimate"):
        validate_config(cfg)
