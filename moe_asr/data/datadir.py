"""Kaldi data directories: read, write, validate, fix, subset, combine.

A data dir holds ``wav.scp text utt2spk spk2utt`` and optionally ``segments``,
``utt2dur`` and any ``utt2<group>`` file (utt2accent, utt2noise, utt2gender...).
Every file is sorted by id, one ``id value`` entry per line, ids without spaces.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from moe_asr.errors import UserError
from moe_asr.files import atomic_open, atomic_write_text

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

# Files with a fixed meaning; any other `utt2<name>` file is a group file.
_CORE = ("wav.scp", "text", "utt2spk", "spk2utt", "segments", "utt2dur")
_NOT_GROUPS = {"utt2spk", "utt2dur", "utt2num_frames", "utt2snr", "utt2rt60"}


class DataDirError(UserError):
    """A data dir file is missing or malformed; the message names file and line."""


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 1-based; 0 when the problem concerns the whole file
    what: str
    fatal: bool = True  # False for cosmetic issues a reader tolerates (BOM, CRLF)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what}" if self.line else f"{self.file}: {self.what}"


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


# shortest audio any moe_asr model makes features for (the default 4x subsampling needs 7
# fbank frames = 0.085 s; shorter files are refused by train, decode and transcribe)
MIN_AUDIO_SECONDS = 0.1

_PIPE_ADVICE = (
    "moe_asr reads audio files only and never runs commands from data files: convert the "
    "audio to files (e.g. with sox or ffmpeg) and list their paths in wav.scp"
)


def parse_wav_entry(entry: str, *, allow_pipes: bool = False, where: str = "") -> str:
    """Return the file path of a wav.scp value; refuse shell pipelines unless ``allow_pipes``
    (fix-data keeps such entries with it; no command reads them)."""
    entry = entry.strip()
    if entry.endswith("|"):
        if not allow_pipes:
            raise DataDirError(
                f"{where}: wav.scp entry is a shell pipeline ({entry!r}); {_PIPE_ADVICE}"
            )
        return entry
    return entry


def _space_hint(key: str, value: str) -> str:
    """The message for an ``id value`` line with more fields than the table allows."""
    first = value.split()[0]
    return (
        f"{key} {value}: expected `id value` with one value; ids cannot contain spaces "
        f"(is `{key} {first}` meant as one id? rename it, e.g. {key}_{first})"
    )


def read_table(path: str | Path, *, allow_empty: bool = False) -> dict[str, str]:
    """Read a Kaldi ``id value`` table; raise DataDirError naming file:line on a bad line.

    A byte-order mark and CRLF line ends are tolerated here (``validate-data`` reports them).
    """
    path = Path(path)
    problems: list[Problem] = []
    out: dict[str, str] = {}
    for line, key, value in _read_lines(path, problems):
        if not value and not allow_empty:
            problems.append(Problem(str(path), line, f"{key} has no value"))
        elif key in out:
            problems.append(Problem(str(path), line, f"duplicate id {key}"))
        out.setdefault(key, value)
    fatal = [p for p in problems if p.fatal]
    if fatal:
        raise DataDirError(
            str(fatal[0]) + (f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else "")
        )
    return out


def write_table(path: str | Path, table: dict[str, object]) -> None:
    """Write a table sorted by id, atomically (``moe_asr.files.atomic_open``)."""
    with atomic_open(path, "w") as f:
        for key in sorted(table):
            value = table[key]
            if isinstance(value, (list, tuple)):
                value = " ".join(map(str, value))
            f.write(f"{key} {value}\n")


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
            raise DataDirError(f"{path / 'utt2spk'}: {_space_hint(utt, spk)}")
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
        if f.name in _CORE or not f.is_file():
            continue
        if f.name in _NOT_GROUPS:
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


# ----------------------------------------------------------------------------- validation


def _read_lines(path: Path, problems: list[Problem]) -> list[tuple[int, str, str]]:
    """(line, id, value) for each line; decoding and format problems go to ``problems``."""
    rows: list[tuple[int, str, str]] = []
    try:
        raw = path.read_bytes()
    except OSError as e:
        problems.append(Problem(str(path), 0, f"cannot read: {e.strerror}"))
        return rows
    if raw.startswith(b"\xef\xbb\xbf"):
        problems.append(Problem(str(path), 1, "starts with a UTF-8 byte-order mark", fatal=False))
        raw = raw[3:]
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    crlf = 0
    for i, bline in enumerate(lines, start=1):
        if bline.endswith(b"\r"):
            if not crlf:  # once per file, at the first such line
                problems.append(Problem(str(path), i, "CRLF line ending (Windows)", fatal=False))
            crlf += 1
            bline = bline[:-1]
        try:
            line = bline.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.append(Problem(str(path), i, f"not valid UTF-8 ({e.reason})"))
            continue
        parts = line.split(maxsplit=1)
        if not parts:
            problems.append(Problem(str(path), i, "empty line"))
            continue
        rows.append((i, parts[0], parts[1].strip() if len(parts) > 1 else ""))
    return rows


def _check_table(path: Path, problems: list[Problem], *, need_value: bool = True) -> dict:
    """Check sorting, uniqueness and values of one table; return id -> (line, value)."""
    out: dict[str, tuple[int, str]] = {}
    prev = None
    for line, key, value in _read_lines(path, problems):
        if key in out:
            problems.append(
                Problem(str(path), line, f"duplicate id {key} (first on line {out[key][0]})")
            )
            continue
        if prev is not None and key < prev:
            problems.append(Problem(str(path), line, f"not sorted: {key} comes after {prev}"))
        prev = key
        if need_value and not value:
            what = "empty transcript" if path.name == "text" else "no value"
            problems.append(Problem(str(path), line, f"{key}: {what}"))
        out[key] = (line, value)
    return out


def validate_datadir(
    path: str | Path, *, check_audio: bool = False, allow_pipes: bool = False
) -> list[Problem]:
    """Every problem of a data dir as ``Problem(file, line, what)``; empty when clean."""
    from moe_asr.audio import AudioError, audio_info

    path = Path(path)
    problems: list[Problem] = []
    if not path.is_dir():
        return [Problem(str(path), 0, "not a directory")]
    tables: dict[str, dict] = {}
    for name in ("wav.scp", "text", "utt2spk"):
        if not (path / name).is_file():
            problems.append(Problem(str(path / name), 0, "missing (required)"))
            tables[name] = {}
        else:
            tables[name] = _check_table(path / name, problems)
    utt2spk = tables["utt2spk"]
    for utt, (line, spk) in utt2spk.items():
        if len(spk.split()) > 1:
            problems.append(Problem(str(path / "utt2spk"), line, _space_hint(utt, spk)))
    utts = set(utt2spk)
    text_f, wav_f, u2s_f = (str(path / n) for n in ("text", "wav.scp", "utt2spk"))

    for utt, (line, _) in utt2spk.items():
        if utt not in tables["text"]:
            problems.append(Problem(u2s_f, line, f"{utt}: no transcript in text"))
    for utt, (line, _) in tables["text"].items():
        if utt not in utts:
            problems.append(Problem(text_f, line, f"{utt}: not in utt2spk"))

    segments = None
    if (path / "segments").is_file():
        segments = _check_table(path / "segments", problems)
        for utt, (line, value) in segments.items():
            parts = value.split()
            if utt not in utts:
                problems.append(Problem(str(path / "segments"), line, f"{utt}: not in utt2spk"))
            if len(parts) != 3:
                what = f"{utt}: expected 'rec start end'"
                if len(parts) > 3:
                    what = _space_hint(utt, value) + " (expected 'rec start end')"
                problems.append(Problem(str(path / "segments"), line, what))
            elif parts[0] not in tables["wav.scp"]:
                problems.append(
                    Problem(
                        str(path / "segments"), line, f"{utt}: recording {parts[0]} not in wav.scp"
                    )
                )
        for utt, (line, _) in utt2spk.items():
            if utt not in segments:
                problems.append(Problem(u2s_f, line, f"{utt}: no entry in segments"))
    else:
        for utt, (line, _) in utt2spk.items():
            if utt not in tables["wav.scp"]:
                problems.append(Problem(u2s_f, line, f"{utt}: no audio in wav.scp"))
        for utt, (line, _) in tables["wav.scp"].items():
            if utt not in utts:
                problems.append(Problem(wav_f, line, f"{utt}: not in utt2spk"))

    for key, (line, entry) in tables["wav.scp"].items():
        if entry.endswith("|"):
            # reported even with --allow-pipes: no command reads the dir as long as it has one
            what = f"{key}: wav.scp entry is a shell pipeline ({entry!r})"
            if allow_pipes and not check_audio:
                problems.append(
                    Problem(
                        wav_f,
                        line,
                        f"{what}: kept by --allow-pipes, but train, decode, "
                        f"transcribe and report refuse it; {_PIPE_ADVICE}",
                        fatal=False,
                    )
                )
            else:
                problems.append(Problem(wav_f, line, f"{what}; {_PIPE_ADVICE}"))
            continue
        audio_path = Path(entry)
        if not audio_path.exists():
            problems.append(Problem(wav_f, line, f"{key}: audio file does not exist: {entry}"))
        elif check_audio:
            try:
                info = audio_info(audio_path)
            except AudioError as e:
                problems.append(Problem(wav_f, line, f"{key}: {e}"))
                continue
            if segments is None and info.duration < MIN_AUDIO_SECONDS:
                problems.append(
                    Problem(
                        wav_f,
                        line,
                        f"{key}: {audio_path}: {info.frames} sample(s) ({info.duration:.4f} s), "
                        f"shorter than {MIN_AUDIO_SECONDS} s: train, decode and transcribe "
                        "cannot make features from it; remove the utterance",
                    )
                )

    _check_spk2utt(path, utt2spk, problems)
    if (path / "utt2dur").is_file():
        _check_group(path / "utt2dur", utts, problems)
    for f in sorted(path.glob("utt2*")):
        if f.name in _CORE or f.name == "utt2dur" or not f.is_file():
            continue
        _check_group(f, utts, problems)
    if segments is not None and check_audio:
        for utt, (line, value) in segments.items():
            parts = value.split()
            try:
                start, end = float(parts[1]), float(parts[2])
            except (IndexError, ValueError):
                continue  # reported above
            if end != -1 and end - start < MIN_AUDIO_SECONDS:
                problems.append(
                    Problem(
                        str(path / "segments"),
                        line,
                        f"{utt}: segment of {end - start:.4f} s is shorter than "
                        f"{MIN_AUDIO_SECONDS} s: train, decode and transcribe cannot make "
                        "features from it",
                    )
                )
    return problems


def _check_spk2utt(path: Path, utt2spk: dict, problems: list[Problem]) -> None:
    f = path / "spk2utt"
    if not f.is_file():
        problems.append(Problem(str(f), 0, "missing (rebuild it with `moe-asr fix-data`)"))
        return
    expected: dict[str, set[str]] = {}
    for utt, (_, spk) in utt2spk.items():
        expected.setdefault(spk, set()).add(utt)
    table = _check_table(f, problems)
    for spk, (line, value) in table.items():
        got = set(value.split())
        want = expected.get(spk, set())
        if got != want:
            diff = sorted(got ^ want)[:5]
            problems.append(
                Problem(
                    str(f),
                    line,
                    f"{spk}: speaker mismatch with utt2spk (differs on {' '.join(diff)})",
                )
            )
    for spk in sorted(set(expected) - set(table)):
        problems.append(Problem(str(f), 0, f"speaker {spk} of utt2spk is missing"))


def _check_group(f: Path, utts: set[str], problems: list[Problem]) -> None:
    table = _check_table(f, problems)
    for utt, (line, _) in table.items():
        if utt not in utts:
            problems.append(Problem(str(f), line, f"{utt}: not in utt2spk"))
    for utt in sorted(utts - set(table)):
        problems.append(
            Problem(str(f), 0, f"{utt}: missing entry ({f.name} must cover every utterance)")
        )


# ----------------------------------------------------------------------------- fixing


@dataclass
class FixReport:
    backup: Path
    dropped: dict[str, str]  # utt -> reason
    kept: int
    filled_unk: dict[str, list[str]]  # group file -> utterances given the `unk` label
    # every other change, one line each naming file:line and the id (also DIR/.backup/*/changes)
    changes: list[str] = field(default_factory=list)


def fix_datadir(path: str | Path, *, allow_pipes: bool = False) -> FixReport:
    """Sort, dedupe, rebuild spk2utt, drop utterances lacking a required entry.

    The original files are first copied to ``DIR/.backup/<timestamp>/``; the dropped
    utterances are listed in the report and in ``DIR/.backup/<timestamp>/dropped``.
    """
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = path / ".backup" / stamp
    n = 1
    while backup.exists():
        n += 1
        backup = path / ".backup" / f"{stamp}-{n}"
    backup.mkdir(parents=True)
    files = [f for f in sorted(path.iterdir()) if f.is_file()]
    for f in files:
        shutil.copy2(f, backup / f.name)

    changes: list[str] = []
    tables = {f.name: _lenient_table(f, changes) for f in files}
    wav_scp = tables.get("wav.scp", {})
    text = tables.get("text", {})
    utt2spk = tables.get("utt2spk", {})
    seg_raw = tables.get("segments")
    dropped: dict[str, str] = {}
    all_utts = set(utt2spk) | set(text) | (set(seg_raw) if seg_raw else set(wav_scp))
    for utt in sorted(all_utts):
        if utt not in utt2spk:
            dropped[utt] = "no speaker in utt2spk"
        elif not text.get(utt, "").strip():
            dropped[utt] = "no transcript" if utt not in text else "empty transcript"
        elif seg_raw is not None:
            seg = seg_raw.get(utt, "").split()
            if len(seg) != 3 or seg[0] not in wav_scp:
                dropped[utt] = "no valid segment"
        elif utt not in wav_scp:
            dropped[utt] = "no audio in wav.scp"
        elif wav_scp[utt].endswith("|") and not allow_pipes:
            dropped[utt] = "wav.scp entry is a shell pipeline"
    keep = all_utts - set(dropped)

    filled: dict[str, list[str]] = {}
    for name, table in tables.items():
        if name == "spk2utt" or not (name in _CORE or name.startswith("utt2")):
            continue  # other files (feats.scp, cmvn.json...) are left untouched
        if name == "wav.scp":
            refs = {seg_raw[u].split()[0] for u in keep} if seg_raw is not None else keep
            table = {k: v for k, v in table.items() if k in refs}
        else:
            table = {k: v for k, v in table.items() if k in keep}
            if name.startswith("utt2") and name not in _NOT_GROUPS:
                # a group file must cover every utterance: missing labels become `unk`
                missing = sorted(keep - set(table))
                if missing:
                    filled[name] = missing
                    table.update({u: "unk" for u in missing})
                    changes += [f"{path / name}: {u}: no label, set to unk" for u in missing]
        write_table(path / name, table)
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(keep):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    write_table(path / "spk2utt", spk2utt)
    atomic_write_text(backup / "dropped", "".join(f"{u} {r}\n" for u, r in sorted(dropped.items())))
    atomic_write_text(backup / "changes", "".join(c + "\n" for c in changes))
    return FixReport(
        backup=backup, dropped=dropped, kept=len(keep), filled_unk=filled, changes=changes
    )


def _lenient_table(f: Path, changes: list[str]) -> dict[str, str]:
    """First occurrence of each id wins; undecodable bytes are replaced by U+FFFD. Every
    such change is appended to ``changes`` as ``file:line: id: what`` (nothing is silent)."""
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    raw = f.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
        changes.append(f"{f}:1: byte-order mark removed")
    for i, bline in enumerate(raw.split(b"\n"), start=1):
        if bline.endswith(b"\r"):
            bline = bline[:-1]
        try:
            line = bline.decode("utf-8")
            bad = False
        except UnicodeDecodeError:
            line = bline.decode("utf-8", errors="replace")
            bad = True
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        key, value = parts[0], (parts[1].strip() if len(parts) > 1 else "")
        if bad:
            changes.append(
                f"{f}:{i}: {key}: invalid UTF-8 bytes replaced by U+FFFD (now {value!r}); "
                "fix the original encoding if the text matters"
            )
        if key in out:
            if out[key] == value:
                changes.append(
                    f"{f}:{i}: {key}: duplicate line removed (same as line {first_line[key]})"
                )
            else:
                changes.append(
                    f"{f}:{i}: {key}: duplicate id with a different value removed: {value!r} "
                    f"(line {first_line[key]} kept: {out[key]!r})"
                )
            continue
        out[key] = value
        first_line[key] = i
    return out
