#!/usr/bin/env python3
"""Training-step benchmark (not a test): our Conformer vs speechbrain's, dense vs MoE.

    .venv/bin/python tools/bench_train.py [--threads 2] [--repeats 12] [--out bench.json]

Batch: ``--batch`` utterances x ``--seconds`` s of random 80-dim fbank (100 frames/s),
random token targets (length ~40, vocab 32). Model: d_model 144, 6 layers, 4 heads,
kernel 15, FFN 576, dropout 0.1, train mode. A step is forward + backward + gradient
clipping (5.0) + AdamW step (``moe_asr.train.schedule.build_optimizer``), as in training.

1. Encoder stacks, loss = mean of squared outputs, optimizer over the stack only:
   our ``ConformerEncoder`` (built by ``moe_asr.model.build_model``; dense, MoE top-2 of 8,
   MoE top-1 of 4) vs speechbrain's ``ConformerEncoder`` (RelPosMHAXL attention with
   RelPosEncXL, its standard Conformer). Both stacks get the SAME front end: our
   ``Conv2dSubsampling`` (4x, 400 -> 99 frames) + dropout, so the Conformer layers are
   compared. speechbrain applies its dropout (0.1) to attention weights too; ours uses
   ``--attention-dropout`` (default 0.1, the same). ``--cpu-dropout fast`` gives our models
   the 16-bit dropout masks of ``train.cpu_dropout: fast`` (speechbrain's stay torch's).
2. Full model training step of ours (encoder + CTC + attention decoder + MoE losses):
   dense vs MoE top-2 of 8 (2x active FFN compute) and MoE top-1 of 4 (equal active
   compute).

First one untimed step per variant under ``torch.utils.flop_counter`` (GFLOP per step:
the compute-bound ratio). Then ``--warmup`` untimed and ``--repeats`` timed rounds,
interleaved: every round runs each variant once, the order reversed on alternate rounds,
so machine load hits all alike; timing stops early (after >= 3 rounds) past
``--max-seconds``. Per variant: median and IQR (ms). Ratios: per-round paired ratios
(median [IQR]) and the ratio of medians; the issue's targets are checked on the paired
median (exit status 1 on FAIL only with ``--strict``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from moe_asr.config import ModelConfig, MoEConfig, TrainConfig
from moe_asr.files import atomic_open
from moe_asr.model import AsrModel, build_model
from moe_asr.nn.conformer import Conv2dSubsampling
from moe_asr.nn.dropout import KINDS, cpu_dropout
from moe_asr.train.schedule import build_optimizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchlib, also when imported
from benchlib import interleaved, print_header, quartiles, verdict  # noqa: E402

_VOCAB = 32  # blank 0, unk 1, sos/eos 31
_FRAMES_PER_SECOND = 100
_GRAD_CLIP = 5.0

# (name, numerator, denominator, target or None): checked on the paired median ratio; the
# targets of the performance issue (19) where it sets one
_RATIOS = [
    ("stack: ours dense / speechbrain", "stack_ours_dense", "stack_speechbrain", 0.90),
    ("stack: ours MoE 2/8 / speechbrain", "stack_ours_moe8k2", "stack_speechbrain", None),
    ("stack: ours MoE 2/8 / ours dense", "stack_ours_moe8k2", "stack_ours_dense", None),
    ("stack: ours MoE 1/4 / ours dense", "stack_ours_moe4k1", "stack_ours_dense", None),
    ("full: ours MoE 2/8 / ours dense", "full_moe8k2", "full_dense", 1.25),
    ("full: ours MoE 2/8 (d_ff/2) / ours dense", "full_moe8k2_half", "full_dense", 1.15),
    ("full: ours MoE 1/4 / ours dense (equal active)", "full_moe4k1", "full_dense", 1.10),
]
_GUIDED_TARGET = 1.10  # guided / unguided full step, per --guided-config
_DEFAULT_GUIDED = ("moe_hier.yaml", "moe_guided.yaml")
_RECIPE_CONF = os.path.join(os.path.dirname(__file__), "..", "egs", "synth_accents", "asr1", "conf")


@dataclass
class _Variant:
    """One timed training step; ``step()`` returns the loss (checked finite)."""

    name: str
    description: str
    params: int
    step: Callable[[], float]


def _model_config(
    args: argparse.Namespace, ffn: str, experts: int = 1, top_k: int = 1, expert_d_ff: int = 0
) -> ModelConfig:
    return ModelConfig(
        input_dim=80,
        d_model=144,
        num_layers=6,
        num_heads=4,
        conv_kernel=15,
        d_ff=576,
        dropout=0.1,
        attention_dropout=args.attention_dropout,
        ffn=ffn,
        moe=MoEConfig(num_experts=experts, top_k=top_k, expert_d_ff=expert_d_ff),
    )


class _SpeechbrainStack(nn.Module):
    """Our Conv2d front end + speechbrain's standard Conformer encoder (RelPosMHAXL).

    ``forward(x (B, T, F), lens (B,)) -> (B, T', D)``; the key padding mask and the
    relative position embedding are made as speechbrain's ``TransformerASR.encode`` does.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        from speechbrain.lobes.models.transformer.Conformer import ConformerEncoder
        from speechbrain.nnet.attention import RelPosEncXL

        self.frontend = Conv2dSubsampling(
            cfg.input_dim, cfg.d_model, cfg.subsampling_channels, cfg.subsampling
        )
        self.frontend_dropout = nn.Dropout(cfg.dropout)
        self.pos = RelPosEncXL(cfg.d_model)
        self.encoder = ConformerEncoder(
            num_layers=cfg.num_layers,
            d_model=cfg.d_model,
            d_ffn=cfg.d_ff,
            nhead=cfg.num_heads,
            kernel_size=cfg.conv_kernel,
            dropout=cfg.dropout,
            attention_type="RelPosMHAXL",
        )

    def forward(self, x: Tensor, lens: Tensor) -> Tensor:
        x, lens = self.frontend(x, lens)  # (B, T', D)
        x = self.frontend_dropout(x)
        pad = torch.arange(x.shape[1])[None, :] >= lens[:, None]  # (B, T') True = padding
        out, _ = self.encoder(x, src_key_padding_mask=pad, pos_embs=self.pos(x))
        return out


def _train_step(
    module: nn.Module, params: list[nn.Parameter], loss_fn: Callable[[], Tensor]
) -> Callable[[], float]:
    optimizer = build_optimizer(module, TrainConfig())
    module.train()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, _GRAD_CLIP)
        optimizer.step()
        return float(loss.detach())

    return step


def _batch(args: argparse.Namespace) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """feats (B, T, 80), feat_lens (B,), tokens (B, L) padded with -1, token_lens (B,)."""
    g = torch.Generator().manual_seed(args.seed)
    frames = int(round(args.seconds * _FRAMES_PER_SECOND))
    feats = torch.randn(args.batch, frames, 80, generator=g)
    feat_lens = torch.full((args.batch,), frames, dtype=torch.long)
    token_lens = torch.randint(36, 45, (args.batch,), generator=g)
    tokens = torch.randint(2, _VOCAB - 1, (args.batch, int(token_lens.max())), generator=g)
    pad = torch.arange(tokens.shape[1])[None, :] >= token_lens[:, None]
    return feats, feat_lens, tokens.masked_fill(pad, -1), token_lens


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _variants(args: argparse.Namespace) -> list[_Variant]:
    feats, feat_lens, tokens, token_lens = _batch(args)
    out: list[_Variant] = []

    def ours(ffn: str, experts: int = 1, top_k: int = 1, expert_d_ff: int = 0) -> AsrModel:
        torch.manual_seed(args.seed)
        cfg = _model_config(args, ffn, experts, top_k, expert_d_ff)
        return build_model(cfg, _VOCAB, None)

    torch.manual_seed(args.seed)
    sb = _SpeechbrainStack(_model_config(args, "dense"))
    sb_params = list(sb.parameters())
    out.append(
        _Variant(
            "stack_speechbrain",
            "speechbrain ConformerEncoder (RelPosMHAXL) + our front end",
            _count(sb),
            _train_step(sb, sb_params, lambda: sb(feats, feat_lens).square().mean()),
        )
    )
    for name, desc, spec in (
        ("stack_ours_dense", "our ConformerEncoder, dense", ("dense",)),
        ("stack_ours_moe8k2", "our ConformerEncoder, MoE top-2 of 8", ("moe", 8, 2)),
        ("stack_ours_moe4k1", "our ConformerEncoder, MoE top-1 of 4", ("moe", 4, 1)),
    ):
        enc = ours(*spec).encoder
        enc_params = list(enc.parameters())

        def loss(enc: nn.Module = enc) -> Tensor:
            return enc(feats, feat_lens)[0].square().mean()

        out.append(_Variant(name, desc, _count(enc), _train_step(enc, enc_params, loss)))
    for name, desc, spec in (
        ("full_dense", "our AsrModel (CTC + attention), dense", ("dense",)),
        ("full_moe8k2", "our AsrModel, MoE top-2 of 8", ("moe", 8, 2)),
        (
            "full_moe8k2_half",
            "our AsrModel, MoE top-2 of 8 experts of d_ff/2 (dense compute per frame)",
            ("moe", 8, 2, 288),
        ),
        ("full_moe4k1", "our AsrModel, MoE top-1 of 4", ("moe", 4, 1)),
    ):
        model = ours(*spec)
        model_params = list(model.parameters())

        def loss(model: AsrModel = model) -> Tensor:
            return model(feats, feat_lens, tokens, token_lens).loss

        out.append(_Variant(name, desc, _count(model), _train_step(model, model_params, loss)))
    for path in args.guided_config:
        out.extend(_guided_variants(args, path, (feats, feat_lens, tokens, token_lens)))
    return out


def _guided_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _guided_variants(args: argparse.Namespace, path: str, batch) -> list[_Variant]:
    """The full step of ``path``'s model (labels drawn at random over 16 accents, as the
    trainer passes them) and of the same model with its guidance removed."""
    import dataclasses

    from moe_asr.config import load_config
    from moe_asr.data.labels import LabelVocab

    feats, feat_lens, tokens, token_lens = batch
    mcfg = load_config(path, sections=("model",)).model
    guidance = mcfg.moe.guidance
    accents = sorted(guidance.groups) or [f"a{i}" for i in range(16)]
    names = list(guidance.labels)
    g = torch.Generator().manual_seed(args.seed + 1)
    tables = {n: {f"u{i}": a for i, a in enumerate(accents)} for n in names}
    vocab = LabelVocab.from_tables(tables, names)
    labels = {n: torch.randint(1, vocab.size(n), (feats.shape[0],), generator=g) for n in names}
    plain = dataclasses.replace(mcfg, moe=dataclasses.replace(mcfg.moe, guidance=type(guidance)()))
    out = []
    for tag, cfg, lab in (("guided", mcfg, labels), ("unguided", plain, None)):
        torch.manual_seed(args.seed)
        model = build_model(cfg, _VOCAB, vocab if lab else None)

        def loss(model: AsrModel = model, lab=lab) -> Tensor:
            return model(feats, feat_lens, tokens, token_lens, lab, step=10_000).loss

        name = f"full_{_guided_name(path)}_{tag}"
        desc = f"{_guided_name(path)}.yaml model, {tag}"
        out.append(
            _Variant(name, desc, _count(model), _train_step(model, list(model.parameters()), loss))
        )
    return out


def _count_flops(variants: list[_Variant]) -> dict[str, int]:
    """One untimed step per variant under ``FlopCounterMode`` (matmul/conv/attention FLOPs)."""
    flops = {}
    for v in variants:
        with FlopCounterMode(display=False) as counter:
            v.step()
        flops[v.name] = counter.get_total_flops()
    return flops


def _time(
    variants: list[_Variant], warmup: int, repeats: int, max_seconds: float
) -> dict[str, list[float]]:
    """Interleaved rounds (``benchlib.interleaved``); every loss must stay finite."""
    times, losses = interleaved(
        {v.name: (lambda r, v=v: v.step()) for v in variants},
        rounds=repeats,
        warmup=warmup,
        max_seconds=max_seconds,
    )
    for name, values in losses.items():
        bad = [x for x in values if not math.isfinite(x)]
        if bad:
            raise RuntimeError(f"{name}: non-finite loss {bad[0]} in a timed round")
    return times


def _report_variants(
    variants: list[_Variant], times: dict[str, list[float]], flops: dict[str, int]
) -> dict[str, dict]:
    print()
    print("| variant | params | GFLOP/step | median ms | IQR ms | what |")
    print("|---|---:|---:|---:|---:|---|")
    summary: dict[str, dict] = {}
    for v in variants:
        q1, med, q3 = quartiles(times[v.name])
        summary[v.name] = {
            "description": v.description,
            "params": v.params,
            "gflop": flops[v.name] / 1e9,
            "median_ms": med * 1e3,
            "q1_ms": q1 * 1e3,
            "q3_ms": q3 * 1e3,
            "times_ms": [t * 1e3 for t in times[v.name]],
        }
        print(
            f"| {v.name} | {v.params / 1e6:.2f}M | {flops[v.name] / 1e9:.1f} | {med * 1e3:.0f} | "
            f"{q1 * 1e3:.0f}-{q3 * 1e3:.0f} | {v.description} |"
        )
    return summary


def _report_ratios(
    times: dict[str, list[float]], summary: dict[str, dict], guided_configs: list[str]
) -> list[dict]:
    """Time ratios (paired per round, and of medians) next to the FLOP ratio; PASS/FAIL."""
    print()
    print("| ratio | paired median [IQR] | ratio of medians | FLOP ratio | target | result |")
    print("|---|---:|---:|---:|---:|---|")
    ratios = []
    rows = list(_RATIOS) + [
        (
            f"full: {n} guided / unguided",
            f"full_{n}_guided",
            f"full_{n}_unguided",
            _GUIDED_TARGET,
        )
        for n in map(_guided_name, guided_configs)
    ]
    for label, num, den, target in rows:
        paired = [a / b for a, b in zip(times[num], times[den], strict=True)]
        q1, med, q3 = quartiles(paired)
        of_medians = summary[num]["median_ms"] / summary[den]["median_ms"]
        flop_ratio = summary[num]["gflop"] / summary[den]["gflop"]
        result = verdict(med, target)
        ratios.append(
            {
                "ratio": label,
                "paired_median": med,
                "paired_q1": q1,
                "paired_q3": q3,
                "of_medians": of_medians,
                "flop_ratio": flop_ratio,
                "target": target,
                "result": result,
            }
        )
        tgt = "" if target is None else f"<= {target:.2f}x"
        print(
            f"| {label} | {med:.2f}x [{q1:.2f}-{q3:.2f}] | {of_medians:.2f}x | "
            f"{flop_ratio:.2f}x | {tgt} | {result} |"
        )
    return ratios


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--repeats", type=int, default=12, help="timed rounds per variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    ap.add_argument("--batch", type=int, default=16, help="utterances per batch")
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds per utterance")
    ap.add_argument("--attention-dropout", type=float, default=0.1, help="ours (sb: = dropout)")
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=150.0,
        help="stop timing after this many seconds (>= 3 rounds; 0 = run all repeats)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--cpu-dropout",
        choices=KINDS,
        default=TrainConfig().cpu_dropout,
        help="our models' dropout masks on CPU (train.cpu_dropout; speechbrain keeps torch's)",
    )
    ap.add_argument(
        "--guided-config",
        action="append",
        default=None,
        help="YAML config of a guided MoE model, timed guided vs unguided (repeatable; default: "
        "the synthetic recipe's conf/moe_hier.yaml and conf/moe_guided.yaml; 'none' skips)",
    )
    ap.add_argument("--out", help="also write the numbers as JSON here")
    ap.add_argument("--strict", action="store_true", help="exit status 1 when a target fails")
    args = ap.parse_args(argv)
    if args.guided_config is None:
        args.guided_config = [os.path.join(_RECIPE_CONF, n) for n in _DEFAULT_GUIDED]
    args.guided_config = [p for p in args.guided_config if p != "none"]
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0 or args.batch < 1:
        ap.error("--threads, --repeats and --batch must be >= 1, --warmup >= 0")
    if args.seconds * _FRAMES_PER_SECOND < 7:
        ap.error("--seconds must give at least 7 frames (0.07 s) for 4x subsampling")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)

    command, machine = print_header(argv, "speechbrain")
    frames = int(round(args.seconds * _FRAMES_PER_SECOND))
    sub = ((frames - 1) // 2 - 1) // 2
    print(
        f"batch {args.batch} x {args.seconds:g} s ({frames} fbank frames, 80-dim; "
        f"{sub} frames after the shared 4x Conv2d front end), d_model 144, 6 layers, 4 heads, "
        f"kernel 15, FFN 576, dropout 0.1 (ours attention {args.attention_dropout:g}; our "
        f"masks on CPU: {args.cpu_dropout}), "
        f"train mode; step = fwd + bwd + clip + AdamW; warmup {args.warmup}, "
        f"{args.repeats} interleaved rounds"
    )
    variants = _variants(args)
    started = time.perf_counter()
    with cpu_dropout(args.cpu_dropout):
        flops = _count_flops(variants)
        times = _time(variants, args.warmup, args.repeats, args.max_seconds)
    wall = time.perf_counter() - started

    summary = _report_variants(variants, times, flops)
    ratios = _report_ratios(times, summary, args.guided_config)
    failed = any(r["result"] == "FAIL" for r in ratios)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\ntimed in {wall:.0f} s; load average at the end {load}")
    if args.out:
        with atomic_open(args.out, "w") as f:
            json.dump(
                {
                    "command": command,
                    "machine": machine,
                    "args": vars(args),
                    "variants": summary,
                    "ratios": ratios,
                },
                f,
                indent=1,
            )
        print(f"wrote {args.out}")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())
