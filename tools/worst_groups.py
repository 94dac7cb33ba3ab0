"""Write a ``utt2<name>`` file marking the utterances of one system's K worst groups.

The guided-routing comparison asks for a paired test on "the 3 worst accents of the
unguided system"; ``moe-asr score --compare A B --group worst3=FILE`` gives it once the
utterances of those accents carry one value (``worst``) and the rest another (``rest``):

    python tools/worst_groups.py exp/moe_char/decode_test_ctc_prefix_beam+lm/wer.json \
        --ref data/test --group accent --k 3 --out exp/compare/utt2worst3

The worst groups are read from ``wer.json`` (``moe-asr score``: per-group WER); ``unk`` is
never picked. Prints the groups with their WER and their mean.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from moe_asr.data.datadir import load_datadir
from moe_asr.data.labels import UNK_LABEL
from moe_asr.files import atomic_write_text


def worst_groups(wer_json: Path, group: str, k: int) -> list[tuple[str, float]]:
    """The ``k`` values of ``group`` with the highest WER in ``wer_json``, worst first."""
    report = json.loads(wer_json.read_text())
    values = report.get("groups", {}).get(group, {}).get("values")
    if not values:
        have = ", ".join(report.get("groups", {})) or "none"
        sys.exit(f"{wer_json}: no per-{group} WER (groups scored: {have}); score with --group")
    rows = [(v, float(s["wer"])) for v, s in values.items() if v != UNK_LABEL and s["utts"]]
    if len(rows) < k:
        sys.exit(f"{wer_json}: only {len(rows)} {group} values scored, fewer than --k {k}")
    return sorted(rows, key=lambda r: -r[1])[:k]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("wer_json", type=Path, help="DECODE_DIR/wer.json of the reference system")
    p.add_argument("--ref", required=True, type=Path, help="the data dir that was scored")
    p.add_argument("--group", default="accent", help="label whose values are ranked")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--out", required=True, type=Path, help="utt2<name> file to write")
    args = p.parse_args()
    worst = worst_groups(args.wer_json, args.group, args.k)
    labels = load_datadir(args.ref).groups.get(args.group)
    if not labels:
        sys.exit(f"{args.ref}: no utt2{args.group}")
    names = {v for v, _ in worst}
    lines = [f"{u} {'worst' if v in names else 'rest'}" for u, v in sorted(labels.items())]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    mean = sum(w for _, w in worst) / len(worst)
    shown = ", ".join(f"{v} {w:.2f}" for v, w in worst)
    print(f"worst {args.k} {args.group} values: {shown}; mean {mean:.2f} -> {args.out}")


if __name__ == "__main__":
    main()
