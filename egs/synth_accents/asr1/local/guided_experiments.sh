#!/usr/bin/env bash
# The guided-routing comparison of RESULTS.md, one training at a time (a 2-core machine runs
# two badly): data once, then per SYSTEM[:SEED] training (2,000 updates), decoding of test and
# test_unseen label-free, known-accent decoding (--force-from-data accent) for guided systems,
# scoring and the expert report; at the end the tables and results/guided.json.
#   local/guided_experiments.sh moe_hier:0 moe:0 dense:0 moe_hier:1 moe:1 dense:1
# A finished system is skipped on a rerun (the recipe's .done markers).
set -euo pipefail
cd "$(dirname "$0")/.."
. ../../../recipes/path.sh

data=data_g
exp=exp_g
modes="ctc_greedy ctc_prefix_beam+lm attention_rescoring+lm"
common=(--data-root "$data" --exp-root "$exp" --train-utts 6000 --unseen-accents sv,ro,cs,tr)
[ $# -gt 0 ] || { echo "usage: $0 CONFIG[:SEED] ...  (CONFIG: a conf/*.yaml name)" >&2; exit 1; }

./run.sh --stage 0 --stop-stage 3 "${common[@]}"
tags=()
for spec in "$@"; do
  conf=${spec%%:*}
  seed=0
  [ "$spec" = "$conf" ] || seed=${spec#*:}
  tag="${conf}_char"
  [ "$seed" = 0 ] || tag="${conf}_char_s$seed"
  tags+=("$exp/$tag")
  echo "=== $tag: $(date '+%F %T')"
  ./run.sh --stage 4 --stop-stage 8 "${common[@]}" --train-config "conf/$conf.yaml" \
    --tag "$tag" --train-args "--set train.seed=$seed" --decode-modes "$modes" \
    --decode-args "--threads 2" --report-set all
  if grep -q "guidance:" "conf/$conf.yaml"; then  # the known-accent case beside label-free
    out="$exp/$tag/decode_test_ctc_prefix_beam+lm_known_accent"
    if [ ! -f "$out/.done.score" ]; then
      moe-asr decode --model "$exp/$tag/model.pt" --data "$data/test" --mode ctc_prefix_beam \
        --lm "$data/lm/3gram.arpa" --force-from-data accent --threads 2 --no-progress \
        --out "$out" --overwrite
      moe-asr score --ref "$data/test/text" --hyp "$out/hyp.txt" --group "$data/test/utt2accent" \
        --group "$data/test/utt2noise" --cer --out "$out" --overwrite
      touch "$out/.done.score"
    fi
  fi
done
python ../../../tools/collect_results.py "${tags[@]}" --set test test_unseen \
  --modes $modes ctc_prefix_beam+lm_known_accent --groups accent noise \
  --json results/guided.json
