"""Decode with an exported model: ``moe-asr export --format onnx`` output run by onnxruntime.

The export holds the encoder + CTC head (``moe_asr.export``); its ``<model>.onnx.json``
sidecar carries the tokenizer, the resolved config and the encoder's frame geometry, so the
``.onnx`` + ``.json`` pair decodes without the PyTorch package. ``load_model`` returns a
``ModelPackage`` whose ``model`` is an ``OnnxAcousticModel``: it offers the part of the
``AsrModel`` interface that CTC decoding uses (``encode``, ``ctc_log_probs``, frame
geometry), so ``Recognizer``, ``decode_datadir`` and ``Transcriber`` run it unchanged in the
CTC modes (``ctc_greedy``, ``ctc_prefix_beam`` with or without an LM). The attention modes
need the decoder, which is not exported; routing is label-free (no ``--accent``).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor

from moe_asr.config import DecodeConfig
from moe_asr.errors import UserError

__all__ = [
    "CTC_MODES",
    "OnnxAcousticModel",
    "OnnxEncoderOutput",
    "load_model",
    "load_onnx_package",
    "decode_config_for",
    "is_onnx",
]

CTC_MODES = ("ctc_greedy", "ctc_prefix_beam")


@dataclass
class OnnxEncoderOutput:
    """What ``OnnxAcousticModel.encode`` gives: log_probs (B, T', V), lens (B,); no encoder
    states, router statistics or label logits (they are not outputs of the export)."""

    log_probs: Tensor
    lens: Tensor
    out: Tensor | None = None
    router_stats: list = field(default_factory=list)
    label_logits: dict[str, Tensor] = field(default_factory=dict)


class OnnxAcousticModel:
    """An exported encoder + CTC head behind the ``AsrModel`` calls CTC decoding makes."""

    def __init__(self, path: str | Path, meta: dict, device: str = "cpu") -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        opts.log_severity_level = 3  # no per-session warnings on stderr
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UserError(
                    f"{path}: --device {device}: this onnxruntime has no CUDA provider "
                    "(install onnxruntime-gpu, or decode the model.pt on CUDA)"
                )
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.cfg = SimpleNamespace(subsampling=int(meta["subsampling"]))
        self.encoder = SimpleNamespace(
            frontend=SimpleNamespace(min_input_frames=int(meta["min_input_frames"]))
        )
        # Recognizer moves its inputs to the device of ``cmvn_mean``; CMVN itself is in the
        # graph, which takes CPU numpy arrays
        self.cmvn_mean = torch.zeros(1)

    def encode(
        self,
        feats: Tensor,
        feat_lens: Tensor,
        routing=None,
        *,
        chunk_frames: int = 0,
        left_chunks: int = -1,
    ) -> OnnxEncoderOutput:
        """feats (B, T, F) raw fbank, feat_lens (B,) -> CTC log-probs (B, T', V), lens (B,)."""
        if routing is not None:
            raise UserError("an ONNX export routes label-free only (no --accent/--force)")
        if chunk_frames:
            raise UserError("an ONNX export decodes full context only (no --chunk-frames)")
        lp, lens = self.session.run(
            None,
            {"feats": feats.float().cpu().numpy(), "feat_lens": feat_lens.long().cpu().numpy()},
        )
        return OnnxEncoderOutput(torch.from_numpy(lp), torch.from_numpy(lens).long())

    def ctc_log_probs(self, enc: OnnxEncoderOutput) -> Tensor:
        return enc.log_probs

    def label_probs(self, enc: OnnxEncoderOutput) -> dict:
        """The export holds encoder + CTC only: no label head, no routers to read."""
        return {}

    def forced_routing(self, forced=None, expert_mask=None):
        raise UserError(
            "an ONNX export routes label-free only: --accent/--force/--mask-experts need the "
            "model.pt package"
        )


def is_onnx(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def load_onnx_package(path: str | Path, device: str = "cpu"):
    """A ``ModelPackage`` around an exported ``.onnx`` and its ``.onnx.json`` sidecar."""
    import yaml

    from moe_asr.config import config_from_dict
    from moe_asr.data.tokenizer import Tokenizer
    from moe_asr.package import ModelPackage, PackageError

    path = Path(path)
    sidecar = path.with_name(path.name + ".json")
    if not path.is_file():
        raise PackageError(f"{path}: exported model does not exist")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PackageError(
            f"{sidecar}: cannot read the export's metadata ({e}); it is written next to the "
            "model by `moe-asr export`"
        ) from e
    if "tokenizer" not in meta or "config_yaml" not in meta:
        raise PackageError(
            f"{sidecar}: made by an older `moe-asr export` without the tokenizer and config; "
            "export the model again"
        )
    if meta.get("format") != "onnx":
        raise PackageError(f"{path}: not an ONNX export ({meta.get('format')})")
    config = config_from_dict(yaml.safe_load(meta["config_yaml"]))
    tokenizer = Tokenizer.from_bytes(base64.b64decode(meta["tokenizer"]))
    model = OnnxAcousticModel(path, meta, device)
    info = {k: v for k, v in meta.items() if k not in ("tokenizer", "config_yaml", "tokens")}
    return ModelPackage(model, config, tokenizer, None, {**info, "format": "onnx"})


def load_model(path: str | Path, device: str = "cpu"):
    """What decode and transcribe load: an ONNX export (``.onnx``) or a ``model.pt`` package."""
    if is_onnx(path):
        return load_onnx_package(path, device)
    from moe_asr.package import load_package

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here (torch sees no GPU)")
    return load_package(path, device)


def decode_config_for(package, cfg: DecodeConfig, *, mode_given: bool) -> DecodeConfig:
    """``cfg`` checked against what ``package`` can run: an ONNX export decodes in the CTC
    modes only; when the mode came from the package's config (not the user), an attention
    mode falls back to ``ctc_prefix_beam``."""
    if not isinstance(package.model, OnnxAcousticModel) or cfg.mode in CTC_MODES:
        return cfg
    if mode_given:
        raise UserError(
            f"--mode {cfg.mode}: an ONNX export holds the encoder + CTC head only (no attention "
            f"decoder); use --mode {' or '.join(CTC_MODES)}, or the model.pt"
        )
    return dataclasses.replace(cfg, mode="ctc_prefix_beam")
