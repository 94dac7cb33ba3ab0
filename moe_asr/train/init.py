"""Initialise a model from another one: load matching weights, upcycle dense FFNs to MoE.

``init_from(model, path, tokenizer=...)`` reads a model package (``EXP/model.pt``) or a
training checkpoint (``EXP/checkpoints/epoch-N.pt`` / ``last.pt``) and fills ``model``:

- a tensor with the same name and shape is **loaded** (this includes the CMVN buffers:
  the loaded weights were trained on the init model's feature normalisation, as in
  WeNet's and ESPnet's init from a checkpoint);
- every expert (and shared expert) of an MoE feed-forward whose init counterpart is a
  dense feed-forward gets a copy of it: **upcycled** (Komatsuzaki et al. 2022, sparse
  upcycling), optionally plus Gaussian noise of ``noise`` x the std of the copied tensor;
  the router has no counterpart and keeps its fresh initialisation (**new**);
- a name with another shape is **skipped** (both shapes reported), and so are the
  token-indexed layers (CTC head, decoder embedding and output) when the init model's
  tokenizer is not the run's, and label-indexed guidance tensors when a label's
  vocabulary differs: loading them would silently map ids to the wrong tokens/labels;
- the rest is **new** (as built); init tensors nothing took are **unused**.

Function at init: with ``noise=0``, dropless routing and top-k >= 2 (weights renormalised
to sum to 1) an upcycled MoE feed-forward equals the dense one, so the upcycled model
computes what the dense model did. With top-1 the weight is the router probability
(``moe.py``), so each frame's feed-forward output is the dense output times its top-1
probability (about 1/E with a fresh router): close, not equal. Shared experts add a
second copy of the dense output. MoE -> MoE loads experts and routers as they are.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from moe_asr.config import ConfigError, config_from_dict
from moe_asr.data.labels import LabelVocab
from moe_asr.data.tokenizer import Tokenizer
from moe_asr.errors import UserError
from moe_asr.files import atomic_write_text
from moe_asr.nn.conformer import ConvModule
from moe_asr.nn.moe import MoEFeedForward
from moe_asr.nn.streaming import conv_mode
from moe_asr.package import PACKAGE_FORMAT
from moe_asr.train.checkpoint import CheckpointError, load_checkpoint

__all__ = ["InitError", "SkippedTensor", "InitReport", "init_from"]

log = logging.getLogger("moe_asr.train")

# modules whose rows are token ids (AsrModel): loaded only when the tokenizers agree
_TOKEN_MODULES = ("ctc_head", "decoder.embed", "decoder.out")
_EXPERT_KEY = re.compile(r"^(?P<ffn>.+)\.(?:experts|shared)\.\d+\.(?P<rest>.+)$")


class InitError(UserError):
    """The init model cannot be read or is not a moe_asr package / training checkpoint."""


@dataclass
class SkippedTensor:
    name: str
    reason: str
    model_shape: list[int]
    init_shape: list[int] | None = None


@dataclass
class InitReport:
    """What ``init_from`` did with every tensor of the model (names as in ``state_dict``)."""

    source: str
    kind: str  # "package" | "checkpoint"
    noise: float
    loaded: list[str] = field(default_factory=list)
    upcycled: dict[str, str] = field(default_factory=dict)  # model tensor -> init tensor
    skipped: list[SkippedTensor] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # init tensors no model tensor took
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the training log."""
        text = (
            f"init from {self.kind} {self.source}: {len(self.loaded)} tensors loaded, "
            f"{len(self.upcycled)} upcycled from dense feed-forwards (noise {self.noise:g}), "
            f"{len(self.skipped)} skipped, {len(self.new)} new, {len(self.unused)} unused"
        )
        if self.skipped:
            s = self.skipped[0]
            text += f"; e.g. skipped {s.name}: {s.reason}"
        return text + "".join(f"; {n}" for n in self.notes)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path


@dataclass
class _Source:
    state: dict[str, torch.Tensor]
    kind: str
    tokens: list[str] | None  # None: the init model's tokenizer is unknown
    label_vocab: LabelVocab | None
    conv_mode: str | None = None  # the init model's depthwise convolution; None: unknown


def init_from(
    model: nn.Module,
    path: str | Path,
    *,
    tokenizer: Tokenizer | None,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> InitReport:
    """Fill ``model`` (an AsrModel, in place) from the package or checkpoint at ``path``.

    ``tokenizer``: the run's tokenizer; its token list must equal the init model's for the token-indexed layers to be loaded (None:
    they are never loaded). ``noise``: relative std of the noise added to upcycled copies
    (0 = exact copies); ``generator`` draws it (CPU; default: a fresh seed-0 generator,
    so every DDP rank draws the same). The model's label vocabulary (``model.label_vocab``)
    is compared per label with the init model's.
    """
    if noise < 0:
        raise InitError(f"init noise {noise} must be >= 0 (a relative std, e.g. 0.01)")
    path = Path(path)
    src = _read_source(path)
    generator = generator or torch.Generator().manual_seed(0)
    report = InitReport(source=str(path), kind=src.kind, noise=float(noise))
    run_tokens = list(tokenizer.tokens) if tokenizer is not None else None
    same_tokens = run_tokens is not None and run_tokens == src.tokens
    if not same_tokens:
        why = (
            "the init model's tokenizer is unknown"
            if src.tokens is None
            else "the run's tokenizer is unknown"
            if run_tokens is None
            else "the init model has another tokenizer"
        )
        report.notes.append(f"token layers ({', '.join(_TOKEN_MODULES)}) not loaded: {why}")
    other_labels = [
        n
        for n in _labels_that_differ(getattr(model, "label_vocab", None), src.label_vocab)
        if any(k.startswith("guidance.") and n in k.split(".") for k in src.state)
    ]
    if other_labels:
        report.notes.append(
            f"guidance tensors of label(s) {', '.join(other_labels)} not loaded: "
            "the init model has another vocabulary of their values"
        )
    causal = {m.causal for m in model.modules() if isinstance(m, ConvModule)}
    src_causal = None if src.conv_mode is None else src.conv_mode == "causal"
    if src_causal is not None and causal and causal != {src_causal}:
        kinds = ("centred", "causal") if not src_causal else ("causal", "centred")
        report.notes.append(
            f"depthwise convolutions: the init model's are {kinds[0]}, this model's "
            f"{kinds[1]}; their kernels load as they are, shifted by (kernel - 1) / 2 frames, so "
            "expect a high first loss (for a warm start from a non-streaming model use "
            "model.streaming.conv=chunk, whose kernels are centred)"
        )
    dense_ffns = {
        name
        for name, m in model.named_modules()
        if isinstance(m, MoEFeedForward)
        and f"{name}.router.weight" not in src.state
        and f"{name}.w1.weight" in src.state
    }
    used: set[str] = set()
    with torch.no_grad():
        for name, dst in model.state_dict().items():
            module = name.rsplit(".", 1)[0]
            if not same_tokens and module in _TOKEN_MODULES:
                reason = "token layer; tokenizers differ (or are unknown)"
                report.skipped.append(_skip(name, reason, dst, src.state.get(name)))
                used.add(name)
                continue
            if name.startswith("guidance.") and set(name.split(".")) & set(other_labels):
                reason = "label-indexed; label vocabularies differ"
                report.skipped.append(_skip(name, reason, dst, src.state.get(name)))
                used.add(name)
                continue
            origin, upcycle = name, False
            if name not in src.state:
                m = _EXPERT_KEY.match(name)
                if m is None or m["ffn"] not in dense_ffns:
                    report.new.append(name)
                    continue
                origin, upcycle = f"{m['ffn']}.{m['rest']}", True
            value = src.state[origin]
            used.add(origin)
            if tuple(value.shape) != tuple(dst.shape):
                report.skipped.append(_skip(name, "shape mismatch", dst, value))
                continue
            if upcycle and noise > 0 and value.is_floating_point() and value.numel() > 1:
                v = value.float().cpu()
                v = v + noise * v.std() * torch.randn(v.shape, generator=generator)
                value = v
            dst.copy_(value.to(dtype=dst.dtype, device=dst.device))
            if upcycle:
                report.upcycled[name] = origin
            else:
                report.loaded.append(name)
    report.unused = sorted(set(src.state) - used)
    return report


def _skip(name: str, reason: str, dst: torch.Tensor, value: torch.Tensor | None) -> SkippedTensor:
    return SkippedTensor(
        name=name,
        reason=reason,
        model_shape=list(dst.shape),
        init_shape=list(value.shape) if value is not None else None,
    )


def _labels_that_differ(run: LabelVocab | None, init: LabelVocab | None) -> list[str]:
    """Names of the run's guidance labels whose value list is not the init model's."""
    if run is None:
        return []
    have = init.values if init is not None else {}
    return [n for n, values in run.values.items() if have.get(n) != values]


def _read_source(path: Path) -> _Source:
    """The state dict, tokenizer tokens and label vocabulary of a package or checkpoint."""
    expected = "pass EXP/model.pt (`moe-asr average`) or EXP/checkpoints/last.pt or epoch-N.pt"
    if not path.is_file():
        raise InitError(f"{path}: init model does not exist; {expected}")
    try:
        obj = load_checkpoint(path)
    except CheckpointError as e:
        # torch's own message is long and multi-line; its type says enough
        why = type(e.__cause__ or e).__name__
        raise InitError(
            f"{path}: not a moe_asr model package or checkpoint (torch.load cannot read it: "
            f"{why}); {expected}"
        ) from e
    if obj.get("format") == PACKAGE_FORMAT and isinstance(obj.get("model_state"), dict):
        tokens = Tokenizer.from_bytes(obj["tokenizer"]).tokens
        vocab = LabelVocab.from_dict(obj["label_vocab"]) if obj.get("label_vocab") else None
        return _Source(dict(obj["model_state"]), "package", list(tokens), vocab, _conv_mode(obj))
    if isinstance(obj.get("model"), dict) and "config_yaml" in obj:
        # a trainer checkpoint: EXP/checkpoints/X.pt; the exp dir holds tokenizer and labels
        exp = path.resolve().parent.parent
        tokens = None
        if (exp / "tokenizer").is_dir():
            tokens = list(Tokenizer.load(exp / "tokenizer").tokens)
        vocab = None
        if (exp / "label_vocab.json").is_file():
            data = json.loads((exp / "label_vocab.json").read_text(encoding="utf-8"))
            vocab = LabelVocab.from_dict(data) if data else None
        return _Source(dict(obj["model"]), "checkpoint", tokens, vocab, _conv_mode(obj))
    raise InitError(
        f"{path}: not a moe_asr model package or training checkpoint "
        f"(format {obj.get('format')!r}, keys {', '.join(sorted(map(str, obj))[:5])}); {expected}"
    )


def _conv_mode(obj: dict) -> str | None:
    """The saved model's depthwise convolution mode; None if the config cannot be read."""
    try:
        return conv_mode(config_from_dict(yaml.safe_load(obj["config_yaml"])).model.streaming)
    except (KeyError, TypeError, AttributeError, yaml.YAMLError, ConfigError):
        return None
