"""Precomputed fbank: a Kaldi-style feature dump, and the reader the dataset uses instead
of computing fbank from audio (``data.features.precomputed: true``).

On a GPU the fbank of every batch, computed on the fly by the loader's CPU workers, can
starve the accelerator; a dump pays for it once. ``dump_features`` computes the fbank of
every utterance exactly as the dataset does (``AsrDataset`` with augmentation off, i.e.
``moe_asr.data.features.compute_fbank`` of the loaded audio) and writes::

    DATA/feats.scp           utt-id <shard>:<first row>:<frames>   (sorted by id; a shard
                             inside DATA is named relative to DATA, else absolutely)
    DATA/feats.json          the feature settings it was made with, counts, the shards,
                             and each utterance left out (unreadable audio) with why
    DUMP/feats.<n>.npy       float32 (frames, num_mel_bins): the utterances of a shard,
                             one after another (DUMP defaults to DATA/dump)

``FeatureCache`` reads them back: every check that needs no feature data (settings equal to
the config's, every utterance present, shards whole and large enough) runs when it is
opened, and names the utterance or shard; a row range that turns out unreadable or
non-finite at load time raises ``CacheEntryError`` naming the utterance.

Waveform augmentation (speed perturbation, additive noise) needs the waveform, so it cannot
be combined with precomputed features (a config error); SpecAugment works on features
and still applies. With ``data.features.dither > 0`` a dump holds one dither draw per
utterance (on the fly, each epoch draws a new one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from moe_asr.config import FeatureConfig
from moe_asr.errors import UserError
from moe_asr.files import atomic_open, atomic_write_text

__all__ = [
    "FEATS_SCP",
    "FEATS_INFO",
    "FeatureCacheError",
    "CacheEntryError",
    "DumpReport",
    "dump_features",
    "FeatureCache",
]

log = logging.getLogger(__name__)

FEATS_SCP = "feats.scp"
FEATS_INFO = "feats.json"
_FORMAT = "moe_asr.feats/1"
_SETTINGS = ("sample_rate", "num_mel_bins", "frame_length_ms", "frame_shift_ms", "dither")


class FeatureCacheError(UserError):
    """Precomputed features are missing, stale (other settings, other utterances) or corrupt."""


class CacheEntryError(FeatureCacheError):
    """One utterance's cached features cannot be used; names the utterance and its shard."""

    def __init__(self, utt_id: str, path: str, cause: str):
        self.utt_id, self.path, self.cause = utt_id, path, cause
        super().__init__(f"utterance {utt_id} ({path}): {cause}")


def _redo(data_dir: Path) -> str:
    return f"run `moe-asr dump-feats {data_dir} --overwrite` (with the training config)"


def _settings(cfg: FeatureConfig) -> dict:
    return {k: getattr(cfg, k) for k in _SETTINGS}


# ----------------------------------------------------------------------------- writing


@dataclass
class DumpReport:
    scp: Path
    dump_dir: Path
    utts: int
    frames: int
    shards: int
    bytes: int
    seconds: float  # wall-clock time of the dump
    left_out: dict[str, str] = field(default_factory=dict)  # utterance -> why (unreadable audio)


def _shard_name(dump_dir: Path, data_dir: Path, k: int) -> str:
    path = dump_dir / f"feats.{k}.npy"
    try:
        return str(path.resolve().relative_to(data_dir.resolve()))
    except ValueError:
        return str(path.resolve())


def _resolve(data_dir: Path, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else data_dir / p


def _identity(item):
    return item


def dump_features(
    data_dir: str | Path,
    cfg: FeatureConfig,
    *,
    dump_dir: str | Path | None = None,
    num_workers: int = 0,
    shard_mb: float = 128.0,
    overwrite: bool = False,
    progress: bool = False,
) -> DumpReport:
    """Compute the fbank of every utterance of ``data_dir`` and write the dump (see above).

    Refuses (FeatureCacheError) when ``data_dir`` already has ``feats.scp``/``feats.json`` or
    ``dump_dir`` holds shards, unless ``overwrite``: then the old index is removed first (a
    dump killed half-way leaves no index pointing at half-written shards), and after the new
    one is written, the old dump's shards that were not rewritten are deleted. Unreadable
    audio is left out with a warning and listed in ``feats.json``.
    """
    from torch.utils.data import DataLoader

    from moe_asr.config import DataConfig
    from moe_asr.data.dataset import AsrDataset, Example
    from moe_asr.progress import progress_bar

    data_dir = Path(data_dir)
    dump_dir = Path(dump_dir) if dump_dir is not None else data_dir / "dump"
    if not shard_mb > 0:
        raise FeatureCacheError(f"--shard-mb must be > 0, got {shard_mb}")
    index = [data_dir / FEATS_SCP, data_dir / FEATS_INFO]
    old = [p for p in index if p.exists()]
    old += sorted(dump_dir.glob("feats.*.npy")) if dump_dir.is_dir() else []
    if old and not overwrite:
        shown = ", ".join(str(p) for p in old[:3]) + (" ..." if len(old) > 3 else "")
        raise FeatureCacheError(
            f"{data_dir}: holds precomputed features already ({shown}); pass --overwrite to "
            "replace them"
        )
    cfg = dataclasses.replace(cfg, precomputed=False)  # computed from the audio, here
    dataset = AsrDataset(data_dir, None, None, DataConfig(features=cfg), train=False)
    old_shards = _listed_shards(data_dir)
    for p in index:  # before any shard changes: no index may point into a half-written dump
        p.unlink(missing_ok=True)

    started = time.monotonic()
    left_out = {s.utt_id: s.cause for s in dataset.skipped}
    entries: dict[str, str] = {}
    shards: list[str] = []
    pending: list[tuple[str, np.ndarray]] = []
    pending_bytes = 0
    frames = total_bytes = 0
    limit = shard_mb * 2**20

    def flush() -> None:
        nonlocal pending, pending_bytes, total_bytes
        if not pending:
            return
        name = _shard_name(dump_dir, data_dir, len(shards) + 1)
        row = 0
        for utt, x in pending:
            entries[utt] = f"{name}:{row}:{x.shape[0]}"
            row += x.shape[0]
        with atomic_open(_resolve(data_dir, name), "wb") as f:
            np.save(f, np.concatenate([x for _, x in pending]), allow_pickle=False)
        shards.append(name)
        total_bytes += pending_bytes
        pending, pending_bytes = [], 0

    loader = DataLoader(
        dataset, batch_size=None, num_workers=num_workers, collate_fn=_identity, shuffle=False
    )
    bar = progress_bar(len(dataset), desc="dump-feats", unit="utt", disable=not progress)
    for item in loader:
        bar.update(1)
        if not isinstance(item, Example):
            log.warning("dump-feats: leaving out %s", item)
            left_out[item.utt_id] = item.cause
            continue
        x = item.feats.numpy().astype(np.float32, copy=False)  # (T, F)
        pending.append((item.utt_id, x))
        pending_bytes += x.nbytes
        frames += x.shape[0]
        if pending_bytes >= limit:
            flush()
    flush()
    bar.close()
    if not entries:
        raise FeatureCacheError(f"{data_dir}: no utterance could be read; nothing was dumped")

    from moe_asr.data.datadir import write_table

    write_table(data_dir / FEATS_SCP, entries)
    info = {
        "format": _FORMAT,
        "features": _settings(cfg),
        "num_utts": len(entries),
        "frames": frames,
        "shards": shards,
        "left_out": dict(sorted(left_out.items())),
    }
    atomic_write_text(data_dir / FEATS_INFO, json.dumps(info, indent=1) + "\n")
    for name in sorted(old_shards - set(shards)):  # the previous dump's, not rewritten
        with contextlib.suppress(OSError):
            _resolve(data_dir, name).unlink()
    return DumpReport(
        scp=data_dir / FEATS_SCP,
        dump_dir=dump_dir,
        utts=len(entries),
        frames=frames,
        shards=len(shards),
        bytes=total_bytes,
        seconds=time.monotonic() - started,
        left_out=left_out,
    )


def _listed_shards(data_dir: Path) -> set[str]:
    """Shard names an existing (readable) ``feats.json`` lists; empty otherwise."""
    try:
        info = json.loads((data_dir / FEATS_INFO).read_text(encoding="utf-8"))
        return {str(s) for s in info.get("shards", [])}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()


# ----------------------------------------------------------------------------- reading


def _npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from an .npy header and the file size; ValueError/OSError if unusable."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version} is not one np.save writes here")
        header_end = f.tell()
    if fortran:
        raise ValueError("stored in Fortran order")
    expected = header_end + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = os.path.getsize(path)
    if size != expected:
        raise ValueError(f"{size} bytes, its header promises {expected}")
    return tuple(shape), dtype


class FeatureCache:
    """The dump of one data dir: ``load(utt) -> (T, F) float32`` fbank.

    Opening checks everything but the feature values (see the module docstring) and raises
    FeatureCacheError naming the file, and the utterance where one is at fault. Shards are
    memory-mapped lazily, once per process (a pickled cache, e.g. in a loader worker,
    maps them again).
    """

    def __init__(self, data_dir: str | Path, cfg: FeatureConfig, utt_ids: list[str]):
        self.data_dir = Path(data_dir)
        self.cfg = cfg
        scp, info_path = self.data_dir / FEATS_SCP, self.data_dir / FEATS_INFO
        for p in (scp, info_path):
            if not p.is_file():
                raise FeatureCacheError(
                    f"{p}: missing; data.features.precomputed needs a dump: {_redo(self.data_dir)}"
                )
        info = self._read_info(info_path)
        made, want = info["features"], _settings(cfg)
        diff = [k for k in _SETTINGS if made.get(k) != want[k]]
        if diff:
            shown = ", ".join(f"{k}={made.get(k)} (config {want[k]})" for k in diff)
            raise FeatureCacheError(
                f"{info_path}: features were dumped with other settings: {shown}; "
                f"{_redo(self.data_dir)}"
            )
        self.left_out: dict[str, str] = {str(k): str(v) for k, v in info["left_out"].items()}
        from moe_asr.data.datadir import read_table

        self.entries: dict[str, tuple[Path, int, int]] = {}
        for utt, value in read_table(scp).items():
            try:
                name, row, n = value.rsplit(":", 2)
                self.entries[utt] = (_resolve(self.data_dir, name), int(row), int(n))
            except ValueError:
                raise FeatureCacheError(
                    f"{scp}: utterance {utt}: expected <shard>:<row>:<frames>, got {value!r}; "
                    f"{_redo(self.data_dir)}"
                ) from None
        missing = [u for u in utt_ids if u not in self.entries and u not in self.left_out]
        if missing:
            raise FeatureCacheError(
                f"{scp}: no features for utterance {missing[0]}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + f": the dump is older than the data dir; {_redo(self.data_dir)}"
            )
        self._check_shards({u: self.entries[u] for u in utt_ids if u in self.entries})
        self._maps: dict[Path, np.ndarray] = {}

    def _read_info(self, path: Path) -> dict:
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            ok = isinstance(info, dict) and info.get("format") == _FORMAT
            ok = ok and isinstance(info.get("features"), dict)
            ok = ok and isinstance(info.get("left_out"), dict)
        except (OSError, ValueError) as e:
            raise FeatureCacheError(f"{path}: unreadable ({e}); {_redo(self.data_dir)}") from None
        if not ok:
            raise FeatureCacheError(
                f"{path}: not a moe_asr feature dump index; {_redo(self.data_dir)}"
            )
        return info

    def _check_shards(self, used: dict[str, tuple[Path, int, int]]) -> None:
        by_shard: dict[Path, list[str]] = {}
        for utt, (path, _, _) in used.items():
            by_shard.setdefault(path, []).append(utt)
        dim = self.cfg.num_mel_bins
        for path, utts in by_shard.items():
            first = f"utterance {utts[0]}" + (f" and {len(utts) - 1} more" if len(utts) > 1 else "")
            try:
                shape, dtype = _npy_layout(path)
                if len(shape) != 2 or shape[1] != dim or dtype != np.float32:
                    raise ValueError(f"holds {dtype} {shape}, not float32 (frames, {dim})")
            except FileNotFoundError:
                raise FeatureCacheError(
                    f"{path}: missing shard ({first}); {_redo(self.data_dir)}"
                ) from None
            except (OSError, ValueError) as e:
                raise FeatureCacheError(
                    f"{path}: corrupt shard ({e}; {first}); {_redo(self.data_dir)}"
                ) from None
            for utt in utts:
                _, row, n = used[utt]
                if row < 0 or n < 1 or row + n > shape[0]:
                    raise FeatureCacheError(
                        f"{self.data_dir / FEATS_SCP}: utterance {utt}: rows {row}..{row + n} "
                        f"are not in {path} ({shape[0]} rows); {_redo(self.data_dir)}"
                    )

    def __contains__(self, utt: str) -> bool:
        return utt in self.entries

    def num_frames(self, utt: str) -> int:
        return self.entries[utt][2]

    def seconds(self, utt: str) -> float:
        """Audio seconds the frames span (at most one frame shift short of the audio)."""
        c = self.cfg
        n = self.entries[utt][2]
        return ((n - 1) * c.frame_shift_ms + c.frame_length_ms) / 1000.0

    def load(self, utt: str) -> Tensor:
        """(T, num_mel_bins) float32; CacheEntryError naming the utterance if unusable."""
        if utt not in self.entries:
            why = self.left_out.get(utt, "not in the dump")
            raise CacheEntryError(utt, str(self.data_dir / FEATS_SCP), f"no features: {why}")
        path, row, n = self.entries[utt]
        try:
            if path not in self._maps:
                self._maps[path] = np.load(path, mmap_mode="r", allow_pickle=False)
            x = np.array(self._maps[path][row : row + n], dtype=np.float32)
        except (OSError, ValueError) as e:
            raise CacheEntryError(utt, str(path), f"unreadable cached features ({e})") from None
        if x.shape != (n, self.cfg.num_mel_bins):
            raise CacheEntryError(utt, str(path), f"cached features of shape {x.shape}")
        if not np.isfinite(x).all():
            raise CacheEntryError(utt, str(path), "cached features hold NaN or inf values")
        return torch.from_numpy(x)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"] = {}  # a worker process maps the shards itself
        return state
