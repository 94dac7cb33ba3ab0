"""moe-asr extract --group-of: on tiny group-routed MoEs (hierarchical group routers, or hard
groups), the cut package keeps exactly the group's experts in the guided layer (plus the
experts its free choices need), its encoder equals the full model's with the label forced
on the group's utterances, it is a normal package, and bad input gives one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_asr.analysis.extract import ExtractError, extract_group, select_group_experts
from moe_asr.cli import main
from moe_asr.config import Config, DataConfig, FeatureConfig, GuidanceConfig, MoEConfig
from moe_asr.data.datadir import load_datadir, subset_datadir
from moe_asr.data.dataset import AsrDataset, make_loader, make_sampler
from moe_asr.data.labels import LabelVocab
from moe_asr.data.tokenizer import TokenizerConfig, train_tokenizer
from moe_asr.export import ExportError, export_model
from moe_asr.model import build_model
from moe_asr.package import load_package, save_package
from tests.tiny_config import tiny_model_config
from tests.tone_corpus import make_tone_corpus

TEXTS = ["abc", "bad", "cafe", "face", "head", "bead"]
VOCAB = LabelVocab({"accent": ["unk", "x", "y", "z"]})
# two groups of the 6 experts: family xy (x, y) -> experts 0-2, z -> experts 3-5
FAMILIES = {"x": "xy", "y": "xy"}
GROUP, FREE_PICK = [0, 1, 2], 5  # layer 1 ff1 is built to take every free choice to expert 5
CASES = {
    "hier_top2_free1": {"top_k": 2, "free": 1},
    "hier_top2": {"top_k": 2, "free": 0},
    "hier_top1_guided_layer_only": {"top_k": 1, "free": 0, "layers": "1"},
    "hard_top2_free1": {"top_k": 2, "free": 1, "hard": True},
}


def _config(top_k: int, free: int, layers: str = "all", hard: bool = False, **extra) -> Config:
    routing = {"hard_groups": True} if hard else {"group_router": True}
    guidance = GuidanceConfig(
        labels=["accent"],
        group_decision="utterance",
        router_loss_weight=0.3,
        free_experts=free,
        guided_layers=[1],
        groups=FAMILIES,
        **routing,
        **extra,
    )
    moe = MoEConfig(num_experts=6, top_k=top_k, layers=layers, guidance=guidance)
    return Config(
        model=tiny_model_config(moe=moe), data=DataConfig(features=FeatureConfig(num_mel_bins=40))
    )


def _save(path, cfg: Config, tok, vocab=VOCAB, data=None):
    """A package of ``cfg`` (seeded). With free choices and ``data``, layer 1 (whose
    LayerNorms add 20 u) takes every free choice of ff1 to expert 5 (router row +u, rows 3-4
    -u), those of ff2 to expert 3 on half of the group's frames, 4 on the other half (rows
    ~u +- v, v orthogonal to u, split near the median of v.x / u.x): both outrank the group's
    experts (small rows), so a plain top-2 over the kept experts would pick 3 and 4."""
    torch.manual_seed(0)
    model = build_model(cfg.model, tok.vocab_size, vocab).eval()
    model.set_cmvn(torch.full((40,), -5.0), torch.full((40,), 3.0))
    if cfg.model.moe.guidance.free_experts and data is not None:
        layer = model.encoder.layers[1]
        u, v = torch.linalg.qr(torch.randn(16, 2)).Q.t()  # orthonormal
        rows = 0.05 * torch.randn(2, 6, 16)
        with torch.no_grad():
            layer.norm_ff1.bias.copy_(20 * u)
            layer.norm_ff2.bias.copy_(20 * u)
            rows[0, 3:5] -= u
            rows[0, FREE_PICK] += u
            layer.ff1.router.weight.copy_(rows[0])
        seen = []  # ff2's inputs on the group's frames (with padding: the split is rough)
        hook = layer.norm_ff2.register_forward_hook(lambda m, i, o: seen.append(o.flatten(0, 1)))
        forced = model.forced_routing({"accent": "x"})
        _encoder_out(model, cfg, data, _group_utts(data), forced)
        hook.remove()
        x = torch.cat(seen)  # (N, 16)
        # split at the widest gap of the middle half of the ratios, not at a frame: a frame
        # at the split would tie experts 3 and 4, and float rounding (which differs between
        # CPUs and between the full and the cut router's matmuls) would pick either
        q = (x @ v / (x @ u)).sort().values
        lo, hi = len(q) // 4, 3 * len(q) // 4
        j = lo + int((q[lo + 1 : hi + 1] - q[lo:hi]).argmax())
        assert q[j + 1] - q[j] > 1e-3, "no clear split of ff2's frames: change the seed"
        r = float(q[j] + q[j + 1]) / 2
        with torch.no_grad():
            rows[1, 3] = (1 - r) * u + v
            rows[1, 4] = (1 + r) * u - v
            rows[1, 5] -= u
            layer.ff2.router.weight.copy_(rows[1])
    return save_package(
        path,
        config=cfg,
        model_state=model.state_dict(),
        tokenizer_bytes=tok.to_bytes(),
        label_vocab=vocab,
    )


def _group_utts(data) -> list[str]:
    """The utterances of family xy (accents x and y)."""
    utt2accent = load_datadir(data).groups["accent"]
    return sorted(u for u, a in utt2accent.items() if a in ("x", "y"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract_group")
    tok = train_tokenizer(TEXTS, TokenizerConfig(type="char"))
    data = make_tone_corpus(root / "dev", TEXTS, accents=["x", "y", "z"])
    models = {n: _save(root / f"{n}.pt", _config(**kw), tok, data=data) for n, kw in CASES.items()}
    return {"root": root, "tok": tok, "data": data, "models": models}


def _encoder_out(model, cfg, data, utts, routing=None) -> dict[str, torch.Tensor]:
    ds = AsrDataset(subset_datadir(load_datadir(data), utts), None, None, cfg.data, train=False)
    out = {}
    with torch.no_grad():
        for batch in make_loader(ds, make_sampler(ds, shuffle=False), 0):
            enc = model.encode(batch.feats, batch.feat_lens, routing)
            out.update({u: enc.out[b, : int(enc.lens[b])] for b, u in enumerate(batch.utt_ids)})
    return out


def test_select_group_experts_keeps_the_group_and_the_free_choices_it_needs():
    # 100 frames, top-2 with 1 free choice in group [0, 1]: 100 group choices, and free ones
    # 20 inside the group, 50 to expert 3, 25 to expert 5, 5 to expert 2
    row = np.array([70, 50, 5, 50, 0, 25])
    assert select_group_experts(row, [1, 0], 100, 2, 1, 0.7) == ([0, 1, 3], 2)
    assert select_group_experts(row, [0, 1], 100, 2, 1, 0.95) == ([0, 1, 3, 5], 2)
    assert select_group_experts(row, [0, 1], 100, 2, 1, 1.0) == ([0, 1, 2, 3, 5], 2)
    assert select_group_experts(row, [0, 1], 100, 2, 1, 0.2) == ([0, 1], 0)  # inside suffices
    assert select_group_experts(row, [0, 1], 100, 2, 0, 1.0) == ([0, 1], 0)  # no free choice
    # a one-expert group with top-2 (no frames seen): one other expert at least, even unused
    assert select_group_experts(np.zeros(3), [0], 0, 2, 1, 0.5) == ([0, 1], 1)
    with pytest.raises(ExtractError, match=r"\(0, 1\]"):
        select_group_experts(row, [0, 1], 100, 2, 1, 0.0)


@pytest.mark.parametrize("case", list(CASES))
def test_group_cut_equals_the_forced_full_model(setup, case):
    kw = CASES[case]
    out = setup["root"] / f"{case}_x.pt"
    r = extract_group(
        setup["models"][case], setup["data"], value="x", coverage=1.0, out=out, progress=False
    )
    full, small = load_package(setup["models"][case]), load_package(out)
    assert (r.group, r.values, r.forced, r.group_layers) == ("xy", ["x", "y"], "x", [1])
    raw = torch.load(out, weights_only=True)  # a normal package: nothing executes on load
    ext = raw["meta"]["extract"]
    assert (ext["mode"], ext["group"], ext["values"], ext["forced"]) == (
        "group",
        "xy",
        ["x", "y"],
        "x",
    )
    assert (ext["utts"], ext["group_layers"], ext["free_experts"]) == (4, [1], kw["free"])
    assert ext["guidance"]["group_router"] is not kw.get("hard", False)

    guided = [f for f in r.ffns if f["layer"] == 1]
    assert all(f["kept"][:3] == GROUP for f in guided)
    if kw["free"]:  # fixed-group layers: the group first, then the free choices' experts
        assert (guided[0]["kept"], guided[0]["fixed_group"]) == ([*GROUP, FREE_PICK], 3)
        assert (guided[1]["kept"], guided[1]["fixed_group"]) == ([*GROUP, 3, 4], 3)
    else:  # only the group: a plain top-k MoE over its experts
        assert all((f["kept"], f["fixed_group"]) == (GROUP, 0) for f in guided)
    moe = small.config.model.moe
    assert moe.guidance == GuidanceConfig() and small.model.guide_names == []
    assert moe.ffn_experts == [len(f["kept"]) for f in r.ffns]
    fixed = [f["fixed_group"] for f in r.ffns]
    assert moe.ffn_fixed_group == (fixed if any(fixed) else [])
    assert moe.fixed_group_free == (kw["free"] if any(fixed) else 0)

    # parameters: the dropped experts with their router rows, and the group routers
    expert = sum(p.numel() for p in full.model.encoder.layers[1].ff1.experts[0].parameters())
    dropped = sum(f["experts"] - len(f["kept"]) for f in r.ffns)
    routers = sum(p.numel() for p in full.model.guidance.group_routers.parameters())
    assert (routers > 0) is not kw.get("hard", False)
    n_full = sum(p.numel() for p in full.model.parameters())
    n_small = sum(p.numel() for p in small.model.parameters())
    assert n_full - n_small == dropped * (expert + 16) + routers and dropped >= 6
    assert (ext["params_before"], ext["params_after"]) == (n_full, n_small)

    # the contract: on the group's utterances, the cut encoder is the full one with x forced
    utts = _group_utts(setup["data"])
    forced = full.model.forced_routing({"accent": "x"})
    a = _encoder_out(full.model, full.config, setup["data"], utts, forced)
    b = _encoder_out(small.model, small.config, setup["data"], utts)
    assert sorted(a) == sorted(b) == utts
    for u in utts:
        torch.testing.assert_close(b[u], a[u], atol=1e-5, rtol=0)
    if kw["free"]:  # the cut layers' choices: one in the group (0-2), then the free one
        ds = AsrDataset(subset_datadir(load_datadir(setup["data"]), utts), None, None,
                        small.config.data, train=False)  # fmt: skip
        ff1, ff2 = [], []
        for batch in make_loader(ds, make_sampler(ds, shuffle=False), 0):
            with torch.no_grad():
                stats = small.model.encode(batch.feats, batch.feat_lens).router_stats
            first, second = (s.topk_idx[s.mask] for s in stats if s.layer == 1)  # (N, 2) each
            ff1.append(first)
            ff2.append(second)
        ff1, ff2 = torch.cat(ff1), torch.cat(ff2)
        assert (ff1[:, 0] < 3).all() and (ff1[:, 1] == 3).all()  # expert 5, now 3
        assert (ff2[:, 0] < 3).all() and set(ff2[:, 1].tolist()) == {3, 4}


def test_cli_group_of_writes_a_package_that_decodes(setup, capsys, tmp_path):
    model = setup["models"]["hier_top2_free1"]
    out = tmp_path / "xy.pt"
    args = ["extract", "--model", str(model), "--data", str(setup["data"])]
    assert main([*args, "--group-of", "y", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "accent group xy (x, y), forced y, from 4 utterances; experts kept" in printed
    assert (
        "1a 4/6" in printed and "routing within group xy (no group router) in layers 1" in printed
    )
    assert "parameters" in printed and "note: label guidance removed" in printed
    # the family name picks the same group (forcing its first value)
    r = extract_group(
        model, setup["data"], value="xy", coverage=0.95, out=tmp_path / "f.pt", progress=False
    )
    assert r.forced == "x" and r.ffns[2]["kept"] == [*GROUP, FREE_PICK]
    dec = tmp_path / "decode"
    assert main(["decode", "--model", str(out), "--data", str(setup["data"]), "--out", str(dec),
                 "--no-progress"]) == 0  # fmt: skip
    assert len((dec / "hyp.txt").read_text().splitlines()) == len(TEXTS)
    wav = sorted((setup["data"].parent / "wav").glob("*.wav"))[0]
    assert main(["transcribe", str(out), str(wav)]) == 0
    # the full model cannot export (its group router routes label-free); the cut one can,
    # its fixed-group layers included
    with pytest.raises(ExportError, match="--group-of"):
        export_model(load_package(model), tmp_path / "full.ts", format="torchscript")
    r = export_model(load_package(out), tmp_path / "xy.ts", format="torchscript")
    assert r.max_abs_diff < 1e-4


def test_bad_group_of_input_gives_one_line_errors(setup, capsys, tmp_path):
    root, tok, hier = setup["root"], setup["tok"], setup["models"]["hier_top2_free1"]
    flat_cfg = Config(
        model=tiny_model_config(moe=MoEConfig(num_experts=4, top_k=2)),
        data=DataConfig(features=FeatureConfig(num_mel_bins=40)),
    )
    flat = _save(tmp_path / "flat.pt", flat_cfg, tok, None)
    dense_cfg = Config(model=tiny_model_config(ffn="dense"), data=flat_cfg.data)
    dense = _save(tmp_path / "dense.pt", dense_cfg, tok, None)
    embed = _save(tmp_path / "embed.pt", _config(2, 1, embed=True), tok)
    z_only = make_tone_corpus(root / "z_only", TEXTS[:2], accents=["z"])
    no_labels = make_tone_corpus(root / "no_labels", TEXTS[:2])

    def argv(model=hier, data=setup["data"], *more):
        return ["extract", "--model", str(model), "--data", str(data), *more,
                "--out", str(tmp_path / "o.pt"), "--no-progress"]  # fmt: skip

    cases = [
        (
            argv(hier, setup["data"], "--group-of", "zz"),
            "unknown accent value",
            "its groups: xy, z",
        ),
        (argv(hier, setup["data"], "--group-of", "x,y"), "expected one value", "e.g. fr"),
        (
            argv(flat, setup["data"], "--group-of", "x"),
            "does not route within expert groups",
            "--label NAME=V1[,V2]",
        ),  # fmt: skip
        (argv(dense, setup["data"], "--group-of", "x"), "dense model", "model.ffn: moe"),
        (argv(embed, setup["data"], "--group-of", "x"), "label embedding", "without one"),
        (argv(hier, z_only, "--group-of", "x"), "no utterance in", "values there: z"),
        (argv(hier, no_labels, "--group-of", "x"), "no utt2accent file", "utt2accent"),
        (argv(hier, setup["data"], "--accent", "x"), "group_router", "--group-of VALUE"),
        (argv(hier, setup["data"], "--group-of", "x", "--coverage", "0"), "(0, 1]", "0.95"),
        (argv(hier, setup["data"], "--group-of", "x", "--coverage", "1.5"), "(0, 1]", "0.95"),
    ]
    for args, what, hint in cases:
        capsys.readouterr()
        assert main(args) == 1, args
        err = capsys.readouterr().err.strip()
        assert what in err and hint in err and "\n" not in err, err
    assert not (tmp_path / "o.pt").exists()
    (tmp_path / "o.pt").write_text("old")
    assert main(argv(hier, setup["data"], "--group-of", "x")) == 1
    assert "exists" in capsys.readouterr().err
    assert main([*argv(hier, setup["data"], "--group-of", "x"), "--overwrite"]) == 0
    assert load_package(tmp_path / "o.pt").meta["extract"]["group"] == "xy"
