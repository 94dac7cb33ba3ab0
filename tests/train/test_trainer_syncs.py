"""The training loop reads the device only where it must, and logs the same values it did.

Per micro-batch the trainer reads one value (the finite-loss check that decides the skip);
per update one more (the finite gradient-norm check); a log step reads every logged
number in one transfer and an epoch's end reads the summed train loss once. The logged
values stay what reading every term on the host gave: each log step shows that step's
loss terms, and an epoch's ``train_loss`` is the mean of its finite micro-batch losses.
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from moe_asr.cli import main
from moe_asr.train.monitor import LOSS_TERMS, TrainLogger
from tests.train.test_trainer import _args, corpus  # noqa: F401 - the shared fixture

_READS = ("item", "tolist", "__float__", "__bool__", "__int__", "__index__")
_COUNTED = ("moe_asr/train/trainer.py", "moe_asr/train/monitor.py")
_NAN_CALLS = (3,)  # the 3rd training forward gets a NaN loss: its batch is skipped


def _count_reads(monkeypatch) -> dict[str, int]:
    """Tensor -> host reads made directly by the trainer and the logger, per file."""
    counts = dict.fromkeys(_COUNTED, 0)
    for name in _READS:
        real = getattr(torch.Tensor, name)

        def read(self, *a, _real=real, **k):
            caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
            for f in _COUNTED:
                if caller.endswith(f):
                    counts[f] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, read)
    return counts


@pytest.mark.parametrize("accum", [1, 2])
def test_one_read_per_micro_batch_and_the_same_logged_values(corpus, tmp_path, monkeypatch, accum):  # noqa: F811
    from moe_asr import model as model_mod

    records: list[dict] = []  # one per training forward: its terms as float() reads them
    epoch_ends: list[int] = []  # len(records) when each epoch was logged
    real_forward = model_mod.AsrModel.forward
    real_log_epoch = TrainLogger.log_epoch

    def recording(self, *a, **k):
        out = real_forward(self, *a, **k)
        if self.training:
            if len(records) + 1 in _NAN_CALLS:
                out.loss = out.loss * float("nan")
            records.append({t: float(getattr(out, t).detach()) for t in LOSS_TERMS})
        return out

    def log_epoch(self, record):
        epoch_ends.append(len(records))
        return real_log_epoch(self, record)

    monkeypatch.setattr(model_mod.AsrModel, "forward", recording)
    monkeypatch.setattr(TrainLogger, "log_epoch", log_epoch)
    counts = _count_reads(monkeypatch)
    exp = tmp_path / "exp"
    sets = ["train.max_epochs=3", "train.log_interval=2", f"train.accum_grad={accum}"]
    assert main(_args(corpus, exp, *(a for s in sets for a in ("--set", s)))) == 0
    monkeypatch.undo()  # reading the results below is not counted

    # which micro-batch each update ended on (the trainer's counting, per epoch)
    step_record: dict[int, dict] = {}
    epoch_losses: list[list[float]] = []
    step, begin = 0, 0
    for end in epoch_ends:
        micro, losses = 0, []
        for rec in records[begin:end]:
            if not np.isfinite(rec["loss"]):
                micro = 0
                continue
            losses.append(rec["loss"])
            micro += 1
            if micro == accum:
                micro, step = 0, step + 1
                step_record[step] = rec
        epoch_losses.append(losses)
        begin = end
    logged = [s for s in step_record if s == 1 or s % 2 == 0]
    assert len(epoch_ends) == 3 and step >= 4

    # reads: the skip decision per micro-batch, the update decision per update, one per
    # log step and one per epoch end; nothing else
    assert counts["moe_asr/train/trainer.py"] == len(records) + step
    assert counts["moe_asr/train/monitor.py"] == len(logged) + len(epoch_ends)

    history = json.loads((exp / "checkpoints" / "history.json").read_text())
    for h, losses in zip(history, epoch_losses):
        assert h["train_loss"] == sum(losses) / len(losses)  # the same float64 sum, in order
    text = (exp / "train.log").read_text()
    assert "non-finite loss, batch skipped" in text
    for s in logged:
        line = re.search(rf"step {s}; (.*)", text).group(1)
        assert f"loss {step_record[s]['loss']:.4f};" in line
        assert f"ctc {step_record[s]['ctc']:.4f};" in line
    ev = EventAccumulator(str(exp / "tensorboard"))
    ev.Reload()
    for term in ("loss", "ctc", "att", "moe_balance"):
        got = [(e.step, e.value) for e in ev.Scalars(f"train/{term}")]
        want = [(s, float(np.float32(step_record[s][term]))) for s in logged]
        assert got == want, term
