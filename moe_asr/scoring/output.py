"""Scoring outputs: Markdown tables, wer.json, sclite trn files, per-utterance alignments."""

from __future__ import annotations

import json
import math
from pathlib import Path

from moe_asr.files import atomic_write_text, check_outputs
from moe_asr.scoring.compare import CompareReport, CompareRow
from moe_asr.scoring.core import UNK_GROUP, GroupScore, ScoreReport, UttScore

__all__ = [
    "format_markdown",
    "format_group_markdown",
    "format_compare_markdown",
    "format_alignments",
    "trn_id",
    "format_trn",
    "write_outputs",
    "write_compare_outputs",
    "SCORE_FILES",
    "COMPARE_FILES",
]

# the files `score --out` writes (plus wer_by_<group>.md per group); `--compare` writes these
SCORE_FILES = ("wer.json", "ref.trn", "hyp.trn", "alignments.txt")
COMPARE_FILES = ("compare.json", "compare.md")

_LIST_MAX = 20  # ids shown inline in Markdown notes (JSON lists them all)


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _p(x: float) -> str:
    """A p-value: three decimals, ``< 0.001`` below that (a bootstrap cannot say more)."""
    if math.isnan(x):
        return "-"
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def _ci(lo: float, hi: float) -> str:
    return "-" if math.isnan(lo) else f"[{lo:.2f}, {hi:.2f}]"


def _ids(ids: list[str]) -> str:
    shown = " ".join(ids[:_LIST_MAX])
    return shown + (f" ... (+{len(ids) - _LIST_MAX} more)" if len(ids) > _LIST_MAX else "")


def _header(first: str, cer: bool) -> list[str]:
    cols = [first, "utts", "words", "WER %", "95% CI", "sub", "del", "ins", "errors"]
    cols += ["CER %"] if cer else []
    aligns = [":---"] + ["---:"] * (len(cols) - 1)
    return ["| " + " | ".join(cols) + " |", "|" + "|".join(aligns) + "|"]


def _line(label: str, s: GroupScore, cer: bool) -> str:
    cells = [label, str(s.utts), str(s.ref_words), _num(s.wer), _ci(s.ci_low, s.ci_high)]
    cells += [str(s.sub), str(s.del_), str(s.ins), str(s.errors)]
    cells += [_num(s.cer)] if cer else []
    return "| " + " | ".join(cells) + " |"


def format_group_markdown(report: ScoreReport, name: str) -> str:
    """The ``WER by <name>`` table with macro average, worst/best group and gap."""
    lines = [f"## WER by {name}", ""] + _header(name, report.cer)
    for value, s in report.by_group[name].items():
        lines.append(_line(value, s, report.cer))
    lines.append(_line("**all**", report.overall, report.cer))
    lines.append("")
    if report.worst[name]:
        w, b = report.by_group[name][report.worst[name]], report.by_group[name][report.best[name]]
        lines.append(
            f"- macro average WER over {name} groups: {_num(report.macro[name])}%"
            + (f" (`{UNK_GROUP}` excluded)" if UNK_GROUP in report.by_group[name] else "")
        )
        lines.append(
            f"- worst: {report.worst[name]} ({_num(w.wer)}%), best: {report.best[name]} "
            f"({_num(b.wer)}%), gap: {_num(report.gap[name])} points"
        )
    ungrouped = report.ungrouped.get(name, [])
    if ungrouped:
        lines.append(
            f"- {len(ungrouped)} utterance(s) with no {name} label, "
            f"reported as `{UNK_GROUP}`: {_ids(ungrouped)}"
        )
    return "\n".join(lines).rstrip() + "\n"


def format_markdown(report: ScoreReport) -> str:
    """Overall table, one table per group, and notes on missing/extra hypotheses."""
    lines = ["## WER", ""] + _header("set", report.cer)
    lines += [_line("all", report.overall, report.cer), ""]
    if report.missing:
        lines.append(
            f"- {len(report.missing)} utterance(s) without a hypothesis, scored as all "
            f"deletions: {_ids(report.missing)}"
        )
    if report.extra:
        lines.append(
            f"- {len(report.extra)} hypothesis(es) for utterances not in the reference, "
            f"ignored: {_ids(report.extra)}"
        )
    out = "\n".join(lines).rstrip() + "\n"
    for name in report.by_group:
        out += "\n" + format_group_markdown(report, name)
    return out


def trn_id(u: UttScore) -> str:
    """sclite's ``spk-utt`` id: the speaker (with '-' made '_') then '-' then the utterance."""
    spk = u.spk.replace("-", "_").replace("(", "_").replace(")", "_")
    return u.utt if u.utt.startswith(spk + "-") else f"{spk}-{u.utt}"


def format_trn(utts: list[UttScore], side: str) -> str:
    """``words (spk-utt)`` lines of the normalised reference (``side="ref"``) or hypothesis."""
    assert side in ("ref", "hyp")
    return "".join(f"{' '.join(getattr(u, side))} ({trn_id(u)})\n" for u in utts)


def format_alignments(report: ScoreReport) -> str:
    """Per-utterance REF/HYP/EVAL blocks like sclite's, most errors first."""
    out = [
        "# per-utterance alignments, most errors first; `***` marks an absent word;",
        "# EVAL: S substitution, D deletion, I insertion",
        "",
    ]
    for u in sorted(report.utterances, key=lambda u: (-u.errors, u.utt)):
        # the speaker once: a `spk` group repeats utt2spk, and the trn id is shown only
        # when it is not the utterance id itself (ids that do not start with the speaker)
        labels = "".join(
            f"  {n}: {t[u.utt]}"
            for n, t in report.groups.items()
            if not (n == "spk" and t.get(u.utt) == u.spk)
        )
        hits = sum(1 for o in u.ops if o[0] == "C")
        tid = trn_id(u)
        out.append(
            f"utt: {u.utt}  spk: {u.spk}{labels}" + (f"  trn: ({tid})" if tid != u.utt else "")
        )
        out.append(
            f"Scores: (#C #S #D #I) {hits} {u.sub} {u.del_} {u.ins}  "
            f"errors {u.errors} / {len(u.ref)} words"
            + ("  NO HYPOTHESIS (all deletions)" if u.missing else "")
        )
        ref, hyp, ev = [], [], []
        for op, r, h in u.ops:
            r, h = r or "***", h or "***"
            width = max(len(r), len(h))
            ref.append(r.ljust(width))
            hyp.append(h.ljust(width))
            ev.append(("" if op == "C" else op).ljust(width))
        out += [
            ("REF:  " + " ".join(ref)).rstrip(),
            ("HYP:  " + " ".join(hyp)).rstrip(),
            ("EVAL: " + " ".join(ev)).rstrip(),
            "",
        ]
    return "\n".join(out)


def _write(path: Path, text: str) -> Path:
    return atomic_write_text(path, text)


def write_outputs(
    report: ScoreReport, outdir: str | Path, *, overwrite: bool = False
) -> list[Path]:
    """Write wer.json, wer_by_<group>.md, ref.trn, hyp.trn, alignments.txt; return the paths.

    Refused (OutputExistsError) when ``outdir`` holds any of them, unless ``overwrite``;
    other files in ``outdir`` (hyp.txt...) are never touched. Score them with sclite:
    ``sclite -r ref.trn trn -h hyp.trn trn -i rm -o sum stdout``.
    """
    outdir = Path(outdir)
    names = [*SCORE_FILES, *(f"wer_by_{name}.md" for name in report.by_group)]
    check_outputs(outdir, names, overwrite)
    outdir.mkdir(parents=True, exist_ok=True)
    written = [
        _write(outdir / "wer.json", json.dumps(report.to_json(), indent=2) + "\n"),
    ]
    for name in report.by_group:
        written.append(_write(outdir / f"wer_by_{name}.md", format_group_markdown(report, name)))
    written.append(_write(outdir / "ref.trn", format_trn(report.utterances, "ref")))
    written.append(_write(outdir / "hyp.trn", format_trn(report.utterances, "hyp")))
    written.append(_write(outdir / "alignments.txt", format_alignments(report)))
    return written


def _compare_line(label: str, r: CompareRow) -> str:
    cells = [label, str(r.utts), str(r.ref_words), _num(r.wer_a), _num(r.wer_b)]
    cells += [_num(r.delta), _ci(r.ci_low, r.ci_high), _p(r.p_b_not_better)]
    cells += [_p(r.p_value)]
    if r.cer_a is not None:
        cells += [_num(r.cer_a), _num(r.cer_b)]
    return "| " + " | ".join(cells) + " |"


def format_compare_markdown(report: CompareReport) -> str:
    """Overall and per-group WER of A and B, the delta (B - A), its CI and p-values."""
    cols = ["set", "utts", "words", "WER A %", "WER B %", "delta", "95% CI of delta"]
    cols += ["P(B not better)", "p (two-sided)"]
    if report.overall.cer_a is not None:
        cols += ["CER A %", "CER B %"]

    def table(first: str) -> list[str]:
        c = [first, *cols[1:]]
        return ["| " + " | ".join(c) + " |", "|:---|" + "---:|" * (len(c) - 1)]

    lines = [
        f"## WER: A = {report.name_a}, B = {report.name_b}",
        "",
        f"delta = WER B - WER A (negative: B is better); paired bootstrap over utterances, "
        f"{report.n_boot} resamples, seed {report.seed}.",
        "",
        *table("set"),
        _compare_line("all", report.overall),
        "",
    ]
    for tag, ids in (("A", report.missing_a), ("B", report.missing_b)):
        if ids:
            lines.append(
                f"- system {tag}: {len(ids)} utterance(s) without a hypothesis, scored as all "
                f"deletions: {_ids(ids)}"
            )
    for name, values in report.by_group.items():
        lines += ["", f"### by {name}", "", *table(name)]
        lines += [_compare_line(v, r) for v, r in values.items()]
        if report.ungrouped.get(name):
            ids = report.ungrouped[name]
            lines.append("")
            lines.append(f"- {len(ids)} utterance(s) with no {name} label, in `{UNK_GROUP}`")
    return "\n".join(lines).rstrip() + "\n"


def write_compare_outputs(
    report: CompareReport, outdir: str | Path, *, overwrite: bool = False
) -> list[Path]:
    """Write compare.json and compare.md into ``outdir`` (refused over earlier ones unless
    ``overwrite``); return the paths."""
    outdir = Path(outdir)
    check_outputs(outdir, COMPARE_FILES, overwrite)
    outdir.mkdir(parents=True, exist_ok=True)
    return [
        _write(outdir / "compare.json", json.dumps(report.to_json(), indent=2) + "\n"),
        _write(outdir / "compare.md", format_compare_markdown(report)),
    ]
