"""Noise and room-impulse-response sources of the training augmentation.

Config entries (``data.augment.noise_files`` / ``rir_files``) are audio files, directories
(searched for audio files) or Kaldi ``.scp`` files (``id path`` lines, e.g. MUSAN or the
RIRS_NOISES lists laid out by the user; a relative path is taken relative to the scp's
directory when it exists there). A noise entry may carry its type, ``TYPE=PATH``
(``music=/data/musan/music``); untyped entries are type ``file``.

Headers are checked when the bank is built: a file found in a directory or listed in an
scp that cannot be read is reported (a warning naming it and the cause) and skipped; a file
named directly is an error, and so is an entry that leaves no readable file. A file whose
data fails later, when it is read, is reported once and replaced by the next file of its
type, so the draws stay the same in every process.

Synthetic noise (``moe_asr.synth.noise.GENERATED_NOISE``: ``white``, ``pink``, ``brown``,
``music``; ``babble``: a sum of talker streams made of training utterances) is generated once
per process into a ``BANK_SECONDS`` loop from a fixed seed, so it is identical in every worker;
files are not cached (a MUSAN-size set would not fit in memory): each draw reads the excerpt
it needs.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from moe_asr.audio import AudioError, audio_info, load_audio
from moe_asr.data.datadir import DataDirError, read_table
from moe_asr.errors import UserError
from moe_asr.synth.noise import BABBLE_TALKERS, GENERATED_NOISE, generated_noise

__all__ = [
    "AugmentError",
    "FILE_NOISE",
    "BANK_SECONDS",
    "AudioRef",
    "split_typed",
    "find_audio",
    "noise_file_types",
    "NoiseBank",
]

log = logging.getLogger(__name__)

FILE_NOISE = "file"  # type of an untyped noise_files entry
BANK_SECONDS = 30.0  # seconds of each synthetic noise generated per process
_BANK_SEED = 20_260_101
_AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".sph"}


class AugmentError(UserError):
    """An augmentation setting is invalid or a noise file cannot be used."""


@dataclass(frozen=True)
class AudioRef:
    """An audio file (or a segment of one) and its duration in seconds."""

    path: str
    duration: float
    start: float | None = None
    end: float | None = None


def split_typed(entry: str) -> tuple[str, str]:
    """``"music=/data/musan/music"`` -> ("music", path); an untyped entry -> ("file", entry)."""
    if "=" in entry:
        kind, path = entry.split("=", 1)
        if kind and "/" not in kind:
            if kind == "clean" or not kind.replace("_", "").replace("-", "").isalnum():
                raise AugmentError(
                    f"noise entry {entry!r}: type {kind!r} must be a word other than 'clean'"
                )
            return kind, path
    return FILE_NOISE, entry


def noise_file_types(entries: list[str]) -> list[str]:
    """The noise types of ``noise_files`` entries, in order of first appearance (no I/O)."""
    return list(dict.fromkeys(split_typed(e)[0] for e in entries))


def _scp_paths(scp: Path) -> tuple[list[Path], list[str]]:
    try:
        table = read_table(scp)
    except (DataDirError, OSError) as e:
        raise AugmentError(f"{scp}: cannot read the scp file: {e}") from e
    paths, skipped = [], []
    for key, value in table.items():
        if value.rstrip().endswith("|"):
            skipped.append(f"{scp}: {key}: a command pipe, not a file (give plain audio paths)")
            continue
        p = Path(value)
        if not p.is_absolute() and (scp.parent / p).exists():
            p = scp.parent / p
        paths.append(p)
    return paths, skipped


def find_audio(entry: str, what: str = "noise") -> list[AudioRef]:
    """Readable audio files of one entry (file, directory or ``.scp``), headers checked.

    Unreadable files of a directory or scp are logged as warnings and left out; AugmentError
    for an unreadable file named directly or an entry without any readable file.
    """
    p = Path(entry)
    skipped: list[str] = []
    if p.is_dir():
        paths = sorted(f for f in p.rglob("*") if f.suffix.lower() in _AUDIO_SUFFIXES)
        if not paths:
            raise AugmentError(f"{p}: {what} directory holds no audio files")
    elif p.suffix == ".scp":
        paths, skipped = _scp_paths(p)
    else:
        try:
            return [AudioRef(str(p), audio_info(p).duration)]
        except AudioError as e:
            raise AugmentError(f"{what} file {e}") from e
    out = []
    for f in paths:
        try:
            out.append(AudioRef(str(f), audio_info(f).duration))
        except AudioError as e:
            skipped.append(str(e))
    for why in skipped:
        log.warning("%s file skipped: %s", what, why)
    if skipped:
        log.warning("%s: %d of %d %s file(s) skipped", p, len(skipped), len(paths), what)
    if not out:
        raise AugmentError(f"{p}: no readable {what} file ({len(skipped)} unreadable)")
    return out


class NoiseBank:
    """Noise signals per type: the synthetic loops and the user's files.

    ``types`` lists the synthetic types (config order) then the file types; a type given by
    both draws uniformly from the loop and its files. ``draw`` returns one noise signal of a
    type, at least ``n`` samples when it can (a shorter file is returned whole).
    """

    def __init__(
        self,
        synth_types: list[str],
        noise_files: list[str],
        sample_rate: int,
        babble_audio: list[AudioRef] | None = None,
    ):
        bad = [t for t in synth_types if t not in GENERATED_NOISE]
        if bad:
            raise AugmentError(
                f"data.augment.noise_types: unknown {', '.join(bad)}; "
                f"choose from {', '.join(GENERATED_NOISE)}"
            )
        if "babble" in synth_types and not babble_audio:
            raise AugmentError("babble noise needs talker utterances (the training data dir)")
        self.sample_rate = sample_rate
        self.synth = list(dict.fromkeys(synth_types))
        self.babble_audio = list(babble_audio or [])
        self.files: dict[str, list[AudioRef]] = {}
        for entry in noise_files:
            kind, path = split_typed(entry)
            self.files.setdefault(kind, []).extend(find_audio(path))
        self.types = list(dict.fromkeys([*self.synth, *self.files]))
        self._loops: dict[str, Tensor] = {}  # synthetic loops, built on first use
        self._bad: set[str] = set()  # files whose data failed (reported once)

    def __len__(self) -> int:
        return len(self.types)

    def draw(self, kind: str, n: int, rng: np.random.Generator) -> Tensor:
        """(M,) noise of type ``kind`` for an ``n``-sample signal (``M >= n`` unless the
        drawn file is shorter)."""
        files = self.files.get(kind, [])
        choices = len(files) + (kind in self.synth)
        pick = int(rng.integers(choices))
        if kind in self.synth and pick == len(files):
            return self._loop(kind)
        return self._read(files, pick, n, rng)

    def _read(self, files: list[AudioRef], pick: int, n: int, rng: np.random.Generator) -> Tensor:
        seconds = n / self.sample_rate
        u = float(rng.random())  # excerpt position, drawn before any fallback
        for k in range(len(files)):
            ref = files[(pick + k) % len(files)]
            if ref.path in self._bad:
                continue
            start = u * max(0.0, ref.duration - seconds)
            end = start + seconds if ref.duration > seconds else None
            try:
                wav = load_audio(ref.path, self.sample_rate, start if end else None, end)
            except AudioError as e:
                log.warning("noise file skipped from now on: %s", e)
                self._bad.add(ref.path)
                continue
            return torch.from_numpy(wav)
        raise AugmentError(f"no noise file of this type can be read (last: {files[-1].path})")

    def _loop(self, kind: str) -> Tensor:
        if kind not in self._loops:
            n = int(BANK_SECONDS * self.sample_rate)
            rng = np.random.default_rng([_BANK_SEED, zlib.crc32(kind.encode())])
            talkers = self._talker_streams(rng) if kind == "babble" else None
            wav = generated_noise(kind, n, rng, self.sample_rate, talkers)
            self._loops[kind] = torch.from_numpy(wav)
        return self._loops[kind]

    def _talker_streams(self, rng: np.random.Generator) -> list[np.ndarray]:
        """BABBLE_TALKERS streams, each the readable talker utterances (unit RMS each) in a
        random order."""
        talkers = []
        for ref in self.babble_audio:
            try:
                wav = load_audio(ref.path, self.sample_rate, ref.start, ref.end)
            except AudioError as e:
                log.warning("babble talker skipped: %s", e)
                continue
            rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
            if rms > 0:
                talkers.append(wav / rms)
        if not talkers:
            raise AugmentError(
                f"babble noise: none of the {len(self.babble_audio)} talker utterances is "
                "readable audio with sound"
            )
        return [
            np.concatenate([talkers[i] for i in rng.permutation(len(talkers))])
            for _ in range(BABBLE_TALKERS)
        ]
