"""Training reliability: one run per exp dir (a second run and a side-by-side resume are
refused, the first run's files stay intact), a full disk at checkpoint time is a one-line
error that keeps the last good checkpoint, bad config values fail before the exp dir gets
a file, and suspicious transcripts are warned about."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

from moe_asr.cli import main
from moe_asr.data.datadir import DataDir
from moe_asr.data.tokenizer import TokenizerConfig, train_tokenizer
from moe_asr.train.checkpoint import load_checkpoint
from moe_asr.train.trainer import transcript_warnings
from tests.test_files import full_disk
from tests.train.test_trainer import _args, corpus  # noqa: F401 - the shared fixture


def test_second_training_and_side_resume_are_refused_first_run_intact(corpus, tmp_path):  # noqa: F811
    exp = tmp_path / "exp"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moe_asr.cli",
            *_args(corpus, exp, "--set", "train.max_epochs=3", "--set", "train.lr=0.004"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (exp / ".lock").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first.poll() is None, "the first run ended before the second could start"
    # a second run with another lr, while the first holds the dir (last.pt may not exist yet)
    code = main(_args(corpus, exp, "--set", "train.max_epochs=3", "--set", "train.lr=0.001"))
    resume = main(_args(corpus, exp, "--set", "train.max_epochs=3", "--resume"))
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert code == 1 and resume == 1
    # nothing of the refused runs reached the exp dir: config, log and checkpoints are the first's
    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    assert cfg["train"]["lr"] == 0.004
    log = (exp / "train.log").read_text()
    assert log.count("params ") == 1 and "stopped: finished 3 epochs" in log
    assert sorted(p.name for p in (exp / "checkpoints").glob("epoch-*.pt")) == [
        "epoch-0.pt",
        "epoch-1.pt",
        "epoch-2.pt",
    ]
    assert load_checkpoint(exp / "checkpoints" / "last.pt")["state"]["epoch"] == 3
    assert not (exp / ".lock").exists()  # released on exit


def test_refusal_names_the_running_job(corpus, tmp_path, capsys):  # noqa: F811
    exp = tmp_path / "exp"
    exp.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from moe_asr.files import _host

        (exp / ".lock").write_text(f"{_host()} {sleeper.pid} 2026-12-01T00:00:00\n")
        assert main(_args(corpus, exp)) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"in use by another training run, PID {sleeper.pid} on host {_host()}" in err
    finally:
        sleeper.kill()
        sleeper.wait()
    assert list(exp.iterdir()) == [exp / ".lock"]  # nothing written beside it


def test_full_disk_at_checkpoint_is_one_line_and_keeps_the_last_good_one(
    corpus,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    exp = tmp_path / "exp"
    full_disk(monkeypatch, only="epoch-1.pt")  # epoch 0 saved fine, epoch 1 hits a full disk
    assert main(_args(corpus, exp, "--set", "train.max_epochs=3")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("moe-asr train: error: ") and "Traceback" not in "\n".join(err)
    assert "no space left on device" in err[-1] and "last good checkpoint" in err[-1]
    assert "--resume" in err[-1]
    last = load_checkpoint(exp / "checkpoints" / "last.pt")
    assert last["state"]["epoch"] == 1  # the one written after epoch 0
    ckpts = exp / "checkpoints"
    assert not [p for p in ckpts.iterdir() if p.stat().st_size == 0 or ".tmp" in p.name]
    assert not (exp / ".lock").exists()
    monkeypatch.undo()
    # after freeing space, --resume finishes the run
    assert main(_args(corpus, exp, "--set", "train.max_epochs=3", "--resume")) == 0
    assert load_checkpoint(ckpts / "last.pt")["state"]["epoch"] == 3


@pytest.mark.parametrize(
    "override",
    [
        "train.lr=-0.01",
        "model.d_model=33",  # 2 heads (the decoder too)
        "model.num_heads=0",
        "model.subsampling=5",
        "model.dropout=1.5",
        "train.max_epochs=-1",
        "train.warmup_steps=-5",
        "train.accum_grad=0",
        "train.grad_clip=-1",
        "model.moe.top_k=3",  # of 2 experts
        "model.input_dim=40",  # features have 80 mel bins
        "train.scheduler=linear",
    ],
)
def test_bad_config_value_is_a_config_error_before_any_file(corpus, tmp_path, capsys, override):  # noqa: F811
    exp = tmp_path / "exp"
    assert main(_args(corpus, exp, "--set", override)) == 1
    err = capsys.readouterr().err
    key = override.split("=")[0]
    assert err.startswith("moe-asr train: error: ") and err.count("\n") == 1
    assert key in err and "Traceback" not in err
    assert not exp.exists()


def test_config_error_is_raised_by_the_library_too(corpus, tmp_path):  # noqa: F811
    from moe_asr.config import ConfigError, load_config
    from moe_asr.train.trainer import TrainSetup, train

    cfg = load_config(corpus["conf"])
    cfg.train.max_epochs = 0  # built in code, never through load_config
    setup = TrainSetup(
        config=cfg,
        train_data=corpus["train"],
        dev_data=corpus["dev"],
        tokenizer_dir=corpus["lang"],
        exp_dir=tmp_path / "exp",
    )
    with pytest.raises(ConfigError, match="train.max_epochs=0"):
        train(setup)
    assert not (tmp_path / "exp").exists()


def test_model_build_error_leaves_the_exp_dir_without_files(corpus, tmp_path):  # noqa: F811
    # accent guidance needs num_experts >= accent values (2 here): a model-build error
    exp = tmp_path / "exp"
    over = ["--set", "model.moe.num_experts=1", "--set", "model.moe.guidance.labels=[accent]"]
    over += ["--set", "model.moe.guidance.router_loss_weight=0.1"]
    assert main(_args(corpus, exp, *over)) == 1
    assert not exp.exists()


def test_transcript_warnings_name_empty_and_unknown_characters():
    tok = train_tokenizer(["abc", "cab"], TokenizerConfig(type="char"))
    dd = DataDir(text={"u1": "abc", "u2": "", "u3": "abz", "u4": "cab"}, path=None)
    msgs = transcript_warnings(dd, ["u1", "u2", "u3", "u4"], tok)
    assert len(msgs) == 2
    assert "1 utterance(s) with an empty transcript" in msgs[0] and "u2" in msgs[0]
    assert "'z' (u3)" in msgs[1] and "<unk>" in msgs[1]
    assert transcript_warnings(dd, ["u1", "u4"], tok) == []


def test_stale_lock_of_a_dead_run_is_named_and_taken_over(corpus, tmp_path):  # noqa: F811
    from moe_asr.files import _host

    exp = tmp_path / "exp"
    exp.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (exp / ".lock").write_text(f"{_host()} {dead.pid} 2026-12-01T00:00:00\n")
    assert main(_args(corpus, exp, "--set", "train.max_epochs=1")) == 0
    log = (exp / "train.log").read_text()
    assert f"took over the stale lock of a dead training run ({_host()} {dead.pid})" in log
    assert not (exp / ".lock").exists()


def test_disk_full_outside_the_atomic_writers_is_one_line(monkeypatch, capsys):
    import errno

    from moe_asr.cli import train as train_cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "exp/train.log")

    monkeypatch.setattr(train_cli, "_run_average", full)
    assert main(["average", "--exp", "x"]) == 1
    err = capsys.readouterr().err
    assert (
        err == "moe-asr average: error: exp/train.log: no space left on device; free some "
        "space, then run the command again\n"
    )
