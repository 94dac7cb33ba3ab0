#!/usr/bin/env bash
# EdAcc -> $data_root/{train,dev,test} with utt2accent and utt2gender: `moe-asr prepare-corpus edacc`
# (moe_asr/corpora/edacc.py). Called by recipes/asr.sh stage 0; runnable alone:
#   local/data.sh --corpus-dir DIR [--data-root data] [--download true]
set -euo pipefail

corpus_dir=/data/edacc
data_root=data
nj=2   # accepted for the stage interface; preparation reads metadata only, one process
download=false   # true: fetch the corpus first (URLs printed; see README.md)
help_message="Usage: $0 --corpus-dir DIR [--data-root DIR] [--download true]"

. "$(dirname "$0")/../../../../recipes/parse_options.sh"

if ! { [ "$download" = true ] || [ -d "$corpus_dir" ]; }; then
  echo "$0: corpus not found at $corpus_dir: $(cd "$(dirname "$0")/.." && pwd)/README.md says where to" \
    "get it (licence, download link) and the layout read; pass --corpus-dir DIR" >&2
  exit 1
fi

dl=()
[ "$download" = true ] && dl=(--download)
moe-asr prepare-corpus edacc "$corpus_dir" "$data_root" ${dl[@]+"${dl[@]}"}
