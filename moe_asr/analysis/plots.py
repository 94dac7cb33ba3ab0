"""Report figures drawn with matplotlib's Agg canvas (no pyplot state, no display needed).

Each function takes the dicts of :mod:`moe_asr.analysis.metrics` and writes one PNG.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from moe_asr.files import atomic_open

__all__ = [
    "plot_group_heatmaps",
    "plot_lift_heatmaps",
    "plot_confusion",
    "plot_wer_routing",
    "plot_compare",
    "plot_nmi",
    "plot_load",
    "plot_entropy",
    "MAX_HEATMAP_ROWS",
]

MAX_HEATMAP_ROWS = 40  # groups with the most frames shown in a heatmap (speakers can be many)
MAX_ANNOTATED = 16  # label values in each cell when rows and columns are at most this many
_DPI = 90
_MAX_LOG2_LIFT = 4.0  # the lift colour scale ends at x16 and x1/16


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return math.ceil(n / cols), cols


def _layer_grid(
    n_layers: int, n_experts: int, n_rows_shown: int, extra_width: float
) -> tuple[Figure, np.ndarray, int]:
    """A figure with one (group x expert) panel per MoE layer: (fig, axes (R, C), C); panels
    beyond ``n_layers`` are switched off. ``extra_width`` (inches) leaves room for a colorbar."""
    n_rows, n_cols = _grid(n_layers)
    cell_w = max(2.6, 0.45 * n_experts + 1.2)
    cell_h = max(2.2, 0.28 * n_rows_shown + 1.2)
    fig = Figure(
        figsize=(cell_w * n_cols + extra_width, cell_h * n_rows + 0.6), layout="constrained"
    )
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.flat[n_layers:]:
        ax.set_axis_off()
    return fig, axes, n_cols


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=_DPI, format="png")
    return path


def _none_to_nan(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _shown_rows(stats: dict[str, Any]) -> np.ndarray:
    """Row indices of the ``MAX_HEATMAP_ROWS`` groups with the most frames, in label order."""
    rows = np.argsort(-np.asarray(stats["frames"]), kind="stable")[:MAX_HEATMAP_ROWS]
    return np.sort(rows)


def _lift_limit(stats_list: list[dict[str, Any]]) -> float:
    """Symmetric log2 limit of the lift colour scale: the largest |log2 lift|, 1 to 4."""
    top = 1.0
    for stats in stats_list:
        for entry in stats["per_layer"]:
            lift = _none_to_nan([v for row in entry["lift"] for v in row])
            with np.errstate(divide="ignore"):
                lg = np.abs(np.log2(lift[np.isfinite(lift) & (lift > 0)]))
            if lg.size:
                top = max(top, float(lg.max()))
    return min(math.ceil(top), _MAX_LOG2_LIFT)


def _lift_image(
    ax: Any,
    stats: dict[str, Any],
    layer_index: int,
    rows: np.ndarray,
    limit: float,
    served: set[tuple[str, int]],
    *,
    row_labels: bool = True,
) -> Any:
    """Draw one layer's lift (rows x experts) as log2 lift on a diverging scale centred at 1;
    an unused expert is grey, ``served`` (group, expert) cells are outlined."""
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    entry = stats["per_layer"][layer_index]
    lift = _none_to_nan([v for r in rows for v in entry["lift"][r]]).reshape(len(rows), -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.clip(np.log2(lift), -limit, limit)  # lift 0 -> -limit; nan stays nan
    cmap = _diverging_cmap()
    im = ax.imshow(lg, aspect="auto", cmap=cmap, norm=Normalize(-limit, limit))
    n_experts = lift.shape[1]
    if len(rows) <= MAX_ANNOTATED and n_experts <= MAX_ANNOTATED:
        for i in range(len(rows)):
            for e in range(n_experts):
                if np.isfinite(lift[i, e]):
                    dark = abs(lg[i, e]) > 0.6 * limit
                    ax.text(e, i, f"{lift[i, e]:.1f}", ha="center", va="center", fontsize=6,
                            color="white" if dark else "black")  # fmt: skip
    labels = stats["labels"]
    for i, r in enumerate(rows):
        for e in range(n_experts):
            if (labels[r], e) in served:
                ax.add_patch(Rectangle((e - 0.5, i - 0.5), 1, 1, fill=False, lw=1.6, ec="k"))
    ax.set_xticks(range(n_experts))
    ax.set_xlabel("expert", fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([labels[r] for r in rows] if row_labels else [], fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    return im


def _diverging_cmap() -> Any:
    from matplotlib import colormaps

    return colormaps["RdBu_r"].with_extremes(bad="#bbbbbb")


def _lift_colorbar(fig: Figure, im: Any, axes: Any, limit: float) -> None:
    ticks = np.arange(-limit, limit + 1)
    bar = fig.colorbar(im, ax=axes, shrink=0.8, ticks=ticks)
    bar.set_ticklabels([f"x{2.0**t:g}" for t in ticks])
    bar.set_label("lift P(group | expert) / P(group)", fontsize=8)


def plot_lift_heatmaps(
    stats: dict[str, Any],
    path: str | Path,
    *,
    group_name: str,
    served: dict[str, list[dict[str, Any]]] | None = None,
) -> Path:
    """Group x expert lift per MoE layer on a diverging colour scale centred at lift 1.

    Colour is log2 lift (x2 and x1/2 equally far from white), clipped at x16; the cells of
    ``served`` (layer name -> ``verdict["served"]`` entries) are outlined; grey: unused
    expert. Shows the ``MAX_HEATMAP_ROWS`` groups with the most frames.
    """
    rows = _shown_rows(stats)
    layers = stats["per_layer"]
    limit = _lift_limit([stats])
    fig, axes, n_cols = _layer_grid(len(layers), len(layers[0]["lift"][0]), len(rows), 1.4)
    im = None
    for i, (ax, entry) in enumerate(zip(axes.flat, layers)):
        cells = {
            (g["group"], ex["expert"])
            for ex in (served or {}).get(entry["layer"], [])
            for g in ex["groups"]
        }
        im = _lift_image(ax, stats, i, rows, limit, cells, row_labels=i % n_cols == 0)
        ax.set_title(f"layer {entry['layer']}  NMI {entry['nmi'] or 0:.3f}", fontsize=9)
    if im is not None:
        _lift_colorbar(fig, im, axes, limit)
    fig.suptitle(
        f"{group_name}: lift over the base rate (red: over-represented, blue: under; "
        "boxed: the expert serves it)",
        fontsize=10,
    )
    return _save(fig, path)


def plot_confusion(ident: dict[str, Any], path: str | Path, *, group_name: str) -> Path:
    """Confusion matrix of group identification from routing (rows: true label, row-normalised
    colour, counts in the cells); ``ident`` is a group's ``id`` entry with a confusion."""
    labels = list(ident["labels"])
    conf = np.asarray(ident["confusion"], dtype=np.float64)  # (G, G) true x predicted
    rate = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1.0)
    side = max(3.2, 0.35 * len(labels) + 2.0)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(rate, vmin=0.0, vmax=1.0, cmap="Blues")
    if len(labels) <= MAX_HEATMAP_ROWS // 2:
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, f"{int(conf[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if rate[i, j] > 0.6 else "black")  # fmt: skip
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel(f"{group_name} predicted from routing")
    ax.set_ylabel(f"true {group_name}")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true label's utterances")
    ax.set_title(
        f"{group_name} identification: accuracy {ident['accuracy']:.3f} "
        f"(chance {ident['chance']:.3f})",
        fontsize=9,
    )
    return _save(fig, path)


def plot_wer_routing(rows: list[dict[str, Any]], path: str | Path, *, group_name: str) -> Path:
    """Per-value WER (with its 95% CI) above per-value routing: identification recall and
    the share of the value's frames on the experts that serve it.

    ``rows``: the ``wer`` join's rows (``label``, ``wer``, ``ci_low``, ``ci_high``,
    ``id_recall``, ``served_coverage``); values without a WER are left out.
    """
    rows = [r for r in rows if r.get("wer") is not None][:MAX_HEATMAP_ROWS]
    x = np.arange(len(rows))
    fig = Figure(figsize=(max(4.5, 0.45 * len(rows) + 2.0), 5.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    wer = _none_to_nan([r["wer"] for r in rows])
    lo = _none_to_nan([r.get("ci_low") for r in rows])
    hi = _none_to_nan([r.get("ci_high") for r in rows])
    err = np.vstack([np.nan_to_num(wer - lo), np.nan_to_num(hi - wer)])
    top.bar(x, wer, color="C3", yerr=err, capsize=3)
    top.set_ylabel("WER %")
    top.grid(alpha=0.3, axis="y")
    top.set_title(f"{group_name}: WER (95% CI) and routing per value", fontsize=10)
    w = 0.38
    bottom.bar(x - w / 2, _none_to_nan([r.get("id_recall") for r in rows]), w, color="C0",
               label="identified from routing (recall)")  # fmt: skip
    bottom.bar(x + w / 2, _none_to_nan([r.get("served_coverage") for r in rows]), w, color="C2",
               label="frames on experts that serve it")  # fmt: skip
    bottom.set_ylim(0.0, 1.35)
    bottom.grid(alpha=0.3, axis="y")
    bottom.legend(fontsize=7, loc="upper right")
    bottom.set_xticks(x)
    bottom.set_xticklabels([r["label"] for r in rows], rotation=45, ha="right", fontsize=7)
    return _save(fig, path)


def plot_compare(
    group_name: str,
    sides: list[tuple[str, dict[str, Any], int]],
    path: str | Path,
) -> Path:
    """Two models side by side for one group: NMI per layer (shuffled baselines dashed), then
    each model's lift heatmap at the given layer on one shared diverging scale.

    ``sides``: (model name, the group's stats, layer index to show) per model.
    """
    fig = Figure(figsize=(5.0 + 3.4 * len(sides), 3.8), layout="constrained")
    axes = fig.subplots(1, 1 + len(sides), width_ratios=[1.5] + [1.0] * len(sides))
    ax = axes[0]
    for i, (name, stats, _) in enumerate(sides):
        names = [r["layer"] for r in stats["per_layer"]]
        x = np.arange(len(names))
        ax.plot(x, _none_to_nan([r["nmi"] for r in stats["per_layer"]]), "o-", color=f"C{i}",
                label=name)  # fmt: skip
        base = _none_to_nan([r.get("nmi_shuffled") for r in stats["per_layer"]])
        ax.plot(x, base, "--", color=f"C{i}", alpha=0.6, label=f"{name} (shuffled labels)")
    layer_names = [[r["layer"] for r in s["per_layer"]] for _, s, _ in sides]
    longest = max(layer_names, key=len)
    ax.set_xticks(range(len(longest)))
    ax.set_xticklabels(longest, fontsize=7)
    same = all(n == longest for n in layer_names)
    ax.set_xlabel("MoE layer" if same else "MoE feed-forward (position; the models' layers differ)")
    ax.set_ylabel(f"I({group_name}; expert) / H({group_name})")
    ax.set_ylim(bottom=0.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    limit = _lift_limit([s for _, s, _ in sides])
    im = None
    for ax, (name, stats, li) in zip(axes[1:], sides):
        served = stats.get("verdict", {}).get("served", {}).get(stats["per_layer"][li]["layer"], [])
        cells = {(g["group"], ex["expert"]) for ex in served for g in ex["groups"]}
        im = _lift_image(ax, stats, li, _shown_rows(stats), limit, cells)
        ax.set_title(f"{name}\nlayer {stats['per_layer'][li]['layer']}", fontsize=8)
    if im is not None:
        _lift_colorbar(fig, im, list(axes[1:]), limit)
    fig.suptitle(f"{group_name}: specialisation of the two models", fontsize=10)
    return _save(fig, path)


def plot_group_heatmaps(
    stats: dict[str, Any], path: str | Path, *, group_name: str, value: str = "top1_share"
) -> Path:
    """Group x expert heatmap per MoE layer (row-normalised ``value`` share).

    Args:
        stats: one group's entry of ``analyze(...)["groups"]`` (labels, frames, per_layer).
        value: ``top1_share``, ``topk_share`` or ``mean_prob``.
    Shows the ``MAX_HEATMAP_ROWS`` groups with the most frames.
    """
    labels = list(stats["labels"])
    rows = _shown_rows(stats)
    layers = stats["per_layer"]
    n_experts = len(layers[0][value][0])
    fig, axes, n_cols = _layer_grid(len(layers), n_experts, len(rows), 1.2)
    im = None
    for i, (ax, entry) in enumerate(zip(axes.flat, layers)):
        mat = _none_to_nan([v for r in rows for v in entry[value][r]]).reshape(len(rows), -1)
        im = ax.imshow(mat, aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(f"layer {entry['layer']}  NMI {entry['nmi'] or 0:.3f}", fontsize=9)
        ax.set_xticks(range(n_experts))
        ax.set_xlabel("expert", fontsize=8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([labels[r] for r in rows] if i % n_cols == 0 else [], fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label=value.replace("_", " "))
    fig.suptitle(f"{group_name}: share of frames per expert (rows sum to 1)", fontsize=10)
    return _save(fig, path)


def plot_nmi(groups: dict[str, dict[str, Any]], layers: list[str], path: str | Path) -> Path:
    """NMI(group; top-1 expert) per layer, one line per group, shuffled baseline dashed."""
    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(layers))
    for i, (name, stats) in enumerate(sorted(groups.items())):
        color = f"C{i % 10}"
        ax.plot(
            x, _none_to_nan([r["nmi"] for r in stats["per_layer"]]), "o-", color=color, label=name
        )
        base = [r["nmi_shuffled"] for r in stats["per_layer"]]
        if any(b is not None for b in base):
            ax.plot(
                x,
                _none_to_nan(base),
                "--",
                color=color,
                alpha=0.6,
                label=f"{name} (shuffled labels)",
            )
    ax.set_xticks(x)
    ax.set_xticklabels([str(layer) for layer in layers])
    ax.set_xlabel("encoder layer")
    ax.set_ylabel("I(group; expert) / H(group)")
    ax.set_ylim(bottom=0.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("normalised mutual information per layer", fontsize=10)
    return _save(fig, path)


def plot_load(load: list[dict[str, Any]], path: str | Path) -> Path:
    """Top-1 load share per expert, one bar chart per layer, uniform share dashed."""
    n_rows, n_cols = _grid(len(load))
    n_experts = len(load[0]["top1_share"])
    fig = Figure(
        figsize=(max(2.6, 0.35 * n_experts + 1.2) * n_cols, 2.4 * n_rows + 0.5),
        layout="constrained",
    )
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharey=True)
    top = max(max(v or 0.0 for v in entry["top1_share"]) for entry in load)
    for i, ax in enumerate(axes.flat):
        if i >= len(load):
            ax.set_axis_off()
            continue
        entry = load[i]
        ax.bar(range(n_experts), _none_to_nan(entry["top1_share"]), color="C0")
        ax.axhline(1.0 / n_experts, color="k", ls="--", lw=0.8)
        ax.set_ylim(0.0, max(top * 1.1, 1.5 / n_experts))
        ax.set_xticks(range(n_experts))
        ax.tick_params(labelsize=7)
        ax.set_title(f"layer {entry['layer']}  CV {entry['cv'] or 0:.2f}", fontsize=9)
        ax.set_xlabel("expert", fontsize=8)
    fig.suptitle("top-1 load share per expert (dashed: uniform)", fontsize=10)
    return _save(fig, path)


def plot_entropy(load: list[dict[str, Any]], path: str | Path) -> Path:
    """Mean per-frame routing entropy and entropy of the load, both / log E, per layer."""
    fig = Figure(figsize=(6.0, 3.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(load))
    ax.plot(
        x,
        _none_to_nan([r["entropy_normalized"] for r in load]),
        "o-",
        label="per-frame router entropy",
    )
    ax.plot(
        x,
        _none_to_nan([r["load_entropy_normalized"] for r in load]),
        "s--",
        label="entropy of top-1 load",
    )
    ax.set_xticks(x)
    ax.set_xticklabels([str(r["layer"]) for r in load])
    ax.set_xlabel("encoder layer")
    ax.set_ylabel("entropy / log E")
    ax.set_ylim(0.0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("routing entropy per layer", fontsize=10)
    return _save(fig, path)
