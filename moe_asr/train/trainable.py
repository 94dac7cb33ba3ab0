"""Parameter sets that a run trains (``train.trainable``); the rest of the model is frozen.

``router``: the router of every MoE feed-forward (encoder and decoder) and every parameter
of the label guidance (``guidance.*``: label embeddings, group routers, estimate heads);
``router+experts``: also the experts and shared experts; ``all``: every parameter. Buffers
(CMVN) never train. Used by the trainer and by ``moe-asr adapt``.
"""

from __future__ import annotations

import torch

from moe_asr.config import TRAINABLE_SETS
from moe_asr.errors import UserError
from moe_asr.nn.moe import MoEFeedForward

__all__ = ["trainable_names", "set_trainable"]


def trainable_names(model: torch.nn.Module, which: str) -> list[str]:
    """Names of the parameters of set ``which`` (see the module docstring) in ``model``."""
    if which not in TRAINABLE_SETS:
        raise UserError(
            f"parameter set {which!r} is unknown; use one of {', '.join(TRAINABLE_SETS)}"
        )
    names = [n for n, _ in model.named_parameters()]
    if which == "all":
        return names
    prefixes = ["guidance."]
    for name, m in model.named_modules():
        if isinstance(m, MoEFeedForward):
            prefixes.append(f"{name}.router.")
            if which == "router+experts":
                prefixes += [f"{name}.experts.", f"{name}.shared."]
    return [n for n in names if n.startswith(tuple(prefixes))]


def set_trainable(model: torch.nn.Module, which: str) -> int:
    """Freeze every parameter outside ``which``; returns the number of trainable values."""
    keep = set(trainable_names(model, which))
    if not keep:
        raise UserError(
            f"train.trainable={which}: the model has no such parameters (a dense model has no "
            "routers); use train.trainable=all"
        )
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)
    return sum(p.numel() for n, p in model.named_parameters() if n in keep)
