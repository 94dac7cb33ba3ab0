"""``moe-asr report`` as library steps: a model package on a data dir -> routing -> report.

Bad input is refused before the encoder runs, each with a one-line UserError that says
what to pass instead: an earlier report in the output dir (without ``overwrite``), a
group without its ``utt2<group>`` file, a ``wer.json`` that is not one or scores none of
the groups, a ``--compare`` path that is neither a model package nor a report dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moe_asr.analysis.compare import OtherRouting, load_report_dir
from moe_asr.analysis.report import REPORT_FILES, report_files, select_groups, write_report
from moe_asr.analysis.routing import NoMoELayersError, RoutingData, collect_routing
from moe_asr.analysis.verdict import MIN_LIFT
from moe_asr.analysis.wer import load_wer
from moe_asr.errors import UserError
from moe_asr.files import check_outputs

__all__ = ["routing_of_package", "open_comparison", "report_model"]


def routing_of_package(
    pkg: Any, datadir: Any, *, max_utts: int | None = None, progress: bool = True
) -> RoutingData:
    """Label-free routing of a loaded package's model over a data dir (features as the
    package's data config says), in data-dir order: the same utterances for any model."""
    from moe_asr.data.dataset import AsrDataset, make_loader, make_sampler

    ds = AsrDataset(datadir, None, None, pkg.config.data, train=False)
    loader = make_loader(ds, make_sampler(ds, shuffle=False), 0)
    return collect_routing(pkg.model, loader, max_utts=max_utts, progress=progress)


def open_comparison(source: str | Path) -> OtherRouting | Any:
    """What ``--compare`` names: a report dir (its routing, read now) or a model package
    (loaded now, run later by :func:`routing_of_package`)."""
    from moe_asr.package import load_package

    path = Path(source)
    if not path.exists():
        raise UserError(
            f"--compare {path}: no such file or directory; pass the other model's model.pt "
            "or a report dir written by `moe-asr report`"
        )
    if path.is_dir():
        return load_report_dir(path)
    pkg = load_package(path)
    if not pkg.model.is_moe:
        raise UserError(
            f"--compare {path}: a dense model (no MoE layers) has no routing to compare; "
            "pass an MoE model.pt or a report dir"
        )
    return pkg


def report_model(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    groups: list[str] | None = None,
    max_utts: int | None = None,
    wer: str | Path | None = None,
    compare: str | Path | None = None,
    min_lift: float = MIN_LIFT,
    dense_ok: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Write the report of ``model`` (a package) on ``data`` (a data dir) into ``out``.

    Args:
        groups: group names (``utt2<name>`` files; ``spk`` = utt2spk); ``None``: all.
        wer: a ``wer.json`` of ``moe-asr score`` on the same data: per-value WER beside routing.
        compare: another model package (run on the same utterances) or report dir.
        dense_ok: a dense model returns ``None`` (nothing written) instead of failing.
    Returns the report dict (report.json), or ``None`` for a dense model with ``dense_ok``.
    """
    import torch

    from moe_asr.data.datadir import load_datadir
    from moe_asr.package import load_package

    check_outputs(out, REPORT_FILES, overwrite)  # before any work
    if not min_lift > 1.0:
        raise UserError(f"--min-lift {min_lift}: must be above 1 (1 = no preference); e.g. 1.5")
    torch.set_flush_denormal(True)
    pkg = load_package(model)
    if not pkg.model.is_moe:
        if dense_ok:
            return None
        raise NoMoELayersError(
            f"{model}: the model has no MoE layers; the report needs a model with ffn: moe"
        )
    dd = load_datadir(data)
    tables = select_groups(dd, groups)
    names = report_files(list(tables), wer=wer is not None, compare=compare is not None)
    check_outputs(out, names, overwrite)
    wer_file = load_wer(wer, list(tables)) if wer is not None else None
    other = open_comparison(compare) if compare is not None else None
    routing = routing_of_package(pkg, dd, max_utts=max_utts, progress=progress)
    if other is not None and not isinstance(other, OtherRouting):
        other = OtherRouting(
            name=str(compare),
            source=str(compare),
            kind="model",
            data=routing_of_package(other, dd, max_utts=max_utts, progress=progress),
        )
    return write_report(
        routing,
        tables,
        out,
        speakers=dd.utt2spk,
        title=f"{model} on {data}",
        name=str(model),
        wer=wer_file,
        other=other,
        min_lift=min_lift,
        overwrite=overwrite,
    )
