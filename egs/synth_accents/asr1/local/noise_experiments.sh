#!/usr/bin/env bash
# The noise-robustness comparison of RESULTS.md: local/guided_experiments.sh's systems on its
# data (data_g) decoded also on three condition test sets that no system trains on
# (the test accents, speakers and sentences): test_low_snr (white/pink/babble at 0 and 5 dB;
# the data has 10 and 20 dB), test_unseen_noise (brown or music at 0 and 5 dB) and test_reverb
# (clean speech in rooms of RT60 0.3/0.6/0.9 s). Results: results/noise.json (JSON=FILE: there).
#   local/noise_experiments.sh moe:0 moe_noise_wide:0 moe_noise_guided:0
# A system trained before (e.g. moe:0 by guided_experiments.sh) is not retrained; its missing
# decodes, scores and reports are added.
set -euo pipefail
cd "$(dirname "$0")/.."
. ../../../recipes/path.sh

data=data_g
conditions=(--low-snrs 0,5 --unseen-noise brown,music --unseen-snrs 0,5 --reverb-rt60s 0.3,0.6,0.9)
sets="test test_unseen test_low_snr test_unseen_noise test_reverb"
[ $# -gt 0 ] || { echo "usage: $0 CONFIG[@FROM][:SEED] ...  (as local/guided_experiments.sh)" >&2; exit 1; }

missing=false
for s in $sets; do [ -s "$data/$s/wav.scp" ] || missing=true; done
if $missing; then  # add the condition sets to the data root, then validate them all
  rm -f "$data/.done/stage0" "$data/.done/stage1"
  ./run.sh --stage 0 --stop-stage 1 --data-root "$data" --train-utts 6000 \
    --unseen-accents sv,ro,cs,tr "${conditions[@]}" --keep-existing true
fi
RECIPE_OPTS="${conditions[*]}" SETS="$sets" RESULT_GROUPS="noise snr rt60 accent" \
  JSON=${JSON:-results/noise.json} exec local/guided_experiments.sh "$@"
