"""Dataset, bucketed batching, collate and loader: limits, coverage, sharding, resume, bad audio."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from moe_asr.audio import load_audio
from moe_asr.config import AugmentConfig, DataConfig, TokenizerConfig
from moe_asr.data.datadir import DataDir, Segment, load_datadir, write_datadir
from moe_asr.data.dataset import (
    AsrDataset,
    Batch,
    BucketBatchSampler,
    build_label_vocab,
    make_loader,
    make_sampler,
)
from moe_asr.data.features import compute_fbank
from moe_asr.data.sampler import BatchingError, batch_cost
from moe_asr.data.tokenizer import train_tokenizer
from moe_asr.errors import UserError

SR = 16000


def _write_dir(root: Path, durations: list[float], *, utt2dur: bool = True) -> Path:
    rng = np.random.default_rng(0)
    dd = DataDir(utt2dur={} if utt2dur else None)
    accents = ["us", "uk", "in"]
    dd.groups["accent"] = {}
    for i, d in enumerate(durations):
        utt = f"spk{i % 2}-u{i:03d}"
        path = root / "wav" / f"{utt}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * rng.standard_normal(int(d * SR))).astype(np.float32), SR)
        dd.wav_scp[utt] = str(path)
        dd.text[utt] = ["a cat", "the dog", "a big cat"][i % 3]
        dd.utt2spk[utt] = f"spk{i % 2}"
        if utt2dur:
            dd.utt2dur[utt] = d
        if i % 4 != 3:  # every 4th utterance has no accent label
            dd.groups["accent"][utt] = accents[i % 3]
    return write_datadir(dd, root / "data")


@pytest.fixture(scope="module")
def datadir(tmp_path_factory) -> Path:
    return _write_dir(tmp_path_factory.mktemp("ds"), [0.3 + 0.05 * i for i in range(12)])


def _random_durations(n: int, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {f"u{i:04d}": float(d) for i, d in enumerate(rng.uniform(0.5, 12.0, n))}


# ----------------------------------------------------------------------------- sampler


@pytest.mark.parametrize("shuffle", [True, False])
def test_no_batch_exceeds_limit_and_each_utt_once_per_epoch(shuffle):
    durs = _random_durations(500)
    s = BucketBatchSampler(durs, max_seconds=40.0, num_buckets=6, shuffle=shuffle, seed=3)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        assert all(batch_cost([durs[u] for u in b]) <= 40.0 for b in batches)
        seen = [u for b in batches for u in b]
        assert sorted(seen) == sorted(durs)  # exactly once
        # buckets keep padding small: at least 60% of the padded seconds are audio
        real = sum(durs.values())
        padded = sum(batch_cost([durs[u] for u in b]) for b in batches)
        assert real / padded > 0.6


def test_shuffle_is_seeded_and_changes_per_epoch():
    durs = _random_durations(200)
    a = BucketBatchSampler(durs, 30.0, seed=1)
    b = BucketBatchSampler(durs, 30.0, seed=1)
    a.set_epoch(0)
    b.set_epoch(0)
    e0 = list(a)
    assert e0 == list(b)
    a.set_epoch(1)
    assert list(a) != e0
    c = BucketBatchSampler(durs, 30.0, seed=2)
    assert list(c) != e0


def test_unshuffled_batches_follow_duration():
    durs = [5.0, 1.0, 3.0, 2.0, 4.0]
    s = BucketBatchSampler(durs, max_seconds=6.0, num_buckets=1, shuffle=False)
    # int keys for a list; [1, 3, 2] would cost 3 x 3 = 9 s > 6 s
    assert list(s) == [[1, 3], [2], [4], [0]]


def test_too_long_utterance_alone_with_warning(caplog):
    durs = {"a": 1.0, "b": 50.0, "c": 1.5, "d": 2.0}
    with caplog.at_level(logging.WARNING):
        s = BucketBatchSampler(durs, max_seconds=10.0, num_buckets=2)
    assert "longer than max_seconds=10" in caplog.text and "b, 50.0 s" in caplog.text
    batches = list(s)
    assert ["b"] in batches
    assert sorted(u for b in batches for u in b) == ["a", "b", "c", "d"]


@pytest.mark.parametrize("n", [300, 301])
def test_two_ranks_disjoint_cover_equal_counts(n):
    durs = _random_durations(n, seed=5)
    ranks = [BucketBatchSampler(durs, 25.0, seed=7, rank=r, world_size=2) for r in range(2)]
    for epoch in (0, 1):
        for s in ranks:
            s.set_epoch(epoch)
        per_rank = [list(s) for s in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0])
        unpadded = ranks[0].global_batches()
        k = len(unpadded)
        # interleaving the ranks rebuilds the global list; the first k are the real batches
        inter = [per_rank[i % 2][i // 2] for i in range(2 * len(per_rank[0]))]
        assert inter[:k] == unpadded
        real = [u for b in inter[:k] for u in b]
        assert sorted(real) == sorted(durs) and len(real) == len(set(real))
        if k % 2:  # one batch repeated so both ranks have the same count
            assert inter[k:] == unpadded[:1]
        dropped = [
            BucketBatchSampler(durs, 25.0, seed=7, rank=r, world_size=2, drop_last=True)
            for r in range(2)
        ]
        for s in dropped:
            s.set_epoch(epoch)
        a, b = (set(u for bb in s for u in bb) for s in dropped)
        assert not a & b and len(dropped[0]) == len(dropped[1]) == k // 2


def test_resume_continues_mid_epoch_at_same_batch():
    durs = _random_durations(120)
    s = BucketBatchSampler(durs, 20.0, seed=4)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2)
    it = iter(s)
    first = [next(it) for _ in range(5)]
    state = s.state_dict()
    assert state["epoch"] == 2 and state["batches_done"] == 5
    fresh = BucketBatchSampler(durs, 20.0, seed=4)
    fresh.load_state_dict(state)
    fresh.set_epoch(2)  # the trainer's loop sets the epoch again: the resume point survives
    assert first + list(fresh) == full
    fresh.set_epoch(3)  # the next epoch starts from its beginning
    assert len(list(fresh)) == len(fresh)


def test_bad_settings_are_user_errors():
    with pytest.raises(BatchingError, match="max_batch_seconds"):
        BucketBatchSampler([1.0], 0.0)
    with pytest.raises(BatchingError, match="utterance x"):
        BucketBatchSampler({"x": float("nan")}, 10.0)
    with pytest.raises(BatchingError, match="rank 2"):
        BucketBatchSampler([1.0], 10.0, rank=2, world_size=2)


# ----------------------------------------------------------------------------- dataset


def test_dataset_items_and_collate(datadir):
    tok = train_tokenizer(["a cat", "the dog", "a big cat"], TokenizerConfig(type="char"))
    vocab = build_label_vocab(datadir, ["accent"])
    assert vocab.values["accent"] == ["unk", "in", "uk", "us"]
    vocab.values["accent"].remove("uk")  # "uk" becomes unseen: must map to unk
    ds = AsrDataset(datadir, tok, vocab, DataConfig(), train=False)
    assert len(ds) == 12 and ds.durations == ds.audio_durations
    sampler = make_sampler(ds, shuffle=False)
    batch = next(iter(make_loader(ds, sampler)))
    assert isinstance(batch, Batch)
    b = len(batch)
    assert batch.feats.shape[0] == b and batch.feats.shape[2] == 80
    assert batch.feats.dtype == torch.float32 and batch.tokens.dtype == torch.long
    for i, utt in enumerate(batch.utt_ids):
        item = ds[utt]
        t = int(batch.feat_lens[i])
        assert t == item.feats.shape[0] == 1 + (int(ds.audio_durations[utt] * SR) - 400) // 160
        assert torch.equal(batch.feats[i, :t], item.feats)
        assert (batch.feats[i, t:] == 0).all()
        n = int(batch.token_lens[i])
        assert tok.decode(batch.tokens[i, :n].tolist()) == ds.dd.text[utt]
        assert (batch.tokens[i, n:] == -1).all()
        label = ds.dd.groups["accent"].get(utt)
        want = 0 if label in (None, "uk") else vocab.values["accent"].index(label)
        assert int(batch.labels["accent"][i]) == want
    moved = batch.to("cpu")
    assert moved.utt_ids == batch.utt_ids and torch.equal(moved.feats, batch.feats)


def test_durations_from_headers_and_segments(tmp_path):
    d = _write_dir(tmp_path, [0.5, 0.8], utt2dur=False)
    ds = AsrDataset(d, None, None, DataConfig(), train=False)
    assert ds.audio_durations == pytest.approx({"spk0-u000": 0.5, "spk1-u001": 0.8}, abs=1e-4)
    # a segments file: two utterances cut from one recording
    dd = DataDir(utt2dur=None)
    dd.wav_scp = {"rec": str(tmp_path / "wav" / "spk1-u001.wav")}
    dd.segments = {"s-a": Segment("rec", 0.0, 0.3), "s-b": Segment("rec", 0.3, -1)}
    dd.text = {"s-a": "a", "s-b": "b"}
    dd.utt2spk = {"s-a": "s", "s-b": "s"}
    seg = AsrDataset(write_datadir(dd, tmp_path / "seg"), None, None, DataConfig(), train=False)
    assert seg.audio_durations == pytest.approx({"s-a": 0.3, "s-b": 0.5}, abs=1e-4)
    assert seg["s-b"].feats.shape[0] == 1 + (int(0.5 * SR) - 400) // 160


def _corrupt(root: Path, utt2dur: bool) -> tuple[Path, str, str]:
    d = _write_dir(root, [0.4, 0.5, 0.6, 0.7, 0.45, 0.55], utt2dur=utt2dur)
    bad = "spk0-u002"
    path = root / "wav" / f"{bad}.wav"
    path.write_bytes(path.read_bytes()[:60])  # truncated: the header promises more data
    return d, bad, str(path)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_corrupt_audio_skipped_named_and_counted(tmp_path, caplog, num_workers):
    d, bad, path = _corrupt(tmp_path, utt2dur=True)
    cfg = DataConfig(augment=AugmentConfig(specaug=False))
    ds = AsrDataset(d, None, None, cfg, train=True)
    assert len(ds) == 6  # utt2dur given: the bad file is only found when loading
    loader = make_loader(ds, make_sampler(ds, shuffle=True, seed=1), num_workers=num_workers)
    with caplog.at_level(logging.WARNING):
        batches = list(loader)  # the epoch runs to its end
    got = sorted(u for b in batches for u in b.utt_ids)
    assert got == sorted(set(ds.utt_ids) - {bad})
    assert loader.skipped == [bad] and ds.pop_skipped() == [bad] and ds.pop_skipped() == []
    assert bad in caplog.text and path in caplog.text and "truncated" in caplog.text
    assert sum(len(b.skipped) for b in batches) == 1


def test_corrupt_audio_found_at_build_without_utt2dur(tmp_path, caplog):
    d, bad, path = _corrupt(tmp_path, utt2dur=False)
    with caplog.at_level(logging.WARNING):
        ds = AsrDataset(d, None, None, DataConfig(), train=False)
    assert bad not in ds.utt_ids and len(ds) == 5
    assert bad in caplog.text and path in caplog.text
    assert ds.pop_skipped() == [bad]


def test_batch_of_only_failures_is_empty(tmp_path):
    d, bad, _ = _corrupt(tmp_path, utt2dur=True)
    ds = AsrDataset(d, None, None, DataConfig(), train=False)
    batch = ds.collator()([ds[bad]])
    assert len(batch) == 0 and batch.feats.shape == (0, 0, 80) and batch.skipped == [bad]


def test_training_batches_respect_limit_after_speed_perturbation(datadir):
    cfg = DataConfig(
        max_batch_seconds=2.0,
        augment=AugmentConfig(speed_perturb=[0.9, 1.0, 1.1], specaug=True, time_mask_width=5),
    )
    ds = AsrDataset(datadir, None, None, cfg, train=True, seed=0)
    for u, d in ds.durations.items():
        assert d == pytest.approx(ds.audio_durations[u] / 0.9)
    loader = make_loader(ds, make_sampler(ds, shuffle=True, seed=0))
    shift = cfg.features.frame_shift_ms / 1000
    for batch in loader:
        padded = batch.feats.shape[0] * batch.feats.shape[1] * shift
        assert padded <= 2.0
    # augmentation is reproducible per (seed, epoch, utterance) and changes with the epoch
    utt = ds.utt_ids[0]
    assert torch.equal(ds[utt].feats, ds[utt].feats)
    lengths, sums = set(), set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        feats = ds[utt].feats
        lengths.add(feats.shape[0])
        sums.add(round(float(feats.sum()), 3))
    assert len(lengths) > 1 and len(sums) > 1


def test_train_mode_leaves_out_too_long(datadir):
    ds = AsrDataset(datadir, None, None, DataConfig(max_utt_seconds=0.5), train=True)
    assert all(d <= 0.5 for d in ds.audio_durations.values())
    assert len(ds.too_long) == 12 - len(ds)
    assert len(AsrDataset(datadir, None, None, DataConfig(max_utt_seconds=0.5), train=False)) == 12


def test_loader_resume_counts_delivered_batches_not_prefetched(datadir):
    cfg = DataConfig(max_batch_seconds=1.5, augment=AugmentConfig(specaug=True))
    ds = AsrDataset(datadir, None, None, cfg, train=True)
    sampler = make_sampler(ds, shuffle=True, seed=5)
    sampler.set_epoch(1)
    full = [(b.utt_ids, b.feats) for b in make_loader(ds, sampler, num_workers=1)]
    assert len(full) >= 5
    sampler.set_epoch(1)
    it = iter(make_loader(ds, sampler, num_workers=1))
    head = [next(it) for _ in range(3)]  # the worker has prefetched further by now
    state = sampler.state_dict()
    assert state["batches_done"] == 3
    del it
    ds2 = AsrDataset(datadir, None, None, cfg, train=True)
    resumed = make_sampler(ds2, shuffle=True, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    rest = list(make_loader(ds2, resumed))
    got = [(b.utt_ids, b.feats) for b in head + rest]
    assert [u for u, _ in got] == [u for u, _ in full]
    # the same augmentation too: seed, epoch and utterance fix every draw
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, full))


# ----------------------------------------------------------------------------- condition labels


def _noise_cfg(**kw) -> DataConfig:
    aug = dict(noise_prob=0.5, noise_types=["white", "babble"], snr_range=[12.0, 18.0])
    return DataConfig(augment=AugmentConfig(**{**aug, **kw}, specaug=False))


def test_augmentation_labels_are_the_applied_condition(datadir):
    cfg = _noise_cfg()
    vocab = build_label_vocab(datadir, ["accent", "noise", "snr"], cfg.augment)
    assert vocab.values["noise"] == ["unk", "clean", "white", "babble"]  # from the config
    assert vocab.values["snr"] == ["unk", "clean", "<0", "0..10", ">=10"]
    assert vocab.values["accent"] == ["unk", "in", "uk", "us"]  # from utt2accent
    ds = AsrDataset(datadir, None, vocab, cfg, train=True, seed=0)
    plain = AsrDataset(datadir, None, vocab, DataConfig(augment=AugmentConfig(specaug=False)), True)
    seen = set()
    for epoch, utt in ((e, u) for e in range(3) for u in ds.utt_ids):
        ds.set_epoch(epoch)
        ex, dry = ds[utt], plain[utt]
        noise, snr = (vocab.value(n, ex.labels[n]) for n in ("noise", "snr"))
        seen.add(noise)
        assert (noise == "clean") == torch.equal(ex.feats, dry.feats), utt
        assert snr == ("clean" if noise == "clean" else ">=10")
        assert ex.labels["accent"] == dry.labels["accent"]
    assert seen == {"clean", "white", "babble"}
    # in batches, reproducibly: a fresh dataset in a worker process gives the same
    batches = []
    for workers in (0, 1):
        dataset = AsrDataset(datadir, None, vocab, cfg, train=True)  # seed from the sampler
        sampler = make_sampler(dataset, shuffle=True, seed=4)
        sampler.set_epoch(2)
        batches.append(list(make_loader(dataset, sampler, num_workers=workers)))
    for a, b in zip(*batches, strict=True):
        assert a.utt_ids == b.utt_ids and torch.equal(a.feats, b.feats)
        assert set(a.labels) == {"accent", "noise", "snr"}
        assert all(torch.equal(a.labels[n], b.labels[n]) for n in a.labels)


def test_condition_labels_of_unaugmented_data_come_from_the_data_dir(tmp_path):
    d = _write_dir(tmp_path, [0.4] * 4)
    utts = sorted(load_datadir(d).utt_ids)
    (d / "utt2noise").write_text(
        "".join(f"{u} {n}\n" for u, n in zip(utts, "clean white pink pink".split()))
    )
    (d / "utt2snr").write_text("".join(f"{u} {s}\n" for u, s in zip(utts, ["inf", "5", "-3", "x"])))
    cfg = _noise_cfg(noise_types=["white"])
    vocab = build_label_vocab(d, ["noise", "snr"], cfg.augment)
    ds = AsrDataset(d, None, vocab, cfg, train=False)  # dev/test: never augmented
    got = [tuple(vocab.value(n, ds[u].labels[n]) for n in ("noise", "snr")) for u in utts]
    # pink is no type of this config: unk; an SNR that is no number: unk
    assert got == [("clean", "clean"), ("white", "0..10"), ("unk", "<0"), ("unk", "unk")]


def test_augmentation_label_without_augmentation_or_file_is_named(datadir):
    with pytest.raises(UserError, match="no utt2snr file .*data.augment.noise_prob > 0"):
        build_label_vocab(datadir, ["snr"], AugmentConfig())


def test_clean_targets_are_the_audio_before_noise_and_reverberation(datadir):
    cfg = _noise_cfg(noise_prob=0.5, reverb_prob=0.5, speed_perturb=[0.9, 1.0, 1.1])
    vocab = build_label_vocab(datadir, ["noise", "reverb"], cfg.augment)
    ds = AsrDataset(datadir, None, vocab, cfg, train=True, seed=0, clean_targets=True)
    plain = AsrDataset(datadir, None, vocab, cfg, train=True, seed=0)
    kinds = set()
    for utt in ds.utt_ids:
        ex, same = ds[utt], plain[utt]
        assert torch.equal(ex.feats, same.feats), "the targets must not change the draws"
        assert same.clean is None
        noise, room = (vocab.value(n, ex.labels[n]) for n in ("noise", "reverb"))
        if (noise, room) == ("clean", "dry"):  # left alone: the input is its own target
            assert torch.equal(ex.clean, ex.feats)
            continue
        kinds.add(noise if noise != "clean" else room)
        assert ex.clean.shape == ex.feats.shape and not torch.equal(ex.clean, ex.feats)
        # the target is the speed-perturbed audio alone: redo its draw and compare
        rng = np.random.default_rng([0, 0, zlib.crc32(utt.encode())])
        wav = torch.from_numpy(load_audio(ds.dd.wav_scp[utt], SR))
        dry = ds.augmenter.perturb_speed(wav, rng)
        assert torch.equal(ex.clean, compute_fbank(dry, cfg.features))
    assert kinds >= {"white", "babble", "reverb"}
    batch = ds.collator()([ds[u] for u in ds.utt_ids[:6]])
    assert batch.clean_feats is not None and batch.clean_feats.shape == batch.feats.shape
    for i, utt in enumerate(batch.utt_ids):
        ex, n = ds[utt], int(batch.feat_lens[i])
        assert torch.equal(batch.clean_feats[i, :n], ex.clean)
        assert not batch.clean_feats[i, n:].any()
    assert plain.collator()([plain[u] for u in plain.utt_ids[:3]]).clean_feats is None
    with pytest.raises(UserError, match="clean-feature targets"):
        AsrDataset(datadir, None, vocab, cfg, train=False, clean_targets=True)
