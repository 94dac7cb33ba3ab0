"""Parameter sets that a run trains (``train.trainable``); the rest of the model is frozen.

``router``: the router of every MoE feed-forward (encoder and decoder) and every parameter
of the label guidance (``guidance.*``: label embeddings, value routers, group routers,
estimate heads); ``router+experts``: also the experts and shared experts; ``all``: every
parameter; ``value:NAME=VALUE``: only label NAME's rows of VALUE (its embedding row, its
value-router corrections and its estimate-head output row): what ``moe-asr adapt --params
value`` trains for a new value, so that no other value's routing input changes. Those
tensors train row-masked: the other rows get zero gradients and no weight decay
(``rows_only``), so AdamW leaves them exactly as they were. Buffers (CMVN) never train.
Used by the trainer and by ``moe-asr adapt``.
"""

from __future__ import annotations

import torch

from moe_asr.config import TRAINABLE_SETS, VALUE_SET_PREFIX
from moe_asr.errors import UserError
from moe_asr.nn.moe import MoEFeedForward

__all__ = ["trainable_names", "set_trainable", "rows_only"]

_ROWS = "_moe_asr_trained_row"  # parameter attribute: the one row (dim 0) that trains


def trainable_names(model: torch.nn.Module, which: str) -> list[str]:
    """Names of the parameters of set ``which`` (see the module docstring) in ``model``."""
    if which.startswith(VALUE_SET_PREFIX):
        return _value_rows(model, which)[0]
    if which not in TRAINABLE_SETS:
        raise UserError(
            f"parameter set {which!r} is unknown; use one of {', '.join(TRAINABLE_SETS)} "
            f"or {VALUE_SET_PREFIX}NAME=VALUE"
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
    """Freeze every parameter outside ``which``; returns the number of trainable values
    (for a value set: the values of its rows)."""
    rows: set[str] = set()
    index = 0
    if which.startswith(VALUE_SET_PREFIX):
        names, index = _value_rows(model, which)
        keep = rows = set(names)
    else:
        keep = set(trainable_names(model, which))
    if not keep:
        raise UserError(
            f"train.trainable={which}: the model has no such parameters (a dense model has no "
            "routers); use train.trainable=all"
        )
    count = 0
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)
        if name in rows:
            _mask_rows(p, index)
            count += p[index].numel()
        elif name in keep:
            count += p.numel()
    return count


def rows_only(p: torch.Tensor) -> bool:
    """Whether ``p`` trains only one row (set_trainable with a value set): no weight decay."""
    return hasattr(p, _ROWS)


def _value_rows(model: torch.nn.Module, which: str) -> tuple[list[str], int]:
    """(names of the parameters with a row per value of NAME, VALUE's row) of
    ``value:NAME=VALUE``."""
    spec = which[len(VALUE_SET_PREFIX) :]
    name, _, value = spec.partition("=")
    guidance = getattr(model, "guidance", None)
    names = list(guidance.names) if guidance is not None else []
    if name not in names:
        raise UserError(
            f"train.trainable={which}: the model's routing is not guided by {name!r} (its "
            f"labels: {', '.join(names) or 'none'}); name one of them"
        )
    known = guidance.vocab.values[name]
    if value not in known[1:]:
        raise UserError(
            f"train.trainable={which}: {name} has no value {value!r}; the model knows "
            f"{', '.join(known[1:])}"
        )
    index = known.index(value)
    rows = guidance.value_parameters(name).values()
    if not rows:
        raise UserError(
            f"train.trainable={which}: the model has no rows per {name} value (it has no "
            "label embedding, value routers or estimate head); train the routers instead "
            "(router)"
        )
    ids = {id(t) for t in rows}
    return [n for n, p in model.named_parameters() if id(p) in ids], index


def _mask_rows(p: torch.Tensor, index: int) -> None:
    mask = torch.zeros(p.shape[0], *([1] * (p.dim() - 1)), dtype=p.dtype, device=p.device)
    mask[index] = 1
    p.register_hook(lambda g: g * mask)
    setattr(p, _ROWS, index)
