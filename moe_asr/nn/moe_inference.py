"""Inference dispatch of ``MoEFeedForward`` on CPU (eval, no grad, dropless).

The training's sort-and-split dispatch with as few tensor operations as possible: the experts'
weights copied once into row-major layout (nn.Linear keeps (out, in) weights, which CPU GEMMs
read more slowly for a few rows), no module calls, one matmul pair per used expert written in
place (no concatenation), scattered back. Outputs equal the training dispatch's to float
rounding. The copies cost as much memory again as the experts; ``LEAN_INFERENCE`` in
``moe.py`` turns this path off.

Tried and dropped (RESULTS.md, 2026-12-06 night): all experts in two batched matmuls over
zero-padded per-expert slots (``baddbmm``): fewer operators, but no faster on trained routing
(streaming chunks of speech, decoding batches) and much slower when a chunk uses one expert;
routing the padded frames too (no gather of the real frames, no scatter back, padding zeroed
after): no faster on decoding batches (1.5 % padding). 2026-12-07, AMD VM, 2 threads, 16 frames,
top-1 of 4: every expert as one gate-masked dense FFN (concatenated weights, 3 operators) 195 us
vs 158 us (4x the FLOPs); ``torch._grouped_mm`` on CPU 70 us for the first matmul alone; experts
split over two ``torch.jit.fork`` tasks 189 vs 164 us, and the same with one intra-op thread per
task (each core one half of the experts) 178 vs 164 us (dense 50 us). A 4-row GEMM takes 13.5 us
against 33 us for 16 rows on one thread, and MKL runs GEMMs of <= 4 rows on one thread at any
thread count (an expert FFN of 4 rows: 29 us at 1 or 2 threads; dense 16 rows: 67 us at 1, 44
at 2); weights prepacked for MKL (``mkl._mkl_linear``) or oneDNN (``mkldnn._linear_pointwise``)
make 4-row GEMMs no faster (15 us), only 16-row ones (oneDNN 23.5 us): per-expert GEMM
efficiency, not dispatch, sets the floor. 2026-12-07 (same VM, 1 thread): ``torch.compile``
(inductor, max-autotune with its C++ GEMM template, frozen weights) of one expert pair: 27 us
at 4 rows vs 31-40 us eager (run-to-run noise as large), 79 vs 79-84 us at 16 rows; the
autotuner itself picked oneDNN over its template at 16 rows (28 vs 34 us). Block routing
(``route_block``) is the way around the floor: a chunk then reads top_k experts, not all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim.optimizer import register_optimizer_step_post_hook

if TYPE_CHECKING:
    from moe_asr.nn.moe import MoEFeedForward

# Steps taken by any torch.optim optimizer in this process: the fused AdamW kernel updates
# parameters without bumping their version counters, so the inference weight copies are also
# rebuilt after every optimizer step (e.g. for dev evaluation between training steps).
_optimizer_steps = 0


def _count_optimizer_step(_optimizer, _args, _kwargs) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_optimizer_step)


class ExpertWeights(NamedTuple):
    """One expert's weights for ``dispatch``: w1 (D, F), b1 (F,), w2 (F, D), b2 (D,)."""

    w1: Tensor
    b1: Tensor
    w2: Tensor
    b2: Tensor


def inference_weights(layer: MoEFeedForward, x: Tensor) -> list[ExpertWeights] | None:
    """The cached row-major weights of every routed, then shared expert of ``layer`` when this
    call takes the inference dispatch, else None: inference (eval, no grad) on CPU (the
    row-major layout is a CPU GEMM matter; elsewhere it would only cost memory), dropless,
    plain ``nn.Linear`` experts (a torch.ao dynamic int8 Linear has no parameters to copy: the
    training dispatch runs).

    The copies are rebuilt after any torch.optim step (fused kernels leave version counters
    alone), when an expert parameter changes in place (its version counter: load_state_dict,
    in-place ops; not writes through ``param.data``) or when its data is replaced
    (load_state_dict with assign=True, .to(), keep_experts: the data pointer).
    """
    if (
        x.device.type != "cpu"
        or layer.capacity_factor > 0
        or layer.training
        or torch.is_grad_enabled()
    ):
        return None
    # nn.Module internals read directly: this check runs on every call (streaming chunks)
    ffns = [
        *layer._modules["experts"]._modules.values(),
        *layer._modules["shared"]._modules.values(),
    ]
    params = [p for ff in ffns for m in ff._modules.values() for p in m._parameters.values()]
    if len(params) != 4 * len(ffns):
        return None
    key = [_optimizer_steps, *((p._version, p.data_ptr()) for p in params)]
    cached = layer.__dict__.get("_inference_cache")
    if cached is not None and cached[0] == key:
        return cached[2]
    weights = [
        ExpertWeights(
            ff.w1.weight.t().contiguous(),
            ff.w1.bias.detach(),
            ff.w2.weight.t().contiguous(),
            ff.w2.bias.detach(),
        )
        for ff in ffns
    ]
    # the cache holds the parameters: no new tensor reuses their memory (data pointers)
    layer.__dict__["_inference_cache"] = (key, params, weights)
    return weights


def dispatch(
    x: Tensor, idx: Tensor, weight: Tensor, ws: list[ExpertWeights], num_experts: int
) -> Tensor:
    """x: (N, D), idx/weight: (N, k), ws: ``num_experts`` routed then the shared experts'
    weights -> (N, D) = sum_k weight * expert_idx(x) + sum of the shared experts(x)."""
    k = idx.shape[1]
    flat_e = idx.reshape(-1)  # (N*k,) assignment a = frame a // k, choice a % k
    order = flat_e.argsort(stable=True)  # (A,) assignments grouped by expert
    counts = torch.bincount(flat_e, minlength=num_experts).tolist()
    tokens = order if k == 1 else order.div(k, rounding_mode="floor")
    xs = x.index_select(0, tokens)  # (A, D), contiguous per expert
    ys = torch.empty_like(xs)
    for w, xe, ye in zip(ws, xs.split(counts), ys.split(counts)):
        if xe.shape[0]:  # routed experts only: zip stops at the E chunks
            _expert(xe, w, out=ye)
    if k == 1:  # a permutation of the frames: copy back, then weight in frame order
        y = torch.empty_like(x).index_copy_(0, tokens, ys).mul_(weight)
    else:
        ys.mul_(weight.reshape(-1, 1).index_select(0, order))
        y = torch.zeros_like(x).index_add_(0, tokens, ys)
    return _add_shared(y, x, ws[num_experts:])


def one_block(
    x: Tensor, idx: Tensor, weight: Tensor, ws: list[ExpertWeights], num_experts: int
) -> Tensor:
    """``dispatch`` when every frame of x (N, D) takes the same choices idx / weight (k,)
    (block routing, one block): each chosen expert on all rows, no sorting or scattering."""
    y = None
    for e, w in zip(idx.tolist(), weight.unbind(), strict=True):
        out = _expert(x, ws[e]).mul_(w)
        y = out if y is None else y.add_(out)
    return _add_shared(y, x, ws[num_experts:])


def _expert(x: Tensor, w: ExpertWeights, out: Tensor | None = None) -> Tensor:
    """One expert FFN on the rows of x (N, D), written into ``out`` when given."""
    h = F.silu(torch.addmm(w.b1, x, w.w1), inplace=True)
    return torch.addmm(w.b2, h, w.w2, out=out)  # out=None: a new tensor


def _add_shared(y: Tensor, x: Tensor, shared: list[ExpertWeights]) -> Tensor:
    """y plus every shared expert on all rows of x, in place."""
    for w in shared:
        y += _expert(x, w)
    return y
