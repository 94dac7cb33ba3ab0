"""Precomputed features (`moe-asr dump-feats`, ``data.features.precomputed``): the dataset
reads what it would compute, training on them gives the same weights, and a stale, missing
or corrupt dump, or waveform augmentation with it, is a one-line error naming the culprit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from moe_asr.cli import main
from moe_asr.config import (
    AugmentConfig,
    ConfigError,
    DataConfig,
    FeatureConfig,
    config_from_dict,
    validate_config,
)
from moe_asr.data.dataset import AsrDataset, DatasetError, UtteranceError, make_loader, make_sampler
from moe_asr.data.features import compute_cmvn, num_frames
from moe_asr.data.precomputed import FeatureCache, FeatureCacheError
from moe_asr.train.checkpoint import load_checkpoint
from tests.tone_corpus import make_tone_corpus

PRE = DataConfig(features=FeatureConfig(precomputed=True))
TEXTS = ["abc", "bad", "cafe", "face", "head", "bead", "deaf", "fade", "babe", "cage"]


def _dump(data: Path, *extra: str) -> int:
    return main(["dump-feats", str(data), "--quiet", *extra])


@pytest.fixture
def data(tmp_path) -> Path:
    d = make_tone_corpus(tmp_path / "c", TEXTS, accents=["x", "y"])
    assert _dump(d, "--shard-mb", "0.05") == 0  # several shards
    return d


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_cached_features_equal_on_the_fly_with_and_without_specaugment(data):
    info = json.loads((data / "feats.json").read_text())
    assert len(info["shards"]) > 1 and info["num_utts"] == len(TEXTS)
    assert info["features"]["num_mel_bins"] == 80 and not info["left_out"]
    for train in (False, True):  # train: SpecAugment on (the default), seeded per utterance
        fly = AsrDataset(data, None, None, DataConfig(), train=train, seed=3)
        pre = AsrDataset(data, None, None, PRE, train=train, seed=3)
        assert pre.utt_ids == fly.utt_ids and pre.durations == fly.durations
        for epoch in (0, 1):
            fly.set_epoch(epoch)
            pre.set_epoch(epoch)
            for utt in fly.utt_ids:
                a, b = fly.load(utt).feats, pre.load(utt).feats
                torch.testing.assert_close(b, a, atol=1e-6, rtol=0)
    # batches through the loader too; and CMVN from the dump equals CMVN from the audio
    ds = AsrDataset(data, None, None, PRE, train=False)
    batches = list(make_loader(ds, make_sampler(ds, shuffle=False), num_workers=1))
    assert sorted(u for b in batches for u in b.utt_ids) == ds.utt_ids
    a = compute_cmvn(data, FeatureConfig())
    b = compute_cmvn(data, FeatureConfig(precomputed=True))
    torch.testing.assert_close(b.mean, a.mean, atol=1e-6, rtol=0)
    assert b.count == a.count


def test_training_on_the_dump_gives_the_same_weights(tmp_path):
    from tests.train.test_trainer import TINY

    train = make_tone_corpus(tmp_path / "train", TEXTS, accents=["x", "y"])
    dev = make_tone_corpus(tmp_path / "dev", TEXTS[:4], accents=["x", "y"], prefix="d")
    conf = tmp_path / "tiny.yaml"
    conf.write_text(TINY.replace("augment: {specaug: false}", "augment: {specaug: true}"))
    lang = tmp_path / "lang"
    assert main(["train-tokenizer", "--data", str(train / "text"), "--out", str(lang)]) == 0
    assert _dump(train) == 0 and _dump(dev) == 0
    common = ["--config", str(conf), "--train-data", str(train), "--dev-data", str(dev)]
    common += ["--tokenizer", str(lang), "--set", "train.max_steps=6"]
    assert main(["train", *common, "--exp", str(tmp_path / "fly")]) == 0
    pre = ["--set", "data.features.precomputed=true", "--exp", str(tmp_path / "pre")]
    assert main(["train", *common, *pre]) == 0
    a = load_checkpoint(tmp_path / "fly" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "pre" / "checkpoints" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["state"]["history"][0]["dev_loss"] == b["state"]["history"][0]["dev_loss"]
    # the package computes features from audio again: decode/report need no dump
    assert main(["average", "--exp", str(tmp_path / "pre"), "--num", "1"]) == 0
    from moe_asr.package import load_package

    assert not load_package(tmp_path / "pre" / "model.pt").config.data.features.precomputed


def test_overwrite_is_refused_then_replaces_and_removes_old_shards(data, capsys):
    capsys.readouterr()
    assert _dump(data) == 1
    err = capsys.readouterr().err
    assert "holds precomputed features already" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    before = sorted((data / "dump").glob("feats.*.npy"))
    assert len(before) > 1
    assert _dump(data, "--overwrite") == 0  # one shard now: the others go
    assert [p.name for p in (data / "dump").glob("feats.*.npy")] == ["feats.1.npy"]
    AsrDataset(data, None, None, PRE, train=False)  # and it reads


def test_missing_entry_and_missing_dump_name_what_to_do(data, tmp_path):
    scp = data / "feats.scp"
    lines = scp.read_text().splitlines()
    gone = lines[3].split()[0]
    scp.write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    with pytest.raises(FeatureCacheError) as e:
        AsrDataset(data, None, None, PRE, train=False)
    msg = _one_line(e)
    assert f"no features for utterance {gone}" in msg and "dump-feats" in msg
    other = make_tone_corpus(tmp_path / "other", TEXTS[:2])
    with pytest.raises(FeatureCacheError, match="feats.scp: missing"):
        AsrDataset(other, None, None, PRE, train=False)


def test_corrupt_shard_or_entry_is_named(data):
    scp = dict(line.split(maxsplit=1) for line in (data / "feats.scp").read_text().splitlines())
    utt = sorted(scp)[-1]
    shard_name, row, n = scp[utt].rsplit(":", 2)
    shard = data / shard_name
    # NaN in one utterance's rows, the file still whole: that utterance fails when loaded
    arr = np.load(shard)
    arr[int(row) : int(row) + int(n)] = np.nan
    np.save(shard, arr)
    ds = AsrDataset(data, None, None, PRE, train=False)
    with pytest.raises(UtteranceError) as e:
        ds.load(utt)
    assert _one_line(e).startswith(f"utterance {utt} (") and "NaN" in str(e.value)
    skipped = ds[ds.utt_ids.index(utt)]
    assert skipped.utt_id == utt  # a Skipped item: the loader drops and names it
    # a truncated shard is found when the dataset is built, naming an utterance in it
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(FeatureCacheError) as e:
        AsrDataset(data, None, None, PRE, train=False)
    msg = _one_line(e)
    in_shard = sorted(u for u, v in scp.items() if v.startswith(f"{shard_name}:"))
    assert "corrupt shard" in msg and f"utterance {in_shard[0]}" in msg and str(shard) in msg
    # a missing shard likewise
    shutil.rmtree(data / "dump")
    with pytest.raises(FeatureCacheError, match="missing shard"):
        AsrDataset(data, None, None, PRE, train=False)


def test_rows_outside_the_shard_name_the_utterance(data):
    scp = data / "feats.scp"
    lines = scp.read_text().splitlines()
    utt, value = lines[0].split(maxsplit=1)
    name, row, n = value.rsplit(":", 2)
    lines[0] = f"{utt} {name}:{row}:{int(n) + 10**6}"
    scp.write_text("\n".join(lines) + "\n")
    with pytest.raises(FeatureCacheError) as e:
        AsrDataset(data, None, None, PRE, train=False)
    assert f"utterance {utt}: rows" in _one_line(e)


def test_other_feature_settings_are_refused(data):
    cfg = DataConfig(features=FeatureConfig(precomputed=True, num_mel_bins=40))
    with pytest.raises(FeatureCacheError) as e:
        AsrDataset(data, None, None, cfg, train=False)
    assert "num_mel_bins=80 (config 40)" in _one_line(e)


def test_waveform_augmentation_with_precomputed_is_one_error(data):
    speed = DataConfig(
        features=FeatureConfig(precomputed=True), augment=AugmentConfig(speed_perturb=[0.9, 1.1])
    )
    with pytest.raises(DatasetError) as e:
        AsrDataset(data, None, None, speed, train=True)
    assert "data.augment.speed_perturb" in _one_line(e)
    AsrDataset(data, None, None, speed, train=False)  # eval: no augmentation, fine
    same = DataConfig(
        features=FeatureConfig(precomputed=True), augment=AugmentConfig(speed_perturb=[1.0])
    )
    AsrDataset(data, None, None, same, train=True)  # a factor of 1.0 changes nothing
    cfg = config_from_dict(
        {
            "data": {
                "features": {"precomputed": True},
                "augment": {"speed_perturb": [0.9, 1.0], "noise_prob": 0.5},
            }
        }
    )
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, sections=("data",))
    msg = _one_line(e)
    assert "data.features.precomputed=True" in msg and "data.augment.noise_prob" in msg


def test_unreadable_audio_is_left_out_and_named(tmp_path, caplog):
    d = make_tone_corpus(tmp_path / "c", TEXTS[:4])
    bad = sorted((d.parent / "wav").glob("*.wav"))[1]
    bad.write_bytes(b"RIFF not really a wav")
    assert _dump(d) == 0
    info = json.loads((d / "feats.json").read_text())
    utt = bad.stem
    assert list(info["left_out"]) == [utt]
    ds = AsrDataset(d, None, None, PRE, train=False)
    assert [s.utt_id for s in ds.skipped] == [utt] and utt not in ds.utt_ids
    assert "no features" in ds.skipped[0].cause
    cache = FeatureCache(d, FeatureConfig(precomputed=True), ds.utt_ids)
    first = ds.utt_ids[0]
    samples = sf.info(str(d.parent / "wav" / f"{first}.wav")).frames
    assert cache.num_frames(first) == num_frames(samples, FeatureConfig())
