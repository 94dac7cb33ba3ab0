#!/usr/bin/env bash
# The accent sub-model trade-off of RESULTS.md (`moe-asr extract`): per trained system, accent
# and coverage, extract the sub-model from the dev utterances of that accent, decode that
# accent's test utterances with it and with the full model (label-free, the recipe's LM beam
# search), and tabulate both WERs and the share of routed-expert parameters kept.
#   local/extract_curve.sh [EXP_DIR ...]   (default: the guided_experiments.sh systems)
# Env: ACCENTS (default "fr es en-us-nyc"), COVERAGES (default "0.8 0.9 0.95 0.99").
# A group-routed system (model.moe.guidance.group_router) is cut with --group-of ACCENT (its
# guided layers keep the accent family's experts; --coverage applies to the other layers).
set -euo pipefail
cd "$(dirname "$0")/.."
. ../../../recipes/path.sh
. local/curve_lib.sh

data=data_g
accents=${ACCENTS:-"fr es en-us-nyc"}
coverages=${COVERAGES:-"0.8 0.9 0.95 0.99"}
[ $# -gt 0 ] || set -- exp_g/moe_char exp_g/moe_est_char exp_g/moe_hier_char
subsets=$data/test_by_accent

for acc in $accents; do  # the accent's test utterances as a data dir of their own
  accent_subset "$data/test" "$acc" "$subsets/$acc"
done

for exp in "$@"; do
  out="$exp/extract"
  mkdir -p "$out"
  mode=(--accent)
  if grep -q "group_router: true" "$exp/config.yaml"; then mode=(--group-of); fi
  for acc in $accents; do
    decode_and_score "$exp/model.pt" "$subsets/$acc" "$out/decode_${acc}_full"
    for cov in $coverages; do
      pkg="$out/${acc}_cov$cov.pt"
      dec="$out/decode_${acc}_cov$cov"
      [ -f "$dec/wer.json" ] && continue
      moe-asr extract --model "$exp/model.pt" --data "$data/dev" "${mode[@]}" "$acc" \
        --coverage "$cov" --out "$pkg" --overwrite --no-progress > "$out/${acc}_cov$cov.log"
      decode_and_score "$pkg" "$subsets/$acc" "$dec"
    done
  done
done

python - "$accents" "$coverages" "$@" <<'PY'
import json
import sys
from pathlib import Path

import torch

accents, coverages, exps = sys.argv[1].split(), sys.argv[2].split(), sys.argv[3:]
print("| system | accent | coverage | routed experts kept | WER sub-model | WER full | delta |")
print("|---|---|---:|---:|---:|---:|---:|")
for exp in map(Path, exps):
    for acc in accents:
        full = json.loads((exp / f"extract/decode_{acc}_full/wer.json").read_text())
        for cov in coverages:
            meta = torch.load(exp / f"extract/{acc}_cov{cov}.pt", weights_only=True)["meta"]
            ffns = meta["extract"]["ffns"]
            share = sum(len(f["kept"]) for f in ffns) / sum(f["experts"] for f in ffns)
            sub = json.loads((exp / f"extract/decode_{acc}_cov{cov}/wer.json").read_text())
            a, f = sub["overall"]["wer"], full["overall"]["wer"]
            print(f"| {exp.name} | {acc} | {cov} | {share:.0%} | {a:.2f} | {f:.2f} | {a - f:+.2f} |")
PY
