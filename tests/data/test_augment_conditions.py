"""Noise and reverberation augmentation: the SNR lands where asked (measured on the mix),
draws are reproducible, output never clips or turns non-finite, the applied condition
becomes the noise / snr / reverb labels, and the config is checked."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from moe_asr.config import AugmentConfig, Config, ConfigError, validate_config
from moe_asr.data.augment import (
    Augmenter,
    AugmentError,
    Condition,
    augment_label_values,
    limit_peak,
    mix_noise,
    snr_bucket,
    snr_bucket_names,
)
from moe_asr.data.noise_bank import AudioRef
from moe_asr.synth.noise import active_power

SR = 16000
INT16_MAX = 32767 / 32768


def _speech(seconds: float = 2.0, amp: float = 0.3) -> torch.Tensor:
    """Tone bursts (harmonics of 180 Hz, 0.4 s) with 0.2 s silences: speech-like activity."""
    t = np.arange(int(seconds * SR)) / SR
    wav = sum(np.sin(2 * np.pi * 180 * k * t) / k for k in range(1, 5))
    wav = wav * ((t % 0.6) < 0.4)
    return torch.from_numpy((amp * wav / np.abs(wav).max()).astype(np.float32))


def _talkers(root: Path, n: int = 3) -> list[AudioRef]:
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        path = root / f"talker{i}.wav"
        t = np.arange(SR) / SR
        wav = 0.2 * np.sin(2 * np.pi * (230 + 70 * i) * t) * (0.5 + rng.random(SR))
        sf.write(path, wav.astype(np.float32), SR)
        out.append(AudioRef(str(path), 1.0))
    return out


def _measured_snr(out: torch.Tensor, clean: torch.Tensor) -> float:
    """SNR of a mix: the speech part is the least-squares scale of the clean signal (the
    mix may have been scaled down as a whole), the rest is noise."""
    y, x = out.double().numpy(), clean.double().numpy()
    alpha = float(y @ x / (x @ x))
    noise = y - alpha * x
    return 10 * math.log10(active_power(alpha * x, SR) / float(np.mean(noise**2)))


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "babble", "file"])
@pytest.mark.parametrize("amp", [0.05, 0.6])  # quiet: plain mix; loud: peak-limited mix
def test_noise_lands_at_the_drawn_snr(tmp_path, kind, amp):
    files = []
    if kind == "file":
        sf.write(tmp_path / "n.wav", np.random.default_rng(1).standard_normal(3 * SR) * 0.05, SR)
        files = [str(tmp_path / "n.wav")]
    cfg = AugmentConfig(
        noise_prob=1.0,
        noise_types=[] if kind == "file" else [kind],
        noise_files=files,
        snr_range=[-5.0, 20.0],
        specaug=False,
    )
    aug = Augmenter(cfg, SR, babble_audio=_talkers(tmp_path))
    clean = _speech(amp=amp)
    snrs = []
    for seed in range(6):
        out, cond = aug.apply(clean, np.random.default_rng(seed))
        assert cond.noise == kind and -5.0 <= cond.snr <= 20.0
        assert abs(_measured_snr(out, clean) - cond.snr) < 0.5, (seed, cond)
        snrs.append(cond.snr)
    assert max(snrs) - min(snrs) > 3.0  # drawn from the range


def test_mix_noise_uses_active_speech_power_and_skips_silence():
    clean = _speech()
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal(SR).astype(np.float32))
    out = mix_noise(clean, noise, 10.0, np.random.default_rng(1), SR)
    added = (out - clean).double()
    measured = 10 * math.log10(active_power(clean.numpy(), SR) / float(added.pow(2).mean()))
    assert abs(measured - 10.0) < 0.01
    silent = torch.zeros(SR)
    assert mix_noise(silent, noise, 10.0, np.random.default_rng(1), SR) is silent
    assert mix_noise(clean, torch.zeros(50), 10.0, np.random.default_rng(1), SR) is clean


def _full_cfg(tmp_path: Path, **kw) -> AugmentConfig:
    sf.write(tmp_path / "hum.wav", 0.5 * np.sin(np.arange(SR) * 0.05), SR)
    base = dict(
        speed_perturb=[0.9, 1.0, 1.1],
        noise_prob=0.8,
        noise_types=["white", "pink", "brown", "babble"],
        noise_files=[f"hum={tmp_path / 'hum.wav'}"],
        snr_range=[-5.0, 20.0],
        reverb_prob=0.5,
        specaug=False,
    )
    return AugmentConfig(**{**base, **kw})


def test_same_seed_same_output_in_a_fresh_augmenter(tmp_path):
    cfg = _full_cfg(tmp_path)
    talkers = _talkers(tmp_path)
    a, b = Augmenter(cfg, SR, talkers), Augmenter(cfg, SR, talkers)  # b: fresh noise loops
    clean = _speech()
    seen = set()
    for seed in range(12):
        out_a, cond_a = a.apply(clean, np.random.default_rng([seed, 3]))
        out_b, cond_b = b.apply(clean, np.random.default_rng([seed, 3]))
        assert torch.equal(out_a, out_b) and cond_a == cond_b
        seen.add((cond_a.noise, cond_a.reverb))
    assert len(seen) >= 4  # the draws vary over utterances
    other, _ = a.apply(clean, np.random.default_rng([0, 4]))  # another epoch
    assert not torch.equal(other, a.apply(clean, np.random.default_rng([0, 3]))[0])


def test_never_nan_inf_or_beyond_int16_full_scale(tmp_path):
    cfg = _full_cfg(tmp_path, noise_prob=1.0, reverb_prob=1.0, snr_range=[-5.0, -5.0])
    aug = Augmenter(cfg, SR, _talkers(tmp_path))
    loud = torch.sign(_speech(amp=1.0)) * (_speech(amp=1.0).abs() > 0.01)  # full-scale square
    for seed in range(10):
        out, cond = aug.apply(loud, np.random.default_rng(seed))
        assert torch.isfinite(out).all() and float(out.abs().max()) <= INT16_MAX
        assert cond.reverb and cond.noise != "clean"
    silent = torch.zeros(SR)
    out, cond = aug.apply(silent, np.random.default_rng(0))  # nothing to mix into silence
    assert torch.equal(out, torch.zeros_like(out)) and cond.noise == "clean" and not cond.reverb
    assert limit_peak(torch.tensor([0.5, -2.0])).abs().max() == pytest.approx(0.99)


def test_reverberation_keeps_length_timing_and_power(tmp_path):
    cfg = AugmentConfig(reverb_prob=1.0, rt60_range=[0.3, 0.9], specaug=False)
    aug = Augmenter(cfg, SR)
    clean = _speech()
    out, cond = aug.apply(clean, np.random.default_rng(0))
    assert out.shape == clean.shape and cond.reverb and 0.3 <= cond.rt60 <= 0.9
    assert float(out.pow(2).mean()) == pytest.approx(float(clean.pow(2).mean()), rel=1e-3)
    click = torch.zeros(SR)
    click[10] = 1.0
    wet, _ = aug.apply(click, np.random.default_rng(1))
    assert int(wet.abs().argmax()) == 10  # the direct path keeps the timing
    assert float(wet[:10].abs().max()) < 1e-6 < float(wet[11:].abs().max())  # causal
    # the reverberant tail fills the silences between bursts
    gap = slice(int(0.45 * SR), int(0.55 * SR))
    assert float(clean[gap].abs().max()) == 0 and float(out[gap].abs().max()) > 1e-3


def test_user_rir_files_are_aligned_at_their_direct_path(tmp_path):
    rir = np.zeros(800, dtype=np.float32)
    rir[100], rir[300] = 1.0, 0.5  # 100 samples of pre-delay, one echo 200 samples later
    sf.write(tmp_path / "r1.wav", rir, SR)
    (tmp_path / "rir.scp").write_text(f"r1 {tmp_path / 'r1.wav'}\n")
    aug = Augmenter(AugmentConfig(reverb_prob=1.0, rir_files=[str(tmp_path / "rir.scp")]), SR)
    clean = torch.zeros(1000)
    clean[10] = 1.0
    out, cond = aug.apply(clean, np.random.default_rng(0))
    assert cond.reverb and cond.rt60 is None
    peaks = sorted(int(i) for i in torch.topk(out.abs(), 2).indices)
    assert peaks == [10, 210]


def test_condition_labels_and_buckets():
    assert snr_bucket_names([0.0, 10.0]) == ["<0", "0..10", ">=10"]
    assert snr_bucket_names([-5.0, 5.0, 15.0])[1] == "-5..5"
    assert [snr_bucket(v, [0.0, 10.0]) for v in (-5, 0, 9.9, 10, 25)] == [
        "<0", "0..10", "0..10", ">=10", ">=10",
    ]  # fmt: skip
    edges = [0.0, 10.0]
    assert Condition().labels(edges) == {"noise": "clean", "snr": "clean", "reverb": "dry"}
    assert Condition("pink", 12.0, True, 0.4).labels(edges) == {
        "noise": "pink", "snr": ">=10", "reverb": "reverb",
    }  # fmt: skip
    # from a data dir: utt2snr "inf" is clean, a noisy utterance without an SNR is unk
    assert Condition.of_data("white", "5", None).labels(edges)["snr"] == "0..10"
    assert Condition.of_data("clean", "inf", None).labels(edges)["snr"] == "clean"
    assert Condition.of_data("babble", None, None).labels(edges)["snr"] is None
    assert Condition.of_data(None, None, "reverb").labels(edges)["reverb"] == "reverb"


def test_label_values_come_from_the_config_alone():
    assert augment_label_values(AugmentConfig()) == {}
    cfg = AugmentConfig(
        noise_prob=0.5,
        noise_types=["white", "babble"],
        noise_files=["music=/no/such/dir", "/no/file.wav", "babble=/x.scp"],
        snr_buckets=[5.0],
        reverb_prob=0.1,
    )
    assert augment_label_values(cfg) == {
        "noise": ["clean", "white", "babble", "music", "file"],
        "snr": ["clean", "<5", ">=5"],
        "reverb": ["dry", "reverb"],
    }


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"noise_types": ["violet"]}, "noise_types"),
        ({"noise_prob": 0.5}, "needs data.augment.noise_types or"),
        ({"noise_prob": 0.5, "noise_types": ["white"], "noise_snrs": []}, "noise_snrs"),
        ({"snr_range": [20.0, -5.0]}, "snr_range"),
        ({"snr_range": [5.0]}, "snr_range"),
        ({"snr_buckets": [10.0, 0.0]}, "snr_buckets"),
        ({"reverb_prob": 1.5}, "reverb_prob"),
        ({"rt60_range": [0.0, 0.5]}, "rt60_range"),
        ({"drr_range": [5.0, 0.0]}, "drr_range"),
    ],
)
def test_config_errors_name_the_key(kw, match):
    cfg = Config()
    cfg.data.augment = AugmentConfig(**kw)
    with pytest.raises(ConfigError, match=match):
        validate_config(cfg, ("data",))


def test_babble_needs_talkers_and_types_are_checked():
    with pytest.raises(AugmentError, match="babble noise needs talker"):
        Augmenter(AugmentConfig(noise_prob=1.0, noise_types=["babble"]), SR)
    with pytest.raises(AugmentError, match="unknown violet"):
        Augmenter(AugmentConfig(noise_prob=1.0, noise_types=["violet"]), SR)
    with pytest.raises(AugmentError, match="other than 'clean'"):
        Augmenter(AugmentConfig(noise_prob=1.0, noise_files=["clean=/x.wav"]), SR)


def test_recipe_noise_configs_differ_only_in_guidance_by_recorded_labels():
    import dataclasses

    from moe_asr.config import load_config

    conf = Path(__file__).resolve().parents[2] / "egs/synth_accents/asr1/conf"
    guided = load_config(conf / "moe_noise_guided.yaml")
    unguided = load_config(conf / "moe_noise_wide.yaml")
    produced = augment_label_values(guided.data.augment)
    assert set(guided.model.moe.guidance.labels) <= set(produced)
    assert "brown" not in produced["noise"]  # test_unseen_noise's type stays unseen
    assert not unguided.model.moe.guidance.labels
    # the comparison is fair: same data, augmentation, schedule and model but the guidance
    assert guided.data == unguided.data and guided.train == unguided.train
    same_moe = dataclasses.replace(guided.model.moe, guidance=unguided.model.moe.guidance)
    assert dataclasses.replace(guided.model, moe=same_moe) == unguided.model
