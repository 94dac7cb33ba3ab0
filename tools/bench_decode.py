"""Decoding benchmark (not a test): RTF per mode, MoE vs dense encoder cost, int8 effect.

    python tools/bench_decode.py --model exp/demo/model.pt --data data/test \
        [--dense-model exp/dense/model.pt] [--threads 2] [--max-utts 200] [--out bench.json]

1. Every decode mode through ``decode_datadir``: RTF (audio loading and features
   included) and WER against ``DATA/text``.
2. Encoder + CTC head only, batched: MoE model vs a dense model with the same active
   parameters per frame (``--dense-model``, or else the same config with ``ffn=dense``
   and ``d_ff * top_k`` at random weights: cost does not depend on the weights).
   The performance issue's target: RTF(MoE) / RTF(dense) <= 1.10.
3. int8: PyTorch dynamic quantization of the linear layers (greedy and the best beam
   mode: RTF and WER change) and onnxruntime fp32 vs int8 (encoder RTF).

Timing (``tools/benchlib.py``): ``--rounds`` interleaved rounds (each decode or encoder pass
once per round, the order reversed on alternate rounds) after one untimed warm-up round for the
encoder passes; medians and IQR. ONNX models are loaded once (``load_onnx_package``) and timed
per call, as decode runs them. Prints the command and the machine (torch, onnxruntime,
threads), Markdown tables, the ratio to the goal (PASS/FAIL, exit 1 on FAIL only with
``--strict``), and writes the numbers as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from moe_asr.audio import load_audio
from moe_asr.data.datadir import load_datadir, read_table, subset_datadir, write_datadir
from moe_asr.data.features import compute_fbank
from moe_asr.decode.batch import decode_datadir
from moe_asr.decode.onnx import load_onnx_package
from moe_asr.decode.search import MODES, pad_features
from moe_asr.export import export_model
from moe_asr.files import atomic_write_text
from moe_asr.model import build_model, parameter_summary
from moe_asr.package import load_package

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchlib, also when imported
from benchlib import interleaved, print_header, quartiles, verdict  # noqa: E402

GOAL_ENCODER_RATIO = 1.10  # RTF(MoE) / RTF(dense), encoder + CTC head


def _wer(ref_path: Path, hyp_path: Path) -> float:
    import jiwer

    refs = read_table(ref_path, allow_empty=True)
    hyps = read_table(hyp_path, allow_empty=True)
    utts = [u for u in sorted(refs) if refs[u].strip()]
    return 100.0 * jiwer.wer([refs[u] for u in utts], [hyps.get(u, "") for u in utts])


def _decode(pkg, data: Path, mode: str, args, out: Path) -> dict:
    cfg = dataclasses.replace(
        pkg.config.decode, mode=mode, beam=args.beam, ctc_weight=args.ctc_weight
    )
    s = decode_datadir(pkg, data, out, cfg, progress=False)
    return {"rtf": s.rtf, "wer": _wer(data / "text", out / "hyp.txt"), "errors": s.num_errors}


def _decode_rounds(pkgs: dict, data: Path, args, work: Path) -> dict[str, dict]:
    """Per case "<tag>:<mode>": median/IQR RTF over interleaved rounds, WER, errors."""
    cases = {}
    for tag, (pkg, modes) in pkgs.items():
        for mode in modes:

            def run(r: int, pkg=pkg, mode=mode, name=f"{tag}:{mode}") -> dict:
                return _decode(pkg, data, mode, args, work / f"{name.replace(':', '_')}_{r}")

            cases[f"{tag}:{mode}"] = run
    _, results = interleaved(cases, rounds=args.rounds)
    out = {}
    for name, runs in results.items():
        q1, med, q3 = quartiles([x["rtf"] for x in runs])
        out[name] = {"rtf": med, "rtf_q1": q1, "rtf_q3": q3, "wer": runs[0]["wer"]}
        out[name]["errors"] = runs[0]["errors"]
    return out


def _load_feats(
    pkg, data: Path, batch: int
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], float]:
    dd = load_datadir(data)
    fcfg = pkg.config.data.features
    feats, seconds = [], 0.0
    for utt in dd.utt_ids:
        entry, s, e = dd.audio_of(utt)
        wav = load_audio(entry, fcfg.sample_rate, s, e)
        seconds += len(wav) / fcfg.sample_rate
        feats.append(compute_fbank(wav, fcfg))
    feats.sort(key=len)
    return [pad_features(feats[i : i + batch]) for i in range(0, len(feats), batch)], seconds


def _encoder_pass(model, batches):
    """One pass of encoder + CTC head over every batch (an AsrModel or an ONNX model)."""

    def run(r: int) -> None:
        with torch.no_grad():
            for x, lens in batches:
                model.ctc_log_probs(model.encode(x, lens))

    return run


def _int8_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with dynamic int8 linear layers (the PyTorch int8 rows)."""
    return torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8
    )


def _encoder_rounds(models: dict, batches, seconds: float, args) -> dict[str, dict]:
    """Per model: RTF of encoder + CTC head, median and IQR of interleaved rounds, and the
    per-round RTFs (for paired ratios)."""
    cases = {name: _encoder_pass(m, batches) for name, m in models.items()}
    times, _ = interleaved(cases, rounds=args.rounds, warmup=1)
    out = {}
    for name, ts in times.items():
        rtfs = [t / seconds for t in ts]
        q1, med, q3 = quartiles(rtfs)
        out[name] = {"rtf": med, "rtf_q1": q1, "rtf_q3": q3, "rounds": rtfs}
    return out


def _paired(a: dict, b: dict) -> float:
    """Median of per-round ratios a / b."""
    return quartiles([x / y for x, y in zip(a["rounds"], b["rounds"], strict=True)])[1]


def _dense_twin(pkg):
    cfg = copy.deepcopy(pkg.config.model)
    moe = cfg.moe
    cfg.d_ff = cfg.d_ff * moe.top_k + cfg.d_ff * moe.num_shared_experts
    cfg.ffn = "dense"
    cfg.moe.guidance.labels = []
    model = build_model(cfg, pkg.tokenizer.vocab_size, None).eval()
    return dataclasses.replace(pkg, model=model, label_vocab=None)


def _active(model) -> int:
    return next(r.active for r in parameter_summary(model) if r.component == "total")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--dense-model", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--ctc-weight", type=float, default=0.3)
    p.add_argument("--max-utts", type=int, default=0, help="first N utterances (0 = all)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3, help="timed interleaved rounds")
    p.add_argument("--out", default=None)
    p.add_argument("--strict", action="store_true", help="exit status 1 when the goal fails")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    command, machine = print_header(argv, "onnxruntime")
    pkg = load_package(args.model)
    results: dict = {"command": command, "machine": machine, "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = Path(args.data)
        if args.max_utts:
            dd = load_datadir(data)
            data = write_datadir(subset_datadir(dd, dd.utt_ids[: args.max_utts]), work / "data")
        qmodel = _int8_copy(pkg.model)
        qpkg = dataclasses.replace(pkg, model=qmodel)
        int8_modes = ("ctc_greedy", "attention_rescoring")
        decodes = _decode_rounds(
            {"fp32": (pkg, MODES), "int8": (qpkg, int8_modes)}, data, args, work
        )
        results["modes"] = {m: decodes[f"fp32:{m}"] for m in MODES}

        batches, seconds = _load_feats(pkg, data, args.batch)
        dense = load_package(args.dense_model) if args.dense_model else _dense_twin(pkg)
        onnx = {}
        for q in (False, True):
            path = work / f"enc{'.int8' if q else ''}.onnx"
            export_model(pkg, path, format="onnx", int8=q)
            onnx["onnx_int8" if q else "onnx_fp32"] = load_onnx_package(path).model
        enc = _encoder_rounds(
            {"moe": pkg.model, "dense": dense.model, "int8": qmodel, **onnx}, batches, seconds, args
        )
    ratio = _paired(enc["moe"], enc["dense"])
    results["encoder"] = {
        **{k: {kk: vv for kk, vv in v.items() if kk != "rounds"} for k, v in enc.items()},
        "moe_over_dense_paired": ratio,
        "goal": GOAL_ENCODER_RATIO,
        "result": verdict(ratio, GOAL_ENCODER_RATIO),
        "moe_active_params": _active(pkg.model),
        "dense_active_params": _active(dense.model),
        "dense_source": args.dense_model or "ffn=dense twin, random weights",
    }
    int8 = {}
    for mode in int8_modes:
        q, f = decodes[f"int8:{mode}"], decodes[f"fp32:{mode}"]
        int8[mode] = {**q, "speedup": f["rtf"] / q["rtf"], "wer_change": q["wer"] - f["wer"]}
    int8["pytorch_encoder_speedup"] = _paired(enc["moe"], enc["int8"])
    int8["onnx_encoder_speedup"] = _paired(enc["onnx_fp32"], enc["onnx_int8"])
    results["int8"] = int8

    print(f"\ndecode: {args.rounds} interleaved rounds, medians (RTF includes audio and fbank)")
    print("| mode | RTF [IQR] | WER % |\n|---|---|---|")
    for mode, r in results["modes"].items():
        print(f"| {mode} | {r['rtf']:.4f} [{r['rtf_q1']:.4f}-{r['rtf_q3']:.4f}] | {r['wer']:.2f} |")
    print(f"\nencoder + CTC head, {len(batches)} batches of <= {args.batch}, {args.rounds} rounds:")
    print("| model | RTF [IQR] |\n|---|---|")
    for name, r in enc.items():
        print(f"| {name} | {r['rtf']:.4f} [{r['rtf_q1']:.4f}-{r['rtf_q3']:.4f}] |")
    e = results["encoder"]
    print(
        f"\nMoE / dense encoder RTF (paired median): {ratio:.2f} (MoE "
        f"{e['moe_active_params']:,} active params, dense {e['dense_active_params']:,}); goal "
        f"<= {GOAL_ENCODER_RATIO:.2f}: {e['result']}"
    )
    for mode in int8_modes:
        r = int8[mode]
        print(
            f"int8 {mode}: RTF {r['rtf']:.4f}, speedup {r['speedup']:.2f}x, "
            f"WER change {r['wer_change']:+.2f}"
        )
    print(
        f"int8 encoder speedup (paired median): PyTorch {int8['pytorch_encoder_speedup']:.2f}x, "
        f"onnxruntime {int8['onnx_encoder_speedup']:.2f}x"
    )
    if args.out:
        atomic_write_text(args.out, json.dumps(results, indent=1) + "\n")
    return 1 if args.strict and e["result"] == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
