#!/usr/bin/env bash
# Common Voice English: crowd-sourced read speech, thousands of hours, self-reported accents.
# Usage: ./run.sh [--corpus-dir DIR] [asr.sh options: --stage N --stop-stage N --train-config conf/dense.yaml ...]
set -euo pipefail

corpus_dir=/data/cv-corpus-17.0-2024-03-15/en   # the unpacked corpus (layout: README.md)
train_config=conf/moe.yaml   # conf/dense.yaml: the dense baseline of the same size
train_set=train
dev_set=dev
test_sets="test"
token_type=bpe
nbpe=5000

if [ "${1:-}" = "--corpus-dir" ]; then
  corpus_dir="$2"
  shift 2
fi

exec ../../../recipes/asr.sh --train-config "$train_config" --train-set "$train_set" \
  --dev-set "$dev_set" --test-sets "$test_sets" --token-type "$token_type" --nbpe "$nbpe" \
  --local-data-opts "--corpus-dir $corpus_dir" "$@"
