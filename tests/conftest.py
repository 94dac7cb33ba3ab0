"""Suite-wide settings: the torch thread count every test runs with.

``MOE_ASR_TEST_THREADS`` (default 1) sets ``torch.set_num_threads`` before each test, so the
suite can be run at 1 and at 2 threads (``make test-threads``) to show that no test depends
on the float results of one thread count. Module fixtures that train a tiny model pin one
thread themselves (they are as fast and immune to OpenMP waits on a busy machine).
"""

from __future__ import annotations

import os

import pytest
import torch

THREADS = int(os.environ.get("MOE_ASR_TEST_THREADS", "1"))


def pytest_report_header(config) -> str:
    return f"torch {torch.__version__}, {THREADS} torch thread(s) per test (MOE_ASR_TEST_THREADS)"


@pytest.fixture(autouse=True)
def _torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)
