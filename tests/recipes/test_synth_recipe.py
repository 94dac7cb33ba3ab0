"""The synthetic recipe end to end at smoke-test size: every stage's outputs exist and are
well formed (the unseen-accent test set included), and a rerun skips finished stages and
redoes an unfinished one. test_synth_data.py checks local/data.sh's options in detail."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser

from moe_asr.data.datadir import load_datadir, validate_datadir
from moe_asr.synth.accents import accent_by_code
from tests.recipes.synth_run import MODES, REPO, SEEN, TEST_SETS, UNSEEN, run_recipe


def test_every_stage_leaves_well_formed_outputs(recipe_run):
    tmp, r = recipe_run
    data, exp = tmp / "data", tmp / "exp" / "tiny_char"
    dds = {}
    for split in ("train", "dev", *TEST_SETS):
        assert validate_datadir(data / split) == []
        dds[split] = load_datadir(data / split)
        accent, family = dds[split].groups["accent"], dds[split].groups["family"]
        assert family.keys() == accent.keys()
        assert all(family[u] == accent_by_code(a).family for u, a in accent.items())
    train, test = dds["train"], dds["test"]
    assert set(train.utt2spk.values()).isdisjoint(test.utt2spk.values())  # held-out speakers
    for split in ("train", "dev", "test"):  # de is held out of them
        assert set(dds[split].groups["accent"].values()) == SEEN, split
    unseen = dds["test_unseen"]
    assert set(unseen.groups["accent"].values()) == UNSEEN
    assert len(unseen.utt2spk) == len(test.utt2spk)  # the size of test
    assert set(unseen.utt2spk.values()).isdisjoint(train.utt2spk.values())
    assert set(unseen.text.values()).isdisjoint(train.text.values())
    cmvn = json.loads((data / "train" / "cmvn.json").read_text())
    assert len(cmvn["mean"]) == 80 and cmvn["count"] > 0
    assert (data / "lang_char" / ".done").exists() and (data / "lm" / "3gram.arpa").exists()
    assert (exp / "config.yaml").exists() and (exp / "checkpoints" / "epoch-1.pt").exists()
    assert (exp / "model.pt").exists()
    for split, mode in ((s, m) for s in TEST_SETS for m in MODES):  # every test set decoded
        out = exp / f"decode_{split}_{mode}"
        hyp = (out / "hyp.txt").read_text().splitlines()
        assert {line.split()[0] for line in hyp} == set(dds[split].utt2spk)
        wer = json.loads((out / "wer.json").read_text())
        assert wer["overall"]["utts"] == len(dds[split].utt2spk)
        for group in ("accent", "family", "noise", "snr", "spk"):  # snr: utt2snr, per dB
            assert (out / f"wer_by_{group}.md").exists()
    assert "| en-us" in r.stdout and "| cy" in r.stdout  # per-accent tables printed
    for split in TEST_SETS:
        report = exp / f"report_{split}"
        parser = HTMLParser()
        parser.feed((report / "report.html").read_text())
        groups = json.loads((report / "report.json").read_text())["groups"]
        assert groups["accent"]["nmi_mean"] is not None
    for n in range(9):
        assert (exp / "logs" / f"stage{n}.log").exists()


def test_collect_results_writes_every_number_as_json(recipe_run):
    tmp, _ = recipe_run
    exp, out = tmp / "exp" / "tiny_char", tmp / "results" / "guided.json"
    cmd = [
        sys.executable,
        str(REPO / "tools" / "collect_results.py"),
        str(exp),
        "--set",
        *TEST_SETS,
        "--modes",
        *MODES,
        "--groups",
        "accent",
        "--json",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "#### test_unseen, ctc_greedy" in r.stdout  # a table per set
    system = json.loads(out.read_text())["systems"]["tiny_char"]
    history = json.loads((exp / "checkpoints" / "history.json").read_text())
    assert system["seed"] == 0 and system["updates"] == history[-1]["step"]
    for split, mode in ((s, m) for s in TEST_SETS for m in MODES):
        wer = json.loads((exp / f"decode_{split}_{mode}" / "wer.json").read_text())
        got = system["set"][split][mode]
        assert got["wer"] == wer["overall"]["wer"]
        want = {v: c["wer"] for v, c in wer["groups"]["accent"]["values"].items()}
        assert got["groups"] == {"accent": want}
    for split in TEST_SETS:
        report = json.loads((exp / f"report_{split}" / "report.json").read_text())["groups"]
        assert system["report"][split]["accent"]["nmi_mean"] == report["accent"]["nmi_mean"]


def test_worst_groups_marks_the_utterances_of_the_k_worst_accents(recipe_run):
    tmp, _ = recipe_run
    data, exp = tmp / "data" / "test", tmp / "exp" / "tiny_char"
    wer_json, out = exp / f"decode_test_{MODES[0]}" / "wer.json", tmp / "utt2worst2"
    cmd = [sys.executable, str(REPO / "tools" / "worst_groups.py"), str(wer_json)]
    cmd += ["--ref", str(data), "--group", "accent", "--k", "2", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    values = json.loads(wer_json.read_text())["groups"]["accent"]["values"]
    ranked = sorted((v for v in values if v != "unk"), key=lambda v: -values[v]["wer"])
    accent = load_datadir(data).groups["accent"]
    marks = dict(line.split() for line in out.read_text().splitlines())
    assert marks.keys() == accent.keys()
    # ties at the cut may pick either accent: check by WER, not by name
    worst_wer = sorted(values[v]["wer"] for v in ranked)[-2:]
    picked = {accent[u] for u, m in marks.items() if m == "worst"}
    assert sorted(values[v]["wer"] for v in picked) == worst_wer
    assert all(m == "rest" for u, m in marks.items() if accent[u] not in picked)


def test_rerun_skips_done_stages_and_redoes_the_unfinished_one(recipe_run):
    tmp, _ = recipe_run
    exp = tmp / "exp" / "tiny_char"
    greedy = exp / "decode_test_ctc_greedy"
    rescore = exp / f"decode_test_{MODES[2]}"
    # interruptions after a command wrote its results but before the marker: the stage
    # redoes its own output (--overwrite), since the commands refuse to replace results
    (greedy / ".done.score").unlink()
    (greedy / "wer.json").write_text("{}\n")  # a stale result of the interrupted run
    (rescore / ".done.decode").unlink()
    (rescore / "notes.txt").write_text("mine\n")  # not written by decode: kept
    (exp / "report_test" / ".done.report").unlink()
    (exp / ".done.average").unlink()
    cmvn_marker = tmp / "data" / ".done" / "stage2"
    cmvn_marker.unlink()
    r = run_recipe(tmp)
    for n, name in enumerate(["data", "validate", "cmvn", "tokenizer", "train", "average"]):
        if name not in ("cmvn", "average"):
            assert f"stage {n} ({name}): done before" in r.stdout
    assert cmvn_marker.exists() and (exp / ".done.average").exists()  # redone
    for mode in MODES[:2]:
        assert f"decode_test_{mode}: decode done before" in r.stdout
    assert f"decode_test_{MODES[2]}: decode done before" not in r.stdout
    assert (rescore / ".done.decode").exists() and (rescore / "notes.txt").read_text() == "mine\n"
    assert f"decode_test_{MODES[1]}: score done before" in r.stdout
    assert "== test / ctc_greedy" in r.stdout  # scored again
    assert json.loads((greedy / "wer.json").read_text())["overall"]["utts"] > 0
    assert (exp / "report_test" / ".done.report").exists()
    for mode in MODES:  # the unseen-accent set was finished: skipped
        assert f"decode_test_unseen_{mode}: decode done before" in r.stdout
    assert "report_test_unseen: report done before" in r.stdout
    assert "== summary" in r.stdout and "test/ctc_greedy" in r.stdout
    assert "test_unseen/ctc_greedy" in r.stdout
