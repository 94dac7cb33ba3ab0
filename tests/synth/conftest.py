"""One espeak fork server for the synth tests (starting one costs ~0.1 s)."""

import pytest

from moe_asr.synth.espeak import EspeakServer


@pytest.fixture(scope="session")
def espeak_server():
    with EspeakServer() as server:
        yield server
