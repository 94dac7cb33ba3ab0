"""Noise conditions: spectra, SNR, babble, option parsing."""

import numpy as np
import pytest

from moe_asr.errors import UserError
from moe_asr.synth.noise import (
    active_power,
    babble_noise,
    colored_noise,
    generated_noise,
    mix_at_snr,
    music_noise,
    parse_noise_list,
    parse_snr_list,
)

SR = 16000


def _slope(x: np.ndarray) -> float:
    """Power-spectrum slope in dB per decade between 100 Hz and 4 kHz."""
    p = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    band = (f > 100) & (f < 4000)
    return float(np.polyfit(np.log10(f[band]), 10 * np.log10(p[band]), 1)[0])


def test_colored_noise_spectra():
    rng = np.random.default_rng(0)
    slopes = {k: _slope(colored_noise(k, 4 * SR, rng)) for k in ("white", "pink", "brown")}
    assert abs(slopes["white"]) < 1.5
    assert -12 < slopes["pink"] < -8  # -10 dB/decade
    assert -23 < slopes["brown"] < -17  # -20 dB/decade
    x = colored_noise("pink", SR, np.random.default_rng(1))
    assert x.dtype == np.float32 and abs(np.sqrt(np.mean(x.astype(np.float64) ** 2)) - 1) < 1e-3


def test_mix_reaches_the_snr_against_active_speech():
    t = np.arange(2 * SR) / SR
    speech = np.zeros(3 * SR, np.float32)
    speech[SR // 2 : SR // 2 + t.size] = 0.05 * np.sin(2 * np.pi * 200 * t)  # silence around
    noise = colored_noise("white", speech.size, np.random.default_rng(0))
    for snr in (0.0, 10.0, 20.0):
        mix = mix_at_snr(speech, noise, snr, SR)
        got = 10 * np.log10(active_power(speech, SR) / np.mean((mix - speech) ** 2))
        assert abs(got - snr) < 0.01
    loud = mix_at_snr(speech * 18, noise, -5.0, SR)
    assert np.abs(loud).max() <= 0.99 + 1e-6  # scaled down as a whole instead of clipping


def _band_power(x: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, float]:
    """Power spectrum bins of ``x`` in [lo, hi) Hz, and their share of the total power."""
    p = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    band = p[(f >= lo) & (f < hi)]
    return band, float(band.sum() / p.sum())


def test_music_is_tonal_in_the_speech_band_unlike_brown_noise():
    x = music_noise(4 * SR, np.random.default_rng(0), SR)
    assert x.dtype == np.float32 and abs(np.sqrt(np.mean(x.astype(np.float64) ** 2)) - 1) < 1e-3
    band, share = _band_power(x, 100, 4000)
    assert share > 0.9  # where speech is
    brown = colored_noise("brown", 4 * SR, np.random.default_rng(0))
    assert _band_power(brown, 100, 4000)[1] < 0.2  # brown's power sits below 100 Hz
    flatness = np.exp(np.mean(np.log(band + 1e-20))) / np.mean(band)
    assert flatness < 0.05  # peaky (harmonics), white noise is ~0.56
    frames = x[: x.size // 800 * 800].reshape(-1, 800).astype(np.float64)
    energy = (frames**2).mean(axis=1)
    assert energy.max() / np.median(energy) > 2  # note onsets and decays, not stationary


def test_generated_noise_is_deterministic_per_generator_and_names_each_type():
    for kind in ("white", "pink", "brown", "music"):
        a = generated_noise(kind, SR, np.random.default_rng(3), SR)
        assert np.array_equal(a, generated_noise(kind, SR, np.random.default_rng(3), SR))
    talkers = [np.sin(np.arange(3000) * 0.05).astype(np.float32)]
    assert generated_noise("babble", 5000, np.random.default_rng(0), SR, talkers).shape == (5000,)
    with pytest.raises(
        UserError, match="unknown noise type .violet.; use one of white, pink, brown, music"
    ):
        generated_noise("violet", 100, np.random.default_rng(0), SR)


def test_babble_loops_talkers_to_length():
    rng = np.random.default_rng(0)
    talkers = [np.sin(np.arange(n) * 0.05).astype(np.float32) for n in (3000, 5000)]
    b = babble_noise(talkers, 20000, rng)
    assert b.shape == (20000,) and abs(np.sqrt(np.mean(b.astype(np.float64) ** 2)) - 1) < 1e-3
    with pytest.raises(UserError):
        babble_noise([], 100, rng)


def test_option_parsing():
    assert parse_noise_list("clean, white,babble,white") == ["clean", "white", "babble"]
    assert parse_snr_list("5,10,20") == [5.0, 10.0, 20.0]
    with pytest.raises(UserError, match="rain"):
        parse_noise_list("clean,rain")
    with pytest.raises(UserError, match="loud"):
        parse_snr_list("5,loud")
