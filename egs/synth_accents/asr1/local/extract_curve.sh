#!/usr/bin/env bash
# The accent sub-model trade-off of RESULTS.md (`moe-asr extract`): per trained system, accent
# and coverage, extract the sub-model from the dev utterances of that accent, decode the whole
# test set with it (label-free, the recipe's LM beam search), and tabulate that accent's WER
# against the full model's and the share of routed-expert parameters kept.
#   local/extract_curve.sh [EXP_DIR ...]   (default: the guided_experiments.sh systems)
# Env: ACCENTS (default "fr es en-us-nyc"), COVERAGES (default "0.8 0.9 0.95 0.99").
# A group-routed system (model.moe.guidance.group_router) is cut with --group-of ACCENT (its
# guided layers keep the accent family's experts; --coverage applies to the other layers).
set -euo pipefail
cd "$(dirname "$0")/.."
. ../../../recipes/path.sh

data=data_g
accents=${ACCENTS:-"fr es en-us-nyc"}
coverages=${COVERAGES:-"0.8 0.9 0.95 0.99"}
[ $# -gt 0 ] || set -- exp_g/moe_char exp_g/moe_est_char exp_g/moe_hier_char
decode_opts=(--mode ctc_prefix_beam --lm "$data/lm/3gram.arpa" --threads 2 --no-progress)

score() {  # decode dir -> wer.json with per-accent groups
  moe-asr score --ref "$data/test/text" --hyp "$1/hyp.txt" --group "$data/test/utt2accent" \
    --out "$1" --overwrite > "$1.score.log" 2>&1
}

for exp in "$@"; do
  out="$exp/extract"
  mkdir -p "$out"
  full="$exp/decode_test_ctc_prefix_beam+lm"
  [ -f "$full/wer.json" ] || { echo "$exp: no $full/wer.json (run the recipe first)" >&2; exit 1; }
  mode=(--accent)
  if grep -q "group_router: true" "$exp/config.yaml"; then mode=(--group-of); fi
  for acc in $accents; do
    for cov in $coverages; do
      pkg="$out/${acc}_cov$cov.pt"
      dec="$out/decode_${acc}_cov$cov"
      [ -f "$dec/wer.json" ] && continue
      moe-asr extract --model "$exp/model.pt" --data "$data/dev" "${mode[@]}" "$acc" \
        --coverage "$cov" --out "$pkg" --overwrite --no-progress > "$out/${acc}_cov$cov.log"
      moe-asr decode --model "$pkg" --data "$data/test" "${decode_opts[@]}" --out "$dec" \
        --overwrite > "$dec.log" 2>&1
      score "$dec"
    done
  done
done

python - "$accents" "$coverages" "$@" <<'EOF'
import json
import sys
from pathlib import Path

import torch

accents, coverages, exps = sys.argv[1].split(), sys.argv[2].split(), sys.argv[3:]
print("| system | accent | coverage | routed experts kept | WER accent (full) | delta | "
      "WER other accents (full) |")
print("|---|---|---:|---:|---:|---:|---:|")
for exp in map(Path, exps):
    full = json.loads((exp / "decode_test_ctc_prefix_beam+lm/wer.json").read_text())
    for acc in accents:
        for cov in coverages:
            meta = torch.load(exp / f"extract/{acc}_cov{cov}.pt", weights_only=True)["meta"]
            ffns = meta["extract"]["ffns"]
            share = sum(len(f["kept"]) for f in ffns) / sum(f["experts"] for f in ffns)
            sub = json.loads((exp / f"extract/decode_{acc}_cov{cov}/wer.json").read_text())

            def acc_wer(d, inside):
                vals = d["groups"]["accent"]["values"]
                keys = [k for k in vals if (k == acc) == inside]
                errs = sum(vals[k]["errors"] for k in keys)
                return 100.0 * errs / sum(vals[k]["ref_words"] for k in keys)

            a, fa = acc_wer(sub, True), acc_wer(full, True)
            o, fo = acc_wer(sub, False), acc_wer(full, False)
            print(f"| {exp.name} | {acc} | {cov} | {share:.0%} | {a:.2f} ({fa:.2f}) | "
                  f"{a - fa:+.2f} | {o:.2f} ({fo:.2f}) |")
EOF
