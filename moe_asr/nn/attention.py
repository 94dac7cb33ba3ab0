"""Multi-head attention on ``F.scaled_dot_product_attention`` (SDPA).

Relative positions enter as an additive float bias: a learned scalar per head and
clipped relative distance (Shaw et al. 2018 / T5 style, without buckets). The bias
for a (T, T) block is one gather from a (H, 2K+1) table; SDPA's fused CPU kernel
takes it together with the key-padding mask as one float ``attn_mask``. This is
much cheaper on CPU than Transformer-XL's content-dependent rel-pos term
(an extra (B, H, T, 2T-1) matmul and a rel-shift per layer) and keeps
``padding invariance``: the bias of (i, j) depends only on ``j - i``.

Chunk-by-chunk encoding (``MultiHeadAttention.forward_cached``) prepends the cached keys
and values of earlier frames; ``RelPositionBias(length, key_length)`` then places the
queries at the last ``length`` of ``key_length`` positions, so a query's distance to a
cached key is the same as in the full forward.
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

    ``forward(T) -> (1, H, T, T)``; ``forward(T, S) -> (1, H, T, S)`` for T queries at the
    last T of S key positions (a cache of S - T earlier keys); zero-initialised (attention
    starts position-agnostic).
    """

    def __init__(self, num_heads: int, max_dist: int) -> None:
        super().__init__()
        if max_dist < 1:
            raise ValueError(f"max_dist must be >= 1, got {max_dist}")
        self.max_dist = max_dist
        self.table = nn.Parameter(torch.zeros(num_heads, 2 * max_dist + 1))

    def forward(self, length: int, key_length: int | None = None) -> Tensor:
        key_length = length if key_length is None else key_length
        assert key_length >= length, "queries are the last positions of the keys"
        k_pos = torch.arange(key_length, device=self.table.device)
        q_pos = k_pos[key_length - length :]
        rel = (k_pos[None, :] - q_pos[:, None]).clamp(-self.max_dist, self.max_dist)
        return self.table[:, rel + self.max_dist][None]  # (1, H, T, S)


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
        src = x if memory is None else memory
        k, v = self._kv(src).unbind(1)  # each (B, H, S, dh)
        return self._attend(x, k, v, bias)

    def forward_cached(
        self, x: Tensor, bias: Tensor | None, cache: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Self-attention of a chunk over cached and own keys.

        x: (B, T, D); cache: (B, 2, H, S0, dh) keys/values of earlier frames or None;
        bias: (B|1, H|1, T, S0 + T) -> y (B, T, D), keys/values (B, 2, H, S0 + T, dh).
        """
        kv = self._kv(x)
        if cache is not None and cache.shape[3]:
            kv = torch.cat([cache, kv], 3)
        k, v = kv.unbind(1)
        return self._attend(x, k, v, bias), kv

    def _kv(self, src: Tensor) -> Tensor:
        """(B, S, D) -> (B, 2, H, S, dh) keys and values."""
        b, s, _ = src.shape
        kv = self.kv_proj(src).view(b, s, 2, self.num_heads, self.d_head)
        return kv.permute(0, 2, 3, 1, 4)

    def _attend(self, x: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
        b, t, d = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.d_head).transpose(1, 2)  # (B,H,T,dh)
        if bias is not None:
            bias = bias.to(q.dtype)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, dh)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))
