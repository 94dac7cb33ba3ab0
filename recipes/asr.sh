#!/usr/bin/env bash
# The shared stage script. A recipe's run.sh sets names and configs and calls this with "$@".
#   0 data prep (local/data.sh)  1 validate/fix  2 CMVN  3 tokenizer (+ word LM)  4 train  5 average
#   6 decode  7 score per group  8 expert report
# Finished stages leave a .done marker and are skipped on a rerun; an interrupted training
# run resumes from its last checkpoint. Each stage logs to <exp>/logs/stage<N>.log.
set -euo pipefail

# begin options (each is --name VALUE; `--help` lists them with the values in effect)
stage=0                  # first stage to run
stop_stage=100           # last stage to run
ngpu=0                   # >1: torchrun with that many processes (nccl on GPU)
nj=2                     # parallel jobs for data prep
data_root=data           # where the Kaldi data dirs, tokenizer and LM go
exp_root=exp             # experiments go to EXP_ROOT/TAG
train_set=train          # data dir names below DATA_ROOT
dev_set=dev
test_sets="test"         # space-separated
local_data_opts=""       # passed to local/data.sh
train_config=conf/moe.yaml  # YAML experiment config (every recipe has conf/moe.yaml, conf/dense.yaml)
train_args=""            # extra `moe-asr train` options, e.g. "--set train.max_epochs=3" or
                         # "--init exp/dense_char/model.pt" (upcycle a dense model into MoE)
token_type=char          # char | bpe | unigram
nbpe=256                 # vocabulary size for bpe/unigram
tag=""                   # experiment name; default: train config name + token type
num_avg=5                # checkpoints averaged into model.pt
avg_best=true            # average the best (dev loss) checkpoints, else the last ones
lm_order=3               # word n-gram LM from the training text (0: none)
decode_modes="ctc_greedy attention_rescoring"  # a mode+lm (e.g. ctc_prefix_beam+lm) uses the LM
decode_args=""           # extra `moe-asr decode` options, e.g. "--beam 30"
report_max_utts=1000     # utterances analysed by the expert report
report_set=""            # default: the first test set; a list of sets, or all (every test set)
# end options
help_message="recipes/asr.sh, the shared stages, called by run.sh (options in any order):
Stages: 0 data, 1 validate, 2 cmvn, 3 tokenizer + LM, 4 train, 5 average, 6 decode, 7 score,
8 report. Finished stages are skipped on a rerun (.done markers)."

. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"
. "$(dirname "${BASH_SOURCE[0]}")/path.sh"

[ -n "$tag" ] || tag="$(basename "${train_config%.*}")_${token_type}$([ "$token_type" = char ] || echo "$nbpe")"
[ -n "$report_set" ] || report_set="${test_sets%% *}"
[ "$report_set" != all ] || report_set="$test_sets"
lang_dir="$data_root/lang_${token_type}$([ "$token_type" = char ] || echo "$nbpe")"
lm_path="$data_root/lm/${lm_order}gram.arpa"
exp_dir="$exp_root/$tag"
if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ] && [ ! -f "$train_config" ]; then
  echo "$0: --train-config $train_config: no such file (here: $(ls conf/*.yaml 2>/dev/null | tr '\n' ' '))" >&2
  exit 1
fi
if [ "$stage" -ge 6 ] && [ "$stop_stage" -ge 6 ] && [ ! -f "$exp_dir/model.pt" ]; then
  echo "$0: $exp_dir holds no model (the tag is the train config's name + token type, e.g." \
    "conf/demo.yaml -> demo_char); experiments here: $(ls "$exp_root" 2>/dev/null | tr '\n' ' ')" \
    "(pick one with --tag NAME or --train-config FILE)" >&2
  exit 1
fi
mkdir -p "$exp_dir/logs" "$data_root/.done"

# run_stage N NAME MARKER CMD...: skip when MARKER exists, else log CMD and create MARKER.
# An empty MARKER: the stage keeps a marker per output dir itself (decode, score, report),
# so new decode modes or test sets run while finished ones are skipped.
run_stage() {
  local n="$1" name="$2" marker="$3"
  shift 3
  if [ "$n" -lt "$stage" ] || [ "$n" -gt "$stop_stage" ]; then return 0; fi
  if [ -n "$marker" ] && [ -f "$marker" ]; then
    echo "stage $n ($name): done before ($marker), skipped"
    return 0
  fi
  echo "stage $n ($name): $(date '+%F %T'), log: $exp_dir/logs/stage$n.log"
  "$@" 2>&1 | tee -a "$exp_dir/logs/stage$n.log"
  [ -z "$marker" ] || touch "$marker"
}

# done_before DIR WHAT: true (and says so) when DIR/.done.WHAT exists
done_before() {
  if [ -f "$1/.done.$2" ]; then
    echo "$1: $2 done before, skipped (remove $1/.done.$2 to redo)"
    return 0
  fi
  return 1
}

all_sets="$train_set $dev_set $test_sets"

stage0() { local/data.sh --nj "$nj" --data-root "$data_root" $local_data_opts; }
run_stage 0 data "$data_root/.done/stage0" stage0

stage1() {
  for s in $all_sets; do
    if ! moe-asr validate-data "$data_root/$s"; then
      moe-asr fix-data "$data_root/$s"
      moe-asr validate-data "$data_root/$s"
    fi
  done
}
run_stage 1 validate "$data_root/.done/stage1" stage1

# A stage whose marker is missing redoes its own outputs: hence --overwrite below (the
# commands refuse to replace results otherwise; files they do not write are kept).
stage2() { moe-asr compute-cmvn "$data_root/$train_set" "$data_root/$train_set/cmvn.json" --overwrite; }
run_stage 2 cmvn "$data_root/.done/stage2" stage2

stage3() {
  moe-asr train-tokenizer --data "$data_root/$train_set/text" --type "$token_type" \
    --vocab-size "$nbpe" --out "$lang_dir" --overwrite
  if [ "$lm_order" -gt 0 ] && [ ! -f "$lm_path" ]; then
    moe-asr train-lm --data "$data_root/$train_set" --order "$lm_order" --out "$lm_path"
  fi
}
run_stage 3 tokenizer "$lang_dir/.done" stage3

stage4() {
  local launcher=(moe-asr)
  if [ "$ngpu" -gt 1 ]; then
    launcher=(torchrun --standalone --nproc-per-node "$ngpu" -m moe_asr.cli)
  fi
  local resume=()
  [ -f "$exp_dir/checkpoints/last.pt" ] && resume=(--resume)
  "${launcher[@]}" train --config "$train_config" --train-data "$data_root/$train_set" \
    --dev-data "$data_root/$dev_set" --tokenizer "$lang_dir" \
    --cmvn "$data_root/$train_set/cmvn.json" --exp "$exp_dir" "${resume[@]}" $train_args
}
run_stage 4 train "$exp_dir/.done.train" stage4

stage5() {
  local best=()
  [ "$avg_best" = true ] && best=(--best)
  moe-asr average --exp "$exp_dir" --num "$num_avg" "${best[@]}" --overwrite
}
run_stage 5 average "$exp_dir/.done.average" stage5

stage6() {
  for s in $test_sets; do
    for mode in $decode_modes; do
      local lm=()
      if [ "${mode%+lm}" != "$mode" ]; then
        [ -f "$lm_path" ] || { echo "decode mode $mode needs $lm_path (--lm-order > 0)" >&2; exit 1; }
        lm=(--lm "$lm_path")
      fi
      local out="$exp_dir/decode_${s}_${mode}"
      done_before "$out" decode && continue
      moe-asr decode --model "$exp_dir/model.pt" --data "$data_root/$s" --mode "${mode%+lm}" \
        "${lm[@]}" --out "$out" --overwrite $decode_args
      touch "$out/.done.decode"
    done
  done
}
run_stage 6 decode "" stage6

stage7() {
  for s in $test_sets; do
    local groups=()  # every utt2<group> file, also utt2snr / utt2rt60 (WER per SNR, RT60)
    for f in "$data_root/$s"/utt2*; do
      case "$(basename "$f")" in utt2dur | utt2num_frames) continue ;; esac
      groups+=(--group "$f")
    done
    for mode in $decode_modes; do
      local out="$exp_dir/decode_${s}_${mode}"
      done_before "$out" score && continue
      echo "== $s / $mode"
      moe-asr score --ref "$data_root/$s/text" --hyp "$out/hyp.txt" "${groups[@]}" --cer \
        --out "$out" --overwrite
      touch "$out/.done.score"
    done
  done
}
run_stage 7 score "" stage7

stage8() {
  local s out wer
  for s in $report_set; do
    out="$exp_dir/report_$s"
    done_before "$out" report && continue
    # per-group WER beside per-group routing: the set's last decode mode, when it was scored
    wer=()
    if [ -f "$exp_dir/decode_${s}_${decode_modes##* }/wer.json" ]; then
      wer=(--wer "$exp_dir/decode_${s}_${decode_modes##* }/wer.json")
    fi
    moe-asr report --model "$exp_dir/model.pt" --data "$data_root/$s" "${wer[@]}" \
      --max-utts "$report_max_utts" --out "$out" --overwrite --dense-ok
    if [ -d "$out" ]; then touch "$out/.done.report"; fi  # a dense model writes no report
  done
}
run_stage 8 report "" stage8

# Summary (also after a rerun that skipped everything): overall WER of every decode, the
# per-accent table of each test set's last mode, and where the reports are.
summary() {
  local s mode out last tables=()
  for s in $test_sets; do
    last=""
    for mode in $decode_modes; do
      out="$exp_dir/decode_${s}_${mode}"
      [ -f "$out/wer.json" ] || continue
      python3 - "$out/wer.json" "$s/$mode" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))["overall"]
print(f"{sys.argv[2]:<40} WER {o['wer']:6.2f}%  [{o['ci_low']:.2f}, {o['ci_high']:.2f}]  ({o['utts']} utts)")
PY
      last="$out"
    done
    tables+=("$last")
  done
  for last in "${tables[@]}"; do
    [ -n "$last" ] && [ -f "$last/wer_by_accent.md" ] || continue
    echo
    echo "$(basename "$last"):"
    cat "$last/wer_by_accent.md"
  done
  for s in $report_set; do
    [ -f "$exp_dir/report_$s/report.html" ] && echo "report: $exp_dir/report_$s/report.html"
  done
  return 0
}
if [ "$stop_stage" -ge 7 ]; then
  echo "== summary: $exp_dir"
  summary
fi
echo "done: $exp_dir"
