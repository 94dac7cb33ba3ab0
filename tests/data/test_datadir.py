import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from moe_asr.cli import main
from moe_asr.data.datadir import (
    DataDir,
    DataDirError,
    combine_datadirs,
    fix_datadir,
    load_datadir,
    read_table,
    subset_datadir,
    validate_datadir,
    write_datadir,
)


def make_clean_dir(root: Path, n: int = 4) -> Path:
    """A valid data dir with real audio files, two speakers and accent/noise labels."""
    wavs = root / "wav"
    wavs.mkdir(parents=True, exist_ok=True)
    dd = DataDir()
    for i in range(n):
        spk = f"spk{i % 2}"
        utt = f"{spk}-utt{i}"
        path = wavs / f"{utt}.wav"
        sf.write(path, np.zeros(1600, dtype=np.float32), 16000)
        dd.wav_scp[utt] = str(path)
        dd.text[utt] = f"hello world {i}"
        dd.utt2spk[utt] = spk
    dd.groups["accent"] = {u: ("us" if i % 2 else "gb") for i, u in enumerate(sorted(dd.utt2spk))}
    dd.groups["noise"] = {u: "clean" for u in dd.utt2spk}
    return write_datadir(dd, root / "data")


def test_clean_dir_validates_and_roundtrips(tmp_path):
    d = make_clean_dir(tmp_path)
    assert validate_datadir(d, check_audio=True) == []
    dd = load_datadir(d)
    assert dd.utt_ids == sorted(dd.utt2spk)
    assert set(dd.groups) == {"accent", "noise"}
    out = write_datadir(dd, tmp_path / "copy")
    for name in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2accent", "utt2noise"):
        assert (out / name).read_text() == (d / name).read_text()
    assert main(["validate-data", str(d), "--check-audio"]) == 0


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def plant_defects(d: Path) -> dict[str, str]:
    """Plant five defects; return defect -> the utterance it concerns."""
    # 1 unsorted file
    text = _lines(d / "text")
    (d / "text").write_text("\n".join([text[1], text[0], *text[2:]]) + "\n")
    # 2 utterance without audio
    wav = _lines(d / "wav.scp")
    (d / "wav.scp").write_text("\n".join(wav[:-1]) + "\n")
    # 3 speaker mismatch: spk2utt lists an utterance under the wrong speaker
    s2u = _lines(d / "spk2utt")
    first_utt_of_spk1 = s2u[1].split()[1]
    s2u[0] += " " + first_utt_of_spk1
    (d / "spk2utt").write_text("\n".join(s2u) + "\n")
    # 4 missing accent entry
    acc = _lines(d / "utt2accent")
    (d / "utt2accent").write_text("\n".join(acc[1:]) + "\n")
    # 5 empty transcript
    text = _lines(d / "text")
    text[2] = text[2].split()[0]
    (d / "text").write_text("\n".join(text) + "\n")
    return {"no_audio": wav[-1].split()[0], "empty": text[2]}


def test_planted_defects_are_each_reported_with_file_and_line(tmp_path, capsys):
    d = make_clean_dir(tmp_path)
    bad = plant_defects(d)
    problems = validate_datadir(d)
    text = "\n".join(map(str, problems))
    assert f"{d}/text:2: not sorted" in text
    assert "no audio in wav.scp" in text and f"{d}/utt2spk:4:" in text
    assert f"{d}/spk2utt:1: spk0: speaker mismatch" in text
    assert f"{d}/utt2accent: spk0-utt0: missing entry" in text
    assert f"{d}/text:3: {bad['empty']}: empty transcript" in text
    assert main(["validate-data", str(d)]) == 1
    out = capsys.readouterr().out
    assert "not sorted" in out and "empty transcript" in out


def test_check_audio_and_pipes(tmp_path):
    d = make_clean_dir(tmp_path)
    wav = _lines(d / "wav.scp")
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    utt0 = wav[0].split()[0]
    wav[0] = f"{utt0} {bad}"
    wav[1] = wav[1].split()[0] + " sox foo.wav -t wav - |"
    (d / "wav.scp").write_text("\n".join(wav) + "\n")
    problems = "\n".join(map(str, validate_datadir(d, check_audio=True)))
    assert f"wav.scp:1: {utt0}: {bad}: not a readable audio file" in problems
    # the advice is to convert the audio: no command that reads audio takes --allow-pipes
    assert "wav.scp:2:" in problems and "convert the audio to files" in problems
    assert "--allow-pipes" not in problems
    with pytest.raises(DataDirError, match="convert the audio to files") as e:
        load_datadir(d)
    assert "allow-pipes" not in str(e.value)
    # --allow-pipes never makes such a dir OK: a warning, and an error when audio is checked
    allowed = [p for p in validate_datadir(d, allow_pipes=True) if "pipeline" in p.what]
    assert len(allowed) == 1 and not allowed[0].fatal and "refuse it" in allowed[0].what
    checked = validate_datadir(d, allow_pipes=True, check_audio=True)
    assert any("pipeline" in p.what and p.fatal for p in checked)


def test_fix_data_backs_up_and_loses_nothing(tmp_path, capsys):
    d = make_clean_dir(tmp_path, n=6)
    bad = plant_defects(d)
    originals = {f.name: f.read_text() for f in d.iterdir() if f.is_file()}
    assert main(["fix-data", str(d)]) == 0
    out = capsys.readouterr().out
    assert f"dropped {bad['no_audio']}: no audio in wav.scp" in out
    assert f"dropped {bad['empty']}: empty transcript" in out
    backups = list((d / ".backup").iterdir())
    assert len(backups) == 1
    for name, content in originals.items():
        assert (backups[0] / name).read_text() == content
    # every original line is in the backup, and the fixed dir is a clean subset
    assert validate_datadir(d) == []
    dropped = dict(line.split(maxsplit=1) for line in _lines(backups[0] / "dropped"))
    assert set(dropped) == {bad["no_audio"], bad["empty"]}
    fixed = load_datadir(d)
    assert set(fixed.utt2spk) | set(dropped) == {
        line.split()[0] for line in originals["utt2spk"].splitlines()
    }
    assert fixed.groups["accent"]["spk0-utt0"] == "unk"  # missing label filled, not dropped
    # a second fix keeps the first backup
    fix_datadir(d)
    assert len(list((d / ".backup").iterdir())) == 2


def test_read_table_errors_name_file_and_line(tmp_path):
    f = tmp_path / "utt2spk"
    f.write_bytes(b"a s1\nb\n")
    with pytest.raises(DataDirError, match=r"utt2spk:2: b has no value"):
        read_table(f)
    f.write_bytes(b"a s1\na s2\n")
    with pytest.raises(DataDirError, match=r"utt2spk:2: duplicate id a"):
        read_table(f)
    f.write_bytes(b"a s1\nb \xff\xfe\n")
    with pytest.raises(DataDirError, match=r"utt2spk:2: not valid UTF-8"):
        read_table(f)
    f.write_bytes(b"\xef\xbb\xbfa s1\r\nb s2\r\n")
    assert read_table(f) == {"a": "s1", "b": "s2"}  # tolerated when reading...
    reported = "\n".join(map(str, validate_datadir(tmp_path)))
    assert f"{f}:1: starts with a UTF-8 byte-order mark" in reported  # ...reported by validate
    assert f"{f}:1: CRLF line ending" in reported


def test_subset_and_combine(tmp_path):
    dd = load_datadir(make_clean_dir(tmp_path / "a"))
    sub = subset_datadir(dd, ["spk0-utt0", "spk1-utt1"])
    assert sub.utt_ids == ["spk0-utt0", "spk1-utt1"]
    assert set(sub.wav_scp) == set(sub.text) == set(sub.groups["accent"]) == set(sub.utt_ids)
    other = DataDir(wav_scp={"x-1": "/x.wav"}, text={"x-1": "hi"}, utt2spk={"x-1": "x"}, groups={})
    both = combine_datadirs([sub, other])
    assert both.utt_ids == ["spk0-utt0", "spk1-utt1", "x-1"]
    assert both.groups["accent"]["x-1"] == "unk"
    clash = DataDir(wav_scp={"x-1": "/y.wav"}, text={"x-1": "hi"}, utt2spk={"x-1": "x"})
    with pytest.raises(DataDirError, match="x-1"):
        combine_datadirs([other, clash])


def test_cli_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "moe_asr.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in ("validate-data", "fix-data"):
        assert cmd in out
