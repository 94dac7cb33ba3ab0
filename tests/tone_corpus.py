"""A tiny learnable corpus for tests: each letter is a tone, words are tone sequences.

Fast to generate (numpy only), deterministic, and easy for a tiny model to learn,
so training/decoding tests can assert real behaviour in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from moe_asr.data.datadir import DataDir, write_datadir

__all__ = ["LETTERS", "tone_wave", "make_tone_corpus"]

LETTERS = "abcdefgh"
_SR = 16000


def tone_wave(word: str, *, seconds_per_letter: float = 0.12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(_SR * seconds_per_letter)
    t = np.arange(n) / _SR
    parts = [np.zeros(int(_SR * 0.05), dtype=np.float32)]
    for ch in word:
        if ch == " ":
            parts.append(np.zeros(n // 2, dtype=np.float32))
            continue
        freq = 300.0 * (1.35 ** LETTERS.index(ch))
        env = np.hanning(n)
        parts.append((0.3 * env * np.sin(2 * np.pi * freq * t)).astype(np.float32))
    parts.append(np.zeros(int(_SR * 0.05), dtype=np.float32))
    wav = np.concatenate(parts)
    return (wav + 0.003 * rng.standard_normal(len(wav))).astype(np.float32)


def make_tone_corpus(
    root: Path, texts: list[str], *, accents: list[str] | None = None, prefix: str = "u"
) -> Path:
    """Write a data dir (wav.scp text utt2spk spk2utt utt2dur [utt2accent]) under ``root``."""
    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    dd = DataDir(utt2dur={})
    for i, text in enumerate(texts):
        spk = f"{prefix}spk{i % 2}"
        utt = f"{spk}-{prefix}{i:04d}"
        wav = tone_wave(text, seed=i)
        path = wav_dir / f"{utt}.wav"
        sf.write(path, wav, _SR, subtype="PCM_16")
        dd.wav_scp[utt] = str(path.resolve())
        dd.text[utt] = text
        dd.utt2spk[utt] = spk
        dd.utt2dur[utt] = len(wav) / _SR
    if accents:
        dd.groups["accent"] = {u: accents[i % len(accents)] for i, u in enumerate(sorted(dd.text))}
    return write_datadir(dd, root / "data")
