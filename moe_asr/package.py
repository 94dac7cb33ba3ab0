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

from moe_asr.config import Config, config_from_dict, config_to_dict
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
    """Write a package; CMVN travels inside ``model_state`` (the model's buffers)."""
    path = Path(path)
    atomic_save(
        {
            "format": PACKAGE_FORMAT,
            "config_yaml": yaml.safe_dump(config_to_dict(config), sort_keys=False),
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
            f"{e} (a model package is EXP/model.pt made by `moe-asr average`)"
        ) from e
    if obj.get("format") != PACKAGE_FORMAT:
        raise PackageError(
            f"{path}: not a moe_asr model package (format {obj.get('format')!r}, expected "
            f"{PACKAGE_FORMAT!r}); training checkpoints become packages with `moe-asr average`"
        )
    config = config_from_dict(yaml.safe_load(obj["config_yaml"]))
    tokenizer = Tokenizer.from_bytes(obj["tokenizer"])
    label_vocab = LabelVocab.from_dict(obj["label_vocab"]) if obj["label_vocab"] else None
    model = build_model(config.model, tokenizer.vocab_size, label_vocab)
    missing, unexpected = model.load_state_dict(obj["model_state"], strict=False)
    if missing or unexpected:
        raise PackageError(
            f"{path}: weights do not match the packaged config "
            f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})"
        )
    model.to(device).eval()
    return ModelPackage(model, config, tokenizer, label_vocab, dict(obj["meta"]))
