"""Dropout with a cheaper mask on CPU.

``torch.nn.Dropout`` on CPU draws its mask with ``bernoulli_``, one generator call per element:
about a quarter of a CPU training step of the recipes' Conformers (tools/profile_step.py). Here
one 64-bit draw of torch's default generator gives the uniform 16-bit numbers of four elements;
an element is dropped when its number falls in the lowest ``round(p * 65536)`` of the 65,536
values, and kept ones are scaled by the inverse of the exact keep probability, so the output
is unbiased as with torch's dropout (p is rounded to a multiple of 1/65536). The saved mask is
boolean (a quarter of torch's float mask). Deterministic for a seed, and resumable, as the
draws come from the default generator whose state checkpoints keep. Elsewhere than on CPU (CUDA
has a fused kernel), for p outside (0, 1) and unless inside ``cpu_dropout("fast")`` (the
trainer's ``train.cpu_dropout``; its default, torch, keeps every earlier run's masks) it is
``F.dropout``: the same random draws as ``nn.Dropout``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16  # values of a 16-bit random number
KINDS = ("fast", "torch")
_kind = "torch"  # nn.Dropout exactly, unless a block asks for fast masks


@contextlib.contextmanager
def cpu_dropout(kind: str) -> Iterator[None]:
    """Within the block, dropout on CPU draws its masks the ``kind`` way (fast | torch)."""
    global _kind
    if kind not in KINDS:
        raise ValueError(f"cpu dropout {kind!r}: one of {', '.join(KINDS)}")
    before, _kind = _kind, kind
    try:
        yield
    finally:
        _kind = before


class Dropout(nn.Module):
    """Drop-in ``nn.Dropout`` (same ``p``, no parameters or buffers: state dicts unchanged)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(x, p, training)`` with the 16-bit mask on CPU (see the module)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or _kind == "torch" or not x.is_floating_point():
        return F.dropout(x, p, training)
    cut = round(p * _LEVELS)  # dropped values among the 65,536
    if cut == 0:
        return x
    return _MaskedScale.apply(x, _drop_mask(x, cut), _LEVELS / (_LEVELS - cut))


def _drop_mask(x: Tensor, cut: int) -> Tensor:
    """(x.shape) bool, True with probability cut / 65536 per element."""
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    numbers = words.view(torch.int16)[:n].view(x.shape)  # uniform over -32768..32767
    return numbers < cut - _LEVELS // 2


class _MaskedScale(torch.autograd.Function):
    """y = x * scale where the mask is False, 0 where it is True; the gradient likewise."""

    @staticmethod
    def forward(ctx, x: Tensor, drop: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(drop)
        ctx.scale = scale
        return x.masked_fill(drop, 0.0).mul_(scale)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (drop,) = ctx.saved_tensors
        return grad.masked_fill(drop, 0.0).mul_(ctx.scale), None, None
