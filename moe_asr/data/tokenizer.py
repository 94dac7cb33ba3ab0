"""Tokenizers: sentencepiece (bpe, unigram) and characters, with fixed special ids.

Every tokenizer has ``blank = 0`` (CTC blank), ``unk = 1`` and ``<sos/eos> = vocab_size - 1``.
The text is taken as is (no normalisation): the data prep decides the casing and
punctuation. Training is deterministic (one thread, the whole text, no sampling) and
quiet.

- ``char``: one token per character; a space is the piece ``▁`` (as in sentencepiece),
  so ``decode`` returns words separated by single spaces.
- ``bpe`` / ``unigram``: a sentencepiece model with pad (= blank) at 0 and unk at 1;
  ``<sos/eos>`` is appended after the sentencepiece pieces. ``vocab_size`` is the size
  of the whole vocabulary including the three specials; a text too small for it gives
  a smaller vocabulary (sentencepiece's soft limit) rather than an error.

A tokenizer serialises to one byte string (``to_bytes``) so a model package can embed it.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable
from pathlib import Path

from moe_asr.config import TokenizerConfig
from moe_asr.errors import UserError
from moe_asr.files import atomic_write_bytes

__all__ = [
    "TokenizerError",
    "Tokenizer",
    "train_tokenizer",
    "read_transcripts",
    "BLANK",
    "UNK",
    "SOS_EOS",
    "SPACE",
    "TOKENIZER_TYPES",
]

BLANK = "<blank>"
UNK = "<unk>"
SOS_EOS = "<sos/eos>"
SPACE = "▁"
TOKENIZER_TYPES = ("char", "bpe", "unigram")
_FILE = "tokenizer.json"
_FORMAT = 1


class TokenizerError(UserError):
    """A tokenizer cannot be trained or loaded (bad type, empty text, bad file)."""


def _sp():
    import sentencepiece

    return sentencepiece


class Tokenizer:
    """Text <-> token ids. Build with ``train_tokenizer`` or ``Tokenizer.load``."""

    blank_id = 0
    unk_id = 1

    def __init__(self, kind: str, tokens: list[str], sp_model: bytes | None = None):
        if kind not in TOKENIZER_TYPES:
            raise TokenizerError(
                f"unknown tokenizer type {kind!r}; choose one of {', '.join(TOKENIZER_TYPES)}"
            )
        if len(tokens) < 3 or tokens[0] != BLANK or tokens[1] != UNK or tokens[-1] != SOS_EOS:
            raise TokenizerError(
                f"token list must start with {BLANK}, {UNK} and end with {SOS_EOS}"
            )
        self.kind = kind
        self._tokens = list(tokens)
        self._sp_model = sp_model
        self._sp = None
        if kind == "char":
            self._index = {t: i for i, t in enumerate(tokens[:-1]) if i > 1}
        else:
            if sp_model is None:
                raise TokenizerError(f"a {kind} tokenizer needs its sentencepiece model")
            self._sp = _sp().SentencePieceProcessor(model_proto=sp_model)
            if self._sp.get_piece_size() != len(tokens) - 1:
                raise TokenizerError(
                    f"sentencepiece model has {self._sp.get_piece_size()} pieces, "
                    f"token list {len(tokens) - 1}"
                )

    # ------------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def sos_eos_id(self) -> int:
        return len(self._tokens) - 1

    @property
    def tokens(self) -> list[str]:
        """Piece of every id: ``tokens[i]`` is the piece of id ``i`` (shared list: do not modify)."""
        return self._tokens

    # ------------------------------------------------------------------ encode / decode

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no blank, no sos/eos); unknown characters map to unk=1."""
        text = " ".join(text.split())
        if not text:
            return []
        if self._sp is not None:
            return list(self._sp.encode(text, out_type=int))
        return [self._index.get(c, self.unk_id) for c in text.replace(" ", SPACE)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; blank and sos/eos are dropped, unk reads as ``⁇``."""
        keep: list[int] = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
            if i != self.blank_id and i != self.sos_eos_id:
                keep.append(i)
        if self._sp is not None:
            text = self._sp.decode(keep)
        else:
            text = "".join(" ⁇ " if i == self.unk_id else self._tokens[i] for i in keep)
            text = text.replace(SPACE, " ")
        return " ".join(text.split())

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict:
        data: dict = {"format": _FORMAT, "type": self.kind, "tokens": self._tokens}
        if self._sp_model is not None:
            data["sp_model"] = base64.b64encode(self._sp_model).decode("ascii")
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str = "tokenizer") -> Tokenizer:
        try:
            kind, tokens = data["type"], data["tokens"]
            sp_model = base64.b64decode(data["sp_model"]) if "sp_model" in data else None
        except (KeyError, TypeError, ValueError) as e:
            raise TokenizerError(f"{where}: not a moe_asr tokenizer ({e})") from e
        if data.get("format", _FORMAT) > _FORMAT:
            raise TokenizerError(f"{where}: written by a newer moe_asr (format {data['format']})")
        try:
            return cls(kind, tokens, sp_model)
        except TokenizerError as e:
            raise TokenizerError(f"{where}: {e}") from e
        except RuntimeError as e:  # sentencepiece refuses a corrupt model
            raise TokenizerError(f"{where}: corrupt sentencepiece model ({e})") from e

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Tokenizer:
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TokenizerError(f"not a serialised moe_asr tokenizer ({e})") from e
        return cls.from_dict(obj)

    def save(self, directory: str | Path) -> Path:
        """Write ``tokenizer.json`` (complete), ``tokens.txt`` and, for bpe/unigram,
        ``tokenizer.model`` (for inspection with sentencepiece tools). Returns the json path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self._sp_model is not None:
            atomic_write_bytes(directory / "tokenizer.model", self._sp_model)
        lines = "".join(f"{t} {i}\n" for i, t in enumerate(self._tokens))
        atomic_write_bytes(directory / "tokens.txt", lines.encode("utf-8"))
        path = directory / _FILE
        atomic_write_bytes(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1).encode())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        """Load from a directory written by ``save`` (or the ``tokenizer.json`` in it)."""
        path = Path(directory)
        if path.is_dir():
            path = path / _FILE
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise TokenizerError(
                f"{path}: cannot read tokenizer ({e.strerror}); train one with "
                "`moe-asr train-tokenizer`"
            ) from e
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TokenizerError(f"{path}: not a tokenizer file ({e})") from e
        if not isinstance(obj, dict):
            raise TokenizerError(f"{path}: not a tokenizer file")
        return cls.from_dict(obj, where=str(path))

    def __repr__(self) -> str:
        return f"Tokenizer(type={self.kind!r}, vocab_size={self.vocab_size})"


def read_transcripts(path: str | Path) -> list[str]:
    """Transcripts of a Kaldi ``text`` file (``utt words...``), or of ``DIR/text``."""
    from moe_asr.data.datadir import read_table

    path = Path(path)
    if path.is_dir():
        path = path / "text"
    if not path.is_file():
        raise TokenizerError(
            f"{path}: no such text file (expected a Kaldi `text` file or data dir)"
        )
    return [t for _, t in sorted(read_table(path, allow_empty=True).items()) if t.strip()]


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig) -> Tokenizer:
    """Train a tokenizer of type ``cfg.type`` on ``texts`` (one transcript per item).

    ``cfg.vocab_size`` counts every id (blank, unk and sos/eos included); it is ignored
    for ``char``. Deterministic: the same text gives the same tokenizer.
    """
    if cfg.type not in TOKENIZER_TYPES:
        raise TokenizerError(
            f"tokenizer.type {cfg.type!r} is unknown; choose one of {', '.join(TOKENIZER_TYPES)}"
        )
    lines = [" ".join(t.split()) for t in texts]
    lines = [t for t in lines if t]
    if not lines:
        raise TokenizerError("no non-empty transcript to train a tokenizer on")
    if cfg.type == "char":
        chars = sorted({c for t in lines for c in t.replace(" ", SPACE)})
        return Tokenizer("char", [BLANK, UNK, *chars, SOS_EOS])
    if cfg.vocab_size < 4:
        raise TokenizerError(f"tokenizer.vocab_size must be at least 4, got {cfg.vocab_size}")
    model = io.BytesIO()
    try:
        _sp().SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            model_type=cfg.type,
            vocab_size=cfg.vocab_size - 1,  # + <sos/eos>
            pad_id=0,
            pad_piece=BLANK,
            unk_id=1,
            unk_piece=UNK,
            bos_id=-1,
            eos_id=-1,
            character_coverage=1.0,
            normalization_rule_name="identity",
            input_sentence_size=0,
            shuffle_input_sentence=False,
            num_threads=1,
            hard_vocab_limit=False,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise TokenizerError(f"sentencepiece could not train a {cfg.type} model: {e}") from e
    proto = model.getvalue()
    sp = _sp().SentencePieceProcessor(model_proto=proto)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    return Tokenizer(cfg.type, [*pieces, SOS_EOS], proto)
