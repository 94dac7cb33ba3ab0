"""Training logs: TensorBoard scalars, a plain ``train.log``, and a progress display
(``moe_asr.progress``: tqdm on a terminal, a line per 10% in a log).

Per step: every loss term, learning rate, gradient norm, and for each MoE feed-forward the
expert load (share of real frames whose top-1 choice is each expert) and the mean
router entropy, named as the report names them: ``layer3`` or, when a layer has two MoE
feed-forwards (macaron), ``layer3a``/``layer3b``. Per epoch: dev loss/CER and the train
loss, at the global step of the epoch's end so that they overlay the step curves.
Only rank 0 writes (``enabled=False`` elsewhere).

Host syncs: a log step reads every loss term, load and entropy from the device in one
transfer (``routing_summary`` and ``log_step`` stack them first); ``LossTotals`` sums loss
terms on the device between reads, so a training step that is not logged reads nothing.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from torch import Tensor

from moe_asr.model_losses import LOSS_FIELDS
from moe_asr.progress import progress_bar

__all__ = ["TrainLogger", "LossTotals", "routing_summary", "LOSS_TERMS"]

LOSS_TERMS = LOSS_FIELDS


def routing_summary(router_stats: list) -> list[dict]:
    """Per MoE feed-forward: {'layer', 'name', 'load': [E] top-1 share over real frames,
    'entropy'}; ``name`` is ``"3"``, or ``"3a"``/``"3b"`` for the first/second macaron half
    of a layer with two (as ``RoutingData.layer_names`` in the report). One host transfer."""
    return _read_routing(router_stats, None)[0]


@torch.no_grad()
def _read_routing(router_stats: list, extra: Tensor | None) -> tuple[list[dict], list[float]]:
    """``routing_summary`` and the values of the 1-d tensor ``extra``, read in one transfer."""
    per_layer: dict[int, int] = {}
    for rs in router_stats:
        per_layer[int(rs.layer)] = per_layer.get(int(rs.layer), 0) + 1
    parts: list[Tensor] = [] if extra is None else [extra.detach().double().reshape(-1)]
    sizes: list[int] = []
    for rs in router_stats:
        mask = rs.mask.reshape(-1)
        top1 = rs.topk_idx[..., 0].reshape(-1)[mask]
        probs = rs.probs.reshape(-1, rs.probs.shape[-1])[mask].float()
        e = probs.shape[-1]
        load = torch.bincount(top1, minlength=e).float() / max(1, top1.numel())  # (E,)
        entropy = -(probs * probs.clamp_min(1e-9).log()).sum(-1).mean()  # ()
        # float32 -> float64 is exact: the values read equal those float() gives
        parts.append(torch.cat([load, entropy.reshape(1)]).double())
        sizes.append(e)
    values = torch.cat(parts).tolist() if parts else []  # the one host sync
    at = 0 if extra is None else extra.numel()
    out = []
    for rs, e in zip(router_stats, sizes):
        half = int(getattr(rs, "half", 0))
        name = f"{rs.layer}{'ab'[half]}" if per_layer[int(rs.layer)] > 1 else f"{rs.layer}"
        out.append(
            {
                "layer": rs.layer,
                "name": name,
                "load": values[at : at + e],
                "entropy": values[at + e],
            }
        )
        at += e + 1
    return out, values[: 0 if extra is None else extra.numel()]


class LossTotals:
    """Sums of loss terms over micro-batches, kept on the device (float64).

    ``add`` queues one addition (no host sync); ``means`` reads the sums once. The sums
    are those of ``float(term)`` taken per micro-batch, in the same order, so the means
    equal what reading every term on the host gave.
    """

    def __init__(self, terms: tuple[str, ...] = ("loss",)) -> None:
        self.terms = tuple(terms)
        self.count = 0
        self._sum: Tensor | None = None

    def add(self, out) -> None:
        x = torch.stack([getattr(out, k).detach().double().reshape(()) for k in self.terms])
        self._sum = x if self._sum is None else self._sum + x
        self.count += 1

    def means(self) -> dict[str, float] | None:
        """Term -> mean over the micro-batches added; None when none were."""
        if self._sum is None or not self.count:
            return None
        return {k: v / self.count for k, v in zip(self.terms, self._sum.tolist())}


class TrainLogger:
    def __init__(self, exp_dir: Path, *, enabled: bool = True):
        self.enabled = enabled
        self._log = logging.getLogger("moe_asr.train")
        self._log.setLevel(logging.INFO)
        self._handlers: list[logging.Handler] = []
        self._tb = None
        if not enabled:
            return
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        for h in (logging.FileHandler(exp_dir / "train.log"), logging.StreamHandler(sys.stderr)):
            h.setFormatter(fmt)
            self._log.addHandler(h)
            self._handlers.append(h)
        self._log.propagate = False
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(str(exp_dir / "tensorboard"))

    def info(self, msg: str) -> None:
        if self.enabled:
            self._log.info(msg)

    def warning(self, msg: str) -> None:
        if self.enabled:
            self._log.warning(msg)

    def progress(self, total: int, *, initial: int = 0, desc: str = ""):
        """A tqdm bar on a terminal; in a log, a line per 10% of the epoch."""
        return progress_bar(
            total, initial=initial, desc=desc, unit="batch", disable=not self.enabled, leave=False
        )

    def log_step(self, step: int, out, lr: float, grad_norm: Tensor | float) -> dict[str, float]:
        """Log one step's loss terms, lr, gradient norm and routing; returns the terms.

        One host transfer for everything read from the device (terms, gradient norm,
        per-layer load and entropy); nothing is read when logging is disabled."""
        if not self.enabled:
            return {}
        stacked = torch.stack(
            [getattr(out, k).detach().double().reshape(()) for k in LOSS_TERMS]
            + [torch.as_tensor(grad_norm).detach().double().reshape(()).to(out.loss.device)]
        )
        layers, (*values, grad_norm) = _read_routing(out.router_stats, stacked)
        terms = dict(zip(LOSS_TERMS, values))
        for k, v in terms.items():
            self._tb.add_scalar(f"train/{k}", v, step)
        self._tb.add_scalar("train/lr", lr, step)
        self._tb.add_scalar("train/grad_norm", grad_norm, step)
        parts = [f"step {step}", *(f"{k} {v:.4f}" for k, v in terms.items() if v), f"lr {lr:.2e}"]
        parts.append(f"grad_norm {grad_norm:.2f}")
        for layer in layers:
            name = layer["name"]
            self._tb.add_scalar(f"moe/layer{name}/entropy", layer["entropy"], step)
            for e, share in enumerate(layer["load"]):
                self._tb.add_scalar(f"moe/layer{name}/load_expert{e}", share, step)
            loads = " ".join(f"{x:.2f}" for x in layer["load"])
            parts.append(f"L{name} load [{loads}] H {layer['entropy']:.2f}")
        self._log.info("; ".join(parts))
        return terms

    def log_epoch(self, record: dict) -> None:
        if not self.enabled:
            return
        for k, v in record.items():
            if k.startswith(("dev_", "train_")) and isinstance(v, float):
                # x = global step (not the epoch number): overlays the train/* curves
                self._tb.add_scalar(f"epoch/{k}", v, record.get("step", record["epoch"]))
        self._log.info(
            "; ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()
            )
        )

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        for h in self._handlers:
            self._log.removeHandler(h)
            h.close()
        self._handlers = []
