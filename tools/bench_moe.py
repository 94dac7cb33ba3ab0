#!/usr/bin/env python3
"""Benchmark MoEFeedForward against a dense feed-forward of the same active size.

top-k MoE with experts of width d_ff is compared with one dense FeedForward of width
k * d_ff (the same multiply-adds per frame). Forward (inference, no grad) and
forward+backward (training) at a long batch and a streaming chunk. Cases are timed in
interleaved rounds (one repeat of every case per round, the order reversed on alternate
rounds: ``tools/benchlib.py``) so machine load hits all alike; the command, the machine
(torch version, threads), medians and MoE/dense ratios with their goal are printed as a
table: ``--goal-chunk`` (1.5x) at <= ``CHUNK_FRAMES`` frames, the goal for a streaming
chunk in RESULTS.md, and ``--goal-long`` (1.25x) above, the training-step target of
``tools/bench_train.py``; exit status 1 on FAIL only with ``--strict``. Inference takes the
layer's lean dispatch (``MoEFeedForward._dispatch_inference``); the "sorted" column times the
inference rows through the training's sort-and-split dispatch without autograd
(``moe_asr.nn.moe.LEAN_INFERENCE`` off; the fwd+bwd rows take that path anyway).
``--configs 4:1:b16``: a block-routed layer (``model.moe.route_block`` 16: one choice per
16-frame block), timed beside the frame-routed ``4:1`` rows.

Cache state: at the defaults the dense layer's weights take 0.66 MB and the four experts of
top-1/4 2.65 MB (fp32); at a streaming chunk a chunk's frames use nearly every expert, and much
of either layer's time goes to reading weights, so where they come from (L2, L3, memory) moves
the ratio. By default that depends on the other cases of a round; ``--flush-mb MB`` writes MB
of memory before every timed call (untimed), so that every call reads its weights from memory,
as in an encoder whose feed-forwards do not fit in the caches together.

    .venv/bin/python tools/bench_moe.py --threads 2 --frames 2000 16
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
from collections.abc import Callable

import torch
from torch import nn

import moe_asr.nn.moe as moe_module
from moe_asr.nn.moe import FeedForward, MoEFeedForward

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchlib, also when imported
from benchlib import interleaved, print_header, verdict  # noqa: E402

CHUNK_FRAMES = 64  # inputs of at most this many frames are streaming chunks (--goal-chunk)


def _case(
    module: nn.Module, x: torch.Tensor, mask: torch.Tensor, backward: bool, sorted_=False
) -> Callable:
    is_moe = isinstance(module, MoEFeedForward)

    def run() -> None:
        if sorted_:
            moe_module.LEAN_INFERENCE = False
            try:
                plain()
            finally:
                moe_module.LEAN_INFERENCE = True
        else:
            plain()

    def plain() -> None:
        if backward:
            module.train()
            y = module(x, mask)[0] if is_moe else module(x)
            y.square().mean().backward()
            module.zero_grad(set_to_none=True)
        else:
            module.eval()
            with torch.no_grad():
                module(x, mask) if is_moe else module(x)

    return run


def _parse_config(spec: str) -> tuple[int, int, int]:
    """ "E:K" or "E:K:bN" -> (num_experts, top_k, route_block)."""
    parts = spec.split(":")
    try:
        if len(parts) not in (2, 3) or (len(parts) == 3 and not parts[2].startswith("b")):
            raise ValueError
        return int(parts[0]), int(parts[1]), int(parts[2][1:]) if len(parts) == 3 else 0
    except ValueError:
        raise SystemExit(
            f"--configs {spec!r}: expected E:K or E:K:bN (e.g. 4:1 or 4:1:b16)"
        ) from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, nargs="+", default=[2000, 16])
    ap.add_argument("--d-model", type=int, default=144)
    ap.add_argument("--d-ff", type=int, default=576)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--configs",
        nargs="+",
        default=["4:1", "8:2"],
        help="num_experts:top_k pairs; num_experts:top_k:bN = block routing over N frames "
        "(model.moe.route_block: one expert choice per block)",
    )
    ap.add_argument("--goal-chunk", type=float, default=1.5, help="MoE/dense goal, short inputs")
    ap.add_argument("--goal-long", type=float, default=1.25, help="MoE/dense goal, long inputs")
    ap.add_argument("--strict", action="store_true", help="exit status 1 when a goal fails")
    ap.add_argument(
        "--flush-mb",
        type=float,
        default=0.0,
        help="write this many MB before every timed call (untimed) to evict the CPU caches",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    d, ff = args.d_model, args.d_ff

    cases: dict[tuple, Callable] = {}
    for spec in args.configs:
        e, k, block = _parse_config(spec)
        moe = MoEFeedForward(d, ff, e, k, dropout=0.0, route_block=block)
        dense = FeedForward(d, k * ff, dropout=0.0)
        for n in args.frames:
            x = torch.randn(1, n, d, requires_grad=True)
            mask = torch.ones(1, n, dtype=torch.bool)
            for bwd in (False, True):
                # fwd+bwd on copies: entering training mode frees the inference layer's weight
                # copies, which a decoder builds once, not before every call
                m, dn = (copy.deepcopy(moe), copy.deepcopy(dense)) if bwd else (moe, dense)
                cases[(spec, n, bwd, "moe")] = _case(m, x, mask, bwd)
                if not bwd:  # fwd+bwd takes the sorted dispatch anyway
                    cases[(spec, n, bwd, "sorted")] = _case(m, x, mask, bwd, sorted_=True)
                cases[(spec, n, bwd, "dense")] = _case(dn, x, mask, bwd)

    flush = torch.zeros(int(args.flush_mb * 2**20) // 4)  # float32

    print_header(argv)
    times, _ = interleaved(
        {key: (lambda r, fn=fn: fn()) for key, fn in cases.items()},
        rounds=args.repeats,
        warmup=args.warmup,
        before=(lambda: flush.add_(1.0)) if flush.numel() else None,
    )
    caches = (
        f"caches evicted ({args.flush_mb:g} MB written) before each call"
        if flush.numel()
        else "warm caches"
    )
    print(
        f"d_model={d} d_ff={ff}, warmup {args.warmup}, {args.repeats} interleaved rounds, medians, "
        f"{caches}"
    )
    print(
        f"{'MoE':>10} {'dense':>8} {'frames':>6} {'pass':>8} {'MoE ms':>8} {'dense ms':>9} "
        f"ratio {'sorted ms':>9} {'ratio':>6} {'goal':>6} result"
    )
    failed = False
    for spec in args.configs:
        e, k, block = _parse_config(spec)
        for n in args.frames:
            for bwd in (False, True):
                m = statistics.median(times[(spec, n, bwd, "moe")]) * 1e3
                dn = statistics.median(times[(spec, n, bwd, "dense")]) * 1e3
                sorted_times = times.get((spec, n, bwd, "sorted"))
                so = statistics.median(sorted_times) * 1e3 if sorted_times else m
                label = f"top{k}/{e}" + (f" b{block}" if block else "")
                goal = args.goal_chunk if n <= CHUNK_FRAMES else args.goal_long
                result = verdict(m / dn, goal)
                failed |= result == "FAIL"
                print(
                    f"{label:>10} {f'{k}x{ff}':>8} {n:>6} {'fwd+bwd' if bwd else 'fwd':>8} "
                    f"{m:8.3f} {dn:9.3f} {m / dn:5.2f}x {so:9.3f} {so / dn:5.2f}x "
                    f"{goal:5.2f}x {result}" + ("" if sorted_times else "  (sorted: same path)")
                )
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())
