#!/usr/bin/env bash
# EdAcc: conversational English over video calls, ~40 h, dev/test only, 40+ self-described accents.
# Usage: ./run.sh --corpus-dir DIR [--stage N --train-config conf/dense.yaml ...]; every option
# of recipes/asr.sh is accepted, in any order: ./run.sh --help lists them with their values here.
set -euo pipefail
cd "$(dirname "$0")"

# begin options
corpus_dir=/data/edacc   # the unpacked corpus (layout, licence, download: README.md)
train_config=conf/moe.yaml   # conf/dense.yaml: the dense baseline of the same size
train_set=train
dev_set=dev
test_sets="test"
token_type=bpe
nbpe=300
# end options
help_message="Usage: $0 --corpus-dir DIR [options]   (this recipe: README.md)"
po_pass_through=true
. ../../../recipes/parse_options.sh

exec ../../../recipes/asr.sh --train-config "$train_config" --train-set "$train_set" \
  --dev-set "$dev_set" --test-sets "$test_sets" --token-type "$token_type" --nbpe "$nbpe" \
  --local-data-opts "--corpus-dir $corpus_dir" ${po_rest[@]+"${po_rest[@]}"} "$@"
