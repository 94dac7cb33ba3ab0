"""The shape of an ``AsrModel`` as its config decides it, before any module is built.

Which encoder layers hold MoE feed-forwards (``model.moe.layers``), which labels guide the
routers, and the checks of a model config together with the vocabulary size. Label
guidance itself is checked by ``LabelGuidance``, which knows the label vocabulary.
"""

from __future__ import annotations

from moe_asr.config import ConfigError, ModelConfig
from moe_asr.nn.streaming import check_streaming_config

__all__ = ["moe_layer_indices", "model_moe_layers", "guidance_labels", "check_model_config"]


def moe_layer_indices(spec: str, num_layers: int) -> list[int]:
    """``all`` | ``every_other`` (1, 3, 5, ...) | comma-separated 0-based indices."""
    spec = spec.strip()
    if spec == "all":
        return list(range(num_layers))
    if spec == "every_other":
        return list(range(1, num_layers, 2))
    try:
        idx = sorted({int(p) for p in spec.split(",") if p.strip()})
    except ValueError:
        raise ConfigError(
            f"model.moe.layers={spec!r}: expected all, every_other or 0-based indices like 1,3,5"
        ) from None
    bad = [i for i in idx if not 0 <= i < num_layers]
    if bad:
        raise ConfigError(
            f"model.moe.layers={spec!r}: indices {bad} outside 0..{num_layers - 1} "
            f"(model.num_layers={num_layers})"
        )
    return idx


def model_moe_layers(cfg: ModelConfig) -> list[int]:
    """The encoder layers whose feed-forwards are MoE (empty: a dense model). The one
    place that reads ``model.ffn``; a built model answers ``AsrModel.is_moe``."""
    if cfg.ffn != "moe":
        return []
    return moe_layer_indices(cfg.moe.layers, cfg.num_layers)


def guidance_labels(cfg: ModelConfig) -> list[str]:
    """Label names (``utt2<name>`` files) the model of ``cfg`` is guided by; [] = none."""
    return list(cfg.moe.guidance.labels) if model_moe_layers(cfg) else []


def check_model_config(cfg: ModelConfig, vocab_size: int) -> None:
    """ConfigError for a model config that cannot build a model of ``vocab_size`` tokens."""
    if vocab_size < 3:
        raise ConfigError(f"vocab_size={vocab_size}: need blank, unk and <sos/eos> at least")
    if cfg.ffn not in ("dense", "moe"):
        raise ConfigError(f"model.ffn={cfg.ffn!r}: use dense or moe")
    if not 0.0 <= cfg.ctc_weight <= 1.0:
        raise ConfigError(f"model.ctc_weight={cfg.ctc_weight} must be in [0, 1]")
    check_streaming_config(cfg)
    if cfg.decoder.ffn not in ("dense", "moe"):
        raise ConfigError(f"model.decoder.ffn={cfg.decoder.ffn!r}: use dense or moe")
    moe = cfg.moe
    if "moe" in (cfg.ffn, cfg.decoder.ffn) and not 1 <= moe.top_k <= moe.num_experts:
        raise ConfigError(
            f"model.moe.top_k={moe.top_k} must be in 1..model.moe.num_experts={moe.num_experts}"
        )
    if cfg.ffn == "moe" and moe.ffn_experts:
        n_ffns = 2 * len(moe_layer_indices(moe.layers, cfg.num_layers))
        if len(moe.ffn_experts) != n_ffns or not all(
            moe.top_k <= e <= moe.num_experts for e in moe.ffn_experts
        ):
            raise ConfigError(
                f"model.moe.ffn_experts={moe.ffn_experts}: need {n_ffns} counts (two per MoE "
                f"layer), each in top_k={moe.top_k}..num_experts={moe.num_experts}; or [] "
                "for num_experts everywhere"
            )
        if moe.guidance.hard_groups or moe.guidance.router_loss_weight > 0:
            raise ConfigError(
                "model.moe.ffn_experts cannot be combined with expert groups per label value "
                "(model.moe.guidance.hard_groups, router_loss_weight): the groups need "
                "num_experts in every MoE feed-forward"
            )
    if cfg.ffn == "moe" and moe.ffn_fixed_group:
        _check_fixed_groups(cfg)
    # label guidance is checked by LabelGuidance, which knows the label vocabulary


def _check_fixed_groups(cfg: ModelConfig) -> None:
    """model.moe.ffn_fixed_group (written by extract --group-of) against the feed-forwards."""
    moe = cfg.moe
    n_ffns = 2 * len(moe_layer_indices(moe.layers, cfg.num_layers))
    sizes = list(moe.ffn_experts) or [moe.num_experts] * n_ffns
    need, free = moe.top_k - moe.fixed_group_free, moe.fixed_group_free
    if len(moe.ffn_fixed_group) != n_ffns or not all(
        g == 0 or need <= g <= e for g, e in zip(moe.ffn_fixed_group, sizes, strict=True)
    ):
        raise ConfigError(
            f"model.moe.ffn_fixed_group={moe.ffn_fixed_group}: need {n_ffns} counts (two per MoE "
            f"layer), each 0 or in top_k - fixed_group_free = {need}..the feed-forward's experts"
        )
    if any(moe.ffn_fixed_group) and not 0 < free < moe.top_k:
        raise ConfigError(
            f"model.moe.fixed_group_free={free} must be in 1..top_k-1 (top_k={moe.top_k}) "
            "where model.moe.ffn_fixed_group has a group"
        )
    if moe.guidance.labels and (moe.guidance.group_router or moe.guidance.hard_groups):
        raise ConfigError(
            "model.moe.ffn_fixed_group cannot be combined with label groups "
            "(model.moe.guidance.group_router, hard_groups): a fixed group is one already chosen"
        )
