"""Expert groups of a label: label value -> group (the value itself or a family) -> experts.

Groups are numbered in the order of their first value in the (sorted) label vocabulary and
split the experts into contiguous blocks (``expert_groups``). Without a family mapping every value is its own group, so group
``g`` is value id ``g + 1`` (the vocabulary is sorted, id 0 is unk). The label losses and
label probabilities of the routers are computed on group scores: the logsumexp of a
group's expert logits (flat routing) or the logits of a group router (hierarchical).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from moe_asr.config import ConfigError, GuidanceConfig
from moe_asr.data.labels import UNK_LABEL, LabelVocab
from moe_asr.nn.moe import RouterStats, expert_groups

__all__ = [
    "LabelGroups",
    "group_scores",
    "group_label_loss",
    "mean_group_log_probs",
    "router_label_loss",
    "known_label_loss",
    "placeholder_vocab",
]


@dataclass(frozen=True)
class LabelGroups:
    """name: the label; values: its vocabulary (index 0 = unk); names: the G group names;
    value_group: group id of every value id (-1 for unk); experts: the G expert blocks;
    families: True when a mapping joined values (names are then not label values)."""

    name: str
    values: tuple[str, ...]
    names: tuple[str, ...]
    value_group: tuple[int, ...]
    experts: tuple[tuple[int, ...], ...]
    families: bool

    @classmethod
    def build(
        cls, name: str, values: list[str], mapping: dict[str, str], num_experts: int
    ) -> LabelGroups:
        """Groups of label ``name`` with vocabulary ``values``; ``mapping``: value -> group
        (values not listed are their own group; listed values absent from ``values`` are
        ignored, so one mapping serves every subset of a corpus)."""
        group_of = [mapping.get(v, v) for v in values[1:]]
        names = list(dict.fromkeys(group_of))  # first appearance, vocabulary order
        if len(names) > num_experts or not names:
            raise ConfigError(
                f"label {name!r} has {len(names)} value group(s) but model.moe.num_experts="
                f"{num_experts}: expert groups need num_experts >= values, or join the values "
                f"into at most {num_experts} families with model.moe.guidance.groups "
                "(value -> family)"
            )
        index = {g: i for i, g in enumerate(names)}
        blocks = expert_groups(num_experts, len(names))
        return cls(
            name=name,
            values=tuple(values),
            names=tuple(names),
            value_group=(-1, *(index[g] for g in group_of)),
            experts=tuple(tuple(b) for b in blocks),
            families=len(names) < len(values) - 1,
        )

    @property
    def num_groups(self) -> int:
        return len(self.names)

    def group_of(self, value: str) -> int | None:
        """Group id of a label value, else of a group name (a family); None if neither."""
        if value in self.values[1:]:
            return self.value_group[self.values.index(value)]
        return self.names.index(value) if value in self.names else None

    def group_values(self, group: int) -> list[str]:
        """The label values of group ``group``, in vocabulary order."""
        return [v for v, g in zip(self.values, self.value_group, strict=True) if g == group]

    def group_ids(self, ids: Tensor) -> Tensor:
        """(...,) value ids -> (...,) group ids, -1 for unk."""
        table = torch.tensor(self.value_group, dtype=torch.long, device=ids.device)
        return table[ids]

    def expert_mask(self, gids: Tensor, num_experts: int) -> Tensor:
        """(...,) group ids -> (..., E) bool: the group's experts; -1 (unknown): all experts."""
        table = torch.zeros(self.num_groups + 1, num_experts, dtype=torch.bool)
        table[-1] = True  # row -1 = every expert
        for g, block in enumerate(self.experts):
            table[g, list(block)] = True
        return table.to(gids.device)[gids]


def group_scores(logits: Tensor, groups: LabelGroups) -> Tensor:
    """(..., E) expert logits -> (..., G): logsumexp over each group's experts."""
    return torch.stack([logits[..., list(b)].logsumexp(-1) for b in groups.experts], -1)


def group_label_loss(scores: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Frame-level CE of utterance groups. scores: (B, T, G); target: (B,) group ids,
    -1 = unknown (ignored); mask: (B, T) real frames. 0 when no frame has a known group."""
    frames = mask & (target >= 0)[:, None]  # (B, T)
    if not bool(frames.any()):
        return scores.new_zeros(())
    frame_target = target[:, None].expand_as(frames)
    return F.cross_entropy(scores[frames].float(), frame_target[frames])


def mean_group_log_probs(scores: Tensor, mask: Tensor) -> Tensor:
    """(B, T, G) group scores, (B, T) mask -> (B, G) frame log-softmax averaged over real
    frames (the utterance's group evidence)."""
    m = mask[..., None].to(scores.dtype)
    return (scores.float().log_softmax(-1) * m).sum(1) / m.sum(1).clamp_min(1.0)


def router_label_loss(
    stats: RouterStats, target: Tensor, num_values: int, groups: LabelGroups | None = None
) -> Tensor:
    """Frame-level CE of label groups from the router logits of one MoE feed-forward.

    stats.logits: (B, T, E); target: (B,) value ids in 0..num_values-1, 0 = unk (ignored).
    The score of a group is the logsumexp of the logits of its experts; ``groups`` default:
    one group per value.
    """
    logits = stats.logits  # (B, T, E)
    if groups is None:
        values = ["unk", *(f"v{v}" for v in range(1, num_values))]
        groups = LabelGroups.build("label", values, {}, logits.shape[-1])
    return group_label_loss(group_scores(logits, groups), groups.group_ids(target), stats.mask)


def known_label_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy over utterances whose label is known (id > 0); 0 when none is.

    logits: (B, V), target: (B,)."""
    known = target > 0
    if not bool(known.any()):
        return logits.new_zeros(())
    return F.cross_entropy(logits[known], target[known])


def placeholder_vocab(cfg: GuidanceConfig, values: int) -> LabelVocab:
    """A label vocabulary for building a model from its config alone (``moe-asr info``):
    ``values`` made-up values per guidance label; the group label gets the values of the
    ``groups`` mapping when there is one, so its families are the configured ones."""
    out: dict[str, list[str]] = {}
    group_label = cfg.group_label or (cfg.labels[0] if cfg.labels else "")
    for n in cfg.labels:
        if n == group_label and cfg.groups:
            out[n] = [UNK_LABEL, *sorted(cfg.groups)]
        else:
            out[n] = [UNK_LABEL, *(f"v{i}" for i in range(values))]
    return LabelVocab(out)
