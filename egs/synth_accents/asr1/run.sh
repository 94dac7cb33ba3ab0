#!/usr/bin/env bash
# Synthetic accented, noisy English (espeak-ng voices, generated here; nothing to download).
# Usage: ./run.sh [--stage N] [--train-config conf/demo.yaml] [--train-utts 4000] ...; every
# option of recipes/asr.sh is accepted, in any order: ./run.sh --help lists them.
set -euo pipefail
cd "$(dirname "$0")"

# begin options
train_config=conf/moe.yaml   # demo, dense, moe, moe_guided, tiny (CI size) in conf/
train_utts=3000           # utterances per split; dev/test get a tenth each
accents=default           # accent codes, default (the 16 of make demo) or all (every voice that passes)
unseen_accents=""         # e.g. cy,fi,tr,sw: kept out of train/dev/test, only in data/test_unseen
low_snrs=""               # e.g. 0,5: data/test_low_snr: the --noise types at these SNRs
unseen_noise=""           # e.g. brown: noise types not in --noise, only in data/test_unseen_noise
unseen_snrs="0,5"         # SNRs of the unseen-noise test set
reverb_rt60s=""           # e.g. 0.3,0.6,0.9: RT60s (s) of data/test_reverb (clean test in rooms)
noise="clean,white,pink,babble"  # noise conditions mixed into the audio
snrs="10,20"              # SNRs in dB of the noisy conditions
seed=0                    # synthesis seed
keep_existing=false       # true: stage 0 keeps data dirs that exist (adds test sets to a root)
token_type=char
decode_modes="ctc_greedy ctc_prefix_beam+lm attention_rescoring+lm"
# end options
help_message="Usage: $0 [options]   (synthetic accented English; make demo runs it)"
po_pass_through=true
. ../../../recipes/parse_options.sh

data_opts="--train-utts $train_utts --accents $accents --noise $noise --snrs $snrs --seed $seed"
data_opts+=" --keep-existing $keep_existing"
test_sets="test"
if [ -n "$unseen_accents" ]; then
  data_opts+=" --unseen-accents $unseen_accents"
  test_sets+=" test_unseen"
fi
if [ -n "$low_snrs" ]; then
  data_opts+=" --low-snrs $low_snrs"
  test_sets+=" test_low_snr"
fi
if [ -n "$unseen_noise" ]; then
  data_opts+=" --unseen-noise $unseen_noise --unseen-snrs $unseen_snrs"
  test_sets+=" test_unseen_noise"
fi
if [ -n "$reverb_rt60s" ]; then
  data_opts+=" --reverb-rt60s $reverb_rt60s"
  test_sets+=" test_reverb"
fi

exec ../../../recipes/asr.sh \
  --train-config "$train_config" \
  --local-data-opts "$data_opts" \
  --test-sets "$test_sets" \
  --report-set all \
  --token-type "$token_type" \
  --decode-modes "$decode_modes" \
  ${po_rest[@]+"${po_rest[@]}"} "$@"
