#!/usr/bin/env bash
# Synthetic accented, noisy English (espeak-ng voices, generated here; nothing to download).
# Usage: ./run.sh [--stage N] [--stop-stage N] [--train-config conf/moe.yaml] [--nj 2] ...
set -euo pipefail
cd "$(dirname "$0")"

train_config=conf/moe.yaml
train_utts=3000           # utterances per split; dev/test get a tenth each
accents=default           # accent codes, default (the 16 of make demo) or all (every voice that passes)
unseen_accents=""         # e.g. cy,fi,tr,sw: kept out of train/dev/test, only in data/test_unseen
unseen_noise=""           # e.g. brown: noise types not in --noise, only in data/test_unseen_noise
unseen_snrs="0,5"         # SNRs of the unseen-noise test set
noise="clean,white,pink,babble"
snrs="10,20"
seed=0

# options for this script are peeled off before the shared ones
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --train-utts | --accents | --unseen-accents | --unseen-noise | --unseen-snrs | --noise | --snrs | --seed)
      declare "$(echo "${1#--}" | tr - _)=$2"
      shift 2
      ;;
    *)
      args+=("$1")
      shift
      ;;
  esac
done

data_opts="--train-utts $train_utts --accents $accents --noise $noise --snrs $snrs --seed $seed"
test_sets="test"
if [ -n "$unseen_accents" ]; then
  data_opts+=" --unseen-accents $unseen_accents"
  test_sets+=" test_unseen"
fi
if [ -n "$unseen_noise" ]; then
  data_opts+=" --unseen-noise $unseen_noise --unseen-snrs $unseen_snrs"
  test_sets+=" test_unseen_noise"
fi

exec ../../../recipes/asr.sh \
  --train-config "$train_config" \
  --local-data-opts "$data_opts" \
  --test-sets "$test_sets" \
  --report-set all \
  --token-type char \
  --decode-modes "ctc_greedy ctc_prefix_beam+lm attention_rescoring+lm" \
  "${args[@]}"
