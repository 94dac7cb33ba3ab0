"""Expert-specialization analysis: routing records, metrics, plots and the report.

Typical use (what ``moe-asr report`` does)::

    data = collect_routing(model, batches, max_utts=2000)
    write_report(data, {"accent": dd.groups["accent"]}, "exp/x/report_test",
                 speakers=dd.utt2spk)
"""

from moe_asr.analysis.metrics import analyze, group_id_accuracy, normalized_mutual_info
from moe_asr.analysis.report import select_groups, write_report
from moe_asr.analysis.routing import NoMoELayersError, RoutingData, collect_routing

__all__ = [
    "RoutingData",
    "NoMoELayersError",
    "collect_routing",
    "analyze",
    "group_id_accuracy",
    "normalized_mutual_info",
    "select_groups",
    "write_report",
]
