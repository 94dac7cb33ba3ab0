"""Writing files: the one atomic-write helper, the overwrite policy, experiment-dir locks.

- ``atomic_open`` / ``atomic_write_text`` / ``atomic_write_bytes``: write to a temporary
  file in the target's directory, fsync it, rename it over the target, fsync the directory.
  A crash leaves the old file or the new one, never a partial or 0-byte result. The
  temporary file is named ``.<name>.tmp.<host>.<pid>`` so that ``remove_stale_temps`` can
  tell a dead writer's leftover from a file another process is still writing.
- ``check_outputs``: a command refuses to replace its earlier results unless
  ``overwrite``; with it, only the files it writes are replaced (others are kept).
- ``DirLock``: an exclusive lock file (``host pid``) that one run holds on a directory;
  a second run is refused with the first named, a lock of a dead process is taken over.

A failed write (disk full, permission, ...) is a ``WriteError`` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from moe_asr.errors import UserError

__all__ = [
    "WriteError",
    "OutputExistsError",
    "LockError",
    "atomic_open",
    "atomic_path",
    "atomic_write_text",
    "atomic_write_bytes",
    "remove_stale_temps",
    "check_outputs",
    "DirLock",
]

log = logging.getLogger("moe_asr.files")

LOCK_NAME = ".lock"
# ".<name>.tmp.<host>.<pid>"; also ".<name>.tmp<pid>" of releases before the host was added
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp(?:\.(?P<host>[^.]+)\.)?(?P<pid>\d+)$")


class WriteError(UserError, OSError):
    """A file could not be written (disk full, no permission, ...); the target is unchanged.

    Also an ``OSError``, so code that handles I/O errors keeps handling it."""


class OutputExistsError(UserError):
    """An output dir holds results of an earlier run and ``--overwrite`` was not given."""


class LockError(UserError):
    """A directory is locked by another live run."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp.{_host()}.{os.getpid()}")


def _write_error(path: Path, err: OSError) -> WriteError:
    if err.errno == errno.ENOSPC:
        why = "no space left on device; free some space, then run the command again"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = f"{err.strerror}; choose a writable location"
    else:
        why = err.strerror or str(err) or type(err).__name__
    return WriteError(f"{path}: cannot write ({why}); the previous file, if any, is unchanged")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # some filesystems do not open directories; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", encoding: str = "utf-8", *, durable: bool = True
) -> Iterator[IO[Any]]:
    """``with atomic_open(path, "w"|"wb") as f: ...``: ``path`` appears complete or not at all.

    The parent dir is created. Any OSError (also one raised by the code writing to ``f``)
    becomes a WriteError naming ``path``; the temporary file is removed in every case.
    ``durable=False`` skips the fsyncs (bulk data such as thousands of synthesized wavs):
    a killed process still never leaves a partial file, only a power loss could.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    kwargs = {"encoding": encoding} if mode == "w" else {}
    with atomic_path(path, durable=durable) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


@contextlib.contextmanager
def atomic_path(path: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """``with atomic_path(out) as tmp: tool.save(tmp)``: for writers that take a path, not a
    file object (ONNX, TorchScript); ``atomic_open`` is built on it. ``tmp`` is fsynced
    (``durable``) and renamed over ``path`` on success, removed on failure; any OSError
    becomes a WriteError naming ``path``."""
    path = Path(path)
    tmp = _temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if isinstance(e, WriteError):
            raise
        raise _write_error(path, e) from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    if durable:
        _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete the temporary files of ``atomic_open`` whose writer (on this host) is dead.

    Files of live writers, of other hosts, and anything not named like our temporaries
    are left alone. Returns the removed paths."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for p in sorted(directory.iterdir()):
        m = _TEMP_RE.match(p.name)
        host = m["host"] if m and m["host"] is not None else _host()
        if not m or host != _host() or _pid_alive(int(m["pid"])) or not p.is_file():
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def check_outputs(
    out_dir: str | Path, names: Iterable[str], overwrite: bool, *, option: str = "--out"
) -> None:
    """Refuse (OutputExistsError) when ``out_dir`` holds any of ``names`` and not ``overwrite``.

    The message names the files found and says what to do; with ``overwrite`` nothing is
    deleted here: the command replaces its own files and leaves every other file alone."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(
            f"{out_dir}: exists and is not a directory; choose another {option}"
        )
    if overwrite or not out_dir.is_dir():
        return
    found = [n for n in names if (out_dir / n).exists()]
    if found:
        shown = ", ".join(found[:6]) + (f" (+{len(found) - 6} more)" if len(found) > 6 else "")
        raise OutputExistsError(
            f"{out_dir}: holds results of an earlier run ({shown}); pass --overwrite to replace "
            f"them (other files in it are kept), or choose another {option}"
        )


class DirLock:
    """Exclusive lock of a directory by this process: ``DIR/.lock`` holding ``host pid``.

    ``acquire`` refuses (LockError) while another live process holds the lock, naming it;
    a lock left by a dead process on this host is reported (warning) and taken over. A lock
    of another host cannot be checked: it is refused, naming the file to delete if that run
    is gone. Use as a context manager; ``release`` removes the lock file, and the directory
    too when the lock made it and it is otherwise empty.
    """

    def __init__(self, directory: str | Path, *, what: str = "run") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.what = what
        self.stale: str | None = None  # "host pid" of a dead holder that was taken over
        self._held = False
        self._made_dir = False

    def _read(self) -> tuple[str, int, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            return "", 0, ""
        parts = text.split()
        pid = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        return (parts[0] if parts else ""), pid, " ".join(parts[2:])

    def acquire(self) -> DirLock:
        if not self.directory.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            self._made_dir = True
        me = f"{_host()} {os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                host, pid, since = self._read()
                if host == _host() and not _pid_alive(pid):
                    self.stale = f"{host} {pid}"
                    log.warning(
                        "%s: stale lock of %s PID %d on %s (the process is dead); taking it over",
                        self.directory,
                        self.what,
                        pid,
                        host,
                    )
                    # rename first: of two runs that find the same stale lock, one wins
                    aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
                    with contextlib.suppress(OSError):
                        os.replace(self.path, aside)
                        aside.unlink()
                    continue
                where = f"PID {pid} on host {host}" if pid else "an unknown process"
                started = f" (started {since})" if since else ""
                hint = (
                    f"if that run is gone, delete {self.path}"
                    if host != _host() or not pid
                    else "wait for it to finish or stop it"
                )
                raise LockError(
                    f"{self.directory}: in use by another {self.what}, {where}{started}; "
                    f"{hint}, or choose another directory"
                ) from None
            except OSError as e:
                raise _write_error(self.path, e) from e
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(me)
            self._held = True
            return self
        raise LockError(f"{self.path}: could not take the lock (contended); try again")

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        host, pid, _ = self._read()
        if host == _host() and pid == os.getpid():
            with contextlib.suppress(OSError):
                self.path.unlink()
        if self._made_dir:
            with contextlib.suppress(OSError):
                self.directory.rmdir()  # only succeeds when nothing else was written

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
