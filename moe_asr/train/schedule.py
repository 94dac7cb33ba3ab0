"""Optimizer and learning-rate schedules (warmup, then Noam / cosine / constant)."""

from __future__ import annotations

import math

import torch

from moe_asr.config import TrainConfig
from moe_asr.errors import UserError

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (fused where the device has the kernel); no weight decay on biases, norms and
    embeddings (1-D parameters), nor on tensors that train one row only (their other rows,
    with zero gradients, then stay exactly as they are)."""
    from moe_asr.train.trainable import rows_only

    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and not rows_only(p) else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kwargs = dict(lr=cfg.lr, betas=(0.9, 0.98), eps=1e-9)
    try:  # one fused kernel over all tensors: the per-tensor loop (CPU's default) costs
        # ~2x on an MoE model, whose optimizer touches every expert (tools/profile_step.py)
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, **kwargs)


def lr_factor(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based); peaks at 1 after warmup.

    noam: linear warmup then ``sqrt(warmup / step)`` decay; cosine: warmup then cosine to 0
    at ``total_steps``; constant: warmup then 1.
    """
    s = step + 1
    warm = max(1, cfg.warmup_steps)
    if s <= warm:
        return s / warm
    if cfg.scheduler == "noam":
        return math.sqrt(warm / s)
    if cfg.scheduler == "cosine":
        span = max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / span)))
    if cfg.scheduler == "constant":
        return 1.0
    raise UserError(
        f"train.scheduler: unknown schedule {cfg.scheduler!r} (noam | cosine | constant)"
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(cfg.warmup_steps + 1, cfg, total_steps)  # validate the name early
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg, total_steps)
    )
