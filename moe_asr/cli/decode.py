"""Recognition subcommands: decode, transcribe, export."""

from __future__ import annotations

import argparse
import sys


def _decode_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by `decode` and `transcribe` (defaults: the package's decode config)."""
    p.add_argument(
        "--mode",
        default=None,
        choices=["ctc_greedy", "ctc_prefix_beam", "attention", "attention_rescoring"],
        help="default: the model's decode.mode (ctc_greedy unless its config sets one; an ONNX "
        "export: ctc_prefix_beam when the config names an attention mode)",
    )
    p.add_argument("--beam", type=int, default=None, help="default: the model's decode.beam (10)")
    p.add_argument(
        "--nbest",
        type=int,
        default=None,
        help="hypotheses kept per utterance (nbest.txt, transcribe's alternatives); default: "
        "the model's decode.nbest (5)",
    )
    p.add_argument(
        "--ctc-weight", type=float, default=None, help="attention and rescoring modes, in [0, 1]"
    )
    p.add_argument(
        "--lm",
        default=None,
        help="n-gram LM for the CTC beam modes: a word ARPA from `moe-asr train-lm` (restricts "
        "output to its words), or with --lm-unit token a KenLM model over decoder tokens",
    )
    p.add_argument("--lm-unit", default=None, choices=["word", "token"], help="default: word")
    p.add_argument(
        "--lm-weight", type=float, default=None, help="default: the model's decode.lm_weight (0.5)"
    )
    p.add_argument(
        "--word-score", type=float, default=None, help="default: the model's decode.word_score (0)"
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="default: the model's decode.batch_size (16)"
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda or cuda:N: where the model runs (the beam search runs on the CPU)",
    )
    p.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help="route as if the label had this value, e.g. --force accent=fr --force noise=white "
        "(any label the model was guided by; repeatable)",
    )
    p.add_argument("--accent", default=None, help="alias of --force accent=ACCENT")
    p.add_argument(
        "--mask-experts",
        action="append",
        default=[],
        metavar="LAYER:E[,E...]",
        help="switch experts off in an MoE layer (0-based), e.g. --mask-experts 3:0,1 (repeatable)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    _streaming_arguments(p)


def _streaming_arguments(p: argparse.ArgumentParser) -> None:
    """Chunk options of streaming models (model.streaming.enabled)."""
    p.add_argument(
        "--chunk-frames",
        type=int,
        default=None,
        help="streaming models: encoder frames per chunk (decode: the chunk mask, the offline "
        "simulation of streaming; transcribe --streaming: default 16); 0 = full context",
    )
    p.add_argument(
        "--left-chunks",
        type=int,
        default=None,
        help="chunks of history each frame sees with --chunk-frames (default -1: all)",
    )


def _decode_setup(args: argparse.Namespace):
    """(package, DecodeConfig, RoutingOptions | None) from the shared decode options;
    ``args.model`` is a ``model.pt`` package or an exported ``.onnx``."""
    import dataclasses

    import torch

    from moe_asr.decode.onnx import decode_config_for, load_model

    torch.set_flush_denormal(True)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    package = load_model(args.model, args.device)
    cfg = package.config.decode
    given = {
        "mode": args.mode,
        "beam": args.beam,
        "nbest": args.nbest,
        "ctc_weight": args.ctc_weight,
        "lm_path": args.lm,
        "lm_unit": args.lm_unit,
        "lm_weight": args.lm_weight,
        "word_score": args.word_score,
        "batch_size": args.batch_size,
        "chunk_frames": args.chunk_frames,
        "left_chunks": args.left_chunks,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in given.items() if v is not None})
    cfg = decode_config_for(package, cfg, mode_given=args.mode is not None)
    from moe_asr.decode.search import inference_routing
    from moe_asr.nn.routing import parse_expert_mask, parse_forced

    forced, mask = parse_forced(args.force), parse_expert_mask(args.mask_experts)
    return package, cfg, inference_routing(package, forced, mask, accent=args.accent)


def _add_decode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "decode",
        help="decode a data dir: OUT/hyp.txt, nbest.txt, errors.txt, decode.json (with RTF)",
        description="Decode every utterance of a Kaldi data dir. An utterance that fails is "
        "listed in OUT/errors.txt and the others are decoded; exit 1 only if none could be.",
    )
    p.add_argument(
        "--model", required=True, help="EXP/model.pt, or an export: model.onnx (CTC modes)"
    )
    p.add_argument("--data", required=True, help="Kaldi data dir")
    p.add_argument("--out", required=True, help="output dir")
    _decode_arguments(p)
    p.add_argument(
        "--force-from-data",
        action="append",
        default=[],
        metavar="LABEL",
        help="route each utterance as if LABEL had its value in DATA/utt2LABEL (the "
        "known-label case, e.g. --force-from-data accent; repeatable)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier decode in OUT (other files are kept)",
    )
    p.set_defaults(func=_run_decode)


def _run_decode(args: argparse.Namespace) -> int:
    from moe_asr.decode.batch import DECODE_FILES, decode_datadir
    from moe_asr.files import check_outputs

    check_outputs(args.out, DECODE_FILES, args.overwrite)  # before the model is loaded
    package, cfg, routing = _decode_setup(args)
    s = decode_datadir(
        package,
        args.data,
        args.out,
        cfg,
        routing=routing,
        labels_from_data=tuple(dict.fromkeys(args.force_from_data)),
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(
        f"{args.out}: decoded {s.num_decoded}/{s.num_utts} utterances ({s.mode}), "
        f"{s.audio_seconds:.1f} s of audio in {s.decode_seconds:.1f} s, RTF {s.rtf:.4f}"
    )
    if s.num_errors:
        print(f"{s.num_errors} utterance(s) failed; see {args.out}/errors.txt", file=sys.stderr)
    return 1 if s.num_utts and not s.num_decoded else 0


def _add_transcribe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transcribe",
        help="transcribe audio files or dirs: text, JSON, SRT, VTT or TSV (as whisper writes them)",
        description="Any format soundfile reads, any sample rate and channel count; files "
        "longer than decode.window_seconds (30 s) are cut into windows in pauses and stitched. "
        "stdout gets `path<TAB>text` per file (--output-format txt) or one JSON object per file "
        "(json: text, confidence, word timestamps, segments with times, the n-best "
        "alternatives with scores, predicted accent with probabilities for models with a label "
        "head, decode time); --output-dir writes one file per input and format instead "
        "(talk.mp3 -> DIR/talk.srt). MODEL is a model.pt or an exported model.onnx. A bad file "
        "is reported on stderr (and in the JSON) and the others are transcribed; exit 2 if "
        "any failed.",
    )
    p.add_argument("inputs", nargs="*", help="[MODEL] then audio files or directories (recursive)")
    p.add_argument(
        "--model", default=None, help="EXP/model.pt or model.onnx, instead of the first positional"
    )
    p.add_argument("--list", default=None, help="file with one audio path per line")
    p.add_argument(
        "--output-format",
        "-f",
        default=None,
        metavar="FMT",
        help="txt, json, srt, vtt, tsv, a comma list or all (default: txt; all with --output-dir)",
    )
    p.add_argument("--output-dir", "-o", default=None, help="write DIR/<input stem>.<fmt> files")
    p.add_argument("--json", action="store_true", help="same as --output-format json")
    p.add_argument("--no-timestamps", action="store_true", help="leave word times out")
    p.add_argument(
        "--window-seconds",
        type=float,
        default=None,
        help="longest piece decoded at once; default: the model's decode.window_seconds (30)",
    )
    p.add_argument(
        "--pause-seconds",
        type=float,
        default=1.0,
        help="a silence between words this long starts a new segment (0: one per window)",
    )
    p.add_argument(
        "--streaming",
        action="store_true",
        help="streaming models: decode chunk by chunk with caches; with --json a line "
        '{"partial": TEXT, "time": SECONDS} per chunk, then the final result',
    )
    _decode_arguments(p)
    p.set_defaults(func=_run_transcribe)


def _run_streaming(args: argparse.Namespace, paths: list[str], package, cfg, routing) -> int:
    import json

    from moe_asr.decode.streaming import PartialResult, StreamingRecognizer, stream_file
    from moe_asr.errors import UserError

    recognizer = StreamingRecognizer(
        package, cfg, routing=routing, timestamps=args.json and not args.no_timestamps
    )
    failed = 0
    for path in paths:
        try:
            for item in stream_file(path, recognizer):
                if isinstance(item, PartialResult):
                    if args.json:
                        print(json.dumps(item.to_dict(), ensure_ascii=False), flush=True)
                elif args.json:
                    final = item.to_dict()
                    final["final_latency"] = final.pop("decode_seconds")
                    print(json.dumps(final, ensure_ascii=False), flush=True)
                else:
                    print(f"{item.path}\t{item.text}", flush=True)
        except UserError as e:
            failed += 1
            msg = str(e) if path in str(e) else f"{path}: {e}"
            print(f"moe-asr transcribe: {msg}", file=sys.stderr)
            if args.json:
                print(json.dumps({"path": path, "error": msg}, ensure_ascii=False), flush=True)
    if failed:
        print(f"{failed} of {len(paths)} file(s) failed", file=sys.stderr)
        return 2
    return 0


def _run_transcribe(args: argparse.Namespace) -> int:
    import dataclasses

    from moe_asr.decode.formats import OutputWriter, parse_formats, stdout_line
    from moe_asr.decode.transcribe import Transcriber, collect_inputs
    from moe_asr.errors import UserError

    inputs = list(args.inputs)
    if args.model is None:
        if not inputs:
            raise UserError("give the model (MODEL or --model EXP/model.pt) and audio inputs")
        args.model = inputs.pop(0)
    spec = args.output_format or ("json" if args.json else ("all" if args.output_dir else "txt"))
    if args.json and args.output_format not in (None, "json"):
        raise UserError(f"--json and --output-format {args.output_format} contradict each other")
    formats = parse_formats(spec)
    if args.output_dir is None and len(formats) > 1:
        raise UserError(f"--output-format {spec}: several formats need --output-dir DIR")
    paths = collect_inputs(inputs, args.list)
    package, cfg, routing = _decode_setup(args)
    if args.streaming:
        return _run_streaming(args, paths, package, cfg, routing)
    if args.window_seconds is not None:
        cfg = dataclasses.replace(cfg, window_seconds=args.window_seconds)
    transcriber = Transcriber(
        package,
        cfg,
        routing=routing,
        timestamps=not args.no_timestamps,
        pause_seconds=args.pause_seconds,
    )
    writer = OutputWriter(args.output_dir, formats) if args.output_dir else None
    failed = 0
    for result in transcriber.transcribe_many(paths):
        if result.error is not None:
            failed += 1
            print(f"moe-asr transcribe: {result.error}", file=sys.stderr)
        if writer is not None:
            for path in writer.write(result):
                print(f"{result.path} -> {path}", flush=True)
        elif result.error is None or formats[0] == "json":  # a JSON line says why it failed
            print(stdout_line(result, formats[0]), end="", flush=True)
    if failed:
        print(f"{failed} of {len(paths)} file(s) failed", file=sys.stderr)
        return 2
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export encoder + CTC head to ONNX or TorchScript (optionally int8), checked",
        description="Writes the exported model and OUT.json (tokens, features, frame duration). "
        "The export is run on a check input and compared with PyTorch.",
    )
    p.add_argument("--model", required=True, help="EXP/model.pt")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    # `moe-asr transcribe/decode` run the .onnx (CTC modes); the .ts is for your own runtime
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantization of linears")
    p.add_argument(
        "--out", default=None, help="default: next to the model, e.g. EXP/model.int8.onnx"
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from moe_asr.export import export_model
    from moe_asr.package import load_package

    torch.set_flush_denormal(True)
    model = Path(args.model)
    suffix = (".int8" if args.int8 else "") + (".onnx" if args.format == "onnx" else ".ts")
    out = Path(args.out) if args.out else model.with_name(model.stem + suffix)
    r = export_model(
        load_package(model), out, format=args.format, int8=args.int8, overwrite=args.overwrite
    )
    print(
        f"{r.path}: {r.format}{' int8' if r.int8 else ''}, {r.size_bytes / 1e6:.2f} MB, "
        f"vs PyTorch: max |diff| {r.max_abs_diff:.2e}, same best token on "
        f"{100 * r.argmax_agreement:.1f}% of frames; metadata in {r.path}.json"
    )
    return 0


# adders, in the order of `moe-asr --help`
COMMANDS = [_add_decode, _add_transcribe, _add_export]
