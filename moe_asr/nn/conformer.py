"""Conformer encoder: Conv2d subsampling front end, Conformer layers with pluggable feed-forwards.

A ``ConformerLayer`` receives its modules (WeNet's composition): two macaron
feed-forward halves (each a ``FeedForward`` or a ``MoEFeedForward``), relative-position
self-attention and a convolution module. Padding never changes a real frame's output:
the attention masks padded keys, the convolution module zeroes padded frames before the
depthwise convolution and normalises with LayerNorm (per frame, no batch statistics).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moe_asr.nn.attention import MultiHeadAttention, RelPositionBias, key_padding_bias
from moe_asr.nn.moe import MoEFeedForward, MoERouting, RouterStats

__all__ = [
    "Conv2dSubsampling",
    "ConvModule",
    "ConformerLayer",
    "ConformerEncoder",
    "lengths_to_mask",
    "RouteFn",
]

# called before each layer: (layer index, input states (B, T, D), mask (B, T)) -> routing
RouteFn = Callable[[int, Tensor, Tensor], MoERouting | None]


def lengths_to_mask(lens: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths -> (B, T) bool, True = real frame."""
    max_len = int(lens.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


# factor -> ((kernel, stride) of each conv in time and frequency)
_SUBSAMPLING = {4: ((3, 2), (3, 2)), 6: ((3, 2), (5, 3)), 8: ((3, 2), (3, 2), (3, 2))}


class Conv2dSubsampling(nn.Module):
    """Conv2d+ReLU stack without time padding (WeNet), then a linear projection to d_model.

    ``forward(x (B, T, F), lens (B,)) -> (B, T', D), lens'`` with T' = T reduced by
    ``factor`` (4: ((T-1)//2-1)//2). A real output frame only reads real input frames.
    """

    def __init__(self, input_dim: int, d_model: int, channels: int, factor: int) -> None:
        super().__init__()
        if factor not in _SUBSAMPLING:
            raise ValueError(f"subsampling must be one of {sorted(_SUBSAMPLING)}, got {factor}")
        self.factor = factor
        self.convs = nn.ModuleList()
        freq, in_ch = input_dim, 1
        for kernel, stride in _SUBSAMPLING[factor]:
            self.convs.append(nn.Conv2d(in_ch, channels, kernel, stride))
            freq = (freq - kernel) // stride + 1
            in_ch = channels
        if freq < 1:
            raise ValueError(f"input_dim={input_dim} is too small for subsampling {factor}")
        self.out = nn.Linear(channels * freq, d_model)

    def output_lengths(self, lens: Tensor) -> Tensor:
        for kernel, stride in _SUBSAMPLING[self.factor]:
            lens = torch.div(lens - kernel, stride, rounding_mode="floor") + 1
        return lens.clamp_min(0)

    @property
    def min_input_frames(self) -> int:
        """Shortest input that yields one output frame."""
        need = 1
        for kernel, stride in reversed(_SUBSAMPLING[self.factor]):
            need = (need - 1) * stride + kernel
        return need

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        h = x.unsqueeze(1)  # (B, 1, T, F)
        for conv in self.convs:
            h = F.relu(conv(h))  # (B, C, T', F')
        b, c, t, f = h.shape
        h = self.out(h.transpose(1, 2).reshape(b, t, c * f))  # (B, T', D)
        return h, self.output_lengths(lens)


class ConvModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv, LayerNorm, Swish, pointwise conv.

    ``forward(x (B, T, D), mask (B, T)) -> (B, T, D)``; padded frames are zeroed before
    the depthwise convolution, so they cannot reach real frames.
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel must be odd, got {kernel_size}")
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(
            d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model
        )
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = F.glu(self.pointwise_in(x), dim=-1)  # (B, T, D)
        h = h.masked_fill(~mask[..., None], 0.0)
        h = self.depthwise(h.transpose(1, 2)).transpose(1, 2)  # (B, T, D)
        h = F.silu(self.norm(h))
        return self.dropout(self.pointwise_out(h))


class ConformerLayer(nn.Module):
    """Macaron FFN/2, rel-pos self-attention, convolution, FFN/2, final LayerNorm (pre-norm).

    ``forward(x (B, T, D), mask (B, T), bias (B, H, T, T), routing) -> (y, [RouterStats])``.
    """

    def __init__(
        self,
        d_model: int,
        ff1: nn.Module,
        attn: MultiHeadAttention,
        conv: ConvModule,
        ff2: nn.Module,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.ff1, self.attn, self.conv, self.ff2 = ff1, attn, conv, ff2
        self.norm_ff1 = nn.LayerNorm(d_model)
        self.norm_attn = nn.LayerNorm(d_model)
        self.norm_conv = nn.LayerNorm(d_model)
        self.norm_ff2 = nn.LayerNorm(d_model)
        self.norm_out = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def _ff(
        ff: nn.Module, x: Tensor, mask: Tensor, routing: MoERouting | None
    ) -> tuple[Tensor, RouterStats | None]:
        if isinstance(ff, MoEFeedForward):
            return ff(x, mask, routing)
        return ff(x), None

    def forward(
        self, x: Tensor, mask: Tensor, bias: Tensor, routing: MoERouting | None = None
    ) -> tuple[Tensor, list[RouterStats]]:
        stats: list[RouterStats] = []
        h, s = self._ff(self.ff1, self.norm_ff1(x), mask, routing)
        x = x + 0.5 * self.dropout(h)
        if s is not None:
            s.half = 0
            stats.append(s)
        x = x + self.dropout(self.attn(self.norm_attn(x), bias))
        x = x + self.dropout(self.conv(self.norm_conv(x), mask))
        h, s = self._ff(self.ff2, self.norm_ff2(x), mask, routing)
        x = x + 0.5 * self.dropout(h)
        if s is not None:
            s.half = 1
            stats.append(s)
        return self.norm_out(x), stats


class ConformerEncoder(nn.Module):
    """Subsampling front end + Conformer layers.

    ``make_ffn(layer_index) -> nn.Module`` builds each feed-forward half (dense or MoE).
    ``forward(x (B, T, F), lens (B,), route_fn) -> (out (B, T', D), lens' (B,),
    [RouterStats] in layer order)``. ``route_fn(i, h, mask)`` is called before layer i
    with that layer's input; it returns the routing inputs of its MoE feed-forwards.
    """

    def __init__(
        self,
        *,
        input_dim: int,
        d_model: int,
        num_heads: int,
        num_layers: int,
        conv_kernel: int,
        dropout: float,
        subsampling: int,
        subsampling_channels: int,
        max_rel_pos: int,
        make_ffn: Callable[[int], nn.Module],
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.frontend = Conv2dSubsampling(input_dim, d_model, subsampling_channels, subsampling)
        self.frontend_dropout = nn.Dropout(dropout)
        self.pos_bias = RelPositionBias(num_heads, max_rel_pos)
        self.layers = nn.ModuleList(
            ConformerLayer(
                d_model,
                make_ffn(i),
                MultiHeadAttention(d_model, num_heads, attention_dropout),
                ConvModule(d_model, conv_kernel, dropout),
                make_ffn(i),
                dropout,
            )
            for i in range(num_layers)
        )

    def forward(
        self, x: Tensor, lens: Tensor, route_fn: RouteFn | None = None
    ) -> tuple[Tensor, Tensor, list[RouterStats]]:
        x, lens = self.frontend(x, lens)  # (B, T', D)
        x = self.frontend_dropout(x)
        mask = lengths_to_mask(lens, x.shape[1])  # (B, T')
        x = x.masked_fill(~mask[..., None], 0.0)
        bias = self.pos_bias(x.shape[1]) + key_padding_bias(mask)  # (B, H, T', T')
        stats: list[RouterStats] = []
        for i, layer in enumerate(self.layers):
            routing = route_fn(i, x, mask) if route_fn is not None else None
            x, layer_stats = layer(x, mask, bias, routing)
            for s in layer_stats:
                s.layer = i
            stats.extend(layer_stats)
        return x, lens, stats
