"""Label guidance for MoE routers: the one owner of labels (and expert masks) in routing.

Any ``utt2<label>`` file can guide (``GuidanceConfig.labels``); nothing here knows "accent".
Layer indices are 0-based; guidance reaches the MoE layers in ``guided_layers`` (all when
empty), the group mechanisms (b), (c), (e) the layers of ``router_loss_layers`` (default:
the guided layers). Expert groups of the group label (``group_label``, default the first
label) are single values or families (``groups``: value -> family), see ``nn.groups``.

(a) ``embed``: a learned embedding per label (summed over label names) is added to the
    router input (``condition: layer``: to the guided layers' input frames instead); in
    training labels are replaced by ``unk`` with probability ``label_dropout``; label-free
    inference feeds ``unk``.
(b) ``router_loss_weight``: frame-level cross-entropy predicting the label's group from
    the router logits (group score = logsumexp of its experts' logits), for every label
    (labels other than the group label: one group per value); with (e), of the group
    routers' logits for the group label.
(c) ``hard_groups``: in training (and forced/oracle inference) routing is restricted to
    the experts of the utterance's group; the routers learn the same partition through
    (b) and so keep it label-free.
(d) ``utterance_estimate``: a head on the masked mean of the output of layer
    ``estimate_layer`` predicts each label (``label_logits``, trained with the label
    loss); later layers receive the probability-weighted (soft) label embedding; in
    training an utterance whose label is known and kept receives its true embedding.
(e) ``group_router`` (hierarchical, DLG-MoE style): a linear group router on each layer's
    input picks a group per frame (or per utterance, ``group_decision``); the MoE router
    picks its top-k inside the group. Training, forced and oracle routing use the label's
    group (a dropped or unknown label: the group router's choice); label-free inference
    uses the group router. ``free_experts`` of the top-k choices (with (c) or (e)) are free
    over all experts: a path shared across groups.
(f) ``value_routers``: each label value has its own router correction per guided MoE
    feed-forward, an (E, D) matrix added to the router weight, selected or mixed with the
    same weights as the embedding of (a)/(d) (one-hot of the kept label, else the (d)
    estimate's probabilities): accent-specific routing over experts that every accent
    shares. Corrections and embeddings start at zero, so a continuation of an unguided
    model starts as that model.
The label loss ((b) + (d)) is scaled by the step schedule ``loss_scale(step)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moe_asr.config import MoEConfig
from moe_asr.data.labels import LabelVocab
from moe_asr.errors import UserError
from moe_asr.nn.conformer import RouteFn
from moe_asr.nn.groups import (
    LabelGroups,
    group_label_loss,
    group_scores,
    known_label_loss,
    mean_group_log_probs,
    router_label_loss,
)
from moe_asr.nn.guidance_checks import check_guidance_groups, check_guidance_layers
from moe_asr.nn.moe import MoERouting, RouterStats
from moe_asr.nn.routing import ROUTING_MODES, LabelProbs, RoutingOptions

__all__ = [
    "RoutingOptions",
    "LabelProbs",
    "GuidancePlan",
    "LabelGuidance",
    "router_label_loss",
    "known_label_loss",
]


@dataclass
class GuidancePlan:
    """Label ids for one batch. ids: name -> (B,) given/forced ids; kept: the same after
    label dropout (embeddings); group: (B,) group ids of the group label that routing is
    restricted to (-1 = unknown: all experts (c) / the group router decides (e)), or None."""

    ids: dict[str, Tensor]
    kept: dict[str, Tensor]
    group: Tensor | None


class LabelGuidance(nn.Module):
    """Label embeddings (a), groups (b, c, e), estimate heads (d), losses, forcing, masks.

    Built for every MoE model (without labels it only checks and applies expert masks).
    """

    def __init__(
        self,
        d_model: int,
        moe: MoEConfig,
        moe_layers: list[int],
        num_layers: int,
        vocab: LabelVocab | None,
    ) -> None:
        super().__init__()
        cfg = moe.guidance
        self.cfg = cfg
        self.vocab = vocab or LabelVocab()
        self.names = list(cfg.labels)
        self.num_experts = moe.num_experts
        self.top_k = moe.top_k
        self.moe_layers = list(moe_layers)
        check_guidance_layers(cfg, moe_layers, num_layers, self.names, vocab)
        self.guided = set(cfg.guided_layers or moe_layers)
        self.group_layers = set(cfg.router_loss_layers or self.guided)
        self.group_label = cfg.group_label or (self.names[0] if self.names else "")
        # expert groups: of the group label for (c)/(e), of every label for flat (b)
        self.router_groups: dict[str, LabelGroups] = {}
        if self.names and (cfg.router_loss_weight > 0 or cfg.hard_groups or cfg.group_router):
            grouped = self.names if cfg.router_loss_weight > 0 and not cfg.group_router else []
            for n in {*grouped, self.group_label}:
                mapping = cfg.groups if n == self.group_label else {}
                self.router_groups[n] = LabelGroups.build(
                    n, self.vocab.values[n], mapping, moe.num_experts
                )
        self.label_groups = self.router_groups.get(self.group_label)
        if self.names:
            check_guidance_groups(cfg, moe, self.label_groups)
        # lookup tables of the group label on the model's device (not saved: config-derived)
        groups = self.label_groups
        value_group = torch.tensor(groups.value_group if groups else [], dtype=torch.long)
        experts = torch.zeros(0, moe.num_experts, dtype=torch.bool)
        if groups is not None:
            experts = groups.expert_mask(torch.arange(-1, groups.num_groups), moe.num_experts)
            experts = experts.roll(-1, 0)  # row g = group g's experts, row -1 (G) = all
        self.register_buffer("_value_group", value_group, persistent=False)
        self.register_buffer("_group_experts", experts, persistent=False)
        self.embed = nn.ModuleDict()
        if cfg.embed or cfg.utterance_estimate:
            for n in self.names:
                self.embed[n] = nn.Embedding(self.vocab.size(n), d_model)
                if cfg.value_routers:
                    nn.init.zeros_(self.embed[n].weight)
                else:
                    nn.init.normal_(self.embed[n].weight, std=0.1)
        # (f): name -> layer -> (V, 2 macaron halves, E, D)
        self.value_routers = nn.ModuleDict()
        if cfg.value_routers:
            for n in self.names:
                shape = (self.vocab.size(n), 2, moe.num_experts, d_model)
                self.value_routers[n] = nn.ParameterDict(
                    {str(i): nn.Parameter(torch.zeros(shape)) for i in sorted(self.guided)}
                )
        self.heads = nn.ModuleDict()
        if cfg.utterance_estimate:
            for n in self.names:
                self.heads[n] = nn.Sequential(
                    nn.LayerNorm(d_model),
                    nn.Linear(d_model, d_model),
                    nn.SiLU(),
                    nn.Linear(d_model, self.vocab.size(n)),
                )
        self.estimate_after = cfg.estimate_layer if cfg.utterance_estimate else None
        self.group_routers = nn.ModuleDict()
        if cfg.group_router and self.label_groups is not None:
            for i in sorted(self.group_layers):
                self.group_routers[str(i)] = nn.Linear(d_model, self.label_groups.num_groups)

    # ------------------------------------------------------------------ inference options
    def forced_routing(
        self, forced: dict[str, str] | None = None, expert_mask: dict[int, list[int]] | None = None
    ) -> RoutingOptions:
        """Checked RoutingOptions forcing ``forced`` (label -> value; empty: label-free) and
        switching off ``expert_mask`` (layer -> experts); UserError names the bad option."""
        routing = RoutingOptions(
            mode="forced" if forced else "free",
            forced=dict(forced or {}),
            expert_mask={int(k): list(v) for k, v in (expert_mask or {}).items()},
        )
        self.check_routing(routing, None)
        return routing

    def check_routing(self, routing: RoutingOptions, labels: dict[str, Tensor] | None) -> None:
        """UserError for an unknown mode, label, value, masked layer or expert."""
        if routing.mode not in ROUTING_MODES:
            raise UserError(
                f"routing mode {routing.mode!r} is unknown; use one of {', '.join(ROUTING_MODES)}"
            )
        if routing.mode == "oracle" and not labels:
            raise UserError("routing mode 'oracle' needs the utterance labels (utt2<label> files)")
        for name, value in routing.forced.items():
            if name not in self.names:
                raise UserError(
                    f"--force {name}={value}: cannot force {name!r}, this model was trained "
                    f"with label guidance on {', '.join(self.names) or 'no labels'}"
                )
            known = self.vocab.values[name][1:]
            if value not in known:
                raise UserError(
                    f"--force {name}={value}: unknown {name}; the model knows {', '.join(known)}"
                )
        for layer, experts in routing.expert_mask.items():
            self._check_mask(layer, experts, self._restricting_groups(routing))
        for name, ids in (labels or {}).items():
            if name in self.names and ids.numel():
                size = self.vocab.size(name)
                if int(ids.min()) < 0 or int(ids.max()) >= size:
                    raise UserError(f"label {name!r} ids must be in 0..{size - 1} (0 = unk)")

    def _restricting_groups(self, routing: RoutingOptions) -> list[int]:
        """Groups of the group label that routing may be restricted to under ``routing``."""
        groups = self.label_groups
        if groups is None or not (self.cfg.group_router or self.cfg.hard_groups):
            return []
        value = routing.forced.get(self.group_label) if routing.mode == "forced" else None
        if value is not None:
            return [groups.value_group[self.vocab.index(self.group_label, value)]]
        if self.cfg.group_router or routing.mode == "oracle":
            return list(range(groups.num_groups))
        return []

    def _check_mask(self, layer: int, experts: list[int], restricted: list[int]) -> None:
        if layer not in self.moe_layers:
            raise UserError(
                f"--mask-experts {layer}:...: layer {layer} is not an MoE layer; the MoE "
                f"layers are {self.moe_layers}"
            )
        e = self.num_experts
        bad = [x for x in experts if not 0 <= x < e]
        if bad:
            raise UserError(f"expert mask for layer {layer}: experts {bad} not in 0..{e - 1}")
        left = e - len(set(experts))
        if left < self.top_k:
            raise UserError(
                f"expert mask for layer {layer} leaves {left} expert(s), fewer than "
                f"top_k={self.top_k}"
            )
        groups = self.label_groups
        if groups is not None and layer in self.group_layers:
            need = self.top_k - self.cfg.free_experts
            for g in restricted:
                name, block = groups.names[g], groups.experts[g]
                if len(set(block) - set(experts)) < need:
                    raise UserError(
                        f"expert mask for layer {layer} leaves fewer than {need} expert(s) of "
                        f"group {name!r} (experts {list(block)}), which routing may be "
                        "restricted to; mask fewer of them"
                    )

    # ------------------------------------------------------------------ routing
    def loss_scale(self, step: int | None) -> float:
        """Label-loss factor at training ``step`` (None: 1, the weights as configured)."""
        cfg = self.cfg
        if step is None:
            return 1.0
        warm = cfg.loss_warmup_steps
        if warm > 0 and step < warm:
            return step / warm
        if cfg.loss_decay_steps > 0:
            t = min(1.0, (step - warm) / cfg.loss_decay_steps)
            return 1.0 + (cfg.loss_final_scale - 1.0) * t
        return 1.0

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
        group = None
        if self.label_groups is not None and mode in ("forced", "oracle"):
            if self.cfg.group_router:  # a dropped label: the group router decides
                group = self._value_group[kept[self.group_label]]
            elif self.cfg.hard_groups:
                group = self._value_group[ids[self.group_label]]
        return GuidancePlan(ids=ids, kept=kept, group=group)

    def route_fn(
        self,
        routing: RoutingOptions,
        labels: dict[str, Tensor] | None,
        batch: int,
        device: torch.device,
        label_logits: dict[str, Tensor],
        group_logits: dict[int, Tensor],
    ) -> RouteFn:
        """Per-call routing closure; writes the (d) estimates into ``label_logits`` and the
        (e) group router logits (B, T', G) per layer into ``group_logits``."""
        plan = self.plan(routing.mode, routing.forced, labels, batch, device)

        def route(i: int, h: Tensor, mask: Tensor) -> MoERouting | None:
            if self.estimate_after is not None and i == self.estimate_after + 1:
                label_logits.update(self.estimate(h, mask))
            if i not in self.moe_layers:
                return None
            cond, delta, layer_cond = None, None, None
            if i in self.guided:
                cond, delta = self._condition(plan, i, label_logits)
                if self.cfg.condition == "layer":
                    cond, layer_cond = None, cond
            allowed = None
            if i in self.group_layers and self.label_groups is not None:
                if self.group_routers:
                    allowed = self._group_route(plan, i, h, mask, group_logits)
                elif plan.group is not None:
                    allowed = self._group_experts[plan.group]  # (B, E)
            disabled = tuple(routing.expert_mask.get(i, ()))
            if all(v is None for v in (cond, layer_cond, delta, allowed)) and not disabled:
                return None
            free = self.cfg.free_experts if allowed is not None else 0
            return MoERouting(
                cond=cond,
                layer_cond=layer_cond,
                router_delta=delta,
                allowed=allowed,
                free=free,
                disabled=disabled,
            )

        return route

    def _condition(
        self, plan: GuidancePlan, layer: int, label_logits: dict[str, Tensor]
    ) -> tuple[Tensor | None, Tensor | None]:
        """Router inputs of ``layer``: the (B, D) condition of (a)/(d) embeddings and the
        (B, 2, E, D) router corrections of (f), each summed over labels, or None."""
        cond, delta = None, None
        for n in self.names:
            if n not in self.embed:
                continue
            w = self._value_weights(plan, n, layer, label_logits)
            if w is None:
                continue
            table = self.embed[n].weight  # (V, D)
            e = w.to(table.dtype) @ table
            cond = e if cond is None else cond + e
            if n in self.value_routers:
                rows = self.value_routers[n][str(layer)]  # (V, 2, E, D)
                d = (w.to(rows.dtype) @ rows.flatten(1)).view(-1, *rows.shape[1:])
                delta = d if delta is None else delta + d
        return cond, delta

    def _value_weights(
        self, plan: GuidancePlan, name: str, layer: int, label_logits: dict[str, Tensor]
    ) -> Tensor | None:
        """(B, V) weights over label ``name``'s values for ``layer``'s router inputs: one-hot
        of the kept label; after the (d) estimate, its probabilities where the label is
        unknown or dropped; None where nothing reaches the layer."""
        kept = plan.kept[name]
        onehot = F.one_hot(kept, self.vocab.size(name)).float()
        if self.estimate_after is not None and layer > self.estimate_after:
            soft = label_logits[name].float().softmax(-1)
            return torch.where((kept > 0)[:, None], onehot, soft)
        return onehot if self.cfg.embed else None

    def _group_route(
        self, plan: GuidancePlan, layer: int, h: Tensor, mask: Tensor, out: dict[int, Tensor]
    ) -> Tensor:
        """(e): h (B, T, D) -> allowed experts (B, T, E) of the group chosen per frame."""
        logits = self.group_routers[str(layer)](h).float()  # (B, T, G)
        out[layer] = logits
        if self.cfg.group_decision == "utterance":
            choice = mean_group_log_probs(logits, mask).argmax(-1)[:, None].expand(mask.shape)
        else:
            choice = logits.argmax(-1)  # (B, T)
        if plan.group is not None:
            given = plan.group[:, None]
            choice = torch.where(given >= 0, given, choice)
        return self._group_experts[choice]  # (B, T, E)

    def estimate(self, h: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """h: (B, T, D), mask: (B, T) -> name -> logits (B, V); unk (0) is held at -1e4."""
        m = mask[..., None].to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, D)
        out = {}
        for n, head in self.heads.items():
            logits = head(pooled).float()
            out[n] = torch.cat([torch.full_like(logits[:, :1], -1e4), logits[:, 1:]], 1)
        return out

    # ------------------------------------------------------------------ losses, probabilities
    def label_loss(
        self,
        stats: list[RouterStats],
        label_logits: dict[str, Tensor],
        group_logits: dict[int, Tensor],
        labels: dict[str, Tensor],
        frame_mask: Tensor,
        zero: Tensor,
        step: int | None = None,
    ) -> Tensor:
        """Scheduled, weighted (b) router/group label loss + (d) estimate loss, each averaged
        over its terms. frame_mask: (B, T') real encoder frames."""
        total = zero
        cfg = self.cfg
        if cfg.router_loss_weight > 0:
            terms = []
            if cfg.group_router and self.group_label in labels:
                assert self.label_groups is not None
                target = self._value_group[labels[self.group_label]]
                terms = [group_label_loss(g, target, frame_mask) for g in group_logits.values()]
            elif not cfg.group_router:
                terms = [
                    group_label_loss(
                        group_scores(s.logits, self.router_groups[n]),
                        self.router_groups[n].group_ids(labels[n]),
                        s.mask,
                    )
                    for s in stats
                    if s.layer in self.group_layers
                    for n in self.names
                    if n in labels
                ]
            if terms:
                total = total + cfg.router_loss_weight * sum(terms) / len(terms)
        if cfg.estimate_loss_weight > 0 and label_logits:
            terms = [
                known_label_loss(label_logits[n], labels[n]) for n in self.names if n in labels
            ]
            if terms:
                total = total + cfg.estimate_loss_weight * sum(terms) / len(terms)
        scale = self.loss_scale(step)
        return total if scale == 1.0 else total * scale

    def label_probs(
        self,
        stats: list[RouterStats],
        label_logits: dict[str, Tensor],
        group_logits: dict[int, Tensor],
        frame_mask: Tensor,
    ) -> dict[str, LabelProbs]:
        """Per-utterance label probabilities: from the (d) head where there is one, else
        from the routers trained with (b) (group evidence averaged over real frames and
        layers). A label whose groups are families is reported as ``<label>_group``."""
        out: dict[str, LabelProbs] = {}
        for n in self.names:
            if n in label_logits:
                values = self.vocab.values[n][1:]
                out[n] = LabelProbs(values, label_logits[n][:, 1:].float().softmax(-1))
                continue
            groups = self.router_groups.get(n)
            if groups is None or self.cfg.router_loss_weight <= 0:
                continue
            probs = self._group_evidence(n, groups, stats, group_logits, frame_mask)
            if probs is not None:
                out[f"{n}_group" if groups.families else n] = LabelProbs(list(groups.names), probs)
        return out

    def group_probs(
        self, stats: list[RouterStats], group_logits: dict[int, Tensor], frame_mask: Tensor
    ) -> LabelProbs | None:
        """(B, G) probabilities of the group label's expert groups from routing alone (group
        routers (e), else grouped router logits); None for a model without expert groups."""
        groups = self.label_groups
        if groups is None:
            return None
        probs = self._group_evidence(self.group_label, groups, stats, group_logits, frame_mask)
        return LabelProbs(list(groups.names), probs) if probs is not None else None

    def _group_evidence(
        self,
        name: str,
        groups: LabelGroups,
        stats: list[RouterStats],
        group_logits: dict[int, Tensor],
        frame_mask: Tensor,
    ) -> Tensor | None:
        """(B, G) group probabilities of label ``name``: log-probs averaged over real frames
        and the group layers, then softmax; None when no layer gives evidence."""
        if self.cfg.group_router:
            evidence = (
                [mean_group_log_probs(g, frame_mask) for g in group_logits.values()]
                if name == self.group_label
                else []
            )
        else:
            evidence = [
                mean_group_log_probs(group_scores(s.logits, groups), s.mask)
                for s in stats
                if s.layer in self.group_layers
            ]
        return torch.stack(evidence).mean(0).softmax(-1) if evidence else None

    def value_parameters(self, name: str) -> dict[str, nn.Parameter]:
        """Label ``name``'s tensors with one row (dim 0) per value, by state-dict name under
        this module: the embedding, the (f) router corrections, the estimate head's output
        layer (what a new value grows, and all that ``--params value`` trains)."""
        out: dict[str, nn.Parameter] = {}
        if name in self.embed:
            out[f"embed.{name}.weight"] = self.embed[name].weight
        if name in self.value_routers:
            for layer, rows in self.value_routers[name].items():
                out[f"value_routers.{name}.{layer}"] = rows
        if name in self.heads:
            last = len(self.heads[name]) - 1
            out[f"heads.{name}.{last}.weight"] = self.heads[name][last].weight
            out[f"heads.{name}.{last}.bias"] = self.heads[name][last].bias
        return out

    def grown_rows(self, name: str, group: int | None) -> dict[str, Tensor]:
        """``value_parameters(name)`` with a row appended for a new value: the mean of group
        ``group``'s values (so forcing it routes as they do); without a group, ``unk``'s
        embedding and corrections (what label-free routing feeds) and the mean head row of
        the known values."""
        ids = list(range(1, self.vocab.size(name)))
        if group is not None:
            assert self.label_groups is not None and name == self.group_label
            ids = [v for v in ids if self.label_groups.value_group[v] == group]
        out: dict[str, Tensor] = {}
        with torch.no_grad():
            for key, t in self.value_parameters(name).items():
                as_unk = group is None and not key.startswith("heads.")
                row = t[0] if as_unk else t[ids].mean(0)
                out[key] = torch.cat([t, row[None]]).detach().clone()
        return out
