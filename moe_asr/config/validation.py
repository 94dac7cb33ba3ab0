"""The one validation pass over a resolved config: ranges, names, divisibility and
cross-field rules, all problems of a config reported in one ConfigError."""

from __future__ import annotations

from typing import Any

from moe_asr.config.schema import AugmentConfig, Config, ConfigError
from moe_asr.synth.noise import GENERATED_NOISE  # data.augment.noise_types

__all__ = [
    "SECTIONS",
    "TRAINABLE_SETS",
    "VALUE_SET_PREFIX",
    "validate_config",
    "waveform_augmentation",
]


# names the rest of the code accepts (kept here so that a typo fails before any work)
_FFN = ("dense", "moe")
_INPUT_NORM = ("global", "utterance")
_STREAMING_CONV = ("causal", "chunk")
_SUBSAMPLING = (4, 6, 8)
_SCHEDULERS = ("noam", "cosine", "constant")
_CPU_DROPOUT = ("fast", "torch")
_TOKENIZERS = ("char", "bpe", "unigram")
_DECODE_MODES = ("ctc_greedy", "ctc_prefix_beam", "attention", "attention_rescoring")
_LM_UNITS = ("word", "token")
# train.trainable: the parameter sets a run may train (moe_asr.train.adapt selects them)
TRAINABLE_SETS = ("all", "router", "router+experts")
# ... or one label value's rows: "value:accent=sv" (moe_asr.train.trainable)
VALUE_SET_PREFIX = "value:"


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
    c.choice("model.streaming.conv", m.streaming.conv, _STREAMING_CONV)
    c.choice("model.input_norm", m.input_norm, _INPUT_NORM)
    c.rule(
        m.input_norm != "utterance" or not m.streaming.enabled,
        "model.input_norm",
        m.input_norm,
        "needs the whole utterance: a streaming model (model.streaming.enabled) uses global",
    )
    c.at_least("model.clean_target.weight", m.clean_target.weight, 0)
    c.rule(
        not m.clean_target.enabled or 1 <= m.clean_target.layer <= m.num_layers,
        "model.clean_target.layer",
        m.clean_target.layer,
        f"must be in 1..model.num_layers={m.num_layers} (encoder layers before the head)",
    )
    aug = cfg.data.augment
    c.rule(
        not m.clean_target.enabled
        or (not cfg.data.features.precomputed and max(aug.noise_prob, aug.reverb_prob) > 0),
        "model.clean_target.weight",
        m.clean_target.weight,
        "needs noise or reverberation added in training (data.augment.noise_prob or "
        "reverb_prob > 0, features from the audio): the clean target is the audio before them",
    )
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
    c.at_least("model.moe.route_block", e.route_block, 0)
    c.at_least("model.moe.num_shared_experts", e.num_shared_experts, 0)
    c.at_least("model.moe.fixed_group_free", e.fixed_group_free, 0)
    for name in ("balance_weight", "z_loss_weight", "importance_cv_weight"):
        c.at_least(f"model.moe.{name}", getattr(e, name), 0)
    c.at_least("model.moe.output_diversity_weight", e.output_diversity_weight, 0)
    g = e.guidance
    c.unit("model.moe.guidance.label_dropout", g.label_dropout)
    c.at_least("model.moe.guidance.router_loss_weight", g.router_loss_weight, 0)
    c.at_least("model.moe.guidance.estimate_loss_weight", g.estimate_loss_weight, 0)
    c.rule(
        not g.value_routers or (bool(g.labels) and (g.embed or g.utterance_estimate)),
        "model.moe.guidance.value_routers",
        g.value_routers,
        "needs labels and embed or utterance_estimate (what selects a value's router)",
    )
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
    bad = [t for t in a.noise_types if t not in GENERATED_NOISE]
    c.rule(not bad, "data.augment.noise_types", a.noise_types, f"choose from {GENERATED_NOISE}")
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
    c.choice("train.cpu_dropout", t.cpu_dropout, _CPU_DROPOUT)
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
    if t.trainable.startswith(VALUE_SET_PREFIX):
        name, sep, value = t.trainable[len(VALUE_SET_PREFIX) :].partition("=")
        c.rule(
            bool(name and sep and value),
            "train.trainable",
            t.trainable,
            "expected value:NAME=VALUE",
        )
    else:
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
