"""Kaldi-compatible log-mel filterbank features and global CMVN statistics.

Features are computed on the fly from the waveform, or once into a dump that training
reads instead (``moe_asr.data.precomputed``: ``feats.scp`` + shards). ``compute_fbank``
wraps ``torchaudio.compliance.kaldi.fbank`` with Kaldi's conventions: the waveform is
scaled to the int16 range, frames are 25 ms every 10 ms with ``snip_edges`` (so a
signal of ``N`` samples gives ``1 + (N - 400) // 160`` frames at 16 kHz).

Global CMVN is a per-dimension mean and standard deviation over every frame of a
data dir, accumulated in float64. The model applies it itself
(``AsrModel.set_cmvn(mean, std)``); the dataset yields raw fbank.

``StreamingFbank`` computes the same frames from a signal fed in pieces of any size:
each frame depends only on its own window of samples (per-frame DC removal and
pre-emphasis, no dither), so a frame is computed once its window is complete.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi
from torch import Tensor

from moe_asr.config import FeatureConfig
from moe_asr.errors import UserError
from moe_asr.files import atomic_write_text

__all__ = [
    "FeatureError",
    "CmvnError",
    "Cmvn",
    "compute_fbank",
    "num_frames",
    "compute_cmvn",
    "StreamingFbank",
]

log = logging.getLogger(__name__)

_INT16_SCALE = 32768.0
_VAR_FLOOR = 1e-10  # std >= 1e-5: a constant dimension does not divide by zero


class FeatureError(UserError):
    """Audio that cannot be turned into features (too short, wrong shape)."""


class CmvnError(UserError):
    """A CMVN file is missing or malformed, or no audio of a data dir could be read."""


def _window(cfg: FeatureConfig) -> tuple[int, int]:
    """(window, shift) in samples."""
    return (
        int(cfg.sample_rate * cfg.frame_length_ms / 1000.0),
        int(cfg.sample_rate * cfg.frame_shift_ms / 1000.0),
    )


def num_frames(num_samples: int, cfg: FeatureConfig) -> int:
    """Frames ``compute_fbank`` returns for ``num_samples`` samples (0 when shorter than a window)."""
    window, shift = _window(cfg)
    return 0 if num_samples < window else 1 + (num_samples - window) // shift


def compute_fbank(wav: np.ndarray | Tensor, cfg: FeatureConfig) -> Tensor:
    """Kaldi log-mel filterbank of a mono float signal in [-1, 1].

    Args:
        wav: (N,) or (1, N) float samples at ``cfg.sample_rate``.
        cfg: frame length/shift, mel bins, dither.
    Returns:
        (T, num_mel_bins) float32, ``T = num_frames(N, cfg)``.
    Raises:
        FeatureError: the signal is not mono or shorter than one frame.
    """
    x = torch.as_tensor(wav, dtype=torch.float32)
    if x.dim() == 2 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 1:
        raise FeatureError(f"expected a mono signal of shape (N,), got {tuple(x.shape)}")
    window, _ = _window(cfg)
    if x.numel() < window:
        raise FeatureError(
            f"audio of {x.numel()} samples is shorter than one {cfg.frame_length_ms:g} ms "
            f"frame ({window} samples at {cfg.sample_rate} Hz)"
        )
    feats = kaldi.fbank(
        (x * _INT16_SCALE).unsqueeze(0),  # (1, N), Kaldi expects int16-range samples
        num_mel_bins=cfg.num_mel_bins,
        frame_length=cfg.frame_length_ms,
        frame_shift=cfg.frame_shift_ms,
        dither=cfg.dither,
        energy_floor=0.0,
        sample_frequency=float(cfg.sample_rate),
    )
    return feats.to(torch.float32)  # (T, F)


class StreamingFbank:
    """Fbank of a signal fed in pieces: ``accept(samples) -> (t, F)`` new frames.

    The frames of all pieces together equal ``compute_fbank`` of the whole signal (the
    unconsumed tail of samples is kept between calls). Needs ``cfg.dither == 0``.
    """

    def __init__(self, cfg: FeatureConfig) -> None:
        if cfg.dither != 0:
            raise FeatureError("streaming features need data.features.dither=0 (no random dither)")
        self.cfg = cfg
        self._window, self._shift = _window(cfg)
        self._buf = np.zeros(0, dtype=np.float32)
        self.num_frames = 0  # frames returned so far

    def accept(self, samples: np.ndarray | Tensor) -> Tensor:
        """(N,) float samples in [-1, 1] -> (t, num_mel_bins) frames completed by them."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._buf = np.concatenate([self._buf, x]) if self._buf.size else x
        n = num_frames(len(self._buf), self.cfg)
        if n == 0:
            return torch.zeros(0, self.cfg.num_mel_bins)
        used = (n - 1) * self._shift + self._window
        feats = compute_fbank(self._buf[:used], self.cfg)
        self._buf = self._buf[n * self._shift :].copy()
        self.num_frames += n
        return feats


@dataclass
class Cmvn:
    """Global per-dimension statistics of raw fbank frames.

    ``mean`` and ``std`` are (F,) float32 tensors; ``count`` is the number of frames.
    """

    mean: Tensor
    std: Tensor
    count: int
    num_utts: int = 0
    skipped: list[str] = field(default_factory=list)  # utterances whose audio failed

    @property
    def var(self) -> Tensor:
        return self.std.double() ** 2

    @classmethod
    def from_sums(
        cls, total: np.ndarray, total_sq: np.ndarray, count: int, num_utts: int = 0
    ) -> Cmvn:
        """From float64 sums of x and x**2 over ``count`` frames."""
        if count <= 0:
            raise CmvnError("no frames to compute CMVN statistics from")
        mean = total / count
        var = np.maximum(total_sq / count - mean**2, _VAR_FLOOR)
        return cls(
            mean=torch.from_numpy(mean).float(),
            std=torch.from_numpy(np.sqrt(var)).float(),
            count=int(count),
            num_utts=num_utts,
        )

    def to_dict(self) -> dict:
        return {
            "count": self.count,
            "num_utts": self.num_utts,
            "dim": int(self.mean.numel()),
            "mean": [float(v) for v in self.mean.double()],
            "var": [float(v) for v in self.var],
            "std": [float(v) for v in self.std.double()],
            "skipped": list(self.skipped),
        }

    @classmethod
    def from_dict(cls, data: dict, where: str = "CMVN") -> Cmvn:
        try:
            mean = torch.tensor([float(v) for v in data["mean"]], dtype=torch.float32)
            if "std" in data:
                std = torch.tensor([float(v) for v in data["std"]], dtype=torch.float32)
            else:
                std = torch.tensor([math.sqrt(float(v)) for v in data["var"]], dtype=torch.float32)
            count = int(data["count"])
        except (KeyError, TypeError, ValueError) as e:
            raise CmvnError(
                f"{where}: not a CMVN file (needs count, mean and std or var): {e}"
            ) from e
        if mean.numel() == 0 or mean.shape != std.shape:
            raise CmvnError(
                f"{where}: mean ({mean.numel()}) and std ({std.numel()}) differ in size"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()) or (std <= 0).any():
            raise CmvnError(f"{where}: mean/std hold NaN, infinite or non-positive values")
        return cls(
            mean=mean,
            std=std,
            count=count,
            num_utts=int(data.get("num_utts", 0)),
            skipped=list(data.get("skipped", [])),
        )

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (``moe_asr.files``)."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Cmvn:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise CmvnError(f"{path}: cannot read CMVN file: {e.strerror}") from e
        except json.JSONDecodeError as e:
            raise CmvnError(f"{path}: not valid JSON (line {e.lineno}): {e.msg}") from e
        if not isinstance(data, dict):
            raise CmvnError(f"{path}: expected a JSON object with count, mean, std")
        return cls.from_dict(data, where=str(path))

    def apply(self, feats: Tensor) -> Tensor:
        """(..., F) -> (..., F) normalised features (for tools; the model does this itself)."""
        return (feats - self.mean.to(feats)) / self.std.to(feats)


def compute_cmvn(datadir, cfg: FeatureConfig, *, num_workers: int = 0) -> Cmvn:
    """Global CMVN over every frame of ``datadir`` (a path or a loaded DataDir).

    An utterance whose audio cannot be read is skipped with a warning naming it and its
    path, and listed in ``Cmvn.skipped``; the rest are still used. Raises CmvnError when
    no utterance could be read.
    """
    from torch.utils.data import DataLoader

    from moe_asr.config import DataConfig
    from moe_asr.data.dataset import AsrDataset, Example

    dataset = AsrDataset(
        datadir, tokenizer=None, label_vocab=None, data_cfg=DataConfig(features=cfg), train=False
    )
    skipped = [f"{s.utt_id}" for s in dataset.skipped]
    total = np.zeros(cfg.num_mel_bins, dtype=np.float64)
    total_sq = np.zeros(cfg.num_mel_bins, dtype=np.float64)
    count = 0
    utts = 0
    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_identity,
    )
    for item in loader:
        if not isinstance(item, Example):
            log.warning("CMVN: skipping %s", item)
            skipped.append(item.utt_id)
            continue
        x = item.feats.double().numpy()  # (T, F)
        total += x.sum(axis=0)
        total_sq += (x * x).sum(axis=0)
        count += x.shape[0]
        utts += 1
    if count == 0:
        where = dataset.path or "data dir"
        raise CmvnError(f"{where}: no utterance could be read; CMVN needs at least one")
    cmvn = Cmvn.from_sums(total, total_sq, count, num_utts=utts)
    cmvn.skipped = skipped
    return cmvn


def _identity(item):
    return item
