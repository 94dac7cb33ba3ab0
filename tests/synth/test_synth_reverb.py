"""Simulated room impulse responses: decay time, direct-to-reverberant ratio, convolution."""

import numpy as np
import pytest

from moe_asr.errors import UserError
from moe_asr.synth.reverb import estimate_rt60, parse_rt60_list, reverberate, simulated_rir

SR = 16000


@pytest.mark.parametrize("rt60", [0.2, 0.5, 1.0])
def test_rir_decays_60_db_in_rt60_with_the_asked_drr(rt60):
    rir = simulated_rir(rt60, SR, np.random.default_rng(0), drr_db=4.0)
    assert rir.dtype == np.float32 and rir.size == int(round(rt60 * SR)) + 1
    assert rir[0] == 1.0 and np.abs(rir[1:]).max() < 1.0  # the direct path first
    assert abs(estimate_rt60(rir[1:], SR) - rt60) < 0.1 * rt60  # Schroeder T20 of the tail
    drr = 10 * np.log10(1.0 / np.sum(rir[1:].astype(np.float64) ** 2))
    assert abs(drr - 4.0) < 1e-3
    again = simulated_rir(rt60, SR, np.random.default_rng(0), drr_db=4.0)
    assert np.array_equal(rir, again)


def test_reverberate_is_a_causal_convolution_cut_to_length():
    rng = np.random.default_rng(1)
    speech = rng.standard_normal(1000).astype(np.float32)
    rir = simulated_rir(0.01, SR, rng)
    out = reverberate(speech, rir)
    assert out.shape == speech.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, np.convolve(speech, rir)[:1000], atol=1e-5)
    np.testing.assert_allclose(reverberate(speech, np.ones(1, np.float32)), speech, atol=1e-5)


def test_rt60_options():
    assert parse_rt60_list("0.3, 0.6,") == [0.3, 0.6]
    for bad in ("x", "0", "4", ""):
        with pytest.raises(UserError, match="RT60"):
            parse_rt60_list(bad)
    with pytest.raises(UserError, match="RT60"):
        simulated_rir(0.0, SR, np.random.default_rng(0))
