"""Command-line interface: `moe-asr <subcommand>`; each subcommand is a thin call into the library.

To add a subcommand: write ``_add_<name>(sub)`` that declares its arguments and sets
``func`` to a ``_run_<name>(args) -> int``, then list it in ``_COMMANDS``. Library
imports happen inside ``_run_*`` so that ``moe-asr --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

__all__ = ["main", "build_parser"]


def _add_validate_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate-data",
        help="check a Kaldi data dir; report every problem as file:line: what",
        description="Check sorting, unique ids, audio/text/speaker coverage, spk2utt, group "
        "files (utt2accent, utt2noise, ...), empty transcripts and encoding. Exit 1 on any problem.",
    )
    p.add_argument("dir")
    p.add_argument("--check-audio", action="store_true", help="open every audio file")
    p.add_argument("--allow-pipes", action="store_true", help="accept `cmd |` wav.scp entries")
    p.set_defaults(func=_run_validate_data)


def _run_validate_data(args: argparse.Namespace) -> int:
    from moe_asr.data.datadir import validate_datadir

    problems = validate_datadir(
        args.dir, check_audio=args.check_audio, allow_pipes=args.allow_pipes
    )
    for p in problems:
        print(p)
    if problems:
        print(
            f"{args.dir}: {len(problems)} problem(s); `moe-asr fix-data {args.dir}` repairs "
            "sorting, spk2utt and incomplete utterances",
            file=sys.stderr,
        )
        return 1
    print(f"{args.dir}: OK", file=sys.stderr)
    return 0


def _add_fix_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fix-data",
        help="sort, rebuild spk2utt, drop incomplete utterances (originals backed up first)",
        description="Copies every file to DIR/.backup/<timestamp>/ first, then sorts and dedupes "
        "the tables, rebuilds spk2utt, drops utterances lacking audio, text or speaker "
        "(listed in the backup's `dropped` file) and gives missing group labels the value `unk`.",
    )
    p.add_argument("dir")
    p.add_argument("--allow-pipes", action="store_true")
    p.set_defaults(func=_run_fix_data)


def _run_fix_data(args: argparse.Namespace) -> int:
    from moe_asr.data.datadir import fix_datadir

    report = fix_datadir(args.dir, allow_pipes=args.allow_pipes)
    for utt, why in sorted(report.dropped.items()):
        print(f"dropped {utt}: {why}")
    for name, utts in sorted(report.filled_unk.items()):
        print(f"{name}: {len(utts)} utterance(s) without a label set to unk")
    print(f"kept {report.kept} utterance(s); originals in {report.backup}")
    return 0


_SCORE_DESCRIPTION = """\
Score hypotheses (Kaldi `utt-id words`, words may be empty) against a reference `text`:
overall and per group (every --group file, e.g. utt2accent, utt2noise, utt2spk): utterances,
reference words, WER (corpus-level, percent), substitutions/deletions/insertions, optional
CER, and a 95% bootstrap confidence interval (utterances resampled, seeded); per group name
also the macro average, the worst and best group and the gap (the `unk` group is reported
but left out of these). A Markdown table goes to stdout; with --out: wer.json,
wer_by_<group>.md, sclite-compatible ref.trn/hyp.trn (`(spk-utt)` ids; speakers from
utt2spk next to --ref), alignments.txt (per utterance, most errors first).

A missing hypothesis counts as all deletions and is listed; a hypothesis for an utterance
not in the reference is an error unless --allow-extra; an utterance without a label in a
group file goes to the `unk` group, which is listed.

Normalisation, applied identically to reference and hypothesis (defaults): Unicode NFC;
lowercase (--no-lowercase keeps case); punctuation replaced by a space, except an
apostrophe inside a word (don't) and whole tags like <unk> or [noise] (--keep-punct keeps
punctuation); whitespace collapsed; then --map FILE replaces words (`word replacement...`
per line; a word alone on its line is deleted).

--compare A B scores two systems on the same reference: per-group WER of both, the delta
(B - A) with its paired-bootstrap 95% CI, P(B not better) and a two-sided p-value; with
--out: compare.json, compare.md.
"""


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="WER/CER overall and per accent/noise/speaker group, CIs, sclite trn files",
        description=_SCORE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ref", required=True, help="reference transcripts (a data dir's `text`)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--hyp", help="hypotheses (`hyp.txt`: utt-id words)")
    what.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two hypothesis files")
    p.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="[NAME=]FILE",
        help="utt2<name> label file (repeatable); NAME defaults to the file name after utt2",
    )
    p.add_argument("--cer", action="store_true", help="also report CER (spaces count)")
    p.add_argument("--no-lowercase", action="store_true", help="keep letter case")
    p.add_argument("--keep-punct", action="store_true", help="keep punctuation")
    p.add_argument("--map", metavar="FILE", help="word replacements applied after normalising")
    p.add_argument(
        "--allow-extra", action="store_true", help="ignore hypotheses of unknown utterances"
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, metavar="N", help="resamples (default 1000; 0 = off)"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--out", metavar="OUTDIR", help="write the report files here")
    p.set_defaults(func=_run_score)


def _run_score(args: argparse.Namespace) -> int:
    from moe_asr import scoring

    normalizer = scoring.make_normalizer(
        lowercase=not args.no_lowercase, strip_punct=not args.keep_punct, word_map=args.map
    )
    common = dict(
        normalizer=normalizer,
        allow_extra=args.allow_extra,
        n_boot=args.bootstrap,
        seed=args.seed,
    )
    if args.compare:
        report = scoring.compare_files(args.ref, *args.compare, args.group, **common)
        print(scoring.format_compare_markdown(report), end="")
        written = scoring.write_compare_outputs(report, args.out) if args.out else []
    else:
        report = scoring.score_files(args.ref, args.hyp, args.group, cer=args.cer, **common)
        print(scoring.format_markdown(report), end="")
        written = scoring.write_outputs(report, args.out) if args.out else []
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (torchrun --nproc-per-node N -m moe_asr.cli train ... for DDP)",
        description="Train on a Kaldi data dir. Writes EXP/config.yaml (resolved), EXP/train.log, "
        "EXP/tensorboard/, EXP/checkpoints/ (epoch-N.pt, last.pt). --resume continues the same run.",
    )
    p.add_argument("--config", required=True, help="YAML experiment config")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. model.moe.num_experts=8 (repeatable)",
    )
    p.add_argument("--train-data", required=True)
    p.add_argument("--dev-data", required=True)
    p.add_argument("--tokenizer", required=True, help="dir written by `moe-asr train-tokenizer`")
    p.add_argument("--cmvn", default=None, help="global CMVN json from `moe-asr compute-cmvn`")
    p.add_argument("--exp", required=True, help="experiment dir")
    p.add_argument("--resume", action="store_true", help="continue from EXP/checkpoints/last.pt")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-clock budget; ends cleanly with a checkpoint (train.max_minutes)",
    )
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moe_asr.config import load_config
    from moe_asr.train.trainer import TrainSetup, train

    overrides = list(args.overrides)
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes}")
    result = train(
        TrainSetup(
            config=load_config(args.config, overrides),
            train_data=Path(args.train_data),
            dev_data=Path(args.dev_data),
            tokenizer_dir=Path(args.tokenizer),
            cmvn_path=Path(args.cmvn) if args.cmvn else None,
            exp_dir=Path(args.exp),
            resume=args.resume,
        )
    )
    print(f"{result.stopped_because}; {result.steps} steps, {result.epochs_completed} epochs")
    return 0


def _add_average(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "average",
        help="average checkpoints into EXP/model.pt, the self-contained model package",
    )
    p.add_argument("--exp", required=True)
    p.add_argument("--num", type=int, default=5, help="number of epoch checkpoints")
    p.add_argument("--best", action="store_true", help="the best by dev loss, not the last")
    p.set_defaults(func=_run_average)


def _run_average(args: argparse.Namespace) -> int:
    from moe_asr.train.average import average_experiment

    path, epochs = average_experiment(args.exp, args.num, best=args.best)
    used = f"epochs {', '.join(map(str, epochs))}" if epochs else "last.pt"
    print(f"{path}: averaged {used}")
    return 0


def _add_prepare_corpus(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare-corpus",
        help="turn a real corpus (L2-ARCTIC, VCTK, Common Voice, EdAcc, AESRC2020, "
        "LibriSpeech) into Kaldi data dirs OUT/{train,dev,test}",
        description="Reads the corpus's official layout and writes OUT/train, OUT/dev, OUT/test "
        "(wav.scp with absolute paths, text normalised, utt2spk, spk2utt, utt2accent, "
        "utt2gender where known). Problems with single items are warnings on stderr; the "
        "layouts, splits and normalisation are documented in egs/<corpus>/asr1/README.md.",
    )
    p.add_argument(
        "corpus", choices=["l2arctic", "vctk", "commonvoice", "edacc", "aesrc", "librispeech"]
    )
    p.add_argument("corpus_dir", help="the corpus as distributed (unpacked)")
    p.add_argument("out_dir", help="data root; one data dir per split is written below it")
    p.add_argument("--overwrite", action="store_true", help="replace split dirs not ours")
    p.add_argument(
        "--download",
        action="store_true",
        help="first fetch the corpus into CORPUS_DIR (LibriSpeech, VCTK, EdAcc only; the URLs "
        "are printed before downloading)",
    )
    p.add_argument("--seed", type=int, help="speaker split seed (vctk, aesrc, edacc)")
    p.add_argument("--dev-per-accent", type=int, help="dev speakers per accent (vctk, aesrc)")
    p.add_argument("--test-per-accent", type=int, help="test speakers per accent (vctk, aesrc)")
    p.add_argument("--mic", choices=["mic1", "mic2"], help="VCTK 0.92 microphone")
    p.add_argument("--dev-fraction", type=float, help="EdAcc dev conversations moved to dev")
    p.add_argument(
        "--train-subsets", help="LibriSpeech training subsets, comma-separated (default: all found)"
    )
    p.set_defaults(func=_run_prepare_corpus)


def _run_prepare_corpus(args: argparse.Namespace) -> int:
    import inspect
    import logging

    from moe_asr.corpora import PREPARERS
    from moe_asr.corpora.common import CorpusError
    from moe_asr.corpora.download import download_corpus

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    prepare = PREPARERS[args.corpus]
    subsets = tuple(s for s in (args.train_subsets or "").split(",") if s) or None
    options = {
        "seed": args.seed,
        "dev_per_accent": args.dev_per_accent,
        "test_per_accent": args.test_per_accent,
        "mic": args.mic,
        "dev_fraction": args.dev_fraction,
        "train_subsets": subsets,
    }
    accepted = inspect.signature(prepare).parameters
    kwargs = {}
    for name, value in options.items():
        if value is None:
            continue
        if name not in accepted:
            flag = "--" + name.replace("_", "-")
            raise CorpusError(f"{flag} does not apply to {args.corpus}")
        kwargs[name] = value
    if args.download:
        download_corpus(args.corpus, args.corpus_dir, train_subsets=subsets)
    result = prepare(args.corpus_dir, args.out_dir, overwrite=args.overwrite, **kwargs)
    for split, path in result.splits.items():
        print(f"{path}: {result.counts[split]} utterances")
    if result.warnings:
        print(f"{len(result.warnings)} warning(s), listed above", file=sys.stderr)
    return 0


def _add_compute_cmvn(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compute-cmvn",
        help="global fbank mean/variance of a data dir -> JSON (count, mean, var, std)",
        description="Computes Kaldi fbank for every utterance (features from --config's "
        "data.features) and accumulates per-dimension statistics in float64. Unreadable audio "
        "is skipped with a warning naming the utterance and path, and listed in the JSON.",
    )
    p.add_argument("data_dir")
    p.add_argument("out", help="output JSON file")
    p.add_argument("--config", default=None, help="YAML experiment config (data.features)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--num-workers", type=int, default=0, help="feature worker processes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=_run_compute_cmvn)


def _run_compute_cmvn(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moe_asr.config import load_config
    from moe_asr.data.features import CmvnError, compute_cmvn

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CmvnError(f"{out}: already exists; pass --overwrite to replace it")
    cfg = load_config(args.config, args.overrides)
    cmvn = compute_cmvn(args.data_dir, cfg.data.features, num_workers=args.num_workers)
    cmvn.save(out)
    print(
        f"{out}: {cmvn.num_utts} utterances, {cmvn.count} frames, dim {cmvn.mean.numel()}"
        + (f"; {len(cmvn.skipped)} skipped (unreadable audio)" if cmvn.skipped else "")
    )
    return 0


def _add_train_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-tokenizer",
        help="train a char / bpe / unigram tokenizer on a data dir's text",
        description="Trains on the transcripts as they are (no normalisation), deterministically. "
        "Ids: blank=0, unk=1, <sos/eos>=last. Writes OUT/tokenizer.json (complete), "
        "OUT/tokens.txt and, for bpe/unigram, OUT/tokenizer.model (sentencepiece).",
    )
    p.add_argument("--data", required=True, help="a Kaldi `text` file (or a data dir)")
    p.add_argument("--type", choices=["char", "bpe", "unigram"], default="char")
    p.add_argument(
        "--vocab-size",
        type=int,
        default=256,
        help="total ids incl. blank, unk, <sos/eos> (bpe/unigram; may come out smaller "
        "on a small text)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace a tokenizer in OUT")
    p.set_defaults(func=_run_train_tokenizer)


def _run_train_tokenizer(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moe_asr.config import TokenizerConfig
    from moe_asr.data.tokenizer import TokenizerError, read_transcripts, train_tokenizer

    out = Path(args.out)
    if (out / "tokenizer.json").exists() and not args.overwrite:
        raise TokenizerError(f"{out}: holds a tokenizer already; pass --overwrite to replace it")
    texts = read_transcripts(args.data)
    tok = train_tokenizer(texts, TokenizerConfig(type=args.type, vocab_size=args.vocab_size))
    tok.save(out)
    note = ""
    if args.type != "char" and tok.vocab_size < args.vocab_size:
        note = f" (asked for {args.vocab_size}: the text supports no more)"
    print(f"{out}: {args.type} tokenizer, {tok.vocab_size} ids{note}, from {len(texts)} lines")
    return 0


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="synthesize an accented, noisy English data dir with espeak-ng",
        description="Writes OUT/wav/*.wav (16 kHz, 16-bit) and a Kaldi data dir (wav.scp text "
        "utt2spk spk2utt utt2accent utt2noise utt2snr utt2dur). Speakers and sentences are split "
        "into train/dev/test by a fixed hash, so --split builds never overlap; the same --seed "
        "gives byte-identical files for any --nj.",
    )
    p.add_argument("out", nargs="?", help="output data dir (not needed with --list-accents)")
    p.add_argument("--num-utts", type=int, default=1000)
    p.add_argument("--split", default="train", choices=["train", "dev", "test"])
    p.add_argument(
        "--accents", default=None, help="comma-separated accents (default: all that pass)"
    )
    p.add_argument(
        "--noise", default="clean,white,pink,babble", help="clean,white,pink,brown,babble"
    )
    p.add_argument("--snrs", default="5,10,20", help="SNRs in dB for the noisy conditions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nj", type=int, default=1, help="worker processes")
    p.add_argument("--utts-per-speaker", type=int, default=10)
    p.add_argument("--wav-dir", default=None, help="where audio goes (default OUT/wav)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing data dir")
    p.add_argument("--list-accents", action="store_true", help="show the voice checks and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from moe_asr.errors import UserError
    from moe_asr.synth.corpus import SynthConfig, build_corpus, select_accents
    from moe_asr.synth.espeak import EspeakServer
    from moe_asr.synth.noise import parse_noise_list, parse_snr_list

    if args.list_accents:
        with EspeakServer() as server:
            _, checks = select_accents(server, None)
        for c in checks:
            print(c)
        return 0
    if not args.out:
        raise UserError("give the output directory OUT (or --list-accents)")
    accents = None
    if args.accents:
        accents = tuple(a.strip() for a in args.accents.split(",") if a.strip())
    config = SynthConfig(
        num_utts=args.num_utts,
        split=args.split,
        accents=accents,
        noise=tuple(parse_noise_list(args.noise)),
        snrs=tuple(parse_snr_list(args.snrs)),
        seed=args.seed,
        utts_per_speaker=args.utts_per_speaker,
    )
    report = build_corpus(
        args.out,
        config,
        nj=args.nj,
        wav_dir=args.wav_dir,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    for utt, why in sorted(report.failed.items()):
        print(f"failed {utt}: {why}", file=sys.stderr)
    print(
        f"{report.out_dir}: {report.utts} utterances, {report.audio_seconds / 3600:.2f} h of audio "
        f"in {report.seconds:.1f} s with {report.nj} process(es) "
        f"({report.utts_per_second / report.nj:.1f} utt/s per process)"
        + (f"; {len(report.failed)} failed (see synth_failures)" if report.failed else "")
    )
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="parameter counts of a model config: total and active per frame, per component",
        description="Build the model of CONFIG (with --set overrides) and print total "
        "parameters and parameters active per frame (MoE: only the top-k experts count) per "
        "component. Guidance labels get --label-values values each.",
    )
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--vocab-size", type=int, default=None, help="default: tokenizer.vocab_size of CONFIG"
    )
    p.add_argument("--label-values", type=int, default=8, help="values per guidance label")
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from moe_asr.config import load_config
    from moe_asr.data.labels import UNK_LABEL, LabelVocab
    from moe_asr.model import build_model, parameter_summary

    cfg = load_config(args.config, args.set)
    vocab_size = args.vocab_size or cfg.tokenizer.vocab_size
    names = cfg.model.moe.guidance.labels
    vocab = LabelVocab(
        {n: [UNK_LABEL, *(f"v{i}" for i in range(args.label_values))] for n in names}
    )
    model = build_model(cfg.model, vocab_size, vocab if names else None)
    m = cfg.model
    print(
        f"{args.config}: ffn={m.ffn} d_model={m.d_model} layers={m.num_layers} "
        f"experts={m.moe.num_experts} top_k={m.moe.top_k} moe_layers={model.moe_layers or '-'} "
        f"vocab_size={vocab_size}"
    )
    print(f"{'component':<22} {'total':>12} {'active/frame':>13}")
    for row in parameter_summary(model):
        print(f"{row.component:<22} {row.total:>12,} {row.active:>13,}")
    return 0


def _decode_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by `decode` and `transcribe` (defaults: the package's decode config)."""
    p.add_argument(
        "--mode",
        default=None,
        choices=["ctc_greedy", "ctc_prefix_beam", "attention", "attention_rescoring"],
    )
    p.add_argument("--beam", type=int, default=None)
    p.add_argument("--nbest", type=int, default=None, help="hypotheses kept per utterance")
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
    p.add_argument("--lm-weight", type=float, default=None)
    p.add_argument("--word-score", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--accent", default=None, help="force label-guided routing with this accent")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")


def _decode_setup(args: argparse.Namespace):
    """(package, DecodeConfig, RoutingOptions | None) from the shared decode options."""
    import dataclasses

    import torch

    from moe_asr.package import load_package

    torch.set_flush_denormal(True)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    package = load_package(args.model)
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
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in given.items() if v is not None})
    from moe_asr.decode.search import accent_routing

    return package, cfg, accent_routing(package, args.accent)


def _add_decode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "decode",
        help="decode a data dir: OUT/hyp.txt, nbest.txt, errors.txt, decode.json (with RTF)",
        description="Decode every utterance of a Kaldi data dir. An utterance that fails is "
        "listed in OUT/errors.txt and the others are decoded; exit 1 only if none could be.",
    )
    p.add_argument("--model", required=True, help="EXP/model.pt")
    p.add_argument("--data", required=True, help="Kaldi data dir")
    p.add_argument("--out", required=True, help="output dir")
    _decode_arguments(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_decode)


def _run_decode(args: argparse.Namespace) -> int:
    from moe_asr.decode.batch import decode_datadir

    package, cfg, routing = _decode_setup(args)
    s = decode_datadir(
        package, args.data, args.out, cfg, routing=routing, progress=not args.no_progress
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
        help="transcribe audio files or dirs: path<TAB>text, or JSON lines with --json",
        description="Any format soundfile reads, any sample rate and channel count; files "
        "longer than decode.window_seconds (30 s) are cut into windows and stitched. --json "
        "prints one JSON object per file: text, confidence, word timestamps, predicted accent "
        "with probabilities (models with a label head), decode time. A bad file is reported on "
        "stderr (and in the JSON) and the others are transcribed; exit 2 if any failed.",
    )
    p.add_argument("model", help="EXP/model.pt")
    p.add_argument("inputs", nargs="*", help="audio files or directories (searched recursively)")
    p.add_argument("--list", default=None, help="file with one audio path per line")
    p.add_argument("--json", action="store_true", help="JSON lines with details per file")
    p.add_argument("--no-timestamps", action="store_true", help="skip word alignment")
    p.add_argument("--window-seconds", type=float, default=None)
    _decode_arguments(p)
    p.set_defaults(func=_run_transcribe)


def _run_transcribe(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from moe_asr.decode.transcribe import Transcriber, collect_inputs

    paths = collect_inputs(args.inputs, args.list)
    package, cfg, _ = _decode_setup(args)
    if args.window_seconds is not None:
        cfg = dataclasses.replace(cfg, window_seconds=args.window_seconds)
    transcriber = Transcriber(
        package,
        cfg,
        accent=args.accent,
        timestamps=args.json and not args.no_timestamps,
    )
    failed = 0
    for result in transcriber.transcribe_many(paths):
        if result.error is not None:
            failed += 1
            print(f"moe-asr transcribe: {result.error}", file=sys.stderr)
        if args.json:
            print(json.dumps(result.to_dict(), ensure_ascii=False), flush=True)
        elif result.error is None:
            print(f"{result.path}\t{result.text}", flush=True)
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


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="expert specialization report: which experts serve which accents/noise conditions",
        description="Runs the encoder label-free over a data dir, captures routing in every MoE "
        "layer and writes OUT/report.html (self-contained), report.md, report.json, PNG plots and "
        "routing.npz. Groups come from the data dir's utt2<group> files (spk = utt2spk).",
    )
    p.add_argument("--model", required=True, help="EXP/model.pt")
    p.add_argument("--data", required=True, help="Kaldi data dir")
    p.add_argument(
        "--groups", default=None, help="comma list, e.g. accent,noise,spk (default: all)"
    )
    p.add_argument("--max-utts", type=int, default=None, help="analyse at most N utterances")
    p.add_argument("--out", required=True, help="output dir")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    import torch

    from moe_asr.analysis import collect_routing, select_groups, write_report
    from moe_asr.data.datadir import load_datadir
    from moe_asr.data.dataset import AsrDataset, make_loader, make_sampler
    from moe_asr.package import load_package

    torch.set_flush_denormal(True)
    pkg = load_package(args.model)
    dd = load_datadir(args.data)
    groups = select_groups(dd, args.groups.split(",") if args.groups else None)
    ds = AsrDataset(dd, None, None, pkg.config.data, train=False)
    loader = make_loader(ds, make_sampler(ds, shuffle=False), 0)
    data = collect_routing(pkg.model, loader, max_utts=args.max_utts)
    result = write_report(
        data, groups, args.out, speakers=dd.utt2spk, title=f"{args.model} on {args.data}"
    )
    for name, g in result.get("groups", {}).items():
        nmi = g.get("nmi_mean")
        ident = g.get("id") or {}
        acc, chance = ident.get("accuracy"), ident.get("chance")
        print(
            f"{name}: mean NMI {'n/a' if nmi is None else f'{nmi:.4f}'}; identification from "
            f"routing {'n/a' if acc is None else f'{acc:.3f} (chance {chance:.3f})'}"
        )
    print(f"report: {args.out}/report.html")
    return 0


def _add_train_lm(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-lm",
        help="word n-gram LM (interpolated Kneser-Ney, ARPA) from a data dir's text",
        description="Writes OUT (ARPA). Decode with `moe-asr decode --lm OUT --mode "
        "ctc_prefix_beam|attention_rescoring`: the beam search is then restricted to the LM's "
        "words (a lexicon spelled with the model's tokenizer) and scored by the LM.",
    )
    p.add_argument("--data", required=True, help="a data dir or its `text` file (utt-id words)")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--out", required=True, help="output ARPA file")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_run_train_lm)


def _run_train_lm(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moe_asr.data.datadir import read_table
    from moe_asr.errors import UserError
    from moe_asr.lm import train_ngram

    src = Path(args.data)
    text = src / "text" if src.is_dir() else src
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out}: exists; pass --overwrite to replace it")
    lm = train_ngram(read_table(text, allow_empty=True).values(), args.order)
    out.parent.mkdir(parents=True, exist_ok=True)
    lm.write_arpa(out)
    sizes = ", ".join(f"{len(lm.prob[n])} {n}-grams" for n in range(1, lm.order + 1))
    print(f"{out}: {sizes} from {text}")
    return 0


# name -> adder; order is the order in --help
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_validate_data,
    _add_fix_data,
    _add_score,
    _add_train,
    _add_average,
    _add_report,
    _add_train_lm,
    _add_prepare_corpus,
    _add_compute_cmvn,
    _add_train_tokenizer,
    _add_synth,
    _add_info,
    _add_decode,
    _add_transcribe,
    _add_export,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moe-asr",
        description="Mixture-of-Experts Conformer speech recognition for accented and noisy speech.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from moe_asr.errors import UserError

    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"moe-asr {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
