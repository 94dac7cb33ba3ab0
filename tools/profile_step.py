#!/usr/bin/env python3
"""Where an MoE training step spends the time a dense one does not (torch.profiler; not a test).

    .venv/bin/python tools/profile_step.py [--threads 2] [--steps 5] [--out profile.json]
    .venv/bin/python tools/profile_step.py --inference   # encoder + CTC head, no grad

The full-model training steps of tools/bench_train.py (same batch, model sizes and step:
fwd + bwd + clip + AdamW): dense, MoE top-1 of 4 (equal active compute) and MoE top-2 of 8
with experts of d_ff/2 (dense compute per frame). ``--inference``: instead, what
tools/bench_decode.py's encoder row times: eval mode, no grad, encoder + CTC log-probs of
the batch (no backward, no optimizer); ``--int8`` adds dense and MoE top-1 of 4 with
dynamic int8 linear layers (bench_decode's int8 row). Each variant runs ``--warmup`` steps, then
``--steps`` steps under ``torch.profiler`` (CPU, main thread; the variants alternate so that
load hits all alike). Printed per step (ms):

1. labelled forward ranges (forward hooks, nothing in the model changes): the encoder
   feed-forwards (``dense_ffn`` or ``moe_ffn``), inside an MoE one its ``router`` and its
   ``experts``; the rest of ``moe_ffn`` is routing, dispatch (sort, gather, index_add) and
   the routing statistics;
2. the backward of each autograd function (``evaluate_function: XBackward0``, inclusive
   time), the MoE variants' extra over dense, largest first;
3. aten (and quantized) operators by self time, each variant's extra over dense, largest
   first;
4. the step split into matmul, convolution, dispatch/indexing, optimizer and other ops.

The profiler itself adds a few µs per operator, so an MoE step (more, smaller operators)
looks slower here than in bench_train.py; read the shares and differences, not the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchlib, bench_train
from bench_decode import _encoder_pass, _int8_copy  # noqa: E402
from bench_train import _VOCAB, _batch, _model_config, _train_step  # noqa: E402
from benchlib import print_header  # noqa: E402

from moe_asr.config import TrainConfig  # noqa: E402
from moe_asr.files import atomic_open  # noqa: E402
from moe_asr.model import build_model  # noqa: E402
from moe_asr.nn.dropout import KINDS, cpu_dropout  # noqa: E402
from moe_asr.nn.moe import FeedForward, MoEFeedForward  # noqa: E402

# (name, ffn, experts, top_k, expert_d_ff) as in bench_train.py's full-model rows
_VARIANTS = [
    ("dense", "dense", 1, 1, 0),
    ("moe4k1", "moe", 4, 1, 0),
    ("moe8k2_half", "moe", 8, 2, 288),
]
_BACKWARD = "autograd::engine::evaluate_function: "
# op-name fragments of each category, first match wins; the rest is "other"
_CATEGORIES = [
    (
        "matmul",
        (
            "aten::mm",
            "aten::addmm",
            "aten::bmm",
            "aten::baddbmm",
            "aten::_mkldnn",
            "quantized::linear",  # dynamic int8: quantizes its input, int8 GEMM, dequantizes
        ),
    ),
    ("convolution", ("convolution", "aten::_conv", "mkldnn_conv", "aten::conv")),
    (
        "dispatch/indexing",
        (
            "index",
            "aten::sort",
            "aten::argsort",
            "aten::bincount",
            "aten::cumsum",
            "aten::gather",
            "aten::scatter",
            "aten::nonzero",
            "aten::topk",
            "aten::split",
            "aten::cat",
            "aten::_local_scalar_dense",
        ),
    ),
    ("optimizer", ("_foreach", "Optimizer", "aten::_fused_adam", "clip_grad")),
]


def _label_forward(model: nn.Module) -> None:
    """Open a record_function range around each encoder feed-forward, router and expert."""
    stack: list = []

    def label(module: nn.Module, name: str) -> None:
        def enter(_m, _args) -> None:
            rf = record_function(name)
            rf.__enter__()
            stack.append(rf)

        def leave(_m, _args, _out) -> None:
            stack.pop().__exit__(None, None, None)

        module.register_forward_pre_hook(enter)
        module.register_forward_hook(leave)

    experts = {id(e) for m in model.modules() if isinstance(m, MoEFeedForward) for e in m.experts}
    for module in model.encoder.modules():
        if isinstance(module, MoEFeedForward):
            label(module, "moe_ffn")
            label(module.router, "router")
            for expert in module.experts:
                label(expert, "experts")
        elif isinstance(module, FeedForward) and id(module) not in experts:
            label(module, "dense_ffn")


def _inference_step(model: nn.Module, feats: torch.Tensor, feat_lens: torch.Tensor):
    """Encoder + CTC log-probs of the batch in eval mode without autograd: the pass that
    tools/bench_decode.py times, on this one batch."""
    model.eval()
    run = _encoder_pass(model, [(feats, feat_lens)])
    return lambda: run(0)


def _category(op: str) -> str:
    for name, fragments in _CATEGORIES:
        if any(f in op for f in fragments):
            return name
    return "other"


def _profile(step, steps: int) -> tuple[dict[str, dict[str, float]], float]:
    """{key: {"self": ms, "total": ms, "count": n}} per step, and wall ms per step."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - started) * 1e3 / steps
    out = {}
    for e in prof.key_averages():
        out[e.key] = {
            "self": e.self_cpu_time_total / 1e3 / steps,
            "total": e.cpu_time_total / 1e3 / steps,
            "count": e.count / steps,
        }
    return out, wall


def _diff_rows(prof: dict, base: dict, keys, field: str, top: int) -> list[tuple]:
    rows = []
    for k in keys:
        a = prof.get(k, {}).get(field, 0.0)
        b = base.get(k, {}).get(field, 0.0)
        rows.append((a - b, k, a, b, prof.get(k, {}).get("count", 0.0)))
    return sorted(rows, reverse=True)[:top]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--steps", type=int, default=5, help="profiled steps per variant")
    ap.add_argument("--warmup", type=int, default=2, help="unprofiled steps first")
    ap.add_argument("--rounds", type=int, default=2, help="profiled rounds (variants alternate)")
    ap.add_argument("--batch", type=int, default=16, help="utterances per batch")
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds per utterance")
    ap.add_argument("--top", type=int, default=12, help="rows of each difference table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write every profiled number as JSON here")
    ap.add_argument(
        "--cpu-dropout",
        choices=KINDS,
        default=TrainConfig().cpu_dropout,
        help="dropout masks on CPU (train.cpu_dropout)",
    )
    ap.add_argument(
        "--inference", action="store_true", help="profile encoder + CTC head inference instead"
    )
    ap.add_argument(
        "--int8",
        action="store_true",
        help="with --inference: also dense and MoE top-1/4 with dynamic int8 linear layers",
    )
    args = ap.parse_args(argv)
    if args.int8 and not args.inference:
        ap.error("--int8 needs --inference (int8 here is an inference path)")
    if min(args.threads, args.steps, args.rounds, args.batch, args.top) < 1 or args.warmup < 0:
        ap.error("--threads, --steps, --rounds, --batch and --top must be >= 1, --warmup >= 0")
    args.attention_dropout = 0.1
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    command, machine = print_header(argv)
    what = (
        "inference (encoder + CTC head, eval, no grad)"
        if args.inference
        else "full-model step (fwd + bwd + clip + AdamW)"
    )
    print(
        f"batch {args.batch} x {args.seconds:g} s; {what}; dropout masks {args.cpu_dropout}; "
        f"{args.warmup} warm-up + {args.rounds} x {args.steps} profiled steps per variant"
    )

    feats, feat_lens, tokens, token_lens = _batch(args)
    steps = {}
    for name, ffn, experts, top_k, expert_d_ff in _VARIANTS:
        torch.manual_seed(args.seed)
        model = build_model(_model_config(args, ffn, experts, top_k, expert_d_ff), _VOCAB, None)
        _label_forward(model)

        if args.inference:
            steps[name] = _inference_step(model, feats, feat_lens)
            if args.int8 and name != "moe8k2_half":
                steps[f"{name}_int8"] = _inference_step(_int8_copy(model), feats, feat_lens)
        else:

            def loss(model: nn.Module = model) -> torch.Tensor:
                return model(feats, feat_lens, tokens, token_lens).loss

            steps[name] = _train_step(model, list(model.parameters()), loss)
    with cpu_dropout(args.cpu_dropout):
        return _run(args, steps, command, machine)


def _run(args: argparse.Namespace, steps: dict, command: str, machine: str) -> int:
    for step in steps.values():
        for _ in range(args.warmup):
            step()

    sums: dict[str, dict[str, dict[str, float]]] = {n: defaultdict(dict) for n in steps}
    walls: dict[str, list[float]] = {n: [] for n in steps}
    for r in range(args.rounds):
        for name in steps if r % 2 == 0 else reversed(steps):
            prof, wall = _profile(steps[name], args.steps)
            walls[name].append(wall)
            for k, v in prof.items():
                acc = sums[name][k]
                for f, x in v.items():
                    acc[f] = acc.get(f, 0.0) + x / args.rounds
    profs = {n: dict(v) for n, v in sums.items()}
    wall = {n: sum(w) / len(w) for n, w in walls.items()}
    base = profs["dense"]

    print("\n1. step and labelled forward ranges, ms per step (inclusive)")
    print(f"{'':26s}" + "".join(f"{n:>14s}" for n in steps))
    print(f"{'step (wall, profiled)':26s}" + "".join(f"{wall[n]:14.1f}" for n in steps))
    for key in ("dense_ffn", "moe_ffn", "router", "experts"):
        cells = [profs[n].get(key, {}).get("total") for n in steps]
        print(f"{key + ' fwd':26s}" + "".join(f"{c:14.1f}" if c else f"{'-':>14s}" for c in cells))
    for n in steps:
        p = profs[n]
        if "moe_ffn" in p and "experts" in p:
            rest = p["moe_ffn"]["total"] - p["router"]["total"] - p["experts"]["total"]
            print(f"{n}: moe_ffn fwd minus router and experts (routing, dispatch) {rest:.1f} ms")
        elif "moe_ffn" in p:  # the lean inference dispatch calls no expert module
            print(f"{n}: experts inside the lean inference dispatch (aten::addmm rows below)")

    tables = [
        (
            "2. backward functions (inclusive ms per step), extra over dense",
            lambda p: [k for k in p if k.startswith(_BACKWARD)],
            "total",
        ),
        (
            "3. aten and quantized operators (self ms per step), extra over dense",
            lambda p: [k for k in p if k.startswith(("aten::", "quantized::"))],
            "self",
        ),
    ]
    for title, keys_of, field in tables[1:] if args.inference else tables:
        print(f"\n{title}")
        for n in steps:
            if n == "dense":
                continue
            print(f"  {n}: extra | op | {n} | dense | calls per step ({n})")
            rows = _diff_rows(
                profs[n], base, set(keys_of(profs[n])) | set(keys_of(base)), field, args.top
            )
            for d, k, a, b, c in rows:
                print(f"  {d:+8.1f} | {k.replace(_BACKWARD, '')} | {a:.1f} | {b:.1f} | {c:.0f}")

    print("\n4. self time by category, ms per step")
    cats = [c for c, _ in _CATEGORIES] + ["other"]
    totals = {n: dict.fromkeys(cats, 0.0) for n in steps}
    for n, p in profs.items():
        for k, v in p.items():
            if k.startswith(("aten::", "quantized::", "Optimizer")) or "_foreach" in k:
                totals[n][_category(k)] += v["self"]
    print(f"{'':20s}" + "".join(f"{n:>14s}" for n in steps))
    for c in cats:
        print(f"{c:20s}" + "".join(f"{totals[n][c]:14.1f}" for n in steps))

    if args.out:
        with atomic_open(args.out, "w") as f:
            json.dump(
                {
                    "command": command,
                    "machine": machine,
                    "args": vars(args),
                    "wall_ms": wall,
                    "categories": totals,
                    "ops": profs,
                },
                f,
                indent=1,
            )
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
