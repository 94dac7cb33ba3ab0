"""Noise conditions of the synthetic corpus: clean, white, pink, brown, music, babble at an SNR.

The SNR is measured against the power of the active speech (20 ms frames within 40 dB
of the loudest frame), so leading/trailing silence does not dilute it. Babble is a sum
of other synthetic utterances (other voices and sentences), looped to the length needed.
Music is a random sequence of plucked harmonic chords (MUSAN's music category in spirit):
tonal and in the speech band, where brown noise puts nearly all its power below 100 Hz.
``GENERATED_NOISE`` is the one list of generators; the corpus and the training augmentation
both draw through ``generated_noise``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from moe_asr.errors import UserError

__all__ = [
    "NOISE_TYPES",
    "DEFAULT_NOISE",
    "DEFAULT_SNRS",
    "BABBLE_TALKERS",
    "GENERATED_NOISE",
    "colored_noise",
    "music_noise",
    "babble_noise",
    "generated_noise",
    "active_power",
    "mix_at_snr",
    "parse_noise_list",
    "parse_number_list",
    "parse_snr_list",
]

GENERATED_NOISE: tuple[str, ...] = ("white", "pink", "brown", "music", "babble")
NOISE_TYPES: tuple[str, ...] = ("clean", *GENERATED_NOISE)
DEFAULT_NOISE: tuple[str, ...] = ("clean", "white", "pink", "babble")
DEFAULT_SNRS: tuple[float, ...] = (5.0, 10.0, 20.0)
BABBLE_TALKERS = 4  # utterances summed into one babble signal
_EXPONENT = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1 / f^exponent
_PEAK = 0.99


def colored_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) float32 noise of unit RMS: ``white``, ``pink`` (1/f) or ``brown`` (1/f^2)."""
    if kind not in _EXPONENT:
        raise UserError(f"unknown coloured noise {kind!r}; use one of {', '.join(_EXPONENT)}")
    white = rng.standard_normal(n)
    if kind != "white":
        spec = np.fft.rfft(white)
        f = np.arange(spec.size, dtype=np.float64)
        f[0] = 1.0  # keep the DC bin finite; it is removed below
        spec /= f ** (_EXPONENT[kind] / 2)
        spec[0] = 0.0
        white = np.fft.irfft(spec, n)
    rms = np.sqrt(np.mean(white**2))
    return (white / max(rms, 1e-12)).astype(np.float32)


_MUSIC_SCALE = (0, 2, 4, 7, 9)  # major pentatonic: semitones above the octave's root


def music_noise(n: int, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """(n,) float32 music-like noise of unit RMS: chords of 1-3 plucked notes.

    A new chord starts every 0.15-0.6 s; its notes come from a pentatonic scale between
    MIDI 45 and 84 (110-1047 Hz), each with 6 harmonics (amplitude 1/k) and an exponential
    decay, so the signal is tonal, rhythmic and in the speech band.
    """
    out = np.zeros(n, dtype=np.float64)
    t0 = 0
    while t0 < n:
        dur = int(rng.uniform(0.15, 0.6) * sample_rate)
        length = min(n - t0, int(dur * 1.5))  # notes ring on under the next chord
        t = np.arange(length, dtype=np.float64) / sample_rate
        decay = np.exp(-t * rng.uniform(3.0, 8.0))
        for _ in range(int(rng.integers(1, 4))):
            octave = int(rng.integers(0, 4))
            midi = 45 + 12 * octave + _MUSIC_SCALE[int(rng.integers(len(_MUSIC_SCALE)))]
            f0 = 440.0 * 2.0 ** ((midi - 69) / 12)
            for k in range(1, 7):
                if k * f0 < sample_rate / 2:
                    phase = rng.uniform(0, 2 * np.pi)
                    out[t0 : t0 + length] += decay * np.sin(2 * np.pi * k * f0 * t + phase) / k
        t0 += dur
    rms = np.sqrt(np.mean(out**2)) if n else 0.0
    return (out / max(rms, 1e-12)).astype(np.float32)


def generated_noise(
    kind: str,
    n: int,
    rng: np.random.Generator,
    sample_rate: int = 16000,
    talkers: list[np.ndarray] | None = None,
) -> np.ndarray:
    """(n,) float32 unit-RMS noise of a ``GENERATED_NOISE`` type (babble needs ``talkers``)."""
    if kind not in GENERATED_NOISE:
        raise UserError(f"unknown noise type {kind!r}; use one of {', '.join(GENERATED_NOISE)}")
    if kind == "babble":
        return babble_noise(talkers or [], n, rng)
    if kind == "music":
        return music_noise(n, rng, sample_rate)
    return colored_noise(kind, n, rng)


def babble_noise(talkers: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) float32 babble of unit RMS: each talker (T_i,) looped from a random offset, summed."""
    if not talkers:
        raise UserError("babble noise needs at least one talker signal")
    out = np.zeros(n, dtype=np.float64)
    for wav in talkers:
        w = wav.astype(np.float64)
        w /= max(np.sqrt(np.mean(w**2)), 1e-12)
        reps = -(-(n + w.size) // w.size)
        looped = np.tile(w, reps)
        start = int(rng.integers(0, w.size))
        out += looped[start : start + n]
    rms = np.sqrt(np.mean(out**2))
    return (out / max(rms, 1e-12)).astype(np.float32)


def active_power(wav: np.ndarray, sample_rate: int, floor_db: float = 40.0) -> float:
    """Mean power of the 20 ms frames within ``floor_db`` of the loudest frame."""
    frame = max(1, int(0.02 * sample_rate))
    n = wav.size // frame
    if n == 0:
        return float(np.mean(wav.astype(np.float64) ** 2))
    frames = wav[: n * frame].astype(np.float64).reshape(n, frame)  # (n, frame)
    energy = np.mean(frames**2, axis=1)
    top = energy.max()
    if top <= 0:
        return 0.0
    return float(np.mean(energy[energy >= top * 10 ** (-floor_db / 10)]))


def mix_at_snr(
    speech: np.ndarray, noise: np.ndarray, snr_db: float, sample_rate: int
) -> np.ndarray:
    """speech (T,) + noise (T,) scaled to ``snr_db`` against the active speech power.

    The mixture is scaled down as a whole if it would clip, which keeps the SNR.
    """
    assert speech.shape == noise.shape, (speech.shape, noise.shape)
    ps = active_power(speech, sample_rate)
    pn = float(np.mean(noise.astype(np.float64) ** 2))
    if ps <= 0 or pn <= 0:
        return speech.astype(np.float32)
    gain = np.sqrt(ps / (pn * 10 ** (snr_db / 10)))
    mix = speech.astype(np.float64) + gain * noise.astype(np.float64)
    peak = np.abs(mix).max()
    if peak > _PEAK:
        mix *= _PEAK / peak
    return mix.astype(np.float32)


def parse_noise_list(spec: str | list[str]) -> list[str]:
    """``"clean,white,babble"`` -> checked list; UserError naming an unknown condition."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = [s.strip() for s in items if s.strip()]
    bad = [s for s in out if s not in NOISE_TYPES]
    if bad or not out:
        raise UserError(
            f"unknown noise condition(s) {', '.join(bad) or '(none given)'}; "
            f"choose from {', '.join(NOISE_TYPES)}"
        )
    return list(dict.fromkeys(out))


def parse_number_list(
    spec: str | list[float], what: str, example: str, bound: Callable[[float], str | None]
) -> list[float]:
    """``"a,b,c"`` (or a list) -> floats; UserError naming ``what`` for a non-number, for a
    value ``bound`` objects to (its message), or for an empty list; ``example`` shows the form."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for s in items:
        if isinstance(s, str) and not s.strip():
            continue
        try:
            v = float(s)
        except ValueError as e:
            raise UserError(f"{what} {s!r} is not a number (give {example})") from e
        problem = bound(v)
        if problem:
            raise UserError(f"{what} {s!r} {problem}")
        out.append(v)
    if not out:
        raise UserError(f"no {what} given (give {example})")
    return out


def parse_snr_list(spec: str | list[float]) -> list[float]:
    """``"5,10,20"`` -> [5.0, 10.0, 20.0]; UserError on a non-number."""
    return parse_number_list(
        spec,
        "SNR",
        "dB values like 5,10,20",
        lambda v: None if np.isfinite(v) else "must be finite",
    )
