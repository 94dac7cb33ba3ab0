"""WER/CER overall and per group (accent, noise, speaker, any utt2X) with bootstrap CIs.

Rates are corpus-level sums (errors / reference words) in **percent**. Confidence
intervals resample utterances with replacement (seeded ``numpy.random.Generator``) and
take the 2.5 and 97.5 percentiles. Word alignments come from jiwer (Levenshtein, unit
costs). A group value named ``unk`` (utterances without a label) is reported but left out
of the macro average, the worst/best group and the gap.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import jiwer
import numpy as np

from moe_asr.errors import UserError
from moe_asr.scoring.normalize import Normalizer

__all__ = [
    "ScoringError",
    "UNK_GROUP",
    "UttScore",
    "GroupScore",
    "ScoreReport",
    "score",
    "align_utterances",
    "assign_groups",
    "check_hyps",
    "check_n_boot",
    "group_rng",
    "group_order",
    "bootstrap_indices",
    "percent_rate",
]

UNK_GROUP = "unk"
_BOOT_CHUNK = 4_000_000  # max elements of one (n_boot, n_utts) resample block


class ScoringError(UserError):
    """References and hypotheses do not fit together (unknown utterances, nothing to score)."""


@dataclass(frozen=True)
class UttScore:
    """One utterance, normalised and aligned.

    ``ops``: alignment as ``(op, ref_word, hyp_word)`` with op in ``C S D I`` ("" for the
    absent side).
    """

    utt: str
    spk: str
    ref: tuple[str, ...]
    hyp: tuple[str, ...]
    ops: tuple[tuple[str, str, str], ...]
    sub: int
    del_: int
    ins: int
    ref_chars: int = 0
    char_errors: int = 0
    missing: bool = False  # no hypothesis was given: scored as all deletions

    @property
    def errors(self) -> int:
        return self.sub + self.del_ + self.ins


@dataclass
class GroupScore:
    """Scores of a set of utterances; ``wer``, ``ci_*`` and ``cer`` are percentages.

    ``wer`` is NaN when the set has no reference words; ``ci_*`` are NaN without bootstrap.
    """

    utts: int
    ref_words: int
    errors: int
    sub: int
    del_: int
    ins: int
    wer: float
    ci_low: float
    ci_high: float
    cer: float | None = None  # None unless CER was asked for
    ref_chars: int = 0
    char_errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = {("del" if k == "del_" else k): v for k, v in asdict(self).items()}
        return {k: _json_num(v) for k, v in d.items()}


@dataclass
class ScoreReport:
    """Result of :func:`score`. Group-level dicts are keyed by group name ("accent")."""

    overall: GroupScore
    by_group: dict[str, dict[str, GroupScore]]  # name -> value -> score
    macro: dict[str, float]  # name -> mean of the group WERs (unk excluded)
    worst: dict[str, str]  # name -> value with the highest WER
    best: dict[str, str]  # name -> value with the lowest WER
    gap: dict[str, float]  # name -> worst WER - best WER (points)
    missing: list[str]  # utterances without a hypothesis (scored as all deletions)
    extra: list[str]  # hypotheses for unknown utterances (ignored; allow_extra=True)
    ungrouped: dict[str, list[str]]  # name -> utterances without a label (in `unk`)
    utterances: list[UttScore] = field(repr=False)
    groups: dict[str, dict[str, str]] = field(repr=False)  # name -> utt -> value (with unk)
    cer: bool = False
    normalizer: dict[str, Any] = field(default_factory=dict)
    n_boot: int = 1000
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN -> None); this is what ``wer.json`` holds."""
        groups: dict[str, Any] = {}
        for name, values in self.by_group.items():
            groups[name] = {
                "values": {v: s.to_dict() for v, s in values.items()},
                "macro_wer": _json_num(self.macro[name]),
                "worst": self.worst[name],
                "best": self.best[name],
                "gap": _json_num(self.gap[name]),
                "ungrouped": list(self.ungrouped.get(name, [])),
            }
        return {
            "units": "percent",
            "overall": self.overall.to_dict(),
            "groups": groups,
            "missing": list(self.missing),
            "extra": list(self.extra),
            "normalizer": dict(self.normalizer),
            "bootstrap": {"n_boot": self.n_boot, "seed": self.seed, "level": 0.95},
        }


def _json_num(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _spk_of(utt: str, utt2spk: dict[str, str] | None) -> str:
    if utt2spk and utt in utt2spk:
        return utt2spk[utt]
    for sep in ("-", "_"):
        if sep in utt:
            return utt.split(sep, 1)[0]
    return utt


def _word_ops(ref: list[str], hyp: list[str]) -> list[tuple[str, str, str]]:
    """Alignment of one non-empty-reference pair via jiwer."""
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    ops: list[tuple[str, str, str]] = []
    for ch in out.alignments[0]:
        r = ref[ch.ref_start_idx : ch.ref_end_idx]
        h = hyp[ch.hyp_start_idx : ch.hyp_end_idx]
        if ch.type == "equal":
            ops.extend(("C", a, b) for a, b in zip(r, h))
        elif ch.type == "substitute":
            ops.extend(("S", a, b) for a, b in zip(r, h))
        elif ch.type == "delete":
            ops.extend(("D", a, "") for a in r)
        else:
            ops.extend(("I", "", b) for b in h)
    return ops


def _char_errors(ref: str, hyp: str) -> int:
    if not ref:
        return len(hyp)
    out = jiwer.process_characters(ref, hyp)
    return out.substitutions + out.deletions + out.insertions


def align_utterances(
    refs: dict[str, str],
    hyps: dict[str, str],
    *,
    normalizer: Normalizer,
    cer: bool = False,
    utt2spk: dict[str, str] | None = None,
) -> list[UttScore]:
    """Normalise and align every reference utterance (sorted by id) with its hypothesis.

    An utterance missing from ``hyps`` is aligned with an empty hypothesis (``missing``).
    CER counts characters of the normalised text, spaces between words included.
    """
    out: list[UttScore] = []
    for utt in sorted(refs):
        ref = normalizer.words(refs[utt])
        hyp = normalizer.words(hyps.get(utt, ""))
        ops = _word_ops(ref, hyp) if ref else [("I", "", h) for h in hyp]
        counts = {k: sum(1 for o in ops if o[0] == k) for k in "SDI"}
        ref_s, hyp_s = " ".join(ref), " ".join(hyp)
        out.append(
            UttScore(
                utt=utt,
                spk=_spk_of(utt, utt2spk),
                ref=tuple(ref),
                hyp=tuple(hyp),
                ops=tuple(ops),
                sub=counts["S"],
                del_=counts["D"],
                ins=counts["I"],
                ref_chars=len(ref_s) if cer else 0,
                char_errors=_char_errors(ref_s, hyp_s) if cer else 0,
                missing=utt not in hyps,
            )
        )
    return out


def group_rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and the group keys (stable across runs and orders)."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode("utf-8")) for k in keys)])


def bootstrap_indices(n: int, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield blocks of resampled utterance indices, each ``(b, n)``, ``n_boot`` rows in all."""
    per = max(1, _BOOT_CHUNK // max(n, 1))
    done = 0
    while done < n_boot:
        b = min(per, n_boot - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def percent_rate(err: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """100 * err / ref elementwise; NaN where ref == 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ref > 0, 100.0 * err / np.maximum(ref, 1), np.nan)


def _group_score(
    utts: list[UttScore], *, cer: bool, n_boot: int, rng: np.random.Generator
) -> GroupScore:
    err = np.array([u.errors for u in utts], dtype=np.int64)  # (N,)
    ref = np.array([len(u.ref) for u in utts], dtype=np.int64)  # (N,)
    wer = float(percent_rate(err.sum(), ref.sum()))
    lo = hi = math.nan
    if n_boot > 0 and utts:
        boots = np.concatenate(
            [
                percent_rate(err[idx].sum(1), ref[idx].sum(1))
                for idx in bootstrap_indices(len(utts), n_boot, rng)
            ]
        )  # (n_boot,)
        boots = boots[~np.isnan(boots)]
        if boots.size:
            lo, hi = (float(x) for x in np.percentile(boots, [2.5, 97.5]))
    ref_chars = sum(u.ref_chars for u in utts)
    char_errors = sum(u.char_errors for u in utts)
    return GroupScore(
        utts=len(utts),
        ref_words=int(ref.sum()),
        errors=int(err.sum()),
        sub=sum(u.sub for u in utts),
        del_=sum(u.del_ for u in utts),
        ins=sum(u.ins for u in utts),
        wer=wer,
        ci_low=lo,
        ci_high=hi,
        cer=float(percent_rate(np.int64(char_errors), np.int64(ref_chars))) if cer else None,
        ref_chars=ref_chars,
        char_errors=char_errors,
    )


def assign_groups(
    utts: list[str], groups: dict[str, dict[str, str]] | None
) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """(name -> utt -> value, name -> utterances without a label); unlabelled -> ``unk``.

    Labels for utterances outside ``utts`` are ignored (a group file may cover more).
    """
    assigned: dict[str, dict[str, str]] = {}
    ungrouped: dict[str, list[str]] = {}
    for name, table in (groups or {}).items():
        assigned[name] = {u: table.get(u, UNK_GROUP) for u in utts}
        missing = [u for u in utts if u not in table]
        if missing:
            ungrouped[name] = missing
    return assigned, ungrouped


def check_n_boot(n_boot: int) -> None:
    """Bootstrap resample count: 0 (off) or more."""
    if n_boot < 0:
        raise ScoringError(f"bootstrap resamples must be >= 0 (0 = off), got {n_boot}")


def check_hyps(refs: dict[str, str], hyps: dict[str, str], *, allow_extra: bool) -> list[str]:
    """Hypothesis ids not in the references; a ScoringError unless ``allow_extra``."""
    if not refs:
        raise ScoringError("no reference utterances to score")
    extra = sorted(set(hyps) - set(refs))
    if extra and not allow_extra:
        shown = " ".join(extra[:5]) + (f" (and {len(extra) - 5} more)" if len(extra) > 5 else "")
        raise ScoringError(
            f"{len(extra)} hypothesis utterance(s) not in the reference: {shown}; "
            "score against the matching reference, or pass --allow-extra to ignore them"
        )
    return extra


def group_order(value: str) -> tuple[int, float, str]:
    """Sort key of group values: numbers numerically (``utt2snr``: -5, 0, 5, 10, inf), then
    the other values alphabetically."""
    try:
        number = float(value)
    except ValueError:
        return (1, 0.0, value)
    return (0, number, value) if number == number else (1, 0.0, value)


def score(
    refs: dict[str, str],
    hyps: dict[str, str],
    groups: dict[str, dict[str, str]] | None = None,
    *,
    cer: bool = False,
    normalizer: Normalizer | None = None,
    allow_extra: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    utt2spk: dict[str, str] | None = None,
) -> ScoreReport:
    """Score ``hyps`` against ``refs`` (utt -> text) overall and per group.

    ``groups``: name -> utt -> label (e.g. ``{"accent": utt2accent}``). ``utt2spk`` names
    the speakers in trn files (default: ``groups["spk"]``, else the utterance-id prefix).
    """
    normalizer = normalizer or Normalizer()
    check_n_boot(n_boot)
    extra = check_hyps(refs, hyps, allow_extra=allow_extra)
    if utt2spk is None and groups and "spk" in groups:
        utt2spk = groups["spk"]
    utts = align_utterances(refs, hyps, normalizer=normalizer, cer=cer, utt2spk=utt2spk)
    assigned, ungrouped = assign_groups([u.utt for u in utts], groups)
    overall = _group_score(utts, cer=cer, n_boot=n_boot, rng=group_rng(seed))
    by_group: dict[str, dict[str, GroupScore]] = {}
    macro: dict[str, float] = {}
    worst: dict[str, str] = {}
    best: dict[str, str] = {}
    gap: dict[str, float] = {}
    for name, table in assigned.items():
        members: dict[str, list[UttScore]] = {}
        for u in utts:
            members.setdefault(table[u.utt], []).append(u)
        by_group[name] = {
            value: _group_score(
                members[value], cer=cer, n_boot=n_boot, rng=group_rng(seed, name, value)
            )
            for value in sorted(members, key=group_order)
        }
        macro[name], worst[name], best[name], gap[name] = _summary(by_group[name])
    return ScoreReport(
        overall=overall,
        by_group=by_group,
        macro=macro,
        worst=worst,
        best=best,
        gap=gap,
        missing=[u.utt for u in utts if u.missing],
        extra=extra,
        ungrouped=ungrouped,
        utterances=utts,
        groups=assigned,
        cer=cer,
        normalizer=normalizer.to_dict(),
        n_boot=n_boot,
        seed=seed,
    )


def _summary(values: dict[str, GroupScore]) -> tuple[float, str, str, float]:
    """(macro WER, worst value, best value, gap) over labelled groups with reference words."""
    scored = {v: s.wer for v, s in values.items() if v != UNK_GROUP and not math.isnan(s.wer)}
    if not scored:
        return math.nan, "", "", math.nan
    worst = max(scored, key=lambda v: (scored[v], v))
    best = min(scored, key=lambda v: (scored[v], v))
    return float(np.mean(list(scored.values()))), worst, best, scored[worst] - scored[best]
