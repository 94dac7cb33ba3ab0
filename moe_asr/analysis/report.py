"""Expert-specialization report: ``report.json`` (every number), ``report.md`` and a
self-contained ``report.html`` (figures embedded as data URIs), plus the PNG figures
and ``routing.npz`` (the routing records, to re-render with ``RoutingData.load``).
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

from moe_asr.analysis.metrics import analyze
from moe_asr.analysis.plots import (
    MAX_HEATMAP_ROWS,
    plot_entropy,
    plot_group_heatmaps,
    plot_load,
    plot_nmi,
)
from moe_asr.analysis.routing import RoutingData
from moe_asr.data.datadir import DataDir
from moe_asr.errors import UserError
from moe_asr.files import atomic_write_text, check_outputs

__all__ = ["write_report", "select_groups", "REPORT_FILES"]

REPORT_FILES = ("report.json", "report.md", "report.html", "routing.npz")

# A document is a list of blocks rendered twice (Markdown and HTML):
# ("h1"|"h2"|"h3", text) ("p", text) ("table", header, rows) ("img", file, caption)
_Block = tuple


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "group"


def _group_blocks(name: str, st: dict[str, Any], heatmap: str) -> list[_Block]:
    blocks: list[_Block] = [("h2", f"Group: {name}")]
    sizes = ", ".join(f"{g} {n}" for g, n in zip(st["labels"], st["utts"]))
    blocks.append(("p", f"{len(st['labels'])} labels (utterances: {sizes})."))
    if len(st["labels"]) > MAX_HEATMAP_ROWS:
        blocks.append(("p", f"The heatmap shows the {MAX_HEATMAP_ROWS} largest groups."))
    blocks.append(
        (
            "p",
            f"NMI I({name}; expert)/H({name}): mean {_fmt(st['nmi_mean'])}, "
            f"max {_fmt(st['nmi_max'])} at layer {st['nmi_max_layer']}. The shuffled "
            "column is the NMI with labels shuffled across utterances (a router that "
            "ignores the group).",
        )
    )
    rows = []
    for r in st["per_layer"]:
        prefs = "; ".join(
            f"e{p['expert']}: {p['group']} x{_fmt(p['lift'], 2)}"
            if p["group"] is not None
            else f"e{p['expert']}: unused"
            for p in r["preferred"]
        )
        rows.append([str(r["layer"]), _fmt(r["nmi"]), _fmt(r["nmi_shuffled"]), prefs])
    blocks.append(
        ("table", ["layer", "NMI", "NMI shuffled", "preferred group (lift over base rate)"], rows)
    )
    ident = st["id"]
    if ident["accuracy"] is None:
        blocks.append(("p", f"{name} identification from routing: {ident.get('note', 'n/a')}."))
    else:
        text = (
            f"{name} identification from per-utterance routing histograms "
            f"({ident['method']}, {ident['n_folds']}-fold, held-out {ident['split_by']}s, "
            f"{ident['n_eval']} utterances): accuracy {_fmt(ident['accuracy'])}, "
            f"chance (majority class) {_fmt(ident['chance'])}."
        )
        if ident.get("split_note"):
            text += f" Note: {ident['split_note']}."
        if ident["dropped_labels"]:
            text += f" Left out (one utterance): {', '.join(ident['dropped_labels'])}."
        blocks.append(("p", text))
        recall = list(ident["per_label_recall"].items())
        if len(recall) <= MAX_HEATMAP_ROWS:  # report.json has every label's recall
            blocks.append(("table", ["label", "recall"], [[g, _fmt(v)] for g, v in recall]))
    blocks.append(("img", heatmap, f"{name} x expert share of top-1 frames per layer"))
    return blocks


def _load_blocks(res: dict[str, Any], figs: dict[str, str]) -> list[_Block]:
    rows = []
    for r in res["load"]:
        dead = ", ".join(map(str, r["dead_experts"])) or "-"
        rows.append(
            [
                str(r["layer"]),
                _fmt(r["cv"]),
                _fmt(r["max_min_ratio"], 2) if r["max_min_ratio"] is not None else "inf",
                dead,
                _fmt(r["entropy_normalized"]),
                _fmt(r["load_entropy_normalized"]),
                " ".join(_fmt(v, 2) for v in r["top1_share"]),
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


def _document(res: dict[str, Any], figs: dict[str, str]) -> list[_Block]:
    blocks: list[_Block] = [("h1", res["title"])]
    blocks.append(
        (
            "p",
            f"{res['num_utts']} utterances, {res['num_frames']} encoder frames, "
            f"{len(res['layers'])} MoE layers ({', '.join(map(str, res['layers']))}), "
            f"{res['num_experts']} experts, top-{res['top_k']} routing.",
        )
    )
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
                    _fmt(st["nmi_mean"]),
                    f"{_fmt(st['nmi_max'])} (layer {st['nmi_max_layer']})",
                    _fmt(ident["accuracy"]),
                    _fmt(ident["chance"]),
                ]
            )
        header = ["group", "labels", "NMI mean", "NMI max", "ID accuracy", "ID chance"]
        blocks += [("h2", "Summary"), ("table", header, rows)]
        blocks.append(("img", figs["nmi"], "NMI per layer"))
    blocks += _load_blocks(res, figs)
    for name, st in res["groups"].items():
        blocks += _group_blocks(name, st, figs[f"heatmap:{name}"])
    return blocks


def _markdown(blocks: list[_Block]) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + b[1])
        elif kind == "p":
            out.append(b[1])
        elif kind == "table":
            cells = [[c.replace("|", "\\|") for c in row] for row in [b[1], *b[2]]]
            out.append("| " + " | ".join(cells[0]) + " |")
            out[-1] += "\n|" + "---|" * len(b[1])
            out[-1] += "".join("\n| " + " | ".join(r) + " |" for r in cells[1:])
        elif kind == "img":
            out.append(f"![{b[2]}]({b[1]})")
    return "\n\n".join(out) + "\n"


_CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#eee}"
    "figure{margin:1em 0}img{max-width:100%}figcaption{font-size:85%;color:#555}"
)


def _html(blocks: list[_Block], outdir: Path) -> str:
    e = html.escape
    title = next((b[1] for b in blocks if b[0] == "h1"), "report")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
    ]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{e(b[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(b[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{e(c)}</th>" for c in b[1])
            body = "".join(
                "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b[2]
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode((outdir / b[1]).read_bytes()).decode("ascii")
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{e(b[2])}">'
                f'<figcaption>{e(b[2])} (<a href="{e(b[1])}">{e(b[1])}</a>)</figcaption></figure>'
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


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
    folds: int = 5,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Analyse ``data`` against ``groups`` and write the report into ``outdir``.

    Args:
        groups: group name -> {utt: label} (e.g. a data dir's ``groups`` plus
            ``{"spk": utt2spk}``); empty: load and entropy only.
        speakers: utt -> speaker; group identification then holds out whole speakers.
        title: first heading of the report.
    Writes report.json, report.md, report.html (self-contained), routing.npz and the
    PNG figures (load.png, entropy.png, nmi.png, heatmap_<group>.png). A previous report
    in ``outdir`` is refused (OutputExistsError) unless ``overwrite``; with it, only files
    of those names are replaced. Returns the dict saved as report.json.
    """
    outdir = Path(outdir)
    check_outputs(outdir, [*REPORT_FILES, "load.png", "entropy.png", "nmi.png"], overwrite)
    if data.num_utts == 0:
        raise UserError("routing data holds no utterance; nothing to report")
    outdir.mkdir(parents=True, exist_ok=True)
    res = analyze(data, groups, speakers=speakers, folds=folds, seed=seed)
    res = {"title": title or "Expert specialization report", **res}
    figs = {"load": "load.png", "entropy": "entropy.png"}
    plot_load(res["load"], outdir / figs["load"])
    plot_entropy(res["load"], outdir / figs["entropy"])
    if res["groups"]:
        figs["nmi"] = "nmi.png"
        plot_nmi(res["groups"], res["layers"], outdir / figs["nmi"])
    used: set[str] = set()
    for name, st in res["groups"].items():
        stem = f"heatmap_{_safe_name(name)}"
        while stem in used:
            stem += "_"
        used.add(stem)
        figs[f"heatmap:{name}"] = f"{stem}.png"
        plot_group_heatmaps(st, outdir / f"{stem}.png", group_name=name)
    res["figures"] = figs
    data.save(outdir / "routing.npz")
    blocks = _document(res, figs)
    atomic_write_text(outdir / "report.json", json.dumps(res, indent=1, allow_nan=False) + "\n")
    atomic_write_text(outdir / "report.md", _markdown(blocks))
    atomic_write_text(outdir / "report.html", _html(blocks, outdir))
    return res
