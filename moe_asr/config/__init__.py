"""Typed experiment configuration: nested dataclasses, YAML load, dotted overrides.

A config is built from defaults, then a YAML file, then ``--set a.b.c=value``
overrides; every step is type-checked and an unknown key is an error that lists
the valid keys. ``validate_config`` is the one pass over values (ranges, names,
divisibility, cross-field rules); ``load_config`` runs it on the resolved config, the
trainer and the package loader run it before they write or build anything.
``dump_config`` writes the resolved config with every default.
"""

from moe_asr.config.loading import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
)
from moe_asr.config.schema import (
    AugmentConfig,
    CleanTargetConfig,
    Config,
    ConfigError,
    DataConfig,
    DecodeConfig,
    DecoderConfig,
    FeatureConfig,
    GuidanceConfig,
    ModelConfig,
    MoEConfig,
    StreamingConfig,
    TokenizerConfig,
    TrainConfig,
)
from moe_asr.config.validation import (
    SECTIONS,
    TRAINABLE_SETS,
    VALUE_SET_PREFIX,
    validate_config,
    waveform_augmentation,
)

__all__ = [
    "ConfigError",
    "MoEConfig",
    "GuidanceConfig",
    "DecoderConfig",
    "StreamingConfig",
    "CleanTargetConfig",
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
    "VALUE_SET_PREFIX",
]
