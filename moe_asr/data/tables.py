"""Kaldi ``id value`` tables and the per-file rules of a data dir.

Reading names every bad line as ``file:line`` (``Problem``); writing is sorted by id and
atomic. Also here: which ``utt2*`` files are core or group tables and what a ``wav.scp``
entry may be. ``moe_asr.data.datadir`` builds the in-memory data dir on these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from moe_asr.errors import UserError
from moe_asr.files import atomic_open

__all__ = [
    "DataDirError",
    "Problem",
    "CORE_FILES",
    "NOT_GROUP_FILES",
    "PIPE_ADVICE",
    "parse_wav_entry",
    "space_hint",
    "read_lines",
    "read_table",
    "write_table",
]

# Files with a fixed meaning; any other `utt2<name>` file is a group file.
CORE_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "segments", "utt2dur")
NOT_GROUP_FILES = {"utt2spk", "utt2dur", "utt2num_frames", "utt2snr", "utt2rt60"}


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


PIPE_ADVICE = (
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
                f"{where}: wav.scp entry is a shell pipeline ({entry!r}); {PIPE_ADVICE}"
            )
        return entry
    return entry


def space_hint(key: str, value: str) -> str:
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
    for line, key, value in read_lines(path, problems):
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


def read_lines(path: Path, problems: list[Problem]) -> list[tuple[int, str, str]]:
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
