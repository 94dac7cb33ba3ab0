import pytest
import yaml

from moe_asr.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    dump_config,
    load_config,
)


def test_defaults_roundtrip_through_yaml(tmp_path):
    cfg = Config()
    path = tmp_path / "c.yaml"
    dump_config(cfg, path)
    assert load_config(path) == cfg
    # every default is written out
    data = yaml.safe_load(path.read_text())
    assert data["model"]["moe"]["num_experts"] == cfg.model.moe.num_experts
    assert "guidance" in data["model"]["moe"]


def test_yaml_values_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  ffn: dense\n  moe:\n    num_experts: 8\ntrain:\n  lr: 1\n")
    cfg = load_config(path, ["model.moe.top_k=2", "model.moe.guidance.labels=[accent, noise]"])
    assert cfg.model.ffn == "dense"
    assert cfg.model.moe.num_experts == 8
    assert cfg.model.moe.top_k == 2
    assert cfg.model.moe.guidance.labels == ["accent", "noise"]
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 1.0


def test_unknown_key_lists_valid_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  moe:\n    num_expert: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "num_expert" in msg and "num_experts" in msg and str(path) in msg


def test_override_errors():
    cfg = Config()
    with pytest.raises(ConfigError, match="valid keys: .*num_experts"):
        apply_overrides(cfg, ["model.moe.experts=3"])
    with pytest.raises(ConfigError, match="expected an integer"):
        apply_overrides(cfg, ["model.moe.num_experts=many"])
    with pytest.raises(ConfigError, match="expected true/false"):
        apply_overrides(cfg, ["train.bf16=3"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(cfg, ["model.moe.num_experts"])


def test_wrong_type_in_file_names_the_key():
    with pytest.raises(ConfigError, match="model.num_layers"):
        config_from_dict({"model": {"num_layers": "six"}})
    with pytest.raises(ConfigError, match="expected a mapping"):
        config_from_dict({"model": 3})


def test_validation_names_every_bad_value_and_sections_limit_it():
    import pytest as _pytest

    from moe_asr.config import ConfigError, load_config, validate_config

    with _pytest.raises(ConfigError) as e:
        load_config(None, ["train.lr=0", "model.moe.top_k=5", "decode.mode=magic"])
    msg = str(e.value)
    assert msg.startswith("model.moe.top_k=5: must be in 1..model.moe.num_experts=4")
    assert "train.lr=0.0: must be > 0" in msg and "decode.mode='magic'" in msg
    # compute-cmvn reads only data.features: a model rule does not concern it
    cfg = load_config(None, ["data.features.num_mel_bins=40"], sections=("data",))
    assert cfg.data.features.num_mel_bins == 40
    with _pytest.raises(ConfigError, match="model.input_dim=80: must equal"):
        validate_config(cfg)
    with _pytest.raises(ConfigError, match="data.features.num_mel_bins=0"):
        load_config(None, ["data.features.num_mel_bins=0"], sections=("data",))


def test_mapping_fields_load_and_are_type_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  moe:\n    guidance:\n      groups: {en-us: native, fr: romance}\n")
    cfg = load_config(path, ["model.moe.guidance.groups={es: romance}"])
    assert cfg.model.moe.guidance.groups == {"es": "romance"}
    assert load_config(path).model.moe.guidance.groups == {"en-us": "native", "fr": "romance"}
    with pytest.raises(ConfigError, match=r"groups\['fr'\]: expected a string"):
        load_config(None, ["model.moe.guidance.groups={fr: 1}"])
    with pytest.raises(ConfigError, match="groups: expected a mapping"):
        load_config(None, ["model.moe.guidance.groups=[fr]"])
