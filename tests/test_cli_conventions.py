"""CLI conventions a newcomer relies on: --version; every option's default in --help;
either spelling of the model / data options; `score --ref DATA_DIR --group accent`,
`--compare --cer`, p-values below 0.001, one speaker per alignment header."""

from __future__ import annotations

import json
import re
from importlib.metadata import version

import pytest

from moe_asr.cli import build_parser, main
from moe_asr.scoring import compare, format_alignments, score
from moe_asr.scoring.output import format_compare_markdown
from tests.decode_model import write_datadir_of


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"moe-asr {version('moe_asr')}"


@pytest.mark.parametrize(
    "command, option, default",
    [
        ("synth", "--num-utts", "1000"),
        ("train-lm", "--order", "3"),
        ("average", "--num", "5"),
        ("decode", "--beam", "10"),
        ("transcribe", "--mode", "ctc_greedy"),
        ("transcribe", "--device", "cpu"),
        ("report", "--max-utts", "all"),
        ("score", "--bootstrap", "1000"),
    ],
)
def test_help_shows_every_default(command, option, default, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split("options:", 1)[1].split())
    line = text[text.index(f"{option} ") :][:300]
    assert "default" in line and default in line


def test_every_option_with_a_default_says_it():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "decode" in a.choices)
    for name, p in sub.choices.items():
        text = " ".join(p.format_help().split())
        for a in p._actions:
            if a.option_strings and a.default not in (None, False, [], "==SUPPRESS=="):
                assert f"default: {a.default}" in text or "default" in (a.help or ""), (name, a)


def test_compute_cmvn_takes_positionals_or_options(tmp_path, capsys):
    data = write_datadir_of(tmp_path, ["ab", "ba"])
    assert main(["compute-cmvn", str(data), str(tmp_path / "a.json")]) == 0
    assert main(["compute-cmvn", "--data", str(data), "--out", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["mean"] == b["mean"] and a["count"] == b["count"] > 0
    assert main(["compute-cmvn", str(data), str(tmp_path / "c"), "--data", str(tmp_path)]) == 1
    assert "give DATA_DIR once" in capsys.readouterr().err
    assert main(["compute-cmvn", "--data", str(data)]) == 1
    assert "give OUT" in capsys.readouterr().err


def _data_dir(tmp_path):
    d = tmp_path / "test"
    d.mkdir()
    rows = {"u1": ("a b c", "x", "s1"), "u2": ("d e", "y", "s2"), "s3-u3": ("f", "y", "s3")}
    (d / "text").write_text("".join(f"{u} {r[0]}\n" for u, r in rows.items()))
    (d / "utt2accent").write_text("".join(f"{u} {r[1]}\n" for u, r in rows.items()))
    (d / "utt2spk").write_text("".join(f"{u} {r[2]}\n" for u, r in rows.items()))
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("u1 a b\nu2 d e\ns3-u3 g\n")
    return d, hyp


def test_score_ref_data_dir_and_group_by_name(tmp_path, capsys):
    d, hyp = _data_dir(tmp_path)
    out = tmp_path / "out"
    args = ["score", "--ref", str(d), "--hyp", str(hyp), "--group", "accent", "--group", "spk"]
    assert main([*args, "--out", str(out)]) == 0
    by_file = tmp_path / "out2"
    assert main(["score", "--ref", str(d / "text"), "--hyp", str(hyp), "--group",
                 str(d / "utt2accent"), "--group", str(d / "utt2spk"), "--out", str(by_file)]) == 0  # fmt: skip
    a, b = (json.loads((o / "wer.json").read_text()) for o in (out, by_file))
    assert a["groups"] == b["groups"] and set(a["groups"]) == {"accent", "spk"}
    assert main(["score", "--ref", str(d), "--hyp", str(hyp), "--group", "noise"]) == 1
    assert "utt2noise" in capsys.readouterr().err and "utt2accent" in "utt2accent"
    # alignments: the speaker once per header (spk group and trn id do not repeat it)
    ali = (out / "alignments.txt").read_text()
    headers = [ln for ln in ali.splitlines() if ln.startswith("utt: ")]
    assert "utt: u1  spk: s1  accent: x  trn: (s1-u1)" in headers
    assert "utt: s3-u3  spk: s3  accent: y" in headers  # its trn id is the utterance id
    assert all(h.count("s1") <= 2 and h.count("spk") == 1 for h in headers)


def test_compare_keeps_cer_and_prints_small_p_values(tmp_path, capsys):
    refs = {f"u{i:02d}": "w w w w w" for i in range(40)}
    a = {u: "x w w w w" for u in refs}  # one error each
    b = dict(refs)
    c = compare(refs, a, b, n_boot=300, cer=True)
    assert c.overall.cer_a == pytest.approx(100 * 40 / (40 * 9)) and c.overall.cer_b == 0.0
    md = format_compare_markdown(c)
    assert "CER A %" in md and "< 0.001" in md and "| 0.000 |" not in md
    assert c.to_json()["overall"]["cer_a"] == c.overall.cer_a
    ref = tmp_path / "text"
    ref.write_text("".join(f"{u} {t}\n" for u, t in refs.items()))
    for name, table in (("a", a), ("b", b)):
        (tmp_path / name).write_text("".join(f"{u} {t}\n" for u, t in table.items()))
    args = ["score", "--ref", str(ref), "--compare", str(tmp_path / "a"), str(tmp_path / "b")]
    assert main([*args, "--cer"]) == 0
    out = capsys.readouterr().out
    assert "CER B %" in out and re.search(r"\| all \|.*< 0\.001", out)
    assert main(args) == 0
    assert "CER" not in capsys.readouterr().out


def test_alignments_without_groups_have_one_speaker_name():
    r = score({"spkA-1": "a b"}, {"spkA-1": "a"}, utt2spk={"spkA-1": "spkA"})
    header = next(ln for ln in format_alignments(r).splitlines() if ln.startswith("utt:"))
    assert header == "utt: spkA-1  spk: spkA"
