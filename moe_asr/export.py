"""Export the encoder + CTC head of a model package to ONNX or TorchScript.

The exported graph maps raw fbank ``feats (B, T, F)`` and ``feat_lens (B,)`` (int64)
to ``log_probs (B, T', V)`` and ``lens (B,)``, with CMVN inside and label-free routing;
batch and time are dynamic. A ``<out>.json`` sidecar holds what a runtime needs to
use it: tokens, blank id, feature settings, the encoder frame duration, and the tokenizer
and resolved config, so that ``moe-asr transcribe/decode model.onnx`` runs it
(``moe_asr.decode.onnx``).

The MoE layers are exported with a trace-friendly dispatch (``_export_moe_forward``, bound to a copy of the model): the
frames of each expert are found with ``nonzero`` inside the graph instead of a
Python-side split, so every expert still runs only on its own frames. It equals the
training dispatch when routing is dropless (``capacity_factor == 0``).

``int8`` applies dynamic quantization to the linear layers: onnxruntime's
``quantize_dynamic`` for ONNX, ``torch.ao.quantization.quantize_dynamic`` for TorchScript.
Every export is checked against PyTorch on two utterances of different lengths.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import types
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn

from moe_asr.config import config_to_dict
from moe_asr.errors import UserError
from moe_asr.files import atomic_path, atomic_write_text

__all__ = ["ExportError", "ExportResult", "export_model", "FORMATS"]

FORMATS = ("onnx", "torchscript")


class ExportError(UserError):
    """An export cannot be made (unknown format, output would overwrite, bad model)."""


@dataclass
class ExportResult:
    path: str
    format: str
    int8: bool
    max_abs_diff: float  # max |log-prob difference| to the PyTorch model on the check input
    argmax_agreement: float  # share of check frames whose best token is PyTorch's
    size_bytes: int


# an fp32 export computes what PyTorch does up to float rounding (tests: < 1e-3); more is a bug
_FP32_MAX_DIFF = 1e-2


def _export_moe_forward(moe: nn.Module, x: Tensor, mask: Tensor, routing=None, chunk: int = 0):
    """Trace-friendly ``MoEFeedForward.forward`` for inference, bound to a copy's instance.

    x: (B, T, D), mask: (B, T) -> (y (B, T, D), RouterStats over the real frames).
    """
    from moe_asr.nn.moe import RouterStats, block_mean

    b, t, d = x.shape
    flat = x.reshape(b * t, d)
    real = mask.reshape(-1).nonzero().squeeze(1)  # (N,)
    xr = flat.index_select(0, real)  # (N, D)
    router_in = xr
    if routing is not None and routing.cond is not None:
        router_in = xr + routing.cond.to(xr.dtype).index_select(0, real // t)
    if routing is not None and (routing.allowed is not None or routing.disabled):
        raise ExportError(
            "export supports label-free routing without expert groups only; a model with "
            "model.moe.guidance.group_router routes through label groups even label-free (cut "
            "it to one group with moe-asr extract --group-of, which exports)"
        )
    logits = moe.router(router_in).float()  # (N, E)
    if routing is not None and routing.router_delta is not None:  # value routers
        logits = logits + moe._delta_logits(x, routing, real, False)  # own method
    if moe.route_block > 0:  # block routing (full context: blocks of route_block frames)
        logits = block_mean(logits, real, b, t, chunk or moe.route_block)
    if moe.fixed_group:  # a group-routed layer cut to one group (extract --group-of)
        allowed = torch.arange(moe.num_experts, device=x.device) < moe.fixed_group  # (E,)
        probs, topw, topi = moe._group_plus_free(logits, allowed, moe.fixed_free)  # own method
    else:
        probs = logits.softmax(-1)
        topw, topi = probs.topk(moe.top_k, dim=-1)  # (N, k)
    if moe.top_k > 1:
        topw = topw / topw.sum(-1, keepdim=True).clamp_min(1e-9)
    y = torch.zeros_like(xr)
    for e, expert in enumerate(moe.experts):
        rows, slot = (topi == e).nonzero(as_tuple=True)  # frames routed to expert e
        out = expert(xr.index_select(0, rows)) * topw[rows, slot][:, None].to(xr.dtype)
        y = y.index_add(0, rows, out)
    for expert in moe.shared:
        y = y + expert(xr)
    full = flat.new_zeros(b * t, d).index_copy(0, real, y).view(b, t, d)
    stats = RouterStats(probs=probs, logits=logits, topk_idx=topi, topk_weight=topw, mask=mask)
    return full, stats


class _EncoderCtc(nn.Module):
    """feats (B, T, F), feat_lens (B,) -> log_probs (B, T', V), lens (B,)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        from moe_asr.model import RoutingOptions

        enc = self.model.encode(feats, feat_lens, RoutingOptions())
        return self.model.ctc_log_probs(enc), enc.lens


def _exportable(model: nn.Module) -> _EncoderCtc:
    from moe_asr.nn.moe import MoEFeedForward

    m = copy.deepcopy(model).eval()
    for name, module in m.named_modules():
        if isinstance(module, MoEFeedForward):
            if module.capacity_factor > 0:
                warnings.warn(
                    f"{name}: capacity_factor > 0 is exported as dropless routing; outputs "
                    "may differ where an expert overflowed",
                    stacklevel=2,
                )
            module.forward = types.MethodType(_export_moe_forward, module)
    return _EncoderCtc(m).eval()


def _check_input(num_mel_bins: int, min_frames: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    long = max(4 * min_frames, 150)
    feats = torch.randn(2, long, num_mel_bins, generator=g) * 2.0 + 8.0
    return feats, torch.tensor([long, long * 2 // 3], dtype=torch.long)


def _compare(a: Tensor, b: Tensor, lens: Tensor) -> tuple[float, float]:
    """(max |a - b|, share of frames with the same argmax) over the valid frames."""
    diff, same, total = 0.0, 0, 0
    for i, n in enumerate(lens.tolist()):
        diff = max(diff, float((a[i, :n] - b[i, :n]).abs().max()))
        same += int((a[i, :n].argmax(-1) == b[i, :n].argmax(-1)).sum())
        total += n
    return diff, same / max(total, 1)


def export_model(
    package,
    out: str | Path,
    *,
    format: str = "onnx",
    int8: bool = False,
    overwrite: bool = False,
) -> ExportResult:
    """Export ``package`` (a loaded ModelPackage) to ``out``; see the module docstring."""
    if format not in FORMATS:
        raise ExportError(
            f"export format {format!r} is unknown; choose one of {', '.join(FORMATS)}"
        )
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out}: exists; remove it or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = package.model.eval()
    wrapper = _exportable(model)
    fcfg = package.config.data.features
    feats, lens = _check_input(model.cfg.input_dim, int(model.encoder.frontend.min_input_frames))
    with torch.no_grad():
        ref, ref_lens = _EncoderCtc(model)(feats, lens)
    with atomic_path(out) as tmp:
        got = _export_to(wrapper, tmp, feats, lens, format=format, int8=int8)
        if not torch.equal(got[1].long(), ref_lens.long()):
            raise ExportError(f"exported model gives lengths {got[1].tolist()}, PyTorch {ref_lens}")
        diff, agree = _compare(got[0], ref, ref_lens)
        if not int8 and diff > _FP32_MAX_DIFF:  # atomic_path keeps nothing of a failed export
            raise ExportError(
                f"the exported fp32 model differs from PyTorch by {diff:.3g} in log-probability "
                f"(> {_FP32_MAX_DIFF}): a computation the export does not reproduce; nothing "
                "was written, please report it with the model's config"
            )
    meta = {
        "format": format,
        "int8": int8,
        "inputs": {"feats": "(B, T, F) raw Kaldi fbank", "feat_lens": "(B,) int64"},
        "outputs": {"log_probs": "(B, T', V) CTC log-probabilities", "lens": "(B,) int64"},
        "tokens": package.tokenizer.tokens,
        "blank": 0,
        "features": asdict(fcfg),
        "frame_seconds": model.cfg.subsampling * fcfg.frame_shift_ms / 1000.0,
        "subsampling": model.cfg.subsampling,
        "min_input_frames": int(model.encoder.frontend.min_input_frames),
        "max_abs_diff_vs_pytorch": diff,
        "argmax_agreement_vs_pytorch": agree,
        # what `moe-asr transcribe/decode model.onnx` needs besides the graph
        "tokenizer": base64.b64encode(package.tokenizer.to_bytes()).decode("ascii"),
        "config_yaml": yaml.safe_dump(config_to_dict(package.config), sort_keys=False),
    }
    atomic_write_text(
        out.with_name(out.name + ".json"), json.dumps(meta, indent=1, ensure_ascii=False)
    )
    return ExportResult(str(out), format, int8, diff, agree, out.stat().st_size)


def _export_to(
    wrapper: nn.Module, tmp: Path, feats: Tensor, lens: Tensor, *, format: str, int8: bool
) -> tuple[Tensor, Tensor]:
    """Write the export to ``tmp`` and run it on the check input: (log_probs, lens)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values in encode()
        if format == "onnx":
            fp32 = tmp if not int8 else tmp.with_name(tmp.name + ".fp32")
            torch.onnx.export(
                wrapper,
                (feats, lens),
                str(fp32),
                input_names=["feats", "feat_lens"],
                output_names=["log_probs", "lens"],
                dynamic_axes={
                    "feats": {0: "batch", 1: "time"},
                    "feat_lens": {0: "batch"},
                    "log_probs": {0: "batch", 1: "frames"},
                    "lens": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
            if int8:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                root = logging.getLogger()
                level = root.level
                root.setLevel(logging.ERROR)  # it warns for every non-float tensor it skips
                try:
                    quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
                finally:
                    root.setLevel(level)
                    fp32.unlink(missing_ok=True)
            return _run_onnx(tmp, feats, lens)
        module: nn.Module = wrapper
        if int8:
            from torch.ao.quantization import quantize_dynamic

            module = quantize_dynamic(wrapper, {nn.Linear}, dtype=torch.qint8)
        traced = torch.jit.trace(module, (feats, lens), check_trace=False)
        torch.jit.save(traced, str(tmp))
        return torch.jit.load(str(tmp))(feats, lens)


def _run_onnx(path: Path, feats: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    lp, ln = sess.run(None, {"feats": feats.numpy(), "feat_lens": lens.numpy()})
    return torch.from_numpy(lp), torch.from_numpy(ln)
