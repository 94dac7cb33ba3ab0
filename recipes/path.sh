#!/usr/bin/env bash
# Puts this checkout's `moe-asr` on PATH (Kaldi's path.sh; sourced by asr.sh after the options,
# so that --help works before installing). The repo's .venv (made by `make venv`, `make demo`
# or `make test`) comes first; otherwise a `moe-asr` already on PATH (an activated venv, a
# `pip install -e .`) is used; without either, say how to install and stop.
_moe_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$_moe_repo/.venv/bin/moe-asr" ]; then
  export PATH="$_moe_repo/.venv/bin:$PATH"
elif ! command -v moe-asr >/dev/null 2>&1; then
  echo "moe-asr is not installed: run \`make venv\` in $_moe_repo (creates $_moe_repo/.venv;" \
    "recipes find it themselves) or \`pip install -e $_moe_repo\` in an environment on PATH" >&2
  exit 1
fi
unset _moe_repo
