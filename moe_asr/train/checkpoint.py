"""Checkpoints: atomic writes, safe loading, RNG state capture, averaging.

A checkpoint is a dict of tensors and plain Python values only, so it loads with
``torch.load(weights_only=True)``: nothing in it executes code on load.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from moe_asr.errors import UserError

__all__ = [
    "CheckpointError",
    "atomic_save",
    "atomic_write_text",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "average_state_dicts",
    "list_epoch_checkpoints",
]


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable or not one of ours."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same dir, fsync, then rename over ``path``.

    A crash at any point leaves either the old file or the new one, never a partial file.
    """
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, like ``atomic_save``."""
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot load checkpoint ({e})") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a moe_asr checkpoint")
    return obj


def rng_state() -> dict:
    """Python, numpy and torch RNG states as plain values/tensors (weights_only-loadable)."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": _tuples_to_lists(random.getstate()),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"]).astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_lists_to_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples_to_lists(x: Any) -> Any:
    return [_tuples_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _lists_to_tuples(x: Any) -> Any:
    return tuple(_lists_to_tuples(v) for v in x) if isinstance(x, list) else x


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors; integer buffers are taken from the last."""
    if not states:
        raise CheckpointError("no checkpoints to average")
    keys = list(states[-1])
    for i, s in enumerate(states):
        if list(s) != keys:
            raise CheckpointError(f"checkpoint {i} has different parameters; cannot average")
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        if states[-1][k].is_floating_point():
            acc = torch.zeros_like(states[-1][k], dtype=torch.float64)
            for s in states:
                acc += s[k].to(torch.float64)
            out[k] = (acc / len(states)).to(states[-1][k].dtype)
        else:
            out[k] = states[-1][k].clone()
    return out


_EPOCH_RE = re.compile(r"^epoch-(\d+)\.pt$")


def list_epoch_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) for every ``epoch-N.pt`` in ``ckpt_dir``, sorted by epoch."""
    ckpt_dir = Path(ckpt_dir)
    found = []
    for p in ckpt_dir.glob("epoch-*.pt"):
        m = _EPOCH_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)
