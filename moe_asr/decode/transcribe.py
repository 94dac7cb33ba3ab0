"""Transcribe audio: files in any format soundfile reads, or arrays; any sample rate and
channel count.

Each input is loaded as mono at the model's rate; one longer than ``window_seconds``
is cut into windows at the quietest 10 ms frame of each window's last quarter, the
windows are decoded as one batch and their words stitched with time offsets. A file
that fails gives a ``FileResult`` with ``error`` set; the others are still transcribed.

Per input: text, confidence (mean word posterior of a CTC forced alignment, computed with
or without timestamps in the output), word timestamps, segments (one per window, split
again at pauses of ``pause_seconds`` between words, each with its times and text), the
n-best alternatives with scores, the label head's probabilities (``accent`` -> {value: p})
with the predicted value, and the decode time.

    from moe_asr.decode import Transcriber
    t = Transcriber.load("exp/demo_char/model.pt")       # or an exported model.onnx
    r = t.transcribe("talk.wav")                          # or t.transcribe(wav, sample_rate=8000)
    r.text, r.confidence, r.words, r.segments, r.predicted
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moe_asr.config import DecodeConfig
from moe_asr.decode.align import WordTiming, align_words
from moe_asr.decode.search import Recognizer, inference_routing
from moe_asr.errors import UserError

__all__ = [
    "AUDIO_EXTENSIONS",
    "FileResult",
    "Segment",
    "Transcriber",
    "collect_inputs",
    "split_windows",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".aiff", ".aif", ".au", ".w64")


@dataclass
class Segment:
    """A stretch of one input: ``start``/``end`` in seconds, its text and words."""

    start: float
    end: float
    text: str
    words: list[WordTiming] = field(default_factory=list)

    def to_dict(self, *, words: bool = True) -> dict:
        out: dict = {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text}
        if words:
            out["words"] = [w.to_dict() for w in self.words]
        return out


@dataclass
class FileResult:
    """Transcription of one input; ``error`` is set (and the rest empty) when it failed.

    ``alternatives``: (text, score) best first; for an input of several windows the k-th
    alternative joins each window's k-th (its last when it has fewer), scores summed.
    ``timestamps``: whether ``to_dict`` includes the word times.
    """

    path: str
    text: str = ""
    confidence: float | None = None
    words: list[WordTiming] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    labels: dict[str, dict[str, float]] = field(default_factory=dict)
    predicted: dict[str, str] = field(default_factory=dict)
    duration: float = 0.0
    seconds: float = 0.0
    error: str | None = None
    timestamps: bool = True

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        out: dict = {
            "path": self.path,
            "text": self.text,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "words": [w.to_dict() for w in self.words] if self.timestamps else [],
            "segments": [g.to_dict(words=self.timestamps) for g in self.segments],
            "alternatives": [{"text": t, "score": round(sc, 4)} for t, sc in self.alternatives],
            "duration": round(self.duration, 3),
            "decode_seconds": round(self.seconds, 4),
        }
        for name, probs in self.labels.items():
            out[name] = self.predicted.get(name)
            out[f"{name}_probs"] = probs
        return out


def collect_inputs(items: list[str], list_file: str | Path | None = None) -> list[str]:
    """Files to transcribe: files as given, directories searched recursively for audio
    (sorted), then the lines of ``list_file`` (``#`` comments and blank lines skipped).
    Missing paths are kept, so that they are reported as failed files."""
    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS
            )
            if not found:
                raise UserError(
                    f"{p}: directory holds no audio files ({', '.join(AUDIO_EXTENSIONS)})"
                )
            out.extend(found)
        else:
            out.append(item)
    if list_file is not None:
        path = Path(list_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: cannot read the file list ({e})") from e
        out.extend(s.strip() for s in lines if s.strip() and not s.strip().startswith("#"))
    if not out:
        raise UserError("no input: give audio files, directories or --list FILE")
    return out


def split_windows(wav: np.ndarray, sr: int, window_s: float) -> list[tuple[int, int]]:
    """Sample ranges of at most ``window_s`` seconds covering the signal.

    Each cut lies in the last quarter of its window, in the middle of the longest run of
    quiet 10 ms frames there (energy within 5% of the range above the quietest frame),
    so that windows break in pauses rather than inside words.
    """
    num_samples = len(wav)
    window = max(1, int(window_s * sr))
    if num_samples <= window:
        return [(0, num_samples)]
    hop = max(1, sr // 100)
    spans: list[tuple[int, int]] = []
    pos = 0
    while num_samples - pos > window:
        lo, hi = pos + window - window // 4, pos + window
        n = (hi - lo) // hop
        cut = hi
        if n > 0:
            energy = (wav[lo : lo + n * hop].astype(np.float64).reshape(n, hop) ** 2).sum(1)
            quiet = energy <= energy.min() + 0.05 * (energy.max() - energy.min())
            best, best_len, run_start = 0, 0, None
            for i, q in enumerate([*quiet.tolist(), False]):
                if q and run_start is None:
                    run_start = i
                elif not q and run_start is not None:
                    if i - run_start > best_len:
                        best, best_len = run_start, i - run_start
                    run_start = None
            cut = lo + (2 * best + best_len) * hop // 2
        spans.append((pos, cut))
        pos = cut
    spans.append((pos, num_samples))
    return spans


def _split_at_pauses(
    words: list[WordTiming], start: float, end: float, pause: float
) -> list[Segment]:
    """Segments of one window: a new one wherever ``pause`` seconds pass between words."""
    if not words:
        return []
    groups: list[list[WordTiming]] = [[words[0]]]
    for prev, w in zip(words, words[1:]):
        if pause > 0 and w.start - prev.end >= pause:
            groups.append([])
        groups[-1].append(w)
    out = []
    for i, g in enumerate(groups):
        a = start if i == 0 else g[0].start
        b = end if i == len(groups) - 1 else g[-1].end
        out.append(Segment(a, b, " ".join(w.word for w in g), g))
    return out


def _join_alternatives(per_window: list[list[tuple[str, float]]]) -> list[tuple[str, float]]:
    """k-th alternative of several windows: each window's k-th (or last), texts joined."""
    per_window = [alts for alts in per_window if alts]
    if not per_window:
        return []
    out = []
    for k in range(max(len(a) for a in per_window)):
        picks = [alts[min(k, len(alts) - 1)] for alts in per_window]
        text = " ".join(t for t, _ in picks if t)
        out.append((text, sum(sc for _, sc in picks)))
    return out


class Transcriber:
    """Transcribe audio with a model package (``moe_asr.package.ModelPackage``, or an ONNX
    export loaded by ``moe_asr.decode.onnx.load_model``).

    ``routing``: inference routing (``inference_routing``: forced labels, masked experts;
    None = label-free); ``accent``: alias of forcing ``accent`` (the model must have been
    trained with accent guidance); ``timestamps``: keep word times in the output (the
    alignment runs regardless: it gives the confidence); ``pause_seconds``: a silence
    between words this long starts a new segment (0: one segment per window).
    """

    def __init__(
        self,
        package,
        cfg: DecodeConfig,
        *,
        accent: str | None = None,
        routing=None,
        timestamps: bool = True,
        pause_seconds: float = 1.0,
    ) -> None:
        self.package = package
        self.cfg = cfg
        self.recognizer = Recognizer.from_package(package, cfg)
        self.timestamps = timestamps
        self.pause_seconds = pause_seconds
        self.routing = routing
        if accent is not None:
            forced = dict(routing.forced) if routing is not None else {}
            mask = dict(routing.expert_mask) if routing is not None else {}
            self.routing = inference_routing(package, forced, mask, accent=accent)
        if cfg.window_seconds <= 0:
            raise UserError(f"window_seconds must be positive, got {cfg.window_seconds}")

    @classmethod
    def load(
        cls,
        model: str | Path,
        *,
        device: str = "cpu",
        accent: str | None = None,
        timestamps: bool = True,
        pause_seconds: float = 1.0,
        **decode: object,
    ) -> Transcriber:
        """A Transcriber for ``model`` (``model.pt`` or an exported ``.onnx``); ``decode``
        overrides the package's decode config (``mode="ctc_prefix_beam", beam=20, lm_path=...``)."""
        import dataclasses

        from moe_asr.decode.onnx import decode_config_for, load_model

        package = load_model(model, device)
        known = {f.name for f in dataclasses.fields(DecodeConfig)}
        unknown = sorted(set(decode) - known)
        if unknown:
            raise UserError(
                f"unknown decode option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        cfg = dataclasses.replace(package.config.decode, **decode)
        cfg = decode_config_for(package, cfg, mode_given="mode" in decode)
        return cls(package, cfg, accent=accent, timestamps=timestamps, pause_seconds=pause_seconds)

    def transcribe(
        self, audio: str | Path | np.ndarray, sample_rate: int | None = None
    ) -> FileResult:
        """One input: a path, or an array (samples,) or (samples, channels) at
        ``sample_rate``; any failure is returned as ``FileResult.error``."""
        t0 = time.perf_counter()
        path = "<array>" if isinstance(audio, np.ndarray) else str(audio)
        try:
            result = self._transcribe(audio, path, sample_rate)
        except UserError as e:
            msg = str(e)
            return FileResult(path=path, error=msg if path in msg else f"{path}: {msg}")
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the others
            return FileResult(path=path, error=f"{path}: {type(e).__name__}: {e}")
        result.seconds = time.perf_counter() - t0
        return result

    def transcribe_many(self, paths: list[str]) -> Iterator[FileResult]:
        for path in paths:
            yield self.transcribe(path)

    def _load(self, audio: str | Path | np.ndarray, sample_rate: int | None) -> np.ndarray:
        """Mono float32 at the model's rate."""
        from moe_asr.audio import load_audio, resample

        sr = self.package.config.data.features.sample_rate
        if not isinstance(audio, np.ndarray):
            return load_audio(audio, sr)
        if sample_rate is None:
            raise UserError("transcribe(array): give sample_rate=")
        wav = np.asarray(audio, dtype=np.float32)
        if wav.ndim == 2:
            wav = wav.mean(axis=1)  # (samples, channels) -> mono
        if wav.ndim != 1:
            raise UserError(
                f"audio array must be (samples,) or (samples, channels), got {wav.shape}"
            )
        return resample(np.ascontiguousarray(wav), int(sample_rate), sr)

    def _transcribe(
        self, audio: str | Path | np.ndarray, path: str, sample_rate: int | None
    ) -> FileResult:
        from moe_asr.data.features import compute_fbank

        fcfg = self.package.config.data.features
        sr = fcfg.sample_rate
        wav = self._load(audio, sample_rate)
        duration = len(wav) / sr
        spans = split_windows(wav, sr, self.cfg.window_seconds)
        feats = []
        for a, b in spans:
            f = compute_fbank(wav[a:b], fcfg)
            if f.shape[0] < self.recognizer.min_frames:
                if len(spans) == 1:
                    raise UserError(f"{path}: {duration:.3f} s of audio is too short to transcribe")
                continue  # a sliver at the end of a long file
            feats.append((a / sr, b / sr, f))
        recs = self.recognizer.recognize([f for _, _, f in feats], self.routing)
        words: list[WordTiming] = []
        texts: list[str] = []
        segments: list[Segment] = []
        label_sum: dict[str, dict[str, float]] = {}
        weight = sum(end - start for start, end, _ in feats)
        for (start, end, _), rec in zip(feats, recs):
            if rec.text:
                texts.append(rec.text)
            window_words = align_words(
                rec.log_probs,
                rec.tokens,
                self.package.tokenizer,
                frame_seconds=self.recognizer.frame_seconds,
                offset=start,
                max_time=end,
            )
            words += window_words
            if window_words:
                segments += _split_at_pauses(window_words, start, end, self.pause_seconds)
            elif rec.text:  # not alignable: the window is one segment
                segments.append(Segment(start, end, rec.text))
            for name, probs in rec.labels.items():
                acc = label_sum.setdefault(name, {})
                for value, p in probs.items():
                    acc[value] = acc.get(value, 0.0) + p * (end - start)
        labels = {
            name: {v: round(p / weight, 4) for v, p in acc.items()}
            for name, acc in label_sum.items()
        }
        predicted = {name: max(probs, key=probs.get) for name, probs in labels.items() if probs}
        confidence = sum(w.confidence for w in words) / len(words) if words else None
        return FileResult(
            path=path,
            text=" ".join(texts),
            confidence=confidence,
            words=words if self.timestamps else [],
            segments=segments,
            alternatives=_join_alternatives([list(rec.nbest) for rec in recs]),
            labels=labels,
            predicted=predicted,
            duration=duration,
            timestamps=self.timestamps,
        )
