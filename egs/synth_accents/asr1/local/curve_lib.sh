# Functions of the per-accent curve drivers (local/extract_curve.sh, local/adapt_curve.sh);
# sourced, after `data` names the data root.

# accent_subset SRC ACCENT OUT: the utterances of data dir SRC whose utt2accent is ACCENT, as
# the data dir OUT (kept when it is there)
accent_subset() {
  [ -f "$3/text" ] || python - "$@" <<'PY'
import sys

from moe_asr.data.datadir import load_datadir, subset_datadir, write_datadir

src, accent, out = sys.argv[1:]
dd = load_datadir(src)
write_datadir(subset_datadir(dd, [u for u, a in dd.groups["accent"].items() if a == accent]), out)
PY
}

# decode_and_score MODEL DATA OUT: label-free decoding with the recipe's LM beam search, then
# scoring (OUT/wer.json); skipped when OUT/wer.json is there
decode_and_score() {
  [ -f "$3/wer.json" ] && return
  moe-asr decode --model "$1" --data "$2" --mode ctc_prefix_beam --lm "$data/lm/3gram.arpa" \
    --threads 2 --no-progress --out "$3" --overwrite > "$3.log" 2>&1
  moe-asr score --ref "$2/text" --hyp "$3/hyp.txt" --out "$3" --overwrite > "$3.score.log" 2>&1
}
