"""Training-time augmentation: speed perturbation, additive noise at a random SNR, SpecAugment.

Every operation is a torchaudio call (``functional.speed``, ``functional.add_noise``,
``transforms.FrequencyMasking`` / ``TimeMasking``); this module only chooses the random
parameters. All randomness comes from a ``numpy.random.Generator`` passed in, so an
item is augmented the same way for the same (seed, epoch, utterance), in any worker.

Speed perturbation resamples the waveform (Kaldi/sox ``speed``: tempo and pitch change
together), so a factor ``f`` changes the duration by ``1 / f``. ``Augmenter.max_stretch``
is the largest such stretch; the dataset multiplies durations by it for batching, so a
batch never exceeds its seconds limit after perturbation.

SpecAugment masks raw fbank (the model applies CMVN later); masked cells take the
utterance's mean value, not 0, which in log-mel space would be loud silence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
import torchaudio.transforms as AT
from torch import Tensor

from moe_asr.audio import AudioError, audio_info, load_audio
from moe_asr.config import AugmentConfig
from moe_asr.errors import UserError

__all__ = [
    "AugmentError",
    "Augmenter",
    "speed_perturb",
    "mix_noise",
    "spec_augment",
    "expand_noise_files",
]

_AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".sph"}


class AugmentError(UserError):
    """An augmentation setting is invalid or a noise file cannot be used."""


def speed_perturb(wav: Tensor, sample_rate: int, factor: float) -> Tensor:
    """(N,) -> (~N / factor,) waveform played ``factor`` times faster (resampling)."""
    if factor == 1.0:
        return wav
    out, _ = AF.speed(wav.unsqueeze(0), orig_freq=sample_rate, factor=factor)
    return out[0]


def mix_noise(wav: Tensor, noise: Tensor, snr_db: float, rng: np.random.Generator) -> Tensor:
    """Add ``noise`` to ``wav`` at ``snr_db`` dB (torchaudio ``add_noise``).

    A random excerpt of the noise of the signal's length is used; a shorter noise is
    repeated. Silent noise returns the signal unchanged.

    Args:
        wav: (N,) signal; noise: (M,) noise; snr_db: signal-to-noise ratio in dB.
    Returns:
        (N,) noisy signal.
    """
    n = wav.numel()
    if noise.numel() < n:
        noise = noise.repeat(n // noise.numel() + 1)
    start = int(rng.integers(0, noise.numel() - n + 1))
    excerpt = noise[start : start + n]
    if not bool(excerpt.abs().max() > 0):
        return wav
    snr = torch.tensor([float(snr_db)])
    return AF.add_noise(wav.unsqueeze(0), excerpt.unsqueeze(0), snr)[0]


def spec_augment(feats: Tensor, cfg: AugmentConfig, rng: np.random.Generator) -> Tensor:
    """Frequency and time masks (torchaudio) on one utterance.

    Args:
        feats: (T, F) raw fbank.
    Returns:
        (T, F) masked copy; masked cells hold the utterance's mean value.
    """
    if feats.numel() == 0:
        return feats
    spec = feats.t().unsqueeze(0)  # (1, F, T) as torchaudio expects
    value = float(feats.mean())
    fmask = AT.FrequencyMasking(cfg.freq_mask_width)
    tmask = AT.TimeMasking(cfg.time_mask_width, p=cfg.time_mask_max_ratio)
    seed = int(rng.integers(0, 2**62))
    with torch.random.fork_rng(devices=[]):  # torchaudio draws from the global torch RNG
        torch.manual_seed(seed)
        for _ in range(cfg.freq_masks):
            spec = fmask(spec, value)
        for _ in range(cfg.time_masks):
            spec = tmask(spec, value)
    return spec[0].t().contiguous()


def expand_noise_files(entries: list[str]) -> list[Path]:
    """Noise files from a list of files and/or directories (searched for audio files)."""
    out: list[Path] = []
    for entry in entries:
        p = Path(entry)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in _AUDIO_SUFFIXES)
            if not found:
                raise AugmentError(f"{p}: noise directory holds no audio files")
            out.extend(found)
        else:
            out.append(p)
    return out


class Augmenter:
    """Random speed, noise and SpecAugment for one training item at a time.

    Noise files are checked (header only) when the augmenter is built and read lazily,
    once per process, on first use.
    """

    def __init__(self, cfg: AugmentConfig, sample_rate: int):
        if any(f <= 0 for f in cfg.speed_perturb):
            raise AugmentError(
                f"data.augment.speed_perturb: factors must be > 0, got {cfg.speed_perturb}"
            )
        if not 0.0 <= cfg.noise_prob <= 1.0:
            raise AugmentError(f"data.augment.noise_prob must be in [0, 1], got {cfg.noise_prob}")
        if not 0.0 < cfg.time_mask_max_ratio <= 1.0:
            raise AugmentError(
                f"data.augment.time_mask_max_ratio must be in (0, 1], got {cfg.time_mask_max_ratio}"
            )
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.noise_files: list[Path] = []
        if cfg.noise_prob > 0:
            if not cfg.noise_files:
                raise AugmentError(
                    "data.augment.noise_prob > 0 but data.augment.noise_files is empty; "
                    "list noise audio files or directories, or set noise_prob=0"
                )
            if not cfg.noise_snrs:
                raise AugmentError("data.augment.noise_snrs is empty; list SNRs in dB")
            self.noise_files = expand_noise_files(cfg.noise_files)
            for f in self.noise_files:
                try:
                    audio_info(f)
                except AudioError as e:
                    raise AugmentError(f"noise file {e}") from e
        self._noise_cache: dict[Path, Tensor] = {}

    @property
    def max_stretch(self) -> float:
        """Largest duration multiplier speed perturbation can cause (1.0 when off)."""
        return max([1.0, *(1.0 / f for f in self.cfg.speed_perturb)])

    def _noise(self, path: Path) -> Tensor:
        if path not in self._noise_cache:
            try:
                wav = load_audio(path, self.sample_rate)
            except AudioError as e:
                raise AugmentError(f"noise file {e}") from e
            self._noise_cache[path] = torch.from_numpy(wav)
        return self._noise_cache[path]

    def waveform(self, wav: Tensor, rng: np.random.Generator) -> Tensor:
        """(N,) -> (N',) speed-perturbed, then noisy signal (each step as configured)."""
        if self.cfg.speed_perturb:
            factor = float(rng.choice(self.cfg.speed_perturb))
            wav = speed_perturb(wav, self.sample_rate, factor)
        if self.noise_files and rng.random() < self.cfg.noise_prob:
            path = self.noise_files[int(rng.integers(len(self.noise_files)))]
            snr = float(rng.choice(self.cfg.noise_snrs))
            wav = mix_noise(wav, self._noise(path), snr, rng)
        return wav

    def features(self, feats: Tensor, rng: np.random.Generator) -> Tensor:
        """(T, F) -> (T, F) with SpecAugment when enabled."""
        if not self.cfg.specaug:
            return feats
        return spec_augment(feats, self.cfg, rng)
