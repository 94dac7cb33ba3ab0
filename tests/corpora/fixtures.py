"""Tiny fixture trees in the official layouts of the real corpora (generated, never downloaded).

Each ``make_<corpus>(root, malformed=False)`` writes a few speakers with 0.2 s tones in the
corpus's audio format (wav, flac, mp3) and metadata with its real names, columns and
encodings, and returns the directory to pass to ``prepare_<corpus>``. With
``malformed=True`` the tree also holds the usual metadata faults: a UTF-8 BOM, CRLF line
ends, a missing accent field, a speaker in the metadata without audio, audio without a
transcript (and the reverse).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def tone(path: Path, seconds: float = 0.2, freq: float = 220.0) -> Path:
    """Write a short tone; the format follows the extension (.wav, .flac, .mp3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(SR * seconds)) / SR
    sf.write(str(path), (0.1 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)
    return path


def write(path: Path, text: str, *, bom: bool = False, crlf: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.replace("\n", "\r\n") if crlf else text
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8"))
    return path


# ------------------------------------------------------------------------- L2-ARCTIC

L2_SENTENCES = {
    "arctic_a0001": "Author of the danger trail, Philip Steels, etc.",
    "arctic_a0002": "Not at this particular case, Tom, apologized Whittemore.",
}


def make_l2arctic(root: Path, *, malformed: bool = False) -> Path:
    """All 24 speakers, two utterances each (``<SPK>/wav``, ``<SPK>/transcript``)."""
    from moe_asr.corpora.l2arctic import SPEAKERS

    corpus = root / "l2arctic_release_v5"
    for spk in SPEAKERS:
        if malformed and spk == "ABA":
            continue  # a speaker of the metadata without audio
        for stem, text in L2_SENTENCES.items():
            tone(corpus / spk / "wav" / f"{stem}.wav")
            write(corpus / spk / "transcript" / f"{stem}.txt", text + "\n")
    tone(corpus / "suitcase_corpus" / "wav" / "aba.wav")  # spontaneous part: not used
    write(corpus / "suitcase_corpus" / "transcript" / "aba.txt", "so the story begins\n")
    if malformed:
        write(
            corpus / "HKK" / "transcript" / "arctic_a0001.txt",
            "Author of the danger trail, Philip Steels, etc.\n",
            bom=True,
            crlf=True,
        )
        tone(corpus / "BWC" / "wav" / "arctic_b0001.wav")  # audio without a transcript
        write(corpus / "BWC" / "transcript" / "arctic_b0002.txt", "No audio for me.\n")
        tone(corpus / "XYZ" / "wav" / "arctic_a0001.wav")  # speaker not in the table
        write(corpus / "XYZ" / "transcript" / "arctic_a0001.txt", "Unknown speaker.\n")
    return corpus


# ------------------------------------------------------------------------- VCTK

# speaker, age, gender, accent, region
VCTK_SPEAKERS = [
    ("p225", "23", "F", "English", "Southern  England"),
    ("p226", "22", "M", "English", "Surrey"),
    ("p227", "38", "M", "English", "Cumbria"),
    ("p228", "22", "F", "English", "Southern  England"),
    ("p234", "22", "F", "Scottish", "West  Dumfries"),
    ("p237", "22", "M", "Scottish", "Fife"),
    ("p238", "22", "F", "NorthernIrish", "Belfast"),
    ("p294", "33", "F", "American", "San  Francisco"),
    ("p315", "18", "M", "American", "Connecticut"),
]
VCTK_TEXT = {
    "001": "Please call Stella.",
    "002": "Ask her to bring these things with her from the store.",
}


def make_vctk(root: Path, *, layout: str = "0.92", malformed: bool = False) -> Path:
    """VCTK 0.92 (``wav48_silence_trimmed/*_mic{1,2}.flac``) or the old VCTK-Corpus
    (``wav48/*.wav``, numeric ids in speaker-info.txt). p315 has no transcripts."""
    corpus = root / ("VCTK-Corpus-0.92" if layout == "0.92" else "VCTK-Corpus")
    header = "ID  AGE  GENDER  ACCENTS  REGION" + (" COMMENTS " if layout == "0.92" else "")
    rows = [header]
    for spk, age, gender, accent, region in VCTK_SPEAKERS:
        sid = spk if layout == "0.92" else spk[1:]
        if malformed and spk == "p238":
            rows.append(f"{sid}  {age}  {gender}")  # accent field missing
        else:
            rows.append(f"{sid}  {age}  {gender}    {accent}    {region}")
    if malformed:
        rows.append(("p999" if layout == "0.92" else "999") + "  30  M    Irish    Dublin")
    write(corpus / "speaker-info.txt", "\n".join(rows) + "\n", bom=malformed, crlf=malformed)
    for spk, *_ in VCTK_SPEAKERS:
        for n, text in VCTK_TEXT.items():
            if layout == "0.92":
                tone(corpus / "wav48_silence_trimmed" / spk / f"{spk}_{n}_mic1.flac")
                tone(corpus / "wav48_silence_trimmed" / spk / f"{spk}_{n}_mic2.flac", freq=330)
            else:
                tone(corpus / "wav48" / spk / f"{spk}_{n}.wav")
            if spk != "p315":
                write(corpus / "txt" / spk / f"{spk}_{n}.txt", text + "\n")
    if malformed:
        name = "p225_003_mic1.flac" if layout == "0.92" else "p225_003.wav"
        sub = "wav48_silence_trimmed" if layout == "0.92" else "wav48"
        tone(corpus / sub / "p225" / name)  # audio without a transcript
    return corpus


# ------------------------------------------------------------------------- Common Voice

CV_OLD = "client_id path sentence up_votes down_votes age gender accent locale segment".split()
CV_NEW = (
    "client_id path sentence_id sentence sentence_domain up_votes down_votes age gender "
    "accents variant locale segment"
).split()
# client, accent (old code, new free text), gender old/new
CV_CLIENTS = {
    "train": [
        ("a1" * 32, "us", "United States English", "male", "male_masculine"),
        ("b2" * 32, "england", "England English", "female", "female_feminine"),
        ("c3" * 32, "indian", "India and South Asia (India, Pakistan, Sri Lanka)", "", ""),
        ("d4" * 32, "", "", "female", "female_feminine"),
    ],
    "dev": [("e5" * 32, "scotland", "Scottish English", "male", "male_masculine")],
    "test": [
        ("f6" * 32, "canada", "Canadian English,Non native speaker", "female", "female_feminine")
    ],
}


def make_commonvoice(root: Path, *, version: str = "new", malformed: bool = False) -> Path:
    """``cv-corpus-*/en/{clips/*.mp3, train.tsv, dev.tsv, test.tsv}``; ``version`` "old"
    has the ``accent`` column, "new" the free-text ``accents`` plus newer columns."""
    lang = (
        root
        / ("cv-corpus-5.1-2020-06-22" if version == "old" else "cv-corpus-17.0-2024-03-15")
        / "en"
    )
    cols = CV_OLD if version == "old" else CV_NEW
    n = 0
    for split, clients in CV_CLIENTS.items():
        rows = []
        for client, old_acc, new_acc, old_g, new_g in clients:
            for _ in range(2):
                n += 1
                clip = f"common_voice_en_{n}.mp3"
                tone(lang / "clips" / clip)
                values = {
                    "client_id": client,
                    "path": clip,
                    "sentence": f"Hello, world number {n}!",
                    "sentence_id": f"s{n}",
                    "sentence_domain": "",
                    "up_votes": "2",
                    "down_votes": "0",
                    "age": "twenties",
                    "gender": old_g if version == "old" else new_g,
                    "accent": old_acc,
                    "accents": new_acc,
                    "variant": "",
                    "locale": "en",
                    "segment": "",
                }
                rows.append("\t".join(values[c] for c in cols))
        header_cols = cols
        if malformed and split == "test":
            header_cols = [c for c in cols if c not in ("accent", "accents")]
            rows = [
                "\t".join(
                    r.split("\t")[i] for i, c in enumerate(cols) if c not in ("accent", "accents")
                )
                for r in rows
            ]
        if malformed and split == "train":
            rows.append(
                "\t".join(
                    {"client_id": "a1" * 32, "path": "missing_clip.mp3"}.get(c, "x") for c in cols
                )
            )
            rows.append(
                "\t".join(
                    {
                        "client_id": "f6" * 32,
                        "path": "common_voice_en_1.mp3",
                        "sentence": "Moved speaker.",
                    }.get(c, "")
                    for c in cols
                )
            )
        write(
            lang / f"{split}.tsv",
            "\t".join(header_cols) + "\n" + "\n".join(rows) + "\n",
            bom=malformed,
            crlf=malformed,
        )
    return lang.parent


# ------------------------------------------------------------------------- EdAcc

EDACC_ACCENT_COL = "How would you describe your accent in English? (e.g. Italian, Glaswegian)"
EDACC_SPEAKERS = {  # participant -> (gender, accent answer)
    "EDACC-C01-A": ("Female", "Jamaican accent"),
    "EDACC-C01-B": ("Male", "Nigerian"),
    "EDACC-C02-A": ("Male", "Scottish (Fife)"),
    "EDACC-C02-B": ("Female", "Standard Indian English"),
    "EDACC-C03-A": ("Male", "American accent"),
    "EDACC-C03-B": ("Female", "Italian"),
    "EDACC-C04-A": ("Female", ""),
    "EDACC-C04-B": ("Male", "Portuguese"),
    "EDACC-C06-A": ("Male", "Southern London"),
    "EDACC-C06-B": ("Male", "Mostly West Coast American with some Australian Intonation"),
}


def make_edacc(root: Path, *, malformed: bool = False) -> Path:
    """``edacc_v1.0/{data/*.wav, dev/, test/, linguistic_background.csv}``; dev holds
    conversations C01-C04, test C06; each conversation is one 1.2 s recording."""
    corpus = root / "edacc" / "edacc_v1.0"
    splits = {"dev": ["EDACC-C01", "EDACC-C02", "EDACC-C03", "EDACC-C04"], "test": ["EDACC-C06"]}
    if malformed:
        splits["test"].append("EDACC-C07")  # segments of a recording that is missing
    for split, convs in splits.items():
        seg, text, u2s = [], [], []
        for conv in convs:
            if conv != "EDACC-C07":
                tone(corpus / "data" / f"{conv}.wav", seconds=1.2)
            for i, (side, words) in enumerate(
                [
                    ("A", "<laugh> Hello, how ARE you?"),
                    ("B", "I'm fine <overlap> thanks."),
                    ("A", "<no-speech>"),
                ]
            ):
                utt = f"{conv}-{i:09d}"
                seg.append(f"{utt} {conv} {0.4 * i:.2f} {0.4 * i + 0.35:.2f}")
                text.append(f"{utt} {words}")
                u2s.append(f"{utt} {conv}-{side}")
        write(corpus / split / "segments", "\n".join(seg) + "\n")
        write(corpus / split / "text", "\n".join(text) + "\n")
        write(corpus / split / "utt2spk", "\n".join(u2s) + "\n")
        write(corpus / split / "conv.list", "\n".join(convs) + "\n")
    lines = ['PARTICIPANT_ID,What is your gender?,"' + EDACC_ACCENT_COL + '"']
    for spk, (gender, accent) in EDACC_SPEAKERS.items():
        if malformed and spk == "EDACC-C03-B":
            continue  # a speaker missing from the metadata
        lines.append(f'{spk},{gender},"{accent}"')
    write(
        corpus / "linguistic_background.csv", "\n".join(lines) + "\n", bom=malformed, crlf=malformed
    )
    return corpus.parent


# ------------------------------------------------------------------------- AESRC2020

AESRC_DIRS = {
    "American English Speech Data": ["G00001", "G00002", "G00003"],
    "British English Speech Data": ["G00011", "G00012", "G00013"],
    "Chinese Speaking English Speech Data": ["G00021", "G00022"],
    "Korean Speaking English Speech Data": ["G00031"],
}


def make_aesrc(root: Path, *, malformed: bool = False) -> Path:
    """``<Accent> English Speech Data/<G.....>/<G.....S1001>.{wav,txt,metadata}``."""
    corpus = root / "AESRC2020"
    for acc_dir, spks in AESRC_DIRS.items():
        for k, spk in enumerate(spks):
            for n in (1001, 1002):
                stem = f"{spk}S{n}"
                tone(corpus / acc_dir / spk / f"{stem}.wav")
                write(corpus / acc_dir / spk / f"{stem}.txt", "IT'S A NICE DAY, ISN'T IT?\n")
                write(
                    corpus / acc_dir / spk / f"{stem}.metadata",
                    f"SEX {'Male' if k % 2 else 'Female'}\nAGE 25\n",
                )
    if malformed:
        tone(corpus / "American English Speech Data" / "G00001" / "G00001S1003.wav")
        write(corpus / "README" / "notes.txt", "not an accent dir\n")
    return corpus


# ------------------------------------------------------------------------- LibriSpeech

LIBRI_SUBSETS = {
    "train-clean-100": ["19", "26"],
    "dev-clean": ["84"],
    "test-clean": ["121"],
    "test-other": ["1688"],
}


def make_librispeech(root: Path, *, malformed: bool = False) -> Path:
    """``LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` + ``.trans.txt``."""
    corpus = root / "LibriSpeech"
    spk_lines = [
        "; Some speakers of LibriSpeech",
        ";ID  |SEX| SUBSET           |MINUTES| NAME",
        "19   | F | train-clean-100  | 25.19 | Kara Shallenberg",
        "26   | M | train-clean-100  | 25.08 | Denny Sayers",
        "84   | F | dev-clean        |  8.02 | Christie Nowak",
        "121  | F | test-clean       |  8.02 | Nikolle Doolin",
    ]
    if not malformed:
        spk_lines.append("1688 | M | test-other       |  8.02 | Ray Clare")
    write(corpus / "SPEAKERS.TXT", "\n".join(spk_lines) + "\n")
    for subset, spks in LIBRI_SUBSETS.items():
        for spk in spks:
            chap = "198"
            d = corpus / subset / spk / chap
            lines = []
            for n in range(2):
                utt = f"{spk}-{chap}-{n:04d}"
                tone(d / f"{utt}.flac")
                lines.append(f"{utt} NORTHANGER ABBEY'S CHAPTER {n}")
            if malformed and spk == "19":
                lines.append(f"{spk}-{chap}-0009 A LINE WITHOUT AUDIO")
                tone(d / f"{spk}-{chap}-0010.flac")
            write(d / f"{spk}-{chap}.trans.txt", "\n".join(lines) + "\n")
    return corpus


# ------------------------------------------------------------------------- checks


def read_table(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(" ")
        out[key] = value
    return out


def assert_valid_and_disjoint(result) -> dict[str, dict[str, str]]:
    """Every split passes ``validate-data`` (audio opened) and no speaker is in two splits;
    returns split -> utt2spk."""
    from moe_asr.data.datadir import validate_datadir

    u2s = {}
    for split, path in result.splits.items():
        problems = validate_datadir(path, check_audio=True)
        assert problems == [], f"{split}: {[str(p) for p in problems]}"
        u2s[split] = read_table(path / "utt2spk")
        for entry in read_table(path / "wav.scp").values():
            assert Path(entry).is_absolute(), entry
    names = sorted(u2s)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = set(u2s[a].values()) & set(u2s[b].values())
            assert not shared, f"speakers {shared} in both {a} and {b}"
    return u2s
