"""The synthetic recipe end to end at smoke-test size: every stage's outputs exist and are
well formed, and a rerun skips finished stages and redoes an unfinished one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from moe_asr.data.datadir import load_datadir, validate_datadir

RECIPE = Path(__file__).resolve().parents[2] / "egs" / "synth_accents" / "asr1"
MODES = ["ctc_greedy", "ctc_prefix_beam+lm", "attention_rescoring"]


def _run(tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [
        str(RECIPE / "run.sh"),
        "--train-utts",
        "40",
        "--accents",
        "en-us,es,fr",
        "--noise",
        "clean,white",
        "--data-root",
        str(tmp / "data"),
        "--exp-root",
        str(tmp / "exp"),
        "--train-config",
        "conf/tiny.yaml",
        "--nj",
        "2",
        "--num-avg",
        "2",
        "--decode-modes",
        " ".join(MODES),
        "--report-max-utts",
        "40",
        *extra,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipe")
    return tmp, _run(tmp)


def test_every_stage_leaves_well_formed_outputs(recipe_run):
    tmp, r = recipe_run
    data, exp = tmp / "data", tmp / "exp" / "tiny_char"
    for split in ("train", "dev", "test"):
        assert validate_datadir(data / split) == []
    train, test = load_datadir(data / "train"), load_datadir(data / "test")
    assert set(train.utt2spk.values()).isdisjoint(test.utt2spk.values())  # held-out speakers
    assert set(test.groups["accent"].values()) == {"en-us", "es", "fr"}
    cmvn = json.loads((data / "train" / "cmvn.json").read_text())
    assert len(cmvn["mean"]) == 80 and cmvn["count"] > 0
    assert (data / "lang_char" / ".done").exists() and (data / "lm" / "3gram.arpa").exists()
    assert (exp / "config.yaml").exists() and (exp / "checkpoints" / "epoch-1.pt").exists()
    assert (exp / "model.pt").exists()
    for mode in MODES:
        out = exp / f"decode_test_{mode}"
        hyp = (out / "hyp.txt").read_text().splitlines()
        assert {line.split()[0] for line in hyp} == set(test.utt2spk)
        wer = json.loads((out / "wer.json").read_text())
        assert wer["overall"]["utts"] == len(test.utt2spk)
        for group in ("accent", "noise", "spk"):
            assert (out / f"wer_by_{group}.md").exists()
    assert "| en-us" in r.stdout and "accent" in r.stdout  # per-accent table printed
    report = exp / "report_test"
    html = (report / "report.html").read_text()
    parser = HTMLParser()
    parser.feed(html)
    assert (
        json.loads((report / "report.json").read_text())["groups"]["accent"]["nmi_mean"] is not None
    )
    for n in range(9):
        assert (exp / "logs" / f"stage{n}.log").exists()


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
    r = _run(tmp)
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
    assert "== summary" in r.stdout and "test/ctc_greedy" in r.stdout
