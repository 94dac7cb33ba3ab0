import pytest
from corpora_fixtures import assert_valid_and_disjoint, make_librispeech, read_table

from moe_asr.corpora import CorpusError, prepare_librispeech


def test_prepare_official_subsets(tmp_path):
    make_librispeech(tmp_path)
    res = prepare_librispeech(tmp_path, tmp_path / "data")  # the parent of LibriSpeech/ works
    u2s = assert_valid_and_disjoint(res)
    assert res.warnings == []
    assert set(res.splits) == {"train", "dev", "test", "test_other"}
    assert set(u2s["train"].values()) == {"19", "26"}
    assert set(u2s["test_other"].values()) == {"1688"}
    assert not (res.splits["train"] / "utt2accent").exists()  # no accent labels
    gender = read_table(res.splits["train"] / "utt2gender")
    assert gender["19-198-0000"] == "f" and gender["26-198-0001"] == "m"
    assert read_table(res.splits["test"] / "text")["121-198-0001"] == "northanger abbey's chapter 1"
    assert read_table(res.splits["dev"] / "wav.scp")["84-198-0000"].endswith(
        "LibriSpeech/dev-clean/84/198/84-198-0000.flac"
    )


def test_malformed(tmp_path):
    res = prepare_librispeech(make_librispeech(tmp_path, malformed=True), tmp_path / "data")
    assert_valid_and_disjoint(res)
    msgs = "\n".join(res.warnings)
    assert (
        "transcript line without audio (skipped)" in msgs
        and "19-198.trans.txt:3: 19-198-0009" in msgs
    )
    assert "audio without a transcript (skipped)" in msgs and "19-198-0010.flac" in msgs
    assert "speaker not in SPEAKERS.TXT (gender unk): 1688" in msgs
    assert set(read_table(res.splits["test_other"] / "utt2gender").values()) == {"unk"}


def test_train_subsets_option(tmp_path):
    corpus = make_librispeech(tmp_path)
    with pytest.raises(CorpusError, match="train-clean-360: training subset not found"):
        prepare_librispeech(corpus, tmp_path / "data", train_subsets=("train-clean-360",))
