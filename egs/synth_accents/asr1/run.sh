#!/usr/bin/env bash
# Synthetic accented, noisy English (espeak-ng voices, generated here; nothing to download).
# Usage: ./run.sh [--stage N] [--stop-stage N] [--train-config conf/moe.yaml] [--nj 2] ...
set -euo pipefail
cd "$(dirname "$0")"

train_config=conf/moe.yaml
train_utts=3000           # utterances per split; dev/test get a tenth each
accents=all               # comma-separated accent names, or all (every voice the check keeps)
noise="clean,white,pink,babble"
snrs="10,20"
seed=0

# options for this script are peeled off before the shared ones
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --train-utts | --accents | --noise | --snrs | --seed)
      declare "$(echo "${1#--}" | tr - _)=$2"
      shift 2
      ;;
    *)
      args+=("$1")
      shift
      ;;
  esac
done

exec ../../../recipes/asr.sh \
  --train-config "$train_config" \
  --local-data-opts "--train-utts $train_utts --accents $accents --noise $noise --snrs $snrs --seed $seed" \
  --token-type char \
  --decode-modes "ctc_greedy ctc_prefix_beam+lm attention_rescoring+lm" \
  "${args[@]}"
