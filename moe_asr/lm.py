"""Word n-gram language model (interpolated Kneser-Ney, written as ARPA) and a lexicon.

The CTC beam search (flashlight, ``moe_asr.decode.ctc``) reads the ARPA file through
KenLM and the lexicon to restrict hypotheses to known words. Built from a training
data dir's ``text`` by ``moe-asr train-lm``; no external toolkit (lmplz) is needed.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from moe_asr.errors import UserError
from moe_asr.files import atomic_open

__all__ = [
    "LmError",
    "NgramLM",
    "train_ngram",
    "arpa_vocabulary",
    "write_lexicon",
    "BOS",
    "EOS",
    "UNK",
]

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


class LmError(UserError):
    """The LM training text or the requested order is unusable."""


@dataclass
class NgramLM:
    """``prob[n][ngram]``: log10 p(w | h) for seen n-grams of order n (1-based);
    ``backoff[n][ngram]``: log10 backoff weight of an n-gram used as a history."""

    order: int
    prob: list[dict[tuple[str, ...], float]]
    backoff: list[dict[tuple[str, ...], float]]

    @property
    def vocabulary(self) -> list[str]:
        return sorted(w for (w,) in self.prob[1] if w not in (BOS, EOS, UNK))

    def logprob(self, word: str, history: tuple[str, ...]) -> float:
        """log10 p(word | history) by the standard backoff recursion (for tests/tools)."""
        history = history[-(self.order - 1) :] if self.order > 1 else ()
        if (word,) not in self.prob[1]:
            word = UNK
        penalty = 0.0
        while True:
            ngram = (*history, word)
            p = self.prob[len(ngram)].get(ngram)
            if p is not None:
                return p + penalty
            penalty += self.backoff[len(history)].get(history, 0.0)
            history = history[1:]

    def write_arpa(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_open(path, "w") as f:
            f.write("\n\\data\\\n")
            for n in range(1, self.order + 1):
                f.write(f"ngram {n}={len(self.prob[n])}\n")
            for n in range(1, self.order + 1):
                f.write(f"\n\\{n}-grams:\n")
                for ngram in sorted(self.prob[n]):
                    line = f"{self.prob[n][ngram]:.6f}\t{' '.join(ngram)}"
                    if n < self.order and ngram in self.backoff[n]:
                        line += f"\t{self.backoff[n][ngram]:.6f}"
                    f.write(line + "\n")
            f.write("\n\\end\\\n")
        return path


def _discount(counts: Iterable[int]) -> float:
    c = Counter(min(x, 3) for x in counts)
    n1, n2 = c[1], c[2]
    if n1 == 0:
        return 0.5
    return max(0.1, min(0.9, n1 / (n1 + 2 * n2))) if n2 else 0.5


def train_ngram(sentences: Iterable[str], order: int = 3) -> NgramLM:
    """Interpolated Kneser-Ney over whitespace-separated words (one discount per order).

    Lower orders use continuation counts (distinct left contexts), except n-grams that
    start at ``<s>``, which keep their raw counts. Unseen words map to ``<unk>``, which
    gets the uniform share of the unigram interpolation.
    """
    if order < 1:
        raise LmError(f"n-gram order must be at least 1, got {order}")
    raw: list[Counter] = [Counter() for _ in range(order + 1)]
    n_sent = 0
    for s in sentences:
        words = s.split()
        if not words:
            continue
        n_sent += 1
        toks = [BOS, *words, EOS]
        for n in range(1, order + 1):
            for i in range(len(toks) - n + 1):
                raw[n][tuple(toks[i : i + n])] += 1
    if n_sent == 0:
        raise LmError("no training sentence for the language model (empty text)")

    # Kneser-Ney counts: raw for the highest order and for n-grams starting with <s>
    kn: list[Counter] = [Counter() for _ in range(order + 1)]
    kn[order] = Counter(raw[order])
    for n in range(order, 1, -1):
        for ngram in raw[n]:
            kn[n - 1][ngram[1:]] += 1
    for n in range(1, order):
        for ngram, c in raw[n].items():
            if ngram[0] == BOS:
                kn[n][ngram] = c
    kn[1].pop((BOS,), None)

    prob: list[dict] = [{} for _ in range(order + 1)]
    backoff: list[dict] = [{} for _ in range(order + 1)]
    vocab = sorted({w for (w,) in kn[1]} | {UNK})
    uniform = 1.0 / len(vocab)
    for n in range(1, order + 1):
        d = _discount(kn[n].values())
        totals: dict[tuple, int] = defaultdict(int)
        types: dict[tuple, int] = defaultdict(int)
        for ngram, c in kn[n].items():
            totals[ngram[:-1]] += c
            types[ngram[:-1]] += 1
        gamma = {h: d * types[h] / totals[h] for h in totals}
        for ngram, c in kn[n].items():
            h = ngram[:-1]
            lower = uniform if n == 1 else 10 ** prob[n - 1][ngram[1:]]
            prob[n][ngram] = math.log10(max(c - d, 0.0) / totals[h] + gamma[h] * lower)
        if n == 1:
            prob[1][(UNK,)] = math.log10(gamma[()] * uniform)
        else:
            # interpolated KN in backoff form: an unseen word after h gets gamma(h) * p_lower
            for h, g in gamma.items():
                backoff[n - 1][h] = math.log10(g)
    prob[1][(BOS,)] = -99.0
    return NgramLM(order, prob, backoff)


def arpa_vocabulary(path: str | Path) -> list[str]:
    """The words of an ARPA file's unigram section, without <s>, </s> and <unk>."""
    path = Path(path)
    words: list[str] = []
    in_unigrams = False
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line.startswith("\\"):
                    if in_unigrams:
                        break
                    in_unigrams = line == "\\1-grams:"
                    continue
                if in_unigrams and line:
                    parts = line.split()
                    if len(parts) >= 2 and parts[1] not in (BOS, EOS, UNK):
                        words.append(parts[1])
    except (OSError, UnicodeDecodeError) as e:
        raise LmError(f"{path}: cannot read ARPA file ({e})") from e
    if not words:
        raise LmError(
            f"{path}: no unigram section found; is it an ARPA file? (binary KenLM "
            "models work only with decode.lm_unit=token)"
        )
    return words


def write_lexicon(words: Iterable[str], spell, path: str | Path) -> tuple[Path, list[str]]:
    """Write ``word piece piece ...`` lines; ``spell(word) -> list[str] | None`` gives the
    decoder pieces of a word (None: cannot be spelled, e.g. a character the acoustic model
    never saw). Returns the path and the words left out."""
    path = Path(path)
    skipped = []
    with atomic_open(path, "w") as f:
        for w in words:
            pieces = spell(w)
            if not pieces:
                skipped.append(w)
                continue
            f.write(f"{w} {' '.join(pieces)}\n")
    return path, skipped
