"""Checks of ``model.moe.guidance`` against the model built from it (its MoE layers, label
vocabulary and expert groups): ConfigErrors that name the setting and what to change.
``LabelGuidance`` runs them when it is built."""

from __future__ import annotations

from moe_asr.config import ConfigError, GuidanceConfig, MoEConfig
from moe_asr.data.labels import LabelVocab
from moe_asr.nn.groups import LabelGroups

__all__ = ["GROUP_DECISIONS", "CONDITIONS", "check_guidance_layers", "check_guidance_groups"]

GROUP_DECISIONS = ("frame", "utterance")
CONDITIONS = ("router", "layer")


def check_guidance_layers(
    cfg: GuidanceConfig,
    moe_layers: list[int],
    num_layers: int,
    names: list[str],
    vocab: LabelVocab | None,
) -> None:
    """ConfigError for guidance settings that do not fit the model's layers or labels."""
    if names and (vocab is None or any(n not in vocab.values for n in names)):
        have = vocab.names if vocab else []
        raise ConfigError(
            f"model.moe.guidance.labels={names} but the label vocabulary has {have}: "
            "train on a data dir with the matching utt2<label> files"
        )
    if not names:
        return  # guidance off: its other settings are ignored
    if cfg.utterance_estimate and not 0 <= cfg.estimate_layer < num_layers - 1:
        raise ConfigError(
            f"model.moe.guidance.estimate_layer={cfg.estimate_layer} must be in "
            f"0..{num_layers - 2} (0-based; later layers receive the estimate)"
        )
    for key in ("guided_layers", "router_loss_layers"):
        bad = [i for i in getattr(cfg, key) if i not in moe_layers]
        if bad:
            raise ConfigError(
                f"model.moe.guidance.{key}: layers {bad} are not MoE layers ({moe_layers})"
            )
    if cfg.group_label and cfg.group_label not in names:
        raise ConfigError(
            f"model.moe.guidance.group_label={cfg.group_label!r} is not one of labels={names}"
        )
    if cfg.group_decision not in GROUP_DECISIONS:
        raise ConfigError(
            f"model.moe.guidance.group_decision={cfg.group_decision!r}: use frame or utterance"
        )
    if cfg.condition not in CONDITIONS:
        raise ConfigError(
            f"model.moe.guidance.condition={cfg.condition!r}: use router (the label embedding "
            "feeds the routers) or layer (it is added to the guided layers' input frames)"
        )
    if min(cfg.loss_warmup_steps, cfg.loss_decay_steps) < 0 or cfg.loss_final_scale < 0:
        raise ConfigError(
            "model.moe.guidance: loss_warmup_steps, loss_decay_steps and loss_final_scale "
            "must be >= 0"
        )


def check_guidance_groups(cfg: GuidanceConfig, moe: MoEConfig, groups: LabelGroups | None) -> None:
    """ConfigError for (c)/(e) settings that cannot route."""
    if cfg.group_router and cfg.hard_groups:
        raise ConfigError(
            "model.moe.guidance: group_router (hierarchical) and hard_groups (flat) both "
            "restrict routing to label groups; enable one"
        )
    if cfg.group_router and cfg.router_loss_weight <= 0:
        raise ConfigError(
            "model.moe.guidance.group_router needs router_loss_weight > 0 (the group routers "
            "learn from the label loss)"
        )
    restricted = cfg.group_router or cfg.hard_groups
    if cfg.free_experts and not (restricted and 0 < cfg.free_experts < moe.top_k):
        raise ConfigError(
            f"model.moe.guidance.free_experts={cfg.free_experts} must be in 1..top_k-1 "
            f"(top_k={moe.top_k}) and needs hard_groups or group_router"
        )
    if restricted and groups is not None:
        need = moe.top_k - cfg.free_experts
        smallest = min(len(b) for b in groups.experts)
        if smallest < need:
            raise ConfigError(
                f"label groups give {smallest} expert(s) per {groups.name} group, fewer than "
                f"the top_k - free_experts = {need} choices made inside a group; raise "
                "num_experts, join values into families (guidance.groups) or lower top_k"
            )
