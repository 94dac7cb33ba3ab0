import pytest
from corpora_fixtures import assert_valid_and_disjoint, make_aesrc, read_table

from moe_asr.corpora import CorpusError, prepare_aesrc
from moe_asr.corpora.aesrc import accent_of_dir


def test_accent_from_directory_names():
    assert accent_of_dir("American English Speech Data") == "us"
    assert accent_of_dir("Chinese Speaking English Speech Data") == "chn"
    assert accent_of_dir("Indian English Speech Data") == "ind"
    assert accent_of_dir("Spanish Speaking English Speech Data") == "es"
    assert accent_of_dir("KR") == "kr"  # renamed by the challenge baseline
    assert accent_of_dir("README") is None


def test_prepare(tmp_path):
    res = prepare_aesrc(make_aesrc(tmp_path), tmp_path / "data")
    u2s = assert_valid_and_disjoint(res)
    assert res.warnings == []
    accents = {}
    for path in res.splits.values():
        accents.update(read_table(path / "utt2accent"))
    assert accents["us-G00001S1001"] == "us"
    assert accents["chn-G00021S1002"] == "chn"
    assert accents["kr-G00031S1001"] == "kr"
    # 3 speakers: test/dev/train; 2: test/train; 1: train only
    n_dev = {a: 0 for a in ("us", "uk", "chn", "kr")}
    for spk in set(u2s["dev"].values()):
        n_dev[spk.split("-")[0]] += 1
    assert n_dev == {"us": 1, "uk": 1, "chn": 0, "kr": 0}
    assert "kr-G00031" in u2s["train"].values()
    gender = {}
    for path in res.splits.values():
        gender.update(read_table(path / "utt2gender"))
    assert gender["us-G00001S1001"] == "f" and gender["us-G00002S1001"] == "m"
    assert read_table(res.splits["train"] / "text")["kr-G00031S1001"] == "it's a nice day isn't it"


def test_malformed(tmp_path):
    res = prepare_aesrc(make_aesrc(tmp_path, malformed=True), tmp_path / "data")
    assert_valid_and_disjoint(res)
    msgs = "\n".join(res.warnings)
    assert "not an accent directory (ignored)" in msgs and "AESRC2020/README" in msgs
    assert "audio without a transcript (skipped)" in msgs and "G00001S1003.wav" in msgs


def test_nothing_usable(tmp_path):
    with pytest.raises(CorpusError, match="no accent directories"):
        prepare_aesrc(tmp_path, tmp_path / "data")
    (tmp_path / "US" / "G1").mkdir(parents=True)
    with pytest.raises(CorpusError, match="no usable utterance in any split"):
        prepare_aesrc(tmp_path, tmp_path / "data")
