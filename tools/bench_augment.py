#!/usr/bin/env python3
"""Training-step benchmark (not a test): the cost of noise + reverberation augmentation.

    .venv/bin/python tools/bench_augment.py [--threads 2] [--repeats 12] [--out bench.json]

A step is what the training loop does with ``data.num_workers: 0`` (the worst case: the
augmentation runs on the critical path, not in a worker): load ``--utts`` utterances of
``--seconds`` s through ``AsrDataset`` (audio read, augmentation, fbank, SpecAugment as the
config says), collate, forward + backward of the model of ``--config`` (default: the
synthetic recipe's conf/demo.yaml) with random token targets, gradient clipping and AdamW.

Two variants, the same model init and batch: ``plain`` (the config's ``data.augment`` with
noise and reverberation off) and ``augmented`` (the same plus ``--set`` overrides, by
default the worst case: noise on every utterance, drawn from white, pink, brown and babble
at -5..20 dB, and a simulated room on every utterance). The audio is generated here
(harmonic tone bursts, speech-like activity), written as a Kaldi data dir in a temp dir.

Rounds are interleaved (each round times both variants, the order reversed on alternate
rounds; every round is a new epoch, so new draws). Per variant: median and IQR of the step
and of its data part (ms). Ratio: per-round paired augmented / plain (median [IQR]), checked
against the 1.05 target (exit status 1 on FAIL only with ``--strict``).

``--clean-target W`` adds a third variant, ``clean_target``: the augmented one with
``model.clean_target.weight=W`` (the second fbank of each corrupted utterance and the
reconstruction head), reported as its own paired ratio to ``augmented`` (no target).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from moe_asr.config import apply_overrides, load_config
from moe_asr.data.datadir import DataDir, write_datadir
from moe_asr.data.dataset import AsrDataset, build_label_vocab
from moe_asr.files import atomic_open
from moe_asr.model import build_model, guidance_labels
from moe_asr.train.schedule import build_optimizer

_VOCAB = 32
_TARGET = 1.05
_CONF = Path(__file__).resolve().parents[1] / "egs" / "synth_accents" / "asr1" / "conf"
_WORST_CASE = [
    "data.augment.noise_prob=1.0",
    "data.augment.noise_types=[white,pink,brown,babble]",
    "data.augment.snr_range=[-5,20]",
    "data.augment.reverb_prob=1.0",
]


def _write_audio(
    root: Path, utts: int, seconds: float, sr: int, seed: int, labels: list[str]
) -> Path:
    """A data dir of ``utts`` speech-like signals: tone bursts on a random f0 with pauses;
    ``utt2<label>`` files (4 values) for the guidance labels of the config."""
    rng = np.random.default_rng(seed)
    dd = DataDir(utt2dur={}, groups={name: {} for name in labels})
    t = np.arange(int(seconds * sr)) / sr
    for i in range(utts):
        f0 = rng.uniform(90, 250)
        wav = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 8))
        wav *= (np.sin(2 * np.pi * rng.uniform(2, 5) * t) > -0.3) * rng.uniform(0.1, 0.4)
        wav += 0.002 * rng.standard_normal(t.size)
        utt = f"spk{i % 4}-u{i:04d}"
        path = root / "wav" / f"{utt}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (wav / max(1.0, np.abs(wav).max())).astype(np.float32), sr)
        dd.wav_scp[utt], dd.text[utt], dd.utt2spk[utt] = str(path), "x", f"spk{i % 4}"
        dd.utt2dur[utt] = seconds
        for table in dd.groups.values():
            table[utt] = f"v{i % 4}"
    return write_datadir(dd, root / "data")


def _tokens(b: int, seconds: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = max(1, int(seconds * 6))  # ~6 tokens/s, well within CTC's frames after subsampling
    return torch.randint(2, _VOCAB - 1, (b, n), generator=g), torch.full((b,), n)


class _Variant:
    """One timed training step over the same utterances with its own dataset and model."""

    def __init__(self, name: str, cfg, datadir: Path, seed: int) -> None:
        self.name = name
        guide = guidance_labels(cfg.model)
        vocab = build_label_vocab(datadir, guide, cfg.data.augment) if guide else None
        clean = cfg.model.clean_target.enabled
        self.dataset = AsrDataset(
            datadir, None, vocab, cfg.data, train=True, seed=seed, clean_targets=clean
        )
        torch.manual_seed(seed)
        self.model = build_model(cfg.model, _VOCAB, vocab)
        self.model.train()
        self.optimizer = build_optimizer(self.model, cfg.train)
        self.grad_clip = cfg.train.grad_clip
        self.collate = self.dataset.collator()
        self.tokens = _tokens(len(self.dataset), max(self.dataset.audio_durations.values()), seed)
        self.steps: list[float] = []
        self.data: list[float] = []

    def step(self, epoch: int) -> None:
        start = time.perf_counter()
        self.dataset.set_epoch(epoch)
        batch = self.collate([self.dataset[u] for u in self.dataset.utt_ids])
        loaded = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(
            batch.feats, batch.feat_lens, *self.tokens, batch.labels, clean_feats=batch.clean_feats
        )
        out.loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        assert torch.isfinite(out.loss), f"{self.name}: loss {float(out.loss)}"
        end = time.perf_counter()
        self.steps.append(end - start)
        self.data.append(loaded - start)


def _paired(base: list[float], other: list[float]) -> tuple[float, float, float]:
    """Median, first and third quartile of the per-round ratios other / base."""
    ratios = [b / a for a, b in zip(base, other)]
    med = statistics.median(ratios)
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [med] * 3
    return med, q[0], q[2]


def _stats(xs: list[float]) -> dict[str, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"median_ms": 1000 * statistics.median(xs), "iqr_ms": 1000 * (q[2] - q[0])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(_CONF / "demo.yaml"), help="training config YAML")
    ap.add_argument("--set", action="append", default=[], help="override for both variants")
    ap.add_argument(
        "--augment",
        action="append",
        default=None,
        help="override of the augmented variant only (repeatable; default: the worst case "
        + " ".join(_WORST_CASE)
        + ")",
    )
    ap.add_argument(
        "--clean-target",
        type=float,
        default=0.0,
        metavar="W",
        help="also time the augmented variant with model.clean_target.weight=W (0: not)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--repeats", type=int, default=12, help="timed rounds")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    ap.add_argument("--utts", type=int, default=16, help="utterances per batch")
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds per utterance")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the numbers as JSON here")
    ap.add_argument("--strict", action="store_true", help="exit status 1 when the target fails")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0 or args.utts < 1:
        ap.error("--threads, --repeats and --utts must be >= 1, --warmup >= 0")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    base = load_config(args.config, args.set)
    off = ["data.augment.noise_prob=0.0", "data.augment.reverb_prob=0.0", "data.num_workers=0"]
    plain = apply_overrides(base, off)
    augmented = apply_overrides(base, ["data.num_workers=0", *(args.augment or _WORST_CASE)])
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"command: {command}")
    print(
        f"machine: torch {torch.__version__}, python {platform.python_version()}, threads "
        f"{torch.get_num_threads()}, cpu_count {os.cpu_count()}, {platform.machine()} "
        f"{platform.processor() or ''}".rstrip()
        + f", load average {load}"
    )
    a = augmented.data.augment
    print(
        f"batch {args.utts} x {args.seconds:g} s, model of {args.config}; augmented: noise_prob "
        f"{a.noise_prob:g} {a.noise_types + a.noise_files} snr "
        f"{a.snr_range or a.noise_snrs}, reverb_prob {a.reverb_prob:g}; warmup {args.warmup}, "
        f"{args.repeats} interleaved rounds"
    )
    sys.stdout.flush()
    with tempfile.TemporaryDirectory() as tmp:
        sr = base.data.features.sample_rate
        labels = guidance_labels(base.model)
        datadir = _write_audio(Path(tmp), args.utts, args.seconds, sr, args.seed, labels)
        variants = [
            _Variant("plain", plain, datadir, args.seed),
            _Variant("augmented", augmented, datadir, args.seed),
        ]
        if args.clean_target > 0:
            target = apply_overrides(augmented, [f"model.clean_target.weight={args.clean_target}"])
            variants.append(_Variant("clean_target", target, datadir, args.seed))
        started = time.perf_counter()
        for r in range(args.warmup + args.repeats):
            for v in variants if r % 2 == 0 else variants[::-1]:
                v.step(epoch=r)
        wall = time.perf_counter() - started
    for v in variants:  # the warm-up rounds are not counted
        v.steps, v.data = v.steps[args.warmup :], v.data[args.warmup :]
    summary = {v.name: {"step": _stats(v.steps), "data": _stats(v.data)} for v in variants}
    for name, s in summary.items():
        print(
            f"{name:<12} step {s['step']['median_ms']:8.1f} ms (IQR {s['step']['iqr_ms']:.1f}); "
            f"data part {s['data']['median_ms']:7.1f} ms (IQR {s['data']['iqr_ms']:.1f})"
        )
    med, q1, q3 = _paired(variants[0].steps, variants[1].steps)
    result = "PASS" if med <= _TARGET else "FAIL"
    print(
        f"augmented / plain step: {med:.3f}x [IQR {q1:.3f}-{q3:.3f}] (paired, per round); "
        f"target <= {_TARGET:.2f}x: {result}"
    )
    extra = {}
    if len(variants) > 2:
        c_med, c1, c3 = _paired(variants[1].steps, variants[2].steps)
        extra["clean_target_ratio_median"] = c_med
        print(
            f"clean_target / augmented step: {c_med:.3f}x [IQR {c1:.3f}-{c3:.3f}] "
            "(paired, per round)"
        )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"timed in {wall:.0f} s; load average at the end {load}")
    if args.out:
        with atomic_open(args.out, "w") as f:
            json.dump(
                {
                    "command": command,
                    "summary": summary,
                    "ratio_median": med,
                    "result": result,
                    **extra,
                },
                f,
                indent=1,
            )
    return 1 if args.strict and result == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
