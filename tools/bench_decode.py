"""Decoding benchmark (not a test): RTF per mode, MoE vs dense encoder cost, int8 effect.

    python tools/bench_decode.py --model exp/demo/model.pt --data data/test \
        [--dense-model exp/dense/model.pt] [--threads 2] [--max-utts 200] [--out bench.json]

1. Every decode mode through ``decode_datadir``: RTF (audio loading and features
   included) and WER against ``DATA/text``.
2. Encoder + CTC head only, batched: MoE model vs a dense model with the same active
   parameters per frame (``--dense-model``, or else the same config with ``ffn=dense``
   and ``d_ff * top_k`` at random weights: cost does not depend on the weights).
   The issue's target: RTF(MoE) / RTF(dense) <= 1.2.
3. int8: PyTorch dynamic quantization of the linear layers (greedy and the best beam
   mode: RTF and WER change) and onnxruntime fp32 vs int8 (encoder RTF).

Prints a Markdown table and writes the numbers as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from moe_asr.audio import load_audio
from moe_asr.data.datadir import load_datadir, read_table, subset_datadir, write_datadir
from moe_asr.data.features import compute_fbank
from moe_asr.decode.batch import decode_datadir
from moe_asr.decode.search import MODES, pad_features
from moe_asr.export import _EncoderCtc, _run_onnx, export_model
from moe_asr.files import atomic_write_text
from moe_asr.model import build_model, parameter_summary
from moe_asr.package import load_package


def _wer(ref_path: Path, hyp_path: Path) -> float:
    import jiwer

    refs = read_table(ref_path, allow_empty=True)
    hyps = read_table(hyp_path, allow_empty=True)
    utts = [u for u in sorted(refs) if refs[u].strip()]
    return 100.0 * jiwer.wer([refs[u] for u in utts], [hyps.get(u, "") for u in utts])


def _decode(pkg, data: Path, mode: str, beam: int, ctc_weight: float, work: Path) -> dict:
    cfg = dataclasses.replace(pkg.config.decode, mode=mode, beam=beam, ctc_weight=ctc_weight)
    out = work / f"{mode}_{id(pkg)}"
    s = decode_datadir(pkg, data, out, cfg, progress=False)
    return {"rtf": s.rtf, "wer": _wer(data / "text", out / "hyp.txt"), "errors": s.num_errors}


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


def _encoder_rtf(fn, batches, seconds: float, repeats: int = 2) -> float:
    best = float("inf")
    with torch.no_grad():
        fn(*batches[0])  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            for x, lens in batches:
                fn(x, lens)
            best = min(best, time.perf_counter() - t0)
    return best / seconds


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
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    pkg = load_package(args.model)
    results: dict = {"threads": args.threads, "model": args.model, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = Path(args.data)
        if args.max_utts:
            dd = load_datadir(data)
            data = write_datadir(subset_datadir(dd, dd.utt_ids[: args.max_utts]), work / "data")
        for mode in MODES:
            results["modes"][mode] = _decode(pkg, data, mode, args.beam, args.ctc_weight, work)
            print(f"{mode}: {results['modes'][mode]}", file=sys.stderr)

        batches, seconds = _load_feats(pkg, data, args.batch)
        dense = load_package(args.dense_model) if args.dense_model else _dense_twin(pkg)
        moe_rtf = _encoder_rtf(_EncoderCtc(pkg.model), batches, seconds)
        dense_rtf = _encoder_rtf(_EncoderCtc(dense.model), batches, seconds)
        results["encoder"] = {
            "moe_rtf": moe_rtf,
            "dense_rtf": dense_rtf,
            "ratio": moe_rtf / dense_rtf,
            "moe_active_params": _active(pkg.model),
            "dense_active_params": _active(dense.model),
            "dense_source": args.dense_model or "ffn=dense twin, random weights",
        }

        qmodel = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(pkg.model), {torch.nn.Linear}, dtype=torch.qint8
        )
        qpkg = dataclasses.replace(pkg, model=qmodel)
        int8 = {}
        for mode in ("ctc_greedy", "attention_rescoring"):
            q = _decode(qpkg, data, mode, args.beam, args.ctc_weight, work)
            f = results["modes"][mode]
            int8[mode] = {**q, "speedup": f["rtf"] / q["rtf"], "wer_change": q["wer"] - f["wer"]}
        q_rtf = _encoder_rtf(_EncoderCtc(qmodel), batches, seconds)
        int8["pytorch_encoder"] = {
            "fp32_rtf": moe_rtf,
            "int8_rtf": q_rtf,
            "speedup": moe_rtf / q_rtf,
        }
        onnx = {}
        for q in (False, True):
            path = work / f"enc{'.int8' if q else ''}.onnx"
            export_model(pkg, path, format="onnx", int8=q)
            onnx["int8_rtf" if q else "fp32_rtf"] = _encoder_rtf(
                lambda x, lens, path=path: _run_onnx(path, x, lens), batches, seconds
            )
        onnx["speedup"] = onnx["fp32_rtf"] / onnx["int8_rtf"]
        int8["onnx_encoder"] = onnx
        results["int8"] = int8

    print(f"| mode | RTF ({args.threads} threads) | WER % |\n|---|---|---|")
    for mode, r in results["modes"].items():
        print(f"| {mode} | {r['rtf']:.4f} | {r['wer']:.2f} |")
    e = results["encoder"]
    print(
        f"\nencoder RTF: MoE {e['moe_rtf']:.4f} ({e['moe_active_params']:,} active params), "
        f"dense {e['dense_rtf']:.4f} ({e['dense_active_params']:,}); ratio {e['ratio']:.2f} "
        f"(target <= 1.2)"
    )
    for mode in ("ctc_greedy", "attention_rescoring"):
        r = int8[mode]
        print(
            f"int8 {mode}: RTF {r['rtf']:.4f}, speedup {r['speedup']:.2f}x, "
            f"WER change {r['wer_change']:+.2f}"
        )
    print(
        f"int8 encoder speedup: PyTorch {int8['pytorch_encoder']['speedup']:.2f}x, "
        f"onnxruntime {int8['onnx_encoder']['speedup']:.2f}x"
    )
    if args.out:
        atomic_write_text(args.out, json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
