#!/usr/bin/env bash
# Kaldi's option convention, written for moe_asr: source this after declaring defaults.
# Every `--name value` (or `--name=value`) sets the shell variable `name` (dashes become
# underscores) if, and only if, that variable already exists; anything else is an error.
# `--help`/`-h` prints $help_message. Options stop at the first non-option argument;
# the remaining arguments are left in "$@".

_po_usage() {
  echo "${help_message:-usage: $0 [--option value ...]}" >&2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --help | -h)
      _po_usage
      exit 0
      ;;
    --*=*)
      _po_name="${1%%=*}"
      _po_value="${1#*=}"
      shift
      ;;
    --*)
      if [ $# -lt 2 ]; then
        echo "$0: option $1 needs a value" >&2
        exit 1
      fi
      _po_name="$1"
      _po_value="$2"
      shift 2
      ;;
    *)
      break
      ;;
  esac
  _po_var="${_po_name#--}"
  _po_var="${_po_var//-/_}"
  if ! [[ "$_po_var" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!_po_var+set}" ]; then
    echo "$0: unknown option $_po_name" >&2
    _po_usage
    exit 1
  fi
  # booleans stay booleans: only true/false are accepted for a variable that holds one
  case "${!_po_var}" in
    true | false)
      case "$_po_value" in
        true | false) ;;
        *)
          echo "$0: option $_po_name expects true or false, got '$_po_value'" >&2
          exit 1
          ;;
      esac
      ;;
  esac
  printf -v "$_po_var" '%s' "$_po_value"
done
unset _po_name _po_value _po_var
