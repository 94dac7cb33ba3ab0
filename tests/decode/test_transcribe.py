"""`moe-asr transcribe`: wav, flac, mp3, stereo and 8 kHz input; a corrupt file is
reported without losing the others; JSON word timestamps are monotonic and inside the
audio; accent prediction and forcing; long files are windowed and stitched.

Exact texts are asserted only for inputs the tiny model memorised with a stated margin
(``tests.decode_model.assert_memorised``); for the other inputs transcribe must give what
the recognizer gives on the same audio, and windowing/stitching is tested with a stub
recognizer whose per-window output is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from moe_asr.audio import load_audio
from moe_asr.cli import main
from moe_asr.config import DecodeConfig
from moe_asr.data.features import compute_fbank
from moe_asr.decode.search import Recognition, Recognizer
from moe_asr.decode.transcribe import Transcriber, collect_inputs, split_windows
from moe_asr.package import load_package
from tests.decode_model import TEXTS, assert_memorised, train_tiny_package
from tests.tone_corpus import tone_wave

SR = 16000
# lossless copies of memorised inputs: their text is checked with the margin
MEMORISED = ("a.wav", "b.flac")


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
    pkg = load_package(model)
    expected = {}
    for name, (wav, sr, subtype, text) in files.items():
        kwargs = {"subtype": subtype} if subtype else {}
        sf.write(audio / name, wav, sr, **kwargs)
        if name in MEMORISED:
            assert_memorised(pkg, load_audio(audio / name, SR), text)
        expected[str(audio / name)] = text
    return {"root": root, "model": model, "audio": audio, "expected": expected, "pkg": pkg}


def _recognizer_text(pkg, path) -> str:
    """What the recognizer outputs on the file's audio (loaded, mixed down, resampled)."""
    feats = compute_fbank(load_audio(path, SR), pkg.config.data.features)
    return Recognizer.from_package(pkg, DecodeConfig()).recognize([feats])[0].text


def test_formats_rates_and_channels_transcribe_to_the_text(setup, capsys):
    assert main(["transcribe", str(setup["model"]), str(setup["audio"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    got = dict(line.split("\t") for line in lines)
    assert set(got) == set(setup["expected"])
    for path, text in setup["expected"].items():
        if path.endswith(MEMORISED):
            assert got[path] == text
        else:  # mp3, stereo, 8 kHz: the same as decoding the loaded audio directly
            assert got[path] == _recognizer_text(setup["pkg"], path)


def test_corrupt_file_is_reported_and_the_others_transcribed(setup, capsys):
    bad = setup["root"] / "broken.wav"
    bad.write_bytes(b"RIFF$\x00\x00\x00WAVEfmt garbage")
    missing = setup["root"] / "missing.flac"
    files = [p for p in sorted(setup["expected"]) if p.endswith(MEMORISED)]
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


class _StubRecognizer:
    """Outputs a known text per window, with each token a one-frame spike at a known frame,
    and records the feature lengths it was given."""

    def __init__(self, tokenizer, texts: list[str], frame_seconds: float) -> None:
        self.tokenizer, self.texts, self.frame_seconds = tokenizer, texts, frame_seconds
        self.min_frames = 7
        self.seen: list[int] = []

    def recognize(self, feats, routing=None) -> list[Recognition]:
        out = []
        for f, text in zip(feats, self.texts, strict=True):
            self.seen.append(f.shape[0])
            n = f.shape[0] // 4  # encoder frames (subsampling 4)
            tokens = self.tokenizer.encode(text)
            lp = torch.full((n, self.tokenizer.vocab_size), -30.0)
            lp[:, 0] = 0.0  # blank
            for j, t in enumerate(tokens):  # token j spikes at frame 2 + 2j
                lp[2 + 2 * j] = -30.0
                lp[2 + 2 * j, t] = 0.0
            out.append(Recognition(text, tokens, 0.0, [(text, 0.0)], [], lp))
        return out


def test_long_files_are_windowed_and_stitched(setup):
    gap = np.zeros(SR // 10, dtype=np.float32)
    one, two, three = (tone_wave(TEXTS[1], seed=i) for i in range(3))
    wav = np.concatenate([one, gap, two, gap, three])
    path = setup["root"] / "long.wav"
    sf.write(path, wav, SR, subtype="FLOAT")
    pkg = setup["pkg"]
    cfg = DecodeConfig(mode="ctc_greedy", window_seconds=1.1)
    spans = split_windows(wav, SR, cfg.window_seconds)
    assert len(spans) == 3 and spans[0][0] == 0 and spans[-1][1] == len(wav)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert all(np.abs(wav[b - 80 : b + 80]).max() < 0.02 for _, b in spans[:-1])  # cut in a gap
    transcriber = Transcriber(pkg, cfg)
    fs = transcriber.recognizer.frame_seconds
    stub = _StubRecognizer(pkg.tokenizer, ["bad cab", "", "face"], fs)
    transcriber.recognizer = stub
    result = transcriber.transcribe(str(path))
    assert result.error is None
    # one batch of every window's features, in order; an empty window adds no text
    assert stub.seen == [
        compute_fbank(wav[a:b], pkg.config.data.features).shape[0] for a, b in spans
    ]
    assert result.text == "bad cab face"
    # a token spiking at encoder frame k of window w lies at spans[w] start + k * fs
    starts = [a / SR for a, _ in spans]
    want = [
        ("bad", starts[0] + 2 * fs, starts[0] + 7 * fs),
        ("cab", starts[0] + 10 * fs, starts[0] + 15 * fs),
        ("face", starts[2] + 2 * fs, starts[2] + 9 * fs),
    ]
    got = [(w.word, w.start, w.end) for w in result.words]
    assert [g[0] for g in got] == [w[0] for w in want]
    for (_, s0, e0), (_, s1, e1) in zip(got, want):
        assert s0 == pytest.approx(s1, abs=1e-6) and e0 == pytest.approx(e1, abs=1e-6)
    assert all(w.confidence == pytest.approx(1.0) for w in result.words)


def test_inputs_need_audio(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="no audio files"):
        collect_inputs([str(tmp_path)])
    with pytest.raises(ValueError, match="cannot read the file list"):
        collect_inputs([], tmp_path / "nolist.txt")
