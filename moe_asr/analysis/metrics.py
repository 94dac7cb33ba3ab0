"""Expert-specialization metrics computed from :class:`RoutingData` and group tables.

Group tables map utterance -> label (``{"accent": {utt: "es"}}``); an utterance
without a label gets ``unk``, which is kept as a group value in shares and NMI and
left out of group identification. Conventions:

- Joint counts are frame-level: (group, top-1 expert) summed over utterances.
- NMI = I(G; X) / H(G) in nats, X the top-1 expert; 0 when H(G) = 0. It is 1 when
  the expert determines the group. ``nmi_shuffled`` is the mean NMI after shuffling
  labels across utterances: the value a router that ignores the group would get on
  this data (frames of one utterance are not independent, so it exceeds 0);
  ``nmi_p_value`` is the permutation p-value of the observed NMI against those shuffles.
- Lift of a group for an expert = P(group | expert) / P(group); the preferred group
  maximises it (group sizes do not favour large groups). ``lift_shuffled_max`` is each
  pair's largest lift over the shuffles: the lift chance alone reaches for a pair that size.
- The verdict (:mod:`moe_asr.analysis.verdict`) reads these numbers.
- Group identification: features are per-utterance top-1 histograms (normalised by
  frames) concatenated over layers; nearest-centroid classification under stratified
  k-fold cross-validation. With a speaker table, folds split speakers (no speaker in
  both train and test) when every label has at least two speakers; otherwise folds
  split utterances and ``split_note`` says why.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from moe_asr.analysis.routing import RoutingData
from moe_asr.analysis.verdict import ALPHA, MIN_LIFT, RULE, group_verdict
from moe_asr.data.labels import UNK_LABEL
from moe_asr.errors import UserError

__all__ = [
    "group_labels",
    "label_order",
    "joint_counts",
    "normalized_mutual_info",
    "load_metrics",
    "default_shuffles",
    "group_metrics",
    "group_id_accuracy",
    "analyze",
]


def group_labels(utt_ids: list[str], table: dict[str, str]) -> list[str]:
    """Label of every utterance in order; a missing one is ``unk``."""
    return [table.get(u, UNK_LABEL) for u in utt_ids]


def label_order(labels: list[str]) -> list[str]:
    """Distinct labels, sorted, ``unk`` last."""
    distinct = set(labels)
    out = sorted(distinct - {UNK_LABEL})
    return out + [UNK_LABEL] if UNK_LABEL in distinct else out


def _onehot(labels: list[str], order: list[str]) -> np.ndarray:
    """(U, G) float one-hot of ``labels`` over ``order``."""
    pos = {g: i for i, g in enumerate(order)}
    out = np.zeros((len(labels), len(order)))
    out[np.arange(len(labels)), [pos[g] for g in labels]] = 1.0
    return out


def joint_counts(counts: np.ndarray, labels: list[str], order: list[str]) -> np.ndarray:
    """(G, E) sums of per-utterance ``counts`` (U, E) over the utterances of each group."""
    return _onehot(labels, order).T @ counts


def normalized_mutual_info(joint: np.ndarray) -> float:
    """I(G; X) / H(G) in nats from a (G, X) count matrix; 0 when H(G) = 0 or no counts."""
    joint = np.asarray(joint, dtype=np.float64)
    total = joint.sum()
    if total <= 0:
        return 0.0
    p = joint / total
    pg = p.sum(axis=1, keepdims=True)  # (G, 1)
    px = p.sum(axis=0, keepdims=True)  # (1, X)
    h_g = -float(np.sum(pg[pg > 0] * np.log(pg[pg > 0])))
    if h_g <= 1e-12:
        return 0.0
    nz = p > 0
    mi = float(np.sum(p[nz] * np.log(p[nz] / (pg @ px)[nz])))
    return min(max(mi / h_g, 0.0), 1.0)


def _num(x: float) -> float | None:
    """A JSON-safe float: rounded, ``None`` for nan/inf."""
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


def _nums(a: np.ndarray) -> list:
    return [_nums(r) if np.ndim(r) else _num(r) for r in a]


def _shares(rows: np.ndarray) -> np.ndarray:
    """Row-normalise (..., E); all-zero rows stay zero."""
    s = rows.sum(axis=-1, keepdims=True)
    return np.divide(rows, s, out=np.zeros_like(rows, dtype=np.float64), where=s > 0)


def load_metrics(data: RoutingData) -> list[dict[str, Any]]:
    """Per MoE layer: load shares, balance (CV, max/min) and routing entropy.

    ``top1_share``/``topk_share`` sum to 1 over experts; ``mean_prob`` is the mean router
    probability; ``cv`` is std/mean of top-1 loads; ``max_min_ratio`` is ``None`` when an
    expert got no frame (listed in ``dead_experts``); entropies are in nats and
    normalised by log E (``load_entropy`` is the entropy of ``top1_share``).
    """
    frames = float(data.frames.sum())
    log_e = math.log(data.num_experts) if data.num_experts > 1 else 0.0
    out = []
    for li, layer in enumerate(data.layer_names):
        load = data.top1[:, li].sum(axis=0).astype(np.float64)  # (E,)
        share = _shares(load)
        mean = load.mean()
        cv = float(load.std() / mean) if mean > 0 else 0.0
        dead = [int(e) for e in np.flatnonzero(load == 0)]
        ratio = float(load.max() / load.min()) if load.min() > 0 else math.inf
        ent = float(data.entropy_sum[:, li].sum() / frames) if frames else 0.0
        nz = share[share > 0]
        load_ent = float(-(nz * np.log(nz)).sum())
        out.append(
            {
                "layer": layer,
                "encoder_layer": data.layers[li],
                "half": data.halves[li],
                "top1_share": _nums(share),
                "topk_share": _nums(_shares(data.topk[:, li].sum(axis=0).astype(np.float64))),
                "mean_prob": _nums(data.prob_sum[:, li].sum(axis=0) / max(frames, 1.0)),
                "cv": _num(cv),
                "max_min_ratio": _num(ratio),
                "dead_experts": dead,
                "entropy": _num(ent),
                "entropy_normalized": _num(ent / log_e) if log_e else None,
                "load_entropy_normalized": _num(load_ent / log_e) if log_e else None,
            }
        )
    return out


def default_shuffles(num_layers: int, alpha: float = ALPHA) -> int:
    """Label shuffles per group: enough that the smallest permutation p-value, 1/(n+1), is
    half of ``alpha / num_layers`` (the Bonferroni level over layers), and at least 199."""
    return max(199, math.ceil(round(2 * max(num_layers, 1) / alpha, 6)) - 1)


def _lift(joint: np.ndarray) -> np.ndarray:
    """(..., G, E) lift P(g, e) / (P(g) P(e)) from frame counts; nan for an unused expert."""
    total = joint.sum(axis=(-2, -1), keepdims=True)
    expected = joint.sum(axis=-1, keepdims=True) * joint.sum(axis=-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected > 0, joint * total / expected, np.nan)


def _nmi_layers(joint: np.ndarray) -> np.ndarray:
    """(L,) ``normalized_mutual_info`` of each layer of a (G, L, E) count array."""
    return np.array([normalized_mutual_info(joint[:, li]) for li in range(joint.shape[1])])


def group_metrics(
    data: RoutingData, labels: list[str], *, shuffles: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """Per MoE layer: NMI with its shuffled-label baseline, lift, shares, preferred groups.

    Args:
        labels: one label per utterance of ``data`` (``unk`` for unknown).
        shuffles: label permutations across utterances for the baseline (``None``:
            ``default_shuffles``; 0 = skip). Per layer: ``nmi_shuffled`` (mean),
            ``nmi_shuffled_max``, ``nmi_p_value`` = (1 + #shuffles with NMI >= observed)
            / (1 + shuffles), and ``lift_shuffled_max`` (G, E), the largest lift of each
            (group, expert) pair under shuffled labels (its chance band).

    Matrices are (G, E), rows in ``labels`` order: ``top1_share`` = P(e | g) (a group's
    frames over experts), ``share_of_expert`` = P(g | e) (an expert's frames over
    groups), ``lift`` = P(g | e) / P(g) (``None``: unused expert).
    """
    assert len(labels) == data.num_utts, "one label per utterance"
    n_shuffles = default_shuffles(data.num_layers) if shuffles is None else shuffles
    order = label_order(labels)
    pos = {g: i for i, g in enumerate(order)}
    y = np.array([pos[g] for g in labels], dtype=np.int64)  # (U,)
    onehot = _onehot(labels, order)  # (U, G)
    group_frames = onehot.T @ data.frames  # (G,)
    n_l, n_e = data.num_layers, data.num_experts
    joint_all = onehot.T @ data.top1.reshape(data.num_utts, -1)  # (G, L*E)
    joint_all = joint_all.reshape(len(order), n_l, n_e)  # (G, L, E)
    nmi = _nmi_layers(joint_all)  # (L,)
    lift = _lift(joint_all.transpose(1, 0, 2))  # (L, G, E)
    # shuffles: permuting labels = permuting rows; sums per group via reduceat on the
    # rows sorted by label (every group keeps its size, so no group is empty)
    rng = np.random.default_rng(seed)
    by_label = np.argsort(y, kind="stable")
    starts = np.searchsorted(y[by_label], np.arange(len(order)))
    flat = data.top1.reshape(data.num_utts, -1).astype(np.float64)  # (U, L*E)
    shuffled = np.zeros((n_shuffles, n_l))
    lift_max = np.full((n_l, len(order), n_e), -np.inf)
    for s in range(n_shuffles):
        perm = rng.permutation(data.num_utts)
        joint_p = np.add.reduceat(flat[perm[by_label]], starts, axis=0)  # (G, L*E)
        joint_p = joint_p.reshape(len(order), n_l, n_e)
        shuffled[s] = _nmi_layers(joint_p)
        lift_max = np.fmax(lift_max, _lift(joint_p.transpose(1, 0, 2)))
    per_layer = []
    for li, layer in enumerate(data.layer_names):
        joint = joint_all[:, li]  # (G, E) frames
        joint_k = onehot.T @ data.topk[:, li]  # (G, E) frame-expert assignments
        probs = onehot.T @ data.prob_sum[:, li]  # (G, E)
        p_g_given_e = _shares(joint.T)  # (E, G)
        experts = []
        for e in range(n_e):
            if joint[:, e].sum() == 0:
                experts.append({"expert": e, "group": None, "lift": None, "p_group": None})
                continue
            g = int(np.argmax(lift[li][:, e]))
            experts.append(
                {
                    "expert": e,
                    "group": order[g],
                    "lift": _num(lift[li][g, e]),
                    "p_group": _num(p_g_given_e[e, g]),
                }
            )
        entropy = onehot.T @ data.entropy_sum[:, li]  # (G,) nats summed over frames
        log_e = math.log(n_e) if n_e > 1 else 1.0
        row: dict[str, Any] = {
            "layer": layer,
            "nmi": _num(nmi[li]),
            "nmi_shuffled": None,
            "nmi_shuffled_max": None,
            "nmi_p_value": None,
            "top1_share": _nums(_shares(joint)),
            "topk_share": _nums(_shares(joint_k)),
            "mean_prob": _nums(probs / np.maximum(group_frames, 1.0)[:, None]),
            "share_of_expert": _nums(p_g_given_e.T),
            "lift": _nums(lift[li]),
            "lift_shuffled_max": None,
            "entropy_normalized": _nums(entropy / np.maximum(group_frames, 1.0) / log_e),
            "preferred": experts,
        }
        if n_shuffles:
            worse = int(np.sum(shuffled[:, li] >= nmi[li] - 1e-12))
            row["nmi_shuffled"] = _num(float(shuffled[:, li].mean()))
            row["nmi_shuffled_max"] = _num(float(shuffled[:, li].max()))
            row["nmi_p_value"] = _num((1 + worse) / (1 + n_shuffles))
            row["lift_shuffled_max"] = _nums(lift_max[li])
        per_layer.append(row)
    nmis = [r["nmi"] for r in per_layer]
    best = int(np.argmax(nmis))
    return {
        "labels": order,
        "utts": [int(c) for c in onehot.sum(axis=0)],
        "frames": [int(c) for c in group_frames],
        "shuffles": n_shuffles,
        "nmi_mean": _num(float(np.mean(nmis))),
        "nmi_max": nmis[best],
        "nmi_max_layer": data.layer_names[best],
        "per_layer": per_layer,
    }


def _assign_folds(
    units: list[str], labels: list[str], n_folds: int, rng: np.random.Generator
) -> dict[str, int]:
    """Stratified fold of each unit: units grouped by majority label, shuffled, dealt in turn."""
    by_unit: dict[str, Counter] = {}
    for u, g in zip(units, labels):
        by_unit.setdefault(u, Counter())[g] += 1
    strata: dict[str, list[str]] = {}
    for u in sorted(by_unit):
        strata.setdefault(by_unit[u].most_common(1)[0][0], []).append(u)
    fold: dict[str, int] = {}
    i = 0
    for g in sorted(strata):
        members = strata[g]
        for j in rng.permutation(len(members)):
            fold[members[j]] = i % n_folds
            i += 1
    return fold


def _nearest_centroid(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, n_classes: int, metric: str
) -> np.ndarray:
    """Predicted class (N_test,) of each test row; classes absent from training never win."""
    d = train_x.shape[1]
    cent = np.zeros((n_classes, d))
    present = np.zeros(n_classes, dtype=bool)
    for c in range(n_classes):
        rows = train_x[train_y == c]
        if len(rows):
            cent[c], present[c] = rows.mean(axis=0), True
    if metric == "cosine":

        def unit(a: np.ndarray) -> np.ndarray:
            return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

        score = unit(test_x) @ unit(cent).T  # (N, C)
    else:
        score = -((test_x[:, None, :] - cent[None]) ** 2).sum(-1)  # (N, C)
    score[:, ~present] = -np.inf
    return score.argmax(axis=1)


def group_id_accuracy(
    data: RoutingData,
    labels: list[str],
    *,
    speakers: dict[str, str] | None = None,
    folds: int = 5,
    seed: int = 0,
    metric: str = "cosine",
) -> dict[str, Any]:
    """Identify each utterance's group from its routing histogram, on held-out folds.

    Features: (U, L*E) top-1 histograms normalised by frames. Utterances labelled ``unk``
    or without frames, and labels with fewer than two utterances, are left out.
    ``accuracy`` is ``None`` (with ``note``) when fewer than two labels remain.
    ``chance`` is the majority-class rate among the evaluated utterances.
    """
    if metric not in ("cosine", "euclidean"):
        raise UserError(f"group-ID metric must be cosine or euclidean, got {metric!r}")
    if folds < 2:
        raise UserError(f"group-ID needs at least 2 folds, got {folds}")
    counts = Counter(g for g, f in zip(labels, data.frames) if g != UNK_LABEL and f > 0)
    dropped = sorted(g for g, c in counts.items() if c < 2)
    keep = [
        i
        for i, (g, f) in enumerate(zip(labels, data.frames))
        if g != UNK_LABEL and f > 0 and counts[g] >= 2
    ]
    order = sorted({labels[i] for i in keep})
    result: dict[str, Any] = {
        "method": f"nearest centroid ({metric}) on per-utterance top-1 histograms",
        "labels": order,
        "dropped_labels": dropped,
        "accuracy": None,
        "chance": None,
        "n_eval": 0,
    }
    if len(order) < 2:
        result["note"] = "fewer than two labels with two or more utterances; nothing to identify"
        return result
    y_lab = [labels[i] for i in keep]
    y = np.array([order.index(g) for g in y_lab])
    x = data.top1[keep].reshape(len(keep), -1) / data.frames[keep, None]  # (N, L*E)
    utts = [data.utt_ids[i] for i in keep]
    split_by, note = "utterance", ""
    spk: list[str | None] = [None] * len(utts)
    if speakers is not None:
        spk = [speakers.get(u) for u in utts]
        per_label = {g: {s for s, gg in zip(spk, y_lab) if gg == g} for g in order}
        if any(s is None for s in spk):
            note = "some utterances have no speaker; folds split utterances"
        elif min(len(v) for v in per_label.values()) < 2:
            thin = sorted(g for g, v in per_label.items() if len(v) < 2)
            note = f"label(s) {', '.join(thin)} have one speaker; folds split utterances"
        else:
            split_by = "speaker"
    units = [str(s) for s in spk] if split_by == "speaker" else utts
    per_label_units = {g: len({u for u, gg in zip(units, y_lab) if gg == g}) for g in order}
    n_folds = max(2, min(folds, min(per_label_units.values())))
    fold_of = _assign_folds(units, y_lab, n_folds, np.random.default_rng(seed))
    fold = np.array([fold_of[u] for u in units])
    pred = np.empty_like(y)
    for f in range(n_folds):
        test = fold == f
        pred[test] = _nearest_centroid(x[~test], y[~test], x[test], len(order), metric)
    confusion = np.zeros((len(order), len(order)), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    recall = _shares(confusion.astype(np.float64)).diagonal()
    result.update(
        accuracy=_num(float((pred == y).mean())),
        chance=_num(max(Counter(y.tolist()).values()) / len(y)),
        n_eval=len(y),
        n_folds=n_folds,
        split_by=split_by,
        per_label_recall=dict(zip(order, _nums(recall))),
        confusion=confusion.tolist(),
    )
    if note:
        result["split_note"] = note
    return result


def analyze(
    data: RoutingData,
    groups: dict[str, dict[str, str]],
    *,
    speakers: dict[str, str] | None = None,
    folds: int = 5,
    seed: int = 0,
    shuffles: int | None = None,
    alpha: float = ALPHA,
    min_lift: float = MIN_LIFT,
) -> dict[str, Any]:
    """Every number of the report as a JSON-able dict (no nan/inf: those become ``None``).

    ``groups`` maps a group name (accent, noise, spk, ...) to its utt -> label table;
    a table that labels none of the utterances is reported under ``notes`` and skipped.
    Each group gets ``verdict`` (:func:`moe_asr.analysis.verdict.group_verdict` with
    ``alpha`` and ``min_lift``, recorded under ``criteria``).
    """
    if not 0.0 < alpha < 1.0:
        raise UserError(f"alpha must be in (0, 1), got {alpha}")
    if min_lift <= 1.0:
        raise UserError(f"min lift must be above 1 (1 = no preference), got {min_lift}")
    if shuffles is not None and shuffles < 0:
        raise UserError(f"shuffles must be 0 or more, got {shuffles}")
    out: dict[str, Any] = {
        "num_utts": data.num_utts,
        "num_frames": int(data.frames.sum()),
        "num_experts": data.num_experts,
        "top_k": data.top_k,
        "layers": data.layer_names,
        "load": load_metrics(data),
        "criteria": {
            "alpha": alpha,
            "min_lift": min_lift,
            "shuffles": default_shuffles(data.num_layers, alpha) if shuffles is None else shuffles,
            "rule": RULE,
        },
        "groups": {},
        "notes": [],
    }
    if data.layer_names != [str(x) for x in data.layers]:
        out["notes"].append(
            "layer names: a/b = first/second macaron feed-forward of that encoder layer"
        )
    if data.skipped:
        utt, why = next(iter(data.skipped.items()))
        out["skipped"] = dict(data.skipped)
        out["notes"].append(
            f"{len(data.skipped)} utterance(s) refused by the encoder and left out, "
            f"e.g. {utt}: {why}"
        )
    if not groups:
        out["notes"].append("no group files (utt2accent, utt2noise, ...): load and entropy only")
    for name in sorted(groups):
        labels = group_labels(data.utt_ids, groups[name])
        if all(g == UNK_LABEL for g in labels):
            out["notes"].append(f"group {name!r}: no analysed utterance has a label; skipped")
            continue
        stats = group_metrics(data, labels, shuffles=out["criteria"]["shuffles"], seed=seed)
        stats["id"] = group_id_accuracy(data, labels, speakers=speakers, folds=folds, seed=seed)
        stats["verdict"] = group_verdict(stats, name=name, alpha=alpha, min_lift=min_lift)
        out["groups"][name] = stats
    return out
