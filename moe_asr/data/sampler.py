"""Duration-bucketed dynamic batching with seeded per-epoch shuffling, rank sharding and resume.

Batch cost is the *padded* duration: ``max duration in the batch x batch size``, the
seconds of audio the padded feature tensor actually holds. No batch costs more than
``max_seconds``, with one exception: an utterance longer than ``max_seconds`` on its own
forms a batch of one (it is not skipped; a warning counts them once, when the sampler
is built). Filter such utterances earlier (``data.max_utt_seconds``) if that is unwanted.

Buckets: utterances are sorted by duration and split into ``num_buckets`` groups of
equal count. Each epoch (``shuffle=True``), every bucket is shuffled with a generator
seeded by (seed, epoch), packed greedily, and the list of all batches is shuffled
again. With ``shuffle=False`` batches follow ascending duration, the same every epoch.

Distributed ranks: every rank computes the same global batch list and rank ``r`` takes
batches ``r, r + W, r + 2W, ...``; the shards are disjoint and cover the epoch. DDP
needs equal counts per rank, so when the count is not a multiple of ``W``:
``drop_last=False`` (default) appends repeats of the first batches (a few utterances
are seen twice that epoch); ``drop_last=True`` drops the last ``count mod W`` batches
(a different set each shuffled epoch).

Resume: ``state_dict()`` stores the epoch and the number of batches this rank already
consumed; after ``load_state_dict`` the next iteration of that epoch starts at the
following batch (the batch list is recomputed identically from the seed).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from moe_asr.errors import UserError

__all__ = ["BatchingError", "BucketBatchSampler", "batch_cost"]

log = logging.getLogger(__name__)


class BatchingError(UserError):
    """Invalid batching settings or durations."""


def batch_cost(durations: Sequence[float]) -> float:
    """Padded seconds of a batch: longest duration x number of utterances."""
    return max(durations, default=0.0) * len(durations)


class BucketBatchSampler(Sampler[list]):
    """Yields lists of keys: utterance ids when ``durations`` is a dict, else int indices."""

    def __init__(
        self,
        durations: dict[str, float] | Sequence[float],
        max_seconds: float,
        num_buckets: int = 10,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ):
        if isinstance(durations, dict):
            self.keys: list[Any] = list(durations)
            values = [durations[k] for k in self.keys]
        else:
            values = list(durations)
            self.keys = list(range(len(values)))
        if not max_seconds > 0:
            raise BatchingError(f"data.max_batch_seconds must be > 0, got {max_seconds}")
        if num_buckets < 1:
            raise BatchingError(f"data.num_buckets must be >= 1, got {num_buckets}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise BatchingError(f"rank {rank} is not in 0..{world_size - 1}")
        for k, d in zip(self.keys, values):
            if not (math.isfinite(d) and d >= 0):
                raise BatchingError(f"utterance {k}: duration {d!r} is not a finite number >= 0")
        self.durations = np.asarray(values, dtype=np.float64)  # (N,)
        self.max_seconds = float(max_seconds)
        self.num_buckets = num_buckets
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.count_externally = False  # set by AsrDataLoader: it reports consumed batches
        self._done = 0  # batches of this epoch consumed by this rank
        self._resume: tuple[int, int] | None = None  # (epoch, batches done) from a checkpoint
        self._cache: tuple[int, list[list[int]]] | None = None
        too_long = np.flatnonzero(self.durations > self.max_seconds)
        self.too_long = [self.keys[i] for i in too_long]
        if len(too_long):
            worst = int(too_long[np.argmax(self.durations[too_long])])
            log.warning(
                "%d utterance(s) longer than max_seconds=%g each go in a batch of their own "
                "(longest: %s, %.1f s)",
                len(too_long),
                self.max_seconds,
                self.keys[worst],
                self.durations[worst],
            )
        order = np.argsort(self.durations, kind="stable")
        self._buckets = [b for b in np.array_split(order, num_buckets) if len(b)]

    # ------------------------------------------------------------------ batches

    def _pack(self, idx: np.ndarray) -> list[list[int]]:
        out: list[list[int]] = []
        cur: list[int] = []
        cur_max = 0.0
        for i in idx.tolist():
            d = self.durations[i]
            if d > self.max_seconds:
                out.append([i])
                continue
            if cur and max(cur_max, d) * (len(cur) + 1) > self.max_seconds:
                out.append(cur)
                cur, cur_max = [], 0.0
            cur.append(i)
            cur_max = max(cur_max, d)
        if cur:
            out.append(cur)
        return out

    def _global(self) -> list[list[int]]:
        """Unpadded global batch list (indices) of the current epoch, cached."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        batches: list[list[int]] = []
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            for bucket in self._buckets:
                batches.extend(self._pack(rng.permutation(bucket)))
            batches = [batches[i] for i in rng.permutation(len(batches))]
        else:
            for bucket in self._buckets:
                batches.extend(self._pack(bucket))
        self._cache = (self.epoch, batches)
        return batches

    def _rank_batches(self) -> list[list[int]]:
        batches = self._global()
        n, w = len(batches), self.world_size
        if w > 1 and n % w:
            if self.drop_last:
                batches = batches[: n - n % w]
            else:
                batches = batches + [batches[i % n] for i in range(w - n % w)]
        return batches[self.rank :: w]

    def global_batches(self) -> list[list[Any]]:
        """Every batch of the current epoch before sharding/padding, as key lists."""
        return [[self.keys[i] for i in b] for b in self._global()]

    # ------------------------------------------------------------------ sampler protocol

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (shuffle order); keeps a loaded resume point of that epoch."""
        self.epoch = epoch
        if self._resume is not None and self._resume[0] != epoch:
            self._resume = None
        self._done = self._resume[1] if self._resume is not None else 0

    def __len__(self) -> int:
        """Batches of this rank in the current epoch (the whole epoch, resumed or not)."""
        return len(self._rank_batches())

    def __iter__(self) -> Iterator[list[Any]]:
        batches = self._rank_batches()
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = min(self._resume[1], len(batches))
        self._resume = None
        self._done = start
        return self._generate(batches, start)

    def _generate(self, batches: list[list[int]], start: int) -> Iterator[list[Any]]:
        for b in batches[start:]:
            if not self.count_externally:
                self._done += 1
            yield [self.keys[i] for i in b]

    def mark_consumed(self) -> None:
        """One more batch was handed to the training loop (called by AsrDataLoader)."""
        self._done += 1

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "batches_done": self._done,
            "seed": self.seed,
            "world_size": self.world_size,
            "num_items": len(self.keys),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        same = (
            state.get("seed", self.seed) == self.seed
            and state.get("world_size", self.world_size) == self.world_size
            and state.get("num_items", len(self.keys)) == len(self.keys)
        )
        if not same and done:
            log.warning(
                "batch sampler state was saved with another seed, rank count or data size; "
                "epoch %d restarts from its first batch",
                epoch,
            )
            done = 0
        self.epoch = epoch
        self._resume = (epoch, done)
        self._done = done
