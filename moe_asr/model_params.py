"""Parameter counts of a built ``AsrModel`` per component: total and active per frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from moe_asr.nn.moe import MoEFeedForward

if TYPE_CHECKING:
    from moe_asr.model import AsrModel

__all__ = ["ParamRow", "parameter_summary"]


@dataclass
class ParamRow:
    """Parameter count of one model component; ``active``: used per frame (MoE: top-k experts)."""

    component: str
    total: int
    active: int


def parameter_summary(model: AsrModel) -> list[ParamRow]:
    """Total and active-per-frame parameters per component, then a ``total`` row.

    Active = total minus the (num_experts - top_k) experts a frame does not use in every
    MoE feed-forward (the figure MoE papers compare); embeddings and the decoder count fully.
    """
    rows: dict[str, list[int]] = {}

    def add(name: str, total: int, active: int) -> None:
        r = rows.setdefault(name, [0, 0])
        r[0] += total
        r[1] += active

    moe_params: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, MoEFeedForward):
            part = "decoder" if name.startswith("decoder.") else "encoder"
            router = sum(p.numel() for p in module.router.parameters())
            experts = sum(p.numel() for p in module.experts.parameters())
            shared = sum(p.numel() for p in module.shared.parameters())
            add(f"{part}.moe.router", router, router)
            add(f"{part}.moe.experts", experts, experts * module.top_k // module.num_experts)
            add(f"{part}.moe.shared", shared, shared)
            moe_params.update(id(p) for p in module.parameters())
    for name, p in model.named_parameters():
        if id(p) in moe_params:
            continue
        if name.startswith(("encoder.frontend", "encoder.pos_bias")):
            comp = "encoder.frontend"
        elif name.startswith("encoder."):
            part = name.split(".")[3]  # encoder.layers.<i>.<part>...
            comp = {
                "attn": "encoder.attention",
                "conv": "encoder.conv",
                "ff1": "encoder.ffn",
                "ff2": "encoder.ffn",
            }.get(part, "encoder.norms")
        else:
            comp = name.split(".")[0]  # ctc_head, decoder, guidance
        add(comp, p.numel(), p.numel())
    out = [ParamRow(k, v[0], v[1]) for k, v in rows.items()]
    out.append(ParamRow("total", sum(r.total for r in out), sum(r.active for r in out)))
    return out
