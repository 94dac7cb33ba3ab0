"""Training logs: per-expert load is named per macaron half (layer0a/layer0b) in TensorBoard
and train.log, epoch scalars sit at the global step, and a log file gets one progress line
per 10% instead of carriage-return updates."""

from __future__ import annotations

import io
from types import SimpleNamespace

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from moe_asr.nn.moe import RouterStats
from moe_asr.progress import LineProgress, progress_bar
from moe_asr.train.monitor import LOSS_TERMS, TrainLogger, routing_summary


def _stats(layer: int, half: int, expert: int) -> RouterStats:
    """4 real frames (of 5) all routed to ``expert`` of 2."""
    probs = torch.zeros(1, 5, 2)
    probs[..., expert] = 1.0
    idx = torch.full((1, 5, 1), expert)
    mask = torch.tensor([[True, True, True, True, False]])
    return RouterStats(probs, probs.log(), idx, torch.ones(1, 5, 1), mask, layer, half)


def _out(stats):
    z = torch.tensor(0.0)
    return SimpleNamespace(**{k: z + 1 for k in LOSS_TERMS}, router_stats=stats)


def test_macaron_halves_are_separate_series_and_epochs_use_the_global_step(tmp_path):
    stats = [_stats(0, 0, 0), _stats(0, 1, 1), _stats(1, 0, 1)]  # layer 1: one MoE half
    assert [s["name"] for s in routing_summary(stats)] == ["0a", "0b", "1"]
    log = TrainLogger(tmp_path)
    for step in (1, 2, 3):
        log.log_step(step, _out(stats), 1e-3, 1.0)
    log.log_epoch({"epoch": 1, "step": 3, "dev_loss": 2.5, "train_loss": 3.0})
    log.close()
    ev = EventAccumulator(str(tmp_path / "tensorboard"))
    ev.Reload()
    tags = set(ev.Tags()["scalars"])
    assert {"moe/layer0a/load_expert0", "moe/layer0b/load_expert1", "moe/layer1/entropy"} <= tags
    assert not any(t.startswith("moe/layer0/") for t in tags)
    a = ev.Scalars("moe/layer0a/load_expert0")
    b = ev.Scalars("moe/layer0b/load_expert0")
    assert [(e.step, e.value) for e in a] == [(1, 1.0), (2, 1.0), (3, 1.0)]  # one point per step
    assert [e.value for e in b] == [0.0, 0.0, 0.0]
    assert [e.step for e in ev.Scalars("epoch/dev_loss")] == [3]
    text = (tmp_path / "train.log").read_text()
    assert "L0a load [1.00 0.00]" in text and "L0b load [0.00 1.00]" in text
    assert "L1 load [0.00 1.00]" in text


def test_progress_in_a_log_is_a_line_per_ten_percent():
    buf = io.StringIO()  # not a terminal, like `2>&1 | tee stage.log`
    bar = progress_bar(1000, desc="decode", unit="utt", file=buf)
    assert isinstance(bar, LineProgress)
    for _ in range(1000):
        bar.update(1)
    bar.set_postfix(errors=0)
    bar.close()
    lines = buf.getvalue().splitlines()
    assert "\r" not in buf.getvalue()
    assert [ln.split(" (")[0] for ln in lines] == [f"decode: {p}%" for p in range(10, 100, 10)] + [
        "decode: done"
    ]
    assert lines[-1].startswith("decode: done (1000/1000 utt") and "errors 0" in lines[-1]
    # an unknown total gives the summary only; a run that ends early says so
    buf = io.StringIO()
    bar = LineProgress(None, desc="routing", file=buf)
    bar.update(7)
    bar.close()
    bar = LineProgress(10, desc="epoch 1", file=buf)
    bar.update(3)
    bar.close()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("routing: done (7 it") and len(lines) == 3
    assert lines[1].startswith("epoch 1: 30% (3/10") and lines[2].startswith("epoch 1: stopped")
