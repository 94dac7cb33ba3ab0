"""Noise sources: directories, Kaldi noise.scp and typed entries; unreadable files are
reported and skipped; synthetic loops are the same in every process."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf

from moe_asr.data.noise_bank import (
    FILE_NOISE,
    AudioRef,
    AugmentError,
    NoiseBank,
    find_audio,
    split_typed,
)

SR = 16000


def _noise(path, seconds=1.0, seed=0, sr=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.random.default_rng(seed).standard_normal(int(seconds * sr)) * 0.1, sr)
    return path


def test_unreadable_file_in_a_noise_dir_is_reported_and_skipped(tmp_path, caplog):
    d = tmp_path / "musan" / "noise"
    good = [_noise(d / "a.wav"), _noise(d / "sub" / "b.flac", seed=1)]
    (d / "broken.wav").write_bytes(b"RIFF....WAVEnot audio at all")
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.txt").write_text("not a noise")  # not an audio suffix: not looked at
    with caplog.at_level(logging.WARNING):
        refs = find_audio(str(d))
    assert sorted(r.path for r in refs) == sorted(str(p) for p in good)
    assert "broken.wav" in caplog.text and "empty.wav" in caplog.text
    assert "2 of 4 noise file(s) skipped" in caplog.text
    assert refs[0].duration == pytest.approx(1.0)


def test_noise_scp_relative_paths_missing_files_and_pipes(tmp_path, caplog):
    _noise(tmp_path / "lists" / "wav" / "n1.wav")
    _noise(tmp_path / "abs.wav", seconds=0.5)
    scp = tmp_path / "lists" / "noise.scp"
    scp.write_text(
        f"n1 wav/n1.wav\nn2 {tmp_path / 'abs.wav'}\nn3 wav/missing.wav\nn4 sox in.wav -t wav - |\n"
    )
    with caplog.at_level(logging.WARNING):
        refs = find_audio(str(scp))
    assert [r.path for r in refs] == [str(tmp_path / "lists/wav/n1.wav"), str(tmp_path / "abs.wav")]
    assert "missing.wav" in caplog.text and "command pipe" in caplog.text


def test_entries_without_any_readable_file_are_errors(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"junk")
    with pytest.raises(AugmentError, match="noise file .*bad.wav"):
        find_audio(str(bad))  # named directly: an error, not a skip
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.wav").write_bytes(b"junk")
    with pytest.raises(AugmentError, match="no readable noise file"):
        find_audio(str(tmp_path / "d"))
    with pytest.raises(AugmentError, match="cannot read the scp"):
        find_audio(str(tmp_path / "none.scp"))


def test_typed_entries():
    assert split_typed("music=/data/musan/music") == ("music", "/data/musan/music")
    assert split_typed("/data/a=b/noise.wav") == (FILE_NOISE, "/data/a=b/noise.wav")
    with pytest.raises(AugmentError, match="other than 'clean'"):
        split_typed("clean=/x")


def test_bank_types_loops_and_file_excerpts(tmp_path, caplog):
    long = _noise(tmp_path / "music" / "long.wav", seconds=5.0, sr=8000)  # resampled on read
    short = _noise(tmp_path / "music" / "short.wav", seconds=0.2, seed=2)
    talker = _noise(tmp_path / "talk.wav", seconds=1.0, seed=3)
    bank = NoiseBank(
        ["pink", "babble"],
        [f"music={tmp_path / 'music'}", f"pink={long}"],
        SR,
        [AudioRef(str(talker), 1.0)],
    )
    assert bank.types == ["pink", "babble", "music"]
    loop = bank.draw("babble", SR, np.random.default_rng(0))
    assert loop.numel() == 30 * SR and abs(float(loop.pow(2).mean()) - 1.0) < 1e-3
    again = NoiseBank(["babble"], [], SR, [AudioRef(str(talker), 1.0)])
    assert np.array_equal(again.draw("babble", SR, np.random.default_rng(5)).numpy(), loop.numpy())
    lengths = {bank.draw("music", SR, np.random.default_rng(s)).numel() for s in range(8)}
    assert lengths == {SR, int(0.2 * SR)}  # an excerpt of the long file, the short one whole
    # a file that fails when read later is reported once and replaced by the next one
    long.unlink()
    with caplog.at_level(logging.WARNING):
        got = {bank.draw("music", SR, np.random.default_rng(s)).numel() for s in range(8)}
    assert got == {int(0.2 * SR)} and caplog.text.count("long.wav") == 1
    short.unlink()
    with pytest.raises(AugmentError, match="no noise file of this type"):
        bank.draw("music", SR, np.random.default_rng(0))
