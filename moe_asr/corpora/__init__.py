"""Data preparation for real accented-English corpora: official layout -> Kaldi data dirs.

One module per corpus (``prepare_<name>(corpus_dir, out_dir, **options) -> PrepResult``);
``PREPARERS`` maps the names used by ``moe-asr prepare-corpus`` to those functions.
Shared logic (text normalisation, warnings, speaker splits, writing) is in ``common``.
"""

from __future__ import annotations

from collections.abc import Callable

from moe_asr.corpora.aesrc import prepare_aesrc
from moe_asr.corpora.common import CorpusError, PrepResult
from moe_asr.corpora.commonvoice import prepare_commonvoice
from moe_asr.corpora.edacc import prepare_edacc
from moe_asr.corpora.l2arctic import prepare_l2arctic
from moe_asr.corpora.librispeech import prepare_librispeech
from moe_asr.corpora.vctk import prepare_vctk

__all__ = [
    "PREPARERS",
    "CorpusError",
    "PrepResult",
    "prepare_aesrc",
    "prepare_commonvoice",
    "prepare_edacc",
    "prepare_l2arctic",
    "prepare_librispeech",
    "prepare_vctk",
]

PREPARERS: dict[str, Callable[..., PrepResult]] = {
    "l2arctic": prepare_l2arctic,
    "vctk": prepare_vctk,
    "commonvoice": prepare_commonvoice,
    "edacc": prepare_edacc,
    "aesrc": prepare_aesrc,
    "librispeech": prepare_librispeech,
}
