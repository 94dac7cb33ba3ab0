#!/usr/bin/env bash
# The streaming table of RESULTS.md: a streaming model (model.streaming.enabled) decoded on
# test with the chunk mask (`moe-asr decode --chunk-frames N`, the offline simulation of
# chunk-by-chunk streaming with all history) at several chunk sizes and with full context,
# in the recipe's LM beam search and attention rescoring + LM; then the WER table.
#   local/chunk_curve.sh [EXP_DIR]   (default exp_g/moe_streaming_char, from
#                                     local/guided_experiments.sh moe_streaming:0)
# Env: CHUNKS (encoder frames of 40 ms; 0 = full context; default "8 16 32 0"), SET (test).
set -euo pipefail
cd "$(dirname "$0")/.."
. ../../../recipes/path.sh

data=data_g
exp=${1:-exp_g/moe_streaming_char}
set_name=${SET:-test}
chunks=${CHUNKS:-"8 16 32 0"}
[ -f "$exp/model.pt" ] || { echo "$0: no $exp/model.pt (train it first)" >&2; exit 1; }
lm=(--lm "$data/lm/3gram.arpa")

for chunk in $chunks; do
  for mode in ctc_prefix_beam attention_rescoring; do
    out="$exp/chunk/decode_${set_name}_${mode}+lm_chunk$chunk"
    [ -f "$out/wer.json" ] && continue
    mkdir -p "$exp/chunk"
    moe-asr decode --model "$exp/model.pt" --data "$data/$set_name" --mode "$mode" "${lm[@]}" \
      --chunk-frames "$chunk" --threads 2 --no-progress --out "$out" --overwrite \
      > "$out.log" 2>&1
    moe-asr score --ref "$data/$set_name/text" --hyp "$out/hyp.txt" \
      --group "$data/$set_name/utt2accent" --out "$out" --overwrite > "$out.score.log" 2>&1
  done
done

python - "$exp/chunk" "$set_name" $chunks <<'PY'
import json
import sys
from pathlib import Path

root, set_name, chunks = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
modes = ["ctc_prefix_beam", "attention_rescoring"]
print(f"| chunk (40 ms frames) | {' | '.join(m + '+lm WER %' for m in modes)} |")
print("|---|" + "---:|" * len(modes))
for c in chunks:
    cells = []
    for m in modes:
        w = json.loads((root / f"decode_{set_name}_{m}+lm_chunk{c}" / "wer.json").read_text())
        cells.append(f"{w['overall']['wer']:.2f}")
    print(f"| {'full' if c == '0' else c} | {' | '.join(cells)} |")
PY
