"""Typed experiment configuration: nested dataclasses, YAML load, dotted overrides.

A config is built from defaults, then a YAML file, then ``--set a.b.c=value``
overrides; every step is type-checked and an unknown key is an error that lists
the valid keys. ``validate_config`` is the one pass over values (ranges, names,
divisibility, cross-field rules); ``load_config`` runs it on the resolved config, the
trainer and the package loader run it before they write or build anything.
``dump_config`` writes the resolved config with every default.
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
from moe_asr.files import atomic_write_text

__all__ = [
    "ConfigError",
    "MoEConfig",
    "GuidanceConfig",
    "DecoderConfig",
    "StreamingConfig",
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
    "validate_config",
    "waveform_augmentation",
    "SECTIONS",
    "TRAINABLE_SETS",
]


class ConfigError(UserError):
    """A config file or override names an unknown key, or holds a wrong type or bad value."""


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
    # experts of each MoE feed-forward in encoder order (ff1, ff2 of every MoE layer), for
    # models cut down by `moe-asr extract`; empty = num_experts in every one
    ffn_experts: list[int] = field(default_factory=list)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)


@dataclass(kw_only=True)
class DecoderConfig:
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 576
    dropout: float = 0.1
    # dense | moe: experts of width d_ff, routing and its losses as in model.moe (no guidance)
    ffn: str = "dense"


@dataclass(kw_only=True)
class StreamingConfig:
    """Dynamic-chunk training (U2): per batch, full context with ``full_context_prob``,
    else a chunk of ``min_chunk..max_chunk`` encoder frames (uniform) seeing ``left_chunks``
    chunks of history (-1 = all; ``dynamic_left_chunks``: drawn per batch from 0 up to all,
    as WeNet's dynamic left chunks, for decoding with limited history).
    ``enabled`` also makes the depthwise convolution causal."""

    enabled: bool = False
    min_chunk: int = 1
    max_chunk: int = 25
    full_context_prob: float = 0.5
    left_chunks: int = -1
    dynamic_left_chunks: bool = False


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
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    ctc_weight: float = 0.3
    lsm_weight: float = 0.1


@dataclass(kw_only=True)
class FeatureConfig:
    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0
    # read fbank from DATA/feats.scp (written by `moe-asr dump-feats`) instead of computing it
    # from the audio; waveform augmentation (speed_perturb, noise) is then impossible
    precomputed: bool = False


@dataclass(kw_only=True)
class AugmentConfig:
    """Training-time augmentation (see ``moe_asr.data.augment``); every draw is seeded per
    (seed, epoch, utterance). Noise and reverberation record the applied condition as the
    labels ``noise``, ``snr`` (bucket) and ``reverb``, which guided routing can use."""

    speed_perturb: list[float] = field(default_factory=list)  # e.g. [0.9, 1.0, 1.1]
    # additive noise, with probability noise_prob, of a type drawn uniformly from the
    # synthetic generators in noise_types (white, pink, brown, babble: other training
    # utterances) and the user sources in noise_files: audio files, directories (searched)
    # or Kaldi noise.scp files, each optionally TYPE=PATH (e.g. music=/data/musan/music;
    # untyped: type "file")
    noise_files: list[str] = field(default_factory=list)
    noise_types: list[str] = field(default_factory=list)
    noise_snrs: list[float] = field(default_factory=lambda: [5.0, 10.0, 20.0])  # dB, drawn
    snr_range: list[float] = field(default_factory=list)  # [low, high] dB (e.g. [-5, 20]),
    # uniform; replaces noise_snrs when given. SNR = active speech power / noise power.
    snr_buckets: list[float] = field(default_factory=lambda: [0.0, 10.0])  # `snr` label edges
    noise_prob: float = 0.0
    # reverberation (before the noise), with probability reverb_prob, by a simulated RIR
    # (RT60 and direct-to-reverberant ratio drawn uniformly from the ranges) or, when
    # rir_files are given (files, directories or rir.scp), by one of those
    reverb_prob: float = 0.0
    rt60_range: list[float] = field(default_factory=lambda: [0.2, 0.8])  # seconds
    drr_range: list[float] = field(default_factory=lambda: [0.0, 10.0])  # dB
    rir_files: list[str] = field(default_factory=list)
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
    # start from this model's weights (package or checkpoint; dense FFNs upcycled into MoE
    # experts; see moe_asr.train.init); "" = random init. A resumed run ignores it.
    init: str = ""
    init_noise: float = 0.0  # noise on upcycled expert copies, relative std (e.g. 0.01)
    # the parameters that train (the rest stay frozen): all | router (MoE routers and the
    # label guidance: embeddings, group routers, estimate heads) | router+experts (also the
    # expert and shared-expert feed-forwards); `moe-asr adapt` sets it
    trainable: str = "all"


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
    # chunk mask of streaming models (offline simulation of streaming); 0 = full context
    chunk_frames: int = 0  # encoder frames per chunk
    left_chunks: int = -1  # chunks of history each frame sees; -1 = all


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


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    sections: tuple[str, ...] | None = None,
) -> Config:
    """Defaults, then the YAML file at ``path``, then ``overrides``; validated (every
    section, or only ``sections`` for a command that uses just those)."""
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
    cfg = apply_overrides(cfg, overrides or [])
    try:
        validate_config(cfg, sections or SECTIONS)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from e
    return cfg


# ----------------------------------------------------------------------------- validation

# names the rest of the code accepts (kept here so that a typo fails before any work)
_FFN = ("dense", "moe")
_SUBSAMPLING = (4, 6, 8)
_SCHEDULERS = ("noam", "cosine", "constant")
_TOKENIZERS = ("char", "bpe", "unigram")
_DECODE_MODES = ("ctc_greedy", "ctc_prefix_beam", "attention", "attention_rescoring")
_LM_UNITS = ("word", "token")
# train.trainable: the parameter sets a run may train (moe_asr.train.adapt selects them)
TRAINABLE_SETS = ("all", "router", "router+experts")
_SYNTH_NOISE = ("white", "pink", "brown", "babble")  # data.augment.noise_types


class _Checker:
    """Collects ``key=value: rule`` problems; ``done`` raises one ConfigError naming them."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def rule(self, ok: bool, key: str, value: Any, what: str) -> None:
        if not ok:
            self.problems.append(f"{key}={value!r}: {what}")

    def at_least(self, key: str, value: float, low: float) -> None:
        self.rule(value >= low, key, value, f"must be >= {low:g}")

    def positive(self, key: str, value: float) -> None:
        self.rule(value > 0, key, value, "must be > 0")

    def unit(self, key: str, value: float, *, closed: bool = True) -> None:
        ok = 0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0
        self.rule(ok, key, value, "must be in [0, 1]" if closed else "must be in [0, 1)")

    def choice(self, key: str, value: Any, choices: tuple) -> None:
        self.rule(value in choices, key, value, f"choose one of {', '.join(map(str, choices))}")

    def done(self) -> None:
        if self.problems:
            more = f" (and {len(self.problems) - 1} more: " + "; ".join(self.problems[1:]) + ")"
            raise ConfigError(
                self.problems[0]
                + (more if len(self.problems) > 1 else "")
                + "; fix the config file or the --set option"
            )


def _moe_layers_ok(spec: str, num_layers: int) -> bool:
    spec = spec.strip()
    if spec in ("all", "every_other"):
        return True
    try:
        idx = [int(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        return False
    return bool(idx) and all(0 <= i < num_layers for i in idx)


SECTIONS = ("model", "data", "tokenizer", "train", "decode")


def validate_config(cfg: Config, sections: tuple[str, ...] = SECTIONS) -> None:
    """Check every value of ``cfg``; raise one ConfigError naming each bad ``key=value``.

    Ranges, the names of swappable parts, divisibility (heads) and cross-field rules
    (top_k <= num_experts, input_dim == num_mel_bins, ...). ``sections`` limits the pass
    to the parts a command uses (``compute-cmvn``: data only); the model's rules include
    its cross-field rules with ``data.features``. Label-dependent rules (label vocabularies,
    expert groups per label) need the data and stay with the model builder.
    """
    c = _Checker()
    unknown = set(sections) - set(SECTIONS)
    assert not unknown, f"unknown config sections {unknown}"
    for name in sections:
        _SECTION_CHECKS[name](c, cfg)
    c.done()


def _check_model(c: _Checker, cfg: Config) -> None:
    m = cfg.model
    c.positive("model.input_dim", m.input_dim)
    c.positive("model.d_model", m.d_model)
    c.at_least("model.num_heads", m.num_heads, 1)
    if m.num_heads >= 1 and m.d_model > 0:
        c.rule(
            m.d_model % m.num_heads == 0,
            "model.d_model",
            m.d_model,
            f"must be divisible by model.num_heads={m.num_heads}",
        )
    c.at_least("model.num_layers", m.num_layers, 1)
    c.positive("model.d_ff", m.d_ff)
    c.rule(
        m.conv_kernel >= 1 and m.conv_kernel % 2 == 1,
        "model.conv_kernel",
        m.conv_kernel,
        "must be odd and >= 1",
    )
    c.unit("model.dropout", m.dropout, closed=False)
    c.unit("model.attention_dropout", m.attention_dropout, closed=False)
    c.choice("model.subsampling", m.subsampling, _SUBSAMPLING)
    c.positive("model.subsampling_channels", m.subsampling_channels)
    c.at_least("model.max_rel_pos", m.max_rel_pos, 1)
    c.choice("model.ffn", m.ffn, _FFN)
    c.unit("model.ctc_weight", m.ctc_weight)
    c.unit("model.lsm_weight", m.lsm_weight, closed=False)
    d = m.decoder
    c.at_least("model.decoder.num_layers", d.num_layers, 0)
    c.at_least("model.decoder.num_heads", d.num_heads, 1)
    if d.num_heads >= 1 and m.d_model > 0:
        c.rule(
            m.d_model % d.num_heads == 0,
            "model.decoder.num_heads",
            d.num_heads,
            f"must divide model.d_model={m.d_model}",
        )
    c.positive("model.decoder.d_ff", d.d_ff)
    c.unit("model.decoder.dropout", d.dropout, closed=False)
    e = m.moe
    if m.ffn == "moe":
        c.at_least("model.moe.num_experts", e.num_experts, 1)
        c.rule(
            1 <= e.top_k <= max(1, e.num_experts),
            "model.moe.top_k",
            e.top_k,
            f"must be in 1..model.moe.num_experts={e.num_experts}",
        )
        c.rule(
            _moe_layers_ok(e.layers, m.num_layers),
            "model.moe.layers",
            e.layers,
            f"use all, every_other or 0-based indices below model.num_layers={m.num_layers}",
        )
    c.at_least("model.moe.expert_d_ff", e.expert_d_ff, 0)
    c.at_least("model.moe.capacity_factor", e.capacity_factor, 0)
    c.at_least("model.moe.noisy_gate_std", e.noisy_gate_std, 0)
    c.at_least("model.moe.num_shared_experts", e.num_shared_experts, 0)
    for name in ("balance_weight", "z_loss_weight", "importance_cv_weight"):
        c.at_least(f"model.moe.{name}", getattr(e, name), 0)
    c.at_least("model.moe.output_diversity_weight", e.output_diversity_weight, 0)
    g = e.guidance
    c.unit("model.moe.guidance.label_dropout", g.label_dropout)
    c.at_least("model.moe.guidance.router_loss_weight", g.router_loss_weight, 0)
    c.at_least("model.moe.guidance.estimate_loss_weight", g.estimate_loss_weight, 0)
    f = cfg.data.features
    c.rule(
        f.num_mel_bins == m.input_dim,
        "model.input_dim",
        m.input_dim,
        f"must equal data.features.num_mel_bins={f.num_mel_bins} (the feature dimension)",
    )


def _check_data(c: _Checker, cfg: Config) -> None:
    f = cfg.data.features
    c.positive("data.features.sample_rate", f.sample_rate)
    c.positive("data.features.num_mel_bins", f.num_mel_bins)
    c.positive("data.features.frame_length_ms", f.frame_length_ms)
    c.positive("data.features.frame_shift_ms", f.frame_shift_ms)
    c.at_least("data.features.dither", f.dither, 0)
    a = cfg.data.augment
    c.rule(
        all(s > 0 for s in a.speed_perturb),
        "data.augment.speed_perturb",
        a.speed_perturb,
        "factors must be > 0",
    )
    c.unit("data.augment.noise_prob", a.noise_prob)
    _check_augment_conditions(c, a)
    for name in ("freq_masks", "freq_mask_width", "time_masks", "time_mask_width"):
        c.at_least(f"data.augment.{name}", getattr(a, name), 0)
    c.rule(
        0.0 < a.time_mask_max_ratio <= 1.0,
        "data.augment.time_mask_max_ratio",
        a.time_mask_max_ratio,
        "must be in (0, 1]",
    )
    waveform_aug = waveform_augmentation(a)
    c.rule(
        not (f.precomputed and waveform_aug),
        "data.features.precomputed",
        f.precomputed,
        f"precomputed features have no waveform to augment: turn off {' and '.join(waveform_aug)} "
        "or set data.features.precomputed=false (SpecAugment works on either)",
    )
    dc = cfg.data
    c.positive("data.max_batch_seconds", dc.max_batch_seconds)
    c.positive("data.max_utt_seconds", dc.max_utt_seconds)
    c.at_least("data.num_buckets", dc.num_buckets, 1)
    c.at_least("data.num_workers", dc.num_workers, 0)


def waveform_augmentation(a: AugmentConfig) -> list[str]:
    """The config keys of the waveform augmentations ``a`` turns on (speed perturbation with
    a factor other than 1.0, reverberation, noise): impossible with precomputed features."""
    on = {
        "data.augment.speed_perturb": any(f != 1.0 for f in a.speed_perturb),
        "data.augment.noise_prob": a.noise_prob > 0,
        "data.augment.reverb_prob": a.reverb_prob > 0,
    }
    return [k for k, v in on.items() if v]


def _check_augment_conditions(c: _Checker, a: AugmentConfig) -> None:
    """Noise types, SNR range and buckets, reverberation ranges of ``data.augment``."""
    bad = [t for t in a.noise_types if t not in _SYNTH_NOISE]
    c.rule(not bad, "data.augment.noise_types", a.noise_types, f"choose from {_SYNTH_NOISE}")
    if a.noise_prob > 0:
        c.rule(
            bool(a.noise_types or a.noise_files),
            "data.augment.noise_prob",
            a.noise_prob,
            "> 0 needs data.augment.noise_types or data.augment.noise_files",
        )
        c.rule(
            bool(a.noise_snrs or a.snr_range),
            "data.augment.noise_snrs",
            a.noise_snrs,
            "empty: list SNRs in dB or give data.augment.snr_range",
        )

    def span(key: str, v: list[float], low: float, high: float) -> None:
        ok = len(v) == 2 and low <= v[0] <= v[1] <= high
        c.rule(ok, key, v, f"must be [low, high] with {low:g} <= low <= high <= {high:g}")

    if a.snr_range:
        span("data.augment.snr_range", a.snr_range, -100.0, 100.0)
    edges = a.snr_buckets
    c.rule(
        all(x < y for x, y in zip(edges, edges[1:])),
        "data.augment.snr_buckets",
        edges,
        "edges must increase",
    )
    c.unit("data.augment.reverb_prob", a.reverb_prob)
    span("data.augment.rt60_range", a.rt60_range, 0.01, 3.0)
    span("data.augment.drr_range", a.drr_range, -30.0, 30.0)


def _check_tokenizer(c: _Checker, cfg: Config) -> None:
    c.choice("tokenizer.type", cfg.tokenizer.type, _TOKENIZERS)
    c.at_least("tokenizer.vocab_size", cfg.tokenizer.vocab_size, 4)


def _check_train(c: _Checker, cfg: Config) -> None:
    t = cfg.train
    c.positive("train.lr", t.lr)
    c.at_least("train.weight_decay", t.weight_decay, 0)
    c.at_least("train.warmup_steps", t.warmup_steps, 0)
    c.choice("train.scheduler", t.scheduler, _SCHEDULERS)
    c.at_least("train.max_epochs", t.max_epochs, 1)
    c.at_least("train.max_steps", t.max_steps, 0)
    c.at_least("train.max_minutes", t.max_minutes, 0)
    c.rule(t.grad_clip >= 0, "train.grad_clip", t.grad_clip, "must be >= 0 (0 = no clipping)")
    c.at_least("train.accum_grad", t.accum_grad, 1)
    c.at_least("train.log_interval", t.log_interval, 1)
    c.at_least("train.save_every_steps", t.save_every_steps, 0)
    c.at_least("train.keep_best", t.keep_best, 0)
    c.at_least("train.patience", t.patience, 0)
    c.at_least("train.max_bad_steps", t.max_bad_steps, 1)
    c.at_least("train.num_threads", t.num_threads, 0)
    c.choice("train.trainable", t.trainable, TRAINABLE_SETS)


def _check_decode(c: _Checker, cfg: Config) -> None:
    dec = cfg.decode
    c.choice("decode.mode", dec.mode, _DECODE_MODES)
    c.at_least("decode.beam", dec.beam, 1)
    c.unit("decode.ctc_weight", dec.ctc_weight)
    c.choice("decode.lm_unit", dec.lm_unit, _LM_UNITS)
    c.at_least("decode.batch_size", dec.batch_size, 1)
    c.at_least("decode.nbest", dec.nbest, 1)
    c.positive("decode.window_seconds", dec.window_seconds)


_SECTION_CHECKS = {
    "model": _check_model,
    "data": _check_data,
    "tokenizer": _check_tokenizer,
    "train": _check_train,
    "decode": _check_decode,
}


def dump_config(cfg: Config, path: str | Path | None = None) -> str:
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    if path is not None:
        atomic_write_text(path, text)
    return text
