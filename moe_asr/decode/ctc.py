"""CTC decoding: greedy (batched argmax) and prefix beam search with flashlight's decoder.

Both take log-probabilities ``(B, T, V)`` with valid lengths ``(B,)`` and return, per
utterance, an n-best list of ``Hypothesis`` (token ids without blank, score, and the
frame at which each token was first emitted).

The beam search is torchaudio's flashlight-based ``ctc_decoder`` in lexicon-free mode:
the decoder's token list is our vocabulary, with the word-separator piece (``▁`` of the
char tokenizer) as the decoder's silence token. For a tokenizer without a separator
piece (BPE/unigram, where ``▁`` starts a piece) an extra silence column that is never
emitted is appended. Hypotheses that reach the same state are merged by adding their
probabilities (``log_add``); at beam 1 the search still equals greedy decoding.

With a word LM (``lm_unit="word"``, e.g. from ``moe-asr train-lm``) the search becomes
flashlight's lexicon decoder: a lexicon is built from the LM's unigrams spelled with the
model's tokenizer, so hypotheses are sequences of known words scored by the word LM.

An optional token-level KenLM model (ARPA or binary) scores token sequences: its "words"
are the decoder token names (``decoder_token_names``), so a char LM is
trained on space-separated characters with ``|`` between words. KenLM scores are log10;
``lm_weight`` multiplies them. ``word_score`` is added at every word separator
(flashlight's lexicon-free search has no other word boundary).

Streaming: ``begin``, ``step(log_probs)`` per chunk, ``partial()`` (best hypothesis so
far) and ``end()`` (the n-best) run the same search incrementally (flashlight's
``decode_begin/decode_step/decode_end``); the final n-best equals the one-shot search.
Their hypotheses carry ``lm_score`` (the LM and word-score part of ``score``), which
attention rescoring can keep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from moe_asr.errors import UserError
from moe_asr.lm import UNK, arpa_vocabulary, write_lexicon

log = logging.getLogger(__name__)

__all__ = [
    "Hypothesis",
    "DecodeError",
    "ctc_greedy",
    "CtcBeamDecoder",
    "decoder_token_names",
    "WORD_SEP",
]

WORD_SEP = "|"  # decoder name of the word separator (flashlight's silence token)
_SPACE = "▁"
_NEVER = -1.0e5  # log-prob of the appended silence column: never emitted, still finite


# what KenLM writes to the process's stderr (C++) whenever it reads an ARPA file: a hint to
# build a binary, the path, and a 100-character progress bar; a binary needs KenLM's tools,
# which are not a dependency, so the lines are dropped (anything else is passed on)
_KENLM_NOISE = re.compile(
    r"^(Loading the LM will be faster if you build a binary file\.|Reading .*|[-*0-9 ]*)$"
)


@contextlib.contextmanager
def _drop_kenlm_banner() -> Iterator[None]:
    """Capture file descriptor 2 while KenLM loads; re-emit every line but its banner."""
    fd = 2  # C++ writes to the process's fd 2, whatever sys.stderr is now
    try:
        os.fstat(fd)
    except OSError:  # no stderr at all: nothing to filter
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [
                line
                for line in tmp.read().decode("utf-8", "replace").splitlines()
                if not _KENLM_NOISE.match(line.strip())
            ]
            if kept:
                print("\n".join(kept), file=sys.stderr)


class DecodeError(UserError):
    """A decoding option is invalid (unknown mode, missing LM file, bad beam)."""


@dataclass
class Hypothesis:
    """One decoded hypothesis.

    ``tokens``: ids without blank/sos/eos; ``score``: total log score of the search
    that produced it; ``frames``: encoder frame of each token (same length as tokens),
    or empty when the search does not track frames (attention decoding).
    """

    tokens: list[int]
    score: float
    frames: list[int] = field(default_factory=list)
    ctc_score: float | None = None
    att_score: float | None = None
    lm_score: float | None = None  # LM part of ``score``: lm_weight * LM log-prob + word scores


def ctc_greedy(log_probs: Tensor, lens: Tensor, blank: int = 0) -> list[list[Hypothesis]]:
    """Best path: argmax per frame, merge repeats, drop blanks.

    log_probs: (B, T, V), lens: (B,) -> per utterance a one-element n-best whose score
    is the best path's log-probability. The best path (B, T) and ``lens`` come to the host
    in one go (not the (B, T, V) log-probs), so a GPU is synced once per call, not per
    utterance.
    """
    best, ids = log_probs.detach().max(-1)  # (B, T)
    best, ids, lens = best.cpu(), ids.cpu(), lens.cpu()  # no-ops on the CPU
    out: list[list[Hypothesis]] = []
    for b in range(log_probs.shape[0]):
        n = int(lens[b])
        seq = ids[b, :n]
        if n == 0:
            out.append([Hypothesis([], 0.0, [])])
            continue
        new = torch.ones(n, dtype=torch.bool, device=seq.device)
        new[1:] = seq[1:] != seq[:-1]
        keep = new & (seq != blank)
        frames = torch.nonzero(keep).flatten()
        out.append([Hypothesis(seq[frames].tolist(), float(best[b, :n].sum()), frames.tolist())])
    return out


def decoder_token_names(pieces: list[str]) -> tuple[list[str], bool]:
    """Flashlight token names for our pieces, and whether a silence column is appended.

    The char tokenizer's space piece ``▁`` becomes ``|``; pieces are otherwise kept (so a
    token-level KenLM can name them), with whitespace escaped. Without a standalone
    ``▁`` piece, ``|`` is appended as an extra, never-emitted token.
    """
    names = [p.replace(" ", "<sp>").replace("\t", "<tab>") for p in pieces]
    if _SPACE in pieces:
        names[pieces.index(_SPACE)] = WORD_SEP
        return names, False
    if WORD_SEP in names:
        names[names.index(WORD_SEP)] = "<pipe>"
    return [*names, WORD_SEP], True


class CtcBeamDecoder:
    """Frame-synchronous CTC prefix beam search (flashlight), optional KenLM.

    ``pieces``: the tokenizer's piece of every id (blank at 0). ``lm_path``: KenLM ARPA or
    binary, empty for none. ``lm_unit="token"``: the LM is over decoder token names (no
    lexicon). ``lm_unit="word"``: a word LM (``moe-asr train-lm``); hypotheses are restricted
    to the LM's words, spelled with ``spell(word) -> token ids`` (the tokenizer's encode).
    ``word_score`` is added at each word. Beam 1 without an LM equals greedy decoding.
    """

    def __init__(
        self,
        pieces: list[str],
        *,
        beam: int = 10,
        nbest: int = 1,
        blank: int = 0,
        lm_path: str | Path = "",
        lm_weight: float = 0.5,
        word_score: float = 0.0,
        beam_threshold: float = 50.0,
        lm_unit: str = "token",
        spell: Callable[[str], list[int]] | None = None,
    ) -> None:
        from torchaudio.models.decoder import ctc_decoder

        if beam < 1 or nbest < 1:
            raise DecodeError(f"beam ({beam}) and nbest ({nbest}) must be at least 1")
        names, self._extra = decoder_token_names(pieces)
        self._vocab = len(pieces)
        self._nbest = nbest
        self._lm_weight = lm_weight if lm_path else 0.0
        self._word_score = word_score
        self._frames = -1  # frames fed to the incremental search; -1 = not begun
        self._blank = blank
        self._sil = names.index(WORD_SEP)
        lm = None
        lm_dict = None
        lexicon = None
        self._lexicon = False
        self._word_ids: dict[str, list[int]] = {}
        if lm_unit not in ("token", "word"):
            raise DecodeError(f"decode.lm_unit must be token or word, got {lm_unit!r}")
        if lm_path:
            path = Path(lm_path)
            if not path.is_file():
                raise DecodeError(f"{path}: language model file not found (decode.lm_path)")
            lm = str(path)
            if lm_unit == "word":
                if spell is None:
                    raise DecodeError("a word LM needs the tokenizer to spell its words")
                lexicon = self._write_lexicon(path, names, spell)
                self._lexicon = True
            else:
                # the LM's word ids must follow our token ids: without an explicit dictionary
                # torchaudio builds one in an arbitrary order and the LM scores the wrong tokens
                with tempfile.NamedTemporaryFile("w", suffix=".dict", delete=False) as f:
                    f.write("".join(n + "\n" for n in names))
                    lm_dict = f.name
        try:
            with _drop_kenlm_banner() if lm else contextlib.nullcontext():
                self._decoder = ctc_decoder(
                    lexicon=lexicon,
                    tokens=names,
                    lm=lm,
                    lm_dict=lm_dict,
                    nbest=nbest,
                    beam_size=beam,
                    beam_threshold=beam_threshold,
                    lm_weight=lm_weight if lm else 0.0,
                    word_score=word_score,
                    sil_score=0.0 if lexicon else word_score,
                    blank_token=names[blank],
                    sil_token=WORD_SEP,
                    unk_word=UNK if lexicon else names[1],
                    log_add=True,
                )
        except (RuntimeError, ValueError) as e:
            raise DecodeError(
                f"{lm_path or 'ctc decoder'}: cannot set up the beam search: {e}"
            ) from e
        finally:
            for tmp in (lm_dict, lexicon):
                if tmp is not None:
                    os.unlink(tmp)

    def _write_lexicon(self, arpa: Path, names: list[str], spell) -> str:
        """A temporary lexicon of the ARPA's words spelled in decoder token names."""
        last = self._vocab - 1  # sos/eos is never emitted by CTC

        def pieces(word: str) -> list[str] | None:
            ids = [i for i in spell(word) if names[i] != WORD_SEP]
            if not ids or any(i in (self._blank, 1, last) for i in ids):
                return None  # unspellable: a character the acoustic model does not know
            self._word_ids[word] = ids
            # no separator in the spelling: the separator is optional silence between words
            # (a model that drops a word boundary still finds both words); the text is
            # rebuilt from the decoder's words
            return [names[i] for i in ids]

        words = arpa_vocabulary(arpa)
        with tempfile.NamedTemporaryFile("w", suffix=".lex", delete=False) as f:
            path = f.name
        _, skipped = write_lexicon(words, pieces, path)
        if len(skipped) == len(words):
            os.unlink(path)
            raise DecodeError(
                f"{arpa}: none of the LM's words can be spelled with this model's tokens"
            )
        if skipped:
            log.warning(
                "%s: %d word(s) cannot be spelled with the model's tokens, e.g. %s",
                arpa,
                len(skipped),
                skipped[0],
            )
        return path

    def __call__(self, log_probs: Tensor, lens: Tensor) -> list[list[Hypothesis]]:
        """log_probs: (B, T, V) with V = len(pieces), lens: (B,) -> n-best per utterance."""
        if log_probs.shape[-1] != self._vocab:
            raise ValueError(f"expected {self._vocab} classes, got {log_probs.shape[-1]}")
        lens = lens.detach().cpu().to(torch.int32)
        if self._lm_weight or self._lexicon:
            # the incremental path fills ``lm_score``, so that rescoring can keep the LM
            out_lm: list[list[Hypothesis]] = []
            for b in range(log_probs.shape[0]):
                self.begin()
                self.step(log_probs[b, : int(lens[b])])
                out_lm.append(self.end())
            return out_lm
        em = self._emissions(log_probs)
        results = self._decoder(em, lens)
        out: list[list[Hypothesis]] = []
        for b, nbest in enumerate(results):
            n = int(lens[b])
            hyps = [
                self._convert(h.tokens.tolist(), h.timesteps.tolist(), h.words, h.score, n)
                for h in nbest
            ]
            out.append(hyps or [Hypothesis([], float("-inf"), [])])
        return out

    # ------------------------------------------------------------------ incremental search
    def begin(self) -> None:
        """Start an incremental search (one stream per decoder object)."""
        self._decoder.decoder.decode_begin()
        self._frames = 0

    def step(self, log_probs: Tensor) -> None:
        """Advance the incremental search by (T, V) log-probabilities of the next frames."""
        if self._frames < 0:
            raise RuntimeError("call begin() before step()")
        if log_probs.shape[-1] != self._vocab:
            raise ValueError(f"expected {self._vocab} classes, got {log_probs.shape[-1]}")
        if log_probs.shape[0] == 0:
            return
        em = self._emissions(log_probs[None])[0]  # (T, V') contiguous; alive during the call
        self._decoder.decoder.decode_step(em.data_ptr(), em.shape[0], em.shape[1])
        self._frames += em.shape[0]

    def partial(self) -> Hypothesis:
        """Best hypothesis over the frames so far (without the LM's end of sentence);
        with a word LM only its complete words."""
        if self._frames <= 0:
            return Hypothesis([], 0.0, [])
        results = self._decoder.decoder.get_all_final_hypothesis()  # unsorted mid-stream
        if not results:
            return Hypothesis([], 0.0, [])
        return self._from_result(max(results, key=lambda r: r.score))

    def end(self) -> list[Hypothesis]:
        """Finish the incremental search -> n-best list (as the one-shot search)."""
        if self._frames < 0:
            raise RuntimeError("call begin() before end()")
        if self._frames == 0:
            self._frames = -1
            return [Hypothesis([], float("-inf"), [])]
        self._decoder.decoder.decode_end()
        results = self._decoder.decoder.get_all_final_hypothesis()[: self._nbest]
        hyps = [self._from_result(r) for r in results]
        self._frames = -1
        return hyps or [Hypothesis([], float("-inf"), [])]

    def _emissions(self, log_probs: Tensor) -> Tensor:
        """(B, T, V) -> float32 CPU contiguous, with the never-emitted silence column."""
        em = log_probs.detach().float().cpu().contiguous()
        if self._extra:
            em = torch.cat([em, em.new_full((*em.shape[:2], 1), _NEVER)], dim=-1)
        return em

    def _from_result(self, result) -> Hypothesis:
        """A flashlight DecodeResult (one token per frame after a start sentinel) -> ours."""
        per_frame = list(result.tokens)
        tokens, steps = [], []
        for i, tok in enumerate(per_frame):
            if tok != self._blank and (i == 0 or tok != per_frame[i - 1]):
                tokens.append(int(tok))
                steps.append(i)
        word_ids = [w for w in result.words if w >= 0]
        words = [self._decoder.word_dict.get_entry(w) for w in word_ids]
        hyp = self._convert(tokens, steps, words, float(result.score), self._frames)
        hyp.lm_score = self._lm_weight * float(result.lmScore) + (
            self._word_score * len(words) if self._lexicon else 0.0
        )
        return hyp

    def _convert(
        self, ids: list[int], steps: list[int], words: list[str], score: float, n_frames: int
    ) -> Hypothesis:
        # flashlight's token sequence carries a sentinel silence before frame 0 and after
        # the last frame; the steps index that sequence, so frame = t - 1.
        tokens: list[int] = []
        frames: list[int] = []
        for tok, t in zip(ids, steps):
            frame = int(t) - 1
            if not 0 <= frame < n_frames or tok == self._blank:
                continue
            if self._extra and tok == self._sil:
                continue
            tokens.append(int(tok))
            frames.append(frame)
        if self._lexicon:
            return self._from_words(words, tokens, frames, float(score))
        if not self._extra:  # a separator at either end carries no word boundary
            while tokens and tokens[0] == self._sil:
                tokens.pop(0)
                frames.pop(0)
            while tokens and tokens[-1] == self._sil:
                tokens.pop()
                frames.pop()
        return Hypothesis(tokens, float(score), frames)

    def _from_words(
        self, words: list[str], emitted: list[int], frames: list[int], score: float
    ) -> Hypothesis:
        """Token ids of the decoded words, a separator between words for a char model;
        each letter keeps the frame of the emitted token it stands for."""
        letters = [f for tok, f in zip(emitted, frames) if tok != self._sil]
        tokens: list[int] = []
        out_frames: list[int] = []
        k = 0
        for i, word in enumerate(words):
            ids = self._word_ids.get(word)
            if ids is None:
                continue  # <unk> (never chosen: unk_score is -inf)
            if i and not self._extra:
                tokens.append(self._sil)
                out_frames.append(letters[min(k, len(letters) - 1)] if letters else 0)
            for tok in ids:
                tokens.append(tok)
                out_frames.append(letters[min(k, len(letters) - 1)] if letters else 0)
                k += 1
        return Hypothesis(tokens, score, out_frames)
