"""Kaldi data directories in memory: load, write, subset, combine.

A data dir holds ``wav.scp text utt2spk spk2utt`` and optionally ``segments``,
``utt2dur`` and any ``utt2<group>`` file (utt2accent, utt2noise, utt2gender...).
Every file is sorted by id, one ``id value`` entry per line, ids without spaces.

The table format is in ``moe_asr.data.tables``, validation in
``moe_asr.data.datadir_check``, repair in ``moe_asr.data.datadir_fix``; their public
names are re-exported here, so ``from moe_asr.data.datadir import ...`` covers them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from moe_asr.data.datadir_check import MIN_AUDIO_SECONDS, validate_datadir
from moe_asr.data.datadir_fix import FixReport, fix_datadir
from moe_asr.data.tables import (
    CORE_FILES,
    NOT_GROUP_FILES,
    DataDirError,
    Problem,
    parse_wav_entry,
    read_table,
    space_hint,
    write_table,
)

__all__ = [
    "DataDirError",
    "Problem",
    "Segment",
    "DataDir",
    "read_table",
    "write_table",
    "load_datadir",
    "write_datadir",
    "validate_datadir",
    "fix_datadir",
    "FixReport",
    "subset_datadir",
    "combine_datadirs",
    "parse_wav_entry",
    "MIN_AUDIO_SECONDS",
]


@dataclass(frozen=True)
class Segment:
    recording: str
    start: float
    end: float


@dataclass
class DataDir:
    """In-memory data dir; every map is keyed by id (utterance, recording or speaker)."""

    wav_scp: dict[str, str] = field(default_factory=dict)  # recording (or utt) -> path / pipe
    text: dict[str, str] = field(default_factory=dict)
    utt2spk: dict[str, str] = field(default_factory=dict)
    segments: dict[str, Segment] | None = None
    utt2dur: dict[str, float] | None = None
    groups: dict[str, dict[str, str]] = field(default_factory=dict)  # "accent" -> utt -> label
    extra: dict[str, dict[str, str]] = field(default_factory=dict)  # other utt2X tables kept as-is
    path: Path | None = None

    @property
    def utt_ids(self) -> list[str]:
        return sorted(self.utt2spk)

    def spk2utt(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for utt in sorted(self.utt2spk):
            out.setdefault(self.utt2spk[utt], []).append(utt)
        return out

    def audio_of(self, utt: str) -> tuple[str, float | None, float | None]:
        """(wav.scp entry, start s, end s) for an utterance; start/end None without segments."""
        if self.segments is not None:
            seg = self.segments[utt]
            return self.wav_scp[seg.recording], seg.start, seg.end
        return self.wav_scp[utt], None, None


def load_datadir(path: str | Path, *, allow_pipes: bool = False) -> DataDir:
    """Load a data dir; raises DataDirError for a missing required file or malformed line."""
    path = Path(path)
    if not path.is_dir():
        raise DataDirError(f"{path}: not a directory (expected a Kaldi data dir)")
    for name in ("wav.scp", "text", "utt2spk"):
        if not (path / name).is_file():
            raise DataDirError(f"{path / name}: missing (a data dir needs wav.scp, text, utt2spk)")
    wav_scp = read_table(path / "wav.scp")
    for key, entry in wav_scp.items():
        parse_wav_entry(entry, allow_pipes=allow_pipes, where=f"{path / 'wav.scp'}: {key}")
    dd = DataDir(
        wav_scp=wav_scp,
        text=read_table(path / "text", allow_empty=True),
        utt2spk=read_table(path / "utt2spk"),
        path=path,
    )
    for utt, spk in dd.utt2spk.items():
        if len(spk.split()) > 1:
            raise DataDirError(f"{path / 'utt2spk'}: {space_hint(utt, spk)}")
    if (path / "segments").is_file():
        dd.segments = {}
        for utt, value in read_table(path / "segments").items():
            dd.segments[utt] = _parse_segment(value, f"{path / 'segments'}: {utt}")
    if (path / "utt2dur").is_file():
        dd.utt2dur = {}
        for utt, value in read_table(path / "utt2dur").items():
            try:
                dd.utt2dur[utt] = float(value)
            except ValueError as e:
                raise DataDirError(f"{path / 'utt2dur'}: {utt}: not a number: {value!r}") from e
    for f in sorted(path.glob("utt2*")):
        if f.name in CORE_FILES or not f.is_file():
            continue
        if f.name in NOT_GROUP_FILES:
            if f.name != "utt2spk":
                dd.extra[f.name[4:]] = read_table(f)
            continue
        dd.groups[f.name[4:]] = read_table(f)
    return dd


def _parse_segment(value: str, where: str) -> Segment:
    parts = value.split()
    if len(parts) != 3:
        hint = "; ids cannot contain spaces" if len(parts) > 3 else ""
        raise DataDirError(f"{where}: expected 'recording start end', got {value!r}{hint}")
    try:
        start, end = float(parts[1]), float(parts[2])
    except ValueError as e:
        raise DataDirError(f"{where}: start/end are not numbers: {value!r}") from e
    if end <= start and end != -1:
        raise DataDirError(f"{where}: end {end} is not after start {start}")
    return Segment(parts[0], start, end)


def write_datadir(dd: DataDir, path: str | Path) -> Path:
    """Write every table of ``dd`` (sorted) plus a rebuilt spk2utt."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_table(path / "wav.scp", dd.wav_scp)
    write_table(path / "text", dd.text)
    write_table(path / "utt2spk", dd.utt2spk)
    write_table(path / "spk2utt", dd.spk2utt())
    if dd.segments is not None:
        write_table(
            path / "segments",
            {u: f"{s.recording} {s.start:.3f} {s.end:.3f}" for u, s in dd.segments.items()},
        )
    if dd.utt2dur is not None:
        write_table(path / "utt2dur", {u: f"{d:.3f}" for u, d in dd.utt2dur.items()})
    for name, table in {**dd.groups, **dd.extra}.items():
        write_table(path / f"utt2{name}", table)
    return path


def subset_datadir(dd: DataDir, utts: list[str] | set[str]) -> DataDir:
    """The data dir restricted to ``utts`` (recordings kept only if still referenced)."""
    keep = set(utts) & set(dd.utt2spk)
    segments = None
    if dd.segments is not None:
        segments = {u: s for u, s in dd.segments.items() if u in keep}
        recs = {s.recording for s in segments.values()}
        wav_scp = {r: e for r, e in dd.wav_scp.items() if r in recs}
    else:
        wav_scp = {u: e for u, e in dd.wav_scp.items() if u in keep}

    def sub(t: dict) -> dict:
        return {k: v for k, v in t.items() if k in keep}

    return DataDir(
        wav_scp=wav_scp,
        text=sub(dd.text),
        utt2spk=sub(dd.utt2spk),
        segments=segments,
        utt2dur=sub(dd.utt2dur) if dd.utt2dur is not None else None,
        groups={g: sub(t) for g, t in dd.groups.items()},
        extra={g: sub(t) for g, t in dd.extra.items()},
    )


def combine_datadirs(dirs: list[DataDir]) -> DataDir:
    """Union of data dirs; an id present in two dirs with different content is an error."""
    out = DataDir(segments=None, utt2dur=None)
    has_segments = any(d.segments is not None for d in dirs)
    if has_segments and not all(d.segments is not None for d in dirs):
        raise DataDirError("cannot combine data dirs with and without segments files")
    if has_segments:
        out.segments = {}
    if all(d.utt2dur is not None for d in dirs):
        out.utt2dur = {}
    group_names = set().union(*(d.groups for d in dirs)) if dirs else set()
    out.groups = {g: {} for g in group_names}
    for d in dirs:
        where = str(d.path) if d.path else "data dir"
        for table, src in ((out.wav_scp, d.wav_scp), (out.text, d.text), (out.utt2spk, d.utt2spk)):
            for k, v in src.items():
                if k in table and table[k] != v:
                    raise DataDirError(f"{where}: id {k} clashes with another data dir")
                table[k] = v
        if out.segments is not None and d.segments is not None:
            out.segments.update(d.segments)
        if out.utt2dur is not None and d.utt2dur is not None:
            out.utt2dur.update(d.utt2dur)
        for g in group_names:
            # an utterance without a label in its source dir gets the explicit `unk` label
            src = d.groups.get(g, {})
            out.groups[g].update({u: src.get(u, "unk") for u in d.utt2spk})
    return out
