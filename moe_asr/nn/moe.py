"""Mixture-of-Experts feed-forward: router, experts, index-based dispatch, auxiliary losses.

``MoEFeedForward.forward(x (B, T, D), mask (B, T), routing) -> (y (B, T, D), RouterStats)``.
The module keeps no loss state: every auxiliary loss is a function of ``RouterStats``
and the padding mask, computed by the model (``load_balance_loss``, ``router_z_loss``,
``importance_cv2``, ``output_similarity``).

Dispatch: only real (non-padded) frames are routed. The (frame, choice) assignments
are sorted by expert (stable ``argsort``), each expert runs once on its contiguous
slice (the same ``FeedForward`` as the dense layer), and the weighted outputs are
summed back with ``index_add_``. No one-hot (tokens x experts x capacity) tensor and no
Python loop over tokens; the only loop is over experts. Inference (eval, no grad, dropless)
takes the same dispatch with fewer operations (``_dispatch_inference``: cached row-major
weight copies, no module calls, outputs written in place) on CPU: from a streaming chunk of a
few frames, where the per-operator cost dominates, to a batch of utterances.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moe_asr.nn import moe_inference
from moe_asr.nn.dropout import Dropout

__all__ = [
    "FeedForward",
    "RouterStats",
    "MoERouting",
    "MoEFeedForward",
    "expert_groups",
    "block_mean",
    "load_balance_loss",
    "router_z_loss",
    "importance_cv2",
    "output_similarity",
]

_DIVERSITY_PROBE_FRAMES = 64
# Inference takes the lean sort-and-split dispatch (moe_inference);
# False: the training dispatch without autograd (benchmarks and tests compare the two).
LEAN_INFERENCE = True


class FeedForward(nn.Module):
    """Linear-Swish-Dropout-Linear (torchaudio / WeNet Conformer); dense FFN and every expert.

    ``forward(x (..., D)) -> (..., D)``.
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff)
        self.dropout = Dropout(dropout)
        self.w2 = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(self.dropout(F.silu(self.w1(x))))


@dataclass
class RouterStats:
    """What one MoE feed-forward decided for a batch; padded frames hold zeros.

    probs: (B, T, E) softmax of the routing logits (after gate noise, expert masks and
        hard label groups); logits: (B, T, E) clean router logits (before noise/masks);
    topk_idx: (B, T, k) long; topk_weight: (B, T, k) combine weights;
    mask: (B, T) bool, True = real frame; layer: encoder layer index (0-based);
    half: 0 = first macaron feed-forward of the layer, 1 = second;
    output_similarity: scalar (mean squared cosine similarity of expert outputs on a
        probe of frames) when the diversity penalty is on in training, else None.
    """

    probs: Tensor
    logits: Tensor
    topk_idx: Tensor
    topk_weight: Tensor
    mask: Tensor
    layer: int = 0
    half: int = 0
    output_similarity: Tensor | None = None


@dataclass
class MoERouting:
    """Per-call routing inputs for one MoE layer.

    cond: (B, D) added to every frame's router input (label embedding), or None;
    layer_cond: (B, D) added by the encoder to every real frame of the layer's input before
        the layer (the label embedding with guidance ``condition: layer``), or None;
    router_delta: (B, E, D) added to the router weight per utterance (a label value's own
        router correction, ``guidance.value_routers``), or None; ``LabelGuidance`` builds
        it per macaron half as (B, 2, E, D) and each half takes its own (``for_half``);
    allowed: (B, E) or (B, T, E) bool, experts each utterance (or frame) may use (label
        groups), or None;
    free: the last ``free`` of the top-k choices ignore ``allowed`` and take the best
        remaining experts of all (one free choice beside the group's); needs ``allowed``;
    disabled: experts switched off for everyone (inference expert mask).
    """

    cond: Tensor | None = None
    layer_cond: Tensor | None = None
    router_delta: Tensor | None = None
    allowed: Tensor | None = None
    free: int = 0
    disabled: tuple[int, ...] = ()

    def for_half(self, half: int) -> MoERouting:
        """The routing of macaron half ``half`` (0 / 1): its slice of a per-half delta."""
        if self.router_delta is None or self.router_delta.dim() == 3:
            return self
        return dataclasses.replace(self, router_delta=self.router_delta[:, half])


def expert_groups(num_experts: int, num_groups: int) -> list[list[int]]:
    """Partition experts into ``num_groups`` contiguous blocks (sizes differ by at most one)."""
    if num_groups < 1 or num_experts < num_groups:
        raise ValueError(f"cannot split {num_experts} experts into {num_groups} groups")
    bounds = [g * num_experts // num_groups for g in range(num_groups + 1)]
    return [list(range(bounds[g], bounds[g + 1])) for g in range(num_groups)]


class MoEFeedForward(nn.Module):
    """Top-k routed feed-forward experts plus optional shared experts.

    Routing: softmax over router logits, top-k; for k > 1 the k weights are renormalised
    to sum to 1 (for k = 1 the weight stays the router probability, as in Switch:
    renormalising would make it 1 and cut the router off from the task gradient).
    ``capacity_factor`` > 0 caps each expert at ``ceil(cf * N * k / E)`` assignments of
    the N real frames; first choices take precedence over second choices, then frame
    order; an overflowing assignment contributes nothing (the frame passes through the
    residual). ``capacity_factor`` = 0 is dropless.

    ``fixed_group`` > 0 (a group-routed layer cut to one group by ``moe-asr extract``): the
    first ``top_k - fixed_free`` choices are made among experts ``0..fixed_group-1``, the last
    ``fixed_free`` among the remaining experts, as ``MoERouting(allowed, free)`` routes.

    ``route_block`` > 0 (block routing): the router logits are averaged over the real frames
    of each block, and every frame of a block takes the block's choices and weights. Blocks
    are the streaming chunks when the caller passes ``chunk`` (the chunk mask's size; one
    call of chunk-by-chunk encoding is one block), else ``route_block`` frames from each
    utterance's start. At a streaming chunk a frame-routed layer reads nearly every expert's
    weights (per-frame choices spread over all of them), a block-routed one only top_k's.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        num_experts: int,
        top_k: int,
        *,
        dropout: float = 0.0,
        capacity_factor: float = 0.0,
        noisy_gate_std: float = 0.0,
        num_shared_experts: int = 0,
        probe_diversity: bool = False,
        fixed_group: int = 0,
        fixed_free: int = 0,
        route_block: int = 0,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k={top_k} must be between 1 and num_experts={num_experts}")
        _check_fixed_group(fixed_group, fixed_free, num_experts, top_k)
        self.fixed_group = fixed_group
        self.fixed_free = fixed_free
        self.num_experts = num_experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.noisy_gate_std = noisy_gate_std
        self.probe_diversity = probe_diversity
        self.route_block = route_block
        self.router = nn.Linear(d_model, num_experts, bias=False)
        self.experts = nn.ModuleList(
            FeedForward(d_model, d_ff, dropout) for _ in range(num_experts)
        )
        self.shared = nn.ModuleList(
            FeedForward(d_model, d_ff, dropout) for _ in range(num_shared_experts)
        )

    def forward(
        self, x: Tensor, mask: Tensor, routing: MoERouting | None = None, chunk: int = 0
    ) -> tuple[Tensor, RouterStats]:
        """x: (B, T, D), mask: (B, T) True = real -> y (B, T, D) (zeros at padding), stats.
        ``chunk``: the chunk mask's chunk size (0 = full context): the routing blocks of a
        block-routed layer."""
        b, t, d = x.shape
        flat = x.reshape(b * t, d)
        real = mask.reshape(-1).nonzero().squeeze(1)  # (N,)
        all_real = real.numel() == b * t
        xr = flat if all_real else flat.index_select(0, real)  # (N, D)

        router_in = xr
        if routing is not None and routing.cond is not None:
            utt = real // t  # (N,) utterance of each real frame
            router_in = xr + routing.cond.to(xr.dtype).index_select(0, utt)
        logits = self.router(router_in).float()  # (N, E)
        if routing is not None and routing.router_delta is not None:
            logits = logits + self._delta_logits(x, routing, real, all_real)
        one_block = False  # each utterance one routing block (a streaming chunk)
        if self.route_block > 0:
            size = chunk or self.route_block
            one_block = all_real and t <= size
            if one_block:  # the general mean's scatter, in one reduction
                logits = logits.view(b, t, -1).mean(1, keepdim=True).expand(b, t, -1)
                logits = logits.reshape(b * t, -1)
            else:
                logits = block_mean(logits, real, b, t, size)
        sel = logits
        if self.training and self.noisy_gate_std > 0:
            sel = sel + torch.randn_like(sel) * self.noisy_gate_std
        if routing is not None and routing.disabled:
            off = torch.zeros(self.num_experts, dtype=torch.bool, device=x.device)
            off[list(routing.disabled)] = True
            sel = sel.masked_fill(off, float("-inf"))
        allowed, free = None, 0
        if routing is not None and routing.allowed is not None:
            allowed, free = self._allowed_rows(routing, real, t), routing.free  # (N, E)
        elif self.fixed_group:
            allowed = torch.arange(self.num_experts, device=x.device) < self.fixed_group  # (E,)
            free = self.fixed_free
        if free:
            probs, topw, topi = self._group_plus_free(sel, allowed, free)
        else:
            if allowed is not None:
                sel = sel.masked_fill(~allowed, float("-inf"))
            probs = sel.softmax(-1)  # (N, E)
            topw, topi = probs.topk(self.top_k, dim=-1)  # (N, k)
        if self.top_k > 1:
            topw = topw / topw.sum(-1, keepdim=True).clamp_min(1e-9)

        lean = self._inference_weights(xr)
        per_frame_groups = routing is not None and (
            routing.allowed is not None and routing.allowed.dim() == 3
        )  # frames of one block may then take different experts
        if lean is not None and one_block and b == 1 and not per_frame_groups:  # no dispatch
            y = moe_inference.one_block(xr, topi[0], topw[0].to(xr.dtype), lean, self.num_experts)
        elif lean is not None:  # inference: routed + shared experts
            y = self._dispatch_inference(xr, topi, topw.to(xr.dtype), lean)
        else:
            y = self._dispatch(xr, topi, topw.to(xr.dtype))
            for expert in self.shared:
                y = y + expert(xr)
        similarity = None
        if self.training and self.probe_diversity and self.num_experts > 1 and xr.shape[0]:
            pick = torch.randperm(xr.shape[0], device=x.device)[:_DIVERSITY_PROBE_FRAMES]
            probe = xr.index_select(0, pick)
            similarity = output_similarity(torch.stack([e(probe) for e in self.experts]))

        if all_real:
            out = y.view(b, t, d)
            stats = RouterStats(
                probs=probs.view(b, t, -1),
                logits=logits.view(b, t, -1),
                topk_idx=topi.view(b, t, -1),
                topk_weight=topw.view(b, t, -1),
                mask=mask,
                output_similarity=similarity,
            )
        else:
            out = _unflatten(y, real, b, t)
            stats = RouterStats(
                probs=_unflatten(probs, real, b, t),
                logits=_unflatten(logits, real, b, t),
                topk_idx=_unflatten(topi, real, b, t),
                topk_weight=_unflatten(topw, real, b, t),
                mask=mask,
                output_similarity=similarity,
            )
        return out, stats

    def train(self, mode: bool = True) -> MoEFeedForward:
        """As nn.Module.train; entering training mode frees the inference weight copies
        (a training run would otherwise hold them, as much memory as the experts, between its
        dev evaluations, which rebuild them anyway)."""
        if mode:
            self.__dict__.pop("_inference_cache", None)
        return super().train(mode)

    @torch.no_grad()
    def keep_experts(self, keep: list[int], *, fixed_group: int = 0, fixed_free: int = 0) -> None:
        """Drop every routed expert not in ``keep`` and its router row, in place.

        The kept experts become 0..len(keep)-1 in the order given; shared experts stay.
        On a frame whose top-k experts are all kept the output is unchanged for k >= 2
        (the renormalised weights keep their ratios, dropless routing); for k = 1 the
        weight, a probability of the softmax now over fewer experts, becomes p_e divided by
        the probability mass of the kept experts at that frame.

        ``fixed_group``/``fixed_free`` (see the class): the first ``fixed_group`` of ``keep``
        become a fixed group. Keeping a group's experts first this way, the layer routes as
        the full one did with ``MoERouting(allowed=that group, free=fixed_free)`` on every
        frame whose free choices are kept (k >= 2: exactly); without free choices, keeping
        only the group (``fixed_group`` 0) routes as the full one restricted to it, any k.
        """
        if len(set(keep)) != len(keep) or not all(0 <= e < self.num_experts for e in keep):
            raise ValueError(f"keep={keep}: distinct experts in 0..{self.num_experts - 1}")
        if len(keep) < self.top_k:
            raise ValueError(f"keep={keep}: fewer than top_k={self.top_k} experts")
        if self.fixed_group:
            raise ValueError("keep_experts on a layer with a fixed group: cut the full layer")
        _check_fixed_group(fixed_group, fixed_free, len(keep), self.top_k)
        old = self.router.weight  # (E, D)
        self.router = nn.Linear(
            old.shape[1], len(keep), bias=False, device=old.device, dtype=old.dtype
        )
        self.router.weight.copy_(old[keep])  # (E', D)
        self.experts = nn.ModuleList(self.experts[e] for e in keep)
        self.__dict__.pop("_inference_cache", None)  # the dropped experts' weight copies
        self.num_experts = len(keep)
        self.fixed_group, self.fixed_free = fixed_group, fixed_free

    @staticmethod
    def _delta_logits(x: Tensor, routing: MoERouting, real: Tensor, all_real: bool) -> Tensor:
        """(N, E) logits of the per-utterance router corrections on the real frames' router
        input (batched over utterances: no per-frame copy of the (E, D) corrections)."""
        delta = routing.router_delta
        assert delta is not None and delta.dim() == 3
        full = x if routing.cond is None else x + routing.cond.to(x.dtype)[:, None, :]
        out = torch.bmm(full, delta.to(x.dtype).transpose(1, 2)).float()  # (B, T, E)
        out = out.reshape(-1, out.shape[-1])
        return out if all_real else out.index_select(0, real)

    @staticmethod
    def _allowed_rows(routing: MoERouting, real: Tensor, t: int) -> Tensor:
        """(B, E) or (B, T, E) allowed experts -> (N, E) for the real frames (N,) of T."""
        allowed = routing.allowed
        assert allowed is not None
        if allowed.dim() == 2:
            return allowed.index_select(0, real // t)
        return allowed.reshape(-1, allowed.shape[-1]).index_select(0, real)

    def _group_plus_free(
        self, sel: Tensor, allowed: Tensor, free: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """sel: (N, E) logits, allowed: (N, E) or (E,) -> probs (N, E), weights, indices (N, k):
        the first k - free choices inside ``allowed``, the last ``free`` among the rest."""
        group = sel.masked_fill(~allowed, float("-inf")).topk(self.top_k - free, dim=-1).indices
        rest = sel.scatter(-1, group, float("-inf")).topk(free, dim=-1).indices
        topi = torch.cat([group, rest], -1)  # (N, k), group choices first (capacity order)
        probs = sel.softmax(-1)
        return probs, probs.gather(-1, topi), topi

    def _dispatch(self, x: Tensor, idx: Tensor, weight: Tensor) -> Tensor:
        """x: (N, D), idx/weight: (N, k) -> (N, D) = sum_k weight * expert_idx(x)."""
        n, k = idx.shape
        token_of = None  # k = 1: assignment a is frame a
        if self.capacity_factor > 0:
            # choice-major order: all first choices, then all second choices, ...
            flat_e = idx.t().reshape(-1)  # (k*N,)
            flat_w = weight.t().reshape(-1)
            if k > 1:
                token_of = torch.arange(n, device=x.device).repeat(k)
        else:
            flat_e = idx.reshape(-1)  # (N*k,)
            flat_w = weight.reshape(-1)
            if k > 1:
                token_of = torch.arange(n, device=x.device).repeat_interleave(k)
        order = torch.argsort(flat_e, stable=True)  # assignments grouped by expert
        counts = torch.bincount(flat_e, minlength=self.num_experts)  # (E,)
        if self.capacity_factor > 0:
            cap = math.ceil(self.capacity_factor * n * k / self.num_experts)
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.arange(order.numel(), device=x.device) - starts.repeat_interleave(counts)
            order = order[rank < cap]
            counts = counts.clamp(max=cap)
        tokens = order if token_of is None else token_of.index_select(0, order)
        xs = x.index_select(0, tokens)  # (A, D), contiguous per expert
        # with autograd on, every expert runs (maybe on 0 rows) so that all parameters get a
        # gradient (DDP without find_unused_parameters); without it, empty experts are skipped
        grad = torch.is_grad_enabled()
        outs = [
            expert(chunk)
            for expert, chunk in zip(self.experts, xs.split(counts.tolist()), strict=True)
            if grad or chunk.shape[0]
        ]
        ys = torch.cat(outs)
        if k == 1 and self.capacity_factor == 0:
            # a permutation of the frames: put the rows back, then weight them in frame order
            # (the same products as below, without the zero fill and the weights' gather), in
            # place into a fresh tensor (the out-of-place index_copy would first copy it)
            return torch.empty_like(ys).index_copy_(0, tokens, ys) * weight
        ys = ys * flat_w.index_select(0, order)[:, None]
        return torch.zeros_like(x, dtype=ys.dtype).index_add_(0, tokens, ys)

    def _inference_weights(self, x: Tensor) -> list[moe_inference.ExpertWeights] | None:
        """The cached row-major expert weights when this call takes the inference dispatch
        (``moe_inference``), else None (training, autograd, not CPU, capacity factor)."""
        return moe_inference.inference_weights(self, x) if LEAN_INFERENCE else None

    def _dispatch_inference(self, x: Tensor, idx: Tensor, weight: Tensor, ws: list) -> Tensor:
        """Routed plus shared experts at inference (``moe_inference.dispatch``): the outputs
        of ``_dispatch`` and the shared experts to float rounding."""
        return moe_inference.dispatch(x, idx, weight, ws, self.num_experts)


def _check_fixed_group(group: int, free: int, num_experts: int, top_k: int) -> None:
    """ValueError unless ``group`` and ``free`` are 0 (no fixed group) or a fixed group of
    top_k - free .. num_experts experts with 1..top_k-1 free choices."""
    if group == 0 and free == 0:
        return
    if not (0 < free < top_k and top_k - free <= group <= num_experts):
        raise ValueError(
            f"fixed_group={group}, fixed_free={free}: need 0 < fixed_free < top_k={top_k} "
            f"and top_k - fixed_free <= fixed_group <= num_experts={num_experts}"
        )


def block_mean(logits: Tensor, real: Tensor, b: int, t: int, block: int) -> Tensor:
    """(N, E) logits of the real frames ``real`` (flat indices into (B, T)) -> each frame's
    mean over the real frames of its block (frames ``block`` apart from the utterance start)."""
    key = real - (real % t) % block  # (N,) flat index of each frame's block start
    # scatter_add, not index_add: ONNX exports index_add as a scatter that drops repeats
    ones = logits.new_ones(key.shape[0], 1)
    both = torch.cat([logits, ones], 1)  # (N, E + 1): sums and counts in one scatter
    sums = both.new_zeros(b * t, both.shape[1]).scatter_add(0, key[:, None].expand_as(both), both)
    mean = sums[:, :-1] / sums[:, -1:].clamp_min(1)
    return mean.index_select(0, key)


def _unflatten(values: Tensor, real: Tensor, b: int, t: int) -> Tensor:
    """(N, ...) values of the real frames -> (B, T, ...) with zeros at padded frames."""
    out = values.new_zeros((b * t, *values.shape[1:]))  # filled in place: no second copy
    return out.index_copy_(0, real, values).view(b, t, *values.shape[1:])


def _real_count(mask: Tensor) -> Tensor:
    return mask.sum().clamp_min(1).float()


def load_balance_loss(stats: RouterStats) -> Tensor:
    """Switch load-balance loss ``E * sum_e f_e * P_e`` over real frames.

    f_e: fraction of the (frame, choice) assignments that went to expert e;
    P_e: mean router probability of expert e. Equals 1 for perfectly uniform routing.
    """
    num_experts = stats.probs.shape[-1]
    m = stats.mask.float()  # (B, T)
    n = _real_count(stats.mask)
    k = stats.topk_idx.shape[-1]
    assigned = torch.zeros_like(stats.probs).scatter_add_(
        -1, stats.topk_idx, m[..., None].expand_as(stats.topk_idx).to(stats.probs.dtype)
    )  # (B, T, E) number of choices of e at each real frame
    frac = assigned.sum((0, 1)) / (n * k)  # (E,)
    mean_prob = (stats.probs * m[..., None]).sum((0, 1)) / n  # (E,)
    return num_experts * (frac.detach() * mean_prob).sum()


def router_z_loss(stats: RouterStats) -> Tensor:
    """ST-MoE router z-loss: mean over real frames of ``logsumexp(logits)^2``."""
    z = torch.logsumexp(stats.logits, dim=-1) ** 2  # (B, T)
    return (z * stats.mask).sum() / _real_count(stats.mask)


def importance_cv2(stats: RouterStats) -> Tensor:
    """Shazeer et al. 2017 importance loss: CV^2 of per-expert summed gate values.

    Importance_e = sum over real frames of the (sparse, top-k) gate weight of e;
    CV^2 = population variance / mean^2.
    """
    gates = torch.zeros_like(stats.probs).scatter_add_(-1, stats.topk_idx, stats.topk_weight)
    importance = (gates * stats.mask[..., None]).sum((0, 1))  # (E,)
    return importance.var(unbiased=False) / (importance.mean() ** 2 + 1e-10)


def output_similarity(outputs: Tensor) -> Tensor:
    """outputs: (E, P, D) every expert on the same P frames -> mean squared cosine similarity
    over expert pairs (i < j) and frames; 0 = orthogonal outputs, 1 = parallel."""
    num_experts = outputs.shape[0]
    if num_experts < 2:
        return outputs.new_zeros(())
    unit = F.normalize(outputs.float(), dim=-1)
    cos = torch.einsum("ipd,jpd->ijp", unit, unit)  # (E, E, P)
    iu = torch.triu_indices(num_experts, num_experts, 1, device=outputs.device)
    return (cos[iu[0], iu[1]] ** 2).mean()
