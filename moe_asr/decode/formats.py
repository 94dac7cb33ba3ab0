"""Transcription output formats, as whisper writes them: txt, json, srt, vtt, tsv.

- ``txt``: the text, one line (stdout: ``path<TAB>text``, one line per input);
- ``json``: ``FileResult.to_dict()`` (text, confidence, words, segments, alternatives,
  labels), one object per input (JSON lines on stdout);
- ``srt`` / ``vtt``: one cue per segment (``HH:MM:SS,mmm`` / ``HH:MM:SS.mmm``);
- ``tsv``: ``start<TAB>end<TAB>text`` per segment, times in integer milliseconds.

``OutputWriter`` writes one file per input and format into a directory, named after the
input's stem (``talk.mp3`` -> ``talk.srt``); two inputs with the same stem get ``-2``, ``-3``.
"""

from __future__ import annotations

import json
from pathlib import Path

from moe_asr.decode.transcribe import FileResult
from moe_asr.errors import UserError

__all__ = ["OUTPUT_FORMATS", "format_result", "stdout_line", "OutputWriter", "parse_formats"]

OUTPUT_FORMATS = ("txt", "json", "srt", "vtt", "tsv")


def parse_formats(spec: str) -> list[str]:
    """``"srt,vtt"`` or ``"all"`` -> a list of formats; a UserError names an unknown one."""
    names = list(OUTPUT_FORMATS) if spec == "all" else [s for s in spec.split(",") if s]
    bad = [n for n in names if n not in OUTPUT_FORMATS]
    if bad or not names:
        raise UserError(
            f"--output-format {spec!r}: choose from {', '.join(OUTPUT_FORMATS)} or all "
            "(comma-separated for several)"
        )
    return names


def _timestamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def format_result(result: FileResult, fmt: str) -> str:
    """The content of one output file of ``result`` (a successful one) in ``fmt``."""
    if fmt == "txt":
        return result.text + "\n"
    if fmt == "json":
        return json.dumps(result.to_dict(), ensure_ascii=False, indent=1) + "\n"
    if fmt == "tsv":
        rows = [
            f"{round(g.start * 1000)}\t{round(g.end * 1000)}\t{g.text}" for g in result.segments
        ]
        return "start\tend\ttext\n" + "".join(r + "\n" for r in rows)
    if fmt == "srt":
        cues = [
            f"{i}\n{_timestamp(g.start, ',')} --> {_timestamp(g.end, ',')}\n{g.text}\n"
            for i, g in enumerate(result.segments, 1)
        ]
        return "\n".join(cues)
    if fmt == "vtt":
        cues = [
            f"{_timestamp(g.start, '.')} --> {_timestamp(g.end, '.')}\n{g.text}\n"
            for g in result.segments
        ]
        return "WEBVTT\n\n" + "\n".join(cues)
    raise UserError(f"output format {fmt!r} is unknown; choose from {', '.join(OUTPUT_FORMATS)}")


def stdout_line(result: FileResult, fmt: str) -> str:
    """What stdout gets for one input: ``path<TAB>text`` (txt), a JSON line (json), or the
    file content under a ``==> path <==`` header (srt, vtt, tsv)."""
    if fmt == "txt":
        return f"{result.path}\t{result.text}\n"
    if fmt == "json":
        return json.dumps(result.to_dict(), ensure_ascii=False) + "\n"
    return f"==> {result.path} <==\n{format_result(result, fmt)}"


class OutputWriter:
    """Writes one file per input and format into ``out_dir`` (created), as results come."""

    def __init__(self, out_dir: str | Path, formats: list[str]) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.formats = formats
        self._used: dict[str, int] = {}

    def write(self, result: FileResult) -> list[Path]:
        """The files of one successful input (none for a failed one)."""
        if result.error is not None:
            return []
        stem = Path(result.path).stem if result.path != "<array>" else "array"
        n = self._used[stem] = self._used.get(stem, 0) + 1
        name = stem if n == 1 else f"{stem}-{n}"
        written = []
        for fmt in self.formats:
            path = self.out / f"{name}.{fmt}"
            path.write_text(format_result(result, fmt), encoding="utf-8")
            written.append(path)
        return written
