"""Mozilla Common Voice English -> Kaldi data dirs with accent groups.

Layout (https://commonvoice.mozilla.org/en/datasets; one release, one language)::

    CORPUS/[en/]clips/common_voice_en_123.mp3
    CORPUS/[en/]{train,dev,test}.tsv

TSV columns: ``client_id path sentence up_votes down_votes age gender accent(s) locale
segment`` (newer releases add ``variant sentence_id sentence_domain`` and rename ``accent``
to ``accents``, a free-text field). The official splits are used as they are (they are
speaker-disjoint by construction; a client found in two splits is kept only in the later
of train < dev < test, with a warning). Accents are mapped to ``ACCENT_GROUPS``.
"""

from __future__ import annotations

import csv
import io
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
    safe_id,
    write_splits,
)

__all__ = ["ACCENT_GROUPS", "accent_group", "prepare_commonvoice"]

# group -> (old `accent` codes, substrings of the newer free-text `accents` field)
ACCENT_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "us": (("us",), ("united states", "american")),
    "england": (("england",), ("england", "british", "english english")),
    "scotland": (("scotland",), ("scottish", "scotland")),
    "ireland": (("ireland",), ("irish", "ireland")),
    "wales": (("wales",), ("welsh", "wales")),
    "canada": (("canada",), ("canadian", "canada")),
    "australia": (("australia",), ("australian", "australia")),
    "newzealand": (("newzealand",), ("new zealand",)),
    "indian": (("indian",), ("india", "south asia", "pakistan", "sri lanka", "bangladesh")),
    "african": (("african",), ("africa", "nigeria", "kenya", "ghana", "zimbabwe")),
    "philippines": (("philippines",), ("filipino", "philippines")),
    "hongkong": (("hongkong",), ("hong kong",)),
    "malaysia": (("malaysia",), ("malaysia",)),
    "singapore": (("singapore",), ("singapore",)),
    "caribbean": (("bermuda",), ("west indies", "bermuda", "jamaica", "caribbean")),
    "southatlantic": (("southatlandtic", "southatlantic"), ("south atlantic", "falkland")),
}


def accent_group(value: str) -> str:
    """Map an ``accent`` code or free-text ``accents`` value to a group name.

    Empty -> ``unk``. Several accents (``|`` or ``,`` separated) -> the first one that maps
    to a group. An old code ``other`` or a text matching no group -> ``other``.
    """
    value = value.strip().lower()
    if not value:
        return UNK
    parts = [p.strip() for p in value.replace("|", ",").split(",") if p.strip()]
    for part in parts:
        for group, (codes, keys) in ACCENT_GROUPS.items():
            if part in codes or any(k in part for k in keys):
                return group
    return "other"


def _find_root(corpus_dir: Path) -> Path:
    for cand in (corpus_dir, corpus_dir / "en"):
        if (cand / "clips").is_dir() and any(
            (cand / f"{s}.tsv").is_file() for s in ("train", "dev", "test")
        ):
            return cand
    raise CorpusError(
        f"{corpus_dir}: no clips/ directory with train.tsv/dev.tsv/test.tsv (looked in it and "
        "in en/); point at the language directory of a Common Voice release"
    )


def _read_tsv(path: Path, warn: PrepWarnings) -> tuple[list[str], list[dict[str, str]]]:
    text = read_metadata_text(path, warn)
    reader = csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = reader.fieldnames or []
    for col in ("client_id", "path", "sentence"):
        if col not in header:
            raise CorpusError(f"{path}:1: no {col!r} column (header: {' '.join(header)})")
    rows = []
    for row in reader:
        if None in row:  # more fields than the header
            warn.add("row with extra fields (extra ignored)", f"{path}:{reader.line_num}")
        rows.append(
            {k: (v or "") for k, v in row.items() if k is not None}
            | {"_line": str(reader.line_num)}
        )
    return header, rows


def prepare_commonvoice(
    corpus_dir: str | Path,
    out_dir: str | Path,
    *,
    dev_speakers: tuple[str, ...] = (),
    test_speakers: tuple[str, ...] = (),
    overwrite: bool = False,
) -> PrepResult:
    """Write ``out_dir/{train,dev,test}``; utterance ids are ``<client16>-<clip stem>``.

    Speaker ids are the first 16 hex digits of ``client_id``; ``dev_speakers`` /
    ``test_speakers`` (those ids) move a speaker's clips to that split. A missing ``accent``/
    ``accents`` column gives ``unk`` for the file (warning); a missing clip, an empty
    sentence or a malformed row is skipped with a warning naming file and line.
    """
    root = _find_root(Path(corpus_dir).resolve())
    warn = PrepWarnings("commonvoice")
    clips = root / "clips"
    splits: dict[str, list[Utterance]] = {}
    spk_split: dict[str, str] = {}
    short: dict[str, str] = {}
    seen: set[str] = set()
    for split in ("train", "dev", "test"):
        path = root / f"{split}.tsv"
        splits[split] = []
        if not path.is_file():
            warn.add("split file missing", str(path))
            warn.explain_empty(split, f"{path} is missing")
            continue
        header, rows = _read_tsv(path, warn)
        acc_col = "accents" if "accents" in header else "accent" if "accent" in header else None
        if acc_col is None:
            warn.add("no accent/accents column (accent unk)", str(path))
        for row in rows:
            where = f"{path}:{row['_line']}"
            client, clip = row["client_id"].strip(), row["path"].strip()
            if not client or not clip:
                warn.add("row without client_id or path (skipped)", where)
                continue
            spk = safe_id(client[:16])
            if short.setdefault(spk, client) != client:
                raise CorpusError(f"{where}: two client_ids share the prefix {spk}")
            audio = clips / clip
            if not audio.suffix:
                audio = audio.with_suffix(".mp3")  # early releases list paths without extension
            if not audio.is_file():
                warn.add("clip listed in the tsv is missing (skipped)", f"{where}: {audio}")
                continue
            text = normalize_text(row["sentence"])
            if not text:
                warn.add("empty sentence (skipped)", f"{where}: {clip}")
                continue
            accent = accent_group(row.get(acc_col, "")) if acc_col else UNK
            gender = normalize_gender(row.get("gender"))
            utt = Utterance(f"{spk}-{safe_id(audio.stem)}", spk, audio, text, accent, gender)
            if utt.utt_id in seen:
                warn.add("clip listed twice (second skipped)", f"{where}: {clip}")
                continue
            seen.add(utt.utt_id)
            splits[split].append(utt)
            spk_split[spk] = split  # the later split wins
    for split, utts in splits.items():
        keep = [u for u in utts if spk_split[u.speaker] == split]
        moved = sorted({u.speaker for u in utts} - {u.speaker for u in keep})
        for spk in moved:
            warn.add(
                f"client in {split} and in {spk_split[spk]} (kept only in {spk_split[spk]})", spk
            )
        splits[split] = keep
    splits = assign_speakers(splits, dev_speakers=dev_speakers, test_speakers=test_speakers)
    return write_splits("commonvoice", splits, out_dir, warn, overwrite=overwrite)
