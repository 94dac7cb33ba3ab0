import io
import logging
import tarfile

import pytest

from moe_asr.corpora.common import (
    CorpusError,
    PrepWarnings,
    Utterance,
    normalize_gender,
    normalize_text,
    read_metadata_text,
    split_speakers,
    write_splits,
)
from moe_asr.corpora.download import download_corpus, download_urls


def test_normalize_text():
    assert normalize_text("Author of the danger trail, Philip Steels, etc.") == (
        "author of the danger trail philip steels etc"
    )
    assert normalize_text("\u201cDon\u2019t\u201d - well-known 'quotes' rock'n'roll!") == (
        "don't well known quotes rock'n'roll"
    )
    assert normalize_text("Café  au lait: 3 ½") == "café au lait 3 1 2"
    assert normalize_text(" ?! ") == ""


def test_normalize_gender():
    assert [normalize_gender(v) for v in ("F", "male_masculine", "", "non-binary", None)] == [
        "f",
        "m",
        "unk",
        "other",
        "unk",
    ]


def test_split_speakers_stratified_deterministic_disjoint():
    spk2group = {f"a{i}": "a" for i in range(5)} | {"b0": "b", "b1": "b"} | {"c0": "c"}
    split = split_speakers(spk2group, seed=3)
    assert split == split_speakers(spk2group, seed=3)
    per = {g: sorted(split[s] for s in spk2group if spk2group[s] == g) for g in "abc"}
    assert per["a"] == ["dev", "test", "train", "train", "train"]
    assert per["b"] == ["test", "train"]
    assert per["c"] == ["train"]
    other = split_speakers(spk2group, seed=4, dev_per_group=2, test_per_group=2)
    assert sorted(other[s] for s in spk2group if spk2group[s] == "a") == [
        "dev",
        "dev",
        "test",
        "test",
        "train",
    ]


def test_read_metadata_text_warns_on_bom_crlf_latin1(tmp_path):
    f = tmp_path / "meta.txt"
    f.write_bytes(b"\xef\xbb\xbfID X\r\nr\xe9sum\xe9\r\n")
    w = PrepWarnings("test")
    text = read_metadata_text(f, w)
    assert text.startswith("ID X\n") and "résumé" in text
    assert any("byte-order mark" in m and str(f) in m for m in w.messages)
    assert any("CRLF" in m for m in w.messages)
    assert any("Latin-1" in m for m in w.messages)


def _utt(i, spk, path):
    return Utterance(f"{spk}-{i}", spk, path, "hello", accent="x")


def test_write_splits_refuses_foreign_dirs_and_replaces_own(tmp_path, caplog):
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")
    splits = {
        "train": [_utt(1, "s1", audio)],
        "dev": [_utt(2, "s2", audio)],
        "test": [_utt(3, "s3", audio)],
    }
    out = tmp_path / "data"
    (out / "dev").mkdir(parents=True)
    (out / "dev" / "text").write_text("user data\n")
    w = PrepWarnings("test")
    w.add("kind of problem", "item-42")
    with caplog.at_level(logging.WARNING, logger="moe_asr.corpora.test"):
        with pytest.raises(CorpusError, match="dev: already holds files"):
            write_splits("test", splits, out, w)
    assert "item-42" in caplog.text  # warnings are logged before the error
    assert not (out / "train").exists()  # nothing written when any split dir is foreign
    assert (out / "dev" / "text").read_text() == "user data\n"
    res = write_splits("test", splits, out, PrepWarnings("test"), overwrite=True)
    assert (res.splits["dev"] / "text").read_text() == "s2-2 hello\n"
    splits["train"].append(_utt(4, "s1", audio))
    res = write_splits("test", splits, out, PrepWarnings("test"))  # our own dir: replaced
    assert res.counts["train"] == 2
    assert (out / "train" / "utt2accent").read_text() == "s1-1 x\ns1-4 x\n"


def test_nothing_usable_names_the_warnings_that_emptied_it(tmp_path):
    w = PrepWarnings("test")
    w.add("audio without a transcript (skipped)", "/c/x.wav")
    with pytest.raises(CorpusError, match=r"no usable utterance in any split.*/c/x.wav"):
        write_splits("test", {"train": [], "dev": [], "test": []}, tmp_path, w)
    with pytest.raises(CorpusError, match="no audio file with a transcript was found"):
        write_splits("test", {"train": [], "dev": [], "test": []}, tmp_path, PrepWarnings("t"))


def _tar(path, members):
    with tarfile.open(path, "w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def test_download_shows_url_fetches_once_and_extracts(tmp_path, caplog):
    src = tmp_path / "dev-clean.tar.gz"
    _tar(src, {"LibriSpeech/SPEAKERS.TXT": b";x\n"})
    url = src.as_uri()
    target = tmp_path / "corpus"
    with caplog.at_level(logging.WARNING, logger="moe_asr.corpora.download"):
        download_corpus("librispeech", target, urls=(url,))
    assert f"downloading {url}" in caplog.text
    assert (target / "LibriSpeech" / "SPEAKERS.TXT").read_bytes() == b";x\n"
    src.unlink()  # a second call neither fetches nor extracts again
    download_corpus("librispeech", target, urls=(url,))


def test_download_refusals(tmp_path):
    for name in ("l2arctic", "commonvoice", "aesrc"):
        with pytest.raises(CorpusError, match="cannot be downloaded automatically"):
            download_urls(name)
    assert download_urls("librispeech", ("train-clean-360",))[-1].endswith("train-clean-360.tar.gz")
    evil = tmp_path / "evil.tar.gz"
    _tar(evil, {"../outside.txt": b"x"})
    with pytest.raises(CorpusError, match="outside"):
        download_corpus("librispeech", tmp_path / "c", urls=(evil.as_uri(),))
    assert not (tmp_path / "outside.txt").exists()
