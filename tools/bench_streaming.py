#!/usr/bin/env python3
"""Benchmark streaming recognition: per-chunk real-time factor and final latency.

Each model streams the same signal through ``moe_asr.decode.streaming.StreamingRecognizer``
in chunk-sized pieces (as a live microphone would deliver them). Per chunk: compute time
/ chunk duration (RTF per chunk; < 1 keeps up with real time), as median, p95 and max;
then the time from the end of audio to the final result (``finalize``: last chunk, end of
the search, attention rescoring). Models: packages (``--models EXP/model.pt ...``), or by
default a dense and an MoE model built from ``--config`` with untrained weights (the
compute is the same; the text is meaningless).

    .venv/bin/python tools/bench_streaming.py --threads 2 --seconds 20 --chunk-frames 16
    .venv/bin/python tools/bench_streaming.py --models exp/moe_streaming/model.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from moe_asr.config import load_config
from moe_asr.data.tokenizer import TokenizerConfig, train_tokenizer
from moe_asr.decode.streaming import StreamingRecognizer
from moe_asr.model import build_model, parameter_summary
from moe_asr.package import ModelPackage, load_package

_DEFAULT_CONFIG = Path(__file__).parent.parent / "egs/synth_accents/asr1/conf/moe_streaming.yaml"


def _built(config: str, overrides: list[str], ffn: str) -> ModelPackage:
    cfg = load_config(config, [*overrides, f"model.ffn={ffn}", "model.streaming.enabled=true"])
    tok = train_tokenizer(["the quick brown fox jumps over the lazy dog"], TokenizerConfig())
    torch.manual_seed(0)
    model = build_model(cfg.model, tok.vocab_size, None).eval()
    return ModelPackage(model, cfg, tok, None, {"name": f"{ffn} (untrained)"})


def _signal(seconds: float, sr: int) -> np.ndarray:
    """Noise with tone bursts: enough energy variation to exercise every expert."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.2 * np.sin(2 * np.pi * 440 * t * (1 + 0.3 * np.sin(2 * np.pi * 0.5 * t)))
    return (tone * (np.sin(2 * np.pi * 2 * t) > 0) + 0.01 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def _bench(package: ModelPackage, args: argparse.Namespace) -> dict:
    cfg = dataclasses.replace(package.config.decode, mode=args.mode, beam=args.beam, lm_path="")
    rec = StreamingRecognizer(
        package, cfg, chunk_frames=args.chunk_frames, left_chunks=args.left_chunks
    )
    sr = rec.sample_rate
    wav = _signal(args.seconds, sr)
    piece = rec.chunk_samples
    chunk_s = piece / sr
    rtfs: list[float] = []
    for _ in range(args.warmup):  # warm up allocator and kernels on one chunk
        rec.accept_waveform(wav[:piece])
        rec.reset()
    for start in range(0, len(wav), piece):
        t0 = time.perf_counter()
        rec.accept_waveform(wav[start : start + piece])
        rtfs.append((time.perf_counter() - t0) / chunk_s)
    final = rec.finalize()
    rtfs = rtfs[1:] or rtfs  # the first piece only fills the front end's context
    rows = {r.component: r for r in parameter_summary(package.model)}
    return {
        "name": package.meta.get("name", ""),
        "active": rows["total"].active,
        "total": rows["total"].total,
        "chunks": len(rtfs),
        "median": statistics.median(rtfs),
        "p95": float(np.percentile(rtfs, 95)),
        "max": max(rtfs),
        "latency": final.latency,
        "chunk_ms": 1000 * chunk_s,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=[], help="model packages (default: built)")
    ap.add_argument("--config", default=str(_DEFAULT_CONFIG), help="config for built models")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for built models")
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
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if args.models:
        packages = []
        for path in args.models:
            package = load_package(path)
            package.meta["name"] = str(path)
            packages.append(package)
    else:
        packages = [_built(args.config, args.set, ffn) for ffn in ("dense", "moe")]
    results = [_bench(p, args) for p in packages]
    print(
        f"{args.seconds:g} s of audio, chunks of {args.chunk_frames} frames "
        f"({results[0]['chunk_ms']:.0f} ms), left chunks {args.left_chunks}, {args.mode}, "
        f"{args.threads} thread(s)"
    )
    print(
        f"{'model':<28} {'active/total':>15} {'RTF/chunk med':>13} {'p95':>6} {'max':>6} "
        f"{'final latency':>14}"
    )
    for r in results:
        params = f"{r['active'] / 1e6:.2f}M/{r['total'] / 1e6:.2f}M"
        print(
            f"{r['name'][-28:]:<28} {params:>15} {r['median']:>13.3f} {r['p95']:>6.3f} "
            f"{r['max']:>6.3f} {1000 * r['latency']:>11.1f} ms"
        )
    if len(results) == 2:
        print(
            f"RTF ratio {results[1]['name']} / {results[0]['name']}: "
            f"{results[1]['median'] / results[0]['median']:.2f}x (median)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
