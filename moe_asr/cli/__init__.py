"""Command-line interface: `moe-asr <subcommand>`; each subcommand is a thin call into the library.

Subcommands live in this package by area (``data``, ``train``, ``decode``, ``evaluate``). To
add one: write ``_add_<name>(sub)`` that declares its arguments and sets ``func`` to a
``_run_<name>(args) -> int``, and list the adder in its module's ``COMMANDS``. Library
imports happen inside ``_run_*`` so that ``moe-asr --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import sys

from moe_asr.cli import data, decode, evaluate, train

__all__ = ["main", "build_parser"]

_COMMANDS = [*data.COMMANDS, *train.COMMANDS, *decode.COMMANDS, *evaluate.COMMANDS]


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
    except OSError as e:
        # a full disk or quota hit outside the atomic writers (logs, tensorboard): one line
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(
            f"moe-asr {args.command}: error: {where}no space left on device; free some space, "
            "then run the command again",
            file=sys.stderr,
        )
        return 1
