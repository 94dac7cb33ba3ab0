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

__all__ = ["plot_group_heatmaps", "plot_nmi", "plot_load", "plot_entropy", "MAX_HEATMAP_ROWS"]

MAX_HEATMAP_ROWS = 40  # groups with the most frames shown in a heatmap (speakers can be many)
_DPI = 90


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return math.ceil(n / cols), cols


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=_DPI, format="png")
    return path


def _none_to_nan(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


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
    rows = np.argsort(-np.asarray(stats["frames"]), kind="stable")[:MAX_HEATMAP_ROWS]
    rows = np.sort(rows)
    layers = stats["per_layer"]
    n_rows, n_cols = _grid(len(layers))
    n_experts = len(layers[0][value][0])
    cell_w = max(2.6, 0.45 * n_experts + 1.2)
    cell_h = max(2.2, 0.28 * len(rows) + 1.2)
    fig = Figure(figsize=(cell_w * n_cols + 1.2, cell_h * n_rows + 0.6), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    im = None
    for i, ax in enumerate(axes.flat):
        if i >= len(layers):
            ax.set_axis_off()
            continue
        entry = layers[i]
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
