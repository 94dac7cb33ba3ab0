"""write_report: JSON, Markdown and a self-contained HTML whose every reference exists."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from moe_asr.analysis.compare import OtherRouting, load_report_dir
from moe_asr.analysis.report import select_groups, write_report
from moe_asr.analysis.routing import RoutingData
from moe_asr.analysis.wer import load_wer
from moe_asr.errors import UserError
from moe_asr.files import OutputExistsError
from moe_asr.scoring import score

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def accent_routed(n_utts: int = 48, n_layers: int = 3, seed: int = 0, expert_of=(0, 1, 2, 3)):
    """4 accents, 4 experts: layer 0 routes accent a to expert ``expert_of[a]``, later
    layers uniformly at random."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(20, 60, n_utts)
    top1 = np.zeros((n_utts, n_layers, 4), dtype=np.int64)
    accents, noise, spk = {}, {}, {}
    for u in range(n_utts):
        a = u % 4
        top1[u, 0, expert_of[a]] = frames[u]
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
    expected = {"load.png", "entropy.png", "nmi.png"}
    expected |= {
        f"{k}_{g}.png" for k in ("heatmap", "lift", "confusion") for g in ("accent", "noise")
    }
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
    assert "No group labels" in (tmp_path / "r" / "report.md").read_text()
    assert not (tmp_path / "r" / "nmi.png").exists()
    assert "load and entropy only" in (tmp_path / "r" / "report.md").read_text()


def test_many_speaker_groups_and_odd_group_names(tmp_path):
    data, accents, _, spk = accent_routed(n_utts=48, n_layers=1)
    many = {u: f"s{i}" for i, u in enumerate(data.utt_ids)}  # 48 labels > heatmap rows
    res = write_report(data, {"spk": spk, "a/b c": accents, "many": many}, tmp_path / "r")
    figs = res["figures"]
    assert figs["heatmap:a/b c"] == "heatmap_a_b_c.png"
    assert figs["lift:a/b c"] == "lift_a_b_c.png"
    assert (tmp_path / "r" / "heatmap_a_b_c.png").is_file()
    assert res["groups"]["many"]["id"]["accuracy"] is None  # one utterance per label
    assert "confusion:many" not in figs and "lift:many" in figs
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


def _text_blocks(path):
    """(tag, text) of every heading and paragraph of an HTML report, in order."""

    class Text(HTMLParser):
        def __init__(self):
            super().__init__()
            self.blocks, self.tag = [], None

        def handle_starttag(self, tag, attrs):
            if tag in ("h1", "h2", "h3", "p"):
                self.tag = tag
                self.blocks.append([tag, ""])

        def handle_endtag(self, tag):
            self.tag = None if tag == self.tag else self.tag

        def handle_data(self, data):
            if self.tag:
                self.blocks[-1][1] += data

    t = Text()
    t.feed(path.read_text(encoding="utf-8"))
    return [tuple(b) for b in t.blocks]


def test_the_verdict_opens_the_report_and_names_each_accents_expert(tmp_path):
    expert_of = (2, 0, 3, 1)
    data, accents, noise, spk = accent_routed(expert_of=expert_of)
    res = write_report(data, {"accent": accents, "noise": noise}, tmp_path / "r", speakers=spk)
    verdict = res["groups"]["accent"]["verdict"]
    assert {g: [x["expert"] for x in ex] for g, ex in verdict["by_label"].items()} == {
        f"accent{a}": [e] for a, e in enumerate(expert_of)
    }
    blocks = _text_blocks(tmp_path / "r" / "report.html")
    heads = [text for tag, text in blocks if tag == "h2"]
    assert heads[0] == "Verdict" and heads[1] == "Summary"
    top = blocks[blocks.index(("h2", "Verdict")) + 1 : blocks.index(("h2", "Summary"))]
    said = " ".join(text for _, text in top)
    for a, e in enumerate(expert_of):
        assert f"expert {e} -> accent{a} (lift " in said
    assert "noise: routing does not specialise." in said and "shuffled labels" in said
    assert verdict["text"] in said and res["groups"]["noise"]["verdict"]["text"] in said
    md = (tmp_path / "r" / "report.md").read_text()
    assert md.index("## Verdict") < md.index("## Summary") and verdict["text"] in md


def _wer_json(tmp_path, data, accents, wrong_in: str = "accent2"):
    """A real wer.json of `moe-asr score`: accent ``wrong_in`` has every word wrong."""
    refs = {u: "a b c d" for u in data.utt_ids}
    hyps = {u: ("x y c d" if accents[u] == wrong_in else "a b c d") for u in data.utt_ids}
    rep = score(refs, hyps, {"accent": {**accents, "extra-utt": "accent9"}}, n_boot=50)
    path = tmp_path / "dec" / "wer.json"
    path.parent.mkdir()
    path.write_text(json.dumps(rep.to_json()))
    return path


def test_per_accent_wer_beside_per_accent_routing(tmp_path):
    data, accents, noise, spk = accent_routed(expert_of=(2, 0, 3, 1))
    wer = load_wer(_wer_json(tmp_path, data, accents), ["accent", "noise"])
    out = tmp_path / "r"
    res = write_report(data, {"accent": accents, "noise": noise}, out, speakers=spk, wer=wer)
    assert strict_json(out / "report.json") == res
    joined = res["wer"]
    assert joined["source"] == wer.path and "no WER per noise" in joined["notes"][0]
    rows = {r["label"]: r for r in joined["groups"]["accent"]["rows"]}
    assert rows["accent2"]["wer"] == 50.0 and rows["accent0"]["wer"] == 0.0
    assert rows["accent2"]["utts_scored"] == rows["accent2"]["utts_routed"] == 12
    assert (
        rows["accent3"]["experts"][0]["expert"] == 1 and rows["accent3"]["served_coverage"] == 1.0
    )
    assert (
        rows["accent1"]["id_recall"] == res["groups"]["accent"]["id"]["per_label_recall"]["accent1"]
    )
    assert joined["groups"]["accent"]["layer"] == "1"
    assert "accent9" not in rows  # scored on no utterance: not in wer.json either
    refs = parse_html(out / "report.html")
    assert "wer_accent.png" in refs.links and (out / "wer_accent.png").read_bytes().startswith(
        PNG_MAGIC
    )
    assert "wer_noise.png" not in refs.links and not (out / "wer_noise.png").exists()
    assert "| accent2 | 12 | 50.00 [" in (out / "report.md").read_text()


def test_bad_wer_json_is_a_one_line_error_naming_what_to_pass(tmp_path):
    data, accents, *_ = accent_routed(n_utts=8, n_layers=1)
    good = _wer_json(tmp_path, data, accents)
    (tmp_path / "notwer.json").write_text('{"overall": {}}')
    (tmp_path / "broken.json").write_text("{")
    cases = [
        (tmp_path / "missing.json", "no such file; pass the wer.json that `moe-asr score --out"),
        (good.parent, f"is a directory; pass {good}"),
        (tmp_path, "is a directory; pass the wer.json that"),
        (tmp_path / "broken.json", "not readable JSON"),
        (tmp_path / "notwer.json", "not a wer.json of `moe-asr score`"),
    ]
    for path, message in cases:
        with pytest.raises(UserError, match=re.escape(message)) as e:
            load_wer(path)
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"scores no report group \(noise; it has accent\)"):
        load_wer(good, ["noise"])


def test_compare_two_models_side_by_side_from_a_report_dir(tmp_path):
    data, accents, noise, spk = accent_routed(expert_of=(2, 0, 3, 1))
    flat, *_ = accent_routed(seed=1)
    flat.top1[:, 0] = flat.top1[:, 1]  # the other model does not route by accent anywhere
    groups = {"accent": accents, "noise": noise}
    write_report(flat, groups, tmp_path / "flat", speakers=spk, title="flat model")
    other = load_report_dir(tmp_path / "flat")
    assert (other.name, other.kind) == ("flat model", "report")
    out = tmp_path / "r"
    res = write_report(data, groups, out, speakers=spk, name="routed", other=other)
    cmp = res["compare"]
    assert cmp["names"] == ["routed", "flat model"] and cmp["utts"] == 48 and cmp["this"] is None
    side = cmp["groups"]["accent"]
    assert side["specialises"] == [True, False] and side["layer"] == ["1", None]
    assert side["serving_experts"] == [4, 0]
    assert side["nmi_max"][0] == pytest.approx(1.0) and side["nmi_max"][1] < 0.1
    saved = strict_json(tmp_path / "flat" / "report.json")["groups"]["accent"]
    assert cmp["other"]["groups"]["accent"]["nmi_mean"] == saved["nmi_mean"]  # same analysis
    refs = parse_html(out / "report.html")
    assert {"compare_accent.png", "compare_noise.png"} <= set(refs.links)
    for link in refs.links:
        assert (out / link).read_bytes().startswith(PNG_MAGIC)
    md = (out / "report.md").read_text()
    assert "## Comparison: routed vs flat model" in md and "| specialises | yes | no |" in md


def test_compare_uses_the_common_utterances_and_refuses_other_data(tmp_path):
    data, accents, noise, spk = accent_routed()
    half = data.subset(data.utt_ids[:24])
    other = OtherRouting(name="half", source="somewhere", kind="model", data=half)
    res = write_report(data, {"accent": accents}, tmp_path / "r", other=other)
    cmp = res["compare"]
    assert (cmp["utts"], cmp["utts_this"], cmp["utts_other"]) == (24, 48, 24)
    assert cmp["this"]["num_utts"] == 24 and cmp["other"]["num_utts"] == 24
    assert cmp["groups"]["accent"]["nmi_mean"][0] == cmp["groups"]["accent"]["nmi_mean"][1]
    stranger = RoutingData(**{**half.__dict__, "utt_ids": [f"x{i}" for i in range(24)]})
    other = OtherRouting(name="x", source="exp/x/report_dev", kind="report", data=stranger)
    with pytest.raises(UserError, match="none of its 24 utterances is among the 48 analysed"):
        write_report(data, {"accent": accents}, tmp_path / "r2", other=other)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"not a report dir \(no routing.npz\); pass a dir"):
        load_report_dir(tmp_path / "empty")


def test_no_report_file_is_replaced_without_overwrite(tmp_path):
    data, accents, *_ = accent_routed(n_utts=8, n_layers=1)
    out = tmp_path / "r"
    out.mkdir()
    for name in ("lift_accent.png", "compare_accent.png"):
        (out / name).write_text("mine")
        with pytest.raises(OutputExistsError, match=f"{name}.*--overwrite"):
            other = OtherRouting(name="b", source="b", kind="model", data=data)
            write_report(data, {"accent": accents}, out, other=other)
        assert (out / name).read_text() == "mine" and not (out / "report.json").exists()
        (out / name).unlink()
    (out / "compare_accent.png").write_text("mine")  # not written by a report without --compare
    (out / "notes.txt").write_text("keep")
    write_report(data, {"accent": accents}, out)
    assert (out / "compare_accent.png").read_text() == "mine"
    with pytest.raises(OutputExistsError):
        write_report(data, {"accent": accents}, out)
    write_report(data, {"accent": accents}, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep"
