"""Inference routing options (label-free, forced labels, oracle labels, expert masks),
their command-line forms (``--force LABEL=VALUE``, ``--mask-experts LAYER:E,E``) and the
label probabilities a model reports. ``LabelGuidance`` checks and applies them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from torch import Tensor

from moe_asr.errors import UserError

__all__ = ["ROUTING_MODES", "RoutingOptions", "LabelProbs", "parse_forced", "parse_expert_mask"]

ROUTING_MODES = ("free", "forced", "oracle")


@dataclass(kw_only=True)
class RoutingOptions:
    """Inference routing: ``free`` (label-free, default), ``forced`` (route as if the
    labels were ``forced``: label name -> value), ``oracle`` (use the labels passed in);
    ``expert_mask``: layer index -> experts disabled in both feed-forwards of that layer."""

    mode: str = "free"
    forced: dict[str, str] = field(default_factory=dict)
    expert_mask: dict[int, list[int]] = field(default_factory=dict)


@dataclass
class LabelProbs:
    """Per-utterance probabilities of one label: values (n,) and probs (B, n) (no unk)."""

    values: list[str]
    probs: Tensor


def parse_forced(items: Iterable[str]) -> dict[str, str]:
    """``["noise=white", "accent=fr"]`` -> ``{"noise": "white", "accent": "fr"}``."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise UserError(f"--force {item!r}: expected LABEL=VALUE, e.g. --force accent=fr")
        if name in out and out[name] != value:
            raise UserError(f"--force {name} given twice ({out[name]}, {value}); give it once")
        out[name] = value
    return out


def parse_expert_mask(items: Iterable[str]) -> dict[int, list[int]]:
    """``["3:0,1", "4:2"]`` -> ``{3: [0, 1], 4: [2]}`` (layer: experts to switch off)."""
    out: dict[int, list[int]] = {}
    for item in items:
        layer, sep, experts = item.partition(":")
        try:
            ids = [int(e) for e in experts.split(",") if e.strip()]
            key = int(layer)
        except ValueError:
            ids, key = [], -1
        if not sep or not ids or key < 0:
            raise UserError(
                f"--mask-experts {item!r}: expected LAYER:EXPERT[,EXPERT...] with 0-based "
                "numbers, e.g. --mask-experts 3:0,1"
            )
        out.setdefault(key, [])
        out[key] += [e for e in ids if e not in out[key]]
    return out
