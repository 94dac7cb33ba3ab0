"""Accent table, speaker partition and the intelligibility criterion."""

from moe_asr.synth.espeak import VARIANTS
from moe_asr.synth.voices import (
    MAX_SEC_PER_WORD,
    PITCHES,
    RATES,
    SPLITS,
    check_voice,
    speakers,
)


def test_speakers_partition_every_combo_disjointly():
    per_split = {s: speakers("en-us", s) for s in SPLITS}
    keys = {s: {spk.key for spk in v} for s, v in per_split.items()}
    assert not keys["train"] & keys["dev"] and not keys["train"] & keys["test"]
    assert not keys["dev"] & keys["test"]
    assert sum(len(k) for k in keys.values()) == len(VARIANTS) * len(RATES) * len(PITCHES)
    assert len(keys["test"]) >= 10 and len(keys["train"]) > 5 * len(keys["test"])
    spk = per_split["test"][0]
    assert spk.id("test").startswith("test-en-us-") and spk.variant in spk.id("test")


def test_intelligible_voices_pass_and_letter_spelling_fails(espeak_server):
    us = check_voice(espeak_server, "en-us")
    assert us.ok and 0.2 < us.sec_per_word < 0.35
    es = check_voice(espeak_server, "es")
    assert es.ok and es.english_fraction < 0.2
    ja = check_voice(espeak_server, "ja")  # spells Latin words letter by letter
    assert not ja.ok and ja.sec_per_word > MAX_SEC_PER_WORD and "per word" in ja.reason
    hi = check_voice(espeak_server, "hi")  # hands every word to the English rules
    assert not hi.ok and hi.english_fraction > 0.9 and "not a foreign accent" in hi.reason
