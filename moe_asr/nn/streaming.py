"""Chunk masks, dynamic chunk sizes and the per-layer caches of chunk-by-chunk encoding.

U2/U2++ streaming (Zhang et al. 2020, Wu et al. 2021): encoder frames are cut into chunks
of ``chunk`` frames; a frame attends to every frame of its own chunk and of the
``left_chunks`` chunks before it (-1 = all earlier chunks), never to a later chunk. The
depthwise convolution of a streaming model never reads a later chunk either (causal, or
centred with the right context cut at the chunk's end: ``model.streaming.conv``), so
chunk-by-chunk encoding with caches (the keys/values of the visible history, the
convolution's last inputs, the front end's unconsumed input frames) equals the full forward
under the same chunk mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from moe_asr.config import ConfigError, ModelConfig, StreamingConfig

__all__ = [
    "chunk_mask",
    "chunk_bias",
    "draw_chunk",
    "history_frames",
    "check_streaming_config",
    "conv_mode",
    "LayerCache",
    "EncoderCache",
]


def chunk_mask(length: int, chunk: int, left_chunks: int, device: torch.device) -> Tensor:
    """(T, T) bool, True where query frame i may attend key frame j (same or visible chunk)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    idx = torch.arange(length, device=device) // chunk  # chunk of each frame
    diff = idx[:, None] - idx[None, :]  # query chunk - key chunk
    visible = diff >= 0
    if left_chunks >= 0:
        visible &= diff <= left_chunks
    return visible


def chunk_bias(mask: Tensor, chunk: int, left_chunks: int) -> Tensor:
    """(B, T) bool real frames -> (B, 1, T, T) additive bias (0 or -inf) of the chunk mask.

    Padded query rows are left unrestricted so that no row is fully masked (SDPA would give
    NaN there, and NaN times a zero attention weight still reaches real frames).
    """
    t = mask.shape[1]
    allowed = chunk_mask(t, chunk, left_chunks, mask.device)[None] | ~mask[:, :, None]
    bias = torch.zeros(allowed.shape, dtype=torch.float32, device=mask.device)
    return bias.masked_fill(~allowed, float("-inf"))[:, None]


def draw_chunk(cfg: StreamingConfig, num_frames: int, step: int | None = None) -> tuple[int, int]:
    """(chunk size, left chunks) for one training batch of ``num_frames`` encoder frames at
    update ``step``, from the global torch RNG; chunk 0 = full context.

    The draw uses the CPU generator, which the trainer checkpoints, so a resumed run draws
    the same sizes as an unbroken one. Before ``cfg.full_context_steps`` nothing is drawn
    (full context), so a run with 0 draws exactly as before the option existed. With
    ``cfg.dual_mode`` the draw is always a chunk (the full-context pass is always there).
    """
    if step is not None and step < cfg.full_context_steps:
        return 0, -1
    if not cfg.dual_mode and float(torch.rand(())) < cfg.full_context_prob:
        return 0, -1
    chunk = int(torch.randint(cfg.min_chunk, cfg.max_chunk + 1, ()))
    left = cfg.left_chunks
    if cfg.dynamic_left_chunks:
        left = int(torch.randint(0, max(0, num_frames - 1) // chunk + 1, ()))
    return chunk, left


def check_streaming_config(cfg: ModelConfig) -> None:
    """Raise ConfigError for an invalid ``model.streaming`` (part of the model's checks)."""
    st = cfg.streaming
    if not st.enabled:
        return
    if not 1 <= st.min_chunk <= st.max_chunk:
        raise ConfigError(
            f"model.streaming: need 1 <= min_chunk ({st.min_chunk}) <= max_chunk ({st.max_chunk})"
        )
    if not 0.0 <= st.full_context_prob <= 1.0:
        raise ConfigError(
            f"model.streaming.full_context_prob={st.full_context_prob} must be in [0, 1]"
        )
    if st.full_context_steps < 0:
        raise ConfigError(
            f"model.streaming.full_context_steps={st.full_context_steps} must be >= 0"
        )
    if st.left_chunks < -1:
        raise ConfigError(f"model.streaming.left_chunks={st.left_chunks}: use -1 (all) or >= 0")
    if cfg.ffn == "moe" and cfg.moe.guidance.labels and cfg.moe.guidance.utterance_estimate:
        raise ConfigError(
            "model.moe.guidance.utterance_estimate pools the whole utterance and cannot "
            "stream; turn it off or set model.streaming.enabled=false"
        )


def conv_mode(cfg: StreamingConfig) -> str:
    """The depthwise convolution a model with this streaming config is built with
    (``moe_asr.nn.conformer.ConvModule``): centred without streaming, else ``cfg.conv``."""
    return cfg.conv if cfg.enabled else "centred"


def history_frames(chunk: int, left_chunks: int) -> int:
    """Encoder frames of history the attention cache keeps (-1 = all)."""
    return -1 if left_chunks < 0 else chunk * left_chunks


@dataclass
class LayerCache:
    """One Conformer layer's state between chunks.

    attn: (B, 2, H, S, dh) keys and values of the last S visible frames (S = 0 at start);
    conv: (B, D, kernel - 1 causal, kernel // 2 chunk mode) the depthwise convolution's last
    inputs (zeros at start).
    """

    attn: Tensor
    conv: Tensor


@dataclass
class EncoderCache:
    """Encoder state between chunks: front-end input frames not yet consumed (B, n, F),
    per-layer caches, and ``offset``: encoder frames produced so far."""

    frontend: Tensor
    layers: list[LayerCache]
    offset: int = 0

    def shapes(self) -> list[tuple[int, ...]]:
        """Shapes of every cache tensor (front end first); constant once the history is full."""
        out = [tuple(self.frontend.shape)]
        for layer in self.layers:
            out += [tuple(layer.attn.shape), tuple(layer.conv.shape)]
        return out
