"""Label guidance for MoE routers: label embeddings, hard expert groups, utterance estimates.

Layer indices are 0-based. With ``GuidanceConfig``:
(a) ``embed``: a learned embedding per label (summed over label names) is added to the
    router input of every MoE layer; in training labels are replaced by ``unk`` with
    probability ``label_dropout``; label-free inference feeds ``unk``.
(b) ``router_loss_weight``: frame-level cross-entropy predicting the label from the router
    logits, one group of experts per label value (``expert_groups``), group score =
    logsumexp of its experts' logits.
(c) ``hard_groups``: in training (and in forced/oracle inference) routing is restricted
    to the experts of the utterance's group for the first guidance label, in the layers
    of (b) (``router_loss_layers``; all MoE layers when empty), whose routers learn the
    same partition and so keep it label-free; other layers route freely in training too.
(d) ``utterance_estimate``: a head on the masked mean of the output of layer
    ``estimate_layer`` predicts each label (``label_logits``, trained with the label
    loss); layers after it receive the probability-weighted (soft) label embedding.
    In training an utterance whose label is known and not dropped receives its true
    label embedding instead, so routers learn from clean labels and from the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moe_asr.config import GuidanceConfig
from moe_asr.data.labels import LabelVocab
from moe_asr.nn.moe import RouterStats, expert_groups

__all__ = ["LabelGuidance", "GuidancePlan", "router_label_loss", "known_label_loss"]


@dataclass
class GuidancePlan:
    """Label ids for one batch. ids: name -> (B,) given/forced ids (hard groups);
    kept: the same after label dropout (embeddings); allowed: (B, E) hard-group mask."""

    ids: dict[str, Tensor]
    kept: dict[str, Tensor]
    allowed: Tensor | None


class LabelGuidance(nn.Module):
    """Label embeddings (a, d), hard groups (c), estimate heads (d) and the label losses."""

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        moe_layers: list[int],
        cfg: GuidanceConfig,
        vocab: LabelVocab,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab = vocab
        self.names = list(cfg.labels)
        self.num_experts = num_experts
        self.moe_layers = set(moe_layers)
        self.group_layers = set(cfg.router_loss_layers or moe_layers)
        self.embed = nn.ModuleDict()
        if cfg.embed or cfg.utterance_estimate:
            for n in self.names:
                self.embed[n] = nn.Embedding(vocab.size(n), d_model)
                nn.init.normal_(self.embed[n].weight, std=0.1)
        self.heads = nn.ModuleDict()
        if cfg.utterance_estimate:
            for n in self.names:
                self.heads[n] = nn.Sequential(
                    nn.LayerNorm(d_model),
                    nn.Linear(d_model, d_model),
                    nn.SiLU(),
                    nn.Linear(d_model, vocab.size(n)),
                )
        self.estimate_after = cfg.estimate_layer if cfg.utterance_estimate else None

    def plan(
        self,
        mode: str,
        forced: dict[str, str],
        labels: dict[str, Tensor] | None,
        batch: int,
        device: torch.device,
    ) -> GuidancePlan:
        """Label ids for ``mode`` (free | forced | oracle); dropout only in training."""
        ids: dict[str, Tensor] = {}
        for n in self.names:
            if mode == "forced" and n in forced:
                value = self.vocab.index(n, forced[n])
                ids[n] = torch.full((batch,), value, dtype=torch.long, device=device)
            elif mode == "oracle" and labels is not None and n in labels:
                ids[n] = labels[n].to(device)
            else:
                ids[n] = torch.zeros(batch, dtype=torch.long, device=device)
        kept = dict(ids)
        if self.training and mode == "oracle" and self.cfg.label_dropout > 0:
            for n in self.names:
                drop = torch.rand(batch, device=device) < self.cfg.label_dropout
                kept[n] = ids[n].masked_fill(drop, 0)
        allowed = None
        if self.cfg.hard_groups and self.names and mode in ("forced", "oracle"):
            allowed = self.group_mask(self.names[0], ids[self.names[0]])
        return GuidancePlan(ids=ids, kept=kept, allowed=allowed)

    def group_mask(self, name: str, ids: Tensor) -> Tensor:
        """(B,) label ids -> (B, E) experts of each label's group (unk: all experts)."""
        groups = expert_groups(self.num_experts, self.vocab.size(name) - 1)
        table = torch.ones(self.vocab.size(name), self.num_experts, dtype=torch.bool)
        for g, experts in enumerate(groups):
            table[g + 1] = False
            table[g + 1, experts] = True
        return table.to(ids.device)[ids]

    def estimate(self, h: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """h: (B, T, D), mask: (B, T) -> name -> logits (B, V); unk (0) is held at -1e4."""
        m = mask[..., None].to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, D)
        out = {}
        for n, head in self.heads.items():
            logits = head(pooled).float()
            out[n] = torch.cat([torch.full_like(logits[:, :1], -1e4), logits[:, 1:]], 1)
        return out

    def layer_inputs(
        self,
        plan: GuidancePlan,
        layer: int,
        h: Tensor,
        mask: Tensor,
        label_logits: dict[str, Tensor],
    ) -> tuple[Tensor | None, Tensor | None]:
        """Called before every layer; computes the (d) estimate into ``label_logits`` when due.

        Returns the router condition (B, D) or None and the hard-group mask (B, E) or None.
        """
        if self.estimate_after is not None and layer == self.estimate_after + 1:
            label_logits.update(self.estimate(h, mask))
        if layer not in self.moe_layers:
            return None, None
        cond = None
        for n in self.names:
            if n not in self.embed:
                continue
            table = self.embed[n].weight  # (V, D)
            kept = plan.kept[n]
            if self.estimate_after is not None and layer > self.estimate_after:
                soft = label_logits[n].softmax(-1).to(table.dtype) @ table  # (B, D)
                e = torch.where((kept > 0)[:, None], table[kept], soft)
            elif self.cfg.embed:
                e = table[kept]
            else:
                continue
            cond = e if cond is None else cond + e
        allowed = plan.allowed if layer in self.group_layers else None
        return cond, allowed

    def label_loss(
        self,
        stats: list[RouterStats],
        label_logits: dict[str, Tensor],
        labels: dict[str, Tensor],
        zero: Tensor,
    ) -> Tensor:
        """Weighted (b) router label loss + (d) estimate loss, each averaged over its terms."""
        total = zero
        if self.cfg.router_loss_weight > 0:
            terms = [
                router_label_loss(s, labels[n], self.vocab.size(n))
                for s in stats
                if s.layer in self.group_layers
                for n in self.names
                if n in labels
            ]
            if terms:
                total = total + self.cfg.router_loss_weight * sum(terms) / len(terms)
        if self.cfg.estimate_loss_weight > 0 and label_logits:
            terms = [
                known_label_loss(label_logits[n], labels[n]) for n in self.names if n in labels
            ]
            if terms:
                total = total + self.cfg.estimate_loss_weight * sum(terms) / len(terms)
        return total


def known_label_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy over utterances whose label is known (id > 0); 0 when none is.

    logits: (B, V), target: (B,)."""
    known = target > 0
    if not bool(known.any()):
        return logits.new_zeros(())
    return F.cross_entropy(logits[known], target[known])


def router_label_loss(stats: RouterStats, target: Tensor, num_values: int) -> Tensor:
    """Frame-level CE of label groups from router logits.

    stats.logits: (B, T, E); target: (B,) ids in 0..num_values-1, 0 = unk (ignored).
    The score of value g is the logsumexp of the logits of its expert group.
    """
    logits = stats.logits  # (B, T, E)
    groups = expert_groups(logits.shape[-1], num_values - 1)
    scores = torch.stack([logits[..., g].logsumexp(-1) for g in groups], -1)  # (B, T, G)
    frames = stats.mask & (target > 0)[:, None]  # (B, T)
    if not bool(frames.any()):
        return logits.new_zeros(())
    frame_target = (target - 1)[:, None].expand_as(frames)
    return F.cross_entropy(scores[frames], frame_target[frames])
