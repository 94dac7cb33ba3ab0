"""Result files of decode, score and report: never replaced without --overwrite (with it,
other files are kept), and a full disk is a one-line error that leaves no 0-byte result."""

from __future__ import annotations

import pytest

from moe_asr.cli import main
from tests.decode_model import TEXTS, train_tiny_package, write_datadir_of
from tests.test_files import full_disk


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    model = train_tiny_package(root / "exp", steps=1)  # the mechanism, not the accuracy
    return {"model": model, "data": write_datadir_of(root, TEXTS)}


def _decode(setup, out, *extra):
    args = ["decode", "--model", str(setup["model"]), "--data", str(setup["data"])]
    return main([*args, "--out", str(out), "--no-progress", *extra])


def _score(setup, out, *extra):
    ref = setup["data"] / "text"
    return main(
        [
            "score",
            "--ref",
            str(ref),
            "--hyp",
            str(out / "hyp.txt"),
            "--out",
            str(out),
            "--bootstrap",
            "0",
            *extra,
        ]
    )


def test_decode_refuses_a_users_hyp_and_overwrite_keeps_other_files(setup, tmp_path, capsys):
    out = tmp_path / "dec"
    out.mkdir()
    (out / "hyp.txt").write_text("mine my own words\n")
    (out / "notes.txt").write_text("keep me\n")
    assert _decode(setup, out) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hyp.txt" in err and "--overwrite" in err
    assert (out / "hyp.txt").read_text() == "mine my own words\n"
    assert not (out / "decode.json").exists()
    assert _decode(setup, out, "--overwrite") == 0
    assert (out / "hyp.txt").read_text() != "mine my own words\n"
    assert (out / "notes.txt").read_text() == "keep me\n"
    # a second decode into the same dir is refused as well: its own results count
    assert _decode(setup, out) == 1


def test_score_refuses_its_earlier_results_and_never_touches_hyp(setup, tmp_path, capsys):
    out = tmp_path / "dec"
    assert _decode(setup, out) == 0
    hyp = (out / "hyp.txt").read_text()
    assert _score(setup, out) == 0
    (out / "wer.json").write_text("{}\n")  # e.g. a result the user edited
    capsys.readouterr()
    assert _score(setup, out) == 1
    captured = capsys.readouterr()
    assert "wer.json" in captured.err and "--overwrite" in captured.err
    assert captured.out == ""  # refused before scoring: no table printed
    assert (out / "wer.json").read_text() == "{}\n"
    assert _score(setup, out, "--overwrite") == 0
    assert (out / "wer.json").read_text() != "{}\n" and (out / "hyp.txt").read_text() == hyp


def test_report_refuses_an_earlier_report(setup, tmp_path, capsys):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "report.html").write_text("<p>mine</p>")
    (out / "notes.txt").write_text("keep me\n")
    args = ["report", "--model", str(setup["model"]), "--data", str(setup["data"])]
    assert main([*args, "--out", str(out)]) == 1
    assert "report.html" in capsys.readouterr().err
    assert (out / "report.html").read_text() == "<p>mine</p>"
    assert main([*args, "--out", str(out), "--overwrite"]) == 0
    assert "<p>mine</p>" not in (out / "report.html").read_text()
    assert (out / "notes.txt").read_text() == "keep me\n"


def _no_empty_files(d):
    return [
        p.name
        for p in d.iterdir()
        if p.is_file() and p.stat().st_size == 0 and p.name != "errors.txt"
    ]


def test_full_disk_in_decode_and_score_is_one_line_and_leaves_no_empty_result(
    setup, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "dec"
    full_disk(monkeypatch, only="decode.json")  # hyp.txt etc. are written, decode.json not
    assert _decode(setup, out) == 1
    err = capsys.readouterr().err
    assert err.startswith("moe-asr decode: error: ") and err.count("\n") == 1
    assert "decode.json: cannot write (no space left on device" in err
    assert not (out / "decode.json").exists() and not _no_empty_files(out)
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    monkeypatch.undo()
    assert _decode(setup, out, "--overwrite") == 0
    full_disk(monkeypatch)
    assert _score(setup, out) == 1
    err = capsys.readouterr().err
    assert err.startswith("moe-asr score: error: ") and "no space left on device" in err
    assert not (out / "wer.json").exists() and not _no_empty_files(out)
