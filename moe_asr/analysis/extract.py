"""Extract a smaller model for one label group (an accent, or several): keep the experts
that group's utterances use, drop the rest.

``extract_model`` runs the package's encoder label-free over the group's utterances of a
data dir (``collect_routing``, the same capture as the report), and per MoE feed-forward
keeps the fewest experts that receive at least ``coverage`` of the group's top-k
assignments (never fewer than top_k; ties go to the lower expert id). The dropped experts
and their router rows are removed (``MoEFeedForward.keep_experts``) and a normal package
is written: its config holds the per-feed-forward counts (``model.moe.ffn_experts``) and
its meta what was kept (``meta["extract"]``, original expert ids per feed-forward).

What stays equal: on a frame whose top-k experts are all kept, top-k >= 2 routing
(renormalised) with dropless dispatch gives the full model's output exactly. With top-1
the weight is the router probability, now a softmax over fewer experts, so a frame's
expert output grows by 1 / (probability mass of the kept experts): ``kept_prob_mass``
in the meta says how close to 1 that is. A capacity factor > 0 gives each remaining
expert a larger capacity. Models with expert groups per label value (hard groups) are
refused: the groups are defined over all experts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moe_asr.analysis.routing import collect_routing
from moe_asr.errors import UserError
from moe_asr.nn.moe import MoEFeedForward

__all__ = ["ExtractError", "ExtractResult", "select_experts", "extract_model"]


class ExtractError(UserError):
    """An extraction cannot be made (bad coverage, dense model, label absent, output exists)."""


@dataclass
class ExtractResult:
    """What ``extract_model`` wrote. ``ffns``: one dict per MoE feed-forward in encoder order
    (layer, half, experts, kept (original ids), coverage of top-k assignments, kept_prob_mass)."""

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


def select_experts(
    counts: np.ndarray, coverage: float, top_k: int, sizes: list[int]
) -> list[list[int]]:
    """Per feed-forward, the fewest experts holding >= ``coverage`` of its assignments.

    counts: (L, E) top-k assignments per feed-forward and expert (E >= every size);
    sizes: the L feed-forwards' expert counts. Returns L sorted lists of expert ids, each
    of at least ``top_k`` (and at most sizes[l]) experts; ties go to the lower id.
    """
    if not 0 < coverage <= 1:
        raise ExtractError(f"coverage {coverage} must be in (0, 1], e.g. 0.95")
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
    from moe_asr.data.datadir import load_datadir, subset_datadir
    from moe_asr.data.dataset import AsrDataset, make_loader, make_sampler
    from moe_asr.model import build_model
    from moe_asr.package import load_package, save_package

    model_path, out = Path(model_path), Path(out)
    if not 0 < coverage <= 1:
        raise ExtractError(f"--coverage {coverage} must be in (0, 1], e.g. 0.95")
    if out.exists() and not overwrite:
        raise ExtractError(f"{out}: exists; pass --overwrite to replace it, or another --out")
    if not values:
        raise ExtractError(f"no {label} values given; pass e.g. --label {label}=V1,V2")
    pkg = load_package(model_path)
    model = pkg.model
    if not model.moe_layers:
        raise ExtractError(
            f"{model_path}: a dense model (model.ffn: {pkg.config.model.ffn}) has no experts "
            "to extract; pass a package trained with model.ffn: moe"
        )
    if pkg.config.model.moe.guidance.hard_groups:
        raise ExtractError(
            f"{model_path}: uses hard expert groups per label value "
            "(model.moe.guidance.hard_groups), which need all experts; extract supports models "
            "without them"
        )
    dd = load_datadir(data_dir)
    table = dd.groups.get(label)
    if table is None:
        have = ", ".join(f"utt2{g}" for g in sorted(dd.groups)) or "none"
        raise ExtractError(
            f"{data_dir}: no utt2{label} file (label files there: {have}); pass --label NAME=V "
            "with one of them"
        )
    present = sorted(set(table.values()))
    absent = [v for v in values if v not in present]
    if absent:
        raise ExtractError(
            f"{label} {', '.join(absent)}: no utterance in {data_dir}/utt2{label} has it; "
            f"values there: {', '.join(present)}"
        )
    utts = sorted(u for u, v in table.items() if v in values)
    ds = AsrDataset(subset_datadir(dd, utts), None, None, pkg.config.data, train=False)
    loader = make_loader(ds, make_sampler(ds, shuffle=False), 0)
    data = collect_routing(model, loader, max_utts=max_utts, progress=progress)

    ffns = _moe_feedforwards(model)
    keys = [(layer, half) for layer, half, _ in ffns]
    assert keys == list(zip(data.layers, data.halves)), (keys, data.layers, data.halves)
    sizes = [m.num_experts for _, _, m in ffns]
    counts = data.topk.sum(0)  # (L, E)
    mass = data.prob_sum.sum(0) / max(1, int(data.frames.sum()))  # (L, E) mean router prob
    keep = select_experts(counts, coverage, model.cfg.moe.top_k, sizes)

    result = ExtractResult(path=out, label=label, values=list(values), utts=data.num_utts)
    result.params_before = sum(p.numel() for p in model.parameters())
    result.bytes_before = model_path.stat().st_size
    for (layer, half, ffn), kept, row, m in zip(ffns, keep, counts, mass):
        total = int(row.sum())
        result.ffns.append(
            {
                "layer": layer,
                "half": half,
                "experts": ffn.num_experts,
                "kept": kept,
                "coverage": float(row[kept].sum() / total) if total else 1.0,
                "kept_prob_mass": float(m[kept].sum()),
            }
        )
        ffn.keep_experts(kept)
    result.params_after = sum(p.numel() for p in model.parameters())

    cfg = copy.deepcopy(pkg.config)
    moe = cfg.model.moe
    moe.ffn_experts = [len(k) for k in keep]
    moe.num_experts = max(moe.ffn_experts)
    if moe.guidance.router_loss_weight > 0:
        # a training-only loss over expert groups; the groups needed every expert
        moe.guidance.router_loss_weight = 0.0
        result.notes.append("router label loss (training only) switched off")
    state = model.state_dict()
    rebuilt = build_model(cfg.model, pkg.tokenizer.vocab_size, pkg.label_vocab)
    rebuilt.load_state_dict(state, strict=True)  # the config describes the cut model
    meta = dict(pkg.meta)
    meta["extract"] = {
        "from": str(model_path),
        "data": str(data_dir),
        "label": label,
        "values": list(values),
        "coverage": coverage,
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
