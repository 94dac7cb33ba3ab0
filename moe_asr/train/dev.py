"""Per-epoch dev evaluation of a training run: dev loss and the CER of greedy CTC decoding.

Host syncs: per batch, one transfer brings the greedy CTC path (token ids, not the
(B, T, V) log-probabilities) to the host; the loss is summed on the device and read once
at the end. References come from the batch as the loader made it, on the host.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["evaluate_dev", "mean_over_ranks"]


@torch.no_grad()
def evaluate_dev(model, loader, tokenizer, device: torch.device, bf16: bool) -> dict[str, float]:
    """{'loss': mean of the finite batch losses, 'cer': CER of greedy CTC vs the text}."""
    import jiwer

    from moe_asr.decode.ctc import ctc_greedy

    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n = torch.zeros((), dtype=torch.long, device=device)
    refs, hyps = [], []
    for host_batch in loader:
        if len(host_batch) == 0:
            continue
        batch = host_batch.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(batch.feats, batch.feat_lens, batch.tokens, batch.token_lens, None)
            enc = out.encoder  # label-free in eval mode: the same pass a decoder would run
            log_probs = model.ctc_log_probs(enc.out)
        finite = torch.isfinite(out.loss)
        # a non-finite batch loss is left out of the mean, as float() and a Python sum did
        loss_sum += torch.where(finite, out.loss.detach().double(), 0.0)
        n += finite.long()
        tokens, token_lens = host_batch.tokens, host_batch.token_lens
        for nbest, ref_ids, rl in zip(ctc_greedy(log_probs.float(), enc.lens), tokens, token_lens):
            hyps.append(tokenizer.decode(nbest[0].tokens))
            refs.append(tokenizer.decode(ref_ids[: int(rl)].tolist()))
    model.train()
    keep = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
    cer = jiwer.cer([r for r, _ in keep], [h for _, h in keep]) if keep else float("nan")
    return {"loss": float(loss_sum) / max(1, int(n)), "cer": float(cer)}


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean of each value over the ranks of a DDP run (the values as they are without)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(values, t.tolist()))
