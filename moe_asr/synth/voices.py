"""Accents, speakers and the intelligibility check of the synthetic corpus.

An accent is an espeak-ng voice reading English: native varieties use the English
voices; second-language (L2) accents use another language's voice, whose letter-to-sound
rules and phonology colour the English words. A speaker is an accent x voice variant
(``+m1..+m7``, ``+f1..+f4``) x speaking rate x pitch; speakers are split into
train/dev/test by a fixed hash, so the splits never share a speaker.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from moe_asr.synth.espeak import VARIANTS, EspeakError, EspeakServer

__all__ = [
    "Accent",
    "ACCENTS",
    "Speaker",
    "RATES",
    "PITCHES",
    "SPLITS",
    "VoiceCheck",
    "MIN_SEC_PER_WORD",
    "MAX_SEC_PER_WORD",
    "MAX_ENGLISH_FRACTION",
    "accent_by_code",
    "split_of",
    "speakers",
    "check_voice",
]


@dataclass(frozen=True)
class Accent:
    code: str  # the label written to utt2accent, and the espeak language code
    kind: str  # "native" | "l2"
    description: str


ACCENTS: tuple[Accent, ...] = (
    Accent(code="en-us", kind="native", description="General American"),
    Accent(code="en-gb", kind="native", description="British English"),
    Accent(code="en-gb-scotland", kind="native", description="Scottish English"),
    Accent(code="en-gb-x-rp", kind="native", description="Received Pronunciation"),
    Accent(code="en-gb-x-gbclan", kind="native", description="Lancastrian English"),
    Accent(code="en-gb-x-gbcwmd", kind="native", description="West Midlands English"),
    Accent(code="en-029", kind="native", description="Caribbean English"),
    Accent(code="en-us-nyc", kind="native", description="New York City English"),
    Accent(code="es", kind="l2", description="Spanish voice reading English"),
    Accent(code="pt-br", kind="l2", description="Brazilian Portuguese voice reading English"),
    Accent(code="it", kind="l2", description="Italian voice reading English"),
    Accent(code="fr", kind="l2", description="French voice reading English"),
    Accent(code="de", kind="l2", description="German voice reading English"),
    Accent(code="nl", kind="l2", description="Dutch voice reading English"),
    Accent(code="pl", kind="l2", description="Polish voice reading English"),
    Accent(code="hi", kind="l2", description="Hindi voice reading English"),
    Accent(code="ru", kind="l2", description="Russian voice reading English"),
    Accent(code="vi", kind="l2", description="Vietnamese voice reading English"),
    Accent(code="ja", kind="l2", description="Japanese voice reading English"),
)

RATES: tuple[int, ...] = (140, 155, 170, 185, 200)  # words per minute (espeak default 175)
PITCHES: tuple[int, ...] = (30, 40, 50, 60, 70)  # espeak pitch 0..100 (default 50)
SPLITS: tuple[str, ...] = ("train", "dev", "test")
# Share of speakers (and sentences) per split, in tenths: 8 / 1 / 1.
_SPLIT_OF_BUCKET = ("train",) * 8 + ("dev", "test")


def accent_by_code(code: str) -> Accent:
    for a in ACCENTS:
        if a.code == code:
            return a
    raise EspeakError(
        f"unknown accent {code!r}; known accents: {', '.join(a.code for a in ACCENTS)}"
    )


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
#     probe sentences. Readable voices measured 0.24-0.38 s/word; the Japanese voice spells
#     Latin words letter by letter ("t-h-e") and measured 1.09 s/word.
MIN_SEC_PER_WORD = 0.15
MAX_SEC_PER_WORD = 0.50
# (2) for L2 accents: the share of phonemes that the voice hands over to its English rules
#     (espeak marks such language switches as "(en)"). Hindi and Russian read every Latin
#     word with the English rules (share 1.0): an English voice, not a foreign accent.
#     French (0.64) and Vietnamese (0.74) switch for common words only and keep an accent;
#     es, pt-br, it, de, nl, pl measured 0.00-0.15.
MAX_ENGLISH_FRACTION = 0.8

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

    def __str__(self) -> str:
        state = "ok" if self.ok else f"rejected: {self.reason}"
        return (
            f"{self.accent} (voice {self.voice}): {self.sec_per_word:.3f} s/word, "
            f"English-rule share {self.english_fraction:.2f}: {state}"
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
    seconds = sum(_speech_seconds(server.synth(p, voice), server.sample_rate) for p in _PROBES)
    spw = seconds / words
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
    )
