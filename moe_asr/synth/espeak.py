"""ctypes binding to libespeak-ng from the ``espeakng-loader`` wheel, run in a fork server.

libespeak-ng keeps synthesis state between calls (pitch-flutter phase, automatic gain,
random generator, echo buffer), so the same text with the same voice gives slightly
different samples depending on what was spoken before. Reproducible corpora therefore
synthesize every utterance in a fresh ``fork()`` of a process that has only initialized
the library: the output depends on the request alone, not on history or worker count.

``EspeakServer`` starts that process (``python -m moe_asr.synth.espeak --serve``: a lean
interpreter without numpy or torch, so each fork costs about a millisecond) and talks to
it over pipes. A request that makes espeak fail or crash returns an ``EspeakError`` for
that request only; the server keeps running.

This module must stay importable without numpy/torch (the server imports it).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from moe_asr.errors import UserError

__all__ = ["EspeakError", "VoiceInfo", "EspeakServer", "ESPEAK_RATE", "VARIANTS"]

ESPEAK_RATE = 22050  # libespeak-ng's native output rate (checked at start-up)
# Voice variants shipped in espeak-ng-data/voices/!v used as speaker identities.
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4")

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_REQUEST_TIMEOUT_S = 60.0
_HEADER = struct.Struct("<iI")  # status (0 ok, 1 error), payload length


class EspeakError(UserError):
    """espeak-ng cannot be loaded, a voice is unknown, or synthesis of one text failed."""


@dataclass(frozen=True)
class VoiceInfo:
    """One voice of the library: ``name`` is what ``SetVoiceByName`` accepts."""

    name: str  # identifier basename, e.g. "en", "en-GB-scotland", "pt-BR"
    identifier: str  # e.g. "gmw/en"
    description: str  # e.g. "English (Great Britain)"
    languages: tuple[tuple[int, str], ...]  # (priority, code); lower priority = better match


class _VoiceStruct(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Engine:
    """The library in this process (used inside the server and its forked children)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:
            raise EspeakError(
                "the espeakng-loader package is not installed (pip install espeakng-loader)"
            ) from e
        lib_path = espeakng_loader.get_library_path()
        data_path = espeakng_loader.get_data_path()
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError as e:
            raise EspeakError(f"{lib_path}: cannot load libespeak-ng ({e})") from e
        lib.espeak_Info.restype = ctypes.c_char_p  # default int return truncates the pointer
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceStruct))
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ng_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed with data path {data_path}")
        self.lib = lib
        self.sample_rate = int(rate)
        self.version = (lib.espeak_Info(None) or b"?").decode()
        self.data_path = Path(data_path)
        self._chunks: list[bytes] = []

        def collect(wav, n, _events) -> int:
            if n > 0:
                self._chunks.append(ctypes.string_at(wav, 2 * n))
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: the library holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def voices(self) -> list[VoiceInfo]:
        arr = self.lib.espeak_ListVoices(None)
        out = []
        i = 0
        while arr[i]:
            v = arr[i].contents
            langs = []
            p = v.languages
            while p and ctypes.c_ubyte.from_address(p).value != 0:
                prio = ctypes.c_ubyte.from_address(p).value
                code = ctypes.string_at(p + 1)
                langs.append((prio, code.decode().lower()))
                p += 1 + len(code) + 1
            ident = v.identifier.decode()
            out.append(
                VoiceInfo(
                    name=ident.rsplit("/", 1)[-1],
                    identifier=ident,
                    description=v.name.decode(),
                    languages=tuple(langs),
                )
            )
            i += 1
        return out

    def set_voice(self, voice: str) -> None:
        status = self.lib.espeak_ng_SetVoiceByName(voice.encode())
        if status != 0:
            raise EspeakError(f"espeak-ng rejected voice {voice!r} (status {status:#x})")

    def phonemes(self, text: str, voice: str) -> str:
        """espeak's phoneme mnemonics; ``(en)``-style markers show language switches."""
        self.set_voice(voice)
        buf = ctypes.create_string_buffer(text.encode())
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        out = []
        while ptr.value:
            res = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, 0)
            out.append((res or b"").decode(errors="replace"))
        return " ".join(out)

    def synth(self, text: str, voice: str, rate: int, pitch: int, seed: int) -> bytes:
        """16-bit little-endian PCM at ``sample_rate``; raises EspeakError."""
        self.set_voice(voice)
        self.lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
        self.lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        self.lib.espeak_ng_SetRandSeed(int(seed))
        self._chunks.clear()
        data = text.encode() + b"\0"
        status = self.lib.espeak_Synth(data, len(data), 0, 0, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise EspeakError(f"espeak_Synth failed (status {status}) for text {text[:60]!r}")
        pcm = b"".join(self._chunks)
        if not pcm:
            raise EspeakError(f"voice {voice!r} produced no audio for text {text[:60]!r}")
        return pcm


# ----------------------------------------------------------------------------- server side


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int) -> bytes:
    parts = []
    while n > 0:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _run_forked(engine: _Engine, request: dict) -> tuple[int, bytes]:
    """Do one request in a fresh fork of the (never-synthesizing) server process."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: answer, then exit without running Python cleanup
        os.close(r)
        code = 0
        try:
            if request["cmd"] == "synth":
                payload = engine.synth(
                    request["text"],
                    request["voice"],
                    request["rate"],
                    request["pitch"],
                    request["seed"],
                )
            elif request["cmd"] == "phonemes":
                payload = engine.phonemes(request["text"], request["voice"]).encode()
            else:
                payload = json.dumps([v.__dict__ for v in engine.voices()]).encode()
        except Exception as e:  # reported to the client as this request's error
            code, payload = 3, str(e).encode()
        try:
            _write_all(w, payload)
        finally:
            os._exit(code)
    os.close(w)
    parts = []
    deadline_hit = False
    while True:
        ready, _, _ = select.select([r], [], [], _REQUEST_TIMEOUT_S)
        if not ready:
            deadline_hit = True
            os.kill(pid, signal.SIGKILL)
            break
        chunk = os.read(r, 1 << 20)
        if not chunk:
            break
        parts.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    payload = b"".join(parts)
    if deadline_hit:
        return 1, f"espeak-ng did not finish within {_REQUEST_TIMEOUT_S:.0f} s".encode()
    if os.WIFSIGNALED(status):
        return 1, f"espeak-ng crashed (signal {os.WTERMSIG(status)})".encode()
    if os.WEXITSTATUS(status) != 0:
        return 1, payload or b"espeak-ng failed"
    return 0, payload


def _serve() -> None:
    """Loop: one JSON request per line on stdin, a header + payload answer on stdout."""
    out = sys.stdout.buffer.fileno()
    try:
        engine = _Engine()
        hello = json.dumps(
            {
                "sample_rate": engine.sample_rate,
                "version": engine.version,
                "data": str(engine.data_path),
            }
        ).encode()
        _write_all(out, _HEADER.pack(0, len(hello)) + hello)
    except Exception as e:
        msg = str(e).encode()
        _write_all(out, _HEADER.pack(1, len(msg)) + msg)
        return
    for line in sys.stdin.buffer:
        request = json.loads(line)
        status, payload = _run_forked(engine, request)
        _write_all(out, _HEADER.pack(status, len(payload)) + payload)


# ----------------------------------------------------------------------------- client side


class EspeakServer:
    """Client of one fork-server process; use as a context manager or call ``close()``.

    ``synth`` returns the utterance as 16-bit PCM samples at ``sample_rate`` (22050 Hz),
    identical for identical requests regardless of what was synthesized before.
    """

    def __init__(self) -> None:
        import moe_asr

        root = str(Path(moe_asr.__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moe_asr.synth.espeak", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        status, payload = self._answer()
        if status != 0:
            self.close()
            raise EspeakError(f"cannot start espeak-ng: {payload.decode(errors='replace')}")
        hello = json.loads(payload)
        self.sample_rate: int = hello["sample_rate"]
        self.version: str = hello["version"]
        self.data_path = Path(hello["data"])
        assert self.sample_rate == ESPEAK_RATE, self.sample_rate
        self._voices: list[VoiceInfo] | None = None

    def _answer(self) -> tuple[int, bytes]:
        fd = self._proc.stdout.fileno()
        try:
            status, n = _HEADER.unpack(_read_exact(fd, _HEADER.size))
            return status, _read_exact(fd, n)
        except EOFError as e:
            raise EspeakError(
                f"the espeak-ng server exited unexpectedly (code {self._proc.poll()})"
            ) from e

    def _request(self, request: dict) -> bytes:
        if self._proc.poll() is not None:
            raise EspeakError("the espeak-ng server is not running")
        self._proc.stdin.write(json.dumps(request).encode() + b"\n")
        self._proc.stdin.flush()
        status, payload = self._answer()
        if status != 0:
            raise EspeakError(payload.decode(errors="replace"))
        return payload

    def voices(self) -> list[VoiceInfo]:
        """Every voice the library offers (``espeak_ListVoices``)."""
        if self._voices is None:
            rows = json.loads(self._request({"cmd": "voices"}))
            self._voices = [
                VoiceInfo(
                    name=r["name"],
                    identifier=r["identifier"],
                    description=r["description"],
                    languages=tuple((int(p), c) for p, c in r["languages"]),
                )
                for r in rows
            ]
        return self._voices

    def resolve(self, code: str) -> str:
        """Voice name the library accepts for a language/accent code; EspeakError if none.

        An identifier basename equal to ``code`` wins (``en-gb-scotland``); otherwise the
        voice that lists ``code`` as a language with the best priority (``en-gb`` -> ``en``
        in espeak-ng 1.52, where ``en-gb`` itself is not a voice name).
        """
        code_l = code.lower()
        voices = self.voices()
        for v in voices:
            if v.name.lower() == code_l:
                return v.name
        best = [(prio, v.name) for v in voices for prio, lang in v.languages if lang == code_l]
        if best:
            return min(best)[1]
        near = sorted({v.name for v in voices if v.name.lower().startswith(code_l.split("-")[0])})
        raise EspeakError(
            f"espeak-ng {self.version} has no voice for {code!r}"
            + (f"; voices of that language: {', '.join(near)}" if near else "")
        )

    def phonemes(self, text: str, voice: str) -> str:
        """Phoneme mnemonics of ``text`` read by ``voice`` (``(en)`` marks a switch to English)."""
        return self._request({"cmd": "phonemes", "text": text, "voice": voice}).decode()

    def has_variant(self, variant: str) -> bool:
        return (self.data_path / "voices" / "!v" / variant).is_file()

    def synth(
        self, text: str, voice: str, *, variant: str | None = None, rate: int = 175,
        pitch: int = 50, seed: int = 0,
    ):  # fmt: skip
        """Speak ``text``; returns int16 samples (N,) at 22050 Hz. EspeakError on failure.

        ``voice`` is a name from ``resolve``; ``variant`` one of ``VARIANTS``; ``rate`` in
        words per minute (80..450); ``pitch`` 0..100; ``seed`` seeds espeak's noise source.
        """
        import numpy as np

        name = f"{voice}+{variant}" if variant else voice
        pcm = self._request(
            {
                "cmd": "synth",
                "text": text,
                "voice": name,
                "rate": rate,
                "pitch": pitch,
                "seed": seed,
            }
        )
        return np.frombuffer(pcm, dtype="<i2").copy()

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> EspeakServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
