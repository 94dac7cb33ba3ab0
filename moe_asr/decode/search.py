"""``Recognizer``: a model + tokenizer + decode options -> transcripts of feature batches.

One place that maps a decode mode to its search:

- ``ctc_greedy``: best path, batched;
- ``ctc_prefix_beam``: flashlight prefix beam search (+ optional KenLM), batched;
- ``attention``: attention beam search with joint CTC prefix scoring (``ctc_weight``),
  one utterance at a time, vectorised over the beam;
- ``attention_rescoring``: the CTC prefix beam's ``beam``-best rescored by the decoder, the
  first pass's LM score kept (U2++ two-pass with an LM).

The encoder always runs on the whole batch; with ``chunk_frames`` > 0 under the
streaming chunk mask (the offline simulation of streaming, ``moe_asr.decode.streaming``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from moe_asr.config import DecodeConfig
from moe_asr.decode.ctc import CtcBeamDecoder, DecodeError, Hypothesis, ctc_greedy
from moe_asr.decode.joint import joint_beam_search
from moe_asr.decode.rescore import attention_rescore

__all__ = [
    "MODES",
    "Recognition",
    "Recognizer",
    "pad_features",
    "check_options",
    "inference_routing",
]

MODES = ("ctc_greedy", "ctc_prefix_beam", "attention", "attention_rescoring")


@dataclass
class Recognition:
    """Result for one utterance: the best hypothesis first in ``nbest``.

    ``log_probs``: (T', V) CTC log-probabilities (kept for alignment);
    ``labels``: label name -> {value: probability} from the model's label head.
    """

    text: str
    tokens: list[int]
    score: float
    nbest: list[tuple[str, float]]
    hyps: list[Hypothesis]
    log_probs: Tensor
    labels: dict[str, dict[str, float]] = field(default_factory=dict)


def pad_features(feats: list[Tensor]) -> tuple[Tensor, Tensor]:
    """list of (T_i, F) -> (B, T_max, F) zero-padded, lengths (B,)."""
    lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
    out = feats[0].new_zeros(len(feats), int(lens.max()), feats[0].shape[1])
    for i, f in enumerate(feats):
        out[i, : f.shape[0]] = f
    return out, lens


def check_options(cfg: DecodeConfig) -> None:
    """Raise DecodeError for an unknown mode or out-of-range option."""
    if cfg.mode not in MODES:
        raise DecodeError(f"decode mode {cfg.mode!r} is unknown; choose one of {', '.join(MODES)}")
    if cfg.beam < 1 or cfg.nbest < 1 or cfg.batch_size < 1:
        raise DecodeError(
            f"beam ({cfg.beam}), nbest ({cfg.nbest}) and batch_size ({cfg.batch_size}) "
            "must be at least 1"
        )
    if not 0.0 <= cfg.ctc_weight <= 1.0:
        raise DecodeError(f"ctc_weight must be in [0, 1], got {cfg.ctc_weight}")
    if cfg.chunk_frames < 0 or cfg.left_chunks < -1:
        raise DecodeError(
            f"chunk_frames ({cfg.chunk_frames}) must be >= 0 (0 = full context) and "
            f"left_chunks ({cfg.left_chunks}) >= -1 (-1 = all history)"
        )


def inference_routing(
    package,
    forced: dict[str, str] | None = None,
    expert_mask: dict[int, list[int]] | None = None,
    *,
    accent: str | None = None,
):
    """Checked RoutingOptions for a package's model, or None (label-free, nothing masked).

    ``forced``: label -> value (``--force noise=white``); ``accent``: the ``--accent X``
    alias of ``forced["accent"] = X``; ``expert_mask``: layer -> experts switched off.
    Raises a UserError naming the option when the model cannot route that way."""
    forced = dict(forced or {})
    if accent is not None:
        if forced.get("accent", accent) != accent:
            raise DecodeError(f"--accent {accent} contradicts --force accent={forced['accent']}")
        forced["accent"] = accent
    if not forced and not expert_mask:
        return None
    return package.model.forced_routing(forced, expert_mask)


class Recognizer:
    """Decode raw fbank features with a model package's model and tokenizer.

    ``model``: an AsrModel in eval mode (label names and probabilities come from it);
    ``label_vocab``: the package's, kept for callers.
    """

    def __init__(
        self, model, tokenizer, cfg: DecodeConfig, label_vocab=None, *, frame_shift_s: float = 0.01
    ) -> None:
        check_options(cfg)
        if cfg.chunk_frames and not model.streaming:
            raise DecodeError(
                f"--chunk-frames {cfg.chunk_frames}: the model was not trained for streaming "
                "(model.streaming.enabled); decode it with full context"
            )
        self._frame_shift_s = frame_shift_s
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.label_vocab = label_vocab
        self.sos = self.eos = tokenizer.vocab_size - 1
        self._beam: CtcBeamDecoder | None = None
        if cfg.mode in ("ctc_prefix_beam", "attention_rescoring"):
            nbest = cfg.nbest if cfg.mode == "ctc_prefix_beam" else cfg.beam
            self._beam = CtcBeamDecoder(
                tokenizer.tokens,
                beam=cfg.beam,
                nbest=nbest,
                lm_path=cfg.lm_path,
                lm_weight=cfg.lm_weight,
                word_score=cfg.word_score,
                lm_unit=cfg.lm_unit,
                spell=tokenizer.encode,
            )

    @property
    def min_frames(self) -> int:
        """Fewest feature frames the encoder accepts."""
        return int(self.model.encoder.frontend.min_input_frames)

    @property
    def frame_seconds(self) -> float:
        """Duration of one encoder output frame, seconds."""
        return self.model.cfg.subsampling * self._frame_shift_s

    @classmethod
    def from_package(cls, package, cfg: DecodeConfig) -> Recognizer:
        """Recognizer for a ``moe_asr.package.ModelPackage``."""
        shift = package.config.data.features.frame_shift_ms / 1000.0
        return cls(package.model, package.tokenizer, cfg, package.label_vocab, frame_shift_s=shift)

    @torch.no_grad()
    def recognize(self, feats: list[Tensor], routing=None) -> list[Recognition]:
        """feats: list of (T_i, F) raw fbank -> one Recognition per item, in order."""
        device = self.model.cmvn_mean.device
        x, lens = pad_features(feats)
        enc = self.model.encode(
            x.to(device),
            lens.to(device),
            routing,
            chunk_frames=self.cfg.chunk_frames,
            left_chunks=self.cfg.left_chunks,
        )
        log_probs = self.model.ctc_log_probs(enc)  # (B, T', V)
        out_lens = enc.lens
        mode = self.cfg.mode
        if mode == "ctc_greedy":
            nbests = ctc_greedy(log_probs, out_lens)
        elif mode == "ctc_prefix_beam":
            assert self._beam is not None
            nbests = self._beam(log_probs, out_lens)
        elif mode == "attention_rescoring":
            assert self._beam is not None
            nbests = [
                attention_rescore(
                    self.model.decoder,
                    enc.out[b, : int(out_lens[b])],
                    log_probs[b, : int(out_lens[b])],
                    hyps,
                    ctc_weight=self.cfg.ctc_weight,
                    sos=self.sos,
                    eos=self.eos,
                    keep_lm=True,  # the LM part of the first pass (0 without an LM)
                )
                for b, hyps in enumerate(self._beam(log_probs, out_lens))
            ]
        else:
            nbests = [
                joint_beam_search(
                    log_probs[b, : int(out_lens[b])],
                    enc.out[b, : int(out_lens[b])],
                    self.model.decoder.step,
                    beam=self.cfg.beam,
                    ctc_weight=self.cfg.ctc_weight,
                    sos=self.sos,
                    eos=self.eos,
                    nbest=self.cfg.nbest,
                )
                for b in range(x.shape[0])
            ]
        labels = {
            name: [
                {v: round(float(p), 4) for v, p in zip(lp.values, row)} for row in lp.probs.cpu()
            ]
            for name, lp in self.model.label_probs(enc).items()
        }
        results = []
        for b, hyps in enumerate(nbests):
            hyps = hyps[: self.cfg.nbest]
            best = hyps[0]
            results.append(
                Recognition(
                    text=self.tokenizer.decode(best.tokens),
                    tokens=list(best.tokens),
                    score=best.score,
                    nbest=[(self.tokenizer.decode(h.tokens), h.score) for h in hyps],
                    hyps=hyps,
                    log_probs=log_probs[b, : int(out_lens[b])].cpu(),
                    labels={name: probs[b] for name, probs in labels.items()},
                )
            )
        return results
