import pytest
from corpora_fixtures import L2_SENTENCES, assert_valid_and_disjoint, make_l2arctic, read_table

from moe_asr.corpora import CorpusError, prepare_l2arctic
from moe_asr.corpora.l2arctic import DEV_SPEAKERS, SPEAKERS, TEST_SPEAKERS


def test_documented_split_one_speaker_per_first_language():
    for speakers in (TEST_SPEAKERS, DEV_SPEAKERS):
        assert sorted(SPEAKERS[s][0] for s in speakers) == sorted(
            {lang for lang, _ in SPEAKERS.values()}
        )
    assert not set(TEST_SPEAKERS) & set(DEV_SPEAKERS)


def test_prepare_clean_tree(tmp_path):
    res = prepare_l2arctic(make_l2arctic(tmp_path), tmp_path / "data")
    u2s = assert_valid_and_disjoint(res)
    # the one warning: the unsegmented spontaneous speech is left out, and said so
    assert [w.split(":")[0] for w in res.warnings] == [
        "suitcase_corpus/ (spontaneous speech, not segmented) is not used"
    ]
    assert set(u2s["test"].values()) == set(TEST_SPEAKERS)
    assert set(u2s["dev"].values()) == set(DEV_SPEAKERS)
    assert len(set(u2s["train"].values())) == 12
    accent = read_table(res.splits["train"] / "utt2accent")
    gender = read_table(res.splits["train"] / "utt2gender")
    assert accent["ABA-arctic_a0001"] == "arabic" and gender["ABA-arctic_a0001"] == "m"
    assert accent["HQTV-arctic_a0002"] == "vietnamese"
    assert read_table(res.splits["test"] / "utt2accent")["TXHC-arctic_a0001"] == "mandarin"
    text = read_table(res.splits["train"] / "text")
    assert text["ABA-arctic_a0001"] == "author of the danger trail philip steels etc"
    assert text["ABA-arctic_a0002"] == "not at this particular case tom apologized whittemore"
    assert len(L2_SENTENCES) == 2


def test_malformed_tree_warns_and_stays_usable(tmp_path):
    res = prepare_l2arctic(make_l2arctic(tmp_path, malformed=True), tmp_path / "data")
    assert_valid_and_disjoint(res)
    msgs = "\n".join(res.warnings)
    assert "no directory: ABA" in msgs  # speaker of the metadata without audio
    assert "audio without a transcript (skipped): " in msgs and "BWC/wav/arctic_b0001.wav" in msgs
    assert "transcript without audio (skipped)" in msgs and "arctic_b0002.txt" in msgs
    assert "byte-order mark" in msgs and "HKK/transcript/arctic_a0001.txt" in msgs
    assert "CRLF" in msgs
    assert "(accent/gender unk): XYZ" in msgs
    train = res.splits["train"]
    assert read_table(train / "utt2accent")["XYZ-arctic_a0001"] == "unk"
    # the BOM/CRLF transcript is read cleanly
    assert (
        read_table(train / "text")["HKK-arctic_a0001"]
        == "author of the danger trail philip steels etc"
    )
    assert "BWC-arctic_b0001" not in read_table(train / "text")


def test_nothing_usable_is_an_error(tmp_path):
    corpus = tmp_path / "empty"
    (corpus / "ABA" / "wav").mkdir(parents=True)
    with pytest.raises(CorpusError, match="no usable utterance in any split"):
        prepare_l2arctic(corpus, tmp_path / "data")
    with pytest.raises(CorpusError, match="expected the L2-ARCTIC layout"):
        prepare_l2arctic(tmp_path, tmp_path / "data2")
