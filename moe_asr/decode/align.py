"""Word timestamps and confidences by CTC forced alignment of a hypothesis.

The decoded token sequence is aligned to the CTC log-probabilities with
``torchaudio.functional.forced_align`` (Viterbi over CTC paths); each token gets the
span of frames it occupies and the mean posterior over that span. Words are runs of
tokens between separators: the char tokenizer's ``▁`` piece, or a piece that starts
with ``▁`` (sentencepiece).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio.functional as AF
from torch import Tensor

__all__ = ["WordTiming", "align_words"]

_SPACE = "▁"


@dataclass
class WordTiming:
    """One word: text, start and end in seconds, mean token posterior in [0, 1]."""

    word: str
    start: float
    end: float
    confidence: float

    def to_dict(self) -> dict:
        return {
            "word": self.word,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "confidence": round(self.confidence, 4),
        }


def _word_groups(tokens: list[int], pieces: list[str]) -> list[list[int]]:
    """Indices into ``tokens`` grouped by word (separator tokens dropped)."""
    groups: list[list[int]] = []
    current: list[int] = []
    for i, t in enumerate(tokens):
        piece = pieces[t]
        if piece == _SPACE:
            if current:
                groups.append(current)
            current = []
            continue
        if piece.startswith(_SPACE) and current:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


def align_words(
    log_probs: Tensor,
    tokens: list[int],
    tokenizer,
    *,
    frame_seconds: float,
    offset: float = 0.0,
    max_time: float | None = None,
    blank: int = 0,
) -> list[WordTiming]:
    """Word timings of ``tokens`` in one utterance.

    log_probs: (T', V) CTC log-probabilities; ``frame_seconds``: duration of one frame
    of T'; ``offset`` is added to every time; times are clipped to ``max_time`` (audio
    end). Returns [] for an empty hypothesis or one that cannot be aligned (more
    tokens, counting repeats, than frames).
    """
    if not tokens:
        return []
    targets = torch.tensor([tokens], dtype=torch.int32)
    try:
        path, scores = AF.forced_align(log_probs[None].float().cpu(), targets, blank=blank)
    except RuntimeError:
        return []
    spans = AF.merge_tokens(path[0], scores[0].exp(), blank=blank)
    if len(spans) != len(tokens):  # forced_align merges nothing that was not in targets
        return []
    pieces = tokenizer.tokens
    words: list[WordTiming] = []
    for group in _word_groups(tokens, pieces):
        text = tokenizer.decode([tokens[i] for i in group])
        start = offset + spans[group[0]].start * frame_seconds
        end = offset + spans[group[-1]].end * frame_seconds
        if max_time is not None:
            start, end = min(start, max_time), min(end, max_time)
        conf = sum(spans[i].score for i in group) / len(group)
        words.append(WordTiming(text, start, end, float(conf)))
    return words
