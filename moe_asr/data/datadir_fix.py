"""Repair of a Kaldi data dir in place (``moe-asr fix-data``): back up, sort, dedupe,
rebuild spk2utt, drop utterances lacking a required entry, fill missing labels with ``unk``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from moe_asr.data.tables import CORE_FILES, NOT_GROUP_FILES, write_table
from moe_asr.files import atomic_write_text

__all__ = ["FixReport", "fix_datadir"]


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
        if name == "spk2utt" or not (name in CORE_FILES or name.startswith("utt2")):
            continue  # other files (feats.scp, cmvn.json...) are left untouched
        if name == "wav.scp":
            refs = {seg_raw[u].split()[0] for u in keep} if seg_raw is not None else keep
            table = {k: v for k, v in table.items() if k in refs}
        else:
            table = {k: v for k, v in table.items() if k in keep}
            if name.startswith("utt2") and name not in NOT_GROUP_FILES:
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
