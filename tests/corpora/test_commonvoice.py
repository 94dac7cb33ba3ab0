import pytest
from corpora_fixtures import assert_valid_and_disjoint, make_commonvoice, read_table

from moe_asr.corpora import CorpusError, prepare_commonvoice
from moe_asr.corpora.commonvoice import accent_group


def test_accent_groups_old_codes_and_free_text():
    assert accent_group("us") == "us"
    assert accent_group("england") == "england"
    assert accent_group("southatlandtic") == "southatlantic"  # the typo in old releases
    assert accent_group("United States English") == "us"
    assert accent_group("India and South Asia (India, Pakistan, Sri Lanka)") == "indian"
    assert accent_group("Canadian English,Non native speaker") == "canada"
    assert accent_group("Southern African (South Africa, Zimbabwe, Namibia)") == "african"
    assert (
        accent_group("West Indies and Bermuda (Bahamas, Bermuda, Jamaica, Trinidad)") == "caribbean"
    )
    assert accent_group("Slightly nasal, from a tiny village") == "other"
    assert accent_group("other") == "other"
    assert accent_group("  ") == "unk"


@pytest.mark.parametrize("version", ["old", "new"])
def test_prepare_official_splits(tmp_path, version):
    res = prepare_commonvoice(make_commonvoice(tmp_path, version=version), tmp_path / "data")
    u2s = assert_valid_and_disjoint(res)
    assert res.warnings == []
    assert res.counts == {"train": 8, "dev": 2, "test": 2}
    train = res.splits["train"]
    accent = read_table(train / "utt2accent")
    spk = read_table(train / "utt2spk")
    by_spk = {spk[u]: accent[u] for u in accent}
    assert by_spk == {"a1" * 8: "us", "b2" * 8: "england", "c3" * 8: "indian", "d4" * 8: "unk"}
    assert set(read_table(res.splits["test"] / "utt2accent").values()) == {"canada"}
    assert set(read_table(res.splits["dev"] / "utt2accent").values()) == {"scotland"}
    gender = read_table(train / "utt2gender")
    assert {spk[u]: gender[u] for u in gender}["a1" * 8] == "m"
    assert {spk[u]: gender[u] for u in gender}["c3" * 8] == "unk"
    text = read_table(train / "text")
    assert text[f"{'a1' * 8}-common_voice_en_1"] == "hello world number 1"
    wav = read_table(train / "wav.scp")
    assert wav[f"{'a1' * 8}-common_voice_en_1"].endswith("clips/common_voice_en_1.mp3")
    assert set(u2s["test"].values()) == {"f6" * 8}


def test_malformed_tsvs(tmp_path):
    res = prepare_commonvoice(make_commonvoice(tmp_path, malformed=True), tmp_path / "data")
    assert_valid_and_disjoint(res)
    msgs = "\n".join(res.warnings)
    assert msgs.count("byte-order mark") == 3 and msgs.count("CRLF") == 3
    assert "clip listed in the tsv is missing (skipped)" in msgs and "train.tsv:10" in msgs
    assert "missing_clip.mp3" in msgs
    assert "no accent/accents column (accent unk)" in msgs and "test.tsv" in msgs
    assert f"client in train and in test (kept only in test): {'f6' * 8}" in msgs
    assert set(read_table(res.splits["test"] / "utt2accent").values()) == {"unk"}
    # the header survived the BOM: the train accents are still read
    assert "us" in read_table(res.splits["train"] / "utt2accent").values()


def test_layout_errors(tmp_path):
    with pytest.raises(CorpusError, match="no clips/ directory"):
        prepare_commonvoice(tmp_path, tmp_path / "data")
    lang = tmp_path / "cv" / "en"
    (lang / "clips").mkdir(parents=True)
    (lang / "train.tsv").write_text("client_id\tpath\nx\ty.mp3\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"train.tsv:1: no 'sentence' column"):
        prepare_commonvoice(tmp_path / "cv", tmp_path / "data")
