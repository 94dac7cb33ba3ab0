#!/usr/bin/env python3
"""Data pipeline benchmark (not a test): audio seconds per wall-clock second through
``AsrDataset`` + ``make_loader``, fbank on the fly vs precomputed (``moe-asr dump-feats``).

    .venv/bin/python tools/bench_data.py [--data DIR | --num-utts 200] [--threads 1] [--rounds 5]

Data: ``--data DIR`` (a Kaldi data dir; its tables are copied to a temporary dir, so the
dump never touches DIR), else a synthetic one (``moe_asr.synth``, ``--num-utts`` utterances
written at ``--audio-rate`` Hz: any rate but 16000 makes loading resample).

Variants: one training epoch each (``train=True``, shuffled duration buckets of
``--batch-seconds``, a char tokenizer), through the loader with ``num_workers=0``: all the
work in this process, so the number is the throughput of one loader worker (run with
``--threads 1``, as a worker does). fbank on the fly (load, resample, fbank, collate) with
no augmentation, with SpecAugment, with speed perturbation [0.9, 1.0, 1.1] + SpecAugment;
precomputed features (read the dump, collate) without and with SpecAugment. CMVN is the
model's first operation (on its device), not the loader's; the stage table times it.

Rounds are interleaved: every round runs each variant for one epoch (epoch = round, so
augmentation draws change), the order reversed on alternate rounds, so machine load hits
all alike; timing stops early (after >= 3 rounds) past ``--max-seconds``. Per variant:
median and IQR of audio seconds per second (x real time) and the ratio of the median to the
issue's goal (>= 100x real time per worker with fbank on the fly; PASS/FAIL for the on-the-fly
variants, exit status 1 on FAIL only with ``--strict``). A stage table times each step alone
over ``--stage-utts`` utterances, also interleaved: where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from moe_asr.audio import load_audio
from moe_asr.config import AugmentConfig, DataConfig, FeatureConfig, TokenizerConfig
from moe_asr.data.augment import spec_augment, speed_perturb
from moe_asr.data.datadir import load_datadir, write_datadir
from moe_asr.data.dataset import AsrDataset, Example, make_loader, make_sampler
from moe_asr.data.features import Cmvn, compute_fbank
from moe_asr.data.precomputed import FeatureCache, dump_features
from moe_asr.data.tokenizer import train_tokenizer
from moe_asr.files import atomic_open

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, also when imported
from benchlib import interleaved, print_header, quartiles, verdict  # noqa: E402

GOAL = 100.0  # x real time per loader worker, fbank on the fly
_SPEEDS = [0.9, 1.0, 1.1]


@dataclass
class _Variant:
    name: str
    description: str
    on_the_fly: bool  # the goal applies
    precomputed: bool
    speed: bool
    specaug: bool


_VARIANTS = [
    _Variant("fly", "fbank on the fly, no augmentation", True, False, False, False),
    _Variant("fly_sa", "fbank on the fly + SpecAugment", True, False, False, True),
    _Variant(
        "fly_sp_sa", "fbank on the fly + speed perturbation + SpecAugment", True, False, True, True
    ),
    _Variant("pre", "precomputed (dump), no augmentation", False, True, False, False),
    _Variant("pre_sa", "precomputed (dump) + SpecAugment", False, True, False, True),
]


def _prepare_data(args: argparse.Namespace, work: Path) -> Path:
    """A data dir under ``work`` whose dump the benchmark may write."""
    if args.data:
        return write_datadir(load_datadir(args.data), work / "data")  # tables only
    from moe_asr.synth.corpus import SynthConfig, build_corpus

    report = build_corpus(
        work / "data",
        SynthConfig(num_utts=args.num_utts, sample_rate=args.audio_rate, seed=args.seed),
        nj=1,
        progress=False,
    )
    print(
        f"synthesized {report.utts} utterances ({report.audio_seconds:.0f} s of audio at "
        f"{args.audio_rate} Hz) in {report.seconds:.1f} s"
    )
    return work / "data"


def _data_config(v: _Variant, batch_seconds: float) -> DataConfig:
    return DataConfig(
        features=FeatureConfig(precomputed=v.precomputed),
        augment=AugmentConfig(speed_perturb=list(_SPEEDS) if v.speed else [], specaug=v.specaug),
        max_batch_seconds=batch_seconds,
        max_utt_seconds=1e9,
    )


def _epoch_runner(v: _Variant, data: Path, tokenizer, args) -> Callable[[int], tuple[float, int]]:
    """``run(epoch) -> (audio seconds delivered, utterances)`` for one epoch of ``v``."""
    ds = AsrDataset(data, tokenizer, None, _data_config(v, args.batch_seconds), train=True)
    sampler = make_sampler(ds, shuffle=True, seed=args.seed)
    loader = make_loader(ds, sampler, num_workers=0)

    def run(epoch: int) -> tuple[float, int]:
        sampler.set_epoch(epoch)
        seconds, utts = 0.0, 0
        for batch in loader:
            seconds += sum(ds.audio_durations[u] for u in batch.utt_ids)
            utts += len(batch)
        return seconds, utts

    return run


def _time_variants(data: Path, tokenizer, args) -> dict[str, list[float]]:
    """x real time per timed round of each variant (one epoch per round, epoch = round)."""
    runners = {v.name: _epoch_runner(v, data, tokenizer, args) for v in _VARIANTS}
    times, results = interleaved(
        runners, rounds=args.rounds, warmup=args.warmup, max_seconds=args.max_seconds
    )
    speeds: dict[str, list[float]] = {}
    for name, outs in results.items():
        if any(utts == 0 for _, utts in outs):
            raise RuntimeError(f"{name}: the loader delivered no utterance")
        speeds[name] = [audio / t for (audio, _), t in zip(outs, times[name], strict=True)]
    return speeds


def _time_stages(data: Path, args) -> tuple[dict[str, list[float]], float]:
    """x real time of each step alone over the first ``--stage-utts`` utterances."""
    fcfg = FeatureConfig()
    ds = AsrDataset(data, None, None, DataConfig(augment=AugmentConfig(specaug=False)), False)
    utts = ds.utt_ids[: args.stage_utts]
    audio = sum(ds.audio_durations[u] for u in utts)
    where = {u: ds.dd.audio_of(u) for u in utts}
    wavs = {
        u: torch.from_numpy(load_audio(p, fcfg.sample_rate, s, e)) for u, (p, s, e) in where.items()
    }
    feats = {u: compute_fbank(w, fcfg) for u, w in wavs.items()}
    cache = FeatureCache(data, FeatureConfig(precomputed=True), utts)
    dim = fcfg.num_mel_bins
    cmvn = Cmvn.from_sums(np.zeros(dim), np.full(dim, float(len(utts))), len(utts))
    acfg = AugmentConfig()
    collate = ds.collator()
    examples = [Example(u, feats[u], torch.zeros(20, dtype=torch.long), {}) for u in utts]
    batches = [examples[i : i + 16] for i in range(0, len(examples), 16)]
    sr = fcfg.sample_rate

    def load() -> None:
        for path, start, end in where.values():
            load_audio(path, sr, start, end)

    def speed() -> None:
        for w in wavs.values():
            speed_perturb(w, sr, 1.1)

    def fbank() -> None:
        for w in wavs.values():
            compute_fbank(w, fcfg)

    def specaug() -> None:
        for i, f in enumerate(feats.values()):
            spec_augment(f, acfg, np.random.default_rng(i))

    def normalise() -> None:
        for f in feats.values():
            cmvn.apply(f)

    def read_dump() -> None:
        for u in utts:
            cache.load(u)

    def collate_all() -> None:
        for b in batches:
            collate(b)

    stages: dict[str, Callable[[], None]] = {
        "load + resample": load,
        "speed perturbation (x1.1)": speed,
        "fbank": fbank,
        "SpecAugment": specaug,
        "CMVN (the model does it)": normalise,
        "read the dump": read_dump,
        "collate (16 per batch)": collate_all,
    }
    times, _ = interleaved(
        {k: (lambda r, fn=fn: fn()) for k, fn in stages.items()},
        rounds=args.stage_rounds,
        warmup=1,
    )
    return {k: [audio / t for t in ts] for k, ts in times.items()}, audio


def _report(speeds: dict[str, list[float]]) -> list[dict]:
    print()
    print("| variant | x real time, median [IQR] | ratio to the goal (100x) | result | what |")
    print("|---|---:|---:|---|---|")
    rows = []
    for v in _VARIANTS:
        q1, med, q3 = quartiles(speeds[v.name])
        result = verdict(med, GOAL if v.on_the_fly else None, at_most=False)
        rows.append(
            {
                "variant": v.name,
                "description": v.description,
                "median_x_real_time": med,
                "q1": q1,
                "q3": q3,
                "ratio_to_goal": med / GOAL,
                "result": result,
                "rounds": speeds[v.name],
            }
        )
        print(
            f"| {v.name} | {med:.0f}x [{q1:.0f}-{q3:.0f}] | {med / GOAL:.2f} | {result} | "
            f"{v.description} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="a Kaldi data dir (default: synthesize one)")
    ap.add_argument("--num-utts", type=int, default=200, help="synthetic utterances")
    ap.add_argument("--audio-rate", type=int, default=16000, help="synthetic audio rate (Hz)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a worker has 1)")
    ap.add_argument("--rounds", type=int, default=5, help="timed interleaved epochs per variant")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--batch-seconds", type=float, default=80.0, help="data.max_batch_seconds")
    ap.add_argument("--stage-utts", type=int, default=50, help="utterances of the stage table")
    ap.add_argument("--stage-rounds", type=int, default=5, help="timed rounds of the stages")
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=300.0,
        help="stop timing after this many seconds (>= 3 rounds; 0 = all rounds)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the numbers as JSON here")
    ap.add_argument("--strict", action="store_true", help="exit status 1 when the goal fails")
    args = ap.parse_args(argv)
    if min(args.threads, args.rounds, args.num_utts, args.stage_utts, args.stage_rounds) < 1:
        ap.error("--threads, --rounds, --num-utts, --stage-utts, --stage-rounds must be >= 1")
    torch.set_num_threads(args.threads)
    command, machine = print_header(argv, "torchaudio", "numpy")

    with tempfile.TemporaryDirectory(prefix="bench_data.") as tmp:
        data = _prepare_data(args, Path(tmp))
        dd = load_datadir(data)
        tokenizer = train_tokenizer(list(dd.text.values()), TokenizerConfig(type="char"))
        dump = dump_features(data, FeatureConfig())
        audio = sum(
            AsrDataset(
                data, None, None, DataConfig(max_utt_seconds=1e9), False
            ).audio_durations.values()
        )
        print(
            f"data: {len(dd.utt_ids)} utterances, {audio:.0f} s of audio; dump-feats: "
            f"{dump.shards} shard(s), {dump.bytes / 2**20:.1f} MiB, {dump.seconds:.1f} s "
            f"({audio / max(dump.seconds, 1e-9):.0f}x real time, 1 process)"
        )
        print(
            f"loader: num_workers=0 (one worker's work), train=True, batches <= "
            f"{args.batch_seconds:g} s, warmup {args.warmup}, {args.rounds} interleaved rounds"
        )
        started = time.perf_counter()
        speeds = _time_variants(data, tokenizer, args)
        rows = _report(speeds)
        stages, stage_audio = _time_stages(data, args)
        wall = time.perf_counter() - started
    print()
    n = min(args.stage_utts, len(dd.utt_ids))
    print(
        f"stages alone over {n} utterances ({stage_audio:.0f} s of audio), "
        f"{args.stage_rounds} interleaved rounds:"
    )
    print("| stage | x real time, median [IQR] |")
    print("|---|---:|")
    stage_rows = {}
    for name, xs in stages.items():
        q1, med, q3 = quartiles(xs)
        stage_rows[name] = {"median_x_real_time": med, "q1": q1, "q3": q3}
        print(f"| {name} | {med:.0f}x [{q1:.0f}-{q3:.0f}] |")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\ntimed in {wall:.0f} s; load average at the end {load}")
    if args.out:
        with atomic_open(args.out, "w") as f:
            json.dump(
                {
                    "command": command,
                    "machine": machine,
                    "args": vars(args),
                    "goal_x_real_time": GOAL,
                    "variants": rows,
                    "stages": stage_rows,
                },
                f,
                indent=1,
            )
        print(f"wrote {args.out}")
    failed = any(r["result"] == "FAIL" for r in rows)
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())
