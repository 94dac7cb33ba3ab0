#!/usr/bin/env python3
"""Benchmark streaming recognition: per-chunk real-time factor and final latency.

Each model streams the same signal through ``moe_asr.decode.streaming.StreamingRecognizer``
in chunk-sized pieces (as a live microphone would deliver them). Per chunk: compute time
/ chunk duration (RTF per chunk; < 1 keeps up with real time), as median, p95 and max;
then the time from the end of audio to the final result (``finalize``: last chunk, end of
the search, attention rescoring). Models: packages (``--models EXP/model.pt ...``, each
followed by an untrained dense twin of its config with ``--dense-twin``: the MoE / dense ratio
on the package's trained routing), or by default a dense and an MoE model built from
``--config`` with untrained weights (the compute is the same; the text is meaningless).
Signal: ``--audio`` files (speech) one after another, else a tone with noise, which an
untrained router sends mostly to one expert per chunk: MoE / dense ratios belong to speech.

Timing (``tools/benchlib.py``): ``--rounds`` interleaved rounds, each streaming the whole signal
through every model once (the order reversed on alternate rounds); per model the per-chunk RTF
pooled over rounds (median, p95, max) and the median final latency. Goal: p95 RTF per chunk
<= 1 (keeps up with real time; PASS/FAIL, exit 1 on FAIL only with ``--strict``); the MoE /
dense ratio is the paired median of per-round median RTFs, checked against <= 1.2 (PASS/FAIL,
informative: ``--strict`` looks at the p95 goal only). The command and the machine (torch
version, threads) are printed first.

    .venv/bin/python tools/bench_streaming.py --threads 2 --seconds 20 --chunk-frames 16
    .venv/bin/python tools/bench_streaming.py --models exp/moe_streaming/model.pt --dense-twin \
        --audio data/test/wav/*.wav
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from moe_asr.audio import load_audio
from moe_asr.config import load_config
from moe_asr.data.tokenizer import TokenizerConfig, train_tokenizer
from moe_asr.decode.streaming import StreamingRecognizer
from moe_asr.model import build_model, parameter_summary
from moe_asr.package import ModelPackage, load_package

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchlib, also when imported
from bench_decode import _dense_twin  # noqa: E402
from benchlib import interleaved, print_header, quartiles, verdict  # noqa: E402

GOAL_P95_RTF = 1.0  # every chunk (95th percentile) computed faster than it lasts
GOAL_MOE_RATIO = 1.2  # MoE / dense RTF per chunk (the streaming issue's latency goal)

_DEFAULT_CONFIG = Path(__file__).parent.parent / "egs/synth_accents/asr1/conf/moe_streaming.yaml"


def _built(config: str, overrides: list[str], ffn: str) -> ModelPackage:
    cfg = load_config(config, [*overrides, f"model.ffn={ffn}", "model.streaming.enabled=true"])
    tok = train_tokenizer(["the quick brown fox jumps over the lazy dog"], TokenizerConfig())
    torch.manual_seed(0)
    model = build_model(cfg.model, tok.vocab_size, None).eval()
    return ModelPackage(model, cfg, tok, None, {"name": f"{ffn} (untrained)"})


def _twin(package: ModelPackage) -> ModelPackage:
    """bench_decode's dense twin of ``package`` (untrained: dense compute does not depend on
    the weights), named."""
    torch.manual_seed(0)
    twin = _dense_twin(package)
    return dataclasses.replace(twin, meta={**package.meta, "name": "dense twin (untrained)"})


def _signal(seconds: float, sr: int, audio: list[str] | None = None) -> np.ndarray:
    """``audio`` files one after another (looped) for ``seconds``; without them noise with tone
    bursts. The tone is cheap to make but routes unlike speech: an untrained router sends most
    16-frame chunks of it to one expert, where trained models on speech use 3-4 of 4 per chunk,
    so MoE / dense ratios are measured on speech (``--audio``)."""
    if audio:
        pieces = [load_audio(path, sr) for path in audio]
        wav = np.concatenate(pieces)
        return np.resize(wav, int(seconds * sr)).astype(np.float32)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.2 * np.sin(2 * np.pi * 440 * t * (1 + 0.3 * np.sin(2 * np.pi * 0.5 * t)))
    return (tone * (np.sin(2 * np.pi * 2 * t) > 0) + 0.01 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def _streamer(package: ModelPackage, args: argparse.Namespace):
    """``run(round) -> (RTF per chunk, final latency s)`` for one stream of the signal."""
    cfg = dataclasses.replace(package.config.decode, mode=args.mode, beam=args.beam, lm_path="")
    rec = StreamingRecognizer(
        package, cfg, chunk_frames=args.chunk_frames, left_chunks=args.left_chunks
    )
    sr = rec.sample_rate
    wav = _signal(args.seconds, sr, args.audio)
    piece = rec.chunk_samples
    for _ in range(args.warmup):  # warm up allocator and kernels on one chunk
        rec.accept_waveform(wav[:piece])
        rec.reset()

    def run(r: int) -> tuple[list[float], float]:
        rtfs: list[float] = []
        for start in range(0, len(wav), piece):
            t0 = time.perf_counter()
            rec.accept_waveform(wav[start : start + piece])
            rtfs.append((time.perf_counter() - t0) / (piece / sr))
        final = rec.finalize()
        rec.reset()
        return rtfs[1:] or rtfs, final.latency  # the first piece only fills the context

    return run, 1000 * piece / sr


def _summary(package: ModelPackage, runs: list[tuple[list[float], float]], chunk_ms: float) -> dict:
    rows = {r.component: r for r in parameter_summary(package.model)}
    pooled = [x for rtfs, _ in runs for x in rtfs]
    p95 = float(np.percentile(pooled, 95))
    return {
        "name": package.meta.get("name", ""),
        "active": rows["total"].active,
        "total": rows["total"].total,
        "chunks": len(pooled),
        "median": statistics.median(pooled),
        "p95": p95,
        "max": max(pooled),
        "latency": quartiles([lat for _, lat in runs])[1],
        "chunk_ms": chunk_ms,
        "round_medians": [statistics.median(rtfs) for rtfs, _ in runs],
        "result": verdict(p95, GOAL_P95_RTF),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=[], help="model packages (default: built)")
    ap.add_argument("--config", default=str(_DEFAULT_CONFIG), help="config for built models")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for built models")
    ap.add_argument(
        "--dense-twin",
        action="store_true",
        help="after each package, an untrained dense model of its config (the same compute as "
        "a trained one): MoE / dense ratio on the package's trained routing",
    )
    ap.add_argument("--audio", nargs="*", default=[], help="speech to stream (default: a tone)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--chunk-frames", type=int, default=16)
    ap.add_argument("--left-chunks", type=int, default=-1)
    ap.add_argument(
        "--mode",
        default="attention_rescoring",
        choices=["ctc_greedy", "ctc_prefix_beam", "attention_rescoring"],
    )
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2, help="untimed chunks per model first")
    ap.add_argument("--rounds", type=int, default=5, help="timed interleaved streams per model")
    ap.add_argument("--strict", action="store_true", help="exit status 1 when a goal fails")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    print_header(argv)
    if args.models:
        packages = []
        for path in args.models:
            package = load_package(path)
            package.meta["name"] = str(path)
            packages.append(package)
            if args.dense_twin:
                packages.append(_twin(package))
    else:
        packages = [_built(args.config, args.set, ffn) for ffn in ("dense", "moe")]
    streamers = [_streamer(p, args) for p in packages]
    _, runs = interleaved(
        {i: run for i, (run, _) in enumerate(streamers)}, rounds=args.rounds, warmup=0
    )
    results = [_summary(p, runs[i], streamers[i][1]) for i, p in enumerate(packages)]
    print(
        f"{args.seconds:g} s of audio, chunks of {args.chunk_frames} frames "
        f"({results[0]['chunk_ms']:.0f} ms), left chunks {args.left_chunks}, {args.mode}, "
        f"{args.threads} thread(s), {args.rounds} interleaved rounds"
    )
    print(
        f"{'model':<28} {'active/total':>15} {'RTF/chunk med':>13} {'p95':>6} {'max':>6} "
        f"{'final latency':>14}  goal p95 <= {GOAL_P95_RTF:g}"
    )
    for r in results:
        params = f"{r['active'] / 1e6:.2f}M/{r['total'] / 1e6:.2f}M"
        print(
            f"{r['name'][-28:]:<28} {params:>15} {r['median']:>13.3f} {r['p95']:>6.3f} "
            f"{r['max']:>6.3f} {1000 * r['latency']:>11.1f} ms  {r['result']}"
        )
    if args.dense_twin:  # (package, its twin) in order
        pairs = [(i, i + 1) for i in range(0, len(results), 2)]
    else:  # the built (dense, MoE), or two packages
        pairs = [(1, 0)] if len(results) == 2 else []
    for moe, dense in pairs:
        a, b = results[moe]["round_medians"], results[dense]["round_medians"]
        paired = quartiles([x / y for x, y in zip(a, b, strict=True)])[1]
        print(
            f"RTF ratio {results[moe]['name']} / {results[dense]['name']}: {paired:.2f}x "
            f"(paired median of per-round medians); goal <= {GOAL_MOE_RATIO:g}: "
            f"{verdict(paired, GOAL_MOE_RATIO)}"
        )
    failed = any(r["result"] == "FAIL" for r in results)
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())
