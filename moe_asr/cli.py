"""Command-line interface: `moe-asr <subcommand>`; each subcommand is a thin call into the library.

To add a subcommand: write ``_add_<name>(sub)`` that declares its arguments and sets
``func`` to a ``_run_<name>(args) -> int``, then list it in ``_COMMANDS``. Library
imports happen inside ``_run_*`` so that ``moe-asr --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

__all__ = ["main", "build_parser"]


def _add_validate_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate-data",
        help="check a Kaldi data dir; report every problem as file:line: what",
        description="Check sorting, unique ids, audio/text/speaker coverage, spk2utt, group "
        "files (utt2accent, utt2noise, ...), empty transcripts and encoding. Exit 1 on any problem.",
    )
    p.add_argument("dir")
    p.add_argument("--check-audio", action="store_true", help="open every audio file")
    p.add_argument("--allow-pipes", action="store_true", help="accept `cmd |` wav.scp entries")
    p.set_defaults(func=_run_validate_data)


def _run_validate_data(args: argparse.Namespace) -> int:
    from moe_asr.data.datadir import validate_datadir

    problems = validate_datadir(
        args.dir, check_audio=args.check_audio, allow_pipes=args.allow_pipes
    )
    for p in problems:
        print(p)
    if problems:
        print(
            f"{args.dir}: {len(problems)} problem(s); `moe-asr fix-data {args.dir}` repairs "
            "sorting, spk2utt and incomplete utterances",
            file=sys.stderr,
        )
        return 1
    print(f"{args.dir}: OK", file=sys.stderr)
    return 0


def _add_fix_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fix-data",
        help="sort, rebuild spk2utt, drop incomplete utterances (originals backed up first)",
        description="Copies every file to DIR/.backup/<timestamp>/ first, then sorts and dedupes "
        "the tables, rebuilds spk2utt, drops utterances lacking audio, text or speaker "
        "(listed in the backup's `dropped` file) and gives missing group labels the value `unk`.",
    )
    p.add_argument("dir")
    p.add_argument("--allow-pipes", action="store_true")
    p.set_defaults(func=_run_fix_data)


def _run_fix_data(args: argparse.Namespace) -> int:
    from moe_asr.data.datadir import fix_datadir

    report = fix_datadir(args.dir, allow_pipes=args.allow_pipes)
    for utt, why in sorted(report.dropped.items()):
        print(f"dropped {utt}: {why}")
    for name, utts in sorted(report.filled_unk.items()):
        print(f"{name}: {len(utts)} utterance(s) without a label set to unk")
    print(f"kept {report.kept} utterance(s); originals in {report.backup}")
    return 0


_SCORE_DESCRIPTION = """\
Score hypotheses (Kaldi `utt-id words`, words may be empty) against a reference `text`:
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
    p.add_argument("--ref", required=True, help="reference transcripts (a data dir's `text`)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--hyp", help="hypotheses (`hyp.txt`: utt-id words)")
    what.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two hypothesis files")
    p.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="[NAME=]FILE",
        help="utt2<name> label file (repeatable); NAME defaults to the file name after utt2",
    )
    p.add_argument("--cer", action="store_true", help="also report CER (spaces count)")
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
    p.set_defaults(func=_run_score)


def _run_score(args: argparse.Namespace) -> int:
    from moe_asr import scoring

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
        report = scoring.compare_files(args.ref, *args.compare, args.group, **common)
        print(scoring.format_compare_markdown(report), end="")
        written = scoring.write_compare_outputs(report, args.out) if args.out else []
    else:
        report = scoring.score_files(args.ref, args.hyp, args.group, cer=args.cer, **common)
        print(scoring.format_markdown(report), end="")
        written = scoring.write_outputs(report, args.out) if args.out else []
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (torchrun --nproc-per-node N -m moe_asr.cli train ... for DDP)",
        description="Train on a Kaldi data dir. Writes EXP/config.yaml (resolved), EXP/train.log, "
        "EXP/tensorboard/, EXP/checkpoints/ (epoch-N.pt, last.pt). --resume continues the same run.",
    )
    p.add_argument("--config", required=True, help="YAML experiment config")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. model.moe.num_experts=8 (repeatable)",
    )
    p.add_argument("--train-data", required=True)
    p.add_argument("--dev-data", required=True)
    p.add_argument("--tokenizer", required=True, help="dir written by `moe-asr train-tokenizer`")
    p.add_argument("--cmvn", default=None, help="global CMVN json from `moe-asr compute-cmvn`")
    p.add_argument("--exp", required=True, help="experiment dir")
    p.add_argument("--resume", action="store_true", help="continue from EXP/checkpoints/last.pt")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-clock budget; ends cleanly with a checkpoint (train.max_minutes)",
    )
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moe_asr.config import load_config
    from moe_asr.train.trainer import TrainSetup, train

    overrides = list(args.overrides)
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes}")
    result = train(
        TrainSetup(
            config=load_config(args.config, overrides),
            train_data=Path(args.train_data),
            dev_data=Path(args.dev_data),
            tokenizer_dir=Path(args.tokenizer),
            cmvn_path=Path(args.cmvn) if args.cmvn else None,
            exp_dir=Path(args.exp),
            resume=args.resume,
        )
    )
    print(f"{result.stopped_because}; {result.steps} steps, {result.epochs_completed} epochs")
    return 0


def _add_average(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "average",
        help="average checkpoints into EXP/model.pt, the self-contained model package",
    )
    p.add_argument("--exp", required=True)
    p.add_argument("--num", type=int, default=5, help="number of epoch checkpoints")
    p.add_argument("--best", action="store_true", help="the best by dev loss, not the last")
    p.set_defaults(func=_run_average)


def _run_average(args: argparse.Namespace) -> int:
    from moe_asr.train.average import average_experiment

    path, epochs = average_experiment(args.exp, args.num, best=args.best)
    used = f"epochs {', '.join(map(str, epochs))}" if epochs else "last.pt"
    print(f"{path}: averaged {used}")
    return 0


# name -> adder; order is the order in --help
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_validate_data,
    _add_fix_data,
    _add_score,
    _add_train,
    _add_average,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moe-asr",
        description="Mixture-of-Experts Conformer speech recognition for accented and noisy speech.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from moe_asr.errors import UserError

    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"moe-asr {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
