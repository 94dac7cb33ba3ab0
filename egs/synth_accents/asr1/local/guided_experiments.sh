#!/usr/bin/env bash
# The guided-routing comparison of RESULTS.md, one training at a time (a 2-core machine runs
# two badly): data once, then per SYSTEM[:SEED] training (2,000 updates), decoding of test and
# test_unseen label-free, known-label decoding (--force-from-data) for guided systems,
# scoring and the expert report; at the end the tables and results/guided.json.
#   local/guided_experiments.sh moe_hier:0 moe:0 dense:0 moe_hier:1 moe:1 dense:1
# CONFIG:SEED@FROM continues FROM's model of the same seed (`train --init`, upcycling) for
# CONT_STEPS more updates (default 1000) at peak learning rate CONT_LR (default 0.001):
#   local/guided_experiments.sh moe@moe:0 moe_est@moe:0   # unguided vs guided continuation
# FROM_SEED=S takes FROM's model of seed S instead (the tag keeps the run's own seed). An init
# of seed S > 0 is in the tag: moe@moe:1 (a full seed 1) -> moe_from_moe_s1_char_s1, while
# FROM_SEED=0 moe@moe:1 -> moe_from_moe_char_s1.
# RECIPE_OPTS adds run.sh options (e.g. condition test sets); SETS, RESULT_GROUPS and JSON
# choose the summary's test sets, label groups and file (local/noise_experiments.sh sets them).
# A finished system is skipped on a rerun (the recipe's .done markers).
set -euo pipefail
cd "$(dirname "$0")/.."
. ../../../recipes/path.sh

data=data_g
exp=exp_g
modes="ctc_greedy ctc_prefix_beam+lm attention_rescoring+lm"
read -r -a recipe_opts <<< "${RECIPE_OPTS:-}"
common=(--data-root "$data" --exp-root "$exp" --train-utts 6000 --unseen-accents sv,ro,cs,tr
  ${recipe_opts[@]+"${recipe_opts[@]}"})
cont_steps=${CONT_STEPS:-1000}
cont_lr=${CONT_LR:-0.001}
[ $# -gt 0 ] || { echo "usage: $0 CONFIG[@FROM][:SEED] ...  (CONFIG, FROM: conf/*.yaml names)" >&2; exit 1; }

./run.sh --stage 0 --stop-stage 3 "${common[@]}"
known_decode() {  # SET SUFFIX LABEL...: decode SET with the true LABELs of $tag's model
  local set=$1 suffix=$2 out="$exp/$tag/decode_$1_ctc_prefix_beam+lm_known_$2"
  shift 2
  [ -s "$data/$set/wav.scp" ] && [ ! -f "$out/.done.score" ] || return 0
  moe-asr decode --model "$exp/$tag/model.pt" --data "$data/$set" --mode ctc_prefix_beam \
    --lm "$data/lm/3gram.arpa" $(printf -- '--force-from-data %s ' "$@") --threads 2 \
    --no-progress --out "$out" --overwrite
  local groups=()
  for g in accent noise snr; do
    [ -f "$data/$set/utt2$g" ] && groups+=(--group "$data/$set/utt2$g")
  done
  moe-asr score --ref "$data/$set/text" --hyp "$out/hyp.txt" "${groups[@]}" --cer \
    --out "$out" --overwrite
  touch "$out/.done.score"
}

tags=()
for spec in "$@"; do
  name=${spec%%:*}
  seed=0
  [ "$spec" = "$name" ] || seed=${spec#*:}
  conf=${name%%@*}
  suffix=""
  [ "$seed" = 0 ] || suffix="_s$seed"
  tag="${conf}_char$suffix"
  train_args="--set train.seed=$seed"
  if [ "$name" != "$conf" ]; then  # a continuation of FROM's model (same seed)
    from=${name#*@}
    from_seed=${FROM_SEED:-$seed}
    init_suffix=""
    [ "$from_seed" = 0 ] || init_suffix="_s$from_seed"
    init="$exp/${from}_char$init_suffix/model.pt"
    [ -f "$init" ] || { echo "$spec: no $init (train $from:$from_seed first)" >&2; exit 1; }
    # an init of another seed than 0 is named (a full seed); FROM_SEED=0 runs keep their names
    tag="${conf}_from_${from}${init_suffix}_char$suffix"
    train_args+=" --init $init --set train.max_steps=$cont_steps --set train.lr=$cont_lr"
  fi
  tags+=("$exp/$tag")
  echo "=== $tag: $(date '+%F %T')"
  ./run.sh --stage 4 --stop-stage 8 "${common[@]}" --train-config "conf/$conf.yaml" \
    --tag "$tag" --train-args "$train_args" --decode-modes "$modes" \
    --decode-args "--threads 2" --report-set all
  # the known-label case beside label-free: the true accent on test (accent-guided models),
  # the true noise type and SNR bucket on the sets with seen noise types (noise-guided)
  labels=$(python -c 'import json,sys; print(*json.load(open(sys.argv[1])))' "$exp/$tag/label_vocab.json")
  case " $labels " in *" accent "*) known_decode test accent accent ;; esac
  case " $labels " in *" noise "*)
    case " $labels " in *" snr "*) cond_labels="noise snr" ;; *) cond_labels=noise ;; esac
    for s in test test_low_snr test_reverb; do known_decode "$s" condition $cond_labels; done ;;
  esac
done
python ../../../tools/collect_results.py "${tags[@]}" --set ${SETS:-test test_unseen} \
  --modes $modes ctc_prefix_beam+lm_known_accent ctc_prefix_beam+lm_known_condition \
  --groups ${RESULT_GROUPS:-accent noise} --json "${JSON:-results/guided.json}"
