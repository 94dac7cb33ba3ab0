"""tools/collect_results.py: what it reads from an experiment dir without a trained model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tools.tool_module import load_tool


def _tool():
    return load_tool("collect_results")


def _exp(root: Path, name: str, steps: int, init: str | None = None) -> Path:
    exp = root / "exp" / name
    (exp / "checkpoints").mkdir(parents=True)
    history = [{"epoch": 0, "step": steps // 2}, {"epoch": 1, "step": steps}]
    (exp / "checkpoints" / "history.json").write_text(json.dumps(history))
    if init is not None:
        (exp / "init.json").write_text(json.dumps({"source": init}))
    return exp


def test_a_continuation_counts_the_updates_of_its_init_chain(tmp_path, monkeypatch):
    tool = _tool()
    base = _exp(tmp_path, "moe", 2000)
    # paths as the recipe writes them: relative to the recipe dir (exp's grandparent)
    cont = _exp(tmp_path, "moe_est_from_moe", 1000, init="exp/moe/model.pt")
    again = _exp(tmp_path, "again", 500, init=str(cont / "checkpoints" / "last.pt"))
    monkeypatch.chdir(tmp_path / "exp")  # not the recipe dir: relative sources still resolve
    assert tool._updates(base) == (2000, None)
    assert tool._updates(cont) == (3000, str(tmp_path / "exp/moe/model.pt"))
    assert tool._updates(again)[0] == 3500


def test_an_init_model_without_history_counts_only_the_runs_own_updates(tmp_path):
    tool = _tool()
    exp = _exp(tmp_path, "upcycled", 800, init="/elsewhere/dense.pt")
    assert tool._updates(exp) == (800, "/elsewhere/dense.pt")


def test_the_json_keeps_systems_and_sets_that_this_call_does_not_collect(tmp_path):
    tool = _tool()
    old = {
        "systems": {
            "moe": {"seed": 0, "set": {"test": {"m": 1}, "test_reverb": {"m": 2}}, "report": {}},
            "dense": {"seed": 0, "set": {"test": {"m": 3}}, "report": {}},
        }
    }
    new = {"systems": {"moe": {"seed": 0, "set": {"test": {"m": 4}}, "report": {"test": {}}}}}
    merged = tool._merge(old, new)
    assert merged["systems"]["dense"] == old["systems"]["dense"]
    assert merged["systems"]["moe"]["set"] == {"test": {"m": 4}, "test_reverb": {"m": 2}}
    assert merged["systems"]["moe"]["report"] == {"test": {}}
    assert tool._read_json(tmp_path / "absent.json") == {"systems": {}}
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(SystemExit, match="bad.json: not JSON"):
        tool._read_json(bad)
