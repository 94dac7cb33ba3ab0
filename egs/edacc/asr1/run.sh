#!/usr/bin/env bash
# EdAcc: conversational English over video calls, ~40 h, dev/test only, 40+ self-described accents.
# Usage: ./run.sh [--corpus-dir DIR] [asr.sh options: --stage N --stop-stage N --train-config conf/dense.yaml ...]
set -euo pipefail

corpus_dir=/data/edacc   # the unpacked corpus (layout: README.md)
train_config=conf/moe.yaml   # conf/dense.yaml: the dense baseline of the same size
train_set=train
dev_set=dev
test_sets="test"
token_type=bpe
nbpe=300

if [ "${1:-}" = "--corpus-dir" ]; then
  corpus_dir="$2"
  shift 2
fi

exec ../../../recipes/asr.sh --train-config "$train_config" --train-set "$train_set" \
  --dev-set "$dev_set" --test-sets "$test_sets" --token-type "$token_type" --nbpe "$nbpe" \
  --local-data-opts "--corpus-dir $corpus_dir" "$@"
