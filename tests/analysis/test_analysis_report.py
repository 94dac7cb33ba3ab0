"""write_report: JSON, Markdown and a self-contained HTML whose every reference exists."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from moe_asr.analysis.report import select_groups, write_report
from moe_asr.analysis.routing import RoutingData
from moe_asr.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def accent_routed(n_utts: int = 48, n_layers: int = 3, seed: int = 0):
    """4 accents, 4 experts: layer 0 routes by accent, later layers uniformly at random."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(20, 60, n_utts)
    top1 = np.zeros((n_utts, n_layers, 4), dtype=np.int64)
    accents, noise, spk = {}, {}, {}
    for u in range(n_utts):
        a = u % 4
        top1[u, 0, a] = frames[u]
        for li in range(1, n_layers):
            top1[u, li] = rng.multinomial(frames[u], [0.25] * 4)
        utt = f"spk{u % 8}-utt{u:03d}"
        accents[utt], spk[utt] = f"accent{a}", f"spk{u % 8}"
        noise[utt] = "clean" if u % 3 else "babble"
    probs = (top1 + 1.0) / (top1.sum(-1, keepdims=True) + 4.0) * frames[:, None, None]
    data = RoutingData(
        utt_ids=list(accents),
        layers=[1, 3, 5][:n_layers],
        num_experts=4,
        top_k=1,
        top1=top1,
        topk=top1,
        prob_sum=probs,
        frames=frames,
        entropy_sum=np.full((n_utts, n_layers), 0.5) * frames[:, None],
    )
    return data, accents, noise, spk


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
        elif tag == "a":
            self.links.append(a["href"])
        if tag not in ("img", "meta"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()


def parse_html(path):
    p = _Refs()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    assert p.stack == []
    return p


def strict_json(path):
    def refuse(x):
        raise AssertionError(f"non-standard JSON constant {x}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_report_files_numbers_and_every_reference_exists(tmp_path):
    data, accents, noise, spk = accent_routed()
    out = tmp_path / "report_test"
    res = write_report(
        data, {"accent": accents, "noise": noise}, out, speakers=spk, title="test <set>"
    )
    saved = strict_json(out / "report.json")
    assert saved == res
    acc = saved["groups"]["accent"]
    assert [r["nmi"] for r in acc["per_layer"]][0] == pytest.approx(1.0)
    assert all(r["nmi"] < 0.05 for r in acc["per_layer"][1:])
    assert acc["nmi_max_layer"] == "1"
    assert acc["id"]["accuracy"] >= 0.95 and acc["id"]["split_by"] == "speaker"
    pref = acc["per_layer"][0]["preferred"]
    assert [p["group"] for p in pref] == [f"accent{e}" for e in range(4)]
    # expert e holds only accent e: lift = 1 / P(accent e) over frames
    total = data.frames.sum()
    for e, p in enumerate(pref):
        assert p["lift"] == pytest.approx(total / data.frames[e::4].sum(), rel=1e-5)

    html_refs = parse_html(out / "report.html")
    expected = {"load.png", "entropy.png", "nmi.png", "heatmap_accent.png", "heatmap_noise.png"}
    assert len(html_refs.imgs) == len(expected)
    for src in html_refs.imgs:  # self-contained: every image is an embedded PNG
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert set(html_refs.links) == expected
    for name in expected:
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    md_refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (out / "report.md").read_text())
    assert set(md_refs) == expected
    html_text = (out / "report.html").read_text()
    assert "test &lt;set&gt;" in html_text and "<set>" not in html_text
    again = RoutingData.load(out / "routing.npz")
    np.testing.assert_array_equal(again.top1, data.top1)


def test_report_without_groups_has_load_and_entropy_only(tmp_path):
    data, *_ = accent_routed(n_utts=8, n_layers=1)
    res = write_report(data, {}, tmp_path / "r")
    assert res["groups"] == {} and "load and entropy only" in res["notes"][0]
    refs = parse_html(tmp_path / "r" / "report.html")
    assert set(refs.links) == {"load.png", "entropy.png"}
    assert not (tmp_path / "r" / "nmi.png").exists()
    assert "load and entropy only" in (tmp_path / "r" / "report.md").read_text()


def test_many_speaker_groups_and_odd_group_names(tmp_path):
    data, accents, _, spk = accent_routed(n_utts=48, n_layers=1)
    many = {u: f"s{i}" for i, u in enumerate(data.utt_ids)}  # 48 labels > heatmap rows
    res = write_report(data, {"spk": spk, "a/b c": accents, "many": many}, tmp_path / "r")
    figs = res["figures"]
    assert figs["heatmap:a/b c"] == "heatmap_a_b_c.png"
    assert (tmp_path / "r" / "heatmap_a_b_c.png").is_file()
    assert res["groups"]["many"]["id"]["accuracy"] is None  # one utterance per label
    refs = parse_html(tmp_path / "r" / "report.html")
    for link in refs.links:
        assert (tmp_path / "r" / link).is_file()


def test_output_path_that_is_a_file_is_a_user_error(tmp_path):
    data, accents, *_ = accent_routed(n_utts=8, n_layers=1)
    (tmp_path / "f").write_text("user data")
    with pytest.raises(UserError, match="not a directory"):
        write_report(data, {"accent": accents}, tmp_path / "f")
    assert (tmp_path / "f").read_text() == "user data"


def test_select_groups_from_a_data_dir():
    from moe_asr.data.datadir import DataDir

    dd = DataDir(
        utt2spk={"u1": "s1", "u2": "s2"},
        groups={"accent": {"u1": "es"}, "noise": {"u1": "clean", "u2": "babble"}},
    )
    assert select_groups(dd) == dd.groups
    assert select_groups(dd, ["spk", "accent"]) == {"spk": dd.utt2spk, "accent": {"u1": "es"}}
    with pytest.raises(UserError, match=r"no utt2gender file .*accent, noise, spk"):
        select_groups(dd, ["gender"])


def test_report_cli_dense_ok_skips_a_dense_model(tmp_path, capsys):
    from moe_asr.cli import main
    from moe_asr.config import TokenizerConfig, config_from_dict
    from moe_asr.data.tokenizer import train_tokenizer
    from moe_asr.model import build_model
    from moe_asr.package import save_package
    from tests.tone_corpus import make_tone_corpus

    small = {"d_model": 16, "num_heads": 2, "num_layers": 1, "d_ff": 16, "ffn": "dense"}
    cfg = config_from_dict({"model": {**small, "decoder": {"num_layers": 1, "d_ff": 16}}})
    tok = train_tokenizer(["ab"], TokenizerConfig(type="char"))
    model = build_model(cfg.model, tok.vocab_size, None)
    pkg = save_package(
        tmp_path / "model.pt",
        config=cfg,
        model_state=model.state_dict(),
        tokenizer_bytes=tok.to_bytes(),
        label_vocab=None,
    )
    out = tmp_path / "report"
    data = make_tone_corpus(tmp_path / "data", ["ab", "ba"], accents=["x"])
    args = ["report", "--model", str(pkg), "--data", str(data), "--out", str(out)]
    assert main([*args, "--dense-ok"]) == 0
    assert "dense model (no MoE layers): no expert report" in capsys.readouterr().out
    assert not out.exists()
    assert main(args) == 1  # without --dense-ok it stays an error
    assert "no MoE layers" in capsys.readouterr().err
