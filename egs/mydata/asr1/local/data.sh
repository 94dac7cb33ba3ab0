#!/usr/bin/env bash
# Stage 0 for your own corpus: the Kaldi data dirs exist already. With --source-dir, copy
# SOURCE_DIR/<set> to DATA_ROOT/<set> (the tables only; wav.scp keeps pointing at your audio,
# so its paths must be absolute); then check that every set has the required files.
# Stage 1 (moe-asr validate-data) checks their content.
set -euo pipefail

source_dir=""
sets="train,dev,test"
data_root=data
nj=2   # accepted for the stage interface
help_message="Usage: $0 [--source-dir DIR] [--sets train,dev,test] [--data-root data]"

. "$(dirname "$0")/../../../../recipes/parse_options.sh"

for s in ${sets//,/ }; do
  if [ -n "$source_dir" ]; then
    [ -d "$source_dir/$s" ] || { echo "$0: $source_dir/$s: no such data dir (--source-dir, --${s}-set)" >&2; exit 1; }
    mkdir -p "$data_root/$s"
    find "$source_dir/$s" -maxdepth 1 -type f -exec cp {} "$data_root/$s/" \;
  fi
  for f in wav.scp text utt2spk; do
    if [ ! -f "$data_root/$s/$f" ]; then
      echo "$0: $data_root/$s/$f is missing: a data dir needs wav.scp, text, utt2spk" \
        "(spk2utt is made from utt2spk); see egs/mydata/asr1/README.md" >&2
      exit 1
    fi
  done
  [ -f "$data_root/$s/spk2utt" ] || moe-asr fix-data "$data_root/$s"
  echo "$data_root/$s: $(wc -l <"$data_root/$s/wav.scp") utterances"
done
