"""Scoring from files: Kaldi ``text``, ``hyp.txt`` and ``utt2<group>`` tables.

Errors name the file they concern; ``utt2spk`` next to the reference (if present)
gives the speaker ids of the trn files. The reference may be a data dir (its ``text``);
a group given by name alone (``accent``) is that data dir's ``utt2accent``.
"""

from __future__ import annotations

from pathlib import Path

from moe_asr.data.datadir import read_table
from moe_asr.scoring.compare import CompareReport, compare
from moe_asr.scoring.core import ScoreReport, ScoringError, score
from moe_asr.scoring.normalize import Normalizer, NormalizerError, load_word_map

__all__ = [
    "parse_group_spec",
    "read_groups",
    "resolve_ref",
    "make_normalizer",
    "score_files",
    "compare_files",
]


def resolve_ref(ref: str | Path) -> Path:
    """The reference ``text`` file: ``ref`` itself, or ``ref/text`` for a data dir."""
    ref = Path(ref)
    if ref.is_dir():
        if not (ref / "text").is_file():
            raise ScoringError(f"{ref}: a data dir given as --ref needs a `text` file")
        return ref / "text"
    return ref


def parse_group_spec(spec: str, data_dir: str | Path | None = None) -> tuple[str, Path]:
    """``DIR/utt2accent`` -> ("accent", path); ``name=PATH`` names the group explicitly; a
    bare name (``accent``, ``spk``) that is no file is ``data_dir/utt2<name>``."""
    if "=" in spec:
        name, path = spec.split("=", 1)
        if name and "/" not in name:
            return name, Path(path)
    path = Path(spec)
    if data_dir is not None and "/" not in spec and not path.exists():
        name = spec[4:] if spec.startswith("utt2") else spec
        found = Path(data_dir) / f"utt2{name}"
        if not found.is_file():
            have = sorted(p.name for p in Path(data_dir).glob("utt2*"))
            raise ScoringError(
                f"--group {spec}: no file {spec} and no {found} (that dir has: "
                f"{', '.join(have) or 'no utt2* files'})"
            )
        return name, found
    fname = path.name
    return (fname[4:] if fname.startswith("utt2") and len(fname) > 4 else fname), path


def read_groups(specs: list[str], data_dir: str | Path | None = None) -> dict[str, dict[str, str]]:
    """name -> utt -> label for each ``--group`` spec (bare names resolved in ``data_dir``);
    a repeated name is an error."""
    groups: dict[str, dict[str, str]] = {}
    where: dict[str, Path] = {}
    for spec in specs:
        name, path = parse_group_spec(spec, data_dir)
        if name in groups:
            raise ScoringError(
                f"{path}: group name {name!r} is already given by {where[name]}; "
                f"name one of them explicitly with --group NAME={path}"
            )
        groups[name] = read_table(path)
        where[name] = path
    return groups


def make_normalizer(
    *, lowercase: bool = True, strip_punct: bool = True, word_map: str | Path | None = None
) -> Normalizer:
    """A :class:`Normalizer`, with the word map read from ``word_map`` when given."""
    table = load_word_map(word_map) if word_map else {}
    try:
        return Normalizer(lowercase=lowercase, strip_punct=strip_punct, word_map=table)
    except NormalizerError as e:
        raise NormalizerError(f"{word_map}: {e}") from e


def _utt2spk_near(ref: Path) -> dict[str, str] | None:
    f = ref.parent / "utt2spk"
    return read_table(f) if f.is_file() else None


def score_files(
    ref: str | Path,
    hyp: str | Path,
    group_specs: list[str] | None = None,
    *,
    cer: bool = False,
    normalizer: Normalizer | None = None,
    allow_extra: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
) -> ScoreReport:
    """:func:`score` on files: ``ref`` (Kaldi text or its data dir), ``hyp`` (``utt words``;
    words optional)."""
    ref, hyp = resolve_ref(ref), Path(hyp)
    refs = read_table(ref, allow_empty=True)
    hyps = read_table(hyp, allow_empty=True)
    groups = read_groups(list(group_specs or []), ref.parent)
    try:
        return score(
            refs,
            hyps,
            groups,
            cer=cer,
            normalizer=normalizer,
            allow_extra=allow_extra,
            n_boot=n_boot,
            seed=seed,
            utt2spk=_utt2spk_near(ref),
        )
    except ScoringError as e:
        raise ScoringError(f"{hyp} vs {ref}: {e}") from e


def compare_files(
    ref: str | Path,
    hyp_a: str | Path,
    hyp_b: str | Path,
    group_specs: list[str] | None = None,
    *,
    normalizer: Normalizer | None = None,
    allow_extra: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    cer: bool = False,
) -> CompareReport:
    """:func:`compare` on files; the systems are named by their hypothesis paths."""
    ref = resolve_ref(ref)
    refs = read_table(ref, allow_empty=True)
    hyps = [read_table(Path(h), allow_empty=True) for h in (hyp_a, hyp_b)]
    groups = read_groups(list(group_specs or []), ref.parent)
    for h, table in zip((hyp_a, hyp_b), hyps):
        extra = sorted(set(table) - set(refs))
        if extra and not allow_extra:
            raise ScoringError(
                f"{h}: {len(extra)} hypothesis utterance(s) not in {ref}: "
                f"{' '.join(extra[:5])}; pass --allow-extra to ignore them"
            )
    return compare(
        refs,
        hyps[0],
        hyps[1],
        groups,
        normalizer=normalizer,
        allow_extra=allow_extra,
        n_boot=n_boot,
        seed=seed,
        names=(str(hyp_a), str(hyp_b)),
        cer=cer,
    )
