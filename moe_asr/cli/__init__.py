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


class _ShowDefaults:
    """Formatter mixin: every option's help ends with its default, unless the default is
    None/False/empty (then the help says what happens) or the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if (
            "default" in text
            or d is None
            or d is False
            or d == []
            or d is argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        return f"{text} (default: {d})" if text else f"default: {d}"

    def _format_action(self, action: argparse.Action) -> str:
        if action.help == "" and self._get_help_string(action):
            action = argparse.Action(
                action.option_strings, action.dest, nargs=action.nargs, default=action.default,
                metavar=action.metavar, choices=action.choices, help=self._get_help_string(action),
            )  # fmt: skip
        return super()._format_action(action)


def _with_defaults(formatter: type) -> type:
    return type(f"Defaults{formatter.__name__}", (_ShowDefaults, formatter), {})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("moe_asr")
    except PackageNotFoundError:  # run from a checkout without installing
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moe-asr",
        description="Mixture-of-Experts Conformer speech recognition for accented and noisy speech.",
    )
    parser.add_argument("--version", action="version", version=f"moe-asr {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub)
    for p in sub.choices.values():
        p.formatter_class = _with_defaults(p.formatter_class)
        for action in p._actions:
            if action.help is None and action.option_strings:
                action.help = ""  # argparse prints no help line, hence no default, for None
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
