"""local/data.sh of the synthetic recipe: which `moe-asr synth` calls its options make
(recorded by a stand-in `moe-asr` on PATH, so no audio is made), the unseen-noise rule and
the reverberant test set."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[2] / "egs" / "synth_accents" / "asr1"


def _calls(tmp: Path, *opts: str) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    """Run local/data.sh; returns the process and {data dir name: {option: value}}."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp / "calls.txt"
    stub = bin_dir / "moe-asr"
    stub.write_text(f'#!/usr/bin/env bash\nprintf "%q " "$@" >> {log}\necho >> {log}\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    cmd = ["local/data.sh", "--data-root", str(tmp / "data"), "--train-utts", "200", *opts]
    r = subprocess.run(cmd, cwd=RECIPE, capture_output=True, text=True, env=env, timeout=60)
    calls = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        words = shlex.split(line)
        assert words[0] == "synth", words
        opts = [w for w in words[2:] if w != "--overwrite"]  # stage 0 redoes its output
        calls[Path(words[1]).name] = dict(zip(opts[0::2], opts[1::2], strict=True))
    return r, calls


def test_default_options_make_the_three_splits_of_the_default_accents(tmp_path):
    r, calls = _calls(tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(calls) == ["dev", "test", "train"]
    for name, opts in calls.items():
        assert opts["--split"] == name and opts["--accents"] == "default"
        assert "--exclude-accents" not in opts
    assert calls["train"]["--num-utts"] == "200" and calls["test"]["--num-utts"] == "20"


def test_unseen_accents_noise_and_rooms_get_their_own_test_sets(tmp_path):
    r, calls = _calls(
        tmp_path,
        *("--accents", "all", "--unseen-accents", "cy,fi,tr,sw"),
        *("--noise", "clean,white", "--unseen-noise", "brown,pink", "--unseen-snrs", "0,5"),
        *("--reverb-rt60s", "0.3,0.9"),
    )
    assert r.returncode == 0, r.stderr
    sets = ["dev", "test", "test_reverb", "test_unseen", "test_unseen_noise", "train"]
    assert sorted(calls) == sets
    for name in ("train", "dev", "test", "test_unseen_noise", "test_reverb"):  # held out: gone
        assert calls[name]["--accents"] == "all"
        assert calls[name]["--exclude-accents"] == "cy,fi,tr,sw"
    unseen = calls["test_unseen"]
    assert unseen["--accents"] == "cy,fi,tr,sw" and "--exclude-accents" not in unseen
    assert unseen["--noise"] == "clean,white"  # only the accent is new
    noisy = calls["test_unseen_noise"]
    assert (noisy["--noise"], noisy["--snrs"]) == ("brown,pink", "0,5")
    rooms = calls["test_reverb"]  # test's speakers and sentences, clean, in simulated rooms
    assert (rooms["--noise"], rooms["--reverb"]) == ("clean", "0.3,0.9")
    assert all("--reverb" not in calls[n] for n in sets if n != "test_reverb")
    for name in ("test_unseen", "test_unseen_noise", "test_reverb"):  # test's size and split
        assert calls[name]["--split"] == "test"
        assert calls[name]["--num-utts"] == calls["test"]["--num-utts"]
        assert calls[name]["--seed"] == calls["test"]["--seed"]


def test_unseen_noise_that_training_uses_is_refused(tmp_path):
    for bad in ("white", "clean"):
        r, calls = _calls(tmp_path, "--noise", "clean,white", "--unseen-noise", f"brown,{bad}")
        assert r.returncode == 1 and f"--unseen-noise {bad}: give noise types" in r.stderr
        assert calls == {}


def test_low_snrs_make_a_test_set_of_the_training_noise_types_at_those_snrs(tmp_path):
    r, calls = _calls(tmp_path, "--noise", "clean,white,babble", "--low-snrs", "0,5")
    assert r.returncode == 0, r.stderr
    low = calls["test_low_snr"]
    assert (low["--noise"], low["--snrs"]) == ("white,babble", "0,5")  # no clean share
    assert (low["--split"], low["--num-utts"]) == ("test", calls["test"]["--num-utts"])
    assert calls["test"]["--snrs"] == "10,20"


def test_low_snrs_without_a_noise_type_is_refused(tmp_path):
    r, calls = _calls(tmp_path, "--noise", "clean", "--low-snrs", "0,5")
    assert r.returncode == 1 and "--low-snrs needs a noise type" in r.stderr


def test_keep_existing_adds_only_the_missing_data_dirs(tmp_path):
    for name in ("train", "dev", "test"):  # an existing data root, e.g. of an earlier run
        d = tmp_path / "data" / name
        d.mkdir(parents=True)
        (d / "wav.scp").write_text("u1 u1.wav\n")
        (d / "text").write_text("u1 hello\n")
    (tmp_path / "data" / "test_reverb").mkdir()  # without audio: not a finished data dir
    args = ("--reverb-rt60s", "0.3", "--unseen-noise", "brown")
    r, calls = _calls(tmp_path, *args, "--keep-existing", "true")
    assert r.returncode == 0, r.stderr
    assert sorted(calls) == ["test_reverb", "test_unseen_noise"]
    assert "data/train: kept" in r.stdout
    (tmp_path / "calls.txt").unlink()
    r, calls = _calls(tmp_path, *args)  # the default redoes every data dir
    assert sorted(calls) == ["dev", "test", "test_reverb", "test_unseen_noise", "train"]
