#!/usr/bin/env bash
# Your own corpus, already in Kaldi data-dir format (README.md here): copy this dir to
# egs/<name>/asr1 or run it as is with --source-dir. Every option of recipes/asr.sh is
# accepted, in any order: ./run.sh --help lists them.
set -euo pipefail
cd "$(dirname "$0")"

# begin options
source_dir=""             # dir holding your data dirs TRAIN_SET, DEV_SET, TEST_SETS ("": already in DATA_ROOT)
train_config=conf/moe.yaml   # conf/dense.yaml: the dense baseline of the same size
train_set=train
dev_set=dev
test_sets="test"          # space-separated
token_type=char           # char for a few hours of speech; bpe (with --nbpe) for more
nbpe=300
decode_modes="ctc_greedy ctc_prefix_beam+lm attention_rescoring+lm"
# end options
help_message="Usage: $0 [--source-dir DIR] [options]   (your own Kaldi data dirs; README.md)"
po_pass_through=true
. ../../../recipes/parse_options.sh

sets="$train_set $dev_set $test_sets"
local_opts="--sets ${sets// /,}"
[ -z "$source_dir" ] || local_opts+=" --source-dir $source_dir"

exec ../../../recipes/asr.sh --train-config "$train_config" --train-set "$train_set" \
  --dev-set "$dev_set" --test-sets "$test_sets" --token-type "$token_type" --nbpe "$nbpe" \
  --decode-modes "$decode_modes" \
  --local-data-opts "$local_opts" \
  ${po_rest[@]+"${po_rest[@]}"} "$@"
