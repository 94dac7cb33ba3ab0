import pytest
from corpora_fixtures import assert_valid_and_disjoint, make_edacc, read_table

from moe_asr.corpora import CorpusError, prepare_edacc
from moe_asr.corpora.edacc import accent_group


def test_accent_groups():
    assert accent_group("Scottish (Fife)") == "scottish"
    assert accent_group("Standard Indian English") == "indian"
    assert accent_group("Vietnamese English") == "vietnamese"
    assert accent_group("Neutral English, Italian") == "english"
    assert accent_group("Italian mixed with American accent") == "italian"
    assert accent_group("Spanish American") == "latin_american"
    assert accent_group("Portuguese") == "portuguese"
    assert accent_group("Fluent and clear") == "other"
    assert accent_group("NA") == "unk" and accent_group("") == "unk"


def test_prepare_segments_accents_and_tags(tmp_path):
    res = prepare_edacc(make_edacc(tmp_path), tmp_path / "data")
    u2s = assert_valid_and_disjoint(res)
    assert res.warnings == [
        "speaker without an accent answer (accent unk): "
        f"{tmp_path}/edacc/edacc_v1.0/linguistic_background.csv:8: EDACC-C04-A"
    ]
    # the official test set is kept; the official dev set is split by conversation
    assert set(u2s["test"].values()) == {"EDACC-C06-A", "EDACC-C06-B"}
    conv = {s.rsplit("-", 1)[0] for s in u2s["dev"].values()}
    assert len(conv) == 1 and not conv & {s.rsplit("-", 1)[0] for s in u2s["train"].values()}
    test = res.splits["test"]
    assert read_table(test / "utt2accent") == {
        "EDACC-C06-000000000": "english",
        "EDACC-C06-000000001": "american",
    }
    assert read_table(test / "utt2gender")["EDACC-C06-000000000"] == "m"
    # tags removed; the <no-speech>-only turn is dropped
    assert read_table(test / "text") == {
        "EDACC-C06-000000000": "hello how are you",
        "EDACC-C06-000000001": "i'm fine thanks",
    }
    seg = read_table(test / "segments")
    assert seg["EDACC-C06-000000001"] == "EDACC-C06 0.400 0.750"
    assert read_table(test / "wav.scp")["EDACC-C06"].endswith("edacc_v1.0/data/EDACC-C06.wav")
    accents = {}
    for path in res.splits.values():
        accents.update(read_table(path / "utt2accent"))
    assert accents["EDACC-C01-000000000"] == "jamaican"
    assert accents["EDACC-C02-000000001"] == "indian"


def test_malformed(tmp_path):
    res = prepare_edacc(make_edacc(tmp_path, malformed=True), tmp_path / "data")
    assert_valid_and_disjoint(res)
    msgs = "\n".join(res.warnings)
    assert "byte-order mark" in msgs and "CRLF" in msgs
    assert "speaker not in linguistic_background.csv (accent unk): EDACC-C03-B" in msgs
    assert "segment of a missing recording (skipped)" in msgs and "EDACC-C07-000000000" in msgs
    accents = {}
    for path in res.splits.values():
        accents.update(read_table(path / "utt2accent"))
    assert accents["EDACC-C03-000000001"] == "unk"
    assert accents["EDACC-C03-000000000"] == "american"


def test_layout_error(tmp_path):
    with pytest.raises(CorpusError, match="expected EdAcc's data/, dev/ and test/"):
        prepare_edacc(tmp_path, tmp_path / "data")
