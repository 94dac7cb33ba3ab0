"""Chunk-by-chunk encoding for the streaming tests, fed as a streaming caller feeds the
encoder: the front end's context frames with the first chunk, then ``subsampling * chunk``
raw frames per call, a shorter last chunk."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Streamed", "encode_in_chunks"]


@dataclass
class Streamed:
    out: Tensor  # (1, T', D): every call's encoder output, concatenated in time
    chunks: list  # each call's EncoderOutput (its router_stats are that chunk's routing)
    cache_shapes: list  # the cache's shapes after each call


def encode_in_chunks(model, feats: Tensor, chunk: int, left: int = -1, routing=None) -> Streamed:
    """Encode (1, T, F) raw features with ``model.encode_chunk``, ``chunk`` encoder frames at
    a time and ``left`` chunks of history (-1: all)."""
    front = model.encoder.frontend
    cache = model.init_stream()
    chunks, shapes, pos = [], [], 0
    while pos < feats.shape[1]:
        step = front.factor * chunk + (front.context_frames if pos == 0 else 0)
        enc, cache = model.encode_chunk(
            feats[:, pos : pos + step],
            cache,
            chunk_frames=chunk,
            left_chunks=left,
            routing=routing,
        )
        pos += step
        chunks.append(enc)
        shapes.append(cache.shapes())
    return Streamed(torch.cat([c.out for c in chunks], 1), chunks, shapes)
