"""Training: the loss falls, a SIGKILLed run resumes to identical weights, checkpoints are
atomic, NaN losses are skipped, and two gloo ranks under torchrun stay in sync."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from moe_asr.cli import main
from moe_asr.train.checkpoint import atomic_save, load_checkpoint
from tests.tone_corpus import make_tone_corpus

TINY = """
model:
  d_model: 32
  num_heads: 2
  num_layers: 2
  d_ff: 64
  conv_kernel: 7
  dropout: 0.1
  subsampling_channels: 8
  ffn: moe
  moe: {num_experts: 2, top_k: 1}
  decoder: {num_layers: 1, num_heads: 2, d_ff: 64, dropout: 0.1}
data:
  max_batch_seconds: 4.0
  num_buckets: 2
  augment: {specaug: false}
tokenizer: {type: char}
train:
  lr: 0.004
  warmup_steps: 5
  max_epochs: 3
  log_interval: 5
  num_threads: 1
"""

TEXTS = [
    "abc",
    "bad",
    "cafe",
    "face",
    "head",
    "bead",
    "deaf",
    "fade",
    "babe",
    "cage",
    "edge",
    "gab",
    "hag",
    "bag",
    "dab",
    "fab",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tones")
    train = make_tone_corpus(root / "train", TEXTS, accents=["x", "y"])
    dev = make_tone_corpus(root / "dev", TEXTS[:4], accents=["x", "y"], prefix="d")
    conf = root / "tiny.yaml"
    conf.write_text(TINY)
    lang = root / "lang"
    assert (
        main(
            ["train-tokenizer", "--data", str(train / "text"), "--type", "char", "--out", str(lang)]
        )
        == 0
    )
    cmvn = root / "cmvn.json"
    assert main(["compute-cmvn", str(train), str(cmvn)]) == 0
    return {"train": train, "dev": dev, "conf": conf, "lang": lang, "cmvn": cmvn}


def _args(c, exp, *extra):
    return [
        "train",
        "--config",
        str(c["conf"]),
        "--train-data",
        str(c["train"]),
        "--dev-data",
        str(c["dev"]),
        "--tokenizer",
        str(c["lang"]),
        "--cmvn",
        str(c["cmvn"]),
        "--exp",
        str(exp),
        *extra,
    ]


def _sets(overrides: list[str]) -> list[str]:
    """``--set`` options for config overrides (``key=value``)."""
    return [a for s in overrides for a in ("--set", s)]


def test_loss_falls_and_average_makes_a_loadable_package(corpus, tmp_path):
    exp = tmp_path / "exp"
    assert (
        main(_args(corpus, exp, "--set", "train.max_epochs=40", "--set", "train.log_interval=50"))
        == 0
    )
    history = json.loads((exp / "checkpoints" / "history.json").read_text())
    assert len(history) == 40
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["dev_loss"] < history[0]["dev_loss"]
    assert (exp / "config.yaml").exists() and (exp / "train.log").exists()
    assert any((exp / "tensorboard").iterdir())
    log = (exp / "train.log").read_text()
    assert "load [" in log and "ctc" in log  # per-layer expert load and loss terms logged
    # keep_best=5: at most five epoch checkpoints stay
    assert len(list((exp / "checkpoints").glob("epoch-*.pt"))) == 5
    assert main(["average", "--exp", str(exp), "--num", "3", "--best"]) == 0
    pkg = torch.load(exp / "model.pt", weights_only=True)  # nothing executes on load
    assert pkg["format"].startswith("moe_asr.package")
    from moe_asr.package import load_package

    loaded = load_package(exp / "model.pt")
    feats = torch.randn(1, 100, 80)
    enc = loaded.model.encode(feats, torch.tensor([100]))
    assert loaded.model.ctc_log_probs(enc.out).shape[-1] == loaded.tokenizer.vocab_size
    # the package carries the CMVN of the training data (not the identity)
    cmvn = json.loads(corpus["cmvn"].read_text())
    torch.testing.assert_close(loaded.model.cmvn_mean, torch.tensor(cmvn["mean"]).float())
    # the dev loss recorded during training is the saved model's dev loss (an inference weight
    # cache once went stale across fused optimizer steps and skewed every epoch's dev metrics)
    assert main(["average", "--exp", str(exp), "--num", "1", "--overwrite"]) == 0
    one = load_package(exp / "model.pt")
    (epoch,) = one.meta["averaged_epochs"]
    assert _dev_loss(one, corpus["dev"]) == pytest.approx(history[epoch]["dev_loss"], rel=1e-4)
    # refusing to overwrite an earlier run
    assert main(_args(corpus, exp)) == 1


def _dev_loss(pkg, dev) -> float:
    """The trainer's dev evaluation of a package (same dataset, batches and metric)."""
    from moe_asr.data.dataset import AsrDataset, make_loader, make_sampler
    from moe_asr.train.dev import evaluate_dev

    cfg = pkg.config
    ds = AsrDataset(dev, pkg.tokenizer, pkg.label_vocab, cfg.data, train=False, seed=cfg.train.seed)
    loader = make_loader(ds, make_sampler(ds, shuffle=False, seed=cfg.train.seed), 0)
    return evaluate_dev(pkg.model, loader, pkg.tokenizer, torch.device("cpu"), False)["loss"]


@pytest.mark.parametrize("variant", ["full", "dynamic_chunks", "fast_dropout"], ids=lambda v: v)
def test_sigkill_then_resume_equals_uninterrupted_run(corpus, tmp_path, variant):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    common = ["--set", "train.max_epochs=3", "--set", "train.save_every_steps=1"]
    if (
        variant == "dynamic_chunks"
    ):  # the chunk size drawn per batch comes from the checkpointed RNG
        common += ["--set", "model.streaming.enabled=true", "--set", "model.streaming.max_chunk=4"]
    if variant == "fast_dropout":  # its masks come from the same checkpointed generator
        common += ["--set", "train.cpu_dropout=fast"]
    ref = tmp_path / "ref"
    subprocess.run(
        [sys.executable, "-m", "moe_asr.cli", *_args(corpus, ref, *common)],
        check=True,
        env=env,
        capture_output=True,
    )

    exp = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moe_asr.cli", *_args(corpus, exp, *common)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = exp / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    killed_mid_epoch = False
    while time.monotonic() < deadline and proc.poll() is None:
        if last.exists():
            try:
                st = load_checkpoint(last)["state"]
            except Exception:
                st = None  # being replaced right now: atomic rename, try again
            if st and st["epoch"] == 1 and st["batches_done"] >= 2:
                proc.send_signal(signal.SIGKILL)
                killed_mid_epoch = True
                break
        time.sleep(0.05)
    proc.wait()
    assert killed_mid_epoch, "training ended before it could be killed mid-epoch"
    # the checkpoint is never corrupt, whatever the kill interrupted: last.pt loads
    load_checkpoint(last)
    subprocess.run(
        [sys.executable, "-m", "moe_asr.cli", *_args(corpus, exp, *common, "--resume")],
        check=True,
        env=env,
        capture_output=True,
    )
    assert not list((exp / "checkpoints").glob(".*tmp*"))  # a killed save's temp file is cleared
    a = load_checkpoint(ref / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(last)["model"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0, msg=k)


def test_atomic_save_never_leaves_a_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"v": torch.ones(3)}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic_save({"v": torch.zeros(3)}, path)
    assert torch.equal(load_checkpoint(path)["v"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_nan_losses_are_skipped_then_stop_training(corpus, tmp_path, monkeypatch):
    from moe_asr import model as model_mod

    real_forward = model_mod.AsrModel.forward
    calls = {"n": 0}

    def flaky(self, *a, **k):
        out = real_forward(self, *a, **k)
        calls["n"] += 1
        if self.training and calls["n"] in (2, 3):
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(model_mod.AsrModel, "forward", flaky)
    exp = tmp_path / "nan"
    assert main(_args(corpus, exp, "--set", "train.max_epochs=1")) == 0
    assert "non-finite loss, batch skipped" in (exp / "train.log").read_text()

    def always_nan(self, *a, **k):
        out = real_forward(self, *a, **k)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(model_mod.AsrModel, "forward", always_nan)
    exp2 = tmp_path / "nan2"
    assert main(_args(corpus, exp2, "--set", "train.max_bad_steps=3")) == 1


def test_torchrun_two_gloo_ranks_stay_identical(corpus, tmp_path):
    exp = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "moe_asr.cli",
        *_args(corpus, exp, "--set", "train.max_epochs=1"),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    sums = json.loads((exp / "ddp_check.json").read_text())["checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
    assert (exp / "checkpoints" / "epoch-0.pt").exists()


def test_init_upcycles_a_dense_run_and_resume_keeps_it(corpus, tmp_path, capsys):
    steps = ["--set", "train.max_steps=2", "--set", "train.max_epochs=1"]
    dense = tmp_path / "dense"
    assert main(_args(corpus, dense, *steps, "--set", "model.ffn=dense")) == 0
    assert main(["average", "--exp", str(dense), "--num", "1"]) == 0
    moe = tmp_path / "moe"
    top2 = ["--set", "model.moe.top_k=2"]
    assert main(_args(corpus, moe, *steps, *top2, "--init", str(dense / "model.pt"))) == 0
    report = json.loads((moe / "init.json").read_text())
    assert report["kind"] == "package" and report["skipped"] == [] and report["unused"] == []
    # 2 layers x 2 halves x 2 experts x 4 tensors; the 4 routers start fresh
    assert len(report["upcycled"]) == 32 and len(report["new"]) == 4
    assert "ctc_head.weight" in report["loaded"]  # same tokenizer: token layers loaded
    assert "32 upcycled" in (moe / "train.log").read_text()
    from moe_asr.config import load_config

    assert load_config(moe / "config.yaml").train.init == str(dense / "model.pt")
    # resume wins: the run continues from last.pt (it descends from the init) ...
    init = ["--init", str(dense / "model.pt")]
    assert main(_args(corpus, moe, *steps, *top2, *init, "--resume")) == 0
    assert "not applied: resumed" in (moe / "train.log").read_text()
    # ... and another init than the run started with is a changed config
    ckpt = dense / "checkpoints" / "last.pt"
    capsys.readouterr()
    assert main(_args(corpus, moe, *steps, *top2, "--init", str(ckpt), "--resume")) == 1
    assert "different config" in capsys.readouterr().err
    # a training checkpoint works as the init too (tokenizer from its exp dir)
    other = tmp_path / "from_ckpt"
    assert main(_args(corpus, other, *steps, "--init", str(ckpt), "--init-noise", "0.01")) == 0
    report = json.loads((other / "init.json").read_text())
    assert report["kind"] == "checkpoint" and report["noise"] == 0.01 and report["skipped"] == []


def test_training_step_reaches_the_label_loss_schedule(corpus, tmp_path, monkeypatch):
    from moe_asr.model import AsrModel

    seen = []
    forward = AsrModel.forward

    def recording(self, *args, step=None, **kw):
        out = forward(self, *args, step=step, **kw)
        if self.training:
            seen.append((step, float(out.label_loss.detach())))
        return out

    monkeypatch.setattr(AsrModel, "forward", recording)
    guided = [
        "model.moe.guidance.labels=[accent]",
        "model.moe.guidance.group_router=true",
        "model.moe.guidance.router_loss_weight=1.0",
        "model.moe.guidance.loss_warmup_steps=2",
        "train.max_steps=4",
    ]
    assert main(_args(corpus, tmp_path / "exp", *_sets(guided))) == 0
    assert [s for s, _ in seen] == [0, 1, 2, 3]
    assert seen[0][1] == 0.0 and all(loss > 0 for _, loss in seen[1:])  # warm-up from 0


@pytest.mark.parametrize("dual", [False, True])
def test_training_draws_stream_chunks_only_after_full_context_steps(
    corpus, tmp_path, monkeypatch, dual
):
    """The encoder passes of each training update: full context for the first steps, then a
    drawn chunk (dual mode: a full-context pass and a chunk pass per update)."""
    from moe_asr.model import AsrModel

    passes = []
    encode = AsrModel.encode

    def recording(self, *args, chunk_frames=0, **kwargs):
        if self.training:  # not the dev passes
            passes.append(chunk_frames)
        return encode(self, *args, chunk_frames=chunk_frames, **kwargs)

    monkeypatch.setattr(AsrModel, "encode", recording)
    streaming = [
        "model.streaming.enabled=true",
        "model.streaming.conv=chunk",
        "model.streaming.full_context_prob=0.0",
        "model.streaming.max_chunk=4",
        "model.streaming.full_context_steps=2",
        f"model.streaming.dual_mode={str(dual).lower()}",
        "train.max_steps=4",
    ]
    assert main(_args(corpus, tmp_path / "exp", *_sets(streaming))) == 0
    early, late = passes[:2], passes[2:]
    assert early == [0, 0]
    chunks = late[1::2] if dual else late
    assert len(chunks) == 2 and all(1 <= c <= 4 for c in chunks)  # a chunk every update
    if dual:
        assert late[0::2] == [0, 0]  # and before it, the full-context pass of the same batch


def test_noise_guided_training_with_augmentation_labels_resumes_bit_exact(
    corpus, tmp_path, monkeypatch
):
    """The noise/snr labels come from the augmentation (the tone corpus has no utt2noise);
    an interrupted run resumes to the weights of the uninterrupted one."""
    from moe_asr.model import AsrModel

    sets = [
        "data.augment.noise_prob=0.7",
        "data.augment.noise_types=[white,babble]",
        "data.augment.snr_range=[-5,20]",
        "data.augment.reverb_prob=0.5",
        "model.moe.guidance.labels=[noise,snr]",
        "model.moe.guidance.embed=true",
        "model.moe.guidance.router_loss_weight=0.5",
        "model.moe.num_experts=4",
        "train.max_steps=4",
        "train.save_every_steps=1",
    ]
    args = _sets(sets)
    seen: list[dict] = []
    forward = AsrModel.forward

    def recording(self, feats, feat_lens, tokens, token_lens, labels=None, *a, **kw):
        if self.training:
            seen.append({k: v.clone() for k, v in (labels or {}).items()})
            if os.environ.get("_STOP_AFTER") and len(seen) > int(os.environ["_STOP_AFTER"]):
                raise KeyboardInterrupt
        return forward(self, feats, feat_lens, tokens, token_lens, labels, *a, **kw)

    monkeypatch.setattr(AsrModel, "forward", recording)
    assert main(_args(corpus, tmp_path / "ref", *args)) == 0
    vocab = json.loads((tmp_path / "ref" / "label_vocab.json").read_text())
    assert vocab == {
        "noise": ["unk", "clean", "white", "babble"],
        "snr": ["unk", "clean", "<0", "0..10", ">=10"],
    }
    assert len(seen) == 4
    ids = torch.cat([s["noise"] for s in seen])
    assert set(ids.tolist()) <= {1, 2, 3} and len(set(ids.tolist())) > 1  # never unk
    ref_labels = list(seen)
    monkeypatch.setenv("_STOP_AFTER", "2")
    seen.clear()
    assert main(_args(corpus, tmp_path / "cut", *args)) == 130  # interrupted at step 3
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["state"]["step"] == 2
    monkeypatch.delenv("_STOP_AFTER")
    seen.clear()
    assert main(_args(corpus, tmp_path / "cut", *args, "--resume")) == 0
    assert len(seen) == 2  # steps 3 and 4 draw the conditions of the uninterrupted run
    for got, want in zip(seen, ref_labels[2:], strict=True):
        assert all(torch.equal(got[k], want[k]) for k in want)
    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)


@pytest.mark.parametrize("kind", ["torch", "fast"])
def test_training_draws_cpu_dropout_masks_as_configured(corpus, tmp_path, monkeypatch, kind):
    """train.cpu_dropout holds for the whole run (and only for it); a bad value is refused
    before anything is written."""
    from moe_asr.nn import dropout as dropout_mod
    from moe_asr.train import trainer

    seen = []

    def fake_train(*args, **kwargs):
        seen.append(dropout_mod._kind)
        return trainer.TrainResult(steps=0, epochs_completed=0, stopped_because="test")

    monkeypatch.setattr(trainer, "_train", fake_train)
    exp = tmp_path / "exp"
    assert main(_args(corpus, exp, "--set", f"train.cpu_dropout={kind}")) == 0
    assert seen == [kind] and dropout_mod._kind == "torch"
    bad = tmp_path / "bad"
    assert main(_args(corpus, bad, "--set", "train.cpu_dropout=quick")) != 0
    assert not bad.exists() or not any(bad.iterdir())
