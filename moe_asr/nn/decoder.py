"""Transformer attention decoder (pre-LayerNorm, sinusoidal positions) on SDPA.

``TransformerDecoder(memory (B, S, D), memory_lens (B,), ys_in (B, L)) -> logits (B, L, V)``.
``step`` gives the next-token log-probabilities for beam search by full recomputation
of the prefix (no key/value cache): simple and exact; prefixes in ASR are short.

The feed-forward of each layer is passed in (``make_ffn``): dense, or an
``MoEFeedForward`` whose ``RouterStats`` are appended to ``stats`` when the caller
asks for them (training: the model adds them to the routing losses).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from moe_asr.nn.attention import MultiHeadAttention, causal_bias, key_padding_bias
from moe_asr.nn.dropout import Dropout
from moe_asr.nn.moe import FeedForward, MoEFeedForward, RouterStats

__all__ = ["TransformerDecoder", "DecoderLayer", "sinusoidal_positions"]


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> Tensor:
    """(L, D) sinusoidal position table (Vaswani et al. 2017)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return table


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder memory, feed-forward (pre-norm)."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float,
        attention_dropout: float,
        ffn: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads, attention_dropout)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, attention_dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout) if ffn is None else ffn
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        self_bias: Tensor,
        memory: Tensor,
        mem_bias: Tensor,
        mask: Tensor | None = None,
        stats: list[RouterStats] | None = None,
    ) -> Tensor:
        """x: (B, L, D), memory: (B, S, D), mask: (B, L) real tokens (MoE routing; None =
        all) -> (B, L, D); an MoE feed-forward appends its RouterStats to ``stats``."""
        x = x + self.dropout(self.self_attn(self.norm1(x), self_bias))
        x = x + self.dropout(self.cross_attn(self.norm2(x), mem_bias, memory))
        h = self.norm3(x)
        if isinstance(self.ffn, MoEFeedForward):
            if mask is None:
                mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
            h, s = self.ffn(h, mask)
            if stats is not None:
                stats.append(s)
        else:
            h = self.ffn(h)
        return x + self.dropout(h)


class TransformerDecoder(nn.Module):
    """Token embedding + positions, ``num_layers`` decoder layers, final norm, output layer."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        num_heads: int,
        num_layers: int,
        d_ff: int,
        dropout: float,
        attention_dropout: float = 0.0,
        make_ffn: Callable[[], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model)
        self.dropout = Dropout(dropout)
        self.layers = nn.ModuleList(
            DecoderLayer(
                d_model,
                num_heads,
                d_ff,
                dropout,
                attention_dropout,
                make_ffn() if make_ffn is not None else None,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)

    def forward(
        self,
        memory: Tensor,
        memory_lens: Tensor,
        ys_in: Tensor,
        ys_lens: Tensor | None = None,
        stats: list[RouterStats] | None = None,
    ) -> Tensor:
        """memory: (B, S, D), memory_lens: (B,), ys_in: (B, L) valid token ids -> (B, L, V).

        Positions after a hypothesis' end may hold any valid id: causal attention keeps
        them from changing earlier positions. ``ys_lens`` (B,): real positions, so that an
        MoE feed-forward routes only those (None = all); ``stats``: MoE RouterStats are
        appended here, ``layer`` = decoder layer index.
        """
        length = ys_in.shape[1]
        x = self.embed(ys_in) * math.sqrt(self.d_model)
        x = self.dropout(x + sinusoidal_positions(length, self.d_model, x.device).to(x.dtype))
        self_bias = causal_bias(length, x.device)  # (1, 1, L, L)
        mem_mask = torch.arange(memory.shape[1], device=memory.device)[None] < memory_lens[:, None]
        mem_bias = key_padding_bias(mem_mask)  # (B, 1, 1, S)
        mask = None
        if ys_lens is not None:
            mask = torch.arange(length, device=ys_in.device)[None] < ys_lens[:, None]
        for i, layer in enumerate(self.layers):
            layer_stats: list[RouterStats] = []
            x = layer(x, self_bias, memory, mem_bias, mask, layer_stats)
            for s in layer_stats:
                s.layer = i
            if stats is not None:
                stats.extend(layer_stats)
        return self.out(self.norm(x))

    @torch.no_grad()
    def step(self, memory: Tensor, memory_lens: Tensor, ys: Tensor) -> Tensor:
        """Next-token log-probabilities after each prefix, by full recomputation.

        memory: (N, S, D) (one row per hypothesis), memory_lens: (N,), ys: (N, l) prefixes
        starting with <sos> -> (N, V) log-probabilities for position l.
        """
        logits = self.forward(memory, memory_lens, ys)[:, -1]  # (N, V)
        return logits.float().log_softmax(-1)
