"""Simulated room impulse responses and reverberation.

``simulated_rir`` is the statistical model that Kaldi/ESPnet-style simulated RIRs are
commonly approximated by: a unit direct path followed by a Gaussian tail whose energy
decays exponentially, falling 60 dB in ``rt60`` seconds (Polack's model), scaled to a
direct-to-reverberant ratio. It is cheap (one draw per utterance, no room geometry) and
deterministic for its generator. Measured or image-method RIRs (pyroomacoustics) can be
given to the training augmentation as files instead (``data.augment.rir_files``).
"""

from __future__ import annotations

import math

import numpy as np

from moe_asr.errors import UserError
from moe_asr.synth.noise import parse_number_list

__all__ = ["simulated_rir", "reverberate", "estimate_rt60", "parse_rt60_list"]

_MAX_RT60 = 3.0  # seconds; longer is not a room a recogniser is trained for


def simulated_rir(
    rt60: float, sample_rate: int, rng: np.random.Generator, drr_db: float = 5.0
) -> np.ndarray:
    """(L,) float32 RIR: 1.0 at sample 0, then an exponentially decaying noise tail.

    Args:
        rt60: reverberation time in seconds (the tail's energy falls 60 dB over it);
            L = rt60 x sample_rate + 1.
        drr_db: direct-to-reverberant energy ratio in dB (tail energy = 10^(-drr/10)).
    """
    if not 0 < rt60 <= _MAX_RT60:
        raise UserError(f"RT60 {rt60!r} s must be in (0, {_MAX_RT60:g}] seconds")
    n = max(1, int(round(rt60 * sample_rate)))
    t = np.arange(1, n + 1, dtype=np.float64) / sample_rate
    # energy 10^(-6 t / rt60), so amplitude exp(-3 ln(10) t / rt60)
    tail = rng.standard_normal(n) * np.exp(-3.0 * math.log(10.0) * t / rt60)
    tail *= math.sqrt(10.0 ** (-drr_db / 10.0) / max(float(np.sum(tail**2)), 1e-20))
    return np.concatenate([[1.0], tail]).astype(np.float32)


def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (a fast FFT size)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            q = p35
            while q < n:
                q *= 2
            best = min(best, q)
            p35 *= 3
        p5 *= 5
    return best


def reverberate(speech: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """(T,) speech convolved with (L,) ``rir`` (float32 FFT), cut to T samples (the tail
    beyond the end is dropped, so the direct path at sample 0 keeps the timing), float32."""
    size = _fast_len(speech.size + rir.size - 1)
    spec = np.fft.rfft(speech.astype(np.float32), size) * np.fft.rfft(rir.astype(np.float32), size)
    return np.fft.irfft(spec, size)[: speech.size].astype(np.float32, copy=False)


def estimate_rt60(rir: np.ndarray, sample_rate: int) -> float:
    """RT60 of ``rir`` by Schroeder backward integration: the -5 to -25 dB slope (T20 x 3)."""
    energy = np.cumsum((rir.astype(np.float64) ** 2)[::-1])[::-1]
    edc = 10 * np.log10(np.maximum(energy / energy[0], 1e-30))
    i5, i25 = int(np.argmax(edc <= -5.0)), int(np.argmax(edc <= -25.0))
    if i25 <= i5:
        return float("nan")
    return 3.0 * (i25 - i5) / sample_rate


def parse_rt60_list(spec: str | list[float]) -> list[float]:
    """``"0.3,0.6"`` -> [0.3, 0.6] seconds; UserError for a non-number or out of range."""
    return parse_number_list(
        spec,
        "RT60",
        "seconds like 0.3,0.6,0.9",
        lambda v: None if 0 < v <= _MAX_RT60 else f"must be in (0, {_MAX_RT60:g}] seconds",
    )
