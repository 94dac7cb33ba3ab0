"""LibriSpeech (read audiobooks, US English, no accent labels) -> Kaldi data dirs.

Layout (https://www.openslr.org/12)::

    CORPUS/SPEAKERS.TXT                                   ';' comments, '|' separated
    CORPUS/<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac
    CORPUS/<subset>/<spk>/<chapter>/<spk>-<chapter>.trans.txt   "<utt-id> WORDS ..."

Subsets: train-clean-100, train-clean-360, train-other-500 -> ``train`` (those present, or
``train_subsets``); dev-clean -> ``dev``; test-clean -> ``test``; dev-other and test-other
-> ``dev_other`` and ``test_other`` when present. The official subsets are
speaker-disjoint. No accent labels: ``utt2accent`` is not written; ``utt2gender`` comes
from SPEAKERS.TXT.
"""

from __future__ import annotations

from pathlib import Path

from moe_asr.corpora.common import (
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

__all__ = ["TRAIN_SUBSETS", "read_speakers_txt", "prepare_librispeech"]

TRAIN_SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500")
_OTHER = {
    "dev-clean": "dev",
    "test-clean": "test",
    "dev-other": "dev_other",
    "test-other": "test_other",
}


def read_speakers_txt(path: Path, warn: PrepWarnings) -> dict[str, str]:
    """speaker -> gender (``f``/``m``) from SPEAKERS.TXT."""
    out = {}
    for i, line in enumerate(read_metadata_text(path, warn).splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        cols = [c.strip() for c in line.split("|")]
        if len(cols) < 2 or not cols[0]:
            warn.add("malformed SPEAKERS.TXT line (skipped)", f"{path}:{i}")
            continue
        out[cols[0]] = normalize_gender(cols[1])
    return out


def _read_subset(subset_dir: Path, genders: dict[str, str], warn: PrepWarnings) -> list[Utterance]:
    utts = []
    flacs = {p.stem: p for p in sorted(subset_dir.glob("*/*/*.flac"))}
    listed: set[str] = set()
    for trans in sorted(subset_dir.glob("*/*/*.trans.txt")):
        for i, line in enumerate(read_metadata_text(trans, warn).splitlines(), start=1):
            parts = line.split(maxsplit=1)
            if not parts:
                continue
            utt = parts[0]
            listed.add(utt)
            if utt not in flacs:
                warn.add("transcript line without audio (skipped)", f"{trans}:{i}: {utt}")
                continue
            text = normalize_text(parts[1]) if len(parts) > 1 else ""
            if not text:
                warn.add("empty transcript (skipped)", f"{trans}:{i}: {utt}")
                continue
            spk = utt.split("-")[0]
            if spk not in genders and genders:
                warn.add("speaker not in SPEAKERS.TXT (gender unk)", f"{spk} ({utt})")
                genders[spk] = "unk"
            utts.append(Utterance(utt, spk, flacs[utt], text, gender=genders.get(spk)))
    for utt in sorted(set(flacs) - listed):
        warn.add("audio without a transcript (skipped)", str(flacs[utt]))
    return utts


def prepare_librispeech(
    corpus_dir: str | Path,
    out_dir: str | Path,
    *,
    train_subsets: tuple[str, ...] | None = None,
    dev_speakers: tuple[str, ...] = (),
    test_speakers: tuple[str, ...] = (),
    overwrite: bool = False,
) -> PrepResult:
    """Write ``out_dir/{train,dev,test}`` (+ ``dev_other``/``test_other`` if present).

    A corpus dir without any subset dir is an error naming the ones looked for; a missing
    subset leaves its split empty (warned). ``dev_speakers``/``test_speakers`` (speaker
    numbers, ``1272``) move those speakers' utterances to dev / test."""
    corpus_dir = Path(corpus_dir).resolve()
    if (corpus_dir / "LibriSpeech").is_dir():
        corpus_dir = corpus_dir / "LibriSpeech"
    if not corpus_dir.is_dir():
        raise CorpusError(f"{corpus_dir}: LibriSpeech directory does not exist")
    warn = PrepWarnings("librispeech")
    spk_file = corpus_dir / "SPEAKERS.TXT"
    genders = read_speakers_txt(spk_file, warn) if spk_file.is_file() else {}
    if not spk_file.is_file():
        warn.add("SPEAKERS.TXT missing (no utt2gender)", str(spk_file))
    known = (*TRAIN_SUBSETS, *_OTHER)
    if not any((corpus_dir / s).is_dir() for s in known):
        raise CorpusError(
            f"{corpus_dir}: no LibriSpeech subset directory found (looked for {', '.join(known)}, "
            "directly or in LibriSpeech/); point at the directory the archives unpack into"
        )
    wanted = train_subsets or tuple(s for s in TRAIN_SUBSETS if (corpus_dir / s).is_dir())
    if not wanted:
        warn.explain_empty("train", f"no training subset ({', '.join(TRAIN_SUBSETS)}) found")
    for s in wanted:
        if not (corpus_dir / s).is_dir():
            raise CorpusError(f"{corpus_dir / s}: training subset not found")
    splits: dict[str, list[Utterance]] = {"train": []}
    for s in wanted:
        splits["train"] += _read_subset(corpus_dir / s, genders, warn)
    for subset, name in _OTHER.items():
        if (corpus_dir / subset).is_dir():
            splits[name] = _read_subset(corpus_dir / subset, genders, warn)
        else:
            splits[name] = []
            warn.explain_empty(name, f"{corpus_dir / subset}/ not found")
    splits = assign_speakers(splits, dev_speakers=dev_speakers, test_speakers=test_speakers)
    return write_splits("librispeech", splits, out_dir, warn, overwrite=overwrite)
