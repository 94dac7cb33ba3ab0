"""Grid-search the LM weight and word score of the CTC beam search on a dev set.

The encoder runs once; every (lm_weight, word_score) pair re-runs only the beam search.
Prints a WER table and the best pair, to pass as ``--lm-weight``/``--word-score``.

    python tools/tune_lm.py --model exp/x/model.pt --data data/dev --lm data/lm/3gram.arpa \
        --weights 0.3 0.6 1.0 --word-scores -1 0 1 2 --max-utts 200 --threads 2
"""

from __future__ import annotations

import argparse
import itertools

import torch

from moe_asr.data.dataset import AsrDataset, make_loader, make_sampler
from moe_asr.decode.ctc import CtcBeamDecoder
from moe_asr.package import load_package
from moe_asr.scoring import score


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--lm", required=True)
    p.add_argument("--lm-unit", default="word", choices=["word", "token"])
    p.add_argument("--weights", type=float, nargs="+", default=[0.3, 0.6, 1.0])
    p.add_argument("--word-scores", type=float, nargs="+", default=[-1.0, 0.0, 1.0, 2.0])
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--max-utts", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    pkg = load_package(args.model)
    ds = AsrDataset(args.data, None, None, pkg.config.data, train=False)
    refs: dict[str, str] = {}
    emissions: list[tuple[str, torch.Tensor]] = []
    with torch.no_grad():
        for batch in make_loader(ds, make_sampler(ds, shuffle=False), 0):
            enc = pkg.model.encode(batch.feats, batch.feat_lens)
            lp = pkg.model.ctc_log_probs(enc)
            for b, utt in enumerate(batch.utt_ids):
                emissions.append((utt, lp[b, : int(enc.lens[b])]))
                refs[utt] = ds.dd.text[utt]
            if len(emissions) >= args.max_utts:
                break
    print(f"threads {args.threads}; {len(emissions)} utterances of {args.data}")
    print("| lm_weight | word_score | WER % |\n|---:|---:|---:|")
    best = None
    for w, s in itertools.product(args.weights, args.word_scores):
        dec = CtcBeamDecoder(
            pkg.tokenizer.tokens,
            beam=args.beam,
            lm_path=args.lm,
            lm_weight=w,
            word_score=s,
            lm_unit=args.lm_unit,
            spell=pkg.tokenizer.encode,
        )
        hyps = {}
        for utt, lp in emissions:
            hyp = dec(lp[None], torch.tensor([lp.shape[0]]))[0][0]
            hyps[utt] = pkg.tokenizer.decode(hyp.tokens)
        wer = score({u: refs[u] for u in hyps}, hyps, n_boot=0).overall.wer
        print(f"| {w:g} | {s:g} | {wer:.2f} |")
        if best is None or wer < best[0]:
            best = (wer, w, s)
    assert best is not None
    print(f"best: --lm-weight {best[1]:g} --word-score {best[2]:g} (WER {best[0]:.2f}%)")


if __name__ == "__main__":
    main()
