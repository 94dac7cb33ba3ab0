#!/usr/bin/env bash
# L2-ARCTIC -> $data_root/{train,dev,test} with utt2accent and utt2gender: `moe-asr prepare-corpus l2arctic`
# (moe_asr/corpora/l2arctic.py). Called by recipes/asr.sh stage 0; runnable alone:
#   local/data.sh --corpus-dir DIR [--data-root data]
set -euo pipefail

corpus_dir=/data/l2arctic_release_v5
data_root=data
nj=2   # accepted for the stage interface; preparation reads metadata only, one process
help_message="Usage: $0 --corpus-dir DIR [--data-root DIR]"

. "$(dirname "$0")/../../../../recipes/parse_options.sh"

if ! { [ -d "$corpus_dir" ]; }; then
  echo "$0: corpus not found at $corpus_dir: $(cd "$(dirname "$0")/.." && pwd)/README.md says where to" \
    "get it (licence, download link) and the layout read; pass --corpus-dir DIR" >&2
  exit 1
fi

moe-asr prepare-corpus l2arctic "$corpus_dir" "$data_root"
