#!/usr/bin/env bash
# Generate train/dev/test of the synthetic corpus: disjoint speakers and sentences per split.
# Optional held-out test sets (test speakers and sentences, the size of test):
#   --unseen-accents A,B,..  test_unseen: these accents only; none of them in train/dev/test
#   --unseen-noise N,..      test_unseen_noise: the test accents under noise types (at
#                            --unseen-snrs) that --noise never uses
#   --reverb-rt60s T,..      test_reverb: the test accents, speakers and sentences, clean, in
#                            simulated rooms of these RT60s (seconds)
set -euo pipefail

nj=2
data_root=data
train_utts=3000
accents=default
unseen_accents=""
unseen_noise=""
unseen_snrs="0,5"
reverb_rt60s=""
noise="clean,white,pink,babble"
snrs="10,20"
seed=0
. ../../../recipes/parse_options.sh

for n in ${unseen_noise//,/ }; do
  if [ "$n" = clean ] || [[ ",$noise," == *",$n,"* ]]; then
    echo "$0: --unseen-noise $n: give noise types that --noise ($noise) does not use" >&2
    exit 1
  fi
done

held_out=$(( train_utts / 10 > 20 ? train_utts / 10 : 20 ))
exclude=()
[ -z "$unseen_accents" ] || exclude=(--exclude-accents "$unseen_accents")
synth() { moe-asr synth "$@" --seed "$seed" --nj "$nj" --overwrite; }  # stage 0 redoes it
for split in train dev test; do
  n=$train_utts
  [ "$split" = train ] || n=$held_out
  synth "$data_root/$split" --split "$split" --num-utts "$n" --accents "$accents" "${exclude[@]}" \
    --noise "$noise" --snrs "$snrs"
done
if [ -n "$unseen_accents" ]; then
  synth "$data_root/test_unseen" --split test --num-utts "$held_out" --accents "$unseen_accents" \
    --noise "$noise" --snrs "$snrs"
fi
if [ -n "$unseen_noise" ]; then
  synth "$data_root/test_unseen_noise" --split test --num-utts "$held_out" --accents "$accents" \
    "${exclude[@]}" --noise "$unseen_noise" --snrs "$unseen_snrs"
fi
if [ -n "$reverb_rt60s" ]; then
  synth "$data_root/test_reverb" --split test --num-utts "$held_out" --accents "$accents" \
    "${exclude[@]}" --noise clean --reverb "$reverb_rt60s"
fi
