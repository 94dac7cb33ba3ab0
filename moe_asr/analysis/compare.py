"""Two models' specialisation side by side on the same utterances.

The other model's routing comes either from a model package (``moe-asr report --compare
other/model.pt``: the encoder is run on the same data, see
:func:`moe_asr.analysis.pipeline.routing_of_package`) or from an earlier report dir
(``--compare exp/other/report_test``: its ``routing.npz``, named after its ``report.json``
title). Either way both models are analysed by this code with the same groups, shuffles
and criteria, on the utterances both have, so every number is comparable (an old
report.json's numbers are not reused).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moe_asr.analysis.metrics import analyze
from moe_asr.analysis.render import Block, fmt
from moe_asr.analysis.routing import RoutingData
from moe_asr.errors import UserError

__all__ = ["OtherRouting", "load_report_dir", "compare_routing", "compare_blocks", "plot_sides"]


@dataclass(frozen=True, kw_only=True)
class OtherRouting:
    """The routing of the model compared against: its name, where it came from
    (``kind`` ``model`` or ``report``) and its records."""

    name: str
    source: str
    kind: str
    data: RoutingData


def load_report_dir(path: str | Path) -> OtherRouting:
    """The routing records of a report dir (``routing.npz``), named by its report.json title."""
    path = Path(path)
    npz = path / "routing.npz"
    if not npz.is_file():
        raise UserError(
            f"--compare {path}: not a report dir (no routing.npz); pass a dir written by "
            "`moe-asr report`, or the other model's model.pt"
        )
    name = str(path)
    try:
        title = json.loads((path / "report.json").read_text(encoding="utf-8")).get("title")
        name = str(title) if title else name
    except (OSError, ValueError, AttributeError):
        pass  # the records are what counts; the title is only a name
    return OtherRouting(name=name, source=str(path), kind="report", data=RoutingData.load(npz))


def _side(res: dict[str, Any], name: str) -> dict[str, Any]:
    g = res["groups"].get(name)
    if g is None:
        return {}
    v, ident = g["verdict"], g["id"]
    return {
        "nmi_mean": g["nmi_mean"],
        "nmi_max": g["nmi_max"],
        "nmi_max_layer": g["nmi_max_layer"],
        "id_accuracy": ident["accuracy"],
        "id_chance": ident["chance"],
        "specialises": v["specialises"],
        "layer": v["layer"],
        "serving_experts": len(v["experts"]),
        "served_values": sorted(k for k, ex in v["by_label"].items() if ex),
        "verdict": v["text"],
    }


def compare_routing(
    data: RoutingData,
    res: dict[str, Any],
    other: OtherRouting,
    groups: dict[str, dict[str, str]],
    *,
    name: str,
    speakers: dict[str, str] | None = None,
    **analysis: Any,
) -> dict[str, Any]:
    """Analyse ``other`` as ``data`` was analysed (``res``, ``analysis`` its keyword options:
    folds, seed, shuffles, alpha, min_lift), on the utterances both have.

    Returns ``names`` ([this, other]), ``utts`` (common) and each side's count, the other
    model's full analysis (``other``), this model's on the common utterances (``this``, only
    when they are fewer than in ``res``), and per group the side-by-side numbers ``[this,
    other]``. No utterance in common is a UserError naming what to pass.
    """
    theirs = set(other.data.utt_ids)
    common = [u for u in data.utt_ids if u in theirs]
    if not common:
        raise UserError(
            f"--compare {other.source}: none of its {other.data.num_utts} utterances is among "
            f"the {data.num_utts} analysed here; pass a model package, or a report of the same "
            "data dir"
        )
    same = len(common) == data.num_utts
    this = res if same else analyze(data.subset(common), groups, speakers=speakers, **analysis)
    them = analyze(other.data.subset(common), groups, speakers=speakers, **analysis)
    names = [name, other.name if other.name != name else f"{other.name} (compared)"]
    side = {}
    for g in this["groups"]:
        a, b = _side(this, g), _side(them, g)
        side[g] = {k: [a.get(k), b.get(k)] for k in a}
    return {
        "names": names,
        "source": other.source,
        "kind": other.kind,
        "utts": len(common),
        "utts_this": data.num_utts,
        "utts_other": other.data.num_utts,
        "this": None if same else this,
        "other": them,
        "groups": side,
    }


def plot_sides(cmp: dict[str, Any], res: dict[str, Any], group: str) -> list[tuple]:
    """(name, group stats, layer index) of both models for ``plot_compare``: each at its
    verdict's strongest layer, else at its highest-NMI layer."""
    this = cmp["this"] or res
    out = []
    for name, r in zip(cmp["names"], (this, cmp["other"])):
        stats = r["groups"][group]
        layer = stats["verdict"]["layer"] or stats["nmi_max_layer"]
        idx = [x["layer"] for x in stats["per_layer"]].index(layer)
        out.append((name, stats, idx))
    return out


def compare_blocks(cmp: dict[str, Any], figs: dict[str, str]) -> list[Block]:
    """The report section: the models' numbers per group and each verdict, side by side."""
    a, b = cmp["names"]
    other = cmp["other"]
    blocks: list[Block] = [("h2", f"Comparison: {a} vs {b}")]
    text = (
        f"Both analysed here with the same groups and criteria on the {cmp['utts']} "
        f"utterances both have (this report {cmp['utts_this']}, {b} {cmp['utts_other']}; "
        f"its routing from the {cmp['kind']} {cmp['source']}). {b}: {len(other['layers'])} "
        f"MoE layers, {other['num_experts']} experts, top-{other['top_k']}."
    )
    blocks.append(("p", text))
    quantities = [
        ("specialises", "specialises", lambda v: {True: "yes", False: "no"}.get(v, "not tested")),
        ("layer", "strongest layer", lambda v: fmt(v)),
        ("serving_experts", "experts serving a value there", lambda v: fmt(v)),
        ("served_values", "values served", lambda v: ", ".join(v) if v else "-"),
        ("nmi_mean", "NMI mean", lambda v: fmt(v)),
        ("nmi_max", "NMI max", lambda v: fmt(v)),
        ("nmi_max_layer", "NMI max layer", lambda v: fmt(v)),
        ("id_accuracy", "identification accuracy", lambda v: fmt(v)),
        ("id_chance", "identification chance", lambda v: fmt(v)),
    ]
    for group, side in cmp["groups"].items():
        blocks.append(("h3", f"{group}"))
        rows = [[label, show(side[key][0]), show(side[key][1])] for key, label, show in quantities]
        blocks.append(("table", [group, a, b], rows))
        blocks.append(("p", f"{a}: {side['verdict'][0]}"))
        blocks.append(("p", f"{b}: {side['verdict'][1] or 'no labelled utterance'}"))
        if f"compare:{group}" in figs:
            caption = f"{group}: NMI per layer, and lift at each model's strongest layer"
            blocks.append(("img", figs[f"compare:{group}"], caption))
    return blocks
