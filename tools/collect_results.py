"""Side-by-side Markdown tables of finished experiments (for a recipe's RESULTS.md).

Reads what the recipe stages wrote: ``EXP/decode_<set>_<mode>/{wer.json,decode.json}``,
``EXP/report_<set>/report.json``, ``EXP/checkpoints/history.json`` and ``EXP/model.pt``.

    python tools/collect_results.py exp/dense_char exp/moe_char --set test \
        --modes ctc_greedy attention_rescoring+lm --groups accent noise

``--json FILE`` also writes every number (WER in percent) as
``{"systems": {NAME: {"seed": S, "updates": N, "init": PATH | null, "set": {SET: {MODE:
{"wer": W, "groups": {GROUP: {VALUE: W}}}}, "report": {SET: {GROUP: {"nmi_mean": X,
"id_accuracy": A}}}}}}``; ``--set`` may name several sets (tables for each). A run started
from another model (``train --init``: EXP/init.json) counts that model's updates too. An
existing FILE is updated, not replaced: systems of other calls stay, and a system of this call
keeps its sets that this call's ``--set`` does not name (drivers collect a few systems a call).
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from moe_asr.files import atomic_write_text
from moe_asr.model import parameter_summary
from moe_asr.package import load_package


def _wer(exp: Path, test_set: str, mode: str) -> dict | None:
    path = exp / f"decode_{test_set}_{mode}" / "wer.json"
    return json.loads(path.read_text()) if path.exists() else None


def _cell(g: dict | None) -> str:
    if not g or g.get("wer") is None:
        return "-"
    return f"{g['wer']:.1f} [{g['ci_low']:.1f}, {g['ci_high']:.1f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("exps", nargs="+", type=Path)
    p.add_argument("--set", nargs="+", default=["test"])
    p.add_argument("--modes", nargs="+", default=["ctc_greedy"])
    p.add_argument("--groups", nargs="*", default=["accent", "noise"])
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args()
    for i, test_set in enumerate(args.set):
        if i:
            print()
        _tables(args, test_set)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = _merge(_read_json(args.json), _collect(args))
        atomic_write_text(args.json, json.dumps(doc, indent=1) + "\n")
        print(f"\nwrote {args.json}")


def _read_json(path: Path) -> dict:
    """The results document at ``path`` ({"systems": {}} when there is none)."""
    if not path.exists():
        return {"systems": {}}
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path}: not JSON ({e}); move it away or fix it, then rerun") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("systems"), dict):
        raise SystemExit(f'{path}: no {{"systems": {{...}}}} object; move it away, then rerun')
    return doc


def _merge(old: dict, new: dict) -> dict:
    """``old`` updated by ``new``: new systems replace old ones set by set (and report by
    report); systems and sets that ``new`` lacks are kept."""
    systems = dict(old["systems"])
    for name, system in new["systems"].items():
        merged = dict(system)
        if name in systems:
            for key in ("set", "report"):
                merged[key] = {**systems[name].get(key, {}), **system[key]}
        systems[name] = merged
    return {**old, "systems": systems}


@functools.cache
def _system(exp: Path):
    """(parameter summary row "total", training history) of an experiment, read once."""
    rows = parameter_summary(load_package(exp / "model.pt").model)
    total = next(r for r in rows if r.component == "total")
    return total, _history(exp)


def _history(exp: Path) -> list[dict]:
    return json.loads((exp / "checkpoints" / "history.json").read_text())


@functools.cache
def _updates(exp: Path) -> tuple[int, str | None]:
    """(updates including those of the model it was initialised from, that model's path):
    a continuation (``train --init``, EXP/init.json) counts its init model's updates too."""
    own = _history(exp)[-1]["step"]
    init = exp / "init.json"
    if not init.exists():
        return own, None
    source = Path(json.loads(init.read_text())["source"])
    if not source.is_absolute() and not source.exists():  # relative to the recipe dir
        source = exp.parent.parent / source
    src_exp = source.parent.parent if source.parent.name == "checkpoints" else source.parent
    if not (src_exp / "checkpoints" / "history.json").exists():
        return own, str(source)  # the init's history is not at hand: its updates are unknown
    return own + _updates(src_exp)[0], str(source)


def _collect(args: argparse.Namespace) -> dict:
    """The --json document (see the module doc)."""
    import yaml

    systems = {}
    for exp in args.exps:
        cfg = yaml.safe_load((exp / "config.yaml").read_text())
        updates, init = _updates(exp)
        sets: dict[str, dict] = {}
        reports: dict[str, dict] = {}
        for test_set in args.set:
            for mode in args.modes:
                w = _wer(exp, test_set, mode)
                if w is None:
                    continue
                groups = {
                    g: {v: c["wer"] for v, c in w["groups"][g]["values"].items()}
                    for g in args.groups
                    if g in w["groups"]
                }
                sets.setdefault(test_set, {})[mode] = {
                    "wer": w["overall"]["wer"],
                    "groups": groups,
                }
            path = exp / f"report_{test_set}" / "report.json"
            if path.exists():
                rep = json.loads(path.read_text())["groups"]
                reports[test_set] = {
                    g: {
                        "nmi_mean": rep[g]["nmi_mean"],
                        "id_accuracy": rep[g].get("id", {}).get("accuracy"),
                    }
                    for g in args.groups
                    if g in rep
                }
        systems[exp.name] = {
            "seed": cfg["train"]["seed"],
            "updates": updates,
            "init": init,
            "set": sets,
            "report": reports,
        }
    return {"systems": systems}


def _tables(args: argparse.Namespace, test_set: str) -> None:
    names = [e.name for e in args.exps]

    print(
        "| system | params total | active / frame | updates | train min | "
        + " | ".join(f"RTF {m}" for m in args.modes)
        + " |"
    )
    print("|---|---:|---:|---:|---:|" + "---:|" * len(args.modes))
    for exp in args.exps:
        total, hist = _system(exp)
        rtfs = []
        for m in args.modes:
            d = exp / f"decode_{test_set}_{m}" / "decode.json"
            rtfs.append(f"{json.loads(d.read_text())['rtf']:.4f}" if d.exists() else "-")
        print(
            f"| {exp.name} | {total.total / 1e6:.2f}M | {total.active / 1e6:.2f}M | "
            f"{_updates(exp)[0]} | {max(r['minutes'] for r in hist):.1f} | "
            + " | ".join(rtfs)
            + " |"
        )

    for mode in args.modes:
        wers = [_wer(e, test_set, mode) for e in args.exps]
        print(f"\n#### {test_set}, {mode}: WER % [95% CI]\n")
        print("| group | " + " | ".join(names) + " |")
        print("|---|" + "---:|" * len(names))
        print("| **all** | " + " | ".join(_cell(w and w["overall"]) for w in wers) + " |")
        for group in args.groups:
            values = sorted(
                {v for w in wers if w for v in w["groups"].get(group, {}).get("values", {})}
            )
            for v in values:
                cells = [
                    _cell(w and w["groups"].get(group, {}).get("values", {}).get(v)) for w in wers
                ]
                print(f"| {group}={v} | " + " | ".join(cells) + " |")
            macro = [(w or {}).get("groups", {}).get(group, {}).get("macro_wer") for w in wers]
            print(
                f"| {group} macro average | "
                + " | ".join("-" if m is None else f"{m:.1f}" for m in macro)
                + " |"
            )
            worst = []
            for w in wers:
                g = (w or {}).get("groups", {}).get(group, {})
                v = g.get("worst")
                worst.append("-" if v is None else f"{v} {g['values'][v]['wer']:.1f}")
            print(f"| {group} worst | " + " | ".join(worst) + " |")

    print(
        "\n#### expert report (label-free routing): NMI(group; top-1 expert) / H(group) per MoE FFN\n"
    )
    for exp in args.exps:
        path = exp / f"report_{test_set}" / "report.json"
        if not path.exists():
            print(f"- {exp.name}: no report (dense model)")
            continue
        rep = json.loads(path.read_text())
        for group in args.groups:
            g = rep["groups"].get(group)
            if not g:
                continue
            per_layer = ", ".join(
                f"{layer['layer']} {layer['nmi']:.3f}" for layer in g["per_layer"]
            )
            shuffled = [layer["nmi_shuffled"] for layer in g["per_layer"] if layer["nmi_shuffled"]]
            base = max(shuffled) if shuffled else float("nan")
            ident = g.get("id", {})
            print(
                f"- {exp.name}, {group}: mean NMI {g['nmi_mean']:.3f} ({per_layer}; shuffled-label "
                f"baseline <= {base:.3f}); identification from routing "
                f"{ident.get('accuracy')} (chance {ident.get('chance')})"
            )


if __name__ == "__main__":
    main()
