"""moe-asr extract: on a tiny MoE whose routing is constructed, the extracted package keeps
exactly the experts the group uses, computes what the full model does on those frames,
loads safely, decodes, transcribes and exports; bad input gives one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_asr.analysis.extract import ExtractError, extract_model, select_experts
from moe_asr.analysis.routing import RoutingData, collect_routing
from moe_asr.cli import main
from moe_asr.config import Config, DataConfig, FeatureConfig, MoEConfig
from moe_asr.data.dataset import AsrDataset, make_loader, make_sampler
from moe_asr.data.labels import LabelVocab
from moe_asr.data.tokenizer import TokenizerConfig, train_tokenizer
from moe_asr.model import build_model
from moe_asr.package import load_package, save_package
from tests.tiny_config import tiny_model_config, untrained_package
from tests.tone_corpus import make_tone_corpus

TEXTS = ["abc", "bad", "cafe", "face", "head", "bead"]
# the experts each MoE feed-forward (layer, half) is built to route every frame to
ROUTED = {(0, 0): [0, 1], (0, 1): [2, 3], (1, 0): [1, 3], (1, 1): [0, 2]}


def _config(ffn: str = "moe", top_k: int = 2, **guidance) -> Config:
    return Config(
        model=tiny_model_config(ffn=ffn, moe=MoEConfig(num_experts=4, top_k=top_k, **guidance)),
        data=DataConfig(features=FeatureConfig(num_mel_bins=40)),
    )


def _routed_model(cfg: Config, vocab_size: int):
    """Every frame of MoE feed-forward (i, h) goes to ROUTED[(i, h)]: the LayerNorm before it
    adds 20 * u (u a unit vector) and the router rows are +-u (+ small noise), so the chosen
    experts' logits are >= 16 and the others' <= -16 whatever the frame."""
    torch.manual_seed(0)
    model = build_model(cfg.model, vocab_size, None).eval()
    with torch.no_grad():
        for (i, h), experts in ROUTED.items():
            layer = model.encoder.layers[i]
            norm, ffn = (layer.norm_ff1, layer.ff1) if h == 0 else (layer.norm_ff2, layer.ff2)
            u = torch.nn.functional.normalize(torch.randn(16), dim=0)
            norm.bias.copy_(20 * u)
            sign = torch.tensor([1.0 if e in experts else -1.0 for e in range(4)])
            ffn.router.weight.copy_(sign[:, None] * u + 0.05 * torch.randn(4, 16))
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    data = make_tone_corpus(root / "dev", TEXTS, accents=["x", "y", "z"])
    tok = train_tokenizer(TEXTS, TokenizerConfig(type="char"))
    cfg = _config()
    model = _routed_model(cfg, tok.vocab_size)
    model.set_cmvn(torch.full((40,), -5.0), torch.full((40,), 3.0))
    path = save_package(
        root / "model.pt",
        config=cfg,
        model_state=model.state_dict(),
        tokenizer_bytes=tok.to_bytes(),
        label_vocab=None,
        meta={"averaged_epochs": [3]},
    )
    dense_cfg = _config("dense")
    dense = save_package(
        root / "dense.pt",
        config=dense_cfg,
        model_state=build_model(dense_cfg.model, tok.vocab_size, None).state_dict(),
        tokenizer_bytes=tok.to_bytes(),
        label_vocab=None,
    )
    return {"root": root, "data": data, "model": path, "dense": dense}


def _log_probs(model, cfg, data) -> list[torch.Tensor]:
    ds = AsrDataset(data, None, None, cfg.data, train=False)
    out = []
    with torch.no_grad():
        for batch in make_loader(ds, make_sampler(ds, shuffle=False), 0):
            enc = model.encode(batch.feats, batch.feat_lens)
            lp = model.ctc_log_probs(enc)
            out += [lp[b, : int(n)] for b, n in enumerate(enc.lens)]
    return out


def test_select_experts_keeps_the_fewest_covering_experts():
    counts = np.array([[50, 30, 15, 5], [0, 0, 100, 0], [25, 25, 25, 25], [10, 80, 10, 0]])
    assert select_experts(counts, 0.95, 1, [4, 4, 4, 4]) == [
        [0, 1, 2],
        [2],
        [0, 1, 2, 3],
        [0, 1, 2],
    ]
    assert select_experts(counts, 0.8, 1, [4] * 4) == [[0, 1], [2], [0, 1, 2, 3], [1]]
    assert select_experts(counts, 0.8, 2, [4] * 4) == [
        [0, 1],
        [0, 2],
        [0, 1, 2, 3],
        [0, 1],
    ]  # >= top_k, ties to low ids
    assert select_experts(counts, 1.0, 1, [4] * 4) == [[0, 1, 2, 3], [2], [0, 1, 2, 3], [0, 1, 2]]
    assert select_experts(counts[:, :3], 0.5, 1, [3] * 4)[3] == [1]  # a feed-forward's own size
    for bad in (0.0, -0.1, 1.01):
        with pytest.raises(ExtractError, match=r"\(0, 1\]"):
            select_experts(counts, bad, 1, [4] * 4)


def test_extract_keeps_the_routed_experts_and_the_output(setup, capsys):
    out = setup["root"] / "x.pt"
    args = ["extract", "--model", str(setup["model"]), "--data", str(setup["data"])]
    assert main([*args, "--accent", "x", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "experts kept 0a 2/4, 0b 2/4, 1a 2/4, 1b 2/4" in printed and "parameters" in printed

    raw = torch.load(out, weights_only=True)  # a normal package: nothing executes on load
    meta = raw["meta"]
    assert meta["averaged_epochs"] == [3]  # the source meta is kept
    ext = meta["extract"]
    assert (ext["label"], ext["values"], ext["utts"]) == ("accent", ["x"], 2)
    assert {(f["layer"], f["half"]): f["kept"] for f in ext["ffns"]} == ROUTED
    assert all(f["coverage"] == 1.0 and f["kept_prob_mass"] > 0.999 for f in ext["ffns"])

    full, small = load_package(setup["model"]), load_package(out)
    assert small.config.model.moe.ffn_experts == [2, 2, 2, 2]
    expert = sum(p.numel() for p in full.model.encoder.layers[0].ff1.experts[0].parameters())
    n_full = sum(p.numel() for p in full.model.parameters())
    n_small = sum(p.numel() for p in small.model.parameters())
    assert n_full - n_small == 4 * 2 * (expert + 16)  # 2 experts + 2 router rows x 4 FFNs
    assert (ext["params_before"], ext["params_after"]) == (n_full, n_small)
    # the kept experts are the original ones, renumbered
    ff = small.model.encoder.layers[1].ff1
    assert torch.equal(
        ff.experts[1].w1.weight, full.model.encoder.layers[1].ff1.experts[3].w1.weight
    )
    assert torch.equal(ff.router.weight, full.model.encoder.layers[1].ff1.router.weight[[1, 3]])
    # every frame routes to kept experts: the same log-probs on every utterance
    a = _log_probs(full.model, full.config, setup["data"])
    b = _log_probs(small.model, small.config, setup["data"])
    assert len(a) == len(TEXTS)
    for x, y in zip(a, b):
        torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    # the routing capture works on a model with fewer experts per feed-forward
    ds = AsrDataset(setup["data"], None, None, small.config.data, train=False)
    routing = collect_routing(
        small.model, make_loader(ds, make_sampler(ds, shuffle=False), 0), progress=False
    )
    assert routing.num_experts == 2 and int(routing.topk.sum()) == 2 * 4 * int(routing.frames.sum())

    # it decodes, transcribes and exports like any package
    dec = setup["root"] / "decode_x"
    assert (
        main(
            [
                "decode",
                "--model",
                str(out),
                "--data",
                str(setup["data"]),
                "--out",
                str(dec),
                "--no-progress",
            ]
        )
        == 0
    )
    assert len((dec / "hyp.txt").read_text().splitlines()) == len(TEXTS)
    wav = sorted((setup["data"].parent / "wav").glob("*.wav"))[0]
    assert main(["transcribe", str(out), str(wav)]) == 0
    assert (
        main(
            [
                "export",
                "--model",
                str(out),
                "--format",
                "torchscript",
                "--out",
                str(setup["root"] / "x.ts"),
            ]
        )
        == 0
    )


def test_label_selects_the_utterances_and_their_experts(setup, monkeypatch):
    """--label NAME=V1,V2 routes exactly the utterances with those values (capture stubbed:
    accent x uses experts 0/1, y 2/3, z 3 only)."""
    seen: list[list[str]] = []
    per_accent = {"x": [5, 5, 0, 0], "y": [0, 0, 5, 5], "z": [0, 0, 0, 10]}
    utt2accent = dict(
        line.split() for line in (setup["data"] / "utt2accent").read_text().splitlines()
    )

    def fake_collect(model, batches, routing_options=None, *, max_utts=None, progress=True):
        ids = [u for batch in batches for u in batch.utt_ids]
        seen.append(ids)
        topk = np.array([[per_accent[utt2accent[u]]] * 4 for u in ids])  # (U, L, E)
        return RoutingData(
            utt_ids=ids,
            layers=[0, 0, 1, 1],
            halves=[0, 1, 0, 1],
            num_experts=4,
            top_k=1,
            top1=topk,
            topk=topk,
            prob_sum=topk / 5.0,
            frames=np.full(len(ids), 10),
            entropy_sum=np.zeros((len(ids), 4)),
        )

    monkeypatch.setattr("moe_asr.analysis.extract.collect_routing", fake_collect)
    r = extract_model(
        setup["model"],
        setup["data"],
        label="accent",
        values=["y", "z"],
        coverage=0.9,
        out=setup["root"] / "yz.pt",
        progress=False,
    )
    assert sorted(seen[-1]) == sorted(u for u, a in utt2accent.items() if a in ("y", "z"))
    assert [f["kept"] for f in r.ffns] == [[2, 3]] * 4  # y+z: expert 3 has 30, expert 2 10 of 40
    r = extract_model(
        setup["model"],
        setup["data"],
        label="accent",
        values=["z"],
        coverage=0.9,
        out=setup["root"] / "z.pt",
        progress=False,
    )
    assert [f["kept"] for f in r.ffns] == [[0, 3]] * 4  # 3 alone covers; top_k=2 adds expert 0


def test_bad_input_gives_one_line_errors(setup, capsys, tmp_path):
    base = ["extract", "--model", str(setup["model"]), "--data", str(setup["data"])]
    out = ["--out", str(tmp_path / "o.pt"), "--no-progress"]
    cases = [
        ([*base, "--accent", "zz", *out], "accent zz: no utterance", "values there: x, y, z"),
        ([*base, "--accent", "x,zz", *out], "accent zz: no utterance", "values there"),
        ([*base, "--label", "noise=clean", *out], "no utt2noise file", "utt2accent"),
        ([*base, "--label", "accent", *out], "expected NAME=V1[,V2]", "accent=fr"),
        ([*base, "--accent", "x", "--coverage", "0", *out], "(0, 1]", "0.95"),
        ([*base, "--accent", "x", "--coverage", "1.5", *out], "(0, 1]", "0.95"),
        (
            [
                "extract",
                "--model",
                str(setup["dense"]),
                "--data",
                str(setup["data"]),
                "--accent",
                "x",
                *out,
            ],
            "dense model",
            "model.ffn: moe",
        ),
        ([*base, "--accent", "x", "--out", str(setup["model"])], "exists", "--overwrite"),
    ]
    for argv, what, hint in cases:
        capsys.readouterr()
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert what in err and hint in err and "\n" not in err, err
    assert not (tmp_path / "o.pt").exists()
    # --overwrite replaces an existing output
    (tmp_path / "o.pt").write_text("old")
    assert main([*base, "--accent", "x", *out, "--overwrite"]) == 0
    assert load_package(tmp_path / "o.pt").config.model.moe.ffn_experts == [2, 2, 2, 2]


def _guided_package(path, **guidance):
    """An untrained package guided by accent (values x, y) with ``guidance`` options."""
    from moe_asr.config import GuidanceConfig

    cfg = _config(guidance=GuidanceConfig(labels=["accent"], **guidance))
    return untrained_package(path, cfg, TEXTS, LabelVocab({"accent": ["unk", "x", "y"]}))


@pytest.mark.parametrize(
    "guidance, message",
    [
        ({"hard_groups": True}, r"guidance\.hard_groups.*--group-of VALUE"),
        ({"embed": True, "value_routers": True}, r"value_routers.*cannot cut"),
    ],
    ids=["hard_groups", "value_routers"],
)
def test_models_coverage_cannot_cut_are_refused_with_a_reason(setup, tmp_path, guidance, message):
    path = _guided_package(tmp_path / "g.pt", **guidance)
    with pytest.raises(ExtractError, match=message):
        extract_model(
            path, setup["data"], label="accent", values=["x"], coverage=0.9, out=tmp_path / "o.pt"
        )
    assert not (tmp_path / "o.pt").exists()
