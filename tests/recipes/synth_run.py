"""The CI-sized run of the synthetic recipe, shared by the recipe tests (one run per session:
`recipe_run` in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["RECIPE", "MODES", "REPO", "SEEN", "UNSEEN", "TEST_SETS", "run_recipe"]

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "egs" / "synth_accents" / "asr1"
MODES = ["ctc_greedy", "ctc_prefix_beam+lm", "attention_rescoring"]
SEEN = {"en-us", "es", "fr"}
UNSEEN = {"de", "pl", "cy", "fi"}  # germanic, slavic, celtic, uralic; de is also in --accents
TEST_SETS = ("test", "test_unseen")


def run_recipe(tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [
        str(RECIPE / "run.sh"),
        "--train-utts",
        "40",
        "--accents",
        "en-us,es,fr,de",
        "--unseen-accents",
        ",".join(sorted(UNSEEN)),
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
