import os
import subprocess
import sys
from pathlib import Path

import pytest
from corpora_fixtures import make_l2arctic, make_librispeech, make_vctk, read_table

from moe_asr.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_prepare_corpus_then_validate(tmp_path, capsys, caplog):
    corpus = make_vctk(tmp_path, malformed=True)
    assert main(["prepare-corpus", "vctk", str(corpus), str(tmp_path / "data"), "--seed", "1"]) == 0
    out, err = capsys.readouterr()
    assert f"{tmp_path / 'data' / 'train'}: " in out
    assert "6 warning(s)" in err
    assert "speaker in speaker-info.txt without audio (1): p999" in caplog.text
    for split in ("train", "dev", "test"):
        assert main(["validate-data", str(tmp_path / "data" / split), "--check-audio"]) == 0


def test_prepare_corpus_user_errors(tmp_path, capsys):
    corpus = make_l2arctic(tmp_path)
    assert (
        main(["prepare-corpus", "l2arctic", str(corpus), str(tmp_path / "d"), "--mic", "mic2"]) == 1
    )
    assert "--mic does not apply to l2arctic" in capsys.readouterr().err
    assert main(["prepare-corpus", "l2arctic", str(corpus), str(tmp_path / "d"), "--download"]) == 1
    assert "psi.engr.tamu.edu" in capsys.readouterr().err
    assert main(["prepare-corpus", "vctk", str(tmp_path / "nope"), str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("moe-asr prepare-corpus: error: ") and "speaker-info.txt" in err


@pytest.mark.parametrize(
    "recipe,make", [("l2arctic", make_l2arctic), ("librispeech", make_librispeech)]
)
def test_local_data_sh(tmp_path, recipe, make):
    """local/data.sh --corpus-dir DIR writes data/{train,dev,test} (the stage-0 contract)."""
    corpus = make(tmp_path, malformed=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cwd = REPO / "egs" / recipe / "asr1"
    cmd = [
        "local/data.sh",
        "--nj",
        "2",
        "--data-root",
        str(tmp_path / "data"),
        "--corpus-dir",
        str(corpus),
    ]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # warnings go to stderr, one line per kind, naming the items
    assert "audio without a transcript (skipped) (1): " in proc.stderr
    for split in ("train", "dev", "test"):
        assert read_table(tmp_path / "data" / split / "utt2spk")
    proc = subprocess.run(
        cmd[:1] + ["--bogus", "1"], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1 and "unknown option --bogus" in proc.stderr


# recipe directory -> corpus name (fixture generator make_<name>)
RECIPES = {
    "l2arctic": "l2arctic",
    "vctk": "vctk",
    "commonvoice": "commonvoice",
    "edacc": "edacc",
    "aesrc2020": "aesrc",
    "librispeech": "librispeech",
}


@pytest.mark.parametrize(
    "recipe",
    ["l2arctic"] + [pytest.param(r, marks=pytest.mark.slow) for r in RECIPES if r != "l2arctic"],
)
def test_run_sh_stages_0_to_3(tmp_path, recipe):
    """run.sh --corpus-dir DIR drives recipes/asr.sh through data, validate, CMVN, tokenizer."""
    import corpora_fixtures

    corpus = getattr(corpora_fixtures, f"make_{RECIPES[recipe]}")(tmp_path)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = ["./run.sh", "--corpus-dir", str(corpus), "--stop-stage", "3", "--token-type", "char"]
    cmd += ["--data-root", str(tmp_path / "data"), "--exp-root", str(tmp_path / "exp")]
    proc = subprocess.run(
        cmd,
        cwd=REPO / "egs" / recipe / "asr1",
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = tmp_path / "data"
    assert (data / "train" / "cmvn.json").is_file()
    assert (data / "lang_char").is_dir()
    for split in ("train", "dev", "test"):
        assert f"{data / split}: OK" in proc.stdout + proc.stderr
