"""Recipe plumbing, without running a model: options in any order, `--help` lists every
option of the recipe and of asr.sh with its value, recipes find the repo's .venv
(recipes/path.sh) or say how to install, a missing corpus points at the recipe README,
a stage 6 run for an experiment without a model names the ones there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.recipes.synth_run import REPO

RECIPES = sorted(p.parent for p in (REPO / "egs").glob("*/asr1/run.sh"))
REAL = [r for r in RECIPES if (r / "local" / "data.sh").read_text().count("corpus_dir")]


def _asr_options() -> list[str]:
    block = (REPO / "recipes" / "asr.sh").read_text().split("# begin options")[1]
    block = block.split("# end options")[0]
    return [m.group(1) for m in re.finditer(r"^([a-z_]+)=", block, re.M)]


def _run(recipe: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess:
    default = f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"  # moe-asr on PATH
    env = {**os.environ, "PATH": path if path is not None else default}
    return subprocess.run(
        ["bash", str(recipe / "run.sh"), *args], capture_output=True, text=True, env=env,
        timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.parent.name)
def test_help_lists_every_option_with_its_value(recipe):
    r = _run(recipe, "--nbpe", "77", "--help")
    assert r.returncode == 0, r.stderr
    own = (recipe / "run.sh").read_text().split("# begin options")[1].split("# end options")[0]
    for name in [*re.findall(r"^([a-z_]+)=", own, re.M), *_asr_options()]:
        assert f"--{name.replace('_', '-')} " in r.stdout, name
    assert re.search(r"--nbpe +\[77\]", r.stdout)  # the value in effect, not the default
    assert re.search(r"--stage +\[0\] +first stage", r.stdout)


@pytest.fixture
def fake_repo(tmp_path):
    """A copy of recipes/ and the l2arctic recipe with a stub .venv/bin/moe-asr."""
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    shutil.copytree(REPO / "egs" / "l2arctic", tmp_path / "egs" / "l2arctic")
    return tmp_path, tmp_path / "egs" / "l2arctic" / "asr1"


def _stub_venv(root: Path) -> Path:
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    stub = bin_dir / "moe-asr"
    stub.write_text(f'#!/bin/sh\necho "stub moe-asr $*" >> {root}/calls\n')
    stub.chmod(0o755)
    return stub


def test_options_in_any_order_and_the_repo_venv_is_found(fake_repo, tmp_path):
    root, recipe = fake_repo
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _stub_venv(root)
    args = ["--data-root", str(tmp_path / "d"), "--corpus-dir", str(corpus), "--exp-root",
            str(tmp_path / "e"), "--stop-stage", "0"]  # fmt: skip
    r = _run(recipe, *args, path="/usr/bin:/bin")  # no moe-asr on PATH
    assert r.returncode == 0, r.stdout + r.stderr
    calls = (root / "calls").read_text()
    assert f"stub moe-asr prepare-corpus l2arctic {corpus} {tmp_path / 'd'}" in calls
    r = _run(recipe, "--stage", "1", "--bogus", "1", path="/usr/bin:/bin")
    assert r.returncode == 1 and "unknown option --bogus" in r.stderr


def test_no_install_says_how(fake_repo, tmp_path):
    _, recipe = fake_repo
    r = _run(recipe, "--data-root", str(tmp_path / "d"), "--stop-stage", "0", path="/usr/bin:/bin")
    assert r.returncode == 1 and "make venv" in r.stderr and "pip install -e" in r.stderr


@pytest.mark.parametrize("recipe", REAL, ids=lambda p: p.parent.name)
def test_missing_corpus_points_at_the_recipe_readme(recipe, tmp_path):
    r = _run(recipe, "--corpus-dir", str(tmp_path / "nothing"), "--data-root", str(tmp_path / "d"),
             "--exp-root", str(tmp_path / "e"), "--stop-stage", "0")  # fmt: skip
    out = r.stdout + r.stderr  # stage output goes through `tee` into the stage log
    assert r.returncode == 1
    assert f"corpus not found at {tmp_path / 'nothing'}" in out
    assert f"{recipe}/README.md" in out and "licence" in out
    assert (recipe / "README.md").is_file()


def test_decoding_an_experiment_without_a_model_names_the_ones_there(tmp_path):
    (tmp_path / "exp" / "demo_char").mkdir(parents=True)
    recipe = REPO / "egs" / "synth_accents" / "asr1"
    r = _run(recipe, "--stage", "6", "--exp-root", str(tmp_path / "exp"), "--data-root",
             str(tmp_path / "data"))  # fmt: skip
    assert r.returncode == 1
    assert "exp/moe_char holds no model" in r.stderr and "demo_char" in r.stderr


def test_the_default_train_config_of_asr_sh_exists_in_every_recipe():
    default = re.search(r"^train_config=(\S+)", (REPO / "recipes" / "asr.sh").read_text(), re.M)
    for recipe in RECIPES:
        assert (recipe / default.group(1)).is_file(), recipe
