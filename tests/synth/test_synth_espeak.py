"""The ctypes binding through its fork server: voices, determinism, errors."""

import numpy as np
import pytest

from moe_asr.synth.espeak import ESPEAK_RATE, VARIANTS, EspeakError

TEXT = "the birch canoe slid on the smooth planks"


def test_library_and_voices(espeak_server):
    assert espeak_server.sample_rate == ESPEAK_RATE
    names = {v.name for v in espeak_server.voices()}
    assert {"en-US", "en-GB-scotland", "es", "fr"} <= names
    # en-gb is a language of the voice "en", not a voice name of its own (espeak-ng 1.52)
    assert espeak_server.resolve("en-gb") == "en"
    assert espeak_server.resolve("pt-br") == "pt-BR"
    assert all(espeak_server.has_variant(v) for v in VARIANTS)
    assert not espeak_server.has_variant("m99")


def test_same_request_same_samples_whatever_came_before(espeak_server):
    a = espeak_server.synth(TEXT, "en-US", variant="m3", rate=160, pitch=40, seed=5)
    espeak_server.synth("something else entirely", "de", variant="f2", rate=200)
    b = espeak_server.synth(TEXT, "en-US", variant="m3", rate=160, pitch=40, seed=5)
    assert a.dtype == np.int16 and a.size > ESPEAK_RATE  # over a second of speech
    np.testing.assert_array_equal(a, b)


def test_rate_and_variant_change_the_audio(espeak_server):
    slow = espeak_server.synth(TEXT, "en-US", rate=140)
    fast = espeak_server.synth(TEXT, "en-US", rate=220)
    assert slow.size > 1.3 * fast.size
    m1 = espeak_server.synth(TEXT, "en-US", variant="m1")
    f1 = espeak_server.synth(TEXT, "en-US", variant="f1")
    assert m1.size != f1.size or not np.array_equal(m1, f1)


def test_bad_voice_is_an_error_and_the_server_goes_on(espeak_server):
    with pytest.raises(EspeakError, match="xx-nonexistent"):
        espeak_server.synth(TEXT, "xx-nonexistent")
    with pytest.raises(EspeakError, match="no voice for 'zz'"):
        espeak_server.resolve("zz")
    assert espeak_server.synth("still alive", "en").size > 0


def test_phonemes_show_language_switches(espeak_server):
    assert "(en)" in espeak_server.phonemes(TEXT, "hi")
    assert "(en)" not in espeak_server.phonemes(TEXT, "es")
