"""Suite-wide settings: the torch thread count every test runs with.

``MOE_ASR_TEST_THREADS`` (default 1: tiny models are as fast on one thread and immune to
OpenMP waits on a busy machine) sets ``torch.set_num_threads`` for each test module (its
fixtures, e.g. a tiny model trained once) and each test, so the suite can be run at 1 and
at 2 threads (``make test-threads``) to show that no test depends on the float results of
one thread count.
"""

from __future__ import annotations

import os

import pytest
import torch

THREADS = int(os.environ.get("MOE_ASR_TEST_THREADS", "1"))


def pytest_report_header(config) -> str:
    return f"torch {torch.__version__}, {THREADS} torch thread(s) per test (MOE_ASR_TEST_THREADS)"


def _pinned():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def _module_threads():
    yield from _pinned()


@pytest.fixture(autouse=True)
def _test_threads():
    yield from _pinned()
