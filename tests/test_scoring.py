"""Scoring: hand-computed per-group WER/S/D/I, macro/worst/gap, missing/extra/unk,
bootstrap CIs, sclite and jiwer agreement, output files, --compare, CLI errors."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import jiwer
import pytest

from moe_asr.cli import main
from moe_asr.scoring import (
    Normalizer,
    NormalizerError,
    ScoringError,
    compare,
    format_alignments,
    format_markdown,
    parse_group_spec,
    score,
    write_outputs,
)

# utt -> (reference, hypothesis or None = missing, accent or None = unlabelled)
# us: 8 words, 1 D + 1 I; gb: 6 words, 2 S + 2 D (gb2 missing); in: 1 word, 1 S; c2: unk
CASES = {
    "a1": ("The cat sat on the mat.", "the CAT sat on mat", "us"),  # 1 D
    "a2": ("Hello, world!", "hello there world", "us"),  # 1 I
    "b1": ("one two three four", "one too three for", "gb"),  # 2 S
    "b2": ("good morning", None, "gb"),  # 2 D (missing)
    "c1": ("yes", "no", "in"),  # 1 S
    "c2": ("is it raining", "Is it raining?", None),  # 0, no accent label
}
REFS = {u: r for u, (r, _, _) in CASES.items()}
HYPS = {u: h for u, (_, h, _) in CASES.items() if h is not None}
ACCENT = {u: a for u, (_, _, a) in CASES.items() if a is not None}
SPK = {"a1": "s1", "a2": "s1", "b1": "s2", "b2": "s2", "c1": "s-3", "c2": "s-3"}


def _report(**kw):
    return score(REFS, HYPS, {"accent": ACCENT}, utt2spk=SPK, n_boot=200, **kw)


def test_normalizer_defaults_and_options():
    n = Normalizer()
    assert n("Don't STOP, well-known <unk> [noise] \u2019tis  'quoted'.") == (
        "don't stop well known <unk> [noise] tis quoted"
    )
    assert n("it\u2019s") == "it's"
    assert Normalizer(lowercase=False)("Hello, World") == "Hello World"
    assert Normalizer(strip_punct=False)("Hello, World") == "hello, world"
    m = Normalizer(word_map={"Colour": "color", "uh": "", "gonna": "going to"})
    assert m("The colour, uh, gonna") == "the color going to"
    with pytest.raises(NormalizerError, match="one word"):
        Normalizer(word_map={"two words": "x"})


def test_per_group_hand_computed():
    r = _report()
    o = r.overall
    assert (o.utts, o.ref_words, o.sub, o.del_, o.ins, o.errors) == (6, 18, 3, 3, 1, 7)
    assert o.wer == pytest.approx(100 * 7 / 18)
    acc = r.by_group["accent"]
    assert sorted(acc) == ["gb", "in", "unk", "us"]
    expect = {  # value: (utts, ref words, S, D, I, WER %)
        "us": (2, 8, 0, 1, 1, 25.0),
        "gb": (2, 6, 2, 2, 0, 100 * 4 / 6),
        "in": (1, 1, 1, 0, 0, 100.0),
        "unk": (1, 3, 0, 0, 0, 0.0),
    }
    for value, (n, words, s, d, i, wer) in expect.items():
        g = acc[value]
        assert (g.utts, g.ref_words, g.sub, g.del_, g.ins) == (n, words, s, d, i), value
        assert g.wer == pytest.approx(wer), value
    # unk is reported but left out of macro / worst / best / gap
    assert r.macro["accent"] == pytest.approx((25.0 + 100 * 4 / 6 + 100.0) / 3)
    assert (r.worst["accent"], r.best["accent"]) == ("in", "us")
    assert r.gap["accent"] == pytest.approx(75.0)
    assert r.missing == ["b2"]
    assert r.ungrouped == {"accent": ["c2"]}


def test_cer_counts_characters_with_spaces():
    r = score({"u": "ab cd"}, {"u": "ab cx"}, cer=True, n_boot=0)
    assert r.overall.ref_chars == 5 and r.overall.char_errors == 1
    assert r.overall.cer == pytest.approx(20.0)
    assert score({"u": "ab cd"}, {"u": "ab cx"}, n_boot=0).overall.cer is None


def test_missing_extra_and_empty_reference():
    with pytest.raises(ScoringError, match="not in the reference: zz.*--allow-extra"):
        score(REFS, {**HYPS, "zz": "stray"})
    r = score(REFS, {**HYPS, "zz": "stray"}, allow_extra=True, n_boot=0)
    assert r.extra == ["zz"] and r.overall.errors == 7
    md = format_markdown(r)
    assert "b2" in md and "all deletions" in md and "zz" in md
    with pytest.raises(ScoringError, match="no reference"):
        score({}, {})
    # an empty reference: its hypothesis words are insertions; a group of only such
    # utterances has no WER and stays out of the macro average
    r = score({"e": "", "x": "a b"}, {"e": "uh oh", "x": "a b"}, {"g": {"e": "q", "x": "p"}})
    assert r.overall.ins == 2 and r.overall.wer == pytest.approx(100.0)
    assert math.isnan(r.by_group["g"]["q"].wer)
    assert r.macro["g"] == 0.0 and r.worst["g"] == "p"


def test_bootstrap_ci_seeded():
    a, b = _report(seed=3), _report(seed=3)
    assert (a.overall.ci_low, a.overall.ci_high) == (b.overall.ci_low, b.overall.ci_high)
    assert a.overall.ci_low <= a.overall.wer <= a.overall.ci_high
    assert a.overall.ci_low < a.overall.ci_high
    single = a.by_group["accent"]["in"]  # one utterance: every resample is the same
    assert single.ci_low == single.ci_high == 100.0
    off = score(REFS, HYPS, n_boot=0)
    assert math.isnan(off.overall.ci_low) and off.to_json()["overall"]["ci_low"] is None


def _sclite_cmd() -> list[str] | None:
    if shutil.which("sclite"):
        return ["sclite"]
    if shutil.which("sctk"):  # Debian's package wraps it as `sctk sclite`
        return ["sctk", "sclite"]
    return None


def test_overall_wer_matches_jiwer_and_sclite(tmp_path):
    r = _report()
    n = Normalizer()
    refs = [n(REFS[u]) for u in sorted(REFS)]
    hyps = [n(HYPS.get(u, "")) for u in sorted(REFS)]
    assert r.overall.wer == pytest.approx(100 * jiwer.wer(refs, hyps))
    write_outputs(r, tmp_path)
    cmd = _sclite_cmd()
    if cmd is None:
        pytest.skip("sclite is not installed (Debian/Ubuntu: apt-get install sctk)")
    out = subprocess.run(
        [*cmd, "-r", "ref.trn", "trn", "-h", "hyp.trn", "trn", "-i", "rm", "-o", "rsum", "stdout"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if re.match(r"\s*\|\s*Sum\s*\|", ln))
    snt, wrd, _corr, _sub, _del, _ins, err = (int(x) for x in re.findall(r"\d+", line)[:7])
    assert (snt, wrd, err) == (6, 18, r.overall.errors)
    assert 100 * err / wrd == pytest.approx(r.overall.wer)
    assert "s_3" in out  # speaker ids come from utt2spk, with '-' made safe


def test_write_outputs(tmp_path):
    r = _report(cer=True)
    paths = write_outputs(r, tmp_path / "decode")
    names = sorted(p.name for p in paths)
    assert names == [
        "alignments.txt",
        "hyp.trn",
        "ref.trn",
        "wer.json",
        "wer_by_accent.md",
    ]
    data = json.loads((tmp_path / "decode" / "wer.json").read_text())
    assert data["units"] == "percent"
    assert data["overall"]["errors"] == 7 and data["overall"]["del"] == 3
    assert data["groups"]["accent"]["worst"] == "in"
    assert data["groups"]["accent"]["values"]["gb"]["sub"] == 2
    assert data["groups"]["accent"]["ungrouped"] == ["c2"]
    assert data["missing"] == ["b2"]
    ref_trn = (tmp_path / "decode" / "ref.trn").read_text().splitlines()
    assert ref_trn[0] == "the cat sat on the mat (s1-a1)"
    assert "yes (s_3-c1)" in ref_trn
    assert " (s2-b2)" in (tmp_path / "decode" / "hyp.trn").read_text().splitlines()
    md = (tmp_path / "decode" / "wer_by_accent.md").read_text()
    assert "| gb | 2 | 6 | 66.67 |" in md and "gap: 75.00 points" in md
    # alignments: most errors first, sclite-like REF/HYP/EVAL lines
    ali = format_alignments(r)
    order = [m.group(1) for m in re.finditer(r"^utt: (\S+)", ali, re.M)]
    assert order == ["b1", "b2", "a1", "a2", "c1", "c2"]
    block = ali.split("utt: a2")[1]
    assert "REF:  hello ***   world" in block and "HYP:  hello there world" in block
    assert "EVAL:       I" in block


def _system(n_utts: int, errs: list[int]) -> dict[str, str]:
    """Hypotheses of `w0..w4` references with errs[i] words substituted in utterance i."""
    return {f"u{i:02d}": " ".join(["x"] * e + ["w"] * (5 - e)) for i, e in enumerate(errs)}


def test_compare_two_systems():
    n = 40
    refs = {f"u{i:02d}": "w w w w w" for i in range(n)}
    groups = {"accent": {u: ("p" if i < 20 else "q") for i, u in enumerate(sorted(refs))}}
    # A: 1 error per utterance everywhere; B: 0 errors in p, 2 errors in q
    hyps_a = _system(n, [1] * n)
    hyps_b = _system(n, [0] * 20 + [2] * 20)
    c = compare(refs, hyps_a, hyps_b, groups, n_boot=300)
    assert c.overall.wer_a == pytest.approx(20.0) and c.overall.wer_b == pytest.approx(20.0)
    assert c.overall.delta == pytest.approx(0.0)
    p, q = c.by_group["accent"]["p"], c.by_group["accent"]["q"]
    assert (p.wer_a, p.wer_b, p.delta) == (pytest.approx(20.0), 0.0, pytest.approx(-20.0))
    assert (q.wer_a, q.wer_b, q.delta) == (pytest.approx(20.0), 40.0, pytest.approx(20.0))
    # B better on every utterance of p: no resample has B not better
    assert p.p_b_not_better == 0.0 and p.p_value == 0.0 and p.ci_high < 0
    assert q.p_b_not_better == 1.0 and q.p_value == 0.0 and q.ci_low > 0
    assert 0.05 < c.overall.p_value <= 1.0
    same = compare(refs, hyps_a, hyps_a, groups, n_boot=50)
    assert same.overall.delta == 0.0 and same.overall.p_value == 1.0
    # missing hypotheses count as deletions for that system only
    partial = compare(refs, {}, hyps_a, n_boot=0)
    assert partial.overall.wer_a == 100.0 and len(partial.missing_a) == n
    assert partial.missing_b == []


def test_group_spec_names():
    assert parse_group_spec("data/test/utt2accent") == ("accent", Path("data/test/utt2accent"))
    assert parse_group_spec("data/test/utt2noise")[0] == "noise"
    assert parse_group_spec("region=data/test/utt2accent")[0] == "region"
    assert parse_group_spec("data/a=b/labels")[0] == "labels"


def _write_dir(tmp_path):
    d = tmp_path / "test"
    d.mkdir()
    (d / "text").write_text("".join(f"{u} {REFS[u]}\n" for u in sorted(REFS)))
    (d / "utt2spk").write_text("".join(f"{u} {SPK[u]}\n" for u in sorted(SPK)))
    (d / "utt2accent").write_text("".join(f"{u} {a}\n" for u, a in sorted(ACCENT.items())))
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("".join(f"{u} {HYPS.get(u, '')}".rstrip() + "\n" for u in sorted(REFS)))
    return d, hyp


def test_cli_score_and_compare(tmp_path, capsys):
    d, hyp = _write_dir(tmp_path)
    out = tmp_path / "out"
    args = ["score", "--ref", str(d / "text"), "--hyp", str(hyp), "--group", str(d / "utt2accent")]
    assert main([*args, "--bootstrap", "50", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "| all | 6 | 18 | 38.89 |" in stdout and "## WER by accent" in stdout
    assert json.loads((out / "wer.json").read_text())["groups"]["accent"]["best"] == "us"
    # b2 has an empty hypothesis line here: present, so scored as deletions but not missing
    assert json.loads((out / "wer.json").read_text())["missing"] == []

    (tmp_path / "bad.txt").write_text(hyp.read_text() + "zz stray\n")
    bad = ["score", "--ref", str(d / "text"), "--hyp", str(tmp_path / "bad.txt")]
    assert main(bad) == 1
    err = capsys.readouterr().err
    assert "bad.txt" in err and "zz" in err and "--allow-extra" in err
    assert main([*bad, "--allow-extra", "--bootstrap", "0"]) == 0
    capsys.readouterr()

    (tmp_path / "map.txt").write_text("well-known famous\n")  # key is 2 words
    assert main([*args, "--map", str(tmp_path / "map.txt")]) == 1
    assert "map.txt" in capsys.readouterr().err
    assert main([*args, "--bootstrap", "-1"]) == 1
    assert "bootstrap" in capsys.readouterr().err

    dup = [*args, "--group", str(d / "utt2accent")]
    assert main(dup) == 1 and "--group NAME=" in capsys.readouterr().err

    cmp_args = ["score", "--ref", str(d / "text"), "--compare", str(hyp), str(hyp)]
    assert main([*cmp_args, "--bootstrap", "20", "--out", str(out)]) == 0
    assert "WER A %" in capsys.readouterr().out
    data = json.loads((out / "compare.json").read_text())
    assert data["overall"]["delta"] == 0.0 and data["overall"]["wer_a"] == pytest.approx(
        100 * 7 / 18
    )


def test_numeric_groups_in_numeric_order():
    # utt2snr of the synthetic corpus: dB values, `inf` for clean
    snr = {"a1": "10", "a2": "-5", "b1": "5", "b2": "inf", "c1": "0", "c2": "20"}
    r = score(REFS, HYPS, {"snr": snr}, n_boot=0)
    assert list(r.by_group["snr"]) == ["-5", "0", "5", "10", "20", "inf"]
    c = compare(REFS, HYPS, HYPS, {"snr": snr}, n_boot=0)
    assert list(c.by_group["snr"]) == ["-5", "0", "5", "10", "20", "inf"]
    assert list(_report().by_group["accent"]) == ["gb", "in", "unk", "us"]  # words: by name
