"""Speakers and the voice check of the synthetic corpus (the accent table is ``accents``).

A speaker is an accent x voice variant (``+m1..+m7``, ``+f1..+f4``) x speaking rate x
pitch; speakers are split into train/dev/test by a fixed hash, so the splits never share
a speaker. The voice check decides which accents of the table are usable.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace

import numpy as np

from moe_asr.synth.accents import ACCENTS, Accent, accent_by_code
from moe_asr.synth.espeak import VARIANTS, EspeakError, EspeakServer

__all__ = [
    "Accent",  # re-exported from moe_asr.synth.accents
    "ACCENTS",
    "accent_by_code",
    "Speaker",
    "RATES",
    "PITCHES",
    "SPLITS",
    "VoiceCheck",
    "MIN_SEC_PER_WORD",
    "MAX_SEC_PER_WORD",
    "MAX_ENGLISH_FRACTION",
    "split_of",
    "speakers",
    "check_voice",
    "check_voices",
]


RATES: tuple[int, ...] = (140, 155, 170, 185, 200)  # words per minute (espeak default 175)
PITCHES: tuple[int, ...] = (30, 40, 50, 60, 70)  # espeak pitch 0..100 (default 50)
SPLITS: tuple[str, ...] = ("train", "dev", "test")
# Share of speakers (and sentences) per split, in tenths: 8 / 1 / 1.
_SPLIT_OF_BUCKET = ("train",) * 8 + ("dev", "test")


def split_of(key: str) -> str:
    """Fixed (seed-independent) split of a speaker or sentence key: 80/10/10 by hash."""
    h = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big")
    return _SPLIT_OF_BUCKET[h % len(_SPLIT_OF_BUCKET)]


@dataclass(frozen=True)
class Speaker:
    accent: str
    variant: str
    rate: int
    pitch: int

    @property
    def key(self) -> str:
        return f"{self.accent}-{self.variant}-r{self.rate}-p{self.pitch}"

    def id(self, split: str) -> str:
        """Speaker id carrying the split name, e.g. ``train-en-gb-scotland-m3-r170-p50``."""
        return f"{split}-{self.key}"


def speakers(accent: str, split: str) -> list[Speaker]:
    """All speakers of ``accent`` that belong to ``split`` (disjoint across splits)."""
    if split not in SPLITS:
        raise EspeakError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    out = []
    for variant in VARIANTS:
        for rate in RATES:
            for pitch in PITCHES:
                spk = Speaker(accent=accent, variant=variant, rate=rate, pitch=pitch)
                if split_of("speaker:" + spk.key) == split:
                    out.append(spk)
    return out


# ----------------------------------------------------------------------------- intelligibility

# The criterion a voice must meet to be used (measured on espeak-ng 1.52, default rate):
# (1) seconds of speech per word, from first to last sample above 2% of the peak, over the
#     probe sentences. Readable voices measured 0.24-0.46 s/word; the Japanese voice spells
#     Latin words letter by letter ("t-h-e") and measured 1.09 s/word (so do ba, cv, ky,
#     kok, my, nog, ti: 1.09; shn 0.92, hyw 1.02); chr, mi, mto, quc read 0.59-0.64 and hak
#     0.52 s/word (syllable by syllable).
MIN_SEC_PER_WORD = 0.15
MAX_SEC_PER_WORD = 0.50
# (2) for L2 accents: the share of phonemes that the voice hands over to its English rules
#     (espeak marks such language switches as "(en)"). Hindi and Russian read every Latin
#     word with the English rules (share 1.0): an English voice, not a foreign accent; so do
#     most voices of languages not written in Latin script (ar, el, fa, ko, th, uk, ...).
#     French (0.64) and Vietnamese (0.74) switch for common words only and keep an accent;
#     es, pt-br, it, de, nl, pl measured 0.00-0.15.
MAX_ENGLISH_FRACTION = 0.8
# (3) distinctness: see ``check_voices``. On espeak-ng 1.52, 70 of the 124 candidates in
#     ``ACCENTS`` pass all three (tests/synth/test_synth_voices.py).

_PROBES = (
    "the birch canoe slid on the smooth planks",
    "glue the sheet to the dark blue background",
    "four hours of steady work faced us",
    "rice is often served in round bowls",
)
_SWITCH = re.compile(r"\(([a-z][a-z0-9-]*)\)")


@dataclass(frozen=True)
class VoiceCheck:
    accent: str
    voice: str  # espeak voice name used for the accent
    sec_per_word: float
    english_fraction: float  # L2 only; 1.0 for native voices by definition
    ok: bool
    reason: str  # empty when ok
    family: str = ""
    probe_sha1: str = ""  # of the probe audio: equal digests = the same voice in effect

    def __str__(self) -> str:
        state = "ok" if self.ok else f"rejected: {self.reason}"
        return (
            f"{self.accent} [{self.family}] (voice {self.voice}): {self.sec_per_word:.3f} "
            f"s/word, English-rule share {self.english_fraction:.2f}: {state}"
        )


def _english_fraction(phonemes: str, base: str) -> float:
    """Share of phoneme characters spoken while the voice had switched to English."""
    parts = _SWITCH.split(phonemes)
    lang = base
    counts = {"en": 0, "other": 0}
    for i, part in enumerate(parts):
        if i % 2 == 1:
            lang = part
            continue
        n = len(re.sub(r"[\s_|]", "", part))
        counts["en" if lang.startswith("en") else "other"] += n
    total = counts["en"] + counts["other"]
    return counts["en"] / total if total else 1.0


def _speech_seconds(pcm: np.ndarray, sample_rate: int) -> float:
    a = np.abs(pcm.astype(np.float32))
    if a.size == 0 or a.max() <= 0:
        return 0.0
    idx = np.flatnonzero(a > 0.02 * a.max())
    return float(idx[-1] - idx[0] + 1) / sample_rate


def check_voice(server: EspeakServer, code: str) -> VoiceCheck:
    """Measure the intelligibility criterion for one accent (raises EspeakError if no voice)."""
    accent = accent_by_code(code)
    voice = server.resolve(code)
    words = sum(len(p.split()) for p in _PROBES)
    pcms = [server.synth(p, voice) for p in _PROBES]
    spw = sum(_speech_seconds(pcm, server.sample_rate) for pcm in pcms) / words
    digest = hashlib.sha1(b"".join(pcm.tobytes() for pcm in pcms)).hexdigest()
    if accent.kind == "native":
        eng = 1.0
    else:
        base = voice.lower()
        eng = float(np.mean([_english_fraction(server.phonemes(p, voice), base) for p in _PROBES]))
    reasons = []
    if not MIN_SEC_PER_WORD <= spw <= MAX_SEC_PER_WORD:
        reasons.append(
            f"{spw:.2f} s of speech per word is outside [{MIN_SEC_PER_WORD}, "
            f"{MAX_SEC_PER_WORD}] (letter spelling or garbled reading)"
        )
    if accent.kind == "l2" and eng > MAX_ENGLISH_FRACTION:
        reasons.append(
            f"reads {eng:.0%} of the English phonemes with espeak's English rules "
            f"(> {MAX_ENGLISH_FRACTION:.0%}): not a foreign accent"
        )
    return VoiceCheck(
        accent=code,
        voice=voice,
        sec_per_word=spw,
        english_fraction=eng,
        ok=not reasons,
        reason="; ".join(reasons),
        family=accent.family,
        probe_sha1=digest,
    )


def check_voices(server: EspeakServer, codes: list[str] | tuple[str, ...]) -> list[VoiceCheck]:
    """``check_voice`` for each code, plus (3): a voice whose probe audio is identical to
    that of an earlier accepted code is rejected, since two labels for one voice cannot be
    told apart (espeak-ng 1.52: fr-be and fr-ch sound as fr, bs as hr)."""
    seen: dict[str, str] = {}  # probe digest -> first accepted accent
    out = []
    for code in codes:
        c = check_voice(server, code)
        if c.ok and c.probe_sha1 in seen:
            why = (
                f"same audio as {seen[c.probe_sha1]} on the probe sentences: not a distinct accent"
            )
            c = replace(c, ok=False, reason=why)
        elif c.ok:
            seen[c.probe_sha1] = code
        out.append(c)
    return out
