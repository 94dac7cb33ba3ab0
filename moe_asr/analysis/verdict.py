"""The report's answer in words: which experts serve which groups, or that routing does not
specialise, with the numbers that decide it.

Expert e *serves* group value g in MoE layer L when all three hold:

1. Layer L routes by the group at all: its NMI(group; top-1 expert) is above the
   shuffled-label baseline, permutation p-value <= alpha / (number of MoE layers)
   (labels shuffled across utterances; Bonferroni over layers).
2. The effect is large: lift(g, e) = P(g | e) / P(g) >= ``min_lift`` (the expert's frames
   hold g ``min_lift`` times as often as the data does).
3. The lift is not chance for a pair of that size: it exceeds the largest lift of the same
   (g, e) in every label shuffle (``lift_shuffled_max``, its chance band).

The ``unk`` value (utterances without a label) is never served. A group *specialises*
when some layer has a served pair; the verdict describes the layer with the highest NMI
among those (the strongest layer) and lists the others. Without that, it says routing
does not specialise and gives the layer closest to it with its baseline.
"""

from __future__ import annotations

import math
from typing import Any

from moe_asr.data.labels import UNK_LABEL

__all__ = ["ALPHA", "MIN_LIFT", "RULE", "served_pairs", "group_verdict"]

ALPHA = 0.05  # family-wise level of the per-layer NMI permutation tests
MIN_LIFT = 1.5  # smallest lift that counts as an expert serving a group
RULE = (
    "expert e serves value g in layer L when L's NMI(group; top-1 expert) is above the "
    "shuffled-label baseline (permutation p <= alpha / number of MoE layers), "
    "lift(g, e) = P(g | e) / P(g) >= min_lift, and that lift exceeds its maximum over "
    "every label shuffle; unk is never served"
)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def _layer_numbers(row: dict[str, Any], shuffles: int) -> str:
    return (
        f"NMI {row['nmi']:.3f} vs {row['nmi_shuffled']:.3f} with shuffled labels "
        f"(max {row['nmi_shuffled_max']:.3f} over {shuffles} shuffles, p = {_p(row['nmi_p_value'])})"
    )


def served_pairs(
    stats: dict[str, Any], layer_index: int, *, min_lift: float = MIN_LIFT
) -> list[dict[str, Any]]:
    """Experts of one layer with the group values they serve (rules 2 and 3; rule 1 is the
    caller's). Each entry: ``expert`` and ``groups``, a list of ``group``, ``lift``,
    ``lift_chance`` (its shuffled maximum), ``share`` (= P(g | e), of the expert's frames)
    and ``coverage`` (= P(e | g), of the group's frames), highest lift first."""
    row = stats["per_layer"][layer_index]
    chance = row.get("lift_shuffled_max")
    if chance is None:
        return []
    out = []
    n_experts = len(row["lift"][0]) if row["lift"] else 0
    for e in range(n_experts):
        groups = []
        for gi, g in enumerate(stats["labels"]):
            lift, band = row["lift"][gi][e], chance[gi][e]
            if g == UNK_LABEL or lift is None or lift < min_lift:
                continue
            if band is not None and lift <= band:
                continue
            groups.append(
                {
                    "group": g,
                    "lift": lift,
                    "lift_chance": band,
                    "share": row["share_of_expert"][gi][e],
                    "coverage": row["top1_share"][gi][e],
                }
            )
        if groups:
            groups.sort(key=lambda x: -x["lift"])
            out.append({"expert": e, "groups": groups})
    return out


def _by_label(stats: dict[str, Any], experts: list[dict[str, Any]]) -> dict[str, list]:
    """Label -> the experts serving it (most of the label's frames first)."""
    out: dict[str, list] = {g: [] for g in stats["labels"] if g != UNK_LABEL}
    for ex in experts:
        for g in ex["groups"]:
            out[g["group"]].append(
                {"expert": ex["expert"], "coverage": g["coverage"], "lift": g["lift"]}
            )
    for v in out.values():
        v.sort(key=lambda x: -(x["coverage"] or 0.0))
    return out


def _expert_text(ex: dict[str, Any], top: int = 3) -> str:
    parts = [
        f"{g['group']} (lift {g['lift']:.2f}, {_pct(g['share'])} of its frames, "
        f"{_pct(g['coverage'])} of {g['group']}'s)"
        for g in ex["groups"][:top]
    ]
    more = len(ex["groups"]) - top
    return (
        f"expert {ex['expert']} -> " + ", ".join(parts) + (f" and {more} more" if more > 0 else "")
    )


def group_verdict(
    stats: dict[str, Any], *, name: str, alpha: float = ALPHA, min_lift: float = MIN_LIFT
) -> dict[str, Any]:
    """Decide and phrase whether routing specialises for one group (rules above).

    Args:
        stats: one group's entry of ``analyze(...)["groups"]`` (``group_metrics`` output).
        name: the group's name (accent, noise, ...) used in the text.
    Returns a JSON-able dict: ``specialises`` (``None`` when it cannot be tested),
    ``level`` (alpha / layers), ``significant_layers``, ``served`` (layer -> served pairs,
    significant layers only), ``layer`` (the strongest layer or ``None``), ``experts``
    and ``by_label`` (served pairs there, by expert and by label), and ``text``.
    """
    rows = stats["per_layer"]
    shuffles = int(stats.get("shuffles") or 0)
    level = alpha / max(len(rows), 1)
    out: dict[str, Any] = {
        "specialises": None,
        "alpha": alpha,
        "level": level,
        "min_lift": min_lift,
        "shuffles": shuffles,
        "significant_layers": [],
        "served": {},
        "layer": None,
        "experts": [],
        "by_label": {},
    }
    known = [g for g in stats["labels"] if g != UNK_LABEL]
    if len(known) < 2:
        out["text"] = (
            f"{name}: {len(known)} labelled value(s) ({', '.join(known)}); nothing to tell apart."
        )
        return out
    if shuffles == 0:
        out["text"] = f"{name}: not tested (no shuffled-label baseline: shuffles = 0)."
        return out
    if 1.0 / (shuffles + 1) > level:
        need = math.ceil(round(1.0 / level, 6)) - 1
        out["text"] = (
            f"{name}: not tested: {shuffles} label shuffles cannot reach p <= {level:.2g} "
            f"(alpha {alpha} / {len(rows)} layers); use at least {need}."
        )
        return out
    significant = [i for i, r in enumerate(rows) if r["nmi_p_value"] <= level + 1e-12]
    out["significant_layers"] = [rows[i]["layer"] for i in significant]
    for i in significant:
        pairs = served_pairs(stats, i, min_lift=min_lift)
        if pairs:
            out["served"][rows[i]["layer"]] = pairs
    out["specialises"] = bool(out["served"])
    test = f"p <= {level:.2g} = {alpha} / {len(rows)} layers"
    if not significant:
        i = min(range(len(rows)), key=lambda j: (rows[j]["nmi_p_value"], -rows[j]["nmi"]))
        out["text"] = (
            f"{name}: routing does not specialise. No layer's NMI is above the shuffled-label "
            f"baseline ({test}); the closest, layer {rows[i]['layer']}: "
            f"{_layer_numbers(rows[i], shuffles)}."
        )
        return out
    best = max(significant, key=lambda j: rows[j]["nmi"])
    if not out["served"]:
        largest = None  # the largest lift of a labelled value there, with its chance band
        for gi, g in enumerate(stats["labels"]):
            for e, lift in enumerate(rows[best]["lift"][gi]):
                if g != UNK_LABEL and lift is not None and (largest is None or lift > largest[0]):
                    largest = (lift, e, g, rows[best]["lift_shuffled_max"][gi][e])
        tail = ""
        if largest is not None:
            band = "n/a" if largest[3] is None else f"{largest[3]:.2f}"
            tail = (
                f": the largest there is {largest[0]:.2f} (expert {largest[1]}, {largest[2]}; "
                f"at most {band} with shuffled labels)"
            )
        out["text"] = (
            f"{name}: routing does not specialise. NMI is above the shuffled-label baseline "
            f"({test}) in layer(s) {', '.join(out['significant_layers'])}; strongest, layer "
            f"{rows[best]['layer']}: {_layer_numbers(rows[best], shuffles)}. But no expert's "
            f"lift reaches {min_lift} above its chance band{tail}. A weak association, "
            f"not experts serving {name} values."
        )
        return out
    best = max(
        (j for j in significant if rows[j]["layer"] in out["served"]), key=lambda j: rows[j]["nmi"]
    )
    layer = rows[best]["layer"]
    experts = out["served"][layer]
    out.update(layer=layer, experts=experts, by_label=_by_label(stats, experts))
    idle = [
        str(e) for e in range(len(rows[best]["lift"][0])) if e not in {x["expert"] for x in experts}
    ]
    unserved = [g for g, ex in out["by_label"].items() if not ex]
    others = [x for x in out["served"] if x != layer]
    text = (
        f"{name}: routing specialises in layer(s) {', '.join(out['served'])} of {len(rows)}. "
        f"Strongest, layer {layer}: {_layer_numbers(rows[best], shuffles)}. There: "
        + "; ".join(_expert_text(ex) for ex in experts)
        + "."
    )
    if idle:
        text += f" Expert(s) {', '.join(idle)} serve no single {name} value."
    if unserved:
        text += f" No expert serves {', '.join(unserved)} there."
    if others:
        text += f" Layer(s) {', '.join(others)} have serving experts too (tables below)."
    out["text"] = text
    return out
