"""The data of an adaptation (``moe-asr adapt``): which utterances of the new value train,
how a small selection fills an epoch, and the replay of the accents the model already serves.

* ``select_minutes``: a seeded, budgeted, nested selection of utterance ids.
* ``value_durations``: the usable utterances of one label value in a data dir.
* ``repeat_datadir``: a small selection listed repeatedly (``<utt>_rN``).
* ``replay_selection``: utterances of *other* label values drawn from a replay dir (e.g. the
  model's own training data) to train beside the new value's, so that the parameters the
  values share (routers, experts) keep serving the values the model knows (rehearsal). They
  keep their own labels; the new value's utterances never enter through the replay.

Every function raises ``AdaptDataError`` (a ``UserError``) naming the dir and what to pass.
"""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path
from typing import Any, NamedTuple

from moe_asr.config import DataConfig
from moe_asr.errors import UserError

__all__ = [
    "AdaptDataError",
    "select_minutes",
    "value_durations",
    "select_value",
    "subset",
    "repeat_datadir",
    "ReplayDraw",
    "replay_selection",
]


class AdaptDataError(UserError):
    """The adaptation data cannot be selected as asked."""


def select_minutes(durations: dict[str, float], minutes: float | None, seed: int) -> list[str]:
    """Sorted ids totalling at most ``minutes`` (None: all): the longest prefix of the ids in
    the random order of ``seed`` that fits. Deterministic, and nested in ``minutes``."""
    order = sorted(durations)
    random.Random(seed).shuffle(order)
    if minutes is None:
        return sorted(order)
    budget, total, out = minutes * 60.0, 0.0, []
    for u in order:
        if total + durations[u] > budget + 1e-6:
            break
        total += durations[u]
        out.append(u)
    return sorted(out)


def subset(dd, utts):
    """``dd`` restricted to ``utts``, keeping its path (for messages)."""
    from moe_asr.data.datadir import subset_datadir

    sub = subset_datadir(dd, utts)
    sub.path = dd.path
    return sub


def _usable_durations(dd, data: DataConfig) -> dict[str, float]:
    """utt -> seconds of the utterances whose audio reads and fits ``data.max_utt_seconds``."""
    from moe_asr.data.dataset import AsrDataset

    ds = AsrDataset(dd, None, None, data, train=False)
    limit = data.max_utt_seconds
    return {u: d for u, d in ds.audio_durations.items() if d <= limit}


def value_durations(dd, label: str, value: str, data: DataConfig) -> dict[str, float]:
    """utt -> seconds of the usable utterances of ``label`` = ``value`` in ``dd`` (every
    utterance when ``dd`` has no ``utt2<label>``)."""
    table = dd.groups.get(label)
    utts = dd.utt_ids
    if table is not None:
        utts = [u for u in utts if table.get(u) == value]
        if not utts:
            present = ", ".join(sorted(set(table.values()))) or "none"
            raise AdaptDataError(
                f"{label} {value}: no utterance in {dd.path}/utt2{label} has it (values there: "
                f"{present}); pass --label {label}=<one of them>, or a dir without "
                f"utt2{label} (then every utterance is the new value)"
            )
    return _usable_durations(subset(dd, utts), data)


def select_value(
    durations: dict[str, float], minutes: float | None, seed: int, where: str
) -> list[str]:
    """``select_minutes`` of the new value's utterances; AdaptDataError when there are none,
    too few minutes, or the first drawn utterance is longer than the budget."""
    have = sum(durations.values()) / 60
    if not durations:
        raise AdaptDataError(f"{where}: no usable utterance (audio unreadable or too long)")
    if minutes is not None and have < minutes:
        raise AdaptDataError(
            f"{where}: has {have:.2f} minutes in {len(durations)} utterances, fewer than "
            f"--minutes {minutes:g}; pass --minutes {math.floor(have * 100) / 100:g} or less, "
            "or more data"
        )
    utts = select_minutes(durations, minutes, seed)
    if not utts:
        raise AdaptDataError(
            f"{where}: the first utterance drawn with --seed {seed} is longer than "
            f"--minutes {minutes:g}; pass more --minutes or another --seed"
        )
    return utts


def repeat_datadir(dd, times: int):
    """``dd`` with every utterance listed ``times`` times (copies ``<utt>_r2``, ...)."""
    if times <= 1:
        return dd
    out = copy.deepcopy(dd)
    for k in range(2, times + 1):
        for u in dd.utt_ids:
            c = f"{u}_r{k}"
            out.text[c], out.utt2spk[c] = dd.text[u], dd.utt2spk[u]
            if dd.segments is not None:
                out.segments[c] = dd.segments[u]
            else:
                out.wav_scp[c] = dd.wav_scp[u]
            if dd.utt2dur is not None:
                out.utt2dur[c] = dd.utt2dur[u]
            for table in (*out.groups.values(), *out.extra.values()):
                if u in table:
                    table[c] = table[u]
    return out


class ReplayDraw(NamedTuple):
    """The replay utterances drawn for an adaptation."""

    utts: list[str]  # sorted ids
    seconds: float  # their audio
    values: dict[str, int]  # utterances per label value
    data: Any  # the replay DataDir restricted to ``utts``


def replay_selection(
    path: Path, label: str, value: str, seconds: float, seed: int, data: DataConfig
) -> ReplayDraw:
    """At most ``seconds`` of audio from the replay dir ``path``, drawn by ``seed`` among its
    usable utterances whose ``label`` is another value than ``value``.

    The dir needs ``utt2<label>``: without labels the guided parts would see the replay as
    unlabelled speech, not as the values they must keep serving."""
    from moe_asr.data.datadir import load_datadir

    dd = load_datadir(path)
    table = dd.groups.get(label)
    if table is None:
        raise AdaptDataError(
            f"--replay-data {path}: has no utt2{label}; pass a data dir whose utterances are "
            f"labelled with the {label} values the model knows (e.g. its training data)"
        )
    others = [u for u in dd.utt_ids if table.get(u) not in (None, value)]
    durations = _usable_durations(subset(dd, others), data) if others else {}
    if not durations:
        raise AdaptDataError(
            f"--replay-data {path}: no usable utterance of a {label} other than {value}; pass "
            "the data of the values the model already serves"
        )
    utts = select_minutes(durations, seconds / 60.0, seed)
    counts: dict[str, int] = {}
    for u in utts:
        counts[table[u]] = counts.get(table[u], 0) + 1
    seconds_drawn = sum(durations[u] for u in utts)
    return ReplayDraw(utts, seconds_drawn, dict(sorted(counts.items())), subset(dd, utts))
