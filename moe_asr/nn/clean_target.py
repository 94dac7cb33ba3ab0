"""Clean-feature reconstruction (``model.clean_target``): a denoising auxiliary loss.

Intermediate encoder states predict the log-mel features of the training utterance before the
augmentation added reverberation and noise, so the lower layers learn to carry the speech and
drop the noise (feature-mapping multi-task training for robust ASR, e.g. the denoising
auxiliary tasks of joint enhancement-recognition systems). Training only: decoding never
calls the head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from moe_asr.nn.conformer import RouteFn, lengths_to_mask

__all__ = ["CleanFeatureHead", "keep_layer_input"]


class CleanFeatureHead(nn.Module):
    """(B, T', D) encoder states -> (B, T' * factor, F) feature frames: encoder frame t
    predicts input frames t * factor .. t * factor + factor - 1 (those its subsampling window
    starts at)."""

    def __init__(self, d_model: int, feat_dim: int, factor: int) -> None:
        super().__init__()
        self.feat_dim = feat_dim
        self.factor = factor
        self.proj = nn.Linear(d_model, factor * feat_dim)

    def forward(self, states: Tensor) -> Tensor:
        b, t, _ = states.shape
        return self.proj(states).reshape(b, t * self.factor, self.feat_dim)

    def loss(
        self, states: Tensor, state_lens: Tensor, target: Tensor, target_lens: Tensor
    ) -> Tensor:
        """Mean absolute error per feature value over the frames real on both sides: target
        (B, T, F) with target_lens (B,) real frames, states (B, T', D) with state_lens."""
        pred = self(states).float()
        n = min(pred.shape[1], target.shape[1])
        pred, target = pred[:, :n], target[:, :n].float()
        real = lengths_to_mask(torch.minimum(target_lens, state_lens * self.factor), n)
        err = (pred - target).abs().sum(-1).masked_fill(~real, 0.0)  # (B, n)
        return err.sum() / (real.sum() * self.feat_dim).clamp_min(1)


def keep_layer_input(route_fn: RouteFn | None, layer: int, kept: list[Tensor]) -> RouteFn:
    """``route_fn`` (the encoder's per-layer hook, called with the input of layer i) that also
    appends the input of layer ``layer`` (= the output after ``layer`` layers) to ``kept``."""

    def hook(i: int, states: Tensor, mask: Tensor):
        if i == layer:
            kept.append(states)
        return route_fn(i, states, mask) if route_fn is not None else None

    return hook
