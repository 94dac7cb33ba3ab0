"""Evaluation subcommands: score, report."""

from __future__ import annotations

import argparse
import sys

_SCORE_DESCRIPTION = """\
Score hypotheses (Kaldi `utt-id words`, words may be empty) against a reference `text`
(--ref DATA_DIR takes its `text`; --group accent takes its `utt2accent`):
overall and per group (every --group file, e.g. utt2accent, utt2noise, utt2spk): utterances,
reference words, WER (corpus-level, percent), substitutions/deletions/insertions, optional
CER, and a 95% bootstrap confidence interval (utterances resampled, seeded); per group name
also the macro average, the worst and best group and the gap (the `unk` group is reported
but left out of these). A Markdown table goes to stdout; with --out: wer.json,
wer_by_<group>.md, sclite-compatible ref.trn/hyp.trn (`(spk-utt)` ids; speakers from
utt2spk next to --ref), alignments.txt (per utterance, most errors first).

A missing hypothesis counts as all deletions and is listed; a hypothesis for an utterance
not in the reference is an error unless --allow-extra; an utterance without a label in a
group file goes to the `unk` group, which is listed.

Normalisation, applied identically to reference and hypothesis (defaults): Unicode NFC;
lowercase (--no-lowercase keeps case); punctuation replaced by a space, except an
apostrophe inside a word (don't) and whole tags like <unk> or [noise] (--keep-punct keeps
punctuation); whitespace collapsed; then --map FILE replaces words (`word replacement...`
per line; a word alone on its line is deleted).

--compare A B scores two systems on the same reference: per-group WER of both, the delta
(B - A) with its paired-bootstrap 95% CI, P(B not better) and a two-sided p-value; with
--out: compare.json, compare.md.
"""


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="WER/CER overall and per accent/noise/speaker group, CIs, sclite trn files",
        description=_SCORE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--ref", required=True, help="reference transcripts: a data dir or its `text` file"
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--hyp", help="hypotheses (`hyp.txt`: utt-id words)")
    what.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two hypothesis files")
    p.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="[NAME=]FILE",
        help="utt2<name> label file (repeatable); NAME defaults to the file name after utt2; "
        "a bare name (accent, noise, spk) is utt2<name> of the --ref data dir",
    )
    p.add_argument(
        "--cer", action="store_true", help="also report CER (spaces count), with --compare too"
    )
    p.add_argument("--no-lowercase", action="store_true", help="keep letter case")
    p.add_argument("--keep-punct", action="store_true", help="keep punctuation")
    p.add_argument("--map", metavar="FILE", help="word replacements applied after normalising")
    p.add_argument(
        "--allow-extra", action="store_true", help="ignore hypotheses of unknown utterances"
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, metavar="N", help="resamples (default 1000; 0 = off)"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--out", metavar="OUTDIR", help="write the report files here")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the score files of an earlier run in OUTDIR (hyp.txt and others are kept)",
    )
    p.set_defaults(func=_run_score)


def _run_score(args: argparse.Namespace) -> int:
    from moe_asr import scoring
    from moe_asr.files import check_outputs

    if args.out:  # refuse before scoring; the writers check the per-group files too
        names = scoring.COMPARE_FILES if args.compare else scoring.SCORE_FILES
        check_outputs(args.out, names, args.overwrite)
    normalizer = scoring.make_normalizer(
        lowercase=not args.no_lowercase, strip_punct=not args.keep_punct, word_map=args.map
    )
    common = dict(
        normalizer=normalizer,
        allow_extra=args.allow_extra,
        n_boot=args.bootstrap,
        seed=args.seed,
    )
    if args.compare:
        report = scoring.compare_files(args.ref, *args.compare, args.group, cer=args.cer, **common)
        print(scoring.format_compare_markdown(report), end="")
        written = (
            scoring.write_compare_outputs(report, args.out, overwrite=args.overwrite)
            if args.out
            else []
        )
    else:
        report = scoring.score_files(args.ref, args.hyp, args.group, cer=args.cer, **common)
        print(scoring.format_markdown(report), end="")
        written = (
            scoring.write_outputs(report, args.out, overwrite=args.overwrite) if args.out else []
        )
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


_REPORT_DESCRIPTION = """\
Runs the encoder label-free over a data dir, captures routing in every MoE layer and writes
OUT/report.html (self-contained), report.md, report.json (every number), PNG figures and
routing.npz. Groups come from the data dir's utt2<group> files (spk = utt2spk).

The report opens with a verdict per group, in words: which experts serve which values
(expert -> values with lift = P(value | expert) / P(value), the share of the expert's frames
and of the value's frames), or that routing does not specialise, with the numbers. An expert
serves a value in a layer when the layer's NMI(group; expert) is above the shuffled-label
baseline (permutation p <= 0.05 / number of MoE layers), its lift is >= --min-lift and above
the largest lift that pair reaches with shuffled labels. Figures: lift heatmaps (diverging,
centred at 1), the confusion matrix of identifying the group from routing, share heatmaps.

--wer DECODE_DIR/wer.json (from `moe-asr score --group accent --out DECODE_DIR`) puts
per-value WER beside per-value routing. --compare OTHER (another model.pt, run on the same
utterances, or a report dir, whose routing.npz is re-analysed) puts the two models'
specialisation side by side.
"""


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="expert specialization report: which experts serve which accents/noise conditions",
        description=_REPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="EXP/model.pt")
    p.add_argument("--data", required=True, help="Kaldi data dir")
    p.add_argument(
        "--groups", default=None, help="comma list, e.g. accent,noise,spk (default: all)"
    )
    p.add_argument(
        "--max-utts", type=int, default=None, help="analyse at most N utterances (default: all)"
    )
    p.add_argument("--out", required=True, help="output dir")
    p.add_argument(
        "--wer",
        metavar="WER_JSON",
        default=None,
        help="wer.json of `moe-asr score --out` on the same data: per-value WER beside routing",
    )
    p.add_argument(
        "--compare",
        metavar="OTHER",
        default=None,
        help="another model.pt (run on the same data) or report dir: specialisation side by side",
    )
    p.add_argument(
        "--min-lift",
        type=float,
        default=1.5,
        help="smallest lift at which an expert serves a value (default: 1.5)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the files of an earlier report in OUT (other files are kept)",
    )
    p.add_argument(
        "--dense-ok",
        action="store_true",
        help="a dense model (no MoE layers) is not an error: print a note, write nothing",
    )
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from moe_asr.analysis.pipeline import report_model

    result = report_model(
        args.model,
        args.data,
        args.out,
        groups=args.groups.split(",") if args.groups else None,
        max_utts=args.max_utts,
        wer=args.wer,
        compare=args.compare,
        min_lift=args.min_lift,
        dense_ok=args.dense_ok,
        overwrite=args.overwrite,
    )
    if result is None:
        print(f"{args.model} is a dense model (no MoE layers): no expert report")
        return 0
    for name, g in result["groups"].items():
        nmi = g.get("nmi_mean")
        ident = g.get("id") or {}
        acc, chance = ident.get("accuracy"), ident.get("chance")
        print(
            f"{name}: mean NMI {'n/a' if nmi is None else f'{nmi:.4f}'}; identification from "
            f"routing {'n/a' if acc is None else f'{acc:.3f} (chance {chance:.3f})'}"
        )
        print(g["verdict"]["text"])
    print(f"report: {args.out}/report.html")
    return 0


# adders, in the order of `moe-asr --help`
COMMANDS = [_add_score, _add_report]
