#!/usr/bin/env bash
# Generate train/dev/test of the synthetic corpus: disjoint speakers and sentences per split.
# Optional held-out test sets (test speakers and sentences, the size of test):
#   --unseen-accents A,B,..  test_unseen: these accents only; none of them in train/dev/test
#   --low-snrs S,..          test_low_snr: the test accents under --noise's noise types at
#                            these SNRs (below --snrs: harder than anything in training)
#   --unseen-noise N,..      test_unseen_noise: the test accents under noise types (at
#                            --unseen-snrs) that --noise never uses
#   --reverb-rt60s T,..      test_reverb: the test accents, speakers and sentences, clean, in
#                            simulated rooms of these RT60s (seconds)
# --keep-existing true keeps every data dir that already has wav.scp and text (adds test sets
# to a data root; synthesis is deterministic, so a rebuilt dir would be the same).
set -euo pipefail

nj=2
data_root=data
train_utts=3000
accents=default
unseen_accents=""
low_snrs=""
unseen_noise=""
unseen_snrs="0,5"
reverb_rt60s=""
noise="clean,white,pink,babble"
snrs="10,20"
seed=0
keep_existing=false
. ../../../recipes/parse_options.sh

for n in ${unseen_noise//,/ }; do
  if [ "$n" = clean ] || [[ ",$noise," == *",$n,"* ]]; then
    echo "$0: --unseen-noise $n: give noise types that --noise ($noise) does not use" >&2
    exit 1
  fi
done

noisy=""  # the noise types of --noise, for test_low_snr
for n in ${noise//,/ }; do [ "$n" = clean ] || noisy+="${noisy:+,}$n"; done
if [ -n "$low_snrs" ] && [ -z "$noisy" ]; then
  echo "$0: --low-snrs needs a noise type in --noise ($noise), e.g. --noise clean,white" >&2
  exit 1
fi

held_out=$(( train_utts / 10 > 20 ? train_utts / 10 : 20 ))
exclude=()
[ -z "$unseen_accents" ] || exclude=(--exclude-accents "$unseen_accents")
synth() {  # stage 0 redoes a data dir unless --keep-existing true
  if [ "$keep_existing" = true ] && [ -s "$1/wav.scp" ] && [ -s "$1/text" ]; then
    echo "$1: kept (--keep-existing true)"
    return
  fi
  moe-asr synth "$@" --seed "$seed" --nj "$nj" --overwrite
}
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
if [ -n "$low_snrs" ]; then
  synth "$data_root/test_low_snr" --split test --num-utts "$held_out" --accents "$accents" \
    "${exclude[@]}" --noise "$noisy" --snrs "$low_snrs"
fi
if [ -n "$unseen_noise" ]; then
  synth "$data_root/test_unseen_noise" --split test --num-utts "$held_out" --accents "$accents" \
    "${exclude[@]}" --noise "$unseen_noise" --snrs "$unseen_snrs"
fi
if [ -n "$reverb_rt60s" ]; then
  synth "$data_root/test_reverb" --split test --num-utts "$held_out" --accents "$accents" \
    "${exclude[@]}" --noise clean --reverb "$reverb_rt60s"
fi
