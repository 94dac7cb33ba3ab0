"""Model packages: a pickle that would run code is refused without the unsafe advice, and a
package with a corrupt config, a missing field or a wrong tensor shape is a PackageError."""

from __future__ import annotations

import os

import pytest
import torch

from moe_asr.cli import main
from moe_asr.config import config_from_dict
from moe_asr.data.tokenizer import TokenizerConfig, train_tokenizer
from moe_asr.model import build_model
from moe_asr.package import PackageError, load_package, save_package

_TINY = {
    "model": {
        "d_model": 16,
        "num_heads": 2,
        "num_layers": 1,
        "d_ff": 32,
        "conv_kernel": 3,
        "subsampling_channels": 4,
        "ffn": "dense",
        "decoder": {"num_layers": 1, "num_heads": 2, "d_ff": 32},
    }
}


@pytest.fixture
def package(tmp_path):
    cfg = config_from_dict(_TINY)
    tok = train_tokenizer(["abc"], TokenizerConfig(type="char"))
    model = build_model(cfg.model, tok.vocab_size, None)
    return save_package(
        tmp_path / "model.pt",
        config=cfg,
        model_state=model.state_dict(),
        tokenizer_bytes=tok.to_bytes(),
        label_vocab=None,
    )


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_carrying_posix_system_never_runs_and_gets_no_unsafe_advice(tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = tmp_path / "model.pt"
    torch.save({"format": "moe_asr.package/1", "x": _Evil(marker)}, bad)
    with pytest.raises(PackageError) as e:
        load_package(bad)
    msg = str(e.value)
    assert "weights_only" not in msg and "will likely succeed" not in msg
    assert "not a moe_asr" in msg and "system" in msg and "moe-asr average" in msg
    assert not marker.exists()
    data = tmp_path / "data"
    data.mkdir()
    assert (
        main(["decode", "--model", str(bad), "--data", str(data), "--out", str(tmp_path / "o")])
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights_only" not in err and not marker.exists()


def _tamper(path, **changes):
    obj = torch.load(path, weights_only=True)
    for k, v in changes.items():
        if v is None:
            del obj[k]
        else:
            obj[k] = v
    torch.save(obj, path)


def test_corrupt_config_is_a_package_error(package):
    _tamper(package, config_yaml="model: {d_model: 33}\n")
    with pytest.raises(
        PackageError, match=r"corrupt model package: its config is invalid.*d_model=33"
    ):
        load_package(package)
    _tamper(package, config_yaml="model: [unclosed\n")
    with pytest.raises(PackageError, match="config is invalid"):
        load_package(package)
    _tamper(package, config_yaml="- a list\n")
    with pytest.raises(PackageError, match="not a mapping"):
        load_package(package)


def test_missing_field_and_wrong_tensor_shape(package):
    obj = torch.load(package, weights_only=True)
    name = next(k for k, v in obj["model_state"].items() if v.dim() == 2)
    state = dict(obj["model_state"])
    state[name] = torch.zeros(3, 3)
    _tamper(package, model_state=state)
    with pytest.raises(PackageError, match=rf"weight '{name}' has shape \(3, 3\)"):
        load_package(package)
    _tamper(package, tokenizer=None)
    with pytest.raises(PackageError, match="field 'tokenizer' is missing"):
        load_package(package)


def test_truncated_package(package):
    raw = package.read_bytes()
    package.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PackageError, match="corrupt or truncated") as e:
        load_package(package)
    assert "weights_only" not in str(e.value)
