"""The Edinburgh International Accents of English Corpus (EdAcc v1.0) -> Kaldi data dirs.

Layout (https://groups.inf.ed.ac.uk/edacc, https://doi.org/10.7488/ds/3832, its README)::

    CORPUS/[edacc_v1.0/]data/EDACC-C06.wav                 one recording per conversation
    CORPUS/[edacc_v1.0/]{dev,test}/{segments,text,utt2spk,conv.list,stm}   Kaldi-style
    CORPUS/[edacc_v1.0/]linguistic_background.csv          one row per PARTICIPANT_ID

EdAcc is released as dev and test only (about 40 h of dyadic video calls). Here the
official test set is ``test``; the official dev set is divided by conversation into
``train`` (for adaptation/fine-tuning) and ``dev``. Accent = the self-described accent
(column "How would you describe your accent in English?") mapped to groups by
``accent_group``; gender from "What is your gender?". Non-speech tags (``<laugh>``,
``<overlap>``...) are removed from transcripts; a segment left without words is skipped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from pathlib import Path

from moe_asr.corpora.common import (
    UNK,
    CorpusError,
    PrepResult,
    PrepWarnings,
    Utterance,
    assign_speakers,
    normalize_gender,
    normalize_text,
    read_metadata_text,
    write_splits,
)

__all__ = ["accent_group", "read_linguistic_background", "prepare_edacc"]

# ordered (substring, group) rules for the free-text accent answers; first match wins
_RULES: tuple[tuple[str, str], ...] = (
    ("south african", "south_african"),
    ("scottish", "scottish"),
    ("glaswegian", "scottish"),
    ("irish", "irish"),
    ("dublin", "irish"),
    ("jamaica", "jamaican"),
    ("nigeria", "nigerian"),
    ("kenya", "kenyan"),
    ("ghana", "ghanaian"),
    ("afri", "african"),
    ("spanish american", "latin_american"),
    ("south american", "latin_american"),
    ("latin", "latin_american"),
    ("latín", "latin_american"),
    ("mexic", "latin_american"),
    ("brazil", "latin_american"),
    ("indian", "indian"),
    ("pakistan", "pakistani"),
    ("vietnam", "vietnamese"),
    ("chinese", "chinese"),
    ("japanese", "japanese"),
    ("indonesia", "indonesian"),
    ("italian", "italian"),
    ("romanian", "romanian"),
    ("bulgarian", "bulgarian"),
    ("lithuanian", "lithuanian"),
    ("east-european", "eastern_european"),
    ("eastern european", "eastern_european"),
    ("german", "german"),
    ("dutch", "dutch"),
    ("french", "french"),
    ("catalan", "catalan"),
    ("spanish", "spanish"),
    ("egypt", "egyptian"),
    ("israel", "israeli"),
    ("american", "american"),
    ("united states", "american"),
    ("midwest", "american"),
    ("british", "english"),
    ("london", "english"),
    ("english", "english"),
    ("neutral", "english"),
)
_COL_ID = "PARTICIPANT_ID"


def accent_group(value: str) -> str:
    """Group of a self-described accent: ``""``/``NA`` -> ``unk``; rules on the first
    comma-separated part, then on the whole answer; an unmatched one-word answer -> its
    lower-case form (``Portuguese`` -> ``portuguese``); anything else -> ``other``."""
    text = value.strip().lower()
    if text in ("", "na", "n/a", "nan", "none"):
        return UNK
    for part in (text.split(",")[0], text):
        for key, group in _RULES:
            if key in part:
                return group
    words = re.findall(r"[a-z]+", text)
    return words[0] if len(words) == 1 else "other"


def _column(header: list[str], *keys: str) -> str | None:
    for col in header:
        if all(k in col.lower() for k in keys):
            return col
    return None


def read_linguistic_background(
    path: Path, warn: PrepWarnings
) -> dict[str, tuple[str | None, str | None]]:
    """participant -> (accent group or None, gender or None) from linguistic_background.csv."""
    reader = csv.DictReader(io.StringIO(read_metadata_text(path, warn)))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    if _COL_ID not in header:
        raise CorpusError(f"{path}:1: no {_COL_ID} column (header: {', '.join(header)})")
    acc_col = _column(header, "describe", "accent") or _column(header, "accent")
    gen_col = _column(header, "gender")
    if acc_col is None:
        warn.add("no accent column (accent unk for every speaker)", str(path))
    out: dict[str, tuple[str | None, str | None]] = {}
    for row in reader:
        spk = (row.get(_COL_ID) or "").strip()
        if not spk:
            warn.add("row without PARTICIPANT_ID (skipped)", f"{path}:{reader.line_num}")
            continue
        accent = accent_group(row.get(acc_col) or "") if acc_col else None
        if accent == UNK:
            warn.add(
                "speaker without an accent answer (accent unk)", f"{path}:{reader.line_num}: {spk}"
            )
        gender = normalize_gender(row.get(gen_col)) if gen_col else None
        out[spk] = (accent, gender)
    return out


def _read_kaldi(path: Path, warn: PrepWarnings) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, line in enumerate(read_metadata_text(path, warn).splitlines(), start=1):
        parts = line.split(maxsplit=1)
        if parts:
            if parts[0] in out:
                warn.add("duplicate id (first kept)", f"{path}:{i}: {parts[0]}")
                continue
            out[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return out


def _root(corpus_dir: Path) -> Path:
    for cand in (corpus_dir, corpus_dir / "edacc_v1.0"):
        if (cand / "data").is_dir() and (cand / "test").is_dir():
            return cand
    raise CorpusError(
        f"{corpus_dir}: expected EdAcc's data/, dev/ and test/ (directly or in edacc_v1.0/)"
    )


def _read_split(root: Path, split: str, meta: dict, warn: PrepWarnings) -> list[Utterance]:
    sdir = root / split
    seg_path = sdir / "segments" if (sdir / "segments").is_file() else sdir / "segment"
    for p in (seg_path, sdir / "text", sdir / "utt2spk"):
        if not p.is_file():
            raise CorpusError(f"{p}: missing (EdAcc {split}/ needs segments, text, utt2spk)")
    segments = _read_kaldi(seg_path, warn)
    text = _read_kaldi(sdir / "text", warn)
    utt2spk = _read_kaldi(sdir / "utt2spk", warn)
    missing_meta: set[str] = set()
    utts = []
    for utt in sorted(segments):
        where = f"{seg_path}: {utt}"
        parts = segments[utt].split()
        try:
            rec, start, end = parts[0], float(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            warn.add("malformed segment (skipped)", f"{where}: {segments[utt]!r}")
            continue
        if end <= start:
            warn.add("segment end not after start (skipped)", where)
            continue
        audio = root / "data" / f"{rec}.wav"
        if not audio.is_file():
            warn.add("segment of a missing recording (skipped)", f"{where}: {audio}")
            continue
        if utt not in text or utt not in utt2spk:
            warn.add("segment without text or speaker (skipped)", where)
            continue
        words = normalize_text(re.sub(r"<[^>]*>", " ", text[utt]))
        if not words:
            continue  # non-speech-only turns are common; not worth a warning each
        spk = utt2spk[utt]
        if spk not in meta and spk not in missing_meta:
            missing_meta.add(spk)
            warn.add("speaker not in linguistic_background.csv (accent unk)", spk)
        accent, gender = meta.get(spk, (None, None))
        utts.append(Utterance(utt, spk, audio, words, accent, gender, segment=(rec, start, end)))
    for utt in sorted(set(text) - set(segments)):
        warn.add("transcript without a segment (skipped)", f"{sdir / 'text'}: {utt}")
    return utts


def _conversation(speaker: str) -> str:
    return re.sub(r"_P\d+$", "", speaker.rsplit("-", 1)[0])


def prepare_edacc(
    corpus_dir: str | Path,
    out_dir: str | Path,
    *,
    dev_fraction: float = 0.2,
    seed: int = 0,
    dev_speakers: tuple[str, ...] = (),
    test_speakers: tuple[str, ...] = (),
    overwrite: bool = False,
) -> PrepResult:
    """Write ``out_dir/{train,dev,test}`` with ``segments``; ids are EdAcc's own.

    ``dev_speakers``/``test_speakers`` (EdAcc speaker ids) move those speakers to dev /
    test; with one official dev conversation dev stays empty unless chosen so (warned)."""
    if not 0.0 < dev_fraction < 1.0:
        raise CorpusError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    root = _root(Path(corpus_dir).resolve())
    warn = PrepWarnings("edacc")
    bg = root / "linguistic_background.csv"
    meta = read_linguistic_background(bg, warn) if bg.is_file() else {}
    if not bg.is_file():
        warn.add("linguistic_background.csv missing (accent/gender unk)", str(bg))
    test = _read_split(root, "test", meta, warn)
    official_dev = _read_split(root, "dev", meta, warn) if (root / "dev").is_dir() else []
    test_spk = {u.speaker for u in test}
    clash = sorted({u.speaker for u in official_dev} & test_spk)
    for spk in clash:
        warn.add("speaker in both official dev and test (kept only in test)", spk)
    official_dev = [u for u in official_dev if u.speaker not in test_spk]
    convs = sorted(
        {_conversation(u.speaker) for u in official_dev},
        key=lambda c: hashlib.sha1(f"{seed}:{c}".encode()).hexdigest(),
    )
    n_dev = min(len(convs) - 1, max(1, math.ceil(dev_fraction * len(convs)))) if convs else 0
    dev_convs = set(convs[:n_dev])
    splits = {
        "train": [u for u in official_dev if _conversation(u.speaker) not in dev_convs],
        "dev": [u for u in official_dev if _conversation(u.speaker) in dev_convs],
        "test": test,
    }
    if not convs:
        warn.explain_empty("dev", f"no official dev set ({root / 'dev'}) with usable segments")
        warn.explain_empty("train", "train comes from the official dev set, which is empty")
    elif len(convs) == 1:
        warn.explain_empty(
            "dev",
            f"the official dev set has one conversation ({convs[0]}), kept whole for train; "
            "choose dev speakers with --dev-speakers",
        )
    splits = assign_speakers(splits, dev_speakers=dev_speakers, test_speakers=test_speakers)
    return write_splits("edacc", splits, out_dir, warn, overwrite=overwrite)
