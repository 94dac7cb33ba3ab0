"""AESRC2020 (Interspeech 2020 Accented English Speech Recognition Challenge) -> data dirs.

Layout of the Datatang release (as read by the challenge baseline, github.com/R1ckShi/AESRC2020,
``local/prepare_data.sh``: ``<accent dir>/<speaker>/<utt>.wav`` with the transcript in
``<utt>.txt`` next to it)::

    CORPUS/American English Speech Data/G00473/G00473S1202.wav
    CORPUS/American English Speech Data/G00473/G00473S1202.txt
    CORPUS/American English Speech Data/G00473/G00473S1202.metadata   (optional: SEX, AGE...)

Accent = the top-level directory (``ACCENT_DIRS``: US UK IND CHN JPN KR PT RU in the
training data; Canadian and Spanish appear in the challenge test set). Gender comes from an
optional ``<utt>.metadata`` file (``SEX Male``) where present. The challenge's own
cross-validation speaker lists are not part of the release, so dev/test are held-out
speakers per accent (``split_speakers``).
"""

from __future__ import annotations

import re
from pathlib import Path

from moe_asr.corpora.common import (
    CorpusError,
    PrepResult,
    PrepWarnings,
    Utterance,
    normalize_gender,
    normalize_text,
    read_metadata_text,
    safe_id,
    split_by_accent,
    write_splits,
)

__all__ = ["ACCENT_DIRS", "accent_of_dir", "prepare_aesrc"]

ACCENT_DIRS: dict[str, str] = {
    "american": "us",
    "british": "uk",
    "indian": "ind",
    "india": "ind",
    "chinese": "chn",
    "japanese": "jpn",
    "korean": "kr",
    "portuguese": "pt",
    "russian": "ru",
    "canadian": "ca",
    "spanish": "es",
}


def accent_of_dir(name: str) -> str | None:
    """``"Chinese Speaking English Speech Data"`` -> ``chn``; a short code dir (``US``,
    as renamed by the baseline) -> itself in lower case; None if not an accent dir."""
    low = name.strip().lower()
    first = re.split(r"[\s_-]+", low)[0] if low else ""
    if first in ACCENT_DIRS and "english" in low:
        return ACCENT_DIRS[first]
    if low in set(ACCENT_DIRS.values()):
        return low
    return None


def _read_metadata(path: Path, warn: PrepWarnings) -> dict[str, str]:
    out = {}
    for line in read_metadata_text(path, warn).splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            out[parts[0].upper()] = parts[1].strip()
    return out


def prepare_aesrc(
    corpus_dir: str | Path,
    out_dir: str | Path,
    *,
    dev_per_accent: int = 1,
    test_per_accent: int = 1,
    seed: int = 0,
    dev_speakers: tuple[str, ...] = (),
    test_speakers: tuple[str, ...] = (),
    overwrite: bool = False,
) -> PrepResult:
    """Write ``out_dir/{train,dev,test}``; utterance ids ``<accent>-<utt stem>``, speakers
    ``<accent>-<speaker dir>`` (the accent prefix keeps ids unique across accent dirs).
    ``dev_speakers``/``test_speakers`` take those speaker ids (``us-G00473``)."""
    corpus_dir = Path(corpus_dir).resolve()
    if not corpus_dir.is_dir():
        raise CorpusError(f"{corpus_dir}: AESRC2020 directory does not exist")
    warn = PrepWarnings("aesrc")
    acc_dirs = []
    for d in sorted(p for p in corpus_dir.iterdir() if p.is_dir()):
        accent = accent_of_dir(d.name)
        if accent is None:
            warn.add("directory is not an accent directory (ignored)", str(d))
        else:
            acc_dirs.append((d, accent))
    if not acc_dirs:
        raise CorpusError(
            f"{corpus_dir}: no accent directories such as 'American English Speech Data' or US/"
        )
    utts: list[Utterance] = []
    for d, accent in acc_dirs:
        for spk_dir in sorted(p for p in d.iterdir() if p.is_dir()):
            spk = f"{accent}-{safe_id(spk_dir.name)}"
            wavs = {p.stem: p for p in sorted(spk_dir.glob("*.wav"))}
            txts = {p.stem: p for p in sorted(spk_dir.glob("*.txt"))}
            if not wavs:
                warn.add("speaker directory without audio", str(spk_dir))
            for stem in sorted(set(wavs) - set(txts)):
                warn.add("audio without a transcript (skipped)", str(wavs[stem]))
            for stem in sorted(set(txts) - set(wavs)):
                warn.add("transcript without audio (skipped)", str(txts[stem]))
            for stem in sorted(set(wavs) & set(txts)):
                text = normalize_text(read_metadata_text(txts[stem], warn))
                if not text:
                    warn.add("empty transcript (skipped)", str(txts[stem]))
                    continue
                meta_path = wavs[stem].with_suffix(".metadata")
                meta = _read_metadata(meta_path, warn) if meta_path.is_file() else {}
                gender = normalize_gender(meta["SEX"]) if "SEX" in meta else None
                # stems normally start with the speaker id; otherwise prefix it (unique ids)
                tail = stem if stem.startswith(spk_dir.name) else f"{spk_dir.name}-{stem}"
                utt_id = f"{accent}-{safe_id(tail)}"
                utts.append(Utterance(utt_id, spk, wavs[stem], text, accent, gender))
    splits = split_by_accent(
        utts,
        dev_per_group=dev_per_accent,
        test_per_group=test_per_accent,
        seed=seed,
        dev_speakers=dev_speakers,
        test_speakers=test_speakers,
        warn=warn,
    )
    return write_splits("aesrc", splits, out_dir, warn, overwrite=overwrite)
