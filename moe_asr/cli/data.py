"""Data subcommands: synth, prepare-corpus, validate-data, fix-data, compute-cmvn,
dump-feats, train-tokenizer, train-lm."""

from __future__ import annotations

import argparse
import sys


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="synthesize an accented, noisy English data dir with espeak-ng",
        description="Writes OUT/wav/*.wav (16 kHz, 16-bit) and a Kaldi data dir (wav.scp text "
        "utt2spk spk2utt utt2accent utt2family utt2noise utt2snr utt2dur; with --reverb also "
        "utt2reverb utt2rt60). Speakers and sentences are split "
        "into train/dev/test by a fixed hash, so --split builds never overlap; the same --seed "
        "gives byte-identical files for any --nj.",
    )
    p.add_argument("out", nargs="?", help="output data dir (not needed with --list-accents)")
    p.add_argument("--num-utts", type=int, default=1000)
    p.add_argument("--split", default="train", choices=["train", "dev", "test"])
    p.add_argument(
        "--accents",
        default=None,
        help="comma-separated accent codes and/or sets: default (the recipe's 16 accents; the "
        "default), all (every voice that passes the check)",
    )
    p.add_argument(
        "--exclude-accents",
        default=None,
        help="comma-separated accents removed from --accents (e.g. those of an unseen-accent set)",
    )
    from moe_asr.synth.noise import NOISE_TYPES  # numpy only: --help stays quick

    p.add_argument(
        "--noise",
        default="clean,white,pink,babble",
        help=f"comma-separated noise conditions of {','.join(NOISE_TYPES)}",
    )
    p.add_argument("--snrs", default="5,10,20", help="SNRs in dB for the noisy conditions")
    p.add_argument(
        "--reverb",
        default="",
        help="RT60s in seconds, e.g. 0.3,0.6,0.9: every utterance in a simulated room (RT60 "
        "drawn from the list) before its noise; the speakers, sentences and noise stay those "
        "of the dry corpus of the same seed (default: dry)",
    )
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
    from moe_asr.synth.accents import DEFAULT_ACCENTS, parse_accent_list
    from moe_asr.synth.corpus import SynthConfig, build_corpus, select_accents
    from moe_asr.synth.espeak import EspeakServer
    from moe_asr.synth.noise import parse_noise_list, parse_snr_list
    from moe_asr.synth.reverb import parse_rt60_list

    if args.list_accents:
        with EspeakServer() as server:
            accepted, checks = select_accents(server, ["all"])
        for c in checks:
            print(f"{c}{' (default set)' if c.accent in DEFAULT_ACCENTS else ''}")
        families = sorted({c.family for c in checks if c.ok})
        print(
            f"{len(accepted)} of {len(checks)} accents pass ({len(families)} families: "
            f"{', '.join(families)}); default set: {len(DEFAULT_ACCENTS)} accents"
        )
        return 0
    if not args.out:
        raise UserError("give the output directory OUT (or --list-accents)")
    config = SynthConfig(
        num_utts=args.num_utts,
        split=args.split,
        accents=parse_accent_list(args.accents) if args.accents else None,
        exclude_accents=(
            parse_accent_list(args.exclude_accents, "--exclude-accents")
            if args.exclude_accents
            else ()
        ),
        noise=tuple(parse_noise_list(args.noise)),
        snrs=tuple(parse_snr_list(args.snrs)),
        reverb=tuple(parse_rt60_list(args.reverb)) if args.reverb.strip() else (),
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


def _add_prepare_corpus(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare-corpus",
        help="turn a real corpus (L2-ARCTIC, VCTK, Common Voice, EdAcc, AESRC2020, "
        "LibriSpeech) into Kaldi data dirs OUT/{train,dev,test}",
        description="Reads the corpus's official layout and writes OUT/train, OUT/dev, OUT/test "
        "(wav.scp with absolute paths, text normalised, utt2spk, spk2utt, utt2accent, "
        "utt2gender where known). Problems with single items are warnings on stderr; a "
        "partial or small corpus writes the splits it can and warns about each empty one "
        "(choose its speakers with --dev-speakers/--test-speakers). The layouts, splits and "
        "normalisation are documented in egs/<corpus>/asr1/README.md.",
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
    p.add_argument(
        "--dev-speakers",
        metavar="SPK,...",
        help="speaker ids for dev, comma-separated (every corpus; l2arctic: replaces its fixed "
        "list; vctk/aesrc: the others are still split per accent)",
    )
    p.add_argument("--test-speakers", metavar="SPK,...", help="speaker ids for test, likewise")
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

    def speakers(value: str | None) -> tuple[str, ...] | None:
        return tuple(s.strip() for s in value.split(",") if s.strip()) if value else None

    options = {
        "dev_speakers": speakers(args.dev_speakers),
        "test_speakers": speakers(args.test_speakers),
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


def _add_validate_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate-data",
        help="check a Kaldi data dir; report every problem as file:line: what",
        description="Check sorting, unique ids, audio/text/speaker coverage, spk2utt, group "
        "files (utt2accent, utt2noise, ...), empty transcripts and encoding. Exit 1 on any problem.",
    )
    p.add_argument("dir")
    p.add_argument("--check-audio", action="store_true", help="open every audio file")
    p.add_argument(
        "--allow-pipes",
        action="store_true",
        help="report `cmd |` wav.scp entries as warnings, not errors (still exit 1: no moe_asr "
        "command reads them; with --check-audio they are errors)",
    )
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
    p.add_argument(
        "--allow-pipes",
        action="store_true",
        help="keep utterances whose wav.scp entry is a `cmd |` pipeline (no command reads them)",
    )
    p.set_defaults(func=_run_fix_data)


def _run_fix_data(args: argparse.Namespace) -> int:
    from moe_asr.data.datadir import fix_datadir

    report = fix_datadir(args.dir, allow_pipes=args.allow_pipes)
    for change in report.changes:
        print(f"changed {change}")
    for utt, why in sorted(report.dropped.items()):
        print(f"dropped {utt}: {why}")
    for name, utts in sorted(report.filled_unk.items()):
        print(f"{name}: {len(utts)} utterance(s) without a label set to unk")
    print(f"kept {report.kept} utterance(s); originals in {report.backup}")
    return 0


def _one_of(positional: str | None, option: str | None, name: str, flag: str) -> str:
    """The value given as a positional or as an option (either spelling, not both)."""
    from moe_asr.errors import UserError

    if positional is not None and option is not None and positional != option:
        raise UserError(f"give {name} once: as a positional ({positional}) or {flag} ({option})")
    value = positional if positional is not None else option
    if value is None:
        raise UserError(f"give {name} (positional or {flag})")
    return value


def _add_compute_cmvn(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compute-cmvn",
        help="global fbank mean/variance of a data dir -> JSON (count, mean, var, std)",
        description="Computes Kaldi fbank for every utterance (features from --config's "
        "data.features) and accumulates per-dimension statistics in float64. Unreadable audio "
        "is skipped with a warning naming the utterance and path, and listed in the JSON.",
    )
    p.add_argument("data_dir", nargs="?", help="Kaldi data dir (or --data)")
    p.add_argument("out", nargs="?", help="output JSON file (or --out)")
    p.add_argument("--data", dest="data_opt", default=None, help="same as DATA_DIR")
    p.add_argument("--out", dest="out_opt", default=None, help="same as OUT")
    p.add_argument("--config", default=None, help="YAML experiment config (data.features)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--num-workers", type=int, default=0, help="feature worker processes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=_run_compute_cmvn)


def _run_compute_cmvn(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moe_asr.config import load_config
    from moe_asr.data.features import CmvnError, compute_cmvn

    data_dir = _one_of(args.data_dir, args.data_opt, "DATA_DIR", "--data")
    out = Path(_one_of(args.out, args.out_opt, "OUT", "--out"))
    if out.exists() and not args.overwrite:
        raise CmvnError(f"{out}: already exists; pass --overwrite to replace it")
    cfg = load_config(args.config, args.overrides, sections=("data",))  # features only
    cmvn = compute_cmvn(data_dir, cfg.data.features, num_workers=args.num_workers)
    cmvn.save(out)
    print(
        f"{out}: {cmvn.num_utts} utterances, {cmvn.count} frames, dim {cmvn.mean.numel()}"
        + (f"; {len(cmvn.skipped)} skipped (unreadable audio)" if cmvn.skipped else "")
    )
    return 0


def _add_dump_feats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dump-feats",
        help="precompute fbank of a data dir (DATA/feats.scp + shards) for "
        "data.features.precomputed=true",
        description="Computes Kaldi fbank of every utterance (--config's data.features, as "
        "training computes it from the audio) and writes DUMP/feats.N.npy shards, "
        "DATA_DIR/feats.scp (utt-id shard:row:frames) and DATA_DIR/feats.json (the feature "
        "settings, counts, utterances left out). Train with --set data.features.precomputed=true "
        "to read them instead of the audio (dump the dev data dir too); speed perturbation and "
        "noise need the audio and cannot be combined with it, SpecAugment can. Unreadable audio "
        "is left out with a warning naming the utterance.",
    )
    p.add_argument("data_dir", help="Kaldi data dir")
    p.add_argument("--dump-dir", default=None, help="where the shards go (default DATA_DIR/dump)")
    p.add_argument("--config", default=None, help="YAML experiment config (data.features)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--num-workers", type=int, default=0, help="feature worker processes")
    p.add_argument("--shard-mb", type=float, default=128.0, help="size of one shard in MiB")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dump")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_dump_feats)


def _run_dump_feats(args: argparse.Namespace) -> int:
    from moe_asr.config import load_config
    from moe_asr.data.precomputed import dump_features

    cfg = load_config(args.config, args.overrides, sections=("data",))  # features only
    report = dump_features(
        args.data_dir,
        cfg.data.features,
        dump_dir=args.dump_dir,
        num_workers=args.num_workers,
        shard_mb=args.shard_mb,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    secs = report.frames * cfg.data.features.frame_shift_ms / 1000.0
    span = f"{secs / 3600:.2f} h" if secs >= 360 else f"{secs:.1f} s"
    print(
        f"{report.scp}: {report.utts} utterances, {report.frames} frames (~{span}), "
        f"{report.shards} shard(s) in {report.dump_dir} ({report.bytes / 2**20:.1f} MiB) in "
        f"{report.seconds:.1f} s"
        + (f"; {len(report.left_out)} left out (unreadable audio)" if report.left_out else "")
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


# adders, in the order of `moe-asr --help`
COMMANDS = [
    _add_synth,
    _add_prepare_corpus,
    _add_validate_data,
    _add_fix_data,
    _add_compute_cmvn,
    _add_dump_feats,
    _add_train_tokenizer,
    _add_train_lm,
]
