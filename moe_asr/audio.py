"""Audio loading: any file soundfile reads -> mono float32 at the target rate.

All audio I/O goes through soundfile (wav, flac, ogg, mp3...). Errors are
``AudioError`` naming the path and the cause, never a bare library exception.
"""

from __future__ import annotations

import functools
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms as T

from moe_asr.errors import UserError
from moe_asr.files import atomic_open

__all__ = ["AudioError", "AudioInfo", "audio_info", "load_audio", "resample", "save_audio"]


class AudioError(UserError):
    """An audio file is missing, empty, truncated, corrupt or not audio."""

    def __init__(self, path: str | Path, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{path}: {cause}")


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def _open_error(path: Path, err: Exception) -> AudioError:
    if not path.exists():
        return AudioError(path, "file does not exist")
    if path.is_dir():
        return AudioError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        return AudioError(path, "file is empty (0 bytes)")
    return AudioError(path, f"not a readable audio file ({err})")


def _check_regular(path: Path) -> None:
    """Refuse a FIFO, device or socket before opening it (opening a FIFO blocks forever)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing or unreadable: soundfile's error is turned into a clear one below
    if stat.S_ISDIR(mode):
        raise AudioError(path, "is a directory, not an audio file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "not a regular file"
        raise AudioError(path, f"is {kind}; give an audio file (pipes and devices are not read)")


def _check_riff(path: Path) -> None:
    """libsndfile silently shortens a truncated WAV; compare the data chunk size with the file."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        size = path.stat().st_size
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return
            n = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                if n != 0xFFFFFFFF and f.tell() + n > size:
                    raise AudioError(
                        path,
                        f"truncated WAV: header declares {n} data bytes, file holds {size - f.tell()}",
                    )
                return
            f.seek(n + (n & 1), 1)


def audio_info(path: str | Path) -> AudioInfo:
    """Header information; raises AudioError when the file cannot be opened as audio."""
    path = Path(path)
    _check_regular(path)
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError or OSError
        raise _open_error(path, e) from e
    if info.frames <= 0:
        raise AudioError(path, "contains no audio samples (zero length)")
    _check_riff(path)
    return AudioInfo(info.samplerate, info.channels, info.frames)


@functools.lru_cache(maxsize=16)
def _resampler(orig_sr: int, target_sr: int) -> T.Resample:
    # the sinc kernel is computed once per rate pair (functional.resample rebuilds it per call)
    return T.Resample(orig_sr, target_sr)


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling of a 1-D float32 signal."""
    if orig_sr == target_sr:
        return wav
    with torch.no_grad():
        out = _resampler(orig_sr, target_sr)(torch.from_numpy(np.ascontiguousarray(wav)))
    return out.numpy()


def load_audio(
    path: str | Path,
    target_sr: int = 16000,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """Load ``path`` as mono float32 at ``target_sr``; optional segment [start, end) in seconds.

    Channels are mixed down by their mean. Raises AudioError for a missing, empty,
    truncated, corrupt or non-audio file, or a segment outside the file.
    """
    path = Path(path)
    _check_regular(path)
    try:
        _check_riff(path)
        with sf.SoundFile(str(path)) as f:
            sr = f.samplerate
            declared = f.frames
            first = int(round((start or 0.0) * sr))
            if start is not None and first >= declared > 0:
                raise AudioError(
                    path, f"segment {start}-{end} s is outside the audio ({declared / sr:.2f} s)"
                )
            last = -1 if end is None or end < 0 else int(round(end * sr))
            if first > 0:
                f.seek(first)
            frames = -1 if last < 0 else max(0, last - first)
            data = f.read(frames=frames, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as e:
        raise _open_error(path, e) from e
    if data.shape[0] == 0:
        if start is not None:
            raise AudioError(path, f"segment {start}-{end} s is outside the audio")
        raise AudioError(path, "contains no audio samples (zero length)")
    if end is not None and end > 0 and data.shape[0] < frames * 0.99:
        raise AudioError(path, f"segment {start}-{end} s runs past the end of the audio")
    if start is None and end is None and 0 < data.shape[0] < 0.98 * declared:
        raise AudioError(path, f"truncated: decoded {data.shape[0]} of {declared} frames")
    if not np.isfinite(data).all():
        raise AudioError(path, "contains NaN or infinite samples")
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(np.ascontiguousarray(wav, dtype=np.float32), sr, target_sr)


def save_audio(
    path: str | Path, wav: np.ndarray, sample_rate: int, subtype: str = "PCM_16"
) -> None:
    """Write a mono signal atomically, without fsync (bulk data; format from the extension)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").upper() or "WAV"
    with atomic_open(path, "wb", durable=False) as f:
        sf.write(f, wav, sample_rate, subtype=subtype, format=fmt)
