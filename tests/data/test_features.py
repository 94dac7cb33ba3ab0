"""Kaldi fbank and global CMVN: frame counts, int16 scaling, mel placement, exact statistics."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from moe_asr.cli import main
from moe_asr.config import FeatureConfig
from moe_asr.data.datadir import DataDir, write_datadir
from moe_asr.data.features import (
    Cmvn,
    CmvnError,
    FeatureError,
    StreamingFbank,
    compute_cmvn,
    compute_fbank,
    num_frames,
)
from moe_asr.errors import UserError

SR = 16000
CFG = FeatureConfig()


def _tone(freq: float, seconds: float, amp: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _datadir(root: Path, n: int = 5) -> Path:
    rng = np.random.default_rng(1)
    dd = DataDir()
    for i in range(n):
        utt = f"s-u{i}"
        path = root / f"{utt}.wav"
        wav = _tone(300.0 * (i + 1), 0.3 + 0.1 * i, 0.2) + 0.01 * rng.standard_normal(
            int((0.3 + 0.1 * i) * SR)
        )
        sf.write(path, wav.astype(np.float32), SR, subtype="FLOAT")
        dd.wav_scp[utt] = str(path)
        dd.text[utt] = "x"
        dd.utt2spk[utt] = "s"
    return write_datadir(dd, root / "data")


def test_fbank_shape_dtype_and_inputs():
    wav = _tone(440.0, 1.0, 0.3)
    feats = compute_fbank(wav, CFG)
    assert feats.shape == (num_frames(len(wav), CFG), 80) == (98, 80)
    assert feats.dtype == torch.float32
    assert torch.equal(compute_fbank(torch.from_numpy(wav)[None], CFG), feats)
    cfg40 = FeatureConfig(num_mel_bins=40, frame_shift_ms=20.0)
    assert compute_fbank(wav, cfg40).shape == (1 + (16000 - 400) // 320, 40)


def test_fbank_uses_int16_scale():
    """Kaldi sees int16 sample values: a -10 dBFS tone gives large positive log energies,
    and doubling the amplitude adds log(4) to every bin."""
    wav = _tone(1000.0, 0.5, 0.3)
    a = compute_fbank(wav, CFG)
    b = compute_fbank(2 * wav, CFG)
    assert a.max() > 15.0  # float-scale input would peak near -5
    assert torch.allclose(b - a, torch.full_like(a, math.log(4.0)), atol=1e-3)


def test_fbank_peak_in_the_mel_bin_of_the_tone():
    def mel(f):
        return 1127.0 * math.log(1 + f / 700.0)

    lo, hi = mel(20.0), mel(8000.0)  # Kaldi defaults: low 20 Hz, high = Nyquist
    centers = [lo + (i + 1) * (hi - lo) / 81 for i in range(80)]
    for freq in (500.0, 2000.0):
        peak = int(compute_fbank(_tone(freq, 0.5, 0.3), CFG).mean(0).argmax())
        want = min(range(80), key=lambda i: abs(centers[i] - mel(freq)))
        assert abs(peak - want) <= 1


def test_fbank_rejects_short_or_multichannel():
    with pytest.raises(FeatureError, match="shorter than one 25 ms frame"):
        compute_fbank(np.zeros(300, np.float32), CFG)
    with pytest.raises(FeatureError, match="mono"):
        compute_fbank(np.zeros((2, 1000), np.float32), CFG)


def test_streaming_fbank_pieces_of_any_size_equal_the_whole_signal():
    cfg = FeatureConfig(num_mel_bins=40)
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(16000 * 2 + 123)).astype(np.float32)
    whole = compute_fbank(wav, cfg)
    for trial in range(3):
        stream = StreamingFbank(cfg)
        parts, pos = [], 0
        while pos < len(wav):
            n = int(rng.integers(1, 2500 if trial else 50))
            parts.append(stream.accept(wav[pos : pos + n]))
            pos += n
        got = torch.cat(parts)
        assert got.shape == whole.shape and stream.num_frames == whole.shape[0]
        torch.testing.assert_close(got, whole, atol=1e-4, rtol=1e-5)
    with pytest.raises(UserError, match="dither"):
        StreamingFbank(FeatureConfig(dither=1.0))


def test_cmvn_matches_statistics_of_all_frames(tmp_path):
    d = _datadir(tmp_path)
    cmvn = compute_cmvn(d, CFG)
    frames = []
    for line in (d / "wav.scp").read_text().splitlines():
        wav, _ = sf.read(line.split()[1], dtype="float32")
        frames.append(compute_fbank(wav, CFG).double())
    allf = torch.cat(frames)  # (sum T, F)
    assert cmvn.count == allf.shape[0] and cmvn.num_utts == 5
    assert torch.allclose(cmvn.mean.double(), allf.mean(0), atol=1e-4)
    assert torch.allclose(cmvn.std.double(), allf.std(0, unbiased=False), rtol=1e-4)
    normed = cmvn.apply(allf.float())
    assert (
        normed.mean(0).abs().max() < 1e-3 and (normed.std(0, unbiased=False) - 1).abs().max() < 1e-3
    )
    # same result with a worker process
    again = compute_cmvn(d, CFG, num_workers=1)
    assert torch.equal(again.mean, cmvn.mean) and again.count == cmvn.count


def test_cmvn_json_roundtrip_and_errors(tmp_path):
    cmvn = Cmvn.from_sums(np.array([2.0, 4.0]), np.array([4.0, 10.0]), 2)
    assert torch.allclose(cmvn.mean, torch.tensor([1.0, 2.0]))
    assert torch.allclose(cmvn.var, torch.tensor([1.0, 1.0], dtype=torch.float64))
    path = cmvn.save(tmp_path / "cmvn.json")
    data = json.loads(path.read_text())
    assert set(data) >= {"count", "mean", "var", "std"} and data["count"] == 2
    back = Cmvn.load(path)
    assert torch.equal(back.mean, cmvn.mean) and torch.equal(back.std, cmvn.std)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CmvnError, match="bad.json.*not valid JSON"):
        Cmvn.load(tmp_path / "bad.json")
    (tmp_path / "short.json").write_text(json.dumps({"count": 3, "mean": [1.0]}))
    with pytest.raises(CmvnError, match="short.json.*needs count, mean"):
        Cmvn.load(tmp_path / "short.json")
    with pytest.raises(CmvnError, match="missing.json.*cannot read"):
        Cmvn.load(tmp_path / "missing.json")


def test_cmvn_skips_corrupt_audio_and_names_it(tmp_path, caplog):
    d = _datadir(tmp_path)
    bad = tmp_path / "s-u1.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with caplog.at_level(logging.WARNING):
        cmvn = compute_cmvn(d, CFG)
    assert cmvn.skipped == ["s-u1"] and cmvn.num_utts == 4
    assert "s-u1" in caplog.text and str(bad) in caplog.text
    for i in range(5):
        (tmp_path / f"s-u{i}.wav").write_bytes(b"")
    with pytest.raises(UserError, match="no usable utterance.*5 with unreadable audio"):
        compute_cmvn(d, CFG)


def test_cli_compute_cmvn(tmp_path, capsys):
    d = _datadir(tmp_path)
    out = tmp_path / "cmvn.json"
    assert main(["compute-cmvn", str(d), str(out), "--set", "data.features.num_mel_bins=40"]) == 0
    cmvn = Cmvn.load(out)
    assert cmvn.mean.shape == (40,) and cmvn.num_utts == 5
    assert "5 utterances" in capsys.readouterr().out
    # never replaced silently
    assert main(["compute-cmvn", str(d), str(out)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main(["compute-cmvn", str(d), str(out), "--overwrite"]) == 0
    assert Cmvn.load(out).mean.shape == (80,)
