"""moe-asr report end to end on a tiny MoE package: --wer joins per-accent WER, --compare
takes a model package or a report dir (a model compared with itself gives equal sides),
and bad input is a one-line error naming what to pass, with nothing written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from moe_asr.cli import main
from moe_asr.config import Config, DataConfig, FeatureConfig
from moe_asr.data.tokenizer import TokenizerConfig, train_tokenizer
from moe_asr.model import build_model
from moe_asr.package import save_package
from tests.analysis.test_analysis_report import PNG_MAGIC, parse_html, strict_json
from tests.tiny_config import tiny_model_config
from tests.tone_corpus import make_tone_corpus

TEXTS = ["abc", "bad", "cafe", "face", "head", "bead", "dab", "fed"]


def _config(ffn: str) -> Config:
    return Config(
        model=tiny_model_config(ffn=ffn),
        data=DataConfig(features=FeatureConfig(num_mel_bins=40)),
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_cli")
    data = make_tone_corpus(root / "test", TEXTS, accents=["x", "y"])
    tok = train_tokenizer(TEXTS, TokenizerConfig(type="char"))
    paths = {}
    for ffn in ("moe", "dense"):
        torch.manual_seed(0)
        cfg = _config(ffn)
        paths[ffn] = save_package(
            root / f"{ffn}.pt",
            config=cfg,
            model_state=build_model(cfg.model, tok.vocab_size, None).state_dict(),
            tokenizer_bytes=tok.to_bytes(),
            label_vocab=None,
        )
    text = dict(line.split(" ", 1) for line in (data / "text").read_text().splitlines())
    accent = dict(line.split() for line in (data / "utt2accent").read_text().splitlines())
    hyp = root / "hyp.txt"  # accent y gets every word wrong
    hyp.write_text("".join(f"{u} {'zz' if accent[u] == 'y' else t}\n" for u, t in text.items()))
    for name, extra in (("dec", ["--group", "accent"]), ("dec_nogroup", [])):
        args = ["score", "--ref", str(data), "--hyp", str(hyp), "--bootstrap", "0"]
        assert main([*args, *extra, "--out", str(root / name)]) == 0
    return {"root": root, "data": data, **paths}


def _report(setup, out, *extra):
    args = ["report", "--model", str(setup["moe"]), "--data", str(setup["data"])]
    return main([*args, "--out", str(out), *extra])


def test_report_with_wer_and_compare_against_itself(setup, capsys):
    out = setup["root"] / "rep"
    wer = setup["root"] / "dec" / "wer.json"
    assert _report(setup, out, "--wer", str(wer), "--compare", str(setup["moe"])) == 0
    printed = capsys.readouterr().out
    res = strict_json(out / "report.json")
    acc = res["groups"]["accent"]
    assert acc["verdict"]["text"] in printed  # the verdict is what the command says
    rows = {r["label"]: r for r in res["wer"]["groups"]["accent"]["rows"]}
    assert rows["x"]["wer"] == 0.0 and rows["y"]["wer"] == 100.0
    assert rows["x"]["utts_scored"] == rows["x"]["utts_routed"] == 4
    cmp = res["compare"]
    assert cmp["kind"] == "model" and cmp["utts"] == 8 and cmp["this"] is None
    assert cmp["names"] == [str(setup["moe"]), f"{setup['moe']} (compared)"]
    for key, (a, b) in cmp["groups"]["accent"].items():  # the same model: equal sides
        assert a == b, key
    assert cmp["other"]["groups"] == {k: res["groups"][k] for k in cmp["other"]["groups"]}
    refs = parse_html(out / "report.html")
    assert {"lift_accent.png", "wer_accent.png", "compare_accent.png"} <= set(refs.links)
    assert len(refs.imgs) == len(refs.links)
    for link in refs.links:
        assert (out / link).read_bytes().startswith(PNG_MAGIC)
    # a report dir instead of the package: its routing.npz, the same numbers
    again = setup["root"] / "rep2"
    assert _report(setup, again, "--compare", str(out)) == 0
    cmp2 = strict_json(again / "report.json")["compare"]
    assert cmp2["kind"] == "report" and cmp2["names"][1] == f"{setup['moe']} on {setup['data']}"
    assert cmp2["other"]["groups"] == cmp["other"]["groups"]


def test_bad_input_is_one_line_naming_what_to_pass_and_writes_nothing(setup, capsys):
    root = setup["root"]
    (root / "not_a_report").mkdir(exist_ok=True)
    cases = [
        (["--compare", str(root / "nope.pt")], "no such file or directory; pass the other model's"),
        (["--compare", str(setup["dense"])], "a dense model (no MoE layers) has no routing"),
        (["--compare", str(root / "not_a_report")], "not a report dir (no routing.npz); pass a"),
        (["--wer", str(root / "nope.json")], "no such file; pass the wer.json that"),
        (["--wer", str(root / "dec")], f"is a directory; pass {root / 'dec' / 'wer.json'}"),
        (["--wer", str(root / "dec_nogroup" / "wer.json")], "scores no report group"),
        (["--min-lift", "1"], "must be above 1"),
        (["--groups", "gender"], "no utt2gender file"),
    ]
    out = root / "bad"
    for extra, message in cases:
        assert _report(setup, out, *extra) == 1, extra
        err = capsys.readouterr().err
        assert message in err and err.startswith("moe-asr report: error: "), err
        assert err.count("\n") == 1 and not out.exists()


def test_an_earlier_report_is_kept_without_overwrite(setup, capsys):
    out = setup["root"] / "keep"
    out.mkdir()
    (out / "wer_accent.png").write_text("mine")  # a file only a --wer report writes
    wer = setup["root"] / "dec" / "wer.json"
    assert _report(setup, out, "--wer", str(wer)) == 1
    assert "wer_accent.png" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["wer_accent.png"]
    assert _report(setup, out, "--wer", str(wer), "--overwrite") == 0
    assert (out / "wer_accent.png").read_bytes().startswith(PNG_MAGIC)
    shutil.rmtree(out)
    assert json.loads((setup["root"] / "dec" / "wer.json").read_text())["groups"]["accent"]
