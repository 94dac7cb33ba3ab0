"""Multi-head attention on ``F.scaled_dot_product_attention`` (SDPA).

Relative positions enter as an additive float bias: a learned scalar per head and
clipped relative distance (Shaw et al. 2018 / T5 style, without buckets). The bias
for a (T, T) block is one gather from a (H, 2K+1) table; SDPA's fused CPU kernel
takes it together with the key-padding mask as one float ``attn_mask``. This is
much cheaper on CPU than Transformer-XL's content-dependent rel-pos term
(an extra (B, H, T, 2T-1) matmul and a rel-shift per layer) and keeps
``padding invariance``: the bias of (i, j) depends only on ``j - i``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiHeadAttention", "RelPositionBias", "key_padding_bias", "causal_bias"]


def key_padding_bias(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """(B, S) bool (True = real key) -> (B, 1, 1, S) additive bias (0 or -inf)."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    bias = bias.masked_fill(~mask, float("-inf"))
    return bias[:, None, None, :]


def causal_bias(length: int, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """(1, 1, L, L) additive bias that hides future positions."""
    future = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
    return torch.zeros(length, length, dtype=dtype, device=device).masked_fill(
        future, float("-inf")
    )[None, None]


class RelPositionBias(nn.Module):
    """Learned per-head bias for relative distance ``j - i`` clipped to ``[-max_dist, max_dist]``.

    ``forward(T) -> (1, H, T, T)``; zero-initialised (attention starts position-agnostic).
    """

    def __init__(self, num_heads: int, max_dist: int) -> None:
        super().__init__()
        if max_dist < 1:
            raise ValueError(f"max_dist must be >= 1, got {max_dist}")
        self.max_dist = max_dist
        self.table = nn.Parameter(torch.zeros(num_heads, 2 * max_dist + 1))

    def forward(self, length: int) -> Tensor:
        pos = torch.arange(length, device=self.table.device)
        rel = (pos[None, :] - pos[:, None]).clamp(-self.max_dist, self.max_dist) + self.max_dist
        return self.table[:, rel][None]  # (1, H, T, T)


class MultiHeadAttention(nn.Module):
    """Multi-head attention; self-attention when ``memory`` is None.

    ``forward(x (B, T, D), bias (B|1, H|1, T, S) additive float, memory (B, S, D) | None)
    -> (B, T, D)``. Every query row must see at least one key (true for key-padding
    masks of non-empty utterances and for causal masks).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.d_head = d_model // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, bias: Tensor | None, memory: Tensor | None = None) -> Tensor:
        b, t, d = x.shape
        src = x if memory is None else memory
        s = src.shape[1]
        q = self.q_proj(x).view(b, t, self.num_heads, self.d_head).transpose(1, 2)  # (B,H,T,dh)
        kv = self.kv_proj(src).view(b, s, 2, self.num_heads, self.d_head)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, S, dh)
        if bias is not None:
            bias = bias.to(q.dtype)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, dh)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))
