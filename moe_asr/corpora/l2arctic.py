"""L2-ARCTIC (24 non-native speakers of English, 6 first languages) -> Kaldi data dirs.

Layout (release v5, https://psi.engr.tamu.edu/l2-arctic-corpus/)::

    CORPUS/<SPK>/wav/arctic_a0001.wav
    CORPUS/<SPK>/transcript/arctic_a0001.txt      one line of text
    CORPUS/<SPK>/annotation/*.TextGrid             (not used)
    CORPUS/suitcase_corpus/...                     spontaneous speech (not used)

Accent = the speaker's first language, gender from the corpus README table. The split is
speaker-disjoint with one speaker per first language in test and one in dev (below).
"""

from __future__ import annotations

from pathlib import Path

from moe_asr.corpora.common import (
    CorpusError,
    PrepResult,
    PrepWarnings,
    Utterance,
    normalize_text,
    read_metadata_text,
    write_splits,
)

__all__ = ["SPEAKERS", "TEST_SPEAKERS", "DEV_SPEAKERS", "prepare_l2arctic"]

# speaker -> (first language, gender), from the L2-ARCTIC README
SPEAKERS: dict[str, tuple[str, str]] = {
    "ABA": ("arabic", "m"),
    "SKA": ("arabic", "f"),
    "YBAA": ("arabic", "m"),
    "ZHAA": ("arabic", "f"),
    "BWC": ("mandarin", "m"),
    "LXC": ("mandarin", "f"),
    "NCC": ("mandarin", "f"),
    "TXHC": ("mandarin", "m"),
    "ASI": ("hindi", "m"),
    "RRBI": ("hindi", "m"),
    "SVBI": ("hindi", "f"),
    "TNI": ("hindi", "f"),
    "HJK": ("korean", "f"),
    "HKK": ("korean", "m"),
    "YDCK": ("korean", "f"),
    "YKWK": ("korean", "m"),
    "EBVS": ("spanish", "m"),
    "ERMS": ("spanish", "m"),
    "MBMPS": ("spanish", "f"),
    "NJS": ("spanish", "f"),
    "HQTV": ("vietnamese", "m"),
    "PNV": ("vietnamese", "f"),
    "THV": ("vietnamese", "f"),
    "TLV": ("vietnamese", "m"),
}
# one speaker per first language each (3 female + 3 male in test)
TEST_SPEAKERS = ("ZHAA", "TXHC", "TNI", "YKWK", "NJS", "TLV")
DEV_SPEAKERS = ("YBAA", "NCC", "SVBI", "YDCK", "MBMPS", "THV")


def prepare_l2arctic(
    corpus_dir: str | Path,
    out_dir: str | Path,
    *,
    test_speakers: tuple[str, ...] = TEST_SPEAKERS,
    dev_speakers: tuple[str, ...] = DEV_SPEAKERS,
    overwrite: bool = False,
) -> PrepResult:
    """Write ``out_dir/{train,dev,test}``; utterance ids are ``<SPK>-arctic_a0001``.

    ``test_speakers``/``dev_speakers`` (directory names) replace the default lists; a split
    none of whose speakers is present comes out empty (warned). A speaker directory not in
    ``SPEAKERS`` is used with accent/gender ``unk`` (warning);
    a wav without transcript, a transcript without wav, or an empty transcript is skipped
    with a warning naming the file.
    """
    corpus_dir = Path(corpus_dir).resolve()
    if not corpus_dir.is_dir():
        raise CorpusError(f"{corpus_dir}: L2-ARCTIC directory does not exist")
    overlap = set(test_speakers) & set(dev_speakers)
    if overlap:
        raise CorpusError(f"speakers {sorted(overlap)} are in both the test and dev lists")
    warn = PrepWarnings("l2arctic")
    suitcase = corpus_dir / "suitcase_corpus"
    if suitcase.is_dir():
        warn.add("suitcase_corpus/ (spontaneous speech, not segmented) is not used", str(suitcase))
    spk_dirs = sorted(
        d
        for d in corpus_dir.iterdir()
        if d.is_dir()
        and d.name != "suitcase_corpus"  # spontaneous speech, one long file per speaker
        and ((d / "wav").is_dir() or (d / "transcript").is_dir())
    )
    if not spk_dirs:
        raise CorpusError(
            f"{corpus_dir}: no <SPEAKER>/wav or <SPEAKER>/transcript directories; expected "
            "the L2-ARCTIC layout (e.g. ABA/wav/arctic_a0001.wav, ABA/transcript/arctic_a0001.txt)"
        )
    found = {d.name for d in spk_dirs}
    for spk in sorted(set(SPEAKERS) - found):
        warn.add("speaker of the corpus metadata has no directory", spk)
    for name, chosen in (("test", test_speakers), ("dev", dev_speakers)):
        if not set(chosen) & found:
            warn.explain_empty(
                name,
                f"none of its speakers ({', '.join(chosen) or 'none given'}) is in {corpus_dir}; "
                f"choose them with --{name}-speakers",
            )
    splits: dict[str, list[Utterance]] = {"train": [], "dev": [], "test": []}
    for d in spk_dirs:
        spk = d.name
        if spk not in SPEAKERS:
            warn.add("speaker not in the L2-ARCTIC speaker table (accent/gender unk)", spk)
        accent, gender = SPEAKERS.get(spk, (None, None))
        wavs = (
            {p.stem: p for p in sorted((d / "wav").glob("*.wav"))} if (d / "wav").is_dir() else {}
        )
        txts = (
            {p.stem: p for p in sorted((d / "transcript").glob("*.txt"))}
            if (d / "transcript").is_dir()
            else {}
        )
        if not wavs:
            warn.add("speaker without audio", f"{spk} ({d / 'wav'})")
        for stem in sorted(set(wavs) - set(txts)):
            warn.add("audio without a transcript (skipped)", str(wavs[stem]))
        for stem in sorted(set(txts) - set(wavs)):
            warn.add("transcript without audio (skipped)", str(txts[stem]))
        split = "test" if spk in test_speakers else "dev" if spk in dev_speakers else "train"
        for stem in sorted(set(wavs) & set(txts)):
            text = normalize_text(read_metadata_text(txts[stem], warn))
            if not text:
                warn.add("empty transcript (skipped)", str(txts[stem]))
                continue
            splits[split].append(
                Utterance(f"{spk}-{stem}", spk, wavs[stem], text, accent=accent, gender=gender)
            )
    return write_splits("l2arctic", splits, out_dir, warn, overwrite=overwrite)
