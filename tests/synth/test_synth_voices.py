"""Accent table, speaker partition and the intelligibility criterion."""

import pytest

from moe_asr.errors import UserError
from moe_asr.synth.accents import (
    ACCENTS,
    DEFAULT_ACCENTS,
    EXCLUDED_VOICES,
    FAMILIES,
    accent_by_code,
    parse_accent_list,
)
from moe_asr.synth.corpus import select_accents
from moe_asr.synth.espeak import VARIANTS
from moe_asr.synth.voices import (
    MAX_SEC_PER_WORD,
    PITCHES,
    RATES,
    SPLITS,
    check_voice,
    check_voices,
    speakers,
)

# The accents `make demo` and the recipe have always used; they must not change.
ORIGINAL_DEFAULT = (
    "de en-029 en-gb en-gb-scotland en-gb-x-gbclan en-gb-x-gbcwmd en-gb-x-rp en-us en-us-nyc "
    "es fr it nl pl pt-br vi"
).split()


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


def test_accent_table_covers_every_library_voice_once_with_a_family(espeak_server):
    codes = [a.code for a in ACCENTS]
    assert len(codes) == len(set(codes))
    assert all(a.family in FAMILIES for a in ACCENTS) and len(FAMILIES) >= 15
    assert {a.code for a in ACCENTS if a.kind == "native"} == {
        c for c in codes if c.startswith("en-")
    }
    covered = {espeak_server.resolve(c).lower() for c in codes} | set(EXCLUDED_VOICES)
    library = {v.name.lower() for v in espeak_server.voices()}
    assert library == covered  # a new espeak-ng voice must be added to one table or the other
    assert not {espeak_server.resolve(c).lower() for c in codes} & set(EXCLUDED_VOICES)


def test_default_set_is_the_original_sixteen():
    assert DEFAULT_ACCENTS == tuple(sorted(ORIGINAL_DEFAULT))
    assert set(DEFAULT_ACCENTS) <= {a.code for a in ACCENTS}


def test_a_voice_identical_to_an_earlier_one_is_rejected(espeak_server):
    checks = {
        c.accent: c for c in check_voices(espeak_server, ["fr", "fr-be", "en-us", "en-us-nyc"])
    }
    assert checks["fr"].ok and checks["en-us"].ok and checks["en-us-nyc"].ok  # nyc: own audio
    assert not checks["fr-be"].ok and "same audio as fr" in checks["fr-be"].reason
    assert checks["fr-be"].probe_sha1 == checks["fr"].probe_sha1
    assert check_voices(espeak_server, ["fr-be"])[0].ok  # alone it is distinct from nothing


def test_parse_accent_list_names_unknown_accents():
    assert parse_accent_list("default, cy,default") == ("default", "cy")
    with pytest.raises(UserError, match="--exclude-accents: unknown accent.*xx"):
        parse_accent_list("cy,xx", "--exclude-accents")
    with pytest.raises(UserError, match="no accent"):
        parse_accent_list(" , ")


def test_full_voice_check_accepts_at_least_30_accents_of_many_families(espeak_server):
    accepted, checks = select_accents(espeak_server, ["all"])  # ~7 s: 124 voices
    assert len(checks) == len(ACCENTS)
    assert len(accepted) >= 30 and set(DEFAULT_ACCENTS) <= set(accepted)
    families = {accent_by_code(a).family for a in accepted}
    assert len(families) >= 10 and {"germanic", "romance", "slavic", "uralic"} <= families
    assert {"ja", "hi", "fr-be", "bs"}.isdisjoint(accepted)
