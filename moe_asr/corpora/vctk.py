"""CSTR VCTK (110 speakers of English, mostly British Isles accents) -> Kaldi data dirs.

Two layouts are read (https://datashare.ed.ac.uk/handle/10283/3443)::

    0.92:        speaker-info.txt  txt/p225/p225_001.txt
                 wav48_silence_trimmed/p225/p225_001_mic1.flac   (and _mic2)
    VCTK-Corpus: speaker-info.txt  txt/p225/p225_001.txt  wav48/p225/p225_001.wav

``speaker-info.txt`` has the columns ``ID AGE GENDER ACCENTS REGION [COMMENTS]`` separated
by runs of spaces (REGION may hold several words); ids are ``p225`` in 0.92 and ``225`` in
the old file. Accent = ACCENTS in snake case (``NorthernIrish`` -> ``northern_irish``).
Speakers without transcripts (p315) are reported and left out. The split is
speaker-disjoint, stratified by accent (``split_speakers``).
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
    split_by_accent,
    write_splits,
)

__all__ = ["read_speaker_info", "prepare_vctk"]


def _snake(value: str) -> str:
    value = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", value.strip())
    return re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_")


def read_speaker_info(path: Path, warn: PrepWarnings) -> dict[str, tuple[str | None, str | None]]:
    """speaker (``p225``) -> (accent, gender); a row without an accent gets None (warning)."""
    lines = read_metadata_text(path, warn).splitlines()
    if not lines or not lines[0].split()[:4] == ["ID", "AGE", "GENDER", "ACCENTS"]:
        raise CorpusError(
            f"{path}:1: expected the header 'ID AGE GENDER ACCENTS REGION', got "
            f"{lines[0].strip() if lines else 'an empty file'!r}"
        )
    out: dict[str, tuple[str | None, str | None]] = {}
    for i, line in enumerate(lines[1:], start=2):
        cols = line.split()
        if not cols:
            continue
        spk = cols[0] if cols[0][0].isalpha() else f"p{cols[0]}"
        gender = normalize_gender(cols[2]) if len(cols) > 2 else None
        accent = _snake(cols[3]) if len(cols) > 3 else None
        if accent is None:
            warn.add("speaker-info row without an accent (accent unk)", f"{path}:{i}: {spk}")
        if spk in out:
            warn.add("duplicate speaker-info row (first kept)", f"{path}:{i}: {spk}")
            continue
        out[spk] = (accent or None, gender)
    return out


def _audio_files(corpus_dir: Path, mic: str) -> dict[str, Path]:
    new = corpus_dir / "wav48_silence_trimmed"
    if new.is_dir():
        return {p.name[: -len(f"_{mic}.flac")]: p for p in sorted(new.glob(f"*/*_{mic}.flac"))}
    old = corpus_dir / "wav48"
    if old.is_dir():
        return {p.stem: p for p in sorted(old.glob("*/*.wav"))}
    raise CorpusError(
        f"{corpus_dir}: neither wav48_silence_trimmed/ (VCTK 0.92) nor wav48/ (VCTK-Corpus) found"
    )


def prepare_vctk(
    corpus_dir: str | Path,
    out_dir: str | Path,
    *,
    mic: str = "mic1",
    dev_per_accent: int = 1,
    test_per_accent: int = 1,
    seed: int = 0,
    dev_speakers: tuple[str, ...] = (),
    test_speakers: tuple[str, ...] = (),
    overwrite: bool = False,
) -> PrepResult:
    """Write ``out_dir/{train,dev,test}``; utterance ids are the file stems (``p225_001``).

    ``dev_speakers``/``test_speakers`` (``p225``...) go to that split, the other speakers
    are split per accent; a split left empty (accents with few speakers) is warned about.
    """
    corpus_dir = Path(corpus_dir).resolve()
    if mic not in ("mic1", "mic2"):
        raise CorpusError(f"--mic must be mic1 or mic2, got {mic!r}")
    info_path = corpus_dir / "speaker-info.txt"
    if not info_path.is_file():
        raise CorpusError(f"{info_path}: missing; is {corpus_dir} a VCTK corpus directory?")
    if not (corpus_dir / "txt").is_dir():
        raise CorpusError(f"{corpus_dir / 'txt'}: missing; expected txt/<speaker>/<utt>.txt")
    warn = PrepWarnings("vctk")
    meta = read_speaker_info(info_path, warn)
    audio = _audio_files(corpus_dir, mic)
    texts = {p.stem: p for p in sorted((corpus_dir / "txt").glob("*/*.txt"))}
    spk_audio = {u.split("_")[0] for u in audio}
    spk_text = {u.split("_")[0] for u in texts}
    for spk in sorted(set(meta) - spk_audio):
        warn.add("speaker in speaker-info.txt without audio", spk)
    for spk in sorted(spk_audio - spk_text):
        warn.add("speaker without transcripts (left out)", spk)
    for spk in sorted((spk_audio & spk_text) - set(meta)):
        warn.add("speaker not in speaker-info.txt (accent/gender unk)", spk)
    utts: list[Utterance] = []
    for stem in sorted(set(audio) - set(texts)):
        if stem.split("_")[0] in spk_text:
            warn.add("audio without a transcript (skipped)", str(audio[stem]))
    for stem in sorted(set(texts) - set(audio)):
        if stem.split("_")[0] in spk_audio:
            warn.add("transcript without audio (skipped)", str(texts[stem]))
    for stem in sorted(set(audio) & set(texts)):
        spk = stem.split("_")[0]
        text = normalize_text(read_metadata_text(texts[stem], warn))
        if not text:
            warn.add("empty transcript (skipped)", str(texts[stem]))
            continue
        accent, gender = meta.get(spk, (None, None))
        utts.append(Utterance(stem, spk, audio[stem], text, accent=accent, gender=gender))
    splits = split_by_accent(
        utts,
        dev_per_group=dev_per_accent,
        test_per_group=test_per_accent,
        seed=seed,
        dev_speakers=dev_speakers,
        test_speakers=test_speakers,
        warn=warn,
    )
    return write_splits("vctk", splits, out_dir, warn, overwrite=overwrite)
