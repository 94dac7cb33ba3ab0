"""Training-time augmentation: speed perturbation, reverberation, additive noise at a random
SNR, SpecAugment; the applied condition is recorded per utterance.

This module chooses the random parameters; the signal operations are torchaudio calls
(``functional.speed``, ``transforms.FrequencyMasking`` / ``TimeMasking``) and the shared
generators of ``moe_asr.synth`` (noise colours, babble, simulated RIRs). Noise and RIR
sources (synthetic loops, user files, directories, Kaldi scp) live in ``noise_bank``. All
randomness comes from a ``numpy.random.Generator`` passed in, so an item is augmented the
same way for the same (seed, epoch, utterance), in any worker, after any resume.

Speed perturbation resamples the waveform (Kaldi/sox ``speed``: tempo and pitch change
together), so a factor ``f`` changes the duration by ``1 / f``. ``Augmenter.max_stretch``
is the largest such stretch; the dataset multiplies durations by it for batching, so a
batch never exceeds its seconds limit after perturbation.

Order per utterance: speed, then reverberation (probability ``reverb_prob``: a simulated
RIR with RT60 and direct-to-reverberant ratio drawn from their ranges, or a user RIR file;
the output keeps the dry signal's power and timing), then noise (probability
``noise_prob``: a type drawn uniformly, then a source of that type, an excerpt and an SNR).
The SNR is that of the synthetic corpus (``moe_asr.synth.noise``): active speech power
(20 ms frames within 40 dB of the loudest) over noise power, so a training condition and
a test set's ``utt2snr`` mean the same. A mixture that would exceed 0.99 of full scale is
scaled down as a whole (the SNR is kept), so it never clips as 16-bit audio.

``Condition`` is what an utterance ended up with (the data dir's condition when nothing
was applied); ``Condition.labels`` turns it into the label values ``noise`` (type or
``clean``), ``snr`` (bucket of ``snr_buckets`` or ``clean``) and ``reverb`` (``reverb`` /
``dry``) that guided routing uses; ``augment_label_values`` lists them from the config.

SpecAugment masks raw fbank (the model applies CMVN later); masked cells take the
utterance's mean value, not 0, which in log-mel space would be loud silence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torchaudio.functional as AF
import torchaudio.transforms as AT
from torch import Tensor

from moe_asr.audio import AudioError, load_audio
from moe_asr.config import AugmentConfig
from moe_asr.data.labels import AUGMENT_LABELS
from moe_asr.data.noise_bank import AudioRef, AugmentError, NoiseBank, find_audio, noise_file_types
from moe_asr.synth.noise import GENERATED_NOISE, active_power
from moe_asr.synth.reverb import reverberate, simulated_rir

if TYPE_CHECKING:
    from moe_asr.data.datadir import DataDir

__all__ = [
    "AugmentError",
    "AUGMENT_LABELS",
    "Condition",
    "Augmenter",
    "speed_perturb",
    "mix_noise",
    "add_reverb",
    "limit_peak",
    "spec_augment",
    "snr_bucket",
    "snr_bucket_names",
    "augment_label_values",
    "condition_label_names",
]

PEAK = 0.99  # largest absolute sample of an augmented signal (below int16 full scale)


def speed_perturb(wav: Tensor, sample_rate: int, factor: float) -> Tensor:
    """(N,) -> (~N / factor,) waveform played ``factor`` times faster (resampling)."""
    if factor == 1.0:
        return wav
    out, _ = AF.speed(wav.unsqueeze(0), orig_freq=sample_rate, factor=factor)
    return out[0]


def mix_noise(
    wav: Tensor, noise: Tensor, snr_db: float, rng: np.random.Generator, sample_rate: int = 16000
) -> Tensor:
    """Add ``noise`` to ``wav`` at ``snr_db`` dB against the active speech power.

    A random excerpt of the noise of the signal's length is used; a shorter noise is
    repeated. Silent noise or a silent signal returns ``wav`` itself (not a copy).

    Args:
        wav: (N,) signal; noise: (M,) noise; snr_db: signal-to-noise ratio in dB.
    Returns:
        (N,) noisy signal (not peak-limited: see ``limit_peak``).
    """
    n = wav.numel()
    if n == 0 or noise.numel() == 0:
        return wav
    if noise.numel() < n:
        noise = noise.repeat(n // noise.numel() + 1)
    start = int(rng.integers(0, noise.numel() - n + 1))
    excerpt = noise[start : start + n]
    pn = float(excerpt.double().pow(2).mean())
    ps = active_power(wav.numpy(), sample_rate)
    if not (pn > 0 and ps > 0):
        return wav
    gain = math.sqrt(ps / (pn * 10.0 ** (snr_db / 10.0)))
    return wav + gain * excerpt


def add_reverb(wav: Tensor, rir: np.ndarray) -> Tensor:
    """(N,) ``wav`` convolved with the (L,) ``rir`` (direct path first), cut to N samples and
    scaled back to the dry signal's power; a silent result returns ``wav`` itself."""
    if wav.numel() == 0:
        return wav
    dry = wav.numpy()
    wet = reverberate(dry, rir)
    p_wet = float(np.mean(wet.astype(np.float64) ** 2))
    if not p_wet > 0:
        return wav
    p_dry = float(np.mean(dry.astype(np.float64) ** 2))
    return torch.from_numpy(wet * np.float32(math.sqrt(p_dry / p_wet)))


def limit_peak(wav: Tensor, peak: float = PEAK) -> Tensor:
    """``wav`` scaled down as a whole when its largest absolute sample exceeds ``peak``."""
    top = float(wav.abs().max()) if wav.numel() else 0.0
    return wav * (peak / top) if top > peak else wav


def snr_bucket_names(edges: list[float]) -> list[str]:
    """Names of the SNR buckets of increasing ``edges`` [e1, .., ek]: ``<e1``, ``e1..e2``,
    ..., ``>=ek`` (``[0, 10]`` -> ``<0``, ``0..10``, ``>=10``; no edges: ``noisy``)."""
    if not edges:
        return ["noisy"]
    mids = [f"{lo:g}..{hi:g}" for lo, hi in zip(edges, edges[1:])]
    return [f"<{edges[0]:g}", *mids, f">={edges[-1]:g}"]


def snr_bucket(snr_db: float, edges: list[float]) -> str:
    """The bucket name of ``snr_db`` (bucket i holds [e_i, e_{i+1}))."""
    i = sum(1 for e in edges if snr_db >= e)
    return snr_bucket_names(edges)[i]


@dataclass(frozen=True)
class Condition:
    """The acoustic condition of an utterance.

    noise: ``clean`` or a noise type; snr: dB (None: clean, nan: noisy at an unknown SNR);
    reverb: reverberated; rt60: the simulated RIR's RT60 in seconds (None: dry or a file RIR).
    """

    noise: str = "clean"
    snr: float | None = None
    reverb: bool = False
    rt60: float | None = None

    @classmethod
    def of_data(cls, noise: str | None, snr: str | None, reverb: str | None) -> Condition:
        """From a data dir's ``utt2noise``, ``utt2snr`` (dB or ``inf``) and ``utt2reverb``
        (``dry`` / anything else) values of one utterance; None = no entry (clean, dry)."""
        value: float | None = None
        if snr is not None:
            try:
                value = float(snr)
            except ValueError:
                value = math.nan
            if value == math.inf:
                value = None
        elif noise not in (None, "clean"):
            value = math.nan
        return cls(noise=noise or "clean", snr=value, reverb=reverb not in (None, "dry"))

    @classmethod
    def of_datadir(cls, dd: DataDir, utt: str) -> Condition:
        """What ``dd``'s utt2noise, utt2snr and utt2reverb say of ``utt`` (``of_data``)."""
        return cls.of_data(
            dd.groups.get("noise", {}).get(utt),
            dd.extra.get("snr", {}).get(utt),
            dd.groups.get("reverb", {}).get(utt),
        )

    def labels(self, snr_edges: list[float]) -> dict[str, str | None]:
        """``noise``, ``snr`` and ``reverb`` label values (None = unknown: ``unk``)."""
        snr: str | None = "clean"
        if self.snr is not None:
            snr = None if math.isnan(self.snr) else snr_bucket(self.snr, snr_edges)
        return {
            "noise": self.noise,
            "snr": snr,
            "reverb": "reverb" if self.reverb else "dry",
        }


def augment_label_values(cfg: AugmentConfig) -> dict[str, list[str]]:
    """Label name -> the values (without ``unk``) the augmentation of ``cfg`` records:
    ``noise`` and ``snr`` when noise is on, ``reverb`` when reverberation is on. Derived
    from the config alone, so the vocabulary is fixed before training starts."""
    out: dict[str, list[str]] = {}
    if cfg.noise_prob > 0:
        types = [*cfg.noise_types, *noise_file_types(cfg.noise_files)]
        out["noise"] = ["clean", *dict.fromkeys(types)]
        out["snr"] = ["clean", *snr_bucket_names(list(cfg.snr_buckets))]
    if cfg.reverb_prob > 0:
        out["reverb"] = ["dry", "reverb"]
    assert set(out) <= set(AUGMENT_LABELS)
    return out


def condition_label_names(names: list[str] | tuple[str, ...], cfg: AugmentConfig) -> list[str]:
    """Of the label ``names``, those whose values come from the utterance's ``Condition``
    under ``cfg`` (e.g. ``snr`` as a bucket of ``snr_buckets``, not the data's dB value):
    what a model trained with this augmentation learnt them as, in training and when a
    decode forces them from a data dir."""
    produced = augment_label_values(cfg)
    return [n for n in names if n in produced]


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


class Augmenter:
    """Random speed, reverberation, noise and SpecAugment for one training item at a time.

    Noise and RIR files are checked (headers) when the augmenter is built and read on use;
    ``babble_audio`` are the talker utterances of ``babble`` noise (the dataset passes some
    of its own).
    """

    def __init__(
        self, cfg: AugmentConfig, sample_rate: int, babble_audio: list[AudioRef] | None = None
    ):
        if any(f <= 0 for f in cfg.speed_perturb):
            raise AugmentError(
                f"data.augment.speed_perturb: factors must be > 0, got {cfg.speed_perturb}"
            )
        for name in ("noise_prob", "reverb_prob"):
            if not 0.0 <= getattr(cfg, name) <= 1.0:
                raise AugmentError(
                    f"data.augment.{name} must be in [0, 1], got {getattr(cfg, name)}"
                )
        if not 0.0 < cfg.time_mask_max_ratio <= 1.0:
            raise AugmentError(
                f"data.augment.time_mask_max_ratio must be in (0, 1], got {cfg.time_mask_max_ratio}"
            )
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.bank: NoiseBank | None = None
        if cfg.noise_prob > 0:
            if not cfg.noise_files and not cfg.noise_types:
                raise AugmentError(
                    "data.augment.noise_prob > 0 but data.augment.noise_files is empty and "
                    "data.augment.noise_types names no generator; list noise audio files or "
                    f"directories, or generators ({', '.join(GENERATED_NOISE)}), or set "
                    "noise_prob=0"
                )
            if not cfg.noise_snrs and len(cfg.snr_range) != 2:
                raise AugmentError(
                    "data.augment.noise_snrs is empty; list SNRs in dB or give snr_range"
                )
            self.bank = NoiseBank(cfg.noise_types, cfg.noise_files, sample_rate, babble_audio)
        self.rirs: list[AudioRef] = []
        if cfg.reverb_prob > 0:
            for entry in cfg.rir_files:
                self.rirs.extend(find_audio(entry, "RIR"))

    @property
    def noise_files(self) -> list[Path]:
        """Every noise file in use (all types)."""
        files = self.bank.files.values() if self.bank is not None else []
        return [Path(r.path) for refs in files for r in refs]

    @property
    def max_stretch(self) -> float:
        """Largest duration multiplier speed perturbation can cause (1.0 when off)."""
        return max([1.0, *(1.0 / f for f in self.cfg.speed_perturb)])

    def waveform(self, wav: Tensor, rng: np.random.Generator) -> Tensor:
        """(N,) -> (N',) speed-perturbed, reverberant, noisy signal (each step as configured)."""
        return self.apply(wav, rng)[0]

    def apply(
        self, wav: Tensor, rng: np.random.Generator, base: Condition | None = None
    ) -> tuple[Tensor, Condition]:
        """(N,) -> ((N',) signal, its Condition): ``base`` (the data's condition, default
        clean and dry) with what was applied here."""
        return self.corrupt(self.perturb_speed(wav, rng), rng, base)

    def perturb_speed(self, wav: Tensor, rng: np.random.Generator) -> Tensor:
        """(N,) -> (N',): the first step of ``apply`` (a factor drawn when configured)."""
        if not self.cfg.speed_perturb:
            return wav
        factor = float(rng.choice(self.cfg.speed_perturb))
        return speed_perturb(wav, self.sample_rate, factor)

    def corrupt(
        self, wav: Tensor, rng: np.random.Generator, base: Condition | None = None
    ) -> tuple[Tensor, Condition]:
        """(N,) -> ((N,) signal, its Condition): the rest of ``apply``, reverberation then
        noise, each drawn with its probability; the length is kept, so features of ``wav``
        (the dry, clean signal) align frame by frame with those of the result."""
        cond = base or Condition()
        cfg = self.cfg
        changed = False
        if cfg.reverb_prob > 0 and rng.random() < cfg.reverb_prob:
            rir, rt60 = self._rir(rng)
            out = add_reverb(wav, rir)
            if out is not wav:
                wav, changed = out, True
                cond = replace(cond, reverb=True, rt60=rt60)
        if self.bank is not None and rng.random() < cfg.noise_prob:
            kind = self.bank.types[int(rng.integers(len(self.bank)))]
            noise = self.bank.draw(kind, wav.numel(), rng)
            if len(cfg.snr_range) == 2:
                snr = float(rng.uniform(cfg.snr_range[0], cfg.snr_range[1]))
            else:
                snr = float(rng.choice(cfg.noise_snrs))
            out = mix_noise(wav, noise, snr, rng, self.sample_rate)
            if out is not wav:
                wav, changed = out, True
                cond = replace(cond, noise=kind, snr=snr)
        return (limit_peak(wav) if changed else wav), cond

    def _rir(self, rng: np.random.Generator) -> tuple[np.ndarray, float | None]:
        """A room impulse response (direct path first) and its RT60 (None for a file)."""
        if not self.rirs:
            rt60 = float(rng.uniform(*self.cfg.rt60_range))
            drr = float(rng.uniform(*self.cfg.drr_range))
            return simulated_rir(rt60, self.sample_rate, rng, drr), rt60
        pick = int(rng.integers(len(self.rirs)))
        last: AudioError | None = None
        for k in range(len(self.rirs)):
            ref = self.rirs[(pick + k) % len(self.rirs)]
            try:
                rir = load_audio(ref.path, self.sample_rate)
            except AudioError as e:
                last = e
                continue
            return rir[int(np.argmax(np.abs(rir))) :], None  # aligned at the direct path
        raise AugmentError(f"no RIR file can be read (last: {last})")

    def features(self, feats: Tensor, rng: np.random.Generator) -> Tensor:
        """(T, F) -> (T, F) with SpecAugment when enabled."""
        if not self.cfg.specaug:
            return feats
        return spec_augment(feats, self.cfg, rng)
