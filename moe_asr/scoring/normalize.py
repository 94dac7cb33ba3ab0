"""Text normalisation applied identically to references and hypotheses before scoring.

Defaults (each one switchable): Unicode NFC, lowercase, punctuation replaced by a space
(apostrophes inside a word are kept, so ``don't`` stays one word; ``well-known`` becomes
``well known``), whitespace collapsed. Tags written ``<unk>`` or ``[noise]`` are kept whole.
An optional word map replaces (or, with an empty value, deletes) whole words afterwards.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moe_asr.errors import UserError

__all__ = ["Normalizer", "NormalizerError", "load_word_map"]

_TAG = re.compile(r"^(<[^<>\s]+>|\[[^\[\]\s]+\])$")
_APOSTROPHES = {"'", "\u2019", "\u02bc"}


class NormalizerError(UserError):
    """A word-map file is unusable; the message names file and line."""


@dataclass(kw_only=True)
class Normalizer:
    """Callable ``str -> str`` (words joined by single spaces).

    ``word_map`` keys and values pass through the same case/punctuation steps, so a map
    written in any case matches; a key must be a single word after normalisation.
    """

    lowercase: bool = True
    strip_punct: bool = True
    word_map: dict[str, str] = field(default_factory=dict)
    _map: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._map = {}
        for key, value in self.word_map.items():
            words = self._words(key)
            if len(words) != 1:
                raise NormalizerError(
                    f"word map key {key!r} is not one word after normalisation ({words}); "
                    "map single words only"
                )
            self._map[words[0]] = tuple(self._words(value))

    def _words(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFC", text)
        if self.lowercase:
            text = text.lower()
        out: list[str] = []
        for tok in text.split():
            if self.strip_punct and not _TAG.match(tok):
                out.extend(_strip_punct(tok).split())
            else:
                out.append(tok)
        return out

    def words(self, text: str) -> list[str]:
        """The normalised word list of ``text``."""
        out: list[str] = []
        for w in self._words(text):
            out.extend(self._map.get(w, (w,)))
        return out

    def __call__(self, text: str) -> str:
        return " ".join(self.words(text))

    def to_dict(self) -> dict[str, Any]:
        return {
            "lowercase": self.lowercase,
            "strip_punct": self.strip_punct,
            "word_map_entries": len(self.word_map),
        }


def _strip_punct(tok: str) -> str:
    """Punctuation -> space, except an apostrophe between two letters/digits (-> ')."""
    chars = list(tok)
    for i, c in enumerate(chars):
        if not unicodedata.category(c).startswith("P"):
            continue
        inside = 0 < i < len(chars) - 1 and chars[i - 1].isalnum() and chars[i + 1].isalnum()
        chars[i] = "'" if (c in _APOSTROPHES and inside) else " "
    return "".join(chars)


def load_word_map(path: str | Path) -> dict[str, str]:
    """Read ``word replacement...`` lines (a word alone on its line is deleted)."""
    from moe_asr.data.datadir import read_table

    return read_table(path, allow_empty=True)
