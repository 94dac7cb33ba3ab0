"""Expert-specialization analysis: routing records, metrics, plots and the report.

Typical use (what ``moe-asr report`` does: ``report_model`` runs all of it)::

    data = collect_routing(model, batches, max_utts=2000)
    write_report(data, {"accent": dd.groups["accent"]}, "exp/x/report_test",
                 speakers=dd.utt2spk, wer=load_wer("exp/x/decode_test/wer.json"))
"""

from moe_asr.analysis.compare import OtherRouting, load_report_dir
from moe_asr.analysis.metrics import analyze, group_id_accuracy, normalized_mutual_info
from moe_asr.analysis.pipeline import report_model, routing_of_package
from moe_asr.analysis.report import select_groups, write_report
from moe_asr.analysis.routing import NoMoELayersError, RoutingData, collect_routing
from moe_asr.analysis.verdict import group_verdict
from moe_asr.analysis.wer import load_wer

__all__ = [
    "RoutingData",
    "NoMoELayersError",
    "collect_routing",
    "analyze",
    "group_id_accuracy",
    "normalized_mutual_info",
    "select_groups",
    "write_report",
    "group_verdict",
    "load_wer",
    "OtherRouting",
    "load_report_dir",
    "report_model",
    "routing_of_package",
]
