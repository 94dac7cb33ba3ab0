"""The accent table of the synthetic corpus: every espeak-ng voice that may read English.

An accent is an espeak-ng voice reading English: native varieties use the English voices;
second-language (L2) accents use another language's voice, whose letter-to-sound rules and
phonology colour the English words. Each accent belongs to a **family** (its language's
family or branch: ``germanic``, ``romance``, ``slavic``, ...; the English voices form
``native-english``), written to ``utt2family`` for grouped routing and per-family WER.

``ACCENTS`` lists every voice of libespeak-ng 1.52 (espeakng-loader) that is a living
language, in the order the voice check visits them; ``EXCLUDED_VOICES`` names the rest
and why. Which candidates are usable is decided by the check in ``voices.py``, not here.
``DEFAULT_ACCENTS`` is the recipe's and ``make demo``'s set (fixed, so corpora stay
byte-identical); ``all`` means every candidate that passes the check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from moe_asr.errors import UserError
from moe_asr.synth.espeak import EspeakError

__all__ = [
    "Accent",
    "ACCENTS",
    "FAMILIES",
    "NATIVE_FAMILY",
    "DEFAULT_ACCENTS",
    "EXCLUDED_VOICES",
    "ACCENT_SETS",
    "accent_by_code",
    "parse_accent_list",
]

NATIVE_FAMILY = "native-english"


@dataclass(frozen=True)
class Accent:
    code: str  # the label written to utt2accent, and the espeak language code
    family: str  # one of FAMILIES, written to utt2family
    description: str

    @property
    def kind(self) -> str:
        """``native`` for the English voices, ``l2`` for other languages' voices."""
        return "native" if self.family == NATIVE_FAMILY else "l2"


def _native(code: str, description: str) -> Accent:
    return Accent(code=code, family=NATIVE_FAMILY, description=description)


def _l2(code: str, family: str, language: str) -> Accent:
    return Accent(code=code, family=family, description=f"{language} voice reading English")


# The first 19 rows are the original candidate list (its accepted 16 are DEFAULT_ACCENTS).
# Within a family, a voice whose probe audio equals an earlier one's is rejected by the
# check, so the main variety comes first (fr before fr-be, hr before bs).
ACCENTS: tuple[Accent, ...] = (
    _native("en-us", "General American"),
    _native("en-gb", "British English"),
    _native("en-gb-scotland", "Scottish English"),
    _native("en-gb-x-rp", "Received Pronunciation"),
    _native("en-gb-x-gbclan", "Lancastrian English"),
    _native("en-gb-x-gbcwmd", "West Midlands English"),
    _native("en-029", "Caribbean English"),
    _native("en-us-nyc", "New York City English"),
    _l2("es", "romance", "Spanish"),
    _l2("pt-br", "romance", "Brazilian Portuguese"),
    _l2("it", "romance", "Italian"),
    _l2("fr", "romance", "French"),
    _l2("de", "germanic", "German"),
    _l2("nl", "germanic", "Dutch"),
    _l2("pl", "slavic", "Polish"),
    _l2("hi", "indo-aryan", "Hindi"),
    _l2("ru", "slavic", "Russian"),
    _l2("vi", "austroasiatic", "Vietnamese (Northern)"),
    _l2("ja", "japonic", "Japanese"),
    # germanic
    _l2("af", "germanic", "Afrikaans"),
    _l2("da", "germanic", "Danish"),
    _l2("is", "germanic", "Icelandic"),
    _l2("lb", "germanic", "Luxembourgish"),
    _l2("nb", "germanic", "Norwegian Bokmål"),
    _l2("sv", "germanic", "Swedish"),
    # romance (incl. the French- and Iberian-based creoles)
    _l2("an", "romance", "Aragonese"),
    _l2("ca", "romance", "Catalan"),
    _l2("ca-ba", "romance", "Balearic Catalan"),
    _l2("ca-nw", "romance", "North-western Catalan"),
    _l2("ca-va", "romance", "Valencian"),
    _l2("es-419", "romance", "Latin American Spanish"),
    _l2("fr-be", "romance", "Belgian French"),
    _l2("fr-ch", "romance", "Swiss French"),
    _l2("ht", "romance", "Haitian Creole"),
    _l2("pap", "romance", "Papiamento"),
    _l2("pt", "romance", "European Portuguese"),
    _l2("ro", "romance", "Romanian"),
    # slavic
    _l2("be", "slavic", "Belarusian"),
    _l2("bg", "slavic", "Bulgarian"),
    _l2("cs", "slavic", "Czech"),
    _l2("hr", "slavic", "Croatian"),
    _l2("bs", "slavic", "Bosnian"),
    _l2("mk", "slavic", "Macedonian"),
    _l2("ru-cl", "slavic", "Russian (classic orthography)"),
    _l2("ru-lv", "slavic", "Russian (Latvia)"),
    _l2("sk", "slavic", "Slovak"),
    _l2("sl", "slavic", "Slovenian"),
    _l2("sr", "slavic", "Serbian"),
    _l2("uk", "slavic", "Ukrainian"),
    # baltic, celtic, hellenic, albanian, armenian
    _l2("lt", "baltic", "Lithuanian"),
    _l2("ltg", "baltic", "Latgalian"),
    _l2("lv", "baltic", "Latvian"),
    _l2("cy", "celtic", "Welsh"),
    _l2("ga", "celtic", "Irish"),
    _l2("gd", "celtic", "Scottish Gaelic"),
    _l2("el", "hellenic", "Greek"),
    _l2("sq", "albanian", "Albanian"),
    _l2("hy", "armenian", "Eastern Armenian"),
    _l2("hyw", "armenian", "Western Armenian"),
    # iranian, indo-aryan, dravidian
    _l2("fa", "iranian", "Persian"),
    _l2("fa-latn", "iranian", "Persian (Pinglish)"),
    _l2("ku", "iranian", "Kurdish"),
    _l2("as", "indo-aryan", "Assamese"),
    _l2("bn", "indo-aryan", "Bengali"),
    _l2("bpy", "indo-aryan", "Bishnupriya Manipuri"),
    _l2("gu", "indo-aryan", "Gujarati"),
    _l2("kok", "indo-aryan", "Konkani"),
    _l2("mr", "indo-aryan", "Marathi"),
    _l2("ne", "indo-aryan", "Nepali"),
    _l2("or", "indo-aryan", "Oriya"),
    _l2("pa", "indo-aryan", "Punjabi"),
    _l2("sd", "indo-aryan", "Sindhi"),
    _l2("si", "indo-aryan", "Sinhala"),
    _l2("ur", "indo-aryan", "Urdu"),
    _l2("kn", "dravidian", "Kannada"),
    _l2("ml", "dravidian", "Malayalam"),
    _l2("ta", "dravidian", "Tamil"),
    _l2("te", "dravidian", "Telugu"),
    # uralic, turkic, kartvelian, basque
    _l2("et", "uralic", "Estonian"),
    _l2("fi", "uralic", "Finnish"),
    _l2("hu", "uralic", "Hungarian"),
    _l2("smj", "uralic", "Lule Saami"),
    _l2("az", "turkic", "Azerbaijani"),
    _l2("ba", "turkic", "Bashkir"),
    _l2("cv", "turkic", "Chuvash"),
    _l2("kk", "turkic", "Kazakh"),
    _l2("ky", "turkic", "Kyrgyz"),
    _l2("nog", "turkic", "Nogai"),
    _l2("tk", "turkic", "Turkmen"),
    _l2("tr", "turkic", "Turkish"),
    _l2("tt", "turkic", "Tatar"),
    _l2("ug", "turkic", "Uyghur"),
    _l2("uz", "turkic", "Uzbek"),
    _l2("ka", "kartvelian", "Georgian"),
    _l2("eu", "basque", "Basque"),
    # afroasiatic, niger-congo
    _l2("am", "afroasiatic", "Amharic"),
    _l2("ar", "afroasiatic", "Arabic"),
    _l2("he", "afroasiatic", "Hebrew"),
    _l2("mt", "afroasiatic", "Maltese"),
    _l2("om", "afroasiatic", "Oromo"),
    _l2("ti", "afroasiatic", "Tigrinya"),
    _l2("sw", "niger-congo", "Swahili"),
    _l2("tn", "niger-congo", "Setswana"),
    # east and south-east Asia, Pacific
    _l2("cmn", "sinitic", "Mandarin"),
    _l2("cmn-latn-pinyin", "sinitic", "Mandarin (Latin as Pinyin)"),
    _l2("hak", "sinitic", "Hakka"),
    _l2("yue", "sinitic", "Cantonese"),
    _l2("yue-latn-jyutping", "sinitic", "Cantonese (Latin as Jyutping)"),
    _l2("my", "tibeto-burman", "Burmese"),
    _l2("shn", "kra-dai", "Shan"),
    _l2("th", "kra-dai", "Thai"),
    _l2("vi-vn-x-central", "austroasiatic", "Vietnamese (Central)"),
    _l2("vi-vn-x-south", "austroasiatic", "Vietnamese (Southern)"),
    _l2("ko", "koreanic", "Korean"),
    _l2("haw", "austronesian", "Hawaiian"),
    _l2("id", "austronesian", "Indonesian"),
    _l2("mi", "austronesian", "Māori"),
    _l2("ms", "austronesian", "Malay"),
    # the Americas
    _l2("chr", "indigenous-american", "Cherokee"),
    _l2("gn", "indigenous-american", "Guarani"),
    _l2("kl", "indigenous-american", "Greenlandic"),
    _l2("mto", "indigenous-american", "Totontepec Mixe"),
    _l2("qu", "indigenous-american", "Quechua"),
    _l2("quc", "indigenous-american", "K'iche'"),
)

FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(a.family for a in ACCENTS))

# Voices of libespeak-ng 1.52 that are not accents of any speaker community (lower-case
# voice name -> why); tests check that ACCENTS and this table cover every voice listed.
EXCLUDED_VOICES: dict[str, str] = {
    **{
        v: "constructed language"
        for v in ("eo", "ia", "io", "jbo", "lfn", "piqd", "py", "qdb", "qya", "sjn", "xex")
    },
    **{v: "no living native speakers" for v in ("la", "grc", "nci")},
    "en-shaw": "English in the Shavian alphabet (a script, not an accent)",
    **{v: "no pronunciation dictionary in the bundled data" for v in ("fo", "kaa")},
}

# The recipe's and `make demo`'s accents: exactly the 16 that passed the check on the
# original 19 candidates. Fixed here so that a larger table never changes those corpora.
DEFAULT_ACCENTS: tuple[str, ...] = (
    "de", "en-029", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-gb-x-rp", "en-us", "en-us-nyc", "es", "fr", "it", "nl", "pl", "pt-br", "vi",
)  # fmt: skip

# Names accepted in --accents besides accent codes.
ACCENT_SETS: tuple[str, ...] = ("default", "all")


def accent_by_code(code: str) -> Accent:
    for a in ACCENTS:
        if a.code == code:
            return a
    raise EspeakError(
        f"unknown accent {code!r}; known accents: {', '.join(a.code for a in ACCENTS)} "
        "(`moe-asr synth --list-accents` shows which pass the voice check)"
    )


def parse_accent_list(spec: str | Sequence[str], option: str = "--accents") -> tuple[str, ...]:
    """``"default,cy"`` -> ("default", "cy"): codes and set names, checked, duplicates dropped.

    Set names (``default``, ``all``) are kept as they are; ``select_accents`` expands them.
    """
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    items = tuple(dict.fromkeys(s.strip() for s in parts if s.strip()))
    known = {a.code for a in ACCENTS}
    bad = [s for s in items if s not in known and s not in ACCENT_SETS]
    if bad:
        raise UserError(
            f"{option}: unknown accent(s) {', '.join(bad)}; give accent codes "
            f"(`moe-asr synth --list-accents`) or {' / '.join(ACCENT_SETS)}"
        )
    if not items:
        raise UserError(f"{option}: no accent given")
    return items
