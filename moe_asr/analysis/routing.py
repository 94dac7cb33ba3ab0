"""Per-utterance routing records: collect them from a model's encoder, save and load them.

``collect_routing`` runs the encoder label-free (or with the given routing options)
over batches and keeps, for every utterance and every MoE layer, small aggregates
rather than frames: top-1 and top-k counts per expert, summed router probabilities
and summed per-frame routing entropy. Frame-level joint counts of (group, top-1
expert) are sums of per-utterance top-1 counts, so every metric in
:mod:`moe_asr.analysis.metrics` is exact on these aggregates.

The model contract (``moe_asr.nn.moe.RouterStats``, ``AsrModel.encode``) is read by
attribute only: ``encode(feats, feat_lens, routing=...)`` returns an object with
``router_stats``, a list with one entry per MoE layer holding ``probs`` (B,T,E),
``topk_idx`` (B,T,k), ``topk_weight`` (B,T,k), ``mask`` (B,T), ``layer`` and
(optionally) ``half``, 0/1 for the first/second macaron feed-forward of a layer.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moe_asr.errors import UserError
from moe_asr.files import atomic_open

__all__ = ["RoutingData", "NoMoELayersError", "collect_routing"]

_FORMAT_VERSION = 1


class NoMoELayersError(UserError):
    """The model has dense feed-forwards only, so there is no routing to analyse."""


@dataclass(kw_only=True)
class RoutingData:
    """Routing aggregates of U utterances over L MoE feed-forwards with E experts each.

    A feed-forward with fewer experts (``moe-asr extract``) holds zeros beyond its count.

    Attributes:
        utt_ids: U utterance ids, in collection order.
        layers: L encoder layer indices (as in ``RouterStats.layer``).
        halves: L macaron halves (``RouterStats.half``: 0 first, 1 second feed-forward);
            empty means all 0.
        num_experts: E.
        top_k: k, the number of experts each frame is sent to.
        top1: (U, L, E) int64, frames whose highest-weight expert is e.
        topk: (U, L, E) int64, frames sending to e among their k experts.
        prob_sum: (U, L, E) float64, router softmax probability summed over frames.
        frames: (U,) int64, real (unpadded) encoder frames per utterance.
        entropy_sum: (U, L) float64, per-frame routing entropy (nats) summed over frames.
        skipped: utterances the encoder refused (utt -> reason), left out of the arrays.
    """

    utt_ids: list[str]
    layers: list[int]
    num_experts: int
    top_k: int
    top1: np.ndarray
    topk: np.ndarray
    prob_sum: np.ndarray
    frames: np.ndarray
    entropy_sum: np.ndarray
    halves: list[int] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        u, n_layers, e = len(self.utt_ids), len(self.layers), self.num_experts
        self.layers = [int(x) for x in self.layers]
        self.halves = [int(x) for x in self.halves] or [0] * n_layers
        if len(self.halves) != n_layers:
            raise UserError(f"routing data: {len(self.halves)} halves for {n_layers} layers")
        self.top1 = np.asarray(self.top1, dtype=np.int64).reshape(u, n_layers, e)
        self.topk = np.asarray(self.topk, dtype=np.int64).reshape(u, n_layers, e)
        self.prob_sum = np.asarray(self.prob_sum, dtype=np.float64).reshape(u, n_layers, e)
        self.frames = np.asarray(self.frames, dtype=np.int64).reshape(u)
        self.entropy_sum = np.asarray(self.entropy_sum, dtype=np.float64).reshape(u, n_layers)
        if len(set(self.utt_ids)) != u:
            raise UserError("routing data holds duplicate utterance ids")

    @property
    def num_utts(self) -> int:
        return len(self.utt_ids)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def layer_names(self) -> list[str]:
        """One name per MoE feed-forward: ``"3"``, or ``"3a"``/``"3b"`` (first/second macaron
        half) when some encoder layer has two MoE feed-forwards."""
        if len(set(self.layers)) == len(self.layers):
            return [str(x) for x in self.layers]
        return [f"{x}{'ab'[h] if h in (0, 1) else h}" for x, h in zip(self.layers, self.halves)]

    def subset(self, utt_ids: Iterable[str]) -> RoutingData:
        """The records of ``utt_ids`` (in that order); an unknown id is a UserError."""
        pos = {u: i for i, u in enumerate(self.utt_ids)}
        ids = list(utt_ids)
        missing = [u for u in ids if u not in pos]
        if missing:
            raise UserError(
                f"{len(missing)} utterance(s) are not in the routing data, e.g. {missing[0]}"
            )
        idx = np.array([pos[u] for u in ids], dtype=np.int64)
        return RoutingData(
            utt_ids=ids,
            layers=list(self.layers),
            halves=list(self.halves),
            num_experts=self.num_experts,
            top_k=self.top_k,
            top1=self.top1[idx],
            topk=self.topk[idx],
            prob_sum=self.prob_sum[idx],
            frames=self.frames[idx],
            entropy_sum=self.entropy_sum[idx],
            skipped=dict(self.skipped),
        )

    def save(self, path: str | Path) -> Path:
        """Write a compressed ``.npz`` (no pickles) that :meth:`load` reads back."""
        path = Path(path)
        with atomic_open(path, "wb") as f:
            np.savez_compressed(
                f,
                version=np.array(_FORMAT_VERSION),
                utt_ids=np.array(self.utt_ids, dtype=np.str_),
                layers=np.array(self.layers, dtype=np.int64),
                halves=np.array(self.halves, dtype=np.int64),
                skipped_ids=np.array(list(self.skipped), dtype=np.str_),
                skipped_why=np.array(list(self.skipped.values()), dtype=np.str_),
                num_experts=np.array(self.num_experts),
                top_k=np.array(self.top_k),
                top1=self.top1,
                topk=self.topk,
                prob_sum=self.prob_sum,
                frames=self.frames,
                entropy_sum=self.entropy_sum,
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> RoutingData:
        path = Path(path)
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: cannot read routing data ({e}); write it with save()") from e
        with z:
            need = {"version", "utt_ids", "layers", "num_experts", "top_k", "top1", "topk"}
            need |= {"prob_sum", "frames", "entropy_sum", "halves", "skipped_ids", "skipped_why"}
            missing = sorted(need - set(z.files))
            if missing:
                raise UserError(f"{path}: not a routing data file (missing {', '.join(missing)})")
            if int(z["version"]) != _FORMAT_VERSION:
                raise UserError(
                    f"{path}: routing data format {int(z['version'])}, this version reads "
                    f"{_FORMAT_VERSION}; re-run the collection"
                )
            return cls(
                utt_ids=[str(u) for u in z["utt_ids"]],
                layers=[int(x) for x in z["layers"]],
                halves=[int(x) for x in z["halves"]],
                skipped=dict(zip(map(str, z["skipped_ids"]), map(str, z["skipped_why"]))),
                num_experts=int(z["num_experts"]),
                top_k=int(z["top_k"]),
                top1=z["top1"],
                topk=z["topk"],
                prob_sum=z["prob_sum"],
                frames=z["frames"],
                entropy_sum=z["entropy_sum"],
            )


def _field(batch: Any, name: str) -> Any:
    if isinstance(batch, dict):
        if name not in batch:
            raise UserError(f"a batch has no {name!r}; batches need utt_ids, feats, feat_lens")
        return batch[name]
    if not hasattr(batch, name):
        raise UserError(f"a batch has no {name!r}; batches need utt_ids, feats, feat_lens")
    return getattr(batch, name)


def _batch_records(stats: list[Any], num_utts: int) -> dict[str, torch.Tensor]:
    """Per-utterance aggregates of one batch.

    Returns tensors top1/topk/prob_sum (B, L, E), entropy_sum (B, L), frames (B,).
    """
    first = stats[0]
    # extracted models have fewer experts in some feed-forwards: pad with never-used experts
    e = max(s.probs.shape[-1] for s in stats)
    top1, topk, prob_sum, ent_sum = [], [], [], []
    frames = first.mask.sum(dim=1).long()  # (B,)
    for s in stats:
        probs = s.probs.detach().float()  # (B, T, E_s)
        probs = torch.nn.functional.pad(probs, (0, e - probs.shape[-1]))  # (B, T, E)
        mask = s.mask.detach().bool()  # (B, T)
        idx = s.topk_idx.detach().long()  # (B, T, k)
        weight = s.topk_weight.detach().float()  # (B, T, k)
        b, t, _ = probs.shape
        assert mask.shape == (b, t) and idx.shape[:2] == (b, t), "RouterStats shapes disagree"
        assert torch.equal(mask.sum(dim=1).long(), frames), "MoE layers disagree on frame counts"
        # top-1 = the selected expert with the highest gate weight (robust to unsorted top-k)
        best = idx.gather(-1, weight.argmax(dim=-1, keepdim=True)).squeeze(-1)  # (B, T)
        utt = torch.arange(b).unsqueeze(1).expand(b, t)  # (B, T)
        flat1 = (utt * e + best)[mask]  # (N,)
        top1.append(torch.bincount(flat1, minlength=b * e).view(b, e))
        k = idx.shape[-1]
        flatk = (utt.unsqueeze(-1) * e + idx)[mask.unsqueeze(-1).expand(b, t, k)]  # (N*k,)
        topk.append(torch.bincount(flatk, minlength=b * e).view(b, e))
        m = mask.unsqueeze(-1).to(probs.dtype)  # (B, T, 1)
        prob_sum.append((probs * m).double().sum(dim=1))  # (B, E)
        p = probs.double().clamp_min(1e-30)
        ent = -(p * p.log()).sum(dim=-1)  # (B, T)
        ent_sum.append((ent * mask).sum(dim=1))  # (B,)
    return {
        "top1": torch.stack(top1, dim=1)[:num_utts],
        "topk": torch.stack(topk, dim=1)[:num_utts],
        "prob_sum": torch.stack(prob_sum, dim=1)[:num_utts],
        "entropy_sum": torch.stack(ent_sum, dim=1)[:num_utts],
        "frames": frames[:num_utts],
    }


def _encode_stats(model: Any, feats: Any, feat_lens: Any, routing: Any) -> list[Any]:
    out = model.encode(feats, feat_lens, routing=routing)
    stats = list(out.router_stats)
    if not stats:
        raise NoMoELayersError("model has no MoE layers; the report needs a model with ffn: moe")
    return stats


def _records_one_by_one(
    model: Any, ids: list[str], feats: Any, feat_lens: Any, routing: Any, skipped: dict[str, str]
) -> tuple[list[str], list[dict[str, torch.Tensor]], list[Any]]:
    """Encode a refused batch utterance by utterance; the ones refused again go to ``skipped``."""
    kept, parts, stats = [], [], []
    for b, utt in enumerate(ids):
        n = int(feat_lens[b])
        try:
            stats = _encode_stats(model, feats[b : b + 1, :n], feat_lens[b : b + 1], routing)
        except NoMoELayersError:
            raise
        except UserError as e:
            skipped[utt] = str(e)
            print(f"routing: skipping utterance {utt}: {e}", file=sys.stderr)
            continue
        kept.append(utt)
        parts.append(_batch_records(stats, 1))
    return kept, parts, stats


def collect_routing(
    model: torch.nn.Module,
    batches: Iterable[Any],
    routing_options: Any = None,
    *,
    max_utts: int | None = None,
    progress: bool = True,
) -> RoutingData:
    """Run ``model.encode`` over ``batches`` and aggregate routing per utterance and MoE layer.

    Args:
        model: has ``encode(feats (B,T,F), feat_lens (B,), routing=...)`` returning an
            object with ``router_stats`` (one ``RouterStats`` per MoE feed-forward).
        batches: iterable of batches with ``utt_ids`` (list[str]), ``feats`` (B,T,F) and
            ``feat_lens`` (B,), as attributes or dict keys (a DataLoader works).
        routing_options: passed to ``encode(..., routing=routing_options)``; ``None``
            is label-free routing.
        max_utts: stop after this many utterances (``None``: all).
        progress: show a progress bar on stderr.

    Runs in eval mode under ``torch.no_grad`` and restores the model's training flag.
    When the encoder refuses a batch with a UserError (e.g. an utterance too short), the
    batch is re-run utterance by utterance; refused ones are reported on stderr and
    listed in ``RoutingData.skipped``. Raises ``NoMoELayersError`` for a dense model and
    ``UserError`` for an utterance id seen twice.
    """
    from moe_asr.progress import progress_bar

    if max_utts is not None and max_utts <= 0:
        raise UserError(f"max_utts must be positive, got {max_utts}")
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    was_training = model.training
    model.eval()
    ids: list[str] = []
    seen: set[str] = set()
    skipped: dict[str, str] = {}
    parts: list[dict[str, torch.Tensor]] = []
    keys: list[tuple[int, int]] | None = None
    top_k = 0
    bar = progress_bar(max_utts, unit="utt", desc="routing", disable=not progress)
    try:
        with torch.no_grad():
            for batch in batches:
                utt_ids = [str(u) for u in _field(batch, "utt_ids")]
                feats = _field(batch, "feats").to(device)  # (B, T, F)
                feat_lens = _field(batch, "feat_lens").to(device)  # (B,)
                if max_utts is not None:
                    utt_ids = utt_ids[: max_utts - len(ids) - len(skipped)]
                for u in utt_ids:
                    if u in seen:
                        raise UserError(f"utterance {u} appears twice in the data")
                    seen.add(u)
                try:
                    stats = _encode_stats(model, feats, feat_lens, routing_options)
                    kept, new = utt_ids, [_batch_records(stats, len(utt_ids))]
                except NoMoELayersError:
                    raise
                except UserError:
                    kept, new, stats = _records_one_by_one(
                        model, utt_ids, feats, feat_lens, routing_options, skipped
                    )
                if stats:
                    these = [(int(s.layer), int(getattr(s, "half", 0))) for s in stats]
                    if keys is None:
                        keys, top_k = these, int(stats[0].topk_idx.shape[-1])
                    assert these == keys, f"MoE layers changed between batches: {these} != {keys}"
                parts.extend({k: v.cpu() for k, v in p.items()} for p in new)
                ids.extend(kept)
                bar.update(len(utt_ids))
                if max_utts is not None and len(ids) + len(skipped) >= max_utts:
                    break
    finally:
        bar.close()
        model.train(was_training)
    if keys is None or not parts:
        why = f"; {len(skipped)} refused, e.g. {next(iter(skipped.items()))}" if skipped else ""
        raise UserError(f"no utterances to analyse: the data gave no usable batches{why}")
    cat = {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}
    return RoutingData(
        utt_ids=ids,
        layers=[k[0] for k in keys],
        halves=[k[1] for k in keys],
        num_experts=int(cat["top1"].shape[-1]),
        top_k=top_k,
        top1=cat["top1"],
        topk=cat["topk"],
        prob_sum=cat["prob_sum"],
        frames=cat["frames"],
        entropy_sum=cat["entropy_sum"],
        skipped=skipped,
    )
