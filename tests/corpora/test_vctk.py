import pytest
from corpora_fixtures import assert_valid_and_disjoint, make_vctk, read_table

from moe_asr.corpora import CorpusError, prepare_vctk
from moe_asr.corpora.common import PrepWarnings
from moe_asr.corpora.vctk import read_speaker_info


@pytest.mark.parametrize("layout", ["0.92", "old"])
def test_prepare_both_layouts(tmp_path, layout):
    res = prepare_vctk(make_vctk(tmp_path, layout=layout), tmp_path / "data")
    u2s = assert_valid_and_disjoint(res)
    # p315 has no transcripts: reported, left out
    assert res.warnings == ["speaker without transcripts (left out): p315"]
    speakers = {s for t in u2s.values() for s in t.values()}
    assert "p315" not in speakers and len(speakers) == 8
    accent = {}
    for path in res.splits.values():
        accent.update(read_table(path / "utt2accent"))
    assert accent["p225_001"] == "english"
    assert accent["p234_002"] == "scottish"
    assert accent["p238_001"] == "northern_irish"
    assert accent["p294_001"] == "american"
    # 4 English speakers: one test, one dev, two train; 2 Scottish: one test, one train;
    # a single-speaker accent stays in train
    by_split = {s: {accent[u] for u in t} for s, t in u2s.items()}
    assert by_split["dev"] == {"english"}
    assert by_split["test"] == {"english", "scottish"}
    assert {"american", "northern_irish"} <= by_split["train"]
    text = {}
    for path in res.splits.values():
        text.update(read_table(path / "text"))
    assert text["p226_002"] == "ask her to bring these things with her from the store"
    wav = {}
    for path in res.splits.values():
        wav.update(read_table(path / "wav.scp"))
    suffix = "_mic1.flac" if layout == "0.92" else ".wav"
    assert all(v.endswith(suffix) for v in wav.values())


def test_mic2_and_seeded_split(tmp_path):
    corpus = make_vctk(tmp_path)
    a = prepare_vctk(corpus, tmp_path / "a", mic="mic2")
    wav = read_table(a.splits["train"] / "wav.scp")
    assert all(v.endswith("_mic2.flac") for v in wav.values())
    b = prepare_vctk(corpus, tmp_path / "b", mic="mic2")
    assert read_table(a.splits["test"] / "utt2spk") == read_table(b.splits["test"] / "utt2spk")


def test_malformed_speaker_info(tmp_path):
    res = prepare_vctk(make_vctk(tmp_path, malformed=True), tmp_path / "data")
    assert_valid_and_disjoint(res)
    msgs = "\n".join(res.warnings)
    assert "byte-order mark" in msgs and "CRLF" in msgs
    assert (
        "speaker-info row without an accent (accent unk)" in msgs
        and "speaker-info.txt:8: p238" in msgs
    )
    assert "speaker in speaker-info.txt without audio: p999" in msgs
    assert "audio without a transcript (skipped)" in msgs and "p225_003_mic1.flac" in msgs
    accent = {}
    for path in res.splits.values():
        accent.update(read_table(path / "utt2accent"))
    assert accent["p238_001"] == "unk"
    assert accent["p225_001"] == "english"  # the BOM did not eat the header


def test_bad_header_and_missing_layout(tmp_path):
    bad = tmp_path / "speaker-info.txt"
    bad.write_text("SPEAKER AGE\np225 23\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="speaker-info.txt:1: expected the header"):
        read_speaker_info(bad, PrepWarnings("vctk"))
    (tmp_path / "txt").mkdir()
    bad.write_text("ID  AGE  GENDER  ACCENTS  REGION\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="neither wav48_silence_trimmed"):
        prepare_vctk(tmp_path, tmp_path / "data")
