"""Self-contained model package: config + weights + tokenizer + CMVN + label vocabulary.

``model.pt`` is a dict of tensors, strings, numbers and bytes, written atomically and
read with ``torch.load(weights_only=True)``: loading never executes code. Everything
needed to decode, transcribe, export or report travels inside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from moe_asr.config import Config, ConfigError, config_from_dict, config_to_dict, validate_config
from moe_asr.data.labels import LabelVocab
from moe_asr.errors import UserError
from moe_asr.train.checkpoint import atomic_save, load_checkpoint

__all__ = ["PACKAGE_FORMAT", "PackageError", "ModelPackage", "save_package", "load_package"]

PACKAGE_FORMAT = "moe_asr.package/1"


class PackageError(UserError):
    """A model package is missing, corrupt or from an incompatible version."""


@dataclass
class ModelPackage:
    model: torch.nn.Module  # an AsrModel in eval mode
    config: Config
    tokenizer: object  # moe_asr.data.tokenizer.Tokenizer
    label_vocab: LabelVocab | None
    meta: dict


def save_package(
    path: str | Path,
    *,
    config: Config,
    model_state: dict[str, torch.Tensor],
    tokenizer_bytes: bytes,
    label_vocab: LabelVocab | None,
    meta: dict | None = None,
) -> Path:
    """Write a package; CMVN travels inside ``model_state`` (the model's buffers).

    The packaged config leaves out ``data.features.precomputed`` (so it is off when loaded):
    a package makes its features from audio (decode, evaluate, report), whatever dump its
    training run read."""
    path = Path(path)
    config_dict = config_to_dict(config)
    config_dict["data"]["features"].pop("precomputed", None)
    atomic_save(
        {
            "format": PACKAGE_FORMAT,
            "config_yaml": yaml.safe_dump(config_dict, sort_keys=False),
            "model_state": {k: v.detach().cpu() for k, v in model_state.items()},
            "tokenizer": tokenizer_bytes,
            "label_vocab": label_vocab.to_dict() if label_vocab is not None else {},
            "meta": meta or {},
        },
        path,
    )
    return path


def load_package(path: str | Path, device: str | torch.device = "cpu") -> ModelPackage:
    """Load a package written by ``save_package`` and rebuild the model in eval mode."""
    from moe_asr.data.tokenizer import Tokenizer
    from moe_asr.model import build_model

    path = Path(path)
    try:
        obj = load_checkpoint(path, map_location=device)
    except UserError as e:
        raise PackageError(
            f"{e}; moe_asr model packages are EXP/model.pt files made by `moe-asr average` "
            "from a training run"
        ) from e
    if obj.get("format") != PACKAGE_FORMAT:
        raise PackageError(
            f"{path}: not a moe_asr model package (format {obj.get('format')!r}, expected "
            f"{PACKAGE_FORMAT!r}); training checkpoints become packages with `moe-asr average`"
        )
    corrupt = f"{path}: corrupt model package"
    redo = "package the experiment again with `moe-asr average --overwrite`"
    for key, kind in _FIELDS.items():
        if not isinstance(obj.get(key), kind):
            raise PackageError(f"{corrupt}: field {key!r} is missing or of the wrong type; {redo}")
    try:
        raw = yaml.safe_load(obj["config_yaml"])
        if not isinstance(raw, dict):
            raise ConfigError("the config is not a mapping")
        config = config_from_dict(raw)
        validate_config(config)
    except (yaml.YAMLError, ConfigError) as e:
        raise PackageError(f"{corrupt}: its config is invalid ({e}); {redo}") from e
    try:
        tokenizer = Tokenizer.from_bytes(obj["tokenizer"])
        label_vocab = LabelVocab.from_dict(obj["label_vocab"]) if obj["label_vocab"] else None
        model = build_model(config.model, tokenizer.vocab_size, label_vocab)
    except (UserError, ValueError, KeyError, TypeError) as e:
        raise PackageError(f"{corrupt}: {' '.join(str(e).split())}; {redo}") from e
    state = obj["model_state"]
    own = model.state_dict()
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise PackageError(f"{corrupt}: weight {name!r} is not a tensor; {redo}")
        if name in own and tensor.shape != own[name].shape:
            raise PackageError(
                f"{corrupt}: weight {name!r} has shape {tuple(tensor.shape)}, the packaged "
                f"config builds {tuple(own[name].shape)}; {redo}"
            )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise PackageError(
            f"{path}: weights do not match the packaged config "
            f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})"
        )
    model.to(device).eval()
    return ModelPackage(model, config, tokenizer, label_vocab, dict(obj["meta"]))


# what a package holds, and of which type (checked before anything is built from it)
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "config_yaml": str,
    "model_state": dict,
    "tokenizer": (bytes, bytearray),
    "label_vocab": dict,
    "meta": dict,
}
