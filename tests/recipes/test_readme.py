"""The README's command blocks run as written, so that it cannot rot: every `sh` command and
every `python` block, in order, in a copy of egs/synth_accents/asr1 whose data/ and exp/
are the CI-sized recipe run of this session (conftest.py), with `exp/demo_char` (what
`make demo` leaves) standing for its experiment. Commands that cannot run in CI are listed in
SKIP with the reason; a SKIP entry that matches nothing is an error too, and so is a README
whose first tour command does not reach that recipe dir."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.recipes.synth_run import RECIPE, REPO

README = REPO / "README.md"

# command prefix -> why it does not run here
SKIP = {
    "make demo": "the Makefile target itself (CI runs `make test` around this suite)",
    "make test": "the Makefile target itself",
    "source .venv/bin/activate && cd egs/synth_accents/asr1": "this test runs in the venv, in "
    "(a copy of) that dir",
    "cd egs/synth_accents/asr1": "this test runs in (a copy of) that dir",
    "./run.sh --train-config conf/moe.yaml": "a full training run",
    "cd egs/mydata/asr1 && ./run.sh --source-dir": "needs your corpus (test_mydata_recipe.py "
    "runs this recipe on the session's data dirs)",
    "moe-asr prepare-corpus": "needs a real corpus (tests/corpora cover the layouts)",
    "cd ../../l2arctic/asr1": "needs the corpus",
    "torchrun": "DDP training (tests/train cover it)",
    ".venv/bin/python tools/bench_": "benchmarks time things: not on a shared CI machine",
    "moe-asr transcribe exp/moe_streaming_char": "needs a streaming-trained model "
    "(tests/decode/test_streaming_decode.py runs transcribe --streaming on one)",
    "moe-asr decode --model exp/moe_streaming_char": "needs a streaming-trained model "
    "(tests/decode/test_streaming_decode.py runs decode --chunk-frames on one)",
    "moe-asr adapt": "needs data of an accent the recipe's model has not seen "
    "(tests/train/test_adapt.py runs adapt on tiny models)",
    "moe-asr decode --model exp/moe_guided/model_pt.pt": "decodes the package of the skipped "
    "adapt command",
    "moe-asr extract --model exp/moe_hier_shared_char": "needs a model trained with "
    "moe_hier_shared.yaml "
    "(tests/analysis/test_extract_group.py runs --group-of on tiny group-routed models)",
}
# a python block containing this text -> why it does not run here
SKIP_PYTHON = {
    "exp/moe_streaming_char": "needs a streaming-trained model (tests/decode/"
    "test_streaming_decode.py feeds StreamingRecognizer pieces of random sizes)",
}
# CI size: what is changed in a command before it runs (training: two updates of tiny.yaml)
CI_SIZE = [
    (
        re.compile(r"^(moe-asr train .*)--config conf/moe\.yaml(.*)$"),
        r"\1--config conf/tiny.yaml\2",
    ),
    (re.compile(r"^(moe-asr train .*)$"), r"\1 --set train.max_steps=2"),
]


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced sh/python block, in order."""
    text = README.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(sh|python)\n(.*?)```", text, re.S)]


def shell_commands(block: str) -> list[str]:
    """One command per line, continuation lines (`\\`) joined; comment-only lines dropped."""
    out, current = [], ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        # a trailing `  # comment` is dropped (no README command has a # inside quotes)
        out.append(" ".join((current + line.split("  #")[0]).split()))
        current = ""
    return out


def _skip_reason(cmd: str) -> str | None:
    return next((why for prefix, why in SKIP.items() if cmd.startswith(prefix)), None)


@pytest.fixture(scope="module")
def recipe_dir(recipe_run, tmp_path_factory):
    tmp, _ = recipe_run
    root = tmp_path_factory.mktemp("readme")
    for name in ("recipes", "tools"):
        (root / name).symlink_to(REPO / name)
    d = root / "egs" / "synth_accents" / "asr1"
    d.mkdir(parents=True)
    for name in ("run.sh", "conf", "local"):
        (d / name).symlink_to(RECIPE / name)
    (d / "data").symlink_to(tmp / "data")
    (d / "exp").symlink_to(tmp / "exp")
    (tmp / "exp" / "demo_char").symlink_to("tiny_char")  # `make demo`'s experiment, CI-sized
    return d


def test_readme_blocks_are_found_and_every_skip_is_used():
    blocks = readme_blocks()
    commands = [c for lang, b in blocks if lang == "sh" for c in shell_commands(b)]
    assert len(commands) > 30 and sum(lang == "python" for lang, _ in blocks) >= 2
    used = {p for p in SKIP for c in commands if c.startswith(p)}
    assert used == set(SKIP), f"SKIP entries matching no README command: {set(SKIP) - used}"
    pys = [b for lang, b in blocks if lang == "python"]
    assert all(any(k in b for b in pys) for k in SKIP_PYTHON), "unused SKIP_PYTHON entry"
    tour = README.read_text().split("## Command-line tour", 1)[1]
    assert "cd egs/synth_accents/asr1" in tour.split("```sh", 1)[1].split("```", 1)[0]


def test_readme_commands_run_as_written(recipe_dir):
    env = {
        **os.environ,
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    ran, failures = 0, []
    for lang, block in readme_blocks():
        if lang == "python":
            cmds = [] if any(k in block for k in SKIP_PYTHON) else [("python", block)]
        else:
            cmds = [("sh", c) for c in shell_commands(block) if _skip_reason(c) is None]
        for kind, cmd in cmds:
            for pattern, repl in CI_SIZE if kind == "sh" else []:
                cmd = pattern.sub(repl, cmd)
            argv = [sys.executable, "-c", cmd] if kind == "python" else ["bash", "-c", cmd]
            r = subprocess.run(
                argv, cwd=recipe_dir, env=env, capture_output=True, text=True, timeout=300
            )
            ran += 1
            if r.returncode != 0:
                failures.append(
                    f"$ {cmd}\n(exit {r.returncode})\n{r.stdout[-1500:]}{r.stderr[-1500:]}"
                )
    assert not failures, "\n\n".join(failures)
    assert ran > 25
    # what the commands left, as the README says
    exp = recipe_dir / "exp" / "demo_char"
    assert (exp / "decode_test_attention" / "wer.json").is_file()  # the stage 6 command
    assert {p.suffix for p in (exp / "transcripts").iterdir()} == {
        ".txt", ".json", ".srt", ".vtt", ".tsv"
    }  # fmt: skip
    assert (exp / "decode_test_onnx" / "hyp.txt").read_text().strip()
    assert (exp / "report_py" / "report.html").is_file()
