"""Dataset of a Kaldi data dir, duration-bucketed dynamic batching, collate, loader.

``AsrDataset`` reads audio on the fly (``moe_asr.audio.load_audio``, with segments),
augments it in training, and yields raw fbank (the model applies CMVN). Items are
addressed by index or by utterance id. An utterance whose audio fails is not an
exception: it becomes a ``Skipped`` record that the collate drops from its batch and
lists in ``Batch.skipped``; the loader logs a warning naming the utterance and path,
keeps a per-epoch list (``loader.skipped``) and hands the ids to the dataset, whose
``pop_skipped()`` gives the trainer its end-of-epoch count (whatever ``num_workers``).
Audio whose header is already unreadable when the dataset is built (no ``utt2dur``) is
left out then, with a warning, and listed in ``dataset.skipped``.

Precomputed features (``data.features.precomputed: true``): fbank comes from the data dir's
dump (``moe_asr.data.precomputed``, written by ``moe-asr dump-feats``) instead of the
audio, equal to what is computed on the fly; SpecAugment still applies, waveform
augmentation is refused (DatasetError). A stale or incomplete dump is an error when the
dataset is built; an entry found unusable when loaded is skipped like unreadable audio,
named. Durations come from ``utt2dur``, else from the frames.

Durations: ``dataset.durations`` are the seconds to *batch by*: in training with speed
perturbation, each audio duration times ``1 / min(speed factor)``, the longest the item
can become; so a sampler built from them never exceeds its limit after perturbation.
``dataset.audio_durations`` are the plain audio durations.

Labels: ``Example.labels`` holds the ids of the label vocabulary's names. The names the
augmentation records (``noise``, ``snr``, ``reverb``; see ``build_label_vocab``) come
from the utterance's ``Condition``: what the augmentation applied, else what the data dir
says (``utt2noise``, ``utt2snr`` bucketed, ``utt2reverb``), else clean and dry. The other
names come from the data dir's ``utt2<name>`` files.

``BucketBatchSampler`` (see its docstring) packs utterances of similar duration into
batches whose *padded* cost ``max duration x batch size`` stays within a seconds limit.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from moe_asr.audio import AudioError, audio_info, load_audio
from moe_asr.config import AugmentConfig, DataConfig, waveform_augmentation
from moe_asr.data.augment import (
    Augmenter,
    Condition,
    augment_label_values,
    condition_label_names,
)
from moe_asr.data.datadir import DataDir, load_datadir
from moe_asr.data.features import FeatureError, compute_fbank
from moe_asr.data.labels import LabelVocab
from moe_asr.data.noise_bank import AudioRef
from moe_asr.data.precomputed import FEATS_SCP, CacheEntryError, FeatureCache
from moe_asr.data.sampler import BucketBatchSampler
from moe_asr.data.tokenizer import Tokenizer
from moe_asr.errors import UserError

__all__ = [
    "DatasetError",
    "UtteranceError",
    "Example",
    "Skipped",
    "Batch",
    "Collator",
    "AsrDataset",
    "AsrDataLoader",
    "BucketBatchSampler",
    "make_loader",
    "make_sampler",
    "build_label_vocab",
]

log = logging.getLogger(__name__)

BABBLE_POOL = 32  # training utterances whose audio makes the babble noise


class DatasetError(UserError):
    """A data dir yields no usable utterance."""


class UtteranceError(UserError):
    """One utterance cannot be loaded; names the utterance and its audio path."""

    def __init__(self, utt_id: str, path: str, cause: str):
        self.utt_id, self.path, self.cause = utt_id, path, cause
        super().__init__(f"utterance {utt_id} ({path}): {cause}")


@dataclass
class Example:
    """One loaded utterance: feats (T, F) float32, tokens (L,) long, labels name -> id;
    clean (T, F): fbank of the audio before reverberation and noise (``clean_targets``; the
    item's own feats before SpecAugment when neither was applied)."""

    utt_id: str
    feats: Tensor
    tokens: Tensor
    labels: dict[str, int]
    clean: Tensor | None = None


@dataclass(frozen=True)
class Skipped:
    """An utterance whose audio could not be used."""

    utt_id: str
    path: str
    cause: str

    def __str__(self) -> str:
        return f"utterance {self.utt_id} ({self.path}): {self.cause}"


@dataclass
class Batch:
    """A padded batch.

    utt_ids: B ids; feats (B, T, F) float32 zero-padded; feat_lens (B,) long;
    tokens (B, L) long padded with -1; token_lens (B,) long; labels name -> (B,) long
    (0 = unk); skipped: utterances of this batch dropped because their audio failed;
    clean_feats (B, T, F): the items' ``clean`` fbank, zero-padded (None: not loaded).
    B may be 0 when every utterance of the batch failed: skip such a batch.
    """

    utt_ids: list[str]
    feats: Tensor
    feat_lens: Tensor
    tokens: Tensor
    token_lens: Tensor
    labels: dict[str, Tensor] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    skip_details: list[str] = field(default_factory=list)  # "utterance U (path): cause"
    clean_feats: Tensor | None = None

    def __len__(self) -> int:
        return len(self.utt_ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def mv(t: Tensor) -> Tensor:
            return t.to(device, non_blocking=non_blocking)

        return Batch(
            utt_ids=list(self.utt_ids),
            feats=mv(self.feats),
            feat_lens=mv(self.feat_lens),
            tokens=mv(self.tokens),
            token_lens=mv(self.token_lens),
            labels={k: mv(v) for k, v in self.labels.items()},
            skipped=list(self.skipped),
            skip_details=list(self.skip_details),
            clean_feats=None if self.clean_feats is None else mv(self.clean_feats),
        )


class Collator:
    """list[Example | Skipped] -> Batch (picklable, for worker processes)."""

    def __init__(self, label_names: list[str], num_mel_bins: int):
        self.label_names = list(label_names)
        self.num_mel_bins = num_mel_bins

    def __call__(self, items: list[Example | Skipped]) -> Batch:
        good = [x for x in items if isinstance(x, Example)]
        bad = [x for x in items if isinstance(x, Skipped)]
        b = len(good)
        t_max = max((x.feats.shape[0] for x in good), default=0)
        l_max = max((x.tokens.numel() for x in good), default=0)
        feats = torch.zeros(b, t_max, self.num_mel_bins)
        tokens = torch.full((b, l_max), -1, dtype=torch.long)
        clean = torch.zeros_like(feats) if any(x.clean is not None for x in good) else None
        for i, x in enumerate(good):
            feats[i, : x.feats.shape[0]] = x.feats
            tokens[i, : x.tokens.numel()] = x.tokens
            if clean is not None:
                clean[i, : x.feats.shape[0]] = x.clean  # the dataset gives all items one
        return Batch(
            utt_ids=[x.utt_id for x in good],
            feats=feats,
            feat_lens=torch.tensor([x.feats.shape[0] for x in good], dtype=torch.long),
            tokens=tokens,
            token_lens=torch.tensor([x.tokens.numel() for x in good], dtype=torch.long),
            labels={
                n: torch.tensor([x.labels[n] for x in good], dtype=torch.long)
                for n in self.label_names
            },
            skipped=[x.utt_id for x in bad],
            skip_details=[str(x) for x in bad],
            clean_feats=clean,
        )


def build_label_vocab(
    datadir: str | Path | DataDir, names: list[str], augment: AugmentConfig | None = None
) -> LabelVocab:
    """Label vocabulary of ``names``: the values the augmentation records (from ``augment``,
    see ``augment_label_values``) for the names it produces, else those of the
    ``utt2<name>`` files of a (training) data dir."""
    produced = augment_label_values(augment) if augment is not None else {}
    vocab = LabelVocab.from_values({n: produced[n] for n in names if n in produced})
    from_data = [n for n in names if n not in produced]
    if from_data:
        dd = datadir if isinstance(datadir, DataDir) else load_datadir(datadir)
        vocab.values.update(LabelVocab.from_tables(dd.groups, from_data).values)
    return LabelVocab({n: vocab.values[n] for n in names})  # in the order of names


class AsrDataset(Dataset):
    """Utterances of a data dir as ``Example`` (or ``Skipped``) items.

    Durations come from ``utt2dur`` when present, else from the audio headers (read once,
    here). In training (``train=True``) augmentation is on and utterances longer than
    ``data_cfg.max_utt_seconds`` are left out (counted in ``too_long``). Items are
    augmented reproducibly from (``seed``, epoch, utterance); the loader sets the epoch
    and, unless ``seed`` is given here, the seed from its sampler. With
    ``data_cfg.features.precomputed`` features come from ``cache`` (a ``FeatureCache``).
    ``clean_targets`` (training, waveform augmentation): each item also carries the fbank of
    its audio before the augmentation's reverberation and noise (``model.clean_target``).
    """

    def __init__(
        self,
        datadir: str | Path | DataDir,
        tokenizer: Tokenizer | None,
        label_vocab: LabelVocab | None,
        data_cfg: DataConfig,
        train: bool,
        *,
        seed: int | None = None,
        clean_targets: bool = False,
    ):
        self.dd = datadir if isinstance(datadir, DataDir) else load_datadir(datadir)
        self.path = self.dd.path
        self.tokenizer = tokenizer
        self.label_vocab = label_vocab or LabelVocab()
        self.cfg = data_cfg
        self.train = train
        self.seed = seed or 0
        self._seed_from_sampler = seed is None  # the loader hands over the sampler's seed
        self.epoch = 0
        self.cache: FeatureCache | None = None
        if data_cfg.features.precomputed:
            self.cache = self._open_cache(data_cfg, train)
        self.augmenter = (
            Augmenter(data_cfg.augment, data_cfg.features.sample_rate, self._babble_audio())
            if train
            else None
        )
        if clean_targets and (self.augmenter is None or self.cache is not None):
            raise DatasetError(
                f"{self.path or 'data dir'}: clean-feature targets (model.clean_target) need "
                "training with waveform augmentation from the audio, not precomputed features"
            )
        self.clean_targets = clean_targets
        # label names taken from the utterance's condition (augmentation or data dir)
        self.condition_labels = condition_label_names(self.label_vocab.names, data_cfg.augment)
        self.skipped: list[Skipped] = []
        self.too_long: list[str] = []
        self._pending: list[str] = []  # skipped ids not yet returned by pop_skipped()
        # utt -> audio seconds, usable utterances only
        self.audio_durations: dict[str, float] = self._durations()
        self._pending = [s.utt_id for s in self.skipped]
        self.utt_ids: list[str] = list(self.audio_durations)
        if train:
            dur = self.audio_durations
            long = [u for u in self.utt_ids if dur[u] > data_cfg.max_utt_seconds]
            if long:
                log.warning(
                    "%s: leaving out %d utterance(s) longer than data.max_utt_seconds=%g (e.g. %s)",
                    self.path or "data dir",
                    len(long),
                    data_cfg.max_utt_seconds,
                    long[0],
                )
                self.too_long = long
                drop = set(long)
                self.utt_ids = [u for u in self.utt_ids if u not in drop]
                self.audio_durations = {u: dur[u] for u in self.utt_ids}
        stretch = self.augmenter.max_stretch if self.augmenter is not None else 1.0
        # utt -> seconds to batch by (longest after speed perturbation)
        self.durations: dict[str, float] = {u: d * stretch for u, d in self.audio_durations.items()}
        if not self.utt_ids:
            raise DatasetError(
                f"{self.path or 'data dir'}: no usable utterance ({len(self.skipped)} with "
                f"unreadable audio, {len(self.too_long)} longer than data.max_utt_seconds)"
            )

    def _open_cache(self, data_cfg: DataConfig, train: bool) -> FeatureCache:
        waveform = waveform_augmentation(data_cfg.augment) if train else []
        if waveform:
            raise DatasetError(
                f"data.features.precomputed=true cannot be combined with {' and '.join(waveform)}"
                ": precomputed features have no waveform to augment; turn one of them off"
            )
        if self.path is None:
            raise DatasetError(
                "data.features.precomputed=true needs a data dir on disk (with feats.scp)"
            )
        return FeatureCache(self.path, data_cfg.features, self.dd.utt_ids)

    # ------------------------------------------------------------------ durations

    def _durations(self) -> dict[str, float]:
        dd = self.dd
        out: dict[str, float] = {}
        if self.cache is not None:
            for utt in dd.utt_ids:
                if utt not in self.cache:  # left out of the dump (unreadable audio)
                    why = f"no features: {self.cache.left_out[utt]}"
                    self._skip(Skipped(utt, f"{dd.path}/{FEATS_SCP}", why))
                elif dd.utt2dur is not None and utt in dd.utt2dur:
                    out[utt] = dd.utt2dur[utt]
                else:
                    out[utt] = self.cache.seconds(utt)
            return out
        header: dict[str, float] = {}  # audio path -> duration (recordings shared by segments)
        for utt in dd.utt_ids:
            try:
                path, start, end = dd.audio_of(utt)
            except KeyError:
                where = "segments" if dd.segments is not None else "wav.scp"
                self._skip(Skipped(utt, f"{dd.path}/{where}", f"no entry in {where}"))
                continue
            if dd.utt2dur is not None and utt in dd.utt2dur:
                out[utt] = dd.utt2dur[utt]
                continue
            if start is not None and end is not None and end > 0:
                out[utt] = end - start
                continue
            try:
                if path not in header:
                    header[path] = audio_info(path).duration
            except AudioError as e:
                self._skip(Skipped(utt, path, e.cause))
                continue
            out[utt] = header[path] - (start or 0.0)
        if self.skipped:
            log.warning(
                "%s: %d utterance(s) left out, audio unreadable", dd.path, len(self.skipped)
            )
        return out

    def _babble_audio(self) -> list[AudioRef] | None:
        """Up to BABBLE_POOL utterances spread over the data dir: babble noise talkers."""
        if "babble" not in self.cfg.augment.noise_types or self.cfg.augment.noise_prob <= 0:
            return None
        ids = self.dd.utt_ids
        n = min(BABBLE_POOL, len(ids))
        picks = [ids[i * len(ids) // n] for i in range(n)]
        out = []
        for u in picks:
            try:
                path, start, end = self.dd.audio_of(u)
            except KeyError:
                continue
            out.append(AudioRef(path, 0.0, start, end))
        return out

    def _skip(self, s: Skipped) -> None:
        log.warning("skipping %s", s)
        self.skipped.append(s)

    def note_skipped(self, utt_ids: list[str]) -> None:
        """Record utterances a loader dropped (called in the main process)."""
        self._pending.extend(utt_ids)

    def pop_skipped(self) -> list[str]:
        """Utterances skipped since the last call (the first call includes those left out
        when the dataset was built); the trainer prints the count after each epoch."""
        out, self._pending = self._pending, []
        return out

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        """Select the augmentation draws; ``seed`` applies unless one was given at build."""
        self.epoch = epoch
        if seed is not None and self._seed_from_sampler:
            self.seed = seed

    # ------------------------------------------------------------------ items

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __getitem__(self, key: int | str) -> Example | Skipped:
        utt = self.utt_ids[key] if isinstance(key, int) else key
        try:
            return self.load(utt)
        except UtteranceError as e:
            return Skipped(e.utt_id, e.path, e.cause)

    def load(self, utt: str) -> Example:
        """Load one utterance; raises UtteranceError naming it and its audio (or dump) path."""
        rng = None
        cond = Condition.of_datadir(self.dd, utt) if self.condition_labels else None
        if self.augmenter is not None:
            key = zlib.crc32(utt.encode("utf-8"))
            rng = np.random.default_rng([self.seed, self.epoch, key])
        clean = None
        if self.cache is None:
            feats, cond, clean = self._fbank(utt, rng, cond)
            if self.clean_targets and clean is None:  # left alone: its own target
                clean = feats
        else:
            feats = self._cached(utt, rng)
        if self.augmenter is not None:
            feats = self.augmenter.features(feats, rng)
        ids = self.tokenizer.encode(self.dd.text.get(utt, "")) if self.tokenizer else []
        values = {n: self.dd.groups.get(n, {}).get(utt) for n in self.label_vocab.names}
        if self.condition_labels and cond is not None:
            applied = cond.labels(self.cfg.augment.snr_buckets)
            values.update({n: applied[n] for n in self.condition_labels})
        labels = {name: self.label_vocab.index(name, v) for name, v in values.items()}
        return Example(utt, feats, torch.tensor(ids, dtype=torch.long), labels, clean)

    def _fbank(
        self, utt: str, rng: np.random.Generator | None, cond: Condition | None
    ) -> tuple[Tensor, Condition | None, Tensor | None]:
        """(T, F) fbank of the (waveform-augmented) audio, the condition applied, and with
        ``clean_targets`` the (T, F) fbank of the audio before reverberation and noise (no
        dither; None when neither was applied)."""
        path, start, end = self.dd.audio_of(utt)
        fcfg = self.cfg.features
        try:
            wav = torch.from_numpy(load_audio(path, fcfg.sample_rate, start, end))
        except AudioError as e:
            raise UtteranceError(utt, path, e.cause) from e
        dry = None
        if self.augmenter is not None:
            wav = dry = self.augmenter.perturb_speed(wav, rng)
            wav, cond = self.augmenter.corrupt(wav, rng, cond)
        try:
            clean = None
            if self.clean_targets and wav is not dry:
                clean = compute_fbank(dry, replace(fcfg, dither=0.0))
            if fcfg.dither > 0 and rng is not None:
                with torch.random.fork_rng(devices=[]):  # reproducible dither
                    torch.manual_seed(int(rng.integers(0, 2**62)))
                    return compute_fbank(wav, fcfg), cond, clean
            return compute_fbank(wav, fcfg), cond, clean
        except FeatureError as e:
            raise UtteranceError(utt, path, str(e)) from e

    def _cached(self, utt: str, rng: np.random.Generator | None) -> Tensor:
        """(T, F) fbank from the dump."""
        try:
            feats = self.cache.load(utt)
        except CacheEntryError as e:
            raise UtteranceError(utt, e.path, e.cause) from e
        if rng is not None and self.cfg.features.dither > 0:
            rng.integers(0, 2**62)  # the draw on-the-fly dither takes: SpecAugment's stay equal
        return feats

    def collator(self) -> Collator:
        return Collator(self.label_vocab.names, self.cfg.features.num_mel_bins)


class AsrDataLoader(DataLoader):
    """DataLoader that tracks what the training loop consumed.

    Per iteration (epoch) it: sets the dataset's epoch from the sampler; tells a
    ``BucketBatchSampler`` how many batches were *delivered* (workers prefetch ahead, so
    the sampler's own count would run ahead of training) for exact mid-epoch resume;
    logs each skipped utterance and keeps them in ``skipped`` (reset every epoch).
    """

    skipped: list[str]

    def __iter__(self):
        sampler = self.batch_sampler
        counting = isinstance(sampler, BucketBatchSampler)
        if counting and isinstance(self.dataset, AsrDataset):
            self.dataset.set_epoch(sampler.epoch, seed=sampler.seed)
        self.skipped = []
        if counting:
            sampler.count_externally = True
        it = super().__iter__()  # creates the sampler iterator (and its resume offset) now
        for batch in it:
            if counting:
                sampler.mark_consumed()
            for detail in batch.skip_details:
                log.warning("skipping %s", detail)
            self.skipped.extend(batch.skipped)
            if batch.skipped and isinstance(self.dataset, AsrDataset):
                self.dataset.note_skipped(batch.skipped)
            yield batch


def make_sampler(
    dataset: AsrDataset,
    *,
    shuffle: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> BucketBatchSampler:
    """A BucketBatchSampler over ``dataset.durations`` with the data config's limits."""
    return BucketBatchSampler(
        dataset.durations,
        max_seconds=dataset.cfg.max_batch_seconds,
        num_buckets=dataset.cfg.num_buckets,
        shuffle=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
    )


def make_loader(
    dataset: AsrDataset, sampler: BucketBatchSampler, num_workers: int = 0
) -> AsrDataLoader:
    """Loader of ``Batch`` for ``sampler``'s batches (utterance-id lists)."""
    return AsrDataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=dataset.collator(),
        prefetch_factor=2 if num_workers > 0 else None,
    )
