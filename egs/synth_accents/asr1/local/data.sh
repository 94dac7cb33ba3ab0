#!/usr/bin/env bash
# Generate train/dev/test of the synthetic corpus: disjoint speakers and sentences per split.
set -euo pipefail

nj=2
data_root=data
train_utts=3000
accents=all
noise="clean,white,pink,babble"
snrs="10,20"
seed=0
. ../../../recipes/parse_options.sh

held_out=$(( train_utts / 10 > 20 ? train_utts / 10 : 20 ))
accent_opt=()
[ "$accents" = all ] || accent_opt=(--accents "$accents")
for split in train dev test; do
  n=$train_utts
  [ "$split" = train ] || n=$held_out
  moe-asr synth "$data_root/$split" --split "$split" --num-utts "$n" "${accent_opt[@]}" \
    --noise "$noise" --snrs "$snrs" --seed "$seed" --nj "$nj" --overwrite  # stage 0 redoes it
done
