"""Extract a smaller model for one label group (an accent, or several): keep the experts
that group's utterances use, drop the rest.

Coverage (``extract_model``, ``--accent``/``--label``): the package's encoder runs
label-free over the group's utterances of a data dir (``collect_routing``, the same capture
as the report), and per MoE feed-forward keeps the fewest experts that receive at least
``coverage`` of the group's top-k assignments (never fewer than top_k; ties go to the lower
expert id). The dropped experts and their router rows are removed
(``MoEFeedForward.keep_experts``) and a normal package is written: its config holds the
per-feed-forward counts (``model.moe.ffn_experts``) and its meta what was kept
(``meta["extract"]``, original expert ids per feed-forward).

What stays equal: on a frame whose top-k experts are all kept, top-k >= 2 routing
(renormalised) with dropless dispatch gives the full model's output exactly. With top-1
the weight is the router probability, now a softmax over fewer experts, so a frame's
expert output grows by 1 / (probability mass of the kept experts): ``kept_prob_mass``
in the meta says how close to 1 that is. A capacity factor > 0 gives each remaining
expert a larger capacity. Models whose routing is restricted to label groups
(``group_router``, ``hard_groups``) are cut with ``extract_group`` instead: their groups
are defined over all experts.

One group (``extract_group``, ``--group-of VALUE``), for models whose routing is restricted
to expert groups of a label (hierarchical ``group_router``, or ``hard_groups``): the group
of VALUE (a label value, whose group is its family under ``guidance.groups``, or a group
name) is fixed. Routing is captured with VALUE forced over the data's utterances of the
group; every layer whose routing the group restricts keeps exactly the group's experts,
plus, with ``free_experts`` > 0, the fewest other experts taking >= ``coverage`` of the
free choices (``select_group_experts``); the other MoE layers keep experts by coverage as
above. A layer that keeps only its group becomes a plain top-k MoE over it; one that keeps
other experts for the free choices a fixed-group layer (``model.moe.ffn_fixed_group``: the
group's experts first, top_k - free choices among them, the free ones among the rest). The
label guidance (group routers, label loss) is removed: the cut model routes label-free as
the full one does with VALUE forced (``--force``). Exactness, with dropless dispatch: on
an utterance whose frames' choices are all kept (with coverage 1: every captured utterance),
the cut encoder equals the forced full encoder to float rounding when every layer routes
top_k >= 2 (renormalised weights keep their ratios), and with top-1 in the group layers
without free choices too (the group's softmax is the same); top-1 in the other layers is as
in coverage mode. Models whose routers also read a label embedding (``embed``,
``utterance_estimate``) are refused: forcing feeds them an embedding the cut model could not.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moe_asr.analysis.routing import RoutingData, collect_routing
from moe_asr.errors import UserError
from moe_asr.nn.moe import MoEFeedForward

__all__ = [
    "ExtractError",
    "ExtractResult",
    "select_experts",
    "select_group_experts",
    "extract_model",
    "extract_group",
]


class ExtractError(UserError):
    """An extraction cannot be made (bad coverage, dense model, label absent, output exists)."""


@dataclass
class ExtractResult:
    """What ``extract_model``/``extract_group`` wrote. ``ffns``: one dict per MoE feed-forward
    in encoder order (layer, half, experts, kept (original ids), fixed_group (0: plain top-k),
    coverage of top-k assignments, kept_prob_mass). ``group``/``forced``: the group kept and
    the value forced (``extract_group`` only); ``group_layers``: the layers it restricts."""

    path: Path
    label: str
    values: list[str]
    utts: int
    ffns: list[dict] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    notes: list[str] = field(default_factory=list)
    group: str = ""
    forced: str = ""
    group_layers: list[int] = field(default_factory=list)


def select_experts(
    counts: np.ndarray, coverage: float, top_k: int, sizes: list[int]
) -> list[list[int]]:
    """Per feed-forward, the fewest experts holding >= ``coverage`` of its assignments.

    counts: (L, E) top-k assignments per feed-forward and expert (E >= every size);
    sizes: the L feed-forwards' expert counts. Returns L sorted lists of expert ids, each
    of at least ``top_k`` (and at most sizes[l]) experts; ties go to the lower id.
    """
    _check_coverage(coverage)
    keep = []
    for row, size in zip(np.asarray(counts, dtype=np.int64), sizes, strict=True):
        row = row[:size]
        order = sorted(range(size), key=lambda e: (-int(row[e]), e))
        need = coverage * int(row.sum())
        n, acc = 0, 0
        while n < size and (acc < need - 1e-9 * need or n < top_k):
            acc += int(row[order[n]])
            n += 1
        keep.append(sorted(order[:n]))
    return keep


def select_group_experts(
    row: np.ndarray, group: list[int], frames: int, top_k: int, free: int, coverage: float
) -> tuple[list[int], int]:
    """One feed-forward routed within ``group`` (top_k - free choices in it, ``free`` over
    all others) over ``frames`` frames: the experts to keep, the group's first, and the
    fixed-group size (0 when only the group is kept, a plain top-k layer).

    row: (E,) top-k assignments per expert. The other experts are added, most used first
    (ties: lower id), until the kept ones hold >= ``coverage`` of the frames x ``free`` free
    choices (those that stayed inside the group count as held); at least top_k in all.
    """
    _check_coverage(coverage)
    row = np.asarray(row, dtype=np.int64)
    group = sorted(group)
    if free == 0:
        return group, 0
    inside = int(row[group].sum()) - frames * (top_k - free)  # free choices in the group
    others = sorted((e for e in range(len(row)) if e not in group), key=lambda e: (-row[e], e))
    need = coverage * frames * free
    n, acc = 0, inside
    while n < len(others) and (acc < need - 1e-9 * need or len(group) + n < top_k):
        if row[others[n]] == 0 and len(group) + n >= top_k:
            break
        acc += int(row[others[n]])
        n += 1
    chosen = sorted(others[:n])
    return group + chosen, len(group) if chosen else 0


def extract_model(
    model_path: str | Path,
    data_dir: str | Path,
    *,
    label: str,
    values: list[str],
    coverage: float,
    out: str | Path,
    overwrite: bool = False,
    max_utts: int | None = None,
    progress: bool = True,
) -> ExtractResult:
    """Write a package of ``model_path`` cut down to the experts that the utterances of
    ``data_dir`` with ``utt2<label>`` in ``values`` use (see the module docstring)."""
    model_path, out = Path(model_path), Path(out)
    pkg = _open(model_path, out, overwrite, coverage)
    guidance = pkg.config.model.moe.guidance
    if guidance.labels and (guidance.hard_groups or guidance.group_router):
        kind = "group_router" if guidance.group_router else "hard_groups"
        raise ExtractError(
            f"{model_path}: routes within expert groups of a label (model.moe.guidance.{kind}), "
            "which cover all experts; cut it to one group with --group-of VALUE instead"
        )
    if not values:
        raise ExtractError(f"no {label} values given; pass e.g. --label {label}=V1,V2")
    dd, utts = _utterances(data_dir, label, set(values), listed=values)
    data, ffns = _capture(pkg, dd, utts, None, max_utts, progress)
    sizes = [m.num_experts for _, _, m in ffns]
    keep = select_experts(data.topk.sum(0), coverage, pkg.model.cfg.moe.top_k, sizes)
    result = ExtractResult(path=out, label=label, values=list(values), utts=data.num_utts)
    cfg = copy.deepcopy(pkg.config)
    if cfg.model.moe.guidance.router_loss_weight > 0:
        # a training-only loss over expert groups; the groups needed every expert
        cfg.model.moe.guidance.router_loss_weight = 0.0
        result.notes.append("router label loss (training only) switched off")
    extra = {"mode": "coverage", "label": label, "values": list(values), "coverage": coverage}
    return _cut_and_save(
        pkg, model_path, data_dir, out, cfg, ffns, data, keep, [], 0, result, extra
    )


def extract_group(
    model_path: str | Path,
    data_dir: str | Path,
    *,
    value: str,
    coverage: float,
    out: str | Path,
    overwrite: bool = False,
    max_utts: int | None = None,
    progress: bool = True,
) -> ExtractResult:
    """Write a package of ``model_path`` that serves the expert group of ``value`` only
    (a value of the model's group label or a group name; see the module docstring)."""
    from moe_asr.config import GuidanceConfig, config_to_dict

    model_path, out = Path(model_path), Path(out)
    pkg = _open(model_path, out, overwrite, coverage)
    model, gcfg = pkg.model, pkg.config.model.moe.guidance
    groups = model.guidance.label_groups if model.guidance is not None else None
    if groups is None or not (gcfg.group_router or gcfg.hard_groups):
        raise ExtractError(
            f"--group-of {value}: {model_path} does not route within expert groups of a label "
            "(model.moe.guidance.group_router or hard_groups); cut it by coverage with "
            "--label NAME=V1[,V2]"
        )
    if gcfg.embed or gcfg.utterance_estimate:
        raise ExtractError(
            f"--group-of {value}: the routers of {model_path} also read a label embedding "
            "(model.moe.guidance.embed or utterance_estimate), which a cut model could not "
            "feed; --group-of supports group-routed models without one"
        )
    gid = groups.group_of(value)
    if gid is None:
        fams = f"; its groups: {', '.join(groups.names)}" if groups.families else ""
        raise ExtractError(
            f"--group-of {value}: unknown {groups.name} value; the model knows "
            f"{', '.join(groups.values[1:])}{fams}"
        )
    name, members = groups.names[gid], groups.group_values(gid)
    forced = value if value in members else members[0]
    what = f"{groups.name} group {name} ({', '.join(members)})"
    dd, utts = _utterances(data_dir, groups.name, set(members))
    if not utts:
        raise ExtractError(
            f"--group-of {value}: no utterance in {data_dir}/utt2{groups.name} has a value of "
            f"{what}; values there: {', '.join(sorted(set(dd.groups[groups.name].values())))}"
        )
    routing = model.forced_routing({groups.name: forced})
    data, ffns = _capture(pkg, dd, utts, routing, max_utts, progress)
    top_k, free = model.cfg.moe.top_k, gcfg.free_experts
    layers = sorted(i for i in model.guidance.group_layers if i in model.moe_layers)
    counts = data.topk.sum(0)  # (L, E)
    frames = int(data.frames.sum())
    keep, fixed = [], []
    for (layer, _, ffn), row in zip(ffns, counts, strict=True):
        if layer in layers:
            kept, n = select_group_experts(
                row[: ffn.num_experts], list(groups.experts[gid]), frames, top_k, free, coverage
            )
        else:
            kept, n = select_experts(row[None], coverage, top_k, [ffn.num_experts])[0], 0
        keep.append(kept)
        fixed.append(n)
    result = ExtractResult(
        path=out,
        label=groups.name,
        values=members,
        utts=data.num_utts,
        group=name,
        forced=forced,
        group_layers=layers,
    )
    cfg = copy.deepcopy(pkg.config)
    cfg.model.moe.guidance = GuidanceConfig()
    result.notes.append(
        f"label guidance removed: the model serves {what} only, as the full model with "
        f"--force {groups.name}={forced}"
    )
    extra = {
        "mode": "group",
        "label": groups.name,
        "values": members,
        "group": name,
        "forced": forced,
        "group_layers": layers,
        "free_experts": free,
        "coverage": coverage,
        "guidance": config_to_dict(pkg.config)["model"]["moe"]["guidance"],
    }
    return _cut_and_save(
        pkg, model_path, data_dir, out, cfg, ffns, data, keep, fixed, free, result, extra
    )


def _check_coverage(coverage: float) -> None:
    if not 0 < coverage <= 1:
        raise ExtractError(f"--coverage {coverage} must be in (0, 1], e.g. 0.95")


def _open(model_path: Path, out: Path, overwrite: bool, coverage: float):
    """The checked source package (an MoE model; coverage in range; ``out`` free)."""
    from moe_asr.package import load_package

    _check_coverage(coverage)
    if out.exists() and not overwrite:
        raise ExtractError(f"{out}: exists; pass --overwrite to replace it, or another --out")
    pkg = load_package(model_path)
    if not pkg.model.moe_layers:
        raise ExtractError(
            f"{model_path}: a dense model (model.ffn: {pkg.config.model.ffn}) has no experts "
            "to extract; pass a package trained with model.ffn: moe"
        )
    if pkg.config.model.moe.guidance.value_routers:
        raise ExtractError(
            f"{model_path}: its label values have router corrections over every expert "
            "(model.moe.guidance.value_routers), which extract cannot cut yet; extract from "
            "a model without them"
        )
    return pkg


def _utterances(data_dir, label: str, wanted: set[str], listed: list[str] | None = None):
    """(data dir, sorted utterances whose utt2<label> value is in ``wanted``). ``listed``:
    values the user named (--label), each of which must occur."""
    from moe_asr.data.datadir import load_datadir

    dd = load_datadir(data_dir)
    table = dd.groups.get(label)
    if table is None:
        have = ", ".join(f"utt2{g}" for g in sorted(dd.groups)) or "none"
        raise ExtractError(
            f"{data_dir}: no utt2{label} file (label files there: {have}); pass a data dir "
            f"with utt2{label}"
            + (", or --label NAME=V with one of them" if listed is not None else "")
        )
    present = sorted(set(table.values()))
    absent = [v for v in listed or [] if v not in present]
    if absent:
        raise ExtractError(
            f"{label} {', '.join(absent)}: no utterance in {data_dir}/utt2{label} "
            f"has it; values there: {', '.join(present)}"
        )
    return dd, sorted(u for u, v in table.items() if v in wanted)


def _capture(pkg, dd, utts: list[str], routing, max_utts: int | None, progress: bool):
    """Routing of ``utts`` under ``routing`` (None: label-free) and the MoE feed-forwards."""
    from moe_asr.data.datadir import subset_datadir
    from moe_asr.data.dataset import AsrDataset, make_loader, make_sampler

    ds = AsrDataset(subset_datadir(dd, utts), None, None, pkg.config.data, train=False)
    loader = make_loader(ds, make_sampler(ds, shuffle=False), 0)
    data = collect_routing(pkg.model, loader, routing, max_utts=max_utts, progress=progress)
    ffns = _moe_feedforwards(pkg.model)
    keys = [(layer, half) for layer, half, _ in ffns]
    assert keys == list(zip(data.layers, data.halves)), (keys, data.layers, data.halves)
    return data, ffns


def _cut_and_save(
    pkg,
    model_path: Path,
    data_dir,
    out: Path,
    cfg,
    ffns: list[tuple[int, int, MoEFeedForward]],
    data: RoutingData,
    keep: list[list[int]],
    fixed: list[int],
    free: int,
    result: ExtractResult,
    extra: dict,
) -> ExtractResult:
    """Cut every MoE feed-forward to ``keep`` (``fixed``: fixed-group sizes, [] = none), write
    ``cfg`` describing the cut model and the package to ``out``; fills ``result``."""
    from moe_asr.model import build_model
    from moe_asr.package import save_package

    model = pkg.model
    fixed = fixed or [0] * len(keep)
    counts = data.topk.sum(0)  # (L, E)
    mass = data.prob_sum.sum(0) / max(1, int(data.frames.sum()))  # (L, E) mean router prob
    result.params_before = sum(p.numel() for p in model.parameters())
    result.bytes_before = model_path.stat().st_size
    for (layer, half, ffn), kept, n, row, m in zip(ffns, keep, fixed, counts, mass, strict=True):
        total = int(row.sum())
        result.ffns.append(
            {
                "layer": layer,
                "half": half,
                "experts": ffn.num_experts,
                "kept": kept,
                "fixed_group": n,
                "coverage": float(row[kept].sum() / total) if total else 1.0,
                "kept_prob_mass": float(m[kept].sum()),
            }
        )
        ffn.keep_experts(kept, fixed_group=n, fixed_free=free if n else 0)
    moe = cfg.model.moe
    moe.ffn_experts = [len(k) for k in keep]
    moe.ffn_fixed_group = list(fixed) if any(fixed) else []
    moe.fixed_group_free = free if any(fixed) else 0
    if cfg.model.decoder.ffn != "moe":  # a decoder MoE is built with num_experts
        moe.num_experts = max(moe.ffn_experts)
    rebuilt = build_model(cfg.model, pkg.tokenizer.vocab_size, pkg.label_vocab)
    state = model.state_dict()
    want = rebuilt.state_dict().keys()
    dropped = set(state) - set(want)
    assert all(k.startswith("guidance.") for k in dropped), sorted(dropped)
    state = {k: state[k] for k in want}
    rebuilt.load_state_dict(state, strict=True)  # the config describes the cut model
    result.params_after = sum(p.numel() for p in rebuilt.parameters())
    meta = dict(pkg.meta)
    meta["extract"] = {
        "from": str(model_path),
        "data": str(data_dir),
        **extra,
        "utts": data.num_utts,
        "ffns": result.ffns,
        "params_before": result.params_before,
        "params_after": result.params_after,
        "notes": result.notes,
    }
    save_package(
        out,
        config=cfg,
        model_state=state,
        tokenizer_bytes=pkg.tokenizer.to_bytes(),
        label_vocab=pkg.label_vocab,
        meta=meta,
    )
    result.bytes_after = out.stat().st_size
    return result


def _moe_feedforwards(model) -> list[tuple[int, int, MoEFeedForward]]:
    """(layer, half, module) of every MoE feed-forward, in encoder order."""
    found = []
    for i, layer in enumerate(model.encoder.layers):
        for half, ffn in enumerate((layer.ff1, layer.ff2)):
            if isinstance(ffn, MoEFeedForward):
                found.append((i, half, ffn))
    return found
