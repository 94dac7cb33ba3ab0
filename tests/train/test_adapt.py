"""moe-asr adapt: only the chosen parameter set changes, a new accent joins the vocabulary
(and, with expert groups, the group the model's own routing prefers) and can be forced,
the --minutes selection is deterministic, bounded and nested, bad input gives one-line
errors before anything is written, --overwrite and --resume behave as in training."""

from __future__ import annotations

import json

import pytest
import torch

from moe_asr.cli import main
from moe_asr.config import (
    Config,
    DataConfig,
    FeatureConfig,
    GuidanceConfig,
    MoEConfig,
    TrainConfig,
)
from moe_asr.data.labels import LabelVocab
from moe_asr.data.tokenizer import TokenizerConfig, train_tokenizer
from moe_asr.errors import UserError
from moe_asr.model import build_model
from moe_asr.package import load_package
from moe_asr.train.adapt import AdaptError, AdaptSetup, adapt_model, select_minutes
from moe_asr.train.checkpoint import load_checkpoint
from moe_asr.train.trainable import set_trainable, trainable_names
from tests.tiny_config import tiny_model_config, untrained_package
from tests.tone_corpus import make_tone_corpus

TEXTS = ["abc", "bad", "cafe", "face", "head", "bead", "deaf", "fade", "babe", "cage"]
VOCAB = LabelVocab({"accent": ["unk", "x", "y"]})
# flat guidance without expert groups: label embedding + utterance estimate (tiny.yaml's)
FLAT = GuidanceConfig(labels=["accent"], embed=True, utterance_estimate=True, estimate_layer=0)
# hierarchical: group routers trained with the router label loss (one group per value)
HIER = GuidanceConfig(labels=["accent"], embed=True, group_router=True, router_loss_weight=0.5)


def _config(guidance: GuidanceConfig | None = None, ffn: str = "moe") -> Config:
    return Config(
        model=tiny_model_config(
            ffn=ffn, moe=MoEConfig(num_experts=4, top_k=1, guidance=guidance or GuidanceConfig())
        ),
        data=DataConfig(
            features=FeatureConfig(num_mel_bins=40), max_batch_seconds=3.0, num_buckets=2
        ),
        train=TrainConfig(lr=0.01, num_threads=1, log_interval=1, keep_best=2),
    )


def _package(path, cfg: Config, vocab: LabelVocab | None, seed: int = 0, edit=None):
    torch.manual_seed(seed)
    meta = {"averaged_epochs": [1]}
    return untrained_package(path, cfg, TEXTS, vocab, edit=edit, meta=meta)


def _prefer_group_y(model) -> None:
    """Every group router picks group 1 (accent y) on every frame, whatever the input."""
    with torch.no_grad():
        for router in model.guidance.group_routers.values():
            router.weight.zero_()
            router.bias.copy_(torch.tensor([-8.0, 8.0]))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt")
    return {
        "root": root,
        "new": make_tone_corpus(root / "new", TEXTS, prefix="n"),  # no utt2accent: all new
        "mixed": make_tone_corpus(root / "mixed", TEXTS, accents=["x", "y", "pt"], prefix="m"),
        "flat": _package(root / "flat.pt", _config(FLAT), VOCAB),
        "hier": _package(root / "hier.pt", _config(HIER), VOCAB, edit=_prefer_group_y),
        "hier_pt": _package(
            root / "hier_pt.pt",
            _config(GuidanceConfig(**{**vars(HIER), "groups": {"pt": "x", "fr": "y"}})),
            VOCAB,
            edit=_prefer_group_y,
        ),
        "flat_vr": _package(
            root / "flat_vr.pt",
            _config(GuidanceConfig(**{**vars(FLAT), "value_routers": True})),
            VOCAB,
        ),
        "dense": _package(root / "dense.pt", _config(ffn="dense"), None),
        "noise": _package(
            root / "noise.pt",
            _config(GuidanceConfig(labels=["noise"], embed=True)),
            LabelVocab({"noise": ["unk", "clean"]}),
        ),
    }


def _setup(env, tmp_path, model="flat", **kw) -> AdaptSetup:
    args = {
        "model": env[model],
        "train_data": env["new"],
        "label": "accent",
        "value": "pt",
        "out": tmp_path / "adapted.pt",
        "steps": 3,
        "epoch_minutes": 0.0,
        **kw,
    }
    return AdaptSetup(**args)


def _changed(a: dict, b: dict) -> set[str]:
    assert a.keys() == b.keys()
    return {k for k in a if not torch.equal(a[k], b[k])}


def test_select_minutes_is_deterministic_bounded_and_nested():
    durations = {f"u{i:03d}": 1.0 + (i * 37 % 11) for i in range(200)}  # 1..11 s
    one = select_minutes(durations, 1, seed=0)
    assert one == select_minutes(durations, 1, seed=0) and one == sorted(one)
    assert one != select_minutes(durations, 1, seed=1)
    previous: set[str] = set()
    for minutes in (0.5, 1, 2, 5, 15):
        chosen = select_minutes(durations, minutes, seed=3)
        seconds = sum(durations[u] for u in chosen)
        assert minutes * 60 - 11 < seconds <= minutes * 60  # at most one utterance short
        assert previous <= set(chosen)  # one seed: 0.5 min inside 1 min inside 2 min ...
        previous = set(chosen)
    assert select_minutes(durations, None, seed=3) == sorted(durations)


def test_parameter_sets_and_a_dense_model():
    tok = train_tokenizer(TEXTS, TokenizerConfig(type="char"))
    cfg = _config(HIER)
    cfg.model.moe.num_shared_experts = 1
    model = build_model(cfg.model, tok.vocab_size, VOCAB)
    router = set(trainable_names(model, "router"))
    assert "encoder.layers.1.ff2.router.weight" in router
    assert {"guidance.embed.accent.weight", "guidance.group_routers.0.bias"} <= router
    both = set(trainable_names(model, "router+experts"))
    assert "encoder.layers.0.ff1.shared.0.w1.weight" in both - router
    assert both - router == {n for n in both if ".experts." in n or ".shared." in n}
    n = set_trainable(model, "router")
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert {name for name, p in model.named_parameters() if p.requires_grad} == router
    dense = build_model(_config(ffn="dense").model, tok.vocab_size, None)
    assert trainable_names(dense, "router") == []
    with pytest.raises(UserError, match="use train.trainable=all"):
        set_trainable(dense, "router+experts")


@pytest.mark.parametrize("params", ["router", "router+experts", "all"])
def test_only_the_chosen_parameters_change(env, tmp_path, params):
    r = adapt_model(_setup(env, tmp_path, params=params))
    base = torch.load(r.exp_dir / "adapt" / "base.pt", weights_only=True)["model_state"]
    out = torch.load(r.path, weights_only=True)  # a normal package: nothing runs on load
    changed = _changed(base, out["model_state"])
    model = load_package(r.path).model
    allowed = set(trainable_names(model, params))
    assert changed and changed <= allowed, changed - allowed
    assert "cmvn_mean" not in changed
    routers = {n for n in allowed if ".router." in n}
    assert routers <= changed  # every router learned (top-1: each gets a gradient)
    assert any(n.startswith("guidance.embed.") for n in changed)
    experts = {n for n in changed if ".experts." in n}
    if params == "router":
        assert allowed == routers | {n for n in allowed if n.startswith("guidance.")}
        assert not experts
    else:
        assert experts
    if params == "all":
        assert {"ctc_head.weight", "encoder.layers.0.conv.pointwise1.weight"} & changed
    else:
        assert "ctc_head.weight" not in changed
    # what was adapted is in the config and the meta
    cfg = load_package(r.path).config
    assert cfg.train.trainable == params and cfg.train.max_steps == 3
    meta = out["meta"]["adapt"]
    assert meta["params"] == params and meta["value"] == "pt" and meta["steps_done"] == 3
    assert meta["trainable_params"] == sum(model.state_dict()[n].numel() for n in allowed)
    assert meta["source_meta"] == {"averaged_epochs": [1]}
    assert r.trainable < r.total or params == "all"
    assert f"train.trainable={params}" in (r.exp_dir / "train.log").read_text() or params == "all"


def test_value_set_trains_only_the_new_values_rows(env, tmp_path):
    """--params value: of every tensor only pt's row moves (AdamW's weight decay included);
    the known values' rows, routers and experts stay bit-exact."""
    r = adapt_model(
        _setup(env, tmp_path, model="flat_vr", params="value", overrides=["train.weight_decay=0.1"])
    )
    base = torch.load(r.exp_dir / "adapt" / "base.pt", weights_only=True)["model_state"]
    after = load_package(r.path)
    state = after.model.state_dict()
    changed = _changed(base, state)
    assert changed == {
        "guidance.embed.accent.weight",
        "guidance.heads.accent.3.weight",
        "guidance.heads.accent.3.bias",
        "guidance.value_routers.accent.0",
        "guidance.value_routers.accent.1",
    }
    pt = after.label_vocab.index("accent", "pt")
    for name in changed:
        assert pt == base[name].shape[0] - 1
        torch.testing.assert_close(state[name][:pt], base[name][:pt], rtol=0, atol=0)
        assert not torch.equal(state[name][pt], base[name][pt])
    assert after.config.train.trainable == "value:accent=pt"
    d = state["guidance.value_routers.accent.0"][pt].numel()
    assert r.trainable == 2 * d + 16 + 16 + 1  # corrections, embedding row, head row + bias


def test_value_set_errors_name_what_to_pass(env, tmp_path):
    tok = train_tokenizer(TEXTS, TokenizerConfig(type="char"))
    model = build_model(_config(FLAT).model, tok.vocab_size, VOCAB)
    with pytest.raises(UserError, match="not guided by 'noise'.*accent"):
        set_trainable(model, "value:noise=white")
    with pytest.raises(UserError, match="no value 'zz'; the model knows x, y"):
        set_trainable(model, "value:accent=zz")
    hier = build_model(
        _config(GuidanceConfig(labels=["accent"], group_router=True, router_loss_weight=0.5)).model,
        tok.vocab_size,
        VOCAB,
    )
    with pytest.raises(UserError, match="no rows per accent value.*router"):
        set_trainable(hier, "value:accent=x")


def test_new_accent_joins_the_vocabulary_and_decodes_forced_and_label_free(env, tmp_path):
    out = tmp_path / "pt.pt"
    args = ["adapt", "--model", str(env["flat"]), "--train-data", str(env["new"])]
    assert main([*args, "--label", "accent=pt", "--steps", "2", "--out", str(out)]) == 0
    pkg = load_package(out)
    assert pkg.label_vocab.values["accent"] == ["unk", "x", "y", "pt"]  # ids 1, 2 unchanged
    assert pkg.config.model.moe.guidance.groups == {}  # no expert groups: none needed
    # the new rows started as unk's embedding and the mean head row of the known values
    base = torch.load(tmp_path / "pt_adapt" / "adapt" / "base.pt", weights_only=True)
    state = base["model_state"]
    emb = state["guidance.embed.accent.weight"]
    assert emb.shape[0] == 4 and torch.equal(emb[3], emb[0])
    head = state["guidance.heads.accent.3.weight"]
    torch.testing.assert_close(head[3], head[1:3].mean(0))
    pkg.model.forced_routing({"accent": "pt"})
    for force in ([], ["--force", "accent=pt"]):
        dec = tmp_path / f"dec{len(force)}"
        cmd = ["decode", "--model", str(out), "--data", str(env["new"]), "--out", str(dec)]
        assert main([*cmd, "--no-progress", *force]) == 0
        assert len((dec / "hyp.txt").read_text().splitlines()) == len(TEXTS)
    # the selection carries the label; the user's data dir is untouched
    work = tmp_path / "pt_adapt" / "adapt" / "data"
    assert set((work / "utt2accent").read_text().split()[1::2]) == {"pt"}
    assert not (env["new"] / "utt2accent").exists()


def test_a_new_value_joins_the_group_its_routing_prefers_or_the_one_given(env, tmp_path):
    r = adapt_model(_setup(env, tmp_path, model="hier", out=tmp_path / "a.pt"))
    assert r.plan["group"] == "y" and r.plan["group_from"] == "routing"
    assert r.plan["group_probs"]["y"] > 0.99
    pkg = load_package(r.path)
    guidance = pkg.model.guidance
    assert pkg.config.model.moe.guidance.groups == {"pt": "y"}
    assert guidance.label_groups.names == ("x", "y")  # no new group: experts not re-split
    assert guidance.label_groups.value_group == (-1, 0, 1, 1)
    probs = pkg.model.label_probs(pkg.model.encode(*_feats()))
    assert probs["accent_group"].values == ["x", "y"]  # pt shares y's experts: families
    # the base model: pt starts as y (its group's only value), so forcing routes the same
    base = load_package(r.exp_dir / "adapt" / "base.pt").model
    feats, lens = _feats()
    with torch.no_grad():
        a = base.encode(feats, lens, base.forced_routing({"accent": "pt"})).out
        b = base.encode(feats, lens, base.forced_routing({"accent": "y"})).out
    torch.testing.assert_close(a, b, atol=0, rtol=0)

    given = adapt_model(_setup(env, tmp_path, model="hier", group="x", out=tmp_path / "b.pt"))
    assert given.plan["group_from"] == "--group" and given.plan["group_probs"] is None
    assert load_package(given.path).config.model.moe.guidance.groups == {"pt": "x"}
    # a family the config already names for the value wins over routing
    configured = adapt_model(_setup(env, tmp_path, model="hier_pt", out=tmp_path / "d.pt"))
    assert (configured.plan["group"], configured.plan["group_from"]) == ("x", "config")
    # data with utt2accent: only the value's utterances, adapting a value the model knows
    known = adapt_model(
        _setup(
            env, tmp_path, model="hier", train_data=env["mixed"], value="y", out=tmp_path / "c.pt"
        )
    )
    assert known.plan["group"] is None and len(known.plan["utts"]) == 3
    assert load_package(known.path).label_vocab.values == VOCAB.values


def _feats():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 30, 40, generator=g), torch.tensor([30, 22])


def test_minutes_bounds_the_selection_and_small_sets_are_repeated(env, tmp_path):
    r = adapt_model(_setup(env, tmp_path, minutes=0.04, epoch_minutes=0.5, steps=1))
    assert 0 < r.plan["seconds"] <= 2.4 and len(r.plan["utts"]) < len(TEXTS)
    again = select_minutes(
        {u: float(d) for u, d in _table(env["new"] / "utt2dur").items()}, 0.04, seed=0
    )
    assert r.plan["utts"] == again
    repeats = r.plan["repeats"]
    assert repeats == -(-30 // r.plan["seconds"])
    data = r.exp_dir / "adapt" / "data"
    assert len(_table(data / "text")) == repeats * len(r.plan["utts"])
    assert len(_table(r.exp_dir / "adapt" / "dev" / "text")) == len(r.plan["utts"])


def _table(path) -> dict[str, str]:
    return dict(line.split(maxsplit=1) for line in path.read_text().splitlines())


def test_replay_trains_known_values_beside_the_new_one_with_their_labels(env, tmp_path):
    r = adapt_model(
        _setup(env, tmp_path, minutes=0.02, replay_data=env["mixed"], replay_ratio=1.5, steps=1)
    )
    plan = r.plan
    mixed = _table(env["mixed"] / "utt2accent")
    replay = plan["replay_utts"]
    assert replay and all(mixed[u] in ("x", "y") for u in replay)  # never the new value
    budget = 1.5 * plan["seconds"] * plan["repeats"]
    durs = {u: float(d) for u, d in _table(env["mixed"] / "utt2dur").items()}
    assert plan["replay_seconds"] == pytest.approx(sum(durs[u] for u in replay), abs=1e-3)
    assert plan["replay_seconds"] <= budget + 1e-6
    assert sum(plan["replay_values"].values()) == len(replay)
    # the training data: the selection labelled with the new value, the replay with its own
    labels = _table(r.exp_dir / "adapt" / "data" / "utt2accent")
    assert set(labels) == set(plan["utts"]) | set(replay)
    assert all(labels[u] == "pt" for u in plan["utts"])
    assert all(labels[u] == mixed[u] for u in replay)
    # the draw is the seed's: the same again, another seed another
    from moe_asr.config import DataConfig
    from moe_asr.train.adapt_data import AdaptDataError, replay_selection

    again = replay_selection(env["mixed"], "accent", "pt", budget, 0, DataConfig())
    assert again[0] == replay
    others = {tuple(replay_selection(env["mixed"], "accent", "pt", budget, s, DataConfig())[0])
              for s in range(1, 6)}  # fmt: skip
    assert others - {tuple(replay)}
    only_new = make_tone_corpus(tmp_path / "only_pt", TEXTS[:2], accents=["pt"], prefix="o")
    with pytest.raises(AdaptDataError, match="no usable utterance of a accent other than pt"):
        replay_selection(only_new, "accent", "pt", budget, 0, DataConfig())


def test_bad_input_gives_one_line_errors_and_writes_nothing(env, tmp_path, capsys):
    out = tmp_path / "o.pt"
    base = ["adapt", "--train-data", str(env["new"]), "--out", str(out)]
    flat = [*base, "--model", str(env["flat"])]
    cases = [
        (
            ["adapt", "--model", str(env["flat"]), "--train-data", str(env["mixed"]),
             "--label", "accent=fr", "--out", str(out)],
            "no utterance in", "values there: pt, x, y",
        ),
        ([*base, "--model", str(env["dense"]), "--label", "accent=pt"], "dense model",
         "model.ffn: moe"),
        ([*base, "--model", str(env["noise"]), "--label", "accent=pt"], "not guided by label",
         "--label <one of noise>=VALUE"),
        ([*flat, "--label", "accent=pt", "--minutes", "5"], "fewer than --minutes 5",
         "pass --minutes 0.09 or less"),
        ([*flat, "--label", "accent"], "expected NAME=VALUE", "accent=pt"),
        ([*flat, "--label", "accent=pt", "--minutes", "0"], "must be > 0", "--minutes"),
        ([*flat, "--label", "accent=pt", "--group", "x"], "no expert groups", "drop --group"),
        ([*base, "--model", str(env["hier"]), "--label", "accent=pt", "--group", "zz"],
         "not an expert group of accent", "x, y"),
        ([*flat, "--label", "accent=pt", "--set", "model.d_ff=64"], "other weights than --model",
         "not the architecture"),
        ([*flat, "--label", "accent=pt", "--set", "train.lr=-1"], "train.lr", "--set"),
        (["adapt", "--model", str(tmp_path / "none.pt"), "--train-data", str(env["new"]),
          "--label", "accent=pt", "--out", str(out)], "does not exist", "moe-asr average"),
        ([*flat, "--label", "accent=pt", "--resume"], "nothing to resume", "drop --resume"),
        ([*flat, "--label", "accent=pt", "--replay-data", str(env["new"])], "has no utt2accent",
         "labelled with the accent values"),
        ([*flat, "--label", "accent=pt", "--replay-data", str(env["mixed"]), "--replay-ratio",
          "0"], "--replay-ratio 0: must be > 0", "drop --replay-data"),
    ]  # fmt: skip
    for argv, what, hint in cases:
        capsys.readouterr()
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert what in err and hint in err and "\n" not in err, err
        assert err.startswith("moe-asr adapt: error: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no --out, no run dir


def test_overwrite_policy(env, tmp_path, capsys):
    out = tmp_path / "o.pt"
    out.write_text("keep me")
    argv = ["adapt", "--model", str(env["flat"]), "--train-data", str(env["new"])]
    argv += ["--label", "accent=pt", "--steps", "1", "--epoch-minutes", "0", "--out", str(out)]
    assert main(argv) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "keep me" and not (tmp_path / "o_adapt").exists()
    assert main([*argv[:-2], "--out", str(env["flat"]), "--overwrite"]) == 1
    assert "is the --model itself" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert load_package(out).label_vocab.values["accent"][-1] == "pt"
    # the run dir holds that run: a second one is refused, --resume continues it
    assert main([*argv, "--overwrite"]) == 1
    assert "pass --resume to continue it" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--resume"]) == 0
    assert "reached train.max_steps=1" in capsys.readouterr().out


def test_resume_continues_to_the_uninterrupted_weights(env, tmp_path, monkeypatch):
    from moe_asr.train import trainer

    ref = adapt_model(_setup(env, tmp_path, steps=8, out=tmp_path / "ref.pt"))
    setup = _setup(env, tmp_path, steps=8, out=tmp_path / "cut.pt")
    real_keep = trainer._keep_best

    def stop_after_first_epoch(*a, **k):
        real_keep(*a, **k)
        raise RuntimeError("interrupted")

    monkeypatch.setattr(trainer, "_keep_best", stop_after_first_epoch)
    with pytest.raises(RuntimeError, match="interrupted"):
        adapt_model(setup)
    monkeypatch.undo()
    last = load_checkpoint(tmp_path / "cut_adapt" / "checkpoints" / "last.pt")
    assert 0 < last["state"]["step"] < 8 and not (tmp_path / "cut.pt").exists()
    with pytest.raises(AdaptError, match="other minutes"):
        adapt_model(
            _setup(env, tmp_path, steps=8, out=tmp_path / "cut.pt", minutes=0.05, resume=True)
        )
    with pytest.raises(AdaptError, match="earlier adaptation run"):
        adapt_model(setup)
    setup.resume = True
    r = adapt_model(setup)
    assert r.steps == 8
    a = torch.load(ref.path, weights_only=True)["model_state"]
    b = torch.load(r.path, weights_only=True)["model_state"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=0, msg=k)
    plan = json.loads((r.exp_dir / "adapt" / "adapt.json").read_text())
    assert plan["utts"] == ref.plan["utts"]
    assert "resumed at epoch" in (r.exp_dir / "train.log").read_text()
