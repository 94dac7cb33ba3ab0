"""Expert-specialization report: ``report.json`` (every number), ``report.md`` and a
self-contained ``report.html`` (figures embedded as data URIs), plus the PNG figures
and ``routing.npz`` (the routing records, to re-render with ``RoutingData.load``).

The report opens with the verdict (:mod:`moe_asr.analysis.verdict`): per group, which
experts serve which values, or that routing does not specialise, with the numbers. Then
the summary, per-value WER beside routing (given a ``wer.json``), the comparison with a
second model (given its routing), load balance, and per group: lift heatmaps on a
diverging scale centred at 1, the identification confusion matrix and share heatmaps.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from moe_asr.analysis.compare import OtherRouting, compare_blocks, compare_routing, plot_sides
from moe_asr.analysis.metrics import analyze
from moe_asr.analysis.plots import (
    MAX_HEATMAP_ROWS,
    plot_compare,
    plot_confusion,
    plot_entropy,
    plot_group_heatmaps,
    plot_lift_heatmaps,
    plot_load,
    plot_nmi,
    plot_wer_routing,
)
from moe_asr.analysis.render import Block, fmt, to_html, to_markdown
from moe_asr.analysis.routing import RoutingData
from moe_asr.analysis.verdict import ALPHA, MIN_LIFT
from moe_asr.analysis.wer import WerFile, join_wer, wer_blocks
from moe_asr.data.datadir import DataDir
from moe_asr.errors import UserError
from moe_asr.files import atomic_write_text, check_outputs

__all__ = ["write_report", "select_groups", "report_files", "REPORT_FILES"]

REPORT_FILES = ("report.json", "report.md", "report.html", "routing.npz")
_FIGURES = ("load.png", "entropy.png", "nmi.png")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "group"


def _stems(group_names: list[str]) -> dict[str, str]:
    """A distinct file-name stem per group name (``a/b c`` -> ``a_b_c``)."""
    used: set[str] = set()
    out = {}
    for name in sorted(group_names):
        stem = _safe_name(name)
        while stem in used:
            stem += "_"
        used.add(stem)
        out[name] = stem
    return out


def report_files(group_names: list[str], *, wer: bool = False, compare: bool = False) -> list[str]:
    """Every file a report with these groups may write (to refuse an earlier report's)."""
    kinds = ["heatmap", "lift", "confusion"] + ["wer"] * wer + ["compare"] * compare
    stems = _stems(group_names).values()
    return [*REPORT_FILES, *_FIGURES, *(f"{k}_{s}.png" for s in stems for k in kinds)]


def _verdict_blocks(res: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = [("h2", "Verdict")]
    if not res["groups"]:
        return blocks + [("p", "No group labels: nothing to tell about specialisation.")]
    for name, st in res["groups"].items():
        v = st["verdict"]
        blocks.append(("p", v["text"]))
        if not v["experts"]:
            continue
        rows = [
            [
                str(ex["expert"]),
                g["group"],
                fmt(g["lift"], 2),
                fmt(g["lift_chance"], 2),
                fmt(g["share"]),
                fmt(g["coverage"]),
            ]
            for ex in v["experts"]
            for g in ex["groups"]
        ]
        header = ["expert", f"serves {name}", "lift", "lift under shuffled labels (max)"]
        header += ["share of the expert's frames", f"share of the {name} value's frames"]
        blocks.append(("table", header, rows))
    c = res["criteria"]
    blocks.append(
        (
            "p",
            f"Rule: {c['rule']} (alpha {c['alpha']}, min lift {c['min_lift']}, "
            f"{c['shuffles']} shuffles).",
        )
    )
    return blocks


def _group_blocks(name: str, st: dict[str, Any], figs: dict[str, str]) -> list[Block]:
    blocks: list[Block] = [("h2", f"Group: {name}")]
    sizes = ", ".join(f"{g} {n}" for g, n in zip(st["labels"], st["utts"]))
    blocks.append(("p", f"{len(st['labels'])} labels (utterances: {sizes})."))
    if len(st["labels"]) > MAX_HEATMAP_ROWS:
        blocks.append(("p", f"The heatmaps show the {MAX_HEATMAP_ROWS} largest groups."))
    blocks.append(
        (
            "p",
            f"NMI I({name}; expert)/H({name}): mean {fmt(st['nmi_mean'])}, "
            f"max {fmt(st['nmi_max'])} at layer {st['nmi_max_layer']}. The shuffled "
            f"columns are the NMI with labels shuffled across utterances ({st['shuffles']} "
            "shuffles: a router that ignores the group); p = (1 + shuffles reaching the observed "
            "NMI) / (1 + shuffles).",
        )
    )
    served = st["verdict"]["served"]
    rows = []
    for r in st["per_layer"]:
        prefs = "; ".join(
            f"e{p['expert']}: {p['group']} x{fmt(p['lift'], 2)}"
            if p["group"] is not None
            else f"e{p['expert']}: unused"
            for p in r["preferred"]
        )
        serves = "; ".join(
            f"e{ex['expert']}: " + ", ".join(g["group"] for g in ex["groups"])
            for ex in served.get(r["layer"], [])
        )
        row = [str(r["layer"]), fmt(r["nmi"]), fmt(r["nmi_shuffled"]), fmt(r["nmi_shuffled_max"])]
        rows.append([*row, fmt(r["nmi_p_value"]), serves or "-", prefs])
    header = ["layer", "NMI", "NMI shuffled (mean)", "(max)", "p", "experts serving (verdict)"]
    blocks.append(("table", [*header, "preferred group (lift over base rate)"], rows))
    ident = st["id"]
    if ident["accuracy"] is None:
        blocks.append(("p", f"{name} identification from routing: {ident.get('note', 'n/a')}."))
    else:
        text = (
            f"{name} identification from per-utterance routing histograms "
            f"({ident['method']}, {ident['n_folds']}-fold, held-out {ident['split_by']}s, "
            f"{ident['n_eval']} utterances): accuracy {fmt(ident['accuracy'])}, "
            f"chance (majority class) {fmt(ident['chance'])}."
        )
        if ident.get("split_note"):
            text += f" Note: {ident['split_note']}."
        if ident["dropped_labels"]:
            text += f" Left out (one utterance): {', '.join(ident['dropped_labels'])}."
        blocks.append(("p", text))
        recall = list(ident["per_label_recall"].items())
        if len(recall) <= MAX_HEATMAP_ROWS:  # report.json has every label's recall
            blocks.append(("table", ["label", "recall"], [[g, fmt(v)] for g, v in recall]))
    blocks.append(("img", figs[f"lift:{name}"], f"{name} x expert lift per layer"))
    if f"confusion:{name}" in figs:
        blocks.append(("img", figs[f"confusion:{name}"], f"{name} identified from routing"))
    elif ident["accuracy"] is not None:
        blocks.append(("p", f"No confusion figure: more than {MAX_HEATMAP_ROWS} labels."))
    blocks.append(
        ("img", figs[f"heatmap:{name}"], f"{name} x expert share of top-1 frames per layer")
    )
    return blocks


def _load_blocks(res: dict[str, Any], figs: dict[str, str]) -> list[Block]:
    rows = []
    for r in res["load"]:
        dead = ", ".join(map(str, r["dead_experts"])) or "-"
        rows.append(
            [
                str(r["layer"]),
                fmt(r["cv"]),
                fmt(r["max_min_ratio"], 2) if r["max_min_ratio"] is not None else "inf",
                dead,
                fmt(r["entropy_normalized"]),
                fmt(r["load_entropy_normalized"]),
                " ".join(fmt(v, 2) for v in r["top1_share"]),
            ]
        )
    header = ["layer", "load CV", "max/min", "unused experts", "router entropy / log E"]
    header += ["load entropy / log E", "top-1 share per expert"]
    return [
        ("h2", "Load balance and routing entropy"),
        ("table", header, rows),
        ("img", figs["load"], "top-1 load share per expert and layer"),
        ("img", figs["entropy"], "routing entropy per layer"),
    ]


def _document(res: dict[str, Any], figs: dict[str, str]) -> list[Block]:
    blocks: list[Block] = [("h1", res["title"])]
    blocks.append(
        (
            "p",
            f"{res['num_utts']} utterances, {res['num_frames']} encoder frames, "
            f"{len(res['layers'])} MoE layers ({', '.join(map(str, res['layers']))}), "
            f"{res['num_experts']} experts, top-{res['top_k']} routing.",
        )
    )
    blocks += _verdict_blocks(res)
    for note in res["notes"]:
        blocks.append(("p", f"Note: {note}."))
    if res["groups"]:
        rows = []
        for name, st in res["groups"].items():
            ident = st["id"]
            rows.append(
                [
                    name,
                    str(len(st["labels"])),
                    _yes_no(st["verdict"]["specialises"]),
                    fmt(st["nmi_mean"]),
                    f"{fmt(st['nmi_max'])} (layer {st['nmi_max_layer']})",
                    fmt(ident["accuracy"]),
                    fmt(ident["chance"]),
                ]
            )
        header = ["group", "labels", "specialises", "NMI mean", "NMI max", "ID accuracy"]
        blocks += [("h2", "Summary"), ("table", [*header, "ID chance"], rows)]
        blocks.append(("img", figs["nmi"], "NMI per layer"))
    if "wer" in res:
        blocks += wer_blocks(res["wer"], figs)
    if "compare" in res:
        blocks += compare_blocks(res["compare"], figs)
    blocks += _load_blocks(res, figs)
    for name, st in res["groups"].items():
        blocks += _group_blocks(name, st, figs)
    return blocks


def _yes_no(v: bool | None) -> str:
    return {True: "yes", False: "no"}.get(v, "not tested")


def select_groups(dd: DataDir, names: list[str] | None = None) -> dict[str, dict[str, str]]:
    """Group tables of a data dir for the report: ``names`` (``None``: every ``utt2<group>``).

    ``spk`` means ``utt2spk``. A requested group without its file is a UserError naming the
    file and listing the groups the data dir has.
    """
    where = dd.path if dd.path is not None else "data dir"
    if names is None:
        return {k: dict(v) for k, v in dd.groups.items()}
    out: dict[str, dict[str, str]] = {}
    for name in names:
        if name == "spk":
            out[name] = dict(dd.utt2spk)
        elif name in dd.groups:
            out[name] = dict(dd.groups[name])
        else:
            have = ", ".join(sorted([*dd.groups, "spk"]))
            raise UserError(
                f"{where}: no utt2{name} file for group {name!r}; available groups: {have}"
            )
    return out


def write_report(
    data: RoutingData,
    groups: dict[str, dict[str, str]],
    outdir: str | Path,
    *,
    speakers: dict[str, str] | None = None,
    title: str = "",
    name: str = "this model",
    wer: WerFile | None = None,
    other: OtherRouting | None = None,
    folds: int = 5,
    seed: int = 0,
    shuffles: int | None = None,
    alpha: float = ALPHA,
    min_lift: float = MIN_LIFT,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Analyse ``data`` against ``groups`` and write the report into ``outdir``.

    Args:
        groups: group name -> {utt: label} (e.g. a data dir's ``groups`` plus
            ``{"spk": utt2spk}``); empty: load and entropy only.
        speakers: utt -> speaker; group identification then holds out whole speakers.
        title: first heading of the report.
        name: this model's name in the comparison.
        wer: a ``load_wer`` result: per-value WER joined with routing (``wer`` section).
        other: a second model's routing: both analysed side by side (``compare``).
        shuffles, alpha, min_lift: the verdict's criteria (``analyze``).
    Writes report.json, report.md, report.html (self-contained), routing.npz and the
    PNG figures (load.png, entropy.png, nmi.png; per group heatmap_, lift_, confusion_,
    wer_ and compare_<group>.png). A previous report in ``outdir`` is refused
    (OutputExistsError) unless ``overwrite``; with it, only files of those names are
    replaced. Returns the dict saved as report.json.
    """
    outdir = Path(outdir)
    names = report_files(list(groups), wer=wer is not None, compare=other is not None)
    check_outputs(outdir, names, overwrite)
    if data.num_utts == 0:
        raise UserError("routing data holds no utterance; nothing to report")
    options = dict(folds=folds, seed=seed, shuffles=shuffles, alpha=alpha, min_lift=min_lift)
    res = analyze(data, groups, speakers=speakers, **options)
    res = {"title": title or "Expert specialization report", **res}
    if wer is not None:
        res["wer"] = join_wer(res, wer)
    if other is not None:
        res["compare"] = compare_routing(
            data, res, other, groups, name=name, speakers=speakers, **options
        )
    outdir.mkdir(parents=True, exist_ok=True)
    figs = {"load": "load.png", "entropy": "entropy.png"}
    plot_load(res["load"], outdir / figs["load"])
    plot_entropy(res["load"], outdir / figs["entropy"])
    if res["groups"]:
        figs["nmi"] = "nmi.png"
        plot_nmi(res["groups"], res["layers"], outdir / figs["nmi"])
    stems = _stems(list(groups))
    for group, st in res["groups"].items():
        stem = stems[group]
        figs[f"heatmap:{group}"] = f"heatmap_{stem}.png"
        plot_group_heatmaps(st, outdir / f"heatmap_{stem}.png", group_name=group)
        figs[f"lift:{group}"] = f"lift_{stem}.png"
        served = st["verdict"]["served"]
        plot_lift_heatmaps(st, outdir / f"lift_{stem}.png", group_name=group, served=served)
        ident = st["id"]
        if ident["accuracy"] is not None and len(ident["labels"]) <= MAX_HEATMAP_ROWS:
            figs[f"confusion:{group}"] = f"confusion_{stem}.png"
            plot_confusion(ident, outdir / f"confusion_{stem}.png", group_name=group)
        joined = res.get("wer", {}).get("groups", {}).get(group)
        if joined and any(r["wer"] is not None for r in joined["rows"]):
            figs[f"wer:{group}"] = f"wer_{stem}.png"
            plot_wer_routing(joined["rows"], outdir / f"wer_{stem}.png", group_name=group)
        cmp = res.get("compare")
        if cmp and group in cmp["groups"] and group in cmp["other"]["groups"]:
            figs[f"compare:{group}"] = f"compare_{stem}.png"
            sides = plot_sides(res["compare"], res, group)
            plot_compare(group, sides, outdir / f"compare_{stem}.png")
    res["figures"] = figs
    data.save(outdir / "routing.npz")
    blocks = _document(res, figs)
    atomic_write_text(outdir / "report.json", json.dumps(res, indent=1, allow_nan=False) + "\n")
    atomic_write_text(outdir / "report.md", to_markdown(blocks))
    atomic_write_text(outdir / "report.html", to_html(blocks, outdir))
    return res
