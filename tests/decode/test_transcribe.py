"""`moe-asr transcribe`: wav, flac, mp3, stereo and 8 kHz input; a corrupt file is
reported without losing the others; JSON word timestamps are monotonic and inside the
audio; accent prediction and forcing; long files are windowed and stitched."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from moe_asr.cli import main
from moe_asr.config import DecodeConfig
from moe_asr.decode.transcribe import Transcriber, collect_inputs, split_windows
from moe_asr.package import load_package
from tests.decode_model import TEXTS, train_tiny_package
from tests.tone_corpus import tone_wave

torch.set_num_threads(1)
SR = 16000


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("transcribe")
    model = train_tiny_package(root / "exp")
    audio = root / "audio"
    audio.mkdir()
    waves = {i: tone_wave(t, seed=i) for i, t in enumerate(TEXTS)}
    files = {
        "a.wav": (waves[0], SR, "PCM_16", TEXTS[0]),
        "b.flac": (waves[1], SR, "PCM_16", TEXTS[1]),
        "c.mp3": (waves[2], SR, None, TEXTS[2]),
        "d_stereo.wav": (np.stack([waves[3], 0.8 * waves[3]], 1), SR, "PCM_16", TEXTS[3]),
        "e_8k.wav": (waves[0][::2].copy(), 8000, "PCM_16", TEXTS[0]),
    }
    expected = {}
    for name, (wav, sr, subtype, text) in files.items():
        kwargs = {"subtype": subtype} if subtype else {}
        sf.write(audio / name, wav, sr, **kwargs)
        expected[str(audio / name)] = text
    return {"root": root, "model": model, "audio": audio, "expected": expected}


def test_formats_rates_and_channels_transcribe_to_the_text(setup, capsys):
    assert main(["transcribe", str(setup["model"]), str(setup["audio"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    got = dict(line.split("\t") for line in lines)
    assert got == setup["expected"]


def test_corrupt_file_is_reported_and_the_others_transcribed(setup, capsys):
    bad = setup["root"] / "broken.wav"
    bad.write_bytes(b"RIFF$\x00\x00\x00WAVEfmt garbage")
    missing = setup["root"] / "missing.flac"
    files = sorted(setup["expected"])
    args = ["transcribe", str(setup["model"]), files[0], str(bad), str(missing), files[1]]
    assert main([*args, "--json", "--mode", "ctc_prefix_beam"]) == 2
    cap = capsys.readouterr()
    rows = [json.loads(line) for line in cap.out.splitlines()]
    assert [r["path"] for r in rows] == [files[0], str(bad), str(missing), files[1]]
    assert rows[0]["text"] == setup["expected"][files[0]]
    assert rows[3]["text"] == setup["expected"][files[1]]
    assert "error" in rows[1] and "broken.wav" in rows[1]["error"]
    assert "does not exist" in rows[2]["error"]
    assert "broken.wav" in cap.err and "2 of 4 file(s) failed" in cap.err


def test_json_has_monotonic_word_times_inside_the_audio_and_accent(setup, capsys):
    files = sorted(setup["expected"])
    listing = setup["root"] / "list.txt"
    listing.write_text("# files\n" + "\n".join(files) + "\n")
    assert main(["transcribe", str(setup["model"]), "--list", str(listing), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == len(files)
    for row in rows:
        words = row["words"]
        assert [w["word"] for w in words] == row["text"].split()
        times = [t for w in words for t in (w["start"], w["end"])]
        assert times == sorted(times) and all(w["end"] > w["start"] for w in words)
        assert times[0] >= 0 and times[-1] <= row["duration"] + 1e-6
        assert 0.5 < row["confidence"] <= 1.0
        assert row["decode_seconds"] > 0
        assert set(row["accent_probs"]) == {"x", "y"}
        assert sum(row["accent_probs"].values()) == pytest.approx(1.0, abs=1e-3)
        assert row["accent"] == max(row["accent_probs"], key=row["accent_probs"].get)
    # "bad cab" was trained as accent y: its first word starts after the leading silence
    b = next(r for r in rows if r["path"].endswith("b.flac"))
    assert b["accent"] == "y"
    assert b["words"][1]["start"] > b["words"][0]["end"]


def test_forced_accent_changes_routing_but_not_the_interface(setup, capsys):
    f = sorted(setup["expected"])[0]
    assert main(["transcribe", str(setup["model"]), f, "--accent", "y"]) == 0
    assert capsys.readouterr().out.split("\t")[0] == f
    assert main(["transcribe", str(setup["model"]), f, "--accent", "q"]) == 1
    assert "unknown accent" in capsys.readouterr().err
    # --accent is an alias of --force accent=..., and --mask-experts reaches transcribe too
    outs = []
    for opts in (
        ["--accent", "y"],
        ["--force", "accent=y"],
        ["--force", "accent=y", "--mask-experts", "1:1"],
    ):
        assert main(["transcribe", str(setup["model"]), f, "--json", *opts]) == 0
        row = json.loads(capsys.readouterr().out)
        outs.append((row["text"], row["accent_probs"]))
    assert outs[0] == outs[1]


def test_long_files_are_windowed_and_stitched(setup):
    gap = np.zeros(SR // 10, dtype=np.float32)
    one, two, three = (tone_wave(TEXTS[1], seed=i) for i in range(3))
    wav = np.concatenate([one, gap, two, gap, three])
    path = setup["root"] / "long.wav"
    sf.write(path, wav, SR)
    pkg = load_package(setup["model"])
    cfg = DecodeConfig(mode="attention_rescoring", beam=4, window_seconds=1.1)
    spans = split_windows(wav, SR, cfg.window_seconds)
    assert len(spans) == 3 and spans[0][0] == 0 and spans[-1][1] == len(wav)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert all(np.abs(wav[b - 80 : b + 80]).max() < 0.02 for _, b in spans[:-1])  # cut in a gap
    result = Transcriber(pkg, cfg).transcribe(str(path))
    assert result.error is None
    assert result.text == " ".join([TEXTS[1]] * 3)
    times = [t for w in result.words for t in (w.start, w.end)]
    assert times == sorted(times) and times[-1] <= len(wav) / SR + 1e-6
    assert result.words[2].start > spans[0][1] / SR - 0.05  # offsets of the second window


def test_inputs_need_audio(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="no audio files"):
        collect_inputs([str(tmp_path)])
    with pytest.raises(ValueError, match="cannot read the file list"):
        collect_inputs([], tmp_path / "nolist.txt")
