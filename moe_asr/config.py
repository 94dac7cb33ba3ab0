"""Typed experiment configuration: nested dataclasses, YAML load, dotted overrides.

A config is built from defaults, then a YAML file, then ``--set a.b.c=value``
overrides; every step is type-checked and an unknown key is an error that lists
the valid keys. ``dump_config`` writes the resolved config with every default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moe_asr.errors import UserError

__all__ = [
    "ConfigError",
    "MoEConfig",
    "GuidanceConfig",
    "DecoderConfig",
    "ModelConfig",
    "FeatureConfig",
    "AugmentConfig",
    "DataConfig",
    "TokenizerConfig",
    "TrainConfig",
    "DecodeConfig",
    "Config",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
    "dump_config",
]


class ConfigError(UserError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


@dataclass(kw_only=True)
class GuidanceConfig:
    """Label guidance for the routers (accent / noise labels, training only)."""

    labels: list[str] = field(default_factory=list)  # e.g. ["accent", "noise"]; empty = off
    # (a) label embedding added to the router input; `unk` for missing labels / dropout
    embed: bool = False
    label_dropout: float = 0.3  # probability of replacing a label with `unk` in training
    # (b) auxiliary loss predicting the label from router logits of these layers
    router_loss_weight: float = 0.0
    router_loss_layers: list[int] = field(default_factory=list)  # empty = every MoE layer
    # (c) experts partitioned per label value, routing restricted to the group in training
    hard_groups: bool = False
    # (d) utterance-level label estimate from pooled states after `estimate_layer`,
    # its soft label embedding fed to the routers of later layers
    utterance_estimate: bool = False
    estimate_layer: int = 1
    estimate_loss_weight: float = 0.3
    # MoE layers (0-based) that get guidance ((a), (b), (c), (d) inputs, (e)); the others
    # route freely. Empty = every MoE layer. (b)/(c)/(e) use `router_loss_layers` if given.
    guided_layers: list[int] = field(default_factory=list)
    # expert groups of `group_label` (empty = the first label) for (b), (c) and (e):
    # label value -> group name (a family, e.g. {en-us: native, fr: romance}); a value not
    # listed is a group of its own; empty = one group per value. Groups (sorted by name)
    # split the experts into contiguous blocks, so num_experts >= groups (not >= values).
    group_label: str = ""
    groups: dict[str, str] = field(default_factory=dict)
    # (e) hierarchical routing (DLG-MoE style): a group router per layer of (b), trained
    # with the (b) loss, picks a group of experts per frame; the MoE router picks top-k
    # inside it. Training/forced/oracle use the label's group (label dropout: the group
    # router's own choice); label-free inference uses the group router.
    group_router: bool = False
    group_decision: str = "frame"  # frame | utterance (group log-probs averaged over frames)
    # of the top_k choices, this many are free over all experts ((c) and (e)); e.g. top_k=2,
    # free_experts=1: one expert of the label's group plus one of any group
    free_experts: int = 0
    # label-loss weight schedule by training step: linear ramp 0 -> 1 over the first
    # `loss_warmup_steps`, then linear decay to `loss_final_scale` over `loss_decay_steps`
    # (0 = no ramp / no decay: the weights stay as given)
    loss_warmup_steps: int = 0
    loss_decay_steps: int = 0
    loss_final_scale: float = 0.0


@dataclass(kw_only=True)
class MoEConfig:
    num_experts: int = 4
    top_k: int = 1
    expert_d_ff: int = (
        0  # hidden size of each expert; 0 = model.d_ff (top-k: k x the dense compute)
    )
    capacity_factor: float = 0.0  # 0 = dropless; >0 = overflow passes through the residual
    noisy_gate_std: float = 0.0  # noisy top-k: std of gate noise in training (0 = off)
    num_shared_experts: int = 0
    balance_weight: float = 0.01  # Switch load-balance loss
    z_loss_weight: float = 0.001  # router z-loss
    importance_cv_weight: float = 0.0  # Shazeer et al. 2017 importance CV^2
    output_diversity_weight: float = 0.0  # penalty on cosine similarity of expert outputs
    layers: str = "all"  # all | every_other | comma-separated layer indices "1,3,5"
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)


@dataclass(kw_only=True)
class DecoderConfig:
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 576
    dropout: float = 0.1


@dataclass(kw_only=True)
class ModelConfig:
    input_dim: int = 80
    d_model: int = 144
    num_heads: int = 4
    num_layers: int = 6
    d_ff: int = 576
    conv_kernel: int = 15
    dropout: float = 0.1
    subsampling: int = 4  # 4 | 6 | 8
    subsampling_channels: int = 32
    max_rel_pos: int = 64  # rel-pos bias clipped at +-this many (subsampled) frames
    # dropout on attention weights (encoder and decoder); > 0 makes SDPA leave its fused CPU
    # kernel (about 10x slower attention), so off by default as in WeNet's recipes
    attention_dropout: float = 0.0
    ffn: str = "moe"  # dense | moe
    moe: MoEConfig = field(default_factory=MoEConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    ctc_weight: float = 0.3
    lsm_weight: float = 0.1


@dataclass(kw_only=True)
class FeatureConfig:
    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0


@dataclass(kw_only=True)
class AugmentConfig:
    speed_perturb: list[float] = field(default_factory=list)  # e.g. [0.9, 1.0, 1.1]
    noise_files: list[str] = field(default_factory=list)
    noise_snrs: list[float] = field(default_factory=lambda: [5.0, 10.0, 20.0])
    noise_prob: float = 0.0
    specaug: bool = True
    freq_masks: int = 2
    freq_mask_width: int = 27
    time_masks: int = 2
    time_mask_width: int = 40
    time_mask_max_ratio: float = 0.2  # a time mask covers at most this share of frames


@dataclass(kw_only=True)
class DataConfig:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_batch_seconds: float = 80.0
    max_utt_seconds: float = 30.0
    num_buckets: int = 10
    num_workers: int = 0


@dataclass(kw_only=True)
class TokenizerConfig:
    type: str = "char"  # char | bpe | unigram
    vocab_size: int = 256  # ignored for char


@dataclass(kw_only=True)
class TrainConfig:
    seed: int = 0
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    scheduler: str = "noam"  # noam | cosine | constant
    max_epochs: int = 20
    max_steps: int = 0  # 0 = no step limit
    max_minutes: float = 0.0  # 0 = no wall-clock budget
    grad_clip: float = 5.0
    accum_grad: int = 1
    bf16: bool = False
    log_interval: int = 10
    save_every_steps: int = 0  # also write last.pt every N optimizer steps (0 = epoch ends only)
    keep_best: int = 5
    patience: int = 0  # epochs without dev improvement before stopping; 0 = off
    max_bad_steps: int = 20  # consecutive NaN/inf losses before training stops
    num_threads: int = 0  # torch.set_num_threads; 0 = leave as is


@dataclass(kw_only=True)
class DecodeConfig:
    mode: str = "ctc_greedy"
    beam: int = 10
    ctc_weight: float = 0.3
    lm_path: str = ""
    lm_unit: str = "word"  # word: ARPA from `moe-asr train-lm` + lexicon; token: token-level LM
    lm_weight: float = 0.5
    word_score: float = 0.0
    batch_size: int = 16
    nbest: int = 5  # hypotheses written to nbest.txt; attention_rescoring rescores `beam` of them
    window_seconds: float = 30.0  # transcribe: longer files are cut into windows and stitched


@dataclass(kw_only=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; convert lossless cases (int -> float)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} does not match {tp}")
    if origin is dict:
        key_tp, item_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {
            _coerce(k, key_tp, f"{where} key"): _coerce(v, item_tp, f"{where}[{k!r}]")
            for k, v in value.items()
        }
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {tp}")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ConfigError(
            f"{where or 'config'}: unknown key(s) {', '.join(unknown)}; "
            f"valid keys: {', '.join(sorted(types_))}"
        )
    kwargs = {k: _coerce(v, types_[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any] | None) -> Config:
    return _build(Config, data or {}, "")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML scalars/lists."""
    data = config_to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r}: expected key=value, e.g. model.moe.num_experts=8"
            )
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node: dict[str, Any] = data
        for i, p in enumerate(parts):
            if not isinstance(node, dict) or p not in node:
                valid = sorted(node) if isinstance(node, dict) else []
                prefix = ".".join(parts[:i]) or "config"
                raise ConfigError(
                    f"override {item!r}: {prefix} has no key {p!r}; valid keys: {', '.join(valid)}"
                )
            if i == len(parts) - 1:
                node[p] = yaml.safe_load(raw) if raw.strip() else ""
            else:
                node = node[p]
    return config_from_dict(data)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    try:
        cfg = config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    return apply_overrides(cfg, overrides or [])


def dump_config(cfg: Config, path: str | Path | None = None) -> str:
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text
