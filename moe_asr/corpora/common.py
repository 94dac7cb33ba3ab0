"""Shared logic of corpus preparation: reading metadata, warnings, text, splits, writing.

Every ``prepare_<corpus>`` function turns an official corpus layout into Kaldi data dirs
(``OUT/<split>/{wav.scp,text,utt2spk,spk2utt,utt2accent,[utt2gender],[segments]}``).
Problems with single items (a clip without a transcript, a speaker missing from the
metadata, a BOM or CRLF line ends in a metadata file) are warnings: logged on
``moe_asr.corpora.<corpus>`` and returned in ``PrepResult.warnings`` so callers and tests
can read them; the item is skipped or given the label ``unk``. A partial or small corpus
prepares what it can: a split that comes out empty is not written, with a warning naming
it and why (``PrepWarnings.explain_empty``). ``CorpusError`` is raised when the layout is
not recognised or no split has any utterance. Every preparer takes ``dev_speakers`` and
``test_speakers`` to choose those splits' speakers by id.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from moe_asr.data.datadir import DataDir, Segment, write_datadir
from moe_asr.errors import UserError
from moe_asr.files import atomic_write_text

__all__ = [
    "CorpusError",
    "Utterance",
    "PrepWarnings",
    "PrepResult",
    "UNK",
    "read_metadata_text",
    "normalize_text",
    "normalize_gender",
    "safe_id",
    "split_speakers",
    "split_by_accent",
    "assign_speakers",
    "check_speaker_disjoint",
    "write_splits",
]

UNK = "unk"
_MARKER = ".corpus"  # written into every split dir we create; lets a rerun replace it
_MANAGED = ("wav.scp", "text", "utt2spk", "spk2utt", "segments", "utt2accent", "utt2gender")


class CorpusError(UserError):
    """The corpus layout is not what the preparer expects, or nothing usable remains."""


@dataclass
class Utterance:
    """One prepared utterance; ``audio`` is absolute; ``segment`` = (recording, start, end) s."""

    utt_id: str
    speaker: str
    audio: Path
    text: str
    accent: str | None = None
    gender: str | None = None
    segment: tuple[str, float, float] | None = None


class PrepWarnings:
    """Collects per-item warnings; each is logged once, grouped by kind when there are many."""

    def __init__(self, corpus: str):
        self.logger = logging.getLogger(f"moe_asr.corpora.{corpus}")
        self.messages: list[str] = []
        self._by_kind: dict[str, list[str]] = defaultdict(list)
        self.empty: dict[str, str] = {}  # split -> why it has no utterance

    def explain_empty(self, split: str, why: str) -> None:
        """Say why ``split`` came out empty (used by ``write_splits``'s warning)."""
        self.empty.setdefault(split, why)

    def add(self, kind: str, item: str) -> None:
        """Record ``item`` (a file, line or utterance and what is wrong) under ``kind``."""
        self.messages.append(f"{kind}: {item}")
        self._by_kind[kind].append(item)

    def flush(self, max_items: int = 20) -> None:
        """Log the collected warnings (at most ``max_items`` named per kind) and reset groups."""
        for kind, items in self._by_kind.items():
            shown = "; ".join(items[:max_items])
            more = f" (+{len(items) - max_items} more)" if len(items) > max_items else ""
            self.logger.warning("%s (%d): %s%s", kind, len(items), shown, more)
        self._by_kind.clear()


@dataclass
class PrepResult:
    """What a preparer wrote: split name -> data dir, utterances per split, warnings."""

    corpus: str
    splits: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def read_metadata_text(path: Path, warnings: PrepWarnings, *, encoding: str = "utf-8") -> str:
    """Text of a metadata file; a BOM, CRLF line ends or bad bytes are warnings, not errors."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CorpusError(f"{path}: cannot read: {e.strerror}") from e
    if raw.startswith(b"\xef\xbb\xbf"):
        warnings.add("UTF-8 byte-order mark ignored", str(path))
        raw = raw[3:]
    if b"\r\n" in raw:
        warnings.add("CRLF line ends tolerated", str(path))
        raw = raw.replace(b"\r\n", b"\n")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        warnings.add("not valid UTF-8, decoded as Latin-1", f"{path} (byte {e.start})")
        return raw.decode("latin-1")


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


def normalize_text(text: str) -> str:
    """The transcript normalisation shared by all recipes (documented in each README).

    Unicode NFKC, lower case, curly apostrophes -> ``'``; every character that is not a
    letter, a digit or an in-word apostrophe becomes a space (so ``"well-known"`` ->
    ``well known``, ``"'quoted'"`` -> ``quoted``, ``don't`` stays); spaces collapsed.
    Numbers are kept as digits (not spelled out).
    """
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    chars = [c if (c.isalnum() or c == "'") else " " for c in text]
    words = []
    for w in "".join(chars).split():
        w = w.strip("'")
        if w:
            words.append(w)
    return " ".join(words)


def normalize_gender(value: str | None) -> str:
    """``f`` / ``m`` / ``other`` / ``unk`` from the many spellings corpora use."""
    v = (value or "").strip().lower()
    if not v or v in {"na", "n/a", "nan", "none", "unknown", "do_not_wish_to_say"}:
        return UNK
    if v in {"f", "female", "woman"} or v.startswith("female"):
        return "f"
    if v in {"m", "male", "man"} or v.startswith("male"):
        return "m"
    return "other"


def safe_id(value: str) -> str:
    """An id usable in Kaldi tables: whitespace and path separators become ``_``."""
    return re.sub(r"[\s/\\]+", "_", value.strip())


def _rank(speaker: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{speaker}".encode()).hexdigest()


def split_speakers(
    spk2group: dict[str, str], *, dev_per_group: int = 1, test_per_group: int = 1, seed: int = 0
) -> dict[str, str]:
    """Speaker -> ``train``/``dev``/``test``, speaker-disjoint and stratified by group.

    Within each group (accent) the speakers are ordered by a seeded hash of their id; the
    first ``test_per_group`` go to test, the next ``dev_per_group`` to dev, the rest to
    train, but at least one speaker of each group stays in train: a group with one speaker
    is train only, with two it gives one to test, and so on. Deterministic for a seed.
    """
    by_group: dict[str, list[str]] = defaultdict(list)
    for spk, group in spk2group.items():
        by_group[group].append(spk)
    out: dict[str, str] = {}
    for group in sorted(by_group):
        spks = sorted(by_group[group], key=lambda s: _rank(s, seed))
        n_test = min(test_per_group, max(0, len(spks) - 1))
        n_dev = min(dev_per_group, max(0, len(spks) - 1 - n_test))
        for i, spk in enumerate(spks):
            out[spk] = "test" if i < n_test else "dev" if i < n_test + n_dev else "train"
    return out


def _check_speaker_lists(
    speakers: set[str], dev_speakers: tuple[str, ...], test_speakers: tuple[str, ...]
) -> None:
    both = sorted(set(dev_speakers) & set(test_speakers))
    if both:
        raise CorpusError(
            f"speakers {', '.join(both)} are in both --dev-speakers and --test-speakers"
        )
    unknown = sorted((set(dev_speakers) | set(test_speakers)) - speakers)
    if unknown:
        have = ", ".join(sorted(speakers)[:12]) + (" ..." if len(speakers) > 12 else "")
        raise CorpusError(
            f"speakers {', '.join(unknown)} of --dev-speakers/--test-speakers are not in the "
            f"corpus (speakers found: {have})"
        )


def split_by_accent(
    utts: list[Utterance],
    *,
    dev_per_group: int = 1,
    test_per_group: int = 1,
    seed: int = 0,
    dev_speakers: tuple[str, ...] = (),
    test_speakers: tuple[str, ...] = (),
    warn: PrepWarnings | None = None,
) -> dict[str, list[Utterance]]:
    """``split_speakers`` stratified by accent (no accent counts as ``unk``), applied to utts.

    Speakers in ``dev_speakers``/``test_speakers`` go to that split; the others are split
    per accent as ``split_speakers`` does (``*_per_group=0`` leaves a split to its list).
    An empty dev or test split is explained in ``warn``.
    """
    _check_speaker_lists({u.speaker for u in utts}, dev_speakers, test_speakers)
    fixed = {**{s: "dev" for s in dev_speakers}, **{s: "test" for s in test_speakers}}
    spk2acc = {u.speaker: u.accent or UNK for u in utts}
    assign = split_speakers(
        {s: a for s, a in spk2acc.items() if s not in fixed},
        dev_per_group=dev_per_group,
        test_per_group=test_per_group,
        seed=seed,
    )
    assign.update(fixed)
    splits: dict[str, list[Utterance]] = {"train": [], "dev": [], "test": []}
    for u in utts:
        splits[assign[u.speaker]].append(u)
    if warn is not None and utts:
        per_acc: dict[str, int] = defaultdict(int)
        for s, a in spk2acc.items():
            per_acc[a] += s not in fixed
        most = max(per_acc.values(), default=0)
        for name, per, need in (
            ("test", test_per_group, 2),
            ("dev", dev_per_group, 2 + test_per_group),
        ):
            if splits[name]:
                continue
            why = (
                f"--{name}-per-accent is 0 and no --{name}-speakers were given"
                if per <= 0
                else f"no accent has more than {most} speaker(s); one per accent stays in train"
                + (f" and test takes {test_per_group} first" if name == "dev" else "")
                + f", so {name} needs an accent with >= {need} speakers"
            )
            warn.explain_empty(name, why + f"; choose its speakers with --{name}-speakers")
    return splits


def assign_speakers(
    splits: dict[str, list[Utterance]],
    *,
    dev_speakers: tuple[str, ...] = (),
    test_speakers: tuple[str, ...] = (),
) -> dict[str, list[Utterance]]:
    """Move every utterance of the listed speakers to dev / test (corpora whose split is
    fixed by the release: Common Voice, EdAcc, LibriSpeech); the rest stay where they are."""
    if not dev_speakers and not test_speakers:
        return splits
    _check_speaker_lists(
        {u.speaker for utts in splits.values() for u in utts}, dev_speakers, test_speakers
    )
    target = {**{s: "dev" for s in dev_speakers}, **{s: "test" for s in test_speakers}}
    out: dict[str, list[Utterance]] = {name: [] for name in splits}
    out.setdefault("dev", [])
    out.setdefault("test", [])
    for name, utts in splits.items():
        for u in utts:
            out[target.get(u.speaker, name)].append(u)
    return out


def check_speaker_disjoint(splits: dict[str, list[Utterance]]) -> None:
    """Internal invariant of every preparer: no speaker appears in two splits."""
    seen: dict[str, str] = {}
    for name, utts in splits.items():
        for u in utts:
            other = seen.setdefault(u.speaker, name)
            assert other == name, f"speaker {u.speaker} in both {other} and {name}"


def _check_out_dir(path: Path, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise CorpusError(f"{path}: exists and is not a directory; choose another output dir")
    if path.is_dir() and any(path.iterdir()) and not (path / _MARKER).is_file() and not overwrite:
        raise CorpusError(
            f"{path}: already holds files not written by `prepare-corpus`; refusing to "
            "overwrite them. Move them away, choose another output dir, or pass --overwrite."
        )


def _prepare_out_dir(path: Path, corpus: str) -> None:
    """Remove the tables a previous run (or, with overwrite, anyone) left; mark the dir ours.

    Other files (``.backup/`` of fix-data, cmvn.json...) are left alone."""
    if path.is_dir():
        for name in _MANAGED:
            if (path / name).is_file():
                (path / name).unlink()
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / _MARKER, corpus + "\n")


def write_splits(
    corpus: str,
    splits: dict[str, list[Utterance]],
    out_root: str | Path,
    warnings: PrepWarnings,
    *,
    overwrite: bool = False,
    expected: tuple[str, ...] = ("train", "dev", "test"),
) -> PrepResult:
    """Write each non-empty split to ``out_root/<split>``; return the result with warnings.

    ``utt2accent``/``utt2gender`` are written when any utterance of the split has that
    label (missing labels become ``unk``). An ``expected`` split that is empty is not
    written (a dir of it left by an earlier run of ours is emptied) and gets a warning
    naming it and why. Raises CorpusError when every split is empty.
    """
    out_root = Path(out_root)
    if not any(splits.values()):
        warnings.flush()
        if warnings.messages:
            cause = f"{len(warnings.messages)} warning(s), first: " + "; ".join(
                warnings.messages[:3]
            )
        else:
            cause = "no audio file with a transcript was found"
        raise CorpusError(
            f"{corpus}: no usable utterance in any split ({cause}); check the corpus "
            "directory against the layout in the recipe README"
        )
    for name in expected:
        if not splits.get(name):
            why = warnings.empty.get(name, "no utterance was assigned to it")
            warnings.add(f"{name} split is empty (not written)", why)
    warnings.flush()
    check_speaker_disjoint(splits)
    for name, utts in splits.items():
        if utts:
            _check_out_dir(out_root / name, overwrite)
    result = PrepResult(corpus=corpus, warnings=list(warnings.messages))
    for name, utts in splits.items():
        if not utts:
            stale = out_root / name
            if (stale / _MARKER).is_file():  # ours, from an earlier run: not left stale
                _prepare_out_dir(stale, corpus)
            continue
        dd = DataDir()
        seen: set[str] = set()
        with_segments = any(u.segment is not None for u in utts)
        if with_segments:
            dd.segments = {}
        accents: dict[str, str] = {}
        genders: dict[str, str] = {}
        for u in utts:
            assert u.utt_id not in seen, f"duplicate utterance id {u.utt_id}"
            seen.add(u.utt_id)
            if with_segments:
                assert u.segment is not None, f"{u.utt_id}: mixed segmented and whole files"
                rec, start, end = u.segment
                dd.wav_scp[rec] = str(u.audio)
                dd.segments[u.utt_id] = Segment(rec, start, end)
            else:
                dd.wav_scp[u.utt_id] = str(u.audio)
            dd.text[u.utt_id] = u.text
            dd.utt2spk[u.utt_id] = u.speaker
            accents[u.utt_id] = u.accent or UNK
            genders[u.utt_id] = u.gender or UNK
        if any(u.accent for u in utts):
            dd.groups["accent"] = accents
        if any(u.gender for u in utts):
            dd.groups["gender"] = genders
        path = out_root / name
        _prepare_out_dir(path, corpus)
        write_datadir(dd, path)
        result.splits[name] = path
        result.counts[name] = len(utts)
    return result
