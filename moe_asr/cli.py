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


# name -> adder; order is the order in --help
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_validate_data,
    _add_fix_data,
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
