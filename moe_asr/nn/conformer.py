"""Conformer encoder: Conv2d subsampling front end, Conformer layers with pluggable feed-forwards.

A ``ConformerLayer`` receives its modules (WeNet's composition): two macaron
feed-forward halves (each a ``FeedForward`` or a ``MoEFeedForward``), relative-position
self-attention and a convolution module. Padding never changes a real frame's output:
the attention masks padded keys, the convolution module zeroes padded frames before the
depthwise convolution and normalises with LayerNorm (per frame, no batch statistics).

Streaming (``moe_asr.nn.streaming``): ``forward(..., chunk=c, left_chunks=k)`` adds the
chunk mask; a model built with ``conv_mode`` causal or chunk has a depthwise convolution
that never reads a later chunk, and ``forward_chunk`` encodes one chunk at a time with an
``EncoderCache``. The front end has no time padding, so it streams as is: output frame t
reads input frames ``[t * factor, t * factor + min_input_frames)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moe_asr.nn.attention import MultiHeadAttention, RelPositionBias, key_padding_bias
from moe_asr.nn.dropout import Dropout
from moe_asr.nn.moe import MoEFeedForward, MoERouting, RouterStats
from moe_asr.nn.streaming import EncoderCache, LayerCache, chunk_bias

__all__ = [
    "Conv2dSubsampling",
    "ConvModule",
    "CONV_MODES",
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

    @property
    def context_frames(self) -> int:
        """Input frames an output frame shares with the next one (kept between chunks)."""
        return self.min_input_frames - self.factor

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        h = x.unsqueeze(1)  # (B, 1, T, F)
        for conv in self.convs:
            h = F.relu(conv(h))  # (B, C, T', F')
        b, c, t, f = h.shape
        h = self.out(h.transpose(1, 2).reshape(b, t, c * f))  # (B, T', D)
        return h, self.output_lengths(lens)


CONV_MODES = ("centred", "causal", "chunk")


class ConvModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv, LayerNorm, Swish, pointwise conv.

    ``forward(x (B, T, D), mask (B, T), chunk=0) -> (B, T, D)``; padded frames are zeroed
    before the depthwise convolution, so they cannot reach real frames. ``mode`` of the
    depthwise convolution: ``centred`` reads frames t - r .. t + r (r = kernel // 2);
    ``causal`` reads t - kernel + 1 .. t; ``chunk`` (dynamic chunk convolution) is centred
    but, given ``chunk`` > 0, reads nothing beyond the end of frame t's chunk, so that a
    chunk's output never depends on a later chunk.
    """

    def __init__(
        self, d_model: int, kernel_size: int, dropout: float = 0.0, mode: str = "centred"
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel must be odd, got {kernel_size}")
        if mode not in CONV_MODES:
            raise ValueError(f"convolution mode must be one of {CONV_MODES}, got {mode!r}")
        self.mode = mode
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(
            d_model,
            d_model,
            kernel_size,
            padding=0 if mode == "causal" else kernel_size // 2,
            groups=d_model,
        )
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = Dropout(dropout)

    @property
    def causal(self) -> bool:
        return self.mode == "causal"

    @property
    def cache_frames(self) -> int:
        """Past inputs that chunk-by-chunk convolution keeps (0: cannot stream)."""
        k = self.depthwise.kernel_size[0]
        return {"causal": k - 1, "chunk": k // 2}.get(self.mode, 0)

    def forward(self, x: Tensor, mask: Tensor, chunk: int = 0) -> Tensor:
        h = F.glu(self.pointwise_in(x), dim=-1)  # (B, T, D)
        h = h.masked_fill(~mask[..., None], 0.0).transpose(1, 2)  # (B, D, T)
        if self.causal:
            h = F.pad(h, (self.depthwise.kernel_size[0] - 1, 0))
        elif self.mode == "chunk" and chunk > 0:
            return self._out(self._chunk_conv(h, chunk))
        return self._out(self.depthwise(h))

    def _chunk_conv(self, h: Tensor, chunk: int) -> Tensor:
        """Depthwise convolution of (B, D, T) whose right context ends at each chunk's end.

        Chunks of >= 2r frames (r = kernel // 2) are convolved as windows of their own (the
        r frames before, the chunk, r zeros after: what chunk-by-chunk encoding sees);
        smaller ones, where such windows would multiply the work, take the centred
        convolution minus each future tap's term where it reaches past the chunk's end.
        Both equal chunk-by-chunk encoding to float rounding; in training (fwd + bwd) each
        takes 1.7-2.7x the plain depthwise convolution's time (2 threads, CPU).
        """
        b, d, t = h.shape
        r = self.depthwise.kernel_size[0] // 2
        w, bias = self.depthwise.weight, self.depthwise.bias
        if chunk < 2 * r:
            pos = torch.arange(t, device=h.device) % chunk  # (T,) frame's place in its chunk
            future = F.pad(h, (0, r))
            y = self.depthwise(h)
            for j in range(1, r + 1):  # tap j reads frame t + j: cut where it is a later chunk
                cut = w[:, 0, r + j, None] * (pos + j >= chunk)  # (D, T)
                y = y - cut * future[:, :, j : j + t]
            return y
        n = -(-t // chunk)  # chunks, the last one possibly short (zeros after the end)
        windows = F.pad(h, (r, n * chunk - t)).unfold(2, chunk + r, chunk)  # (B, D, n, c + r)
        windows = F.pad(windows, (0, r)).transpose(1, 2).reshape(b * n, d, chunk + 2 * r)
        y = F.conv1d(windows, w, bias, groups=d)  # (B * n, D, c)
        return y.reshape(b, n, d, chunk).transpose(1, 2).reshape(b, d, n * chunk)[:, :, :t]

    def forward_chunk(self, x: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        """One whole chunk x (B, T, D), cache (B, D, cache_frames) of the last inputs
        -> y (B, T, D), new cache. A chunk-mode convolution reads zeros after the chunk."""
        assert self.cache_frames, "chunk-by-chunk convolution needs a streaming model"
        h = torch.cat([cache, F.glu(self.pointwise_in(x), dim=-1).transpose(1, 2)], 2)
        new_cache = h[:, :, h.shape[2] - cache.shape[2] :]
        if self.causal:
            return self._out(self.depthwise(h)), new_cache
        r = self.depthwise.kernel_size[0] // 2
        w, bias = self.depthwise.weight, self.depthwise.bias
        y = F.conv1d(F.pad(h, (0, r)), w, bias, groups=h.shape[1])
        return self._out(y), new_cache

    def _out(self, h: Tensor) -> Tensor:
        """(B, D, T) depthwise output -> (B, T, D)."""
        h = F.silu(self.norm(h.transpose(1, 2)))
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
        self.dropout = Dropout(dropout)

    @staticmethod
    def _ff(
        ff: nn.Module, x: Tensor, mask: Tensor, routing: MoERouting | None, chunk: int
    ) -> tuple[Tensor, RouterStats | None]:
        if isinstance(ff, MoEFeedForward):
            return ff(x, mask, routing, chunk)
        return ff(x), None

    def _half(
        self,
        half: int,
        x: Tensor,
        mask: Tensor,
        routing: MoERouting | None,
        stats: list,
        chunk: int = 0,
    ) -> Tensor:
        """x + 0.5 * feed-forward half ``half`` (0 = first macaron half); appends its stats.
        ``chunk``: the chunk mask's size (0 = full context), the blocks of block routing."""
        ff, norm = (self.ff1, self.norm_ff1) if half == 0 else (self.ff2, self.norm_ff2)
        h, s = self._ff(ff, norm(x), mask, routing.for_half(half) if routing else None, chunk)
        if s is not None:
            s.half = half
            stats.append(s)
        return x + 0.5 * self.dropout(h)

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        bias: Tensor,
        routing: MoERouting | None = None,
        chunk: int = 0,
    ) -> tuple[Tensor, list[RouterStats]]:
        stats: list[RouterStats] = []
        x = self._half(0, x, mask, routing, stats, chunk)
        x = x + self.dropout(self.attn(self.norm_attn(x), bias))
        x = x + self.dropout(self.conv(self.norm_conv(x), mask, chunk))
        x = self._half(1, x, mask, routing, stats, chunk)
        return self.norm_out(x), stats

    def forward_chunk(
        self,
        x: Tensor,
        bias: Tensor,
        cache: LayerCache,
        history: int,
        routing: MoERouting | None = None,
    ) -> tuple[Tensor, LayerCache, list[RouterStats]]:
        """One chunk x (B, T, D) (no padding), bias (1, H, T, S + T) -> y, new cache, stats.

        The new attention cache keeps the last ``history`` frames (-1 = all).
        """
        stats: list[RouterStats] = []
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        chunk = x.shape[1]  # one call is one chunk (and one routing block)
        x = self._half(0, x, mask, routing, stats, chunk)
        a, kv = self.attn.forward_cached(self.norm_attn(x), bias, cache.attn)
        x = x + self.dropout(a)
        c, conv_cache = self.conv.forward_chunk(self.norm_conv(x), cache.conv)
        x = x + self.dropout(c)
        x = self._half(1, x, mask, routing, stats, chunk)
        if history >= 0:
            kv = kv[:, :, :, max(0, kv.shape[3] - history) :]
        return self.norm_out(x), LayerCache(attn=kv, conv=conv_cache), stats


class ConformerEncoder(nn.Module):
    """Subsampling front end + Conformer layers.

    ``make_ffn(layer_index) -> nn.Module`` builds each feed-forward half (dense or MoE).
    ``forward(x (B, T, F), lens (B,), route_fn, chunk=0, left_chunks=-1) -> (out (B, T', D),
    lens' (B,), [RouterStats] in layer order)``. ``route_fn(i, h, mask)`` is called before
    layer i with that layer's input; it returns the routing inputs of its MoE feed-forwards.
    ``chunk`` > 0 limits attention to the chunk mask (``moe_asr.nn.streaming``).
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
        conv_mode: str = "centred",
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.d_model = d_model
        self.input_dim = input_dim
        self.frontend = Conv2dSubsampling(input_dim, d_model, subsampling_channels, subsampling)
        self.frontend_dropout = Dropout(dropout)
        self.pos_bias = RelPositionBias(num_heads, max_rel_pos)
        self.layers = nn.ModuleList(
            ConformerLayer(
                d_model,
                make_ffn(i),
                MultiHeadAttention(d_model, num_heads, attention_dropout),
                ConvModule(d_model, conv_kernel, dropout, conv_mode),
                make_ffn(i),
                dropout,
            )
            for i in range(num_layers)
        )

    def forward(
        self,
        x: Tensor,
        lens: Tensor,
        route_fn: RouteFn | None = None,
        *,
        chunk: int = 0,
        left_chunks: int = -1,
    ) -> tuple[Tensor, Tensor, list[RouterStats]]:
        x, lens = self.frontend(x, lens)  # (B, T', D)
        x = self.frontend_dropout(x)
        mask = lengths_to_mask(lens, x.shape[1])  # (B, T')
        x = x.masked_fill(~mask[..., None], 0.0)
        bias = self.pos_bias(x.shape[1]) + key_padding_bias(mask)  # (B, H, T', T')
        if chunk > 0:
            bias = bias + chunk_bias(mask, chunk, left_chunks)
        stats: list[RouterStats] = []
        for i, layer in enumerate(self.layers):
            routing = route_fn(i, x, mask) if route_fn is not None else None
            x = _add_layer_cond(x, mask, routing)
            x, layer_stats = layer(x, mask, bias, routing, chunk)
            for s in layer_stats:
                s.layer = i
            stats.extend(layer_stats)
        return x, lens, stats

    def init_cache(self, batch: int = 1) -> EncoderCache:
        """Empty state for ``forward_chunk`` (needs a causal or chunk-mode convolution)."""
        if not all(layer.conv.cache_frames for layer in self.layers):
            raise ValueError(
                "chunk-by-chunk encoding needs a causal or chunk-mode convolution (streaming)"
            )
        table = self.pos_bias.table
        heads, d_head = self.num_heads, self.d_model // self.num_heads
        layers = [
            LayerCache(
                attn=table.new_zeros(batch, 2, heads, 0, d_head),
                conv=table.new_zeros(batch, self.d_model, layer.conv.cache_frames),
            )
            for layer in self.layers
        ]
        return EncoderCache(frontend=table.new_zeros(batch, 0, self.input_dim), layers=layers)

    def forward_chunk(
        self,
        x: Tensor,
        cache: EncoderCache,
        route_fn: RouteFn | None = None,
        *,
        history: int = -1,
    ) -> tuple[Tensor, EncoderCache, list[RouterStats]]:
        """Encode new input frames x (B, t, F) (no padding) after those of ``cache``.

        Every output frame the buffered input completes is produced, as one chunk (the
        caller feeds ``factor * chunk`` frames per chunk, ``context_frames`` more for the
        first) -> out (B, T', D) (T' may be 0), new cache, stats. Attention sees the chunk
        and the last ``history`` cached frames (-1 = all).
        """
        front = self.frontend
        buf = torch.cat([cache.frontend, x.to(cache.frontend.dtype)], 1)  # (B, n, F)
        b, n = buf.shape[:2]
        t_out = int(front.output_lengths(torch.tensor([n]))[0])
        if t_out == 0:
            return (
                buf.new_zeros(b, 0, self.d_model),
                EncoderCache(buf, cache.layers, cache.offset),
                [],
            )
        used = (t_out - 1) * front.factor + front.min_input_frames
        h, _ = front(buf[:, :used], torch.full((b,), used, dtype=torch.long))
        h = self.frontend_dropout(h)  # (B, T', D)
        past = cache.layers[0].attn.shape[3]
        bias = self.pos_bias(t_out, past + t_out)  # (1, H, T', S + T')
        mask = torch.ones(b, t_out, dtype=torch.bool, device=h.device)
        stats: list[RouterStats] = []
        layers: list[LayerCache] = []
        for i, layer in enumerate(self.layers):
            routing = route_fn(i, h, mask) if route_fn is not None else None
            h = _add_layer_cond(h, mask, routing)
            h, new, layer_stats = layer.forward_chunk(h, bias, cache.layers[i], history, routing)
            layers.append(new)
            for s in layer_stats:
                s.layer = i
            stats.extend(layer_stats)
        rest = buf[:, t_out * front.factor :]  # the next output frame's first input frames
        return h, EncoderCache(rest, layers, cache.offset + t_out), stats


def _add_layer_cond(x: Tensor, mask: Tensor, routing: MoERouting | None) -> Tensor:
    """x (B, T, D) plus the routing's per-utterance ``layer_cond`` (B, D) on real frames."""
    if routing is None or routing.layer_cond is None:
        return x
    cond = routing.layer_cond.to(x.dtype)[:, None, :]
    return x + cond * mask[..., None].to(x.dtype)
