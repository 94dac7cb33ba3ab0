"""Compare two systems on the same references: per-group WER, delta, paired bootstrap.

Paired bootstrap (Koehn 2004; Bisani & Ney 2004): the same resampled utterance set is
scored for both systems, giving a distribution of ``delta = WER_B - WER_A`` (points).
``p_b_not_better`` is the fraction of resamples where B is not better (delta >= 0);
``p_value`` is the two-sided ``2 * min(P(delta <= 0), P(delta >= 0))``, capped at 1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from moe_asr.scoring.core import (
    UNK_GROUP,
    UttScore,
    align_utterances,
    assign_groups,
    bootstrap_indices,
    check_hyps,
    check_n_boot,
    group_order,
    group_rng,
    percent_rate,
)
from moe_asr.scoring.normalize import Normalizer

__all__ = ["CompareRow", "CompareReport", "compare"]


@dataclass
class CompareRow:
    """One set of utterances scored by both systems; rates in percent."""

    utts: int
    ref_words: int
    errors_a: int
    errors_b: int
    wer_a: float
    wer_b: float
    delta: float  # wer_b - wer_a (negative: B is better)
    ci_low: float  # 95% paired-bootstrap interval of delta
    ci_high: float
    p_b_not_better: float
    p_value: float
    cer_a: float | None = None  # None unless CER was asked for
    cer_b: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


@dataclass
class CompareReport:
    """Result of :func:`compare`; ``by_group[name][value]`` like :class:`ScoreReport`."""

    name_a: str
    name_b: str
    overall: CompareRow
    by_group: dict[str, dict[str, CompareRow]]
    missing_a: list[str]
    missing_b: list[str]
    extra_a: list[str]
    extra_b: list[str]
    ungrouped: dict[str, list[str]]
    n_boot: int
    seed: int

    def to_json(self) -> dict[str, Any]:
        return {
            "units": "percent",
            "system_a": self.name_a,
            "system_b": self.name_b,
            "overall": self.overall.to_dict(),
            "groups": {
                name: {v: r.to_dict() for v, r in values.items()}
                for name, values in self.by_group.items()
            },
            "missing_a": list(self.missing_a),
            "missing_b": list(self.missing_b),
            "extra_a": list(self.extra_a),
            "extra_b": list(self.extra_b),
            "ungrouped": {k: list(v) for k, v in self.ungrouped.items()},
            "bootstrap": {"n_boot": self.n_boot, "seed": self.seed, "level": 0.95},
            "unk_group": UNK_GROUP,
        }


def _row(
    a: list[UttScore], b: list[UttScore], *, n_boot: int, rng: np.random.Generator, cer: bool
) -> CompareRow:
    assert [u.utt for u in a] == [u.utt for u in b]
    ea = np.array([u.errors for u in a], dtype=np.int64)  # (N,)
    eb = np.array([u.errors for u in b], dtype=np.int64)  # (N,)
    ref = np.array([len(u.ref) for u in a], dtype=np.int64)  # (N,)
    wer_a, wer_b = (
        float(percent_rate(ea.sum(), ref.sum())),
        float(percent_rate(eb.sum(), ref.sum())),
    )
    lo = hi = p_nb = p = math.nan
    if n_boot > 0 and a:
        deltas = np.concatenate(
            [
                percent_rate(eb[idx].sum(1), ref[idx].sum(1))
                - percent_rate(ea[idx].sum(1), ref[idx].sum(1))
                for idx in bootstrap_indices(len(a), n_boot, rng)
            ]
        )  # (n_boot,)
        deltas = deltas[~np.isnan(deltas)]
        if deltas.size:
            lo, hi = (float(x) for x in np.percentile(deltas, [2.5, 97.5]))
            p_nb = float(np.mean(deltas >= 0))
            p = float(min(1.0, 2 * min(np.mean(deltas <= 0), np.mean(deltas >= 0))))
    return CompareRow(
        utts=len(a),
        ref_words=int(ref.sum()),
        errors_a=int(ea.sum()),
        errors_b=int(eb.sum()),
        wer_a=wer_a,
        wer_b=wer_b,
        delta=wer_b - wer_a,
        ci_low=lo,
        ci_high=hi,
        p_b_not_better=p_nb,
        p_value=p,
        cer_a=_cer(a) if cer else None,
        cer_b=_cer(b) if cer else None,
    )


def _cer(utts: list[UttScore]) -> float:
    chars = sum(u.ref_chars for u in utts)
    return float(percent_rate(np.int64(sum(u.char_errors for u in utts)), np.int64(chars)))


def compare(
    refs: dict[str, str],
    hyps_a: dict[str, str],
    hyps_b: dict[str, str],
    groups: dict[str, dict[str, str]] | None = None,
    *,
    normalizer: Normalizer | None = None,
    allow_extra: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    names: tuple[str, str] = ("A", "B"),
    cer: bool = False,
) -> CompareReport:
    """Per-group WER of systems A and B on ``refs``, with paired-bootstrap significance
    (and CER of both with ``cer``).

    Missing hypotheses count as all deletions for that system (listed in the report);
    hypotheses for unknown utterances are an error unless ``allow_extra``.
    """
    normalizer = normalizer or Normalizer()
    check_n_boot(n_boot)
    extra_a = check_hyps(refs, hyps_a, allow_extra=allow_extra)
    extra_b = check_hyps(refs, hyps_b, allow_extra=allow_extra)
    ua = align_utterances(refs, hyps_a, normalizer=normalizer, cer=cer)
    ub = align_utterances(refs, hyps_b, normalizer=normalizer, cer=cer)
    assigned, ungrouped = assign_groups([u.utt for u in ua], groups)
    overall = _row(ua, ub, n_boot=n_boot, rng=group_rng(seed), cer=cer)
    by_group: dict[str, dict[str, CompareRow]] = {}
    for name, table in assigned.items():
        idx: dict[str, list[int]] = {}
        for i, u in enumerate(ua):
            idx.setdefault(table[u.utt], []).append(i)
        by_group[name] = {
            v: _row(
                [ua[i] for i in idx[v]],
                [ub[i] for i in idx[v]],
                n_boot=n_boot,
                rng=group_rng(seed, name, v),
                cer=cer,
            )
            for v in sorted(idx, key=group_order)
        }
    return CompareReport(
        name_a=names[0],
        name_b=names[1],
        overall=overall,
        by_group=by_group,
        missing_a=[u.utt for u in ua if u.missing],
        missing_b=[u.utt for u in ub if u.missing],
        extra_a=extra_a,
        extra_b=extra_b,
        ungrouped=ungrouped,
        n_boot=n_boot,
        seed=seed,
    )
