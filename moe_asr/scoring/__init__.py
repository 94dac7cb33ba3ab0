"""WER/CER overall and per group (accent, noise, speaker, any utt2X), CIs, trn files.

``score(refs, hyps, groups)`` -> :class:`ScoreReport`; ``write_outputs(report, outdir)``
writes wer.json, wer_by_<group>.md, sclite ref.trn/hyp.trn and alignments.txt;
``compare(refs, hyps_a, hyps_b, groups)`` -> :class:`CompareReport` with paired bootstrap.
Rates are percentages.
"""

from moe_asr.scoring.compare import CompareReport, CompareRow, compare
from moe_asr.scoring.core import (
    UNK_GROUP,
    GroupScore,
    ScoreReport,
    ScoringError,
    UttScore,
    align_utterances,
    score,
)
from moe_asr.scoring.files import compare_files, make_normalizer, parse_group_spec, score_files
from moe_asr.scoring.normalize import Normalizer, NormalizerError, load_word_map
from moe_asr.scoring.output import (
    COMPARE_FILES,
    SCORE_FILES,
    format_alignments,
    format_compare_markdown,
    format_group_markdown,
    format_markdown,
    format_trn,
    write_compare_outputs,
    write_outputs,
)

__all__ = [
    "COMPARE_FILES",
    "SCORE_FILES",
    "UNK_GROUP",
    "CompareReport",
    "CompareRow",
    "GroupScore",
    "Normalizer",
    "NormalizerError",
    "ScoreReport",
    "ScoringError",
    "UttScore",
    "align_utterances",
    "compare",
    "compare_files",
    "format_alignments",
    "format_compare_markdown",
    "format_group_markdown",
    "format_markdown",
    "format_trn",
    "load_word_map",
    "make_normalizer",
    "parse_group_spec",
    "score",
    "score_files",
    "write_compare_outputs",
    "write_outputs",
]
