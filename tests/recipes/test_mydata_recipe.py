"""egs/mydata/asr1 takes any Kaldi data dirs: the session's synthetic data dirs, copied as a
user's corpus, go through data prep, validation, CMVN, tokenizer and LM (the later stages
are the shared asr.sh ones that test_synth_recipe.py runs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from moe_asr.data.datadir import load_datadir, validate_datadir
from tests.recipes.synth_run import REPO

RECIPE = REPO / "egs" / "mydata" / "asr1"
TABLES = ("wav.scp", "text", "utt2spk", "utt2accent", "utt2noise")


def test_own_kaldi_data_dirs_run_through_the_stages(recipe_run, tmp_path):
    tmp, _ = recipe_run
    src = tmp_path / "my_corpus"
    for s in ("train", "dev", "test"):
        (src / s).mkdir(parents=True)
        for f in TABLES:  # no spk2utt: the recipe makes it
            shutil.copy(tmp / "data" / s / f, src / s / f)
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    args = [str(RECIPE / "run.sh"), "--stop-stage", "3", "--data-root", str(tmp_path / "data"),
            "--exp-root", str(tmp_path / "exp"), "--source-dir", str(src)]  # fmt: skip
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for s in ("train", "dev", "test"):
        d = tmp_path / "data" / s
        assert validate_datadir(d) == []
        assert load_datadir(d).utt2spk == load_datadir(tmp / "data" / s).utt2spk
    assert (tmp_path / "data" / "train" / "cmvn.json").is_file()
    assert (tmp_path / "data" / "lang_char" / "tokenizer.json").is_file()
    assert (tmp_path / "data" / "lm" / "3gram.arpa").is_file()
    # a data dir without text is refused with the file named
    (src / "dev" / "text").unlink()
    shutil.rmtree(tmp_path / "data")
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1 and "dev/text is missing" in r.stdout + r.stderr
