"""Per-group WER beside per-group routing: read the ``wer.json`` of ``moe-asr score --out``
and join it with the report's analysis, value by value (accent ``es``: its WER and CI,
how well routing identifies it, which experts serve it and how much of it they take).

``wer.json`` (:meth:`moe_asr.scoring.ScoreReport.to_json`) holds ``overall`` and
``groups[name]["values"][value]`` with ``utts``, ``wer``, ``ci_low``, ``ci_high`` (percent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moe_asr.analysis.render import Block, fmt
from moe_asr.data.labels import UNK_LABEL
from moe_asr.errors import UserError

__all__ = ["WerFile", "load_wer", "join_wer", "wer_blocks"]

_REDO = "pass the wer.json that `moe-asr score --out DIR` writes (e.g. DECODE_DIR/wer.json)"


@dataclass(frozen=True)
class WerFile:
    """A parsed ``wer.json``: its path and its content."""

    path: str
    data: dict[str, Any]

    @property
    def groups(self) -> list[str]:
        return sorted(self.data["groups"])


def load_wer(path: str | Path, groups: list[str] | None = None) -> WerFile:
    """Read and check a ``wer.json``; a UserError (one line) says what to pass instead.

    Args:
        groups: the report's group names; when given, ``wer.json`` must score at least
            one of them per group (``moe-asr score --group NAME``).
    """
    path = Path(path)
    if path.is_dir():
        hint = f"pass {path / 'wer.json'}" if (path / "wer.json").is_file() else _REDO
        raise UserError(f"--wer {path}: is a directory; {hint}")
    if not path.is_file():
        raise UserError(f"--wer {path}: no such file; {_REDO}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--wer {path}: not readable JSON ({e}); {_REDO}") from e
    ok = isinstance(data, dict) and isinstance(data.get("overall"), dict)
    ok = ok and isinstance(data.get("groups"), dict)
    ok = ok and all(
        isinstance(g, dict) and isinstance(g.get("values"), dict)
        and all(isinstance(v, dict) and "wer" in v for v in g["values"].values())
        for g in data["groups"].values()
    )  # fmt: skip
    if not ok:
        raise UserError(
            f"--wer {path}: not a wer.json of `moe-asr score` (no per-group values); {_REDO}"
        )
    wer = WerFile(str(path), data)
    if groups is not None and not set(groups) & set(wer.groups):
        have = ", ".join(wer.groups) or "none"
        raise UserError(
            f"--wer {path}: scores no report group ({', '.join(sorted(groups)) or 'none'}; it has "
            f"{have}); score with `moe-asr score --group {sorted(groups)[0] if groups else 'accent'} "
            "--out DIR` and pass DIR/wer.json"
        )
    return wer


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 6) if vals else None


def join_wer(res: dict[str, Any], wer: WerFile) -> dict[str, Any]:
    """Rows per group value: WER (scored utterances, CI) next to routing numbers.

    ``res`` is ``analyze(...)`` output. Per value: ``utts_routed``, ``utts_scored``, ``wer``,
    ``ci_low``, ``ci_high``, ``id_recall``, ``experts`` (those serving it in the verdict's
    strongest layer, with coverage), ``served_coverage`` (their share of the value's frames;
    ``None`` when the group does not specialise) and ``entropy_normalized`` (routing
    entropy / log E averaged over layers). Values in only one of the two are kept (n/a).
    """
    out: dict[str, Any] = {"source": wer.path, "overall": wer.data["overall"], "groups": {}}
    out["notes"] = []
    for name, stats in res["groups"].items():
        scored = wer.data["groups"].get(name)
        if scored is None:
            out["notes"].append(f"{wer.path} has no WER per {name}")
            continue
        values = scored["values"]
        verdict = stats.get("verdict", {})
        recall = stats["id"].get("per_label_recall") or {}
        labels = list(stats["labels"]) + sorted(set(values) - set(stats["labels"]))
        rows = []
        for label in labels:
            gi = stats["labels"].index(label) if label in stats["labels"] else None
            score = values.get(label, {})
            experts = verdict.get("by_label", {}).get(label, [])
            served = None
            if verdict.get("layer") is not None and label != UNK_LABEL and gi is not None:
                served = round(sum(x["coverage"] or 0.0 for x in experts), 6)
            ent = (
                [r["entropy_normalized"][gi] for r in stats["per_layer"]] if gi is not None else []
            )
            rows.append(
                {
                    "label": label,
                    "utts_routed": stats["utts"][gi] if gi is not None else 0,
                    "utts_scored": score.get("utts", 0),
                    "wer": score.get("wer"),
                    "ci_low": score.get("ci_low"),
                    "ci_high": score.get("ci_high"),
                    "id_recall": recall.get(label),
                    "experts": experts,
                    "served_coverage": served,
                    "entropy_normalized": _mean(ent),
                }
            )
        out["groups"][name] = {
            "layer": verdict.get("layer"),
            "macro_wer": scored.get("macro_wer"),
            "worst": scored.get("worst"),
            "best": scored.get("best"),
            "rows": rows,
        }
    return out


def wer_blocks(joined: dict[str, Any], figs: dict[str, str]) -> list[Block]:
    """The report section: one table (and figure) per group that has WER."""
    overall = joined["overall"]
    blocks: list[Block] = [
        ("h2", "WER and routing per value"),
        (
            "p",
            f"WER from {joined['source']} (overall {fmt(overall.get('wer'), 2)} % on "
            f"{overall.get('utts', 'n/a')} utterances). The routing columns are this report's "
            "utterances; 'served by' lists the experts that serve the value in the verdict's "
            "strongest layer with the share of its frames they take.",
        ),
    ]
    for note in joined["notes"]:
        blocks.append(("p", f"Note: {note}."))
    for name, g in joined["groups"].items():
        where = f"layer {g['layer']}" if g["layer"] is not None else "no layer specialises"
        blocks.append(
            ("h3", f"{name}: WER beside routing ({where}; macro WER {fmt(g['macro_wer'], 2)} %)")
        )
        header = [name, "utts scored", "WER % [95% CI]", "utts routed", "ID recall"]
        header += ["served by (share of its frames)", "router entropy / log E"]
        rows = []
        for r in g["rows"]:
            ci = (
                f" [{fmt(r['ci_low'], 1)}, {fmt(r['ci_high'], 1)}]"
                if r["ci_low"] is not None
                else ""
            )
            served = ", ".join(f"e{x['expert']} ({fmt(x['coverage'], 2)})" for x in r["experts"])
            rows.append(
                [
                    r["label"],
                    str(r["utts_scored"]),
                    f"{fmt(r['wer'], 2)}{ci}",
                    str(r["utts_routed"]),
                    fmt(r["id_recall"]),
                    served or ("-" if g["layer"] is not None else "n/a"),
                    fmt(r["entropy_normalized"]),
                ]
            )
        blocks.append(("table", header, rows))
        if f"wer:{name}" in figs:
            blocks.append(("img", figs[f"wer:{name}"], f"{name}: WER and routing per value"))
    return blocks
