"""Data checks that used to pass what commands then reject, or change data silently: a
1-sample wav, ids with spaces, pipes with --allow-pipes, and every change fix-data makes."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from moe_asr.cli import main
from moe_asr.data.datadir import DataDirError, fix_datadir, load_datadir, validate_datadir
from tests.data.test_datadir import make_clean_dir


def test_one_sample_wav_fails_check_audio(tmp_path, capsys):
    d = make_clean_dir(tmp_path)
    utt = "spk0-utt0"
    sf.write(tmp_path / "wav" / f"{utt}.wav", np.zeros(1, dtype=np.float32), 16000)
    assert validate_datadir(d) == []  # without opening audio nothing is known
    problems = [str(p) for p in validate_datadir(d, check_audio=True)]
    assert len(problems) == 1
    assert f"wav.scp:1: {utt}:" in problems[0] and "1 sample(s)" in problems[0]
    assert "train, decode and transcribe cannot make features" in problems[0]
    assert main(["validate-data", str(d), "--check-audio"]) == 1
    assert "OK" not in capsys.readouterr().err


def test_short_segment_fails_check_audio(tmp_path):
    d = make_clean_dir(tmp_path)
    wav = (d / "wav.scp").read_text().splitlines()
    rec, path = wav[0].split()
    (d / "wav.scp").write_text(f"{rec} {path}\n")
    utts = [line.split()[0] for line in (d / "utt2spk").read_text().splitlines()]
    segs = [f"{u} {rec} 0.00 {0.05 if i == 0 else 0.1 + 0.0:.2f}" for i, u in enumerate(utts)]
    (d / "segments").write_text("\n".join(segs) + "\n")
    problems = "\n".join(map(str, validate_datadir(d, check_audio=True)))
    assert f"{utts[0]}: segment of 0.0500 s is shorter than 0.1 s" in problems
    assert f"{utts[1]}: segment" not in problems


def test_an_utterance_id_with_a_space_is_named(tmp_path):
    d = make_clean_dir(tmp_path)
    lines = (d / "utt2spk").read_text().splitlines()
    lines[0] = "spk0 utt0 spk0"  # an id written with a space
    (d / "utt2spk").write_text("\n".join(lines) + "\n")
    problems = "\n".join(map(str, validate_datadir(d)))
    assert "utt2spk:1: spk0 utt0 spk0: expected `id value` with one value" in problems
    assert "ids cannot contain spaces (is `spk0 utt0` meant as one id?" in problems
    with pytest.raises(DataDirError, match="ids cannot contain spaces"):
        load_datadir(d)


def test_validate_with_allow_pipes_is_never_ok(tmp_path, capsys):
    d = make_clean_dir(tmp_path)
    wav = (d / "wav.scp").read_text().splitlines()
    wav[1] = wav[1].split()[0] + " sox in.flac -t wav - |"
    (d / "wav.scp").write_text("\n".join(wav) + "\n")
    for extra in ([], ["--check-audio"]):
        assert main(["validate-data", str(d), "--allow-pipes", *extra]) == 1
        out, err = capsys.readouterr()
        assert "pipeline" in out and "OK" not in err
    # no command that reads audio offers --allow-pipes, so none is suggested
    for cmd in (["train", "--help"], ["decode", "--help"], ["compute-cmvn", "--help"]):
        with pytest.raises(SystemExit):
            main(cmd)
        assert "--allow-pipes" not in capsys.readouterr().out


def test_fix_data_reports_every_change_per_utterance(tmp_path, capsys):
    d = make_clean_dir(tmp_path)
    text = (d / "text").read_bytes().splitlines()
    text[0] = b"spk0-utt0 caf\xe9 au lait"  # Latin-1, not UTF-8
    text.append(b"spk0-utt2 a different transcript")  # duplicate id, other text
    text.append(text[1])  # duplicate id, same line
    (d / "text").write_bytes(b"\n".join(text) + b"\n")
    original = (d / "text").read_bytes()
    assert main(["fix-data", str(d)]) == 0
    out = capsys.readouterr().out
    assert "text:1: spk0-utt0: invalid UTF-8 bytes replaced by U+FFFD" in out
    assert "text:5: spk0-utt2: duplicate id with a different value removed: " in out
    assert "'a different transcript' (line 2 kept: 'hello world 2')" in out
    assert "text:6: spk0-utt2: duplicate line removed (same as line 2)" in out
    report = fix_datadir(d)  # idempotent on the fixed dir: nothing more to change
    assert report.changes == []
    backup = sorted((d / ".backup").iterdir())[0]
    assert (backup / "text").read_bytes() == original
    assert "duplicate id with a different value" in (backup / "changes").read_text()
