#!/usr/bin/env bash
# The accent-adaptation curve of RESULTS.md (`moe-asr adapt`): per trained system, unseen accent,
# amount of adaptation audio and parameter set, adapt the model on that accent's speech (train
# split: speakers and sentences disjoint from the test sets), decode the accent's test_unseen
# utterances label-free (the recipe's LM beam search), and tabulate the WER next to no
# adaptation with the share of the no-adaptation -> full-fine-tuning gap recovered. For the
# router-only and full fine-tunings on MINUTES_SEEN minutes, also decode the seen-accent test set
# (does adapting to one accent cost the others?).
#   local/adapt_curve.sh [EXP_DIR ...]   (default: exp_g/moe_hier_from_moe_char)
# Env: ACCENTS (default "sv tr": accents of test_unseen), MINUTES (default "1 5 15"), PARAMS
# (default "router router+experts all"), STEPS (updates per adaptation, default 200),
# ADAPT_UTTS (utterances synthesised per accent, default 450, about 22 minutes),
# MINUTES_SEEN (default 5), ADAPT_ARGS (more `moe-asr adapt` options, e.g. "--set train.lr=0.005")
# with TAG (a suffix that keeps those runs apart, e.g. _lr0.005).
set -euo pipefail
cd "$(dirname "$0")/.."
. ../../../recipes/path.sh
. local/curve_lib.sh

data=data_g
accents=${ACCENTS:-"sv tr"}
minutes=${MINUTES:-"1 5 15"}
params=${PARAMS:-"router router+experts all"}
steps=${STEPS:-200}
adapt_utts=${ADAPT_UTTS:-450}
minutes_seen=${MINUTES_SEEN:-5}
read -r -a adapt_args <<< "${ADAPT_ARGS:-}"
tag=${TAG:-}
[ -z "${ADAPT_ARGS:-}" ] || [ -n "$tag" ] || { echo "$0: ADAPT_ARGS needs a TAG" >&2; exit 1; }
[ $# -gt 0 ] || set -- exp_g/moe_hier_from_moe_char
subsets=$data/test_unseen_by_accent

for acc in $accents; do
  grep -q " $acc\$" "$data/test_unseen/utt2accent" || {
    echo "$0: accent $acc is not in $data/test_unseen (build it with local/data.sh --unseen-accents)" >&2
    exit 1
  }
  # adaptation speech: the train split of the accent, with the training set's noise conditions
  [ -s "$data/adapt_$acc/wav.scp" ] || moe-asr synth "$data/adapt_$acc" --split train \
    --num-utts "$adapt_utts" --accents "$acc" --noise clean,white,pink,babble --snrs 10,20 \
    --seed 0 --nj 2 > "$data/adapt_$acc.log" 2>&1
  accent_subset "$data/test_unseen" "$acc" "$subsets/$acc"
done

for exp in "$@"; do
  out="$exp/adapt"
  mkdir -p "$out"
  for acc in $accents; do
    decode_and_score "$exp/model.pt" "$subsets/$acc" "$out/decode_${acc}_none"
    for m in $minutes; do
      for p in $params; do
        name="${acc}_${p/+/_}_${m}m$tag"
        if [ ! -f "$out/$name.pt" ]; then
          moe-asr adapt --model "$exp/model.pt" --train-data "$data/adapt_$acc" \
            --label "accent=$acc" --params "$p" --minutes "$m" --steps "$steps" --seed 0 \
            --exp "$out/${name}_run" --out "$out/$name.pt" --overwrite \
            ${adapt_args[@]+"${adapt_args[@]}"} > "$out/$name.log" 2>&1
        fi
        decode_and_score "$out/$name.pt" "$subsets/$acc" "$out/decode_$name"
        if [ "$m" = "$minutes_seen" ] && [ "$p" != router+experts ]; then
          decode_and_score "$out/$name.pt" "$data/test" "$out/decode_${name}_test"
        fi
      done
    done
  done
done

python - "$accents" "$minutes" "$params" "$minutes_seen" "$tag" "$@" <<'PY'
import json
import sys
from pathlib import Path

accents, minutes, params = (a.split() for a in sys.argv[1:4])
minutes_seen, tag, exps = sys.argv[4], sys.argv[5], sys.argv[6:]


def wer(path: Path) -> float:
    return json.loads((path / "wer.json").read_text())["overall"]["wer"]


for exp in map(Path, exps):
    out = exp / "adapt"
    seen_base = wer(exp / "decode_test_ctc_prefix_beam+lm")
    print(f"\n{exp.name}{tag}: WER on the accent's test_unseen utterances (label-free, LM beam)")
    print("| accent | minutes | none | " + " | ".join(params) + " | router: gap recovered |")
    print("|---|---:|---:|" + "---:|" * len(params) + "---:|")
    for acc in accents:
        none = wer(out / f"decode_{acc}_none")
        for m in minutes:
            w = {p: wer(out / f"decode_{acc}_{p.replace('+', '_')}_{m}m{tag}") for p in params}
            gap = ""
            full = out / f"decode_{acc}_all_{m}m"  # the untagged full fine-tuning
            if "router" in w and (full / "wer.json").exists() and none - wer(full) > 0:
                gap = f"{(none - w['router']) / (none - wer(full)):.0%}"
            cells = " | ".join(f"{w[p]:.2f}" for p in params)
            print(f"| {acc} | {m} | {none:.2f} | {cells} | {gap} |")
    print(f"\nseen-accent test set after {minutes_seen} minutes (no adaptation: {seen_base:.2f})")
    print("| accent | params | test WER | delta |")
    print("|---|---|---:|---:|")
    for acc in accents:
        for p in params:
            d = out / f"decode_{acc}_{p.replace('+', '_')}_{minutes_seen}m{tag}_test"
            if (d / "wer.json").exists():
                print(f"| {acc} | {p} | {wer(d):.2f} | {wer(d) - seen_base:+.2f} |")
PY
