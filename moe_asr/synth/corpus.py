"""Build a Kaldi data dir of synthetic accented, noisy English speech.

``plan_corpus`` turns a ``SynthConfig`` into one self-contained ``UttPlan`` per utterance
(speaker, sentence, noise condition, SNR, babble talkers, RT60, seeds), deterministic for
the seed; ``build_corpus`` renders the plans in worker processes (each with its own espeak
fork server) and writes ``wav/*.wav`` (16 kHz, 16-bit PCM) plus ``wav.scp text utt2spk
spk2utt utt2accent utt2family utt2noise utt2snr utt2dur`` (and, for a reverberant corpus,
``utt2reverb utt2rt60``). Every plan carries all it needs, so the files are byte-identical
for a seed whatever the number of processes.

Reverberation (``SynthConfig.reverb``: RT60s in seconds) convolves the speech with a
simulated room impulse response (``moe_asr.synth.reverb``; RT60 drawn from the list, the
direct-to-reverberant ratio uniformly from ``REVERB_DRR``) before the noise is mixed, and
keeps the dry power. The RT60s are drawn from a generator of their own, so a reverberant
corpus has the speakers, sentences and noise of the dry one with the same seed.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from moe_asr.audio import resample, save_audio
from moe_asr.data.datadir import DataDir, read_table, write_datadir
from moe_asr.errors import UserError
from moe_asr.files import atomic_write_text
from moe_asr.synth.accents import (
    ACCENTS,
    DEFAULT_ACCENTS,
    accent_by_code,
    parse_accent_list,
)
from moe_asr.synth.espeak import ESPEAK_RATE, VARIANTS, EspeakError, EspeakServer
from moe_asr.synth.noise import (
    BABBLE_TALKERS,
    DEFAULT_NOISE,
    DEFAULT_SNRS,
    generated_noise,
    mix_at_snr,
    parse_noise_list,
    parse_snr_list,
)
from moe_asr.synth.reverb import parse_rt60_list, reverberate, simulated_rir
from moe_asr.synth.text import split_sentences
from moe_asr.synth.voices import SPLITS, Speaker, VoiceCheck, check_voices, speakers

__all__ = [
    "SynthConfig",
    "Talker",
    "UttPlan",
    "SynthReport",
    "select_accents",
    "plan_corpus",
    "render_utterance",
    "build_corpus",
]

_DATA_FILES = (
    "wav.scp", "text", "utt2spk", "spk2utt", "utt2accent", "utt2family", "utt2noise", "utt2snr",
    "utt2reverb", "utt2rt60",
)  # fmt: skip
REVERB_DRR = (0.0, 10.0)  # dB, the direct-to-reverberant ratios of reverberant utterances


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    num_utts: int
    split: str = "train"
    # accent codes and/or set names ("default": DEFAULT_ACCENTS, "all": every accent that
    # passes the voice check); None = ("default",)
    accents: tuple[str, ...] | None = None
    exclude_accents: tuple[str, ...] = ()  # removed from the selection (unseen-accent sets)
    noise: tuple[str, ...] = DEFAULT_NOISE
    snrs: tuple[float, ...] = DEFAULT_SNRS
    reverb: tuple[float, ...] = ()  # RT60s in seconds; empty = dry
    seed: int = 0
    utts_per_speaker: int = 10
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        if self.num_utts < 1:
            raise UserError(f"--num-utts must be at least 1 (got {self.num_utts})")
        if self.split not in SPLITS:
            raise UserError(f"--split must be one of {', '.join(SPLITS)} (got {self.split!r})")
        if self.utts_per_speaker < 1:
            raise UserError(f"--utts-per-speaker must be at least 1 (got {self.utts_per_speaker})")
        parse_noise_list(list(self.noise))
        parse_snr_list(list(self.snrs))
        if self.reverb:
            parse_rt60_list(list(self.reverb))
        if self.accents is not None:
            parse_accent_list(self.accents)
        if self.exclude_accents:
            parse_accent_list(self.exclude_accents, "--exclude-accents")


@dataclass(frozen=True)
class Talker:
    """One espeak rendering: voice name (from ``EspeakServer.resolve``) and speaker traits."""

    voice: str
    variant: str
    rate: int
    pitch: int
    text: str


@dataclass(frozen=True)
class UttPlan:
    utt: str
    spk: str
    accent: str
    speech: Talker
    noise: str  # one of NOISE_TYPES
    snr: float | None  # None for clean
    seed: int  # espeak noise seed and noise generator seed
    babble: tuple[Talker, ...] = ()
    rt60: float | None = None  # reverberation time in seconds; None = dry


@dataclass
class SynthReport:
    out_dir: Path
    utts: int
    failed: dict[str, str]  # utt -> reason
    seconds: float  # wall time of the rendering
    audio_seconds: float
    nj: int
    checks: list[VoiceCheck] = field(default_factory=list)

    @property
    def utts_per_second(self) -> float:
        return (self.utts + len(self.failed)) / max(self.seconds, 1e-9)


def select_accents(
    server: EspeakServer,
    requested: tuple[str, ...] | list[str] | None,
    exclude: tuple[str, ...] | list[str] = (),
) -> tuple[list[str], list[VoiceCheck]]:
    """Accents to use and the measured checks.

    ``requested`` holds accent codes and set names (``default``, ``all``; None = default).
    Accents reached through ``all`` that fail the check are dropped; an accent named (or
    in ``default``) that fails is a UserError, as is a selection that ``exclude`` empties.
    """
    items = parse_accent_list(requested) if requested else ("default",)
    exclude = parse_accent_list(exclude, "--exclude-accents") if exclude else ()
    named: list[str] = []
    for item in items:
        if item == "all":
            continue
        named += list(DEFAULT_ACCENTS) if item == "default" else [item]
    codes = [a.code for a in ACCENTS] if "all" in items else []
    # named codes first, so that they win the distinctness check against `all` extras
    codes = [c for c in dict.fromkeys(named + codes) if c not in set(exclude)]
    if not codes:
        raise UserError(
            f"no accent left: --exclude-accents {','.join(exclude)} removes every one of "
            f"--accents {','.join(items)}"
        )
    checks = check_voices(server, codes)
    bad = [c for c in checks if not c.ok and c.accent in named]
    if bad:
        raise UserError(
            "accent(s) failed the intelligibility check: "
            + "; ".join(str(c) for c in bad)
            + " (drop them from --accents; `moe-asr synth --list-accents` shows all)"
        )
    return [c.accent for c in checks if c.ok], checks


def plan_corpus(config: SynthConfig, voices: dict[str, str]) -> list[UttPlan]:
    """One plan per utterance; ``voices`` maps each accent to its espeak voice name."""
    accents = sorted(voices)
    if not accents:
        raise UserError("no accent left to synthesize")
    split = config.split
    rng = np.random.default_rng([config.seed, SPLITS.index(split), 7919])
    sentences = split_sentences(split)
    noise = parse_noise_list(list(config.noise))
    snrs = parse_snr_list(list(config.snrs))
    n = config.num_utts

    acc_of = np.array([accents[i % len(accents)] for i in range(n)], dtype=object)
    rng.shuffle(acc_of)
    cond_of = np.array([noise[i % len(noise)] for i in range(n)], dtype=object)
    rng.shuffle(cond_of)
    order = rng.permutation(len(sentences))
    text_of = [sentences[order[i % len(order)]] for i in range(n)]

    spk_of: list[Speaker | None] = [None] * n
    pool = {a: speakers(a, split) for a in accents}
    for a in accents:
        idx = [i for i in range(n) if acc_of[i] == a]
        k = min(len(pool[a]), max(1, math.ceil(len(idx) / config.utts_per_speaker)))
        chosen = [pool[a][j] for j in sorted(rng.choice(len(pool[a]), k, replace=False))]
        for j, i in enumerate(idx):
            spk_of[i] = chosen[j % k]
    all_speakers = [s for a in accents for s in pool[a]]

    plans = []
    for i in range(n):
        spk = spk_of[i]
        assert spk is not None
        cond = str(cond_of[i])
        snr = None if cond == "clean" else float(snrs[int(rng.integers(len(snrs)))])
        babble: tuple[Talker, ...] = ()
        if cond == "babble":
            others = [s for s in all_speakers if s.key != spk.key]
            picks = rng.choice(len(others), BABBLE_TALKERS, replace=False)
            babble = tuple(
                _talker(voices, others[j], sentences[int(rng.integers(len(sentences)))])
                for j in picks
            )
        spk_id = spk.id(split)
        plans.append(
            UttPlan(
                utt=f"{spk_id}-{i:06d}",
                spk=spk_id,
                accent=spk.accent,
                speech=_talker(voices, spk, text_of[i]),
                noise=cond,
                snr=snr,
                seed=int(rng.integers(2**31 - 1)),
                babble=babble,
            )
        )
    if config.reverb:  # a generator of its own: the rest of the plan stays that of a dry corpus
        rt60s = parse_rt60_list(list(config.reverb))
        r = np.random.default_rng([config.seed, SPLITS.index(split), 104729])
        plans = [replace(p, rt60=float(rt60s[int(r.integers(len(rt60s)))])) for p in plans]
    return plans


def _talker(voices: dict[str, str], spk: Speaker, text: str) -> Talker:
    return Talker(voices[spk.accent], spk.variant, spk.rate, spk.pitch, text)


def _speak(server: EspeakServer, t: Talker, seed: int, sample_rate: int) -> np.ndarray:
    pcm = server.synth(t.text, t.voice, variant=t.variant, rate=t.rate, pitch=t.pitch, seed=seed)
    wav = pcm.astype(np.float32) / 32768.0
    return resample(wav, ESPEAK_RATE, sample_rate)


def render_utterance(server: EspeakServer, plan: UttPlan, sample_rate: int = 16000) -> np.ndarray:
    """The (T,) float32 waveform of one plan at ``sample_rate``; EspeakError on failure."""
    speech = _speak(server, plan.speech, plan.seed, sample_rate)
    if plan.rt60 is not None:
        speech = _reverberate(speech, plan, sample_rate)
    if plan.noise == "clean":
        return speech
    rng = np.random.default_rng(plan.seed)
    talkers = [_speak(server, t, plan.seed + 1 + k, sample_rate) for k, t in enumerate(plan.babble)]
    noise = generated_noise(plan.noise, speech.size, rng, sample_rate, talkers)
    assert plan.snr is not None
    return mix_at_snr(speech, noise, plan.snr, sample_rate)


def _reverberate(speech: np.ndarray, plan: UttPlan, sample_rate: int) -> np.ndarray:
    """``speech`` in a simulated room of ``plan.rt60``, at the dry power, below full scale."""
    assert plan.rt60 is not None
    rng = np.random.default_rng([plan.seed, 1])
    drr = float(rng.uniform(*REVERB_DRR))
    wet = reverberate(speech, simulated_rir(plan.rt60, sample_rate, rng, drr)).astype(np.float64)
    p_wet = float(np.mean(wet**2))
    if p_wet > 0:
        wet *= np.sqrt(float(np.mean(speech.astype(np.float64) ** 2)) / p_wet)
    peak = float(np.abs(wet).max()) if wet.size else 0.0
    if peak > 0.99:
        wet *= 0.99 / peak
    return wet.astype(np.float32)


# ----------------------------------------------------------------------------- workers

_worker: dict = {}


def _init_worker(wav_dir: str, sample_rate: int) -> None:
    import torch

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    _worker["server"] = EspeakServer()
    _worker["wav_dir"] = Path(wav_dir)
    _worker["sample_rate"] = sample_rate


def _render_to_file(plan: UttPlan) -> tuple[str, float | None, str | None]:
    """(utt, duration s, None) or (utt, None, reason); never raises for one bad utterance."""
    server: EspeakServer = _worker["server"]
    sr = _worker["sample_rate"]
    try:
        wav = render_utterance(server, plan, sr)
        save_audio(_worker["wav_dir"] / f"{plan.utt}.wav", wav, sr)
    except EspeakError as e:
        if server._proc.poll() is not None:  # the server died: restart it for the next ones
            _worker["server"] = EspeakServer()
        return plan.utt, None, str(e)
    except (OSError, ValueError, RuntimeError) as e:
        return plan.utt, None, f"{type(e).__name__}: {e}"
    return plan.utt, wav.size / sr, None


def _run_plans(plans: list[UttPlan], wav_dir: Path, sample_rate: int, nj: int, progress: bool):
    from moe_asr.progress import progress_bar

    bar = progress_bar(len(plans), desc="synth", unit="utt", disable=not progress)
    results = []
    try:
        if nj <= 1:
            import torch

            threads = torch.get_num_threads()
            try:
                _init_worker(str(wav_dir), sample_rate)
                for plan in plans:
                    results.append(_render_to_file(plan))
                    bar.update()
            finally:
                torch.set_num_threads(threads)
                server = _worker.pop("server", None)
                if server is not None:
                    server.close()
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(
                nj, initializer=_init_worker, initargs=(str(wav_dir), sample_rate)
            ) as pool:
                chunk = max(1, min(16, len(plans) // (4 * nj)))
                for res in pool.imap(_render_to_file, plans, chunksize=chunk):
                    results.append(res)
                    bar.update()
    finally:
        bar.close()
    return results


# ----------------------------------------------------------------------------- build


def _check_output(out_dir: Path, wav_dir: Path, overwrite: bool) -> None:
    existing = [n for n in _DATA_FILES if (out_dir / n).exists()]
    has_wavs = wav_dir.is_dir() and any(wav_dir.glob("*.wav"))
    if (existing or has_wavs) and not overwrite:
        what = ", ".join(existing) or f"audio files in {wav_dir}"
        raise UserError(
            f"{out_dir}: already holds a data dir ({what}); choose another directory or pass "
            "--overwrite to replace it"
        )
    if overwrite and (out_dir / "wav.scp").is_file():
        # remove the audio of the previous build that lives in our wav dir (nothing else)
        for entry in read_table(out_dir / "wav.scp").values():
            p = Path(entry)
            if p.parent.resolve() == wav_dir.resolve() and p.suffix == ".wav" and p.is_file():
                p.unlink()


def build_corpus(
    out_dir: str | Path,
    config: SynthConfig,
    *,
    nj: int = 1,
    wav_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SynthReport:
    """Synthesize ``config.num_utts`` utterances into the data dir ``out_dir``.

    Audio goes to ``wav_dir`` (default ``out_dir/wav``) and wav.scp holds absolute paths.
    An utterance that fails is reported in ``SynthReport.failed`` and in
    ``out_dir/synth_failures`` and left out; the rest go on. Refuses to replace an
    existing data dir unless ``overwrite``.
    """
    out_dir = Path(out_dir).absolute()
    wav_dir = Path(wav_dir).absolute() if wav_dir is not None else out_dir / "wav"
    if nj < 1:
        raise UserError(f"--nj must be at least 1 (got {nj})")
    _check_output(out_dir, wav_dir, overwrite)
    with EspeakServer() as server:
        accents, checks = select_accents(server, config.accents, config.exclude_accents)
        voices = {a: server.resolve(a) for a in accents}
        missing = [v for v in VARIANTS if not server.has_variant(v)]
        if missing:
            raise EspeakError(
                f"espeak-ng data in {server.data_path} lacks voice variant(s) {', '.join(missing)}"
            )
        version = server.version
    plans = plan_corpus(config, voices)
    wav_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = _run_plans(plans, wav_dir, config.sample_rate, nj, progress)
    seconds = time.perf_counter() - start

    failed = {utt: why for utt, _, why in results if why is not None}
    dur = {utt: d for utt, d, why in results if why is None}
    if not dur:
        first = next(iter(failed.items()))
        raise UserError(f"every utterance failed to synthesize; first: {first[0]}: {first[1]}")
    ok = [p for p in plans if p.utt in dur]
    dd = DataDir(
        wav_scp={p.utt: str(wav_dir / f"{p.utt}.wav") for p in ok},
        text={p.utt: p.speech.text for p in ok},
        utt2spk={p.utt: p.spk for p in ok},
        utt2dur=dur,
        groups={
            "accent": {p.utt: p.accent for p in ok},
            "family": {p.utt: accent_by_code(p.accent).family for p in ok},
            "noise": {p.utt: p.noise for p in ok},
        },
        extra={"snr": {p.utt: "inf" if p.snr is None else f"{p.snr:g}" for p in ok}},
    )
    if config.reverb:
        dd.groups["reverb"] = {p.utt: "reverb" for p in ok}
        dd.extra["rt60"] = {p.utt: f"{p.rt60:g}" for p in ok}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_datadir(dd, out_dir)
    failures = out_dir / "synth_failures"
    if failed:
        atomic_write_text(failures, "".join(f"{u} {w}\n" for u, w in sorted(failed.items())))
    elif failures.exists():
        failures.unlink()
    meta = {
        "config": asdict(config),
        "accents": {a: voices[a] for a in accents},
        "families": {a: accent_by_code(a).family for a in accents},
        "espeak_ng": version,
        "voice_checks": [asdict(c) for c in checks],
    }
    atomic_write_text(out_dir / "synth.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return SynthReport(
        out_dir=out_dir,
        utts=len(ok),
        failed=failed,
        seconds=seconds,
        audio_seconds=float(sum(dur.values())),
        nj=nj,
        checks=checks,
    )
