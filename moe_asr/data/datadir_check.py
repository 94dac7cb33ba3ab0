"""Validation of a Kaldi data dir: every problem as ``Problem(file, line, what)``.

Nothing is changed on disk (``moe_asr.data.datadir_fix`` repairs what it can).
"""

from __future__ import annotations

from pathlib import Path

from moe_asr.data.tables import CORE_FILES, PIPE_ADVICE, Problem, read_lines, space_hint

__all__ = ["MIN_AUDIO_SECONDS", "validate_datadir"]

# shortest audio any moe_asr model makes features for (the default 4x subsampling needs 7
# fbank frames = 0.085 s; shorter files are refused by train, decode and transcribe)
MIN_AUDIO_SECONDS = 0.1


def _check_table(path: Path, problems: list[Problem], *, need_value: bool = True) -> dict:
    """Check sorting, uniqueness and values of one table; return id -> (line, value)."""
    out: dict[str, tuple[int, str]] = {}
    prev = None
    for line, key, value in read_lines(path, problems):
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
            problems.append(Problem(str(path / "utt2spk"), line, space_hint(utt, spk)))
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
                    what = space_hint(utt, value) + " (expected 'rec start end')"
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
                        f"transcribe and report refuse it; {PIPE_ADVICE}",
                        fatal=False,
                    )
                )
            else:
                problems.append(Problem(wav_f, line, f"{what}; {PIPE_ADVICE}"))
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
        if f.name in CORE_FILES or f.name == "utt2dur" or not f.is_file():
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
