"""Partial and small corpora: what can be prepared is, an empty split is warned about with
its cause, and every corpus lets the user choose dev/test speakers."""

import shutil

import pytest
from corpora_fixtures import (
    assert_valid_and_disjoint,
    make_commonvoice,
    make_edacc,
    make_l2arctic,
    make_librispeech,
    read_table,
    tone,
    write,
)

from moe_asr.cli import main
from moe_asr.corpora import (
    CorpusError,
    prepare_aesrc,
    prepare_commonvoice,
    prepare_edacc,
    prepare_librispeech,
    prepare_vctk,
)


def _small_vctk(root):
    """VCTK 0.92 layout, 2 speakers in each of two accents (the case that used to abort)."""
    corpus = root / "VCTK-Corpus-0.92"
    rows = ["ID  AGE  GENDER  ACCENTS  REGION COMMENTS "]
    for spk, accent in (
        ("p225", "English"),
        ("p226", "English"),
        ("p234", "Scottish"),
        ("p237", "Scottish"),
    ):
        rows.append(f"{spk}  23  F    {accent}    Somewhere")
        for n in ("001", "002"):
            tone(corpus / "wav48_silence_trimmed" / spk / f"{spk}_{n}_mic1.flac")
            write(corpus / "txt" / spk / f"{spk}_{n}.txt", "Please call Stella.\n")
    write(corpus / "speaker-info.txt", "\n".join(rows) + "\n")
    return corpus


def _speakers(path):
    return set(read_table(path / "utt2spk").values())


def test_vctk_two_speakers_per_accent_writes_train_test_and_warns_about_dev(tmp_path, caplog):
    res = prepare_vctk(_small_vctk(tmp_path), tmp_path / "data")
    u2s = assert_valid_and_disjoint(res)
    assert sorted(res.splits) == ["test", "train"]
    assert not (tmp_path / "data" / "dev").exists()
    assert len(set(u2s["test"].values())) == 2 and len(set(u2s["train"].values())) == 2
    (warning,) = [w for w in res.warnings if w.startswith("dev split is empty")]
    assert "accent with >= 3 speakers" in warning and "--dev-speakers" in warning
    assert "dev split is empty" in caplog.text  # logged, so the CLI shows it on stderr


def test_vctk_speakers_chosen_by_option(tmp_path, capsys):
    corpus = _small_vctk(tmp_path)
    out = tmp_path / "data"
    args = ["prepare-corpus", "vctk", str(corpus), str(out)]
    assert main([*args, "--dev-speakers", "p226,p237", "--test-speakers", "p225"]) == 0
    assert _speakers(out / "dev") == {"p226", "p237"}
    # the others are still split per accent; p234 is the last scottish one: it stays in train
    assert _speakers(out / "test") == {"p225"} and _speakers(out / "train") == {"p234"}
    # --test-per-accent 0: only the listed speakers are held out
    args2 = [*args, "--overwrite", "--dev-speakers", "p226", "--test-speakers", "p237"]
    assert main([*args2, "--test-per-accent", "0", "--dev-per-accent", "0"]) == 0
    assert _speakers(out / "train") == {"p225", "p234"}
    assert _speakers(out / "dev") == {"p226"} and _speakers(out / "test") == {"p237"}
    # unknown or doubly listed speakers are named
    assert main([*args, "--overwrite", "--dev-speakers", "p999"]) == 1
    assert "p999" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--dev-speakers", "p225", "--test-speakers", "p225"]) == 1
    assert "both --dev-speakers and --test-speakers" in capsys.readouterr().err


def test_a_stale_split_of_an_earlier_run_is_not_left_behind(tmp_path):
    corpus = _small_vctk(tmp_path)
    out = tmp_path / "data"
    prepare_vctk(corpus, out, dev_speakers=("p226",))
    assert (out / "dev" / "text").exists()
    prepare_vctk(corpus, out)  # dev comes out empty now
    assert not (out / "dev" / "text").exists() and not (out / "dev" / "wav.scp").exists()


def test_aesrc_small_accents(tmp_path):
    corpus = tmp_path / "AESRC2020"
    for spk in ("G1", "G2"):
        tone(corpus / "US" / spk / f"{spk}S1.wav")
        write(corpus / "US" / spk / f"{spk}S1.txt", "hello there\n")
    res = prepare_aesrc(corpus, tmp_path / "data")
    assert sorted(res.splits) == ["test", "train"]
    assert any(w.startswith("dev split is empty") for w in res.warnings)
    res = prepare_aesrc(corpus, tmp_path / "d2", dev_speakers=("us-G1",), test_per_accent=0)
    assert _speakers(res.splits["dev"]) == {"us-G1"} and sorted(res.splits) == ["dev", "train"]


def test_l2arctic_speakers_from_the_cli(tmp_path, caplog):
    corpus = make_l2arctic(tmp_path)
    out = tmp_path / "data"
    args = ["prepare-corpus", "l2arctic", str(corpus), str(out)]
    assert main([*args, "--test-speakers", "ABA,BWC", "--dev-speakers", "ASI"]) == 0
    assert _speakers(out / "test") == {"ABA", "BWC"} and _speakers(out / "dev") == {"ASI"}
    # the spontaneous-speech part is skipped, and that is said
    assert "suitcase_corpus/ (spontaneous speech, not segmented) is not used" in caplog.text


def test_l2arctic_partial_tree_without_the_fixed_dev_speakers(tmp_path):
    from moe_asr.corpora import prepare_l2arctic
    from moe_asr.corpora.l2arctic import DEV_SPEAKERS

    corpus = make_l2arctic(tmp_path)
    for spk in DEV_SPEAKERS:
        shutil.rmtree(corpus / spk, ignore_errors=True)
    res = prepare_l2arctic(corpus, tmp_path / "data")
    assert "dev" not in res.splits and {"train", "test"} <= set(res.splits)
    (warning,) = [w for w in res.warnings if w.startswith("dev split is empty")]
    assert "--dev-speakers" in warning


def test_edacc_one_official_dev_conversation(tmp_path):
    root = make_edacc(tmp_path)
    dev = root / "edacc_v1.0" / "dev"
    for name in ("segments", "text", "utt2spk"):
        lines = (dev / name).read_text().splitlines()
        (dev / name).write_text("\n".join(x for x in lines if "EDACC-C01" in x) + "\n")
    res = prepare_edacc(root, tmp_path / "data")
    assert sorted(res.splits) == ["test", "train"]
    (warning,) = [w for w in res.warnings if w.startswith("dev split is empty")]
    assert "one conversation (EDACC-C01)" in warning
    res = prepare_edacc(root, tmp_path / "d2", dev_speakers=("EDACC-C01-B",))
    assert _speakers(res.splits["dev"]) == {"EDACC-C01-B"}
    assert _speakers(res.splits["train"]) == {"EDACC-C01-A"}
    assert_valid_and_disjoint(res)


def test_librispeech_missing_test_clean_and_layout_check(tmp_path):
    corpus = make_librispeech(tmp_path)
    shutil.rmtree(corpus / "test-clean")
    res = prepare_librispeech(tmp_path, tmp_path / "data")
    assert "test" not in res.splits and {"train", "dev", "test_other"} <= set(res.splits)
    (warning,) = [w for w in res.warnings if w.startswith("test split is empty")]
    assert "test-clean/ not found" in warning
    res = prepare_librispeech(tmp_path, tmp_path / "d2", test_speakers=("26",))
    assert _speakers(res.splits["test"]) == {"26"} and _speakers(res.splits["train"]) == {"19"}
    # no subset dir at all: the layout is named, not an empty split
    (tmp_path / "other").mkdir()
    with pytest.raises(CorpusError, match="no LibriSpeech subset directory found.*dev-clean"):
        prepare_librispeech(tmp_path / "other", tmp_path / "d3")


def test_commonvoice_missing_dev_tsv_and_speaker_option(tmp_path):
    root = make_commonvoice(tmp_path)
    tsv = next(root.rglob("dev.tsv"))
    tsv.unlink()
    res = prepare_commonvoice(root, tmp_path / "data")
    (warning,) = [w for w in res.warnings if w.startswith("dev split is empty")]
    assert "dev.tsv is missing" in warning
    spk = sorted(_speakers(res.splits["train"]))[0]
    res = prepare_commonvoice(root, tmp_path / "d2", dev_speakers=(spk,))
    assert _speakers(res.splits["dev"]) == {spk}
