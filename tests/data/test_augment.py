"""Augmentation: speed changes duration and pitch, noise lands at the asked SNR, SpecAugment masks."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from moe_asr.config import AugmentConfig
from moe_asr.data.augment import Augmenter, AugmentError, mix_noise, spec_augment, speed_perturb

SR = 16000


def _tone(freq: float, seconds: float) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return 0.3 * torch.sin(2 * torch.pi * freq * t)


def _peak_hz(wav: torch.Tensor) -> float:
    spec = torch.fft.rfft(wav).abs()
    return float(spec.argmax()) * SR / wav.numel()


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_duration_and_pitch(factor):
    wav = _tone(1000.0, 1.0)
    out = speed_perturb(wav, SR, factor)
    assert abs(out.numel() - SR / factor) <= 2
    assert abs(_peak_hz(out) - 1000.0 * factor) < 5.0
    assert speed_perturb(wav, SR, 1.0) is wav


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_noise_mixed_at_requested_snr(snr):
    rng = np.random.default_rng(0)
    wav = _tone(500.0, 0.5)
    noise = torch.from_numpy(rng.standard_normal(SR // 10).astype(np.float32))  # shorter: tiled
    out = mix_noise(wav, noise, snr, np.random.default_rng(1))
    assert out.shape == wav.shape
    added = out - wav
    measured = 10 * torch.log10(wav.pow(2).sum() / added.pow(2).sum())
    assert abs(float(measured) - snr) < 0.05
    again = mix_noise(wav, noise, snr, np.random.default_rng(1))
    assert torch.equal(out, again)
    assert torch.equal(mix_noise(wav, torch.zeros(100), snr, rng), wav)  # silent noise: no-op


def test_spec_augment_masks_with_mean_within_limits():
    cfg = AugmentConfig(freq_masks=2, freq_mask_width=10, time_masks=2, time_mask_width=40)
    feats = torch.randn(100, 80) + 5.0  # (T, F)
    orig = feats.clone()
    hits = 0
    for seed in range(20):
        out = spec_augment(feats, cfg, np.random.default_rng(seed))
        assert torch.equal(feats, orig)  # input untouched
        masked = out != feats
        value = float(feats.mean())
        assert torch.allclose(out[masked], torch.full_like(out[masked], value))
        rows = masked.all(dim=1)  # fully masked frames (time masks)
        cols = masked.all(dim=0)  # fully masked bins (frequency masks)
        assert int(rows.sum()) <= 2 * int(100 * cfg.time_mask_max_ratio)  # 2 masks of <= 20%
        assert int(cols.sum()) <= 2 * 10
        # every masked cell lies in a masked frame or a masked bin
        assert bool((masked <= (rows[:, None] | cols[None, :])).all())
        hits += int(rows.any()) + int(cols.any())
    assert hits > 20  # masks actually happen
    a = spec_augment(feats, cfg, np.random.default_rng(3))
    assert torch.equal(a, spec_augment(feats, cfg, np.random.default_rng(3)))


def test_augmenter_pipeline_and_settings(tmp_path):
    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    sf.write(noise_dir / "n1.wav", np.random.default_rng(0).standard_normal(8000) * 0.1, SR)
    cfg = AugmentConfig(
        speed_perturb=[0.9, 1.1], noise_files=[str(noise_dir)], noise_prob=1.0, noise_snrs=[10.0]
    )
    aug = Augmenter(cfg, SR)
    assert aug.max_stretch == pytest.approx(1 / 0.9)
    assert [p.name for p in aug.noise_files] == ["n1.wav"]
    wav = _tone(800.0, 0.5)
    lengths = set()
    for seed in range(8):
        out = aug.waveform(wav, np.random.default_rng(seed))
        lengths.add(out.numel())
        assert out.numel() <= wav.numel() * aug.max_stretch + 2
    assert len(lengths) == 2  # both factors drawn
    off = Augmenter(AugmentConfig(specaug=False), SR)
    assert off.max_stretch == 1.0
    feats = torch.randn(50, 80)
    assert off.features(feats, np.random.default_rng(0)) is feats
    assert torch.equal(off.waveform(wav, np.random.default_rng(0)), wav)


def test_bad_settings_name_the_problem(tmp_path):
    with pytest.raises(AugmentError, match="noise_files is empty"):
        Augmenter(AugmentConfig(noise_prob=0.5), SR)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(AugmentError, match="noise file .*bad.wav"):
        Augmenter(AugmentConfig(noise_prob=0.5, noise_files=[str(bad)]), SR)
    with pytest.raises(AugmentError, match="speed_perturb"):
        Augmenter(AugmentConfig(speed_perturb=[0.0]), SR)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AugmentError, match="holds no audio files"):
        Augmenter(AugmentConfig(noise_prob=0.5, noise_files=[str(tmp_path / "empty")]), SR)
