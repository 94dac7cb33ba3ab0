"""Building a data dir: validity, reproducibility across --nj, splits, failures, CLI."""

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from moe_asr.cli import main
from moe_asr.data.datadir import load_datadir, validate_datadir
from moe_asr.errors import UserError
from moe_asr.synth import corpus as corpus_mod
from moe_asr.synth.accents import DEFAULT_ACCENTS
from moe_asr.synth.corpus import SynthConfig, build_corpus, plan_corpus, select_accents
from moe_asr.synth.text import split_sentences

ACCENTS = ("en-us", "en-gb-scotland", "es")
VOICES = {"en-us": "en-US", "en-gb-scotland": "en-GB-scotland", "es": "es"}


def _checksums(d: Path) -> dict[str, str]:
    files = [p for p in sorted(d.rglob("*")) if p.is_file()]
    return {str(p.relative_to(d)): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


def test_build_is_valid_complete_and_reproducible_across_nj(tmp_path):
    cfg = SynthConfig(
        num_utts=18, accents=ACCENTS, noise=("clean", "white", "babble"), snrs=(5, 10), seed=3
    )
    a = build_corpus(tmp_path / "a", cfg, nj=1, progress=False)
    b = build_corpus(tmp_path / "b", cfg, nj=2, progress=False)
    assert a.utts == b.utts == 18 and not a.failed
    assert validate_datadir(tmp_path / "a", check_audio=True) == []
    dd = load_datadir(tmp_path / "a")
    assert set(dd.groups["accent"].values()) == set(ACCENTS)
    family = dd.groups["family"]  # utt2family, consistent with utt2accent
    assert family.keys() == dd.groups["accent"].keys()
    assert {(a, family[u]) for u, a in dd.groups["accent"].items()} == {
        ("en-us", "native-english"),
        ("en-gb-scotland", "native-english"),
        ("es", "romance"),
    }
    meta = json.loads((tmp_path / "a" / "synth.json").read_text())
    assert meta["families"] == {
        "en-us": "native-english",
        "en-gb-scotland": "native-english",
        "es": "romance",
    }
    assert sorted(set(dd.groups["noise"].values())) == ["babble", "clean", "white"]
    snr = dd.extra["snr"]
    assert all((snr[u] == "inf") == (dd.groups["noise"][u] == "clean") for u in dd.utt_ids)
    assert {snr[u] for u in dd.utt_ids} - {"inf"} <= {"5", "10"}
    for utt, path in dd.wav_scp.items():
        assert Path(path).is_absolute() and Path(path).parent == tmp_path / "a" / "wav"
        assert utt.startswith("train-") and dd.utt2spk[utt].startswith("train-")
        assert abs(dd.utt2dur[utt] - Path(path).stat().st_size / 32000) < 0.01  # 16 kHz 16-bit
    # same seed, different worker count: byte-identical audio and tables (paths aside)
    ca, cb = _checksums(tmp_path / "a"), _checksums(tmp_path / "b")
    assert [k for k in ca if k.startswith("wav/")] == [k for k in cb if k.startswith("wav/")]
    for name, digest in ca.items():
        if name != "wav.scp":
            assert cb[name] == digest, name
    c = build_corpus(tmp_path / "c", replace(cfg, seed=4), nj=1, progress=False)
    assert c.utts == 18 and _checksums(tmp_path / "c")["text"] != ca["text"]


def test_splits_never_share_speakers_or_sentences():
    plans = {
        s: plan_corpus(
            SynthConfig(num_utts=400, split=s, noise=("clean", "babble"), seed=s == "test"), VOICES
        )
        for s in ("train", "dev", "test")
    }
    spk = {s: {p.spk.split("-", 1)[1] for p in v} for s, v in plans.items()}
    text = {s: {p.speech.text for p in v} for s, v in plans.items()}
    for x, y in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not spk[x] & spk[y] and not text[x] & text[y]
    # babble talkers read sentences of their own split only
    test_text = set(split_sentences("test"))
    assert all(t.text in test_text for p in plans["test"] for t in p.babble)
    assert all(len(p.babble) == 4 for p in plans["test"] if p.noise == "babble")
    counts = {a: sum(p.accent == a for p in plans["train"]) for a in VOICES}
    assert max(counts.values()) - min(counts.values()) <= 1  # accents balanced


def test_one_failing_utterance_is_reported_and_the_rest_go_on(tmp_path, monkeypatch):
    real = corpus_mod.plan_corpus

    def with_bad_voice(config, voices):
        plans = real(config, voices)
        bad = replace(plans[1], speech=replace(plans[1].speech, voice="xx-broken"))
        return [plans[0], bad, *plans[2:]]

    monkeypatch.setattr(corpus_mod, "plan_corpus", with_bad_voice)
    cfg = SynthConfig(num_utts=4, accents=("en-us",), noise=("clean",), seed=0)
    report = build_corpus(tmp_path / "d", cfg, progress=False)
    assert report.utts == 3 and len(report.failed) == 1
    ((utt, why),) = report.failed.items()
    assert "xx-broken" in why
    assert (tmp_path / "d" / "synth_failures").read_text().startswith(utt)
    assert validate_datadir(tmp_path / "d") == []
    assert utt not in load_datadir(tmp_path / "d").utt2spk


def test_cli_refuses_to_overwrite_and_rejects_bad_options(tmp_path, capsys):
    out = tmp_path / "e"
    args = [
        "synth",
        str(out),
        "--num-utts",
        "3",
        "--accents",
        "en-us",
        "--noise",
        "pink",
        "--quiet",
    ]
    assert main(args) == 0
    first = (out / "text").read_text()
    assert main(args) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "text").read_text() == first
    assert main([*args, "--overwrite", "--seed", "9"]) == 0
    assert len(list((out / "wav").glob("*.wav"))) == 3  # old audio replaced, not accumulated
    assert main(["synth", str(tmp_path / "f"), "--accents", "ja", "--num-utts", "2"]) == 1
    assert "intelligibility" in capsys.readouterr().err
    with pytest.raises(UserError, match="num-utts"):
        SynthConfig(num_utts=0)


def test_accent_selection_expands_sets_and_removes_exclusions(espeak_server):
    default, _ = select_accents(espeak_server, None)
    assert sorted(default) == sorted(DEFAULT_ACCENTS)
    assert select_accents(espeak_server, ["default"])[0] == default
    got, checks = select_accents(espeak_server, ["default", "cy"], ["es", "pl", "fi"])
    assert set(got) == set(DEFAULT_ACCENTS) - {"es", "pl"} | {"cy"}
    assert {c.accent for c in checks} == set(got)  # excluded accents are not even checked
    with pytest.raises(UserError, match="intelligibility check: ja"):  # named: must pass
        select_accents(espeak_server, ["en-us", "ja"])
    with pytest.raises(UserError, match="no accent left"):
        select_accents(espeak_server, ["es", "fr"], ["fr", "es"])
    with pytest.raises(UserError, match="unknown accent"):
        select_accents(espeak_server, ["default"], ["klingon"])
    with pytest.raises(UserError, match="unknown accent"):
        SynthConfig(num_utts=3, accents=("en-us", "xx"))


def test_excluded_accents_never_reach_a_plan(espeak_server):
    accents, _ = select_accents(espeak_server, ["en-us", "es", "de"], ["de"])
    voices = {a: espeak_server.resolve(a) for a in accents}
    plans = plan_corpus(SynthConfig(num_utts=60, noise=("babble",), seed=1), voices)
    used = {p.accent for p in plans} | {t.voice for p in plans for t in p.babble}
    assert {p.accent for p in plans} == {"en-us", "es"} and "de" not in used


def test_cli_excludes_accents_and_lists_families(tmp_path, capsys, monkeypatch):
    out = tmp_path / "g"
    args = ["synth", str(out), "--num-utts", "4", "--accents", "en-us,es", "--quiet"]
    assert main([*args, "--exclude-accents", "es", "--noise", "clean"]) == 0
    assert set((out / "utt2accent").read_text().split()[1::2]) == {"en-us"}
    assert set((out / "utt2family").read_text().split()[1::2]) == {"native-english"}
    assert main(["synth", str(tmp_path / "h"), "--accents", "es", "--exclude-accents", "es"]) == 1
    assert "no accent left" in capsys.readouterr().err

    def two(server, requested, exclude=()):  # the CLI checks `all`; two voices keep it quick
        assert list(requested) == ["all"]
        return real(server, ["en-us", "cy"])

    real = corpus_mod.select_accents
    monkeypatch.setattr(corpus_mod, "select_accents", two)
    assert main(["synth", "--list-accents"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("en-us [native-english]") and lines[0].endswith("(default set)")
    assert lines[1].startswith("cy [celtic]") and "ok" in lines[1]
    assert lines[2].startswith("2 of 2 accents pass (2 families")


def test_reverberant_corpus_is_the_dry_one_in_simulated_rooms(tmp_path):
    cfg = SynthConfig(num_utts=40, split="test", noise=("clean", "white"), snrs=(0, 5), seed=2)
    dry, wet = plan_corpus(cfg, VOICES), plan_corpus(replace(cfg, reverb=(0.3, 0.9)), VOICES)
    assert [replace(p, rt60=None) for p in wet] == dry  # same speakers, sentences, noise
    assert {p.rt60 for p in wet} == {0.3, 0.9} and all(p.rt60 is None for p in dry)
    args = ["synth", "--num-utts", "3", "--split", "test", "--accents", "en-us"]
    args += ["--noise", "clean", "--seed", "2", "--quiet"]
    assert main([*args, str(tmp_path / "dry")]) == 0
    assert main([*args, "--reverb", "0.6", str(tmp_path / "wet")]) == 0
    a, b = load_datadir(tmp_path / "dry"), load_datadir(tmp_path / "wet")
    assert a.text == b.text and a.utt2spk == b.utt2spk and len(b.text) == 3
    assert "reverb" not in a.groups and "rt60" not in a.extra  # a dry corpus is unchanged
    assert set(b.groups["reverb"].values()) == {"reverb"}
    assert set(b.extra["rt60"].values()) == {"0.6"}
    assert validate_datadir(tmp_path / "wet", check_audio=True) == []
    for utt in a.utt_ids:
        x, y = Path(a.wav_scp[utt]).read_bytes(), Path(b.wav_scp[utt]).read_bytes()
        assert len(x) == len(y) and x != y  # same length, reverberant audio
    with pytest.raises(UserError, match="RT60"):
        SynthConfig(num_utts=1, reverb=(5.0,))
