"""Streaming recognition (U2++ two-pass): audio in pieces of any size, partial results per
chunk, attention rescoring of the n-best at the end.

``StreamingRecognizer`` owns one stream: ``accept_waveform(samples)`` computes fbank
incrementally (``StreamingFbank``), encodes every completed chunk of ``chunk_frames``
encoder frames with the encoder caches (``AsrModel.encode_chunk``: attention keys/values
of ``left_chunks`` chunks of history, convolution and front-end state; MoE routing per
chunk) and advances the first-pass search; it returns the partial result. ``finalize()``
encodes the remaining frames as a last, shorter chunk, ends the search and returns the
final result with word times.

First pass by ``DecodeConfig.mode``: ``ctc_greedy`` (best path), ``ctc_prefix_beam``
(flashlight's incremental prefix beam search, with the word LM when given) and
``attention_rescoring`` (the same search; its ``beam``-best are rescored by the attention
decoder over the whole utterance's encoder output, the LM score kept). The final result
equals offline decoding with the same chunk mask (``decode --chunk-frames``). Memory: the
encoder caches stay constant in size once ``left_chunks`` chunks are seen; the encoder
output and CTC log-probabilities (for rescoring and word times) grow with the audio.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from moe_asr.config import DecodeConfig
from moe_asr.data.features import StreamingFbank
from moe_asr.decode.align import WordTiming, align_words
from moe_asr.decode.ctc import CtcBeamDecoder, DecodeError, Hypothesis
from moe_asr.decode.rescore import attention_rescore
from moe_asr.decode.transcribe import FileResult

__all__ = ["STREAMING_MODES", "PartialResult", "StreamResult", "StreamingRecognizer", "stream_file"]

STREAMING_MODES = ("ctc_greedy", "ctc_prefix_beam", "attention_rescoring")
DEFAULT_CHUNK_FRAMES = 16


@dataclass
class PartialResult:
    """Best hypothesis so far: text, tokens, and ``time``: seconds of audio encoded."""

    text: str
    tokens: list[int]
    time: float

    def to_dict(self) -> dict:
        return {"partial": self.text, "time": round(self.time, 3)}


@dataclass
class StreamResult:
    """Final result of a stream: text, tokens, score, word times, n-best (text, score),
    ``duration`` (seconds of audio) and ``latency`` (seconds spent in ``finalize``)."""

    text: str
    tokens: list[int]
    score: float
    words: list[WordTiming] = field(default_factory=list)
    nbest: list[tuple[str, float]] = field(default_factory=list)
    duration: float = 0.0
    latency: float = 0.0

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "words": [w.to_dict() for w in self.words],
            "duration": round(self.duration, 3),
            "final_latency": round(self.latency, 4),
        }


class _GreedySearch:
    """Incremental best path with the ``CtcBeamDecoder`` streaming interface."""

    def begin(self) -> None:
        self._tokens: list[int] = []
        self._frames: list[int] = []
        self._prev = -1
        self._score = 0.0
        self._t = 0

    def step(self, log_probs: Tensor) -> None:
        best, ids = log_probs.max(-1)  # (T,)
        for i, tok in enumerate(ids.tolist()):
            if tok != 0 and tok != self._prev:
                self._tokens.append(tok)
                self._frames.append(self._t + i)
            self._prev = tok
        self._score += float(best.sum())
        self._t += ids.numel()

    def partial(self) -> Hypothesis:
        return Hypothesis(list(self._tokens), self._score, list(self._frames))

    def end(self) -> list[Hypothesis]:
        return [self.partial()]


class StreamingRecognizer:
    """One audio stream through a streaming model package, chunk by chunk.

    ``package``: a loaded ``ModelPackage`` of a model trained with ``model.streaming``;
    ``cfg``: decode options (default: the package's); ``chunk_frames``/``left_chunks``:
    default ``cfg.chunk_frames`` (16 when 0) and ``cfg.left_chunks``; ``routing``:
    ``RoutingOptions`` (None = label-free); ``timestamps``: word times at ``finalize``.
    Use ``reset()`` to start the next stream.
    """

    def __init__(
        self,
        package,
        cfg: DecodeConfig | None = None,
        *,
        chunk_frames: int | None = None,
        left_chunks: int | None = None,
        routing=None,
        timestamps: bool = True,
    ) -> None:
        cfg = package.config.decode if cfg is None else cfg
        if cfg.mode not in STREAMING_MODES:
            raise DecodeError(
                f"decode mode {cfg.mode!r} cannot stream; use one of {', '.join(STREAMING_MODES)}"
            )
        chunk = chunk_frames or cfg.chunk_frames or DEFAULT_CHUNK_FRAMES
        left = cfg.left_chunks if left_chunks is None else left_chunks
        self.cfg = replace(cfg, chunk_frames=chunk, left_chunks=left)
        self.package = package
        self.model = package.model
        self.tokenizer = package.tokenizer
        self.routing = routing
        self.timestamps = timestamps
        self.model.init_stream()  # raises UserError for a non-streaming model
        fcfg = package.config.data.features
        self._fcfg = fcfg
        front = self.model.encoder.frontend
        self._first = front.context_frames + front.factor * chunk  # input frames, 1st chunk
        self._next = front.factor * chunk
        self.frame_seconds = front.factor * fcfg.frame_shift_ms / 1000.0
        self.sos = self.eos = self.tokenizer.vocab_size - 1
        if cfg.mode == "ctc_greedy":
            self._search: _GreedySearch | CtcBeamDecoder = _GreedySearch()
        else:
            self._search = CtcBeamDecoder(
                self.tokenizer.tokens,
                beam=cfg.beam,
                nbest=cfg.nbest if cfg.mode == "ctc_prefix_beam" else cfg.beam,
                lm_path=cfg.lm_path,
                lm_weight=cfg.lm_weight,
                word_score=cfg.word_score,
                lm_unit=cfg.lm_unit,
                spell=self.tokenizer.encode,
            )
        self.reset()

    @property
    def sample_rate(self) -> int:
        """Sample rate ``accept_waveform`` expects (the model's features)."""
        return self._fcfg.sample_rate

    @property
    def chunk_samples(self) -> int:
        """Samples of audio in one chunk (a natural piece size for feeding)."""
        shift = int(self._fcfg.sample_rate * self._fcfg.frame_shift_ms / 1000.0)
        return self._next * shift

    def reset(self) -> None:
        """Forget the current stream; the next samples start a new one."""
        self._fbank = StreamingFbank(self._fcfg)
        self._pending = torch.zeros(0, self._fcfg.num_mel_bins)  # fbank frames not encoded
        self.cache = self.model.init_stream()
        self._outs: list[Tensor] = []  # encoder output per chunk (1, t, D)
        self._log_probs: list[Tensor] = []  # (t, V) per chunk
        self._samples = 0
        self._search.begin()

    @torch.no_grad()
    def accept_waveform(self, samples: np.ndarray | Tensor) -> PartialResult:
        """Feed (N,) float samples in [-1, 1] at the model's rate -> the partial result."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._samples += x.size
        return self.accept_features(self._fbank.accept(x))

    @torch.no_grad()
    def accept_features(self, feats: Tensor) -> PartialResult:
        """Feed (t, F) raw fbank frames -> the partial result (for feature-level callers)."""
        self._pending = torch.cat([self._pending, feats.float().cpu()])
        while True:
            need = self._first if self.cache.offset == 0 else self._next
            if self._pending.shape[0] < need:
                break
            self._encode(self._pending[:need])
            self._pending = self._pending[need:]
        return self.partial()

    def partial(self) -> PartialResult:
        hyp = self._search.partial()
        t = self.cache.offset * self.frame_seconds
        return PartialResult(self.tokenizer.decode(hyp.tokens), list(hyp.tokens), t)

    @torch.no_grad()
    def finalize(self) -> StreamResult:
        """Encode what is left as a last chunk, end the search, rescore -> final result."""
        t0 = time.perf_counter()
        if self._pending.shape[0]:
            self._encode(self._pending)
            self._pending = self._pending[:0]
        nbest = self._search.end()
        duration = self._samples / self._fcfg.sample_rate
        if not self._outs or nbest[0].score == float("-inf"):  # no frame or no hypothesis
            self._search.begin()
            return StreamResult("", [], float("-inf"), duration=duration)
        memory = torch.cat(self._outs, 1)[0]  # (T', D)
        log_probs = torch.cat(self._log_probs)  # (T', V)
        if self.cfg.mode == "attention_rescoring":
            nbest = attention_rescore(
                self.model.decoder,
                memory,
                log_probs,
                nbest,
                ctc_weight=self.cfg.ctc_weight,
                sos=self.sos,
                eos=self.eos,
                keep_lm=True,
            )
        nbest = nbest[: self.cfg.nbest]
        best = nbest[0]
        words: list[WordTiming] = []
        if self.timestamps:
            words = align_words(
                log_probs,
                best.tokens,
                self.tokenizer,
                frame_seconds=self.frame_seconds,
                max_time=duration,
            )
        result = StreamResult(
            text=self.tokenizer.decode(best.tokens),
            tokens=list(best.tokens),
            score=best.score,
            words=words,
            nbest=[(self.tokenizer.decode(h.tokens), h.score) for h in nbest],
            duration=duration,
            latency=time.perf_counter() - t0,
        )
        self._search.begin()  # ready for reset() / a new stream
        return result

    def _encode(self, feats: Tensor) -> None:
        """One chunk of fbank frames (t, F) through the encoder, CTC head and search."""
        device = self.model.cmvn_mean.device
        enc, self.cache = self.model.encode_chunk(
            feats[None].to(device),
            self.cache,
            chunk_frames=self.cfg.chunk_frames,
            left_chunks=self.cfg.left_chunks,
            routing=self.routing,
        )
        if enc.out.shape[1] == 0:
            return
        log_probs = self.model.ctc_log_probs(enc.out)[0].cpu()  # (t, V)
        self._outs.append(enc.out)
        self._log_probs.append(log_probs)
        self._search.step(log_probs)


def stream_file(path: str, recognizer: StreamingRecognizer) -> Iterator[PartialResult | FileResult]:
    """Stream one audio file through ``recognizer`` in chunk-sized pieces: a
    ``PartialResult`` per piece, then the ``FileResult`` (``seconds``: the final latency).
    A file that cannot be read raises UserError."""
    from moe_asr.audio import load_audio

    wav = load_audio(path, recognizer.sample_rate)
    recognizer.reset()
    piece = recognizer.chunk_samples
    for start in range(0, len(wav), piece):
        yield recognizer.accept_waveform(wav[start : start + piece])
    final = recognizer.finalize()
    words = final.words
    yield FileResult(
        path=path,
        text=final.text,
        confidence=sum(w.confidence for w in words) / len(words) if words else None,
        words=words,
        duration=final.duration,
        seconds=final.latency,
    )
