"""Transcribe audio files: any format soundfile reads, any sample rate and channel count.

Each file is loaded as mono at the model's rate; a file longer than ``window_seconds``
is cut into windows at the quietest 10 ms frame of each window's last quarter, the
windows are decoded as one batch and their words stitched with time offsets. A file
that fails gives a ``FileResult`` with ``error`` set; the others are still transcribed.

Per file: text, confidence (mean word posterior), word timestamps (CTC forced
alignment), the label head's probabilities (``accent`` -> {value: p}) with the
predicted value, and the decode time.
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
    "Transcriber",
    "collect_inputs",
    "split_windows",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".aiff", ".aif", ".au", ".w64")


@dataclass
class FileResult:
    """Transcription of one file; ``error`` is set (and the rest empty) when it failed."""

    path: str
    text: str = ""
    confidence: float | None = None
    words: list[WordTiming] = field(default_factory=list)
    labels: dict[str, dict[str, float]] = field(default_factory=dict)
    predicted: dict[str, str] = field(default_factory=dict)
    duration: float = 0.0
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        out: dict = {
            "path": self.path,
            "text": self.text,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "words": [w.to_dict() for w in self.words],
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


class Transcriber:
    """Transcribe files with a model package.

    ``routing``: inference routing (``inference_routing``: forced labels, masked experts;
    None = label-free); ``accent``: alias of forcing ``accent`` (the model must have been
    trained with accent guidance); ``timestamps``: align words (CTC forced alignment).
    """

    def __init__(
        self,
        package,
        cfg: DecodeConfig,
        *,
        accent: str | None = None,
        routing=None,
        timestamps: bool = True,
    ) -> None:
        self.package = package
        self.cfg = cfg
        self.recognizer = Recognizer.from_package(package, cfg)
        self.timestamps = timestamps
        self.routing = routing
        if accent is not None:
            forced = dict(routing.forced) if routing is not None else {}
            mask = dict(routing.expert_mask) if routing is not None else {}
            self.routing = inference_routing(package, forced, mask, accent=accent)
        if cfg.window_seconds <= 0:
            raise UserError(f"window_seconds must be positive, got {cfg.window_seconds}")

    def transcribe(self, path: str) -> FileResult:
        """One file; any failure is returned as ``FileResult.error``."""
        t0 = time.perf_counter()
        try:
            result = self._transcribe(path)
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

    def _transcribe(self, path: str) -> FileResult:
        from moe_asr.audio import load_audio
        from moe_asr.data.features import compute_fbank

        fcfg = self.package.config.data.features
        sr = fcfg.sample_rate
        wav = load_audio(path, sr)
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
        label_sum: dict[str, dict[str, float]] = {}
        weight = sum(end - start for start, end, _ in feats)
        for (start, end, _), rec in zip(feats, recs):
            if rec.text:
                texts.append(rec.text)
            if self.timestamps:
                words += align_words(
                    rec.log_probs,
                    rec.tokens,
                    self.package.tokenizer,
                    frame_seconds=self.recognizer.frame_seconds,
                    offset=start,
                    max_time=end,
                )
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
            words=words,
            labels=labels,
            predicted=predicted,
            duration=duration,
        )
