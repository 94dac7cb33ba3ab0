"""moe_asr.files: atomic writes (disk full keeps the old file), the overwrite check, the
directory lock (second holder refused and named, stale lock taken over), and temp cleanup
that spares live writers."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from moe_asr import files
from moe_asr.files import (
    DirLock,
    LockError,
    OutputExistsError,
    WriteError,
    atomic_open,
    atomic_write_text,
    check_outputs,
    remove_stale_temps,
)


class _FullDisk:
    """A file object whose writes fail like a full disk (after the file was created)."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def full_disk(monkeypatch, only: str = ""):
    """Make every atomic write (of names containing ``only``) fail with ENOSPC."""
    real_open = open

    def fake_open(path, *a, **k):
        f = real_open(path, *a, **k)
        return _FullDisk(f) if only in str(path) else f

    monkeypatch.setattr(files, "open", fake_open, raising=False)


def test_atomic_write_replaces_and_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "wer.json"
    atomic_write_text(path, "old\n")  # parent created
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n"
    full_disk(monkeypatch)
    with pytest.raises(WriteError, match=r"wer.json: cannot write \(no space left on device"):
        atomic_write_text(path, "newer\n")
    assert path.read_text() == "new\n"
    assert [p.name for p in path.parent.iterdir()] == ["wer.json"]  # no temp, no 0-byte file
    with pytest.raises(WriteError):
        atomic_write_text(tmp_path / "fresh.txt", "x")
    assert not (tmp_path / "fresh.txt").exists()


def test_an_error_inside_atomic_open_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_open(tmp_path / "x.txt") as f:
        f.write("partial")
        raise RuntimeError("writer bug")
    assert list(tmp_path.iterdir()) == []


def test_write_error_is_one_line_user_error_and_an_oserror(tmp_path, monkeypatch):
    from moe_asr.errors import UserError

    full_disk(monkeypatch)
    with pytest.raises(WriteError) as e:
        atomic_write_text(tmp_path / "a", "x")
    assert isinstance(e.value, UserError) and isinstance(e.value, OSError)
    assert "\n" not in str(e.value)


def test_check_outputs(tmp_path):
    out = tmp_path / "dec"
    check_outputs(out, ["hyp.txt"], False)  # nothing there yet
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    check_outputs(out, ["hyp.txt"], False)  # other files do not count
    (out / "hyp.txt").write_text("user's")
    with pytest.raises(
        OutputExistsError,
        match=r"holds results of an earlier run \(hyp.txt\).*"
        r"--overwrite",
    ):
        check_outputs(out, ["hyp.txt", "decode.json"], False)
    check_outputs(out, ["hyp.txt"], True)
    assert (out / "hyp.txt").read_text() == "user's"  # the check itself deletes nothing
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputExistsError, match="not a directory"):
        check_outputs(tmp_path / "f", ["hyp.txt"], True)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    exp = tmp_path / "exp"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from moe_asr.files import DirLock; "
            "l = DirLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)",
            str(exp),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockError, match=rf"in use by another training run, PID {holder.pid}"):
            DirLock(exp, what="training run").acquire()
        assert f" {holder.pid} " in (exp / ".lock").read_text()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock is stale, named, and taken over
    lock = DirLock(exp)
    with lock:
        assert lock.stale is not None and lock.stale.endswith(f" {holder.pid}")
        assert f" {os.getpid()} " in (exp / ".lock").read_text()
    assert not (exp / ".lock").exists()  # released on exit


def test_lock_of_another_host_is_refused_with_the_file_to_delete(tmp_path):
    (tmp_path / ".lock").write_text("otherhost 123 2026-01-01T00:00:00\n")
    with pytest.raises(LockError, match=r"PID 123 on host otherhost.*delete .*\.lock"):
        DirLock(tmp_path).acquire()


def test_lock_made_dir_is_removed_when_nothing_was_written(tmp_path):
    with DirLock(tmp_path / "new"):
        assert (tmp_path / "new" / ".lock").exists()
    assert not (tmp_path / "new").exists()
    with DirLock(tmp_path / "kept"):
        (tmp_path / "kept" / "config.yaml").write_text("x")
    assert (tmp_path / "kept" / "config.yaml").exists()


def test_stale_temp_cleanup_spares_live_writers(tmp_path):
    host = files._host()
    live = tmp_path / f".last.pt.tmp.{host}.{os.getpid()}"
    dead = tmp_path / f".last.pt.tmp.{host}.{_dead_pid()}"
    other = tmp_path / f".last.pt.tmp.otherhost.{_dead_pid()}"
    unrelated = tmp_path / ".notes.tmp"
    legacy = tmp_path / f".epoch-1.pt.tmp{_dead_pid()}"  # the name before hosts were added
    for p in (live, dead, other, unrelated, legacy):
        p.write_text("x")
    assert sorted(remove_stale_temps(tmp_path)) == sorted([dead, legacy])
    assert live.exists() and other.exists() and unrelated.exists() and not dead.exists()
