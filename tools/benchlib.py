"""What every benchmark in tools/ shares: the header (command and machine), interleaved
timing rounds, quartiles and the verdict against a goal.

Conventions (issue 19): a benchmark prints the command it ran and the machine (torch and
other versions, torch threads, CPU, load average); it times its cases in interleaved rounds
(every round runs each case once, the order reversed on alternate rounds, so machine load
hits all alike; optional warm-up rounds first; an optional time budget ends timing early
after at least 3 timed rounds); it reports the median and IQR of each case and the ratio of
each compared quantity to its goal (PASS/FAIL, or "info" where no goal is set). The numbers
in README.md and RESULTS.md are copied from such output, with the command.

Imported by the scripts beside it (``python tools/bench_x.py`` puts tools/ on ``sys.path``).
"""

from __future__ import annotations

import importlib
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch

__all__ = ["machine_line", "print_header", "quartiles", "interleaved", "verdict"]


def machine_line(*modules: str) -> str:
    """torch (and ``modules``') versions, python, torch threads, CPU count and type, load."""
    versions = [f"torch {torch.__version__}"]
    for name in modules:
        try:
            versions.append(f"{name} {importlib.import_module(name).__version__}")
        except (ImportError, AttributeError):
            versions.append(f"{name} (not installed)")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    cpu = f"{platform.machine()} {platform.processor() or ''}".rstrip()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"{', '.join(versions)}, python {platform.python_version()}, threads "
        f"{torch.get_num_threads()}, cpu_count {os.cpu_count()}, {cpu}{gpu}, load average {load}"
    )


def print_header(argv: Sequence[str] | None, *modules: str) -> tuple[str, str]:
    """Print ``command: ...`` and ``machine: ...``; returns both (for a JSON record)."""
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)
    machine = machine_line(*modules)
    print(f"command: {command}")
    print(f"machine: {machine}")
    return command, machine


def quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    """(q1, median, q3); a single value is all three."""
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def interleaved(
    cases: dict[Hashable, Callable[[int], Any]],
    *,
    rounds: int,
    warmup: int = 0,
    max_seconds: float = 0.0,
    before: Callable[[], Any] | None = None,
) -> tuple[dict[Hashable, list[float]], dict[Hashable, list[Any]]]:
    """Run ``cases[key](round)`` once per round, in interleaved rounds.

    Returns (seconds per timed round, what each call returned) per case; warm-up rounds
    are run first and not kept. ``before`` (e.g. evicting the CPU caches) runs untimed before
    every call. With ``max_seconds > 0`` timing stops once that budget is
    spent and at least 3 rounds are timed (it says so); every case has as many timed rounds
    as the others, so per-round ratios pair up.
    """
    names = list(cases)
    times: dict[Hashable, list[float]] = {n: [] for n in names}
    results: dict[Hashable, list[Any]] = {n: [] for n in names}
    started = time.perf_counter()
    for r in range(warmup + rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            if before is not None:
                before()
            t0 = time.perf_counter()
            out = cases[name](r)
            elapsed = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(elapsed)
                results[name].append(out)
        timed = r + 1 - warmup
        if max_seconds > 0 and timed >= 3 and time.perf_counter() - started > max_seconds:
            print(f"time budget of {max_seconds:g} s reached after {timed} timed rounds")
            break
    return times, results


def verdict(value: float, goal: float | None, *, at_most: bool = True) -> str:
    """PASS/FAIL of ``value`` against ``goal`` (``<=`` when ``at_most``, else ``>=``)."""
    if goal is None:
        return "info"
    return "PASS" if (value <= goal if at_most else value >= goal) else "FAIL"
