#!/usr/bin/env bash
# Kaldi's option convention, written for moe_asr: source this after declaring defaults.
# Every `--name value` (or `--name=value`) sets the shell variable `name` (dashes become
# underscores) if, and only if, that variable already exists; anything else is an error,
# unless the caller set `po_pass_through=true` (a recipe's run.sh): then unknown options are
# collected, in order, in the array `po_rest` for the script it calls. Options come in any
# order and stop at the first non-option argument; the remaining arguments stay in "$@".
#
# `--help`/`-h` prints $help_message, then every option declared between the lines
# `# begin options` and `# end options` of the calling script ($0) with its current value
# (the default, or what the caller set) and its comment. With `po_pass_through=true`,
# `--help` is also passed on (last, after every other option), so that the called script
# lists its own options with the values this recipe gives them.

# _po_options FILE: "name<TAB>comment" for each `name=value  # comment` of FILE's options block
_po_options() {
  local line name comment in_block=false
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      "# begin options"*) in_block=true && continue ;;
      "# end options"*) break ;;
    esac
    $in_block || continue
    [[ "$line" =~ ^([A-Za-z_][A-Za-z0-9_]*)= ]] || continue
    name="${BASH_REMATCH[1]}"
    comment=""
    [[ "$line" =~ \ #\ (.*)$ ]] && comment="${BASH_REMATCH[1]}"
    printf '%s\t%s\n' "$name" "$comment"
  done <"$1"
}

_po_usage() {
  echo "${help_message:-usage: $(basename "$0") [--option value ...]}"
  local name comment opts
  opts="$(_po_options "$0")"
  [ -n "$opts" ] || return 0
  echo "Options of $(basename "$(dirname "$0")")/$(basename "$0") (value in effect in brackets):"
  while IFS=$'\t' read -r name comment; do
    printf '  %-24s [%s]%s\n' "--${name//_/-}" "${!name-}" "${comment:+  $comment}"
  done <<<"$opts"
}

po_rest=()
_po_help=false
while [ $# -gt 0 ]; do
  case "$1" in
    --help | -h)
      if [ "${po_pass_through:-false}" = true ]; then
        _po_help=true
        shift
        continue
      fi
      _po_usage
      exit 0
      ;;
    --*=*)
      _po_name="${1%%=*}"
      _po_value="${1#*=}"
      _po_n=1
      ;;
    --*)
      if [ $# -lt 2 ]; then
        echo "$0: option $1 needs a value" >&2
        exit 1
      fi
      _po_name="$1"
      _po_value="$2"
      _po_n=2
      ;;
    *)
      break
      ;;
  esac
  _po_var="${_po_name#--}"
  _po_var="${_po_var//-/_}"
  if ! [[ "$_po_var" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!_po_var+set}" ]; then
    if [ "${po_pass_through:-false}" = true ]; then
      po_rest+=("${@:1:$_po_n}")
      shift "$_po_n"
      continue
    fi
    echo "$0: unknown option $_po_name (--help lists every option)" >&2
    exit 1
  fi
  shift "$_po_n"
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
if $_po_help; then
  _po_usage
  echo
  po_rest+=(--help)
fi
unset _po_name _po_value _po_var _po_n _po_help
