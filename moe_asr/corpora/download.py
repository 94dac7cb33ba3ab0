"""Downloads for the freely downloadable corpora; the URL is always shown first.

Only LibriSpeech (CC BY 4.0, openslr.org), VCTK 0.92 (CC BY 4.0) and EdAcc (CC BY-SA 4.0,
Edinburgh DataShare) are fetched. L2-ARCTIC, Common Voice and AESRC2020 require agreeing to
terms or applying for access; ``download_corpus`` says where instead.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import urllib.request
import zipfile
from pathlib import Path

from moe_asr.corpora.common import CorpusError
from moe_asr.files import atomic_open, atomic_write_text

__all__ = ["FREE_DOWNLOADS", "MANUAL_DOWNLOADS", "download_urls", "download_corpus"]

_log = logging.getLogger("moe_asr.corpora.download")

_OPENSLR = "https://www.openslr.org/resources/12"
FREE_DOWNLOADS: dict[str, tuple[str, ...]] = {
    "librispeech": tuple(
        f"{_OPENSLR}/{s}.tar.gz" for s in ("dev-clean", "test-clean", "train-clean-100")
    ),
    "vctk": ("https://datashare.ed.ac.uk/bitstream/handle/10283/3443/VCTK-Corpus-0.92.zip",),
    "edacc": ("https://datashare.ed.ac.uk/download/DS_10283_4836.zip",),
}
MANUAL_DOWNLOADS: dict[str, str] = {
    "l2arctic": "request it through the form at https://psi.engr.tamu.edu/l2-arctic-corpus/",
    "commonvoice": "accept the terms at https://commonvoice.mozilla.org/en/datasets and "
    "download the English release there",
    "aesrc": "apply to the AESRC2020 organisers / Datatang (https://www.datatang.com/INTERSPEECH2020)",
}


def download_urls(name: str, train_subsets: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The archives ``download_corpus`` fetches for ``name`` (LibriSpeech: dev-clean,
    test-clean and ``train_subsets``, default train-clean-100)."""
    if name in MANUAL_DOWNLOADS:
        raise CorpusError(f"{name} cannot be downloaded automatically: {MANUAL_DOWNLOADS[name]}")
    if name not in FREE_DOWNLOADS:
        raise CorpusError(f"no download known for corpus {name!r}")
    if name == "librispeech" and train_subsets:
        return tuple(f"{_OPENSLR}/{s}.tar.gz" for s in ("dev-clean", "test-clean", *train_subsets))
    return FREE_DOWNLOADS[name]


def _safe_members(names: list[str], archive: Path, dest: Path) -> None:
    root = dest.resolve()
    for n in names:
        target = (dest / n).resolve()
        if target != root and root not in target.parents:
            raise CorpusError(f"{archive}: member {n!r} would be written outside {dest}")


def _extract(archive: Path, dest: Path) -> list[Path]:
    """Extract a zip/tar archive into ``dest``; return the .tar.gz archives a zip held."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            _safe_members(names, archive, dest)
            z.extractall(dest)
        return [dest / n for n in names if n.endswith(".tar.gz")]
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            members = t.getmembers()
            _safe_members([m.name for m in members], archive, dest)
            bad = [m.name for m in members if m.issym() or m.islnk() or m.isdev()]
            if bad:
                raise CorpusError(f"{archive}: holds links or devices ({bad[0]}...); not extracted")
            t.extractall(dest)
        return []
    raise CorpusError(f"{archive}: not a zip or tar archive (incomplete download?)")


def download_corpus(
    name: str,
    target_dir: str | Path,
    *,
    urls: tuple[str, ...] | None = None,
    train_subsets: tuple[str, ...] | None = None,
) -> Path:
    """Fetch and extract the archives of a freely downloadable corpus into ``target_dir``.

    Each URL is logged before it is fetched; an archive already present is not fetched
    again, and an archive already extracted (``.<archive>.extracted`` marker) is skipped.
    A partial download is written to ``<archive>.part`` and renamed when complete.
    """
    target = Path(target_dir)
    target.mkdir(parents=True, exist_ok=True)
    for url in urls or download_urls(name, train_subsets):
        archive = target / url.rsplit("/", 1)[-1]
        marker = target / f".{archive.name}.extracted"
        if marker.is_file():
            _log.warning("%s: already extracted (remove %s to redo)", archive.name, marker)
            continue
        if not archive.is_file():
            _log.warning("downloading %s -> %s", url, archive)
            try:
                with urllib.request.urlopen(url) as r, atomic_open(archive, "wb") as f:
                    shutil.copyfileobj(r, f, length=1 << 20)
            except OSError as e:  # a partial download never takes the archive's name
                raise CorpusError(f"download of {url} failed: {e}") from e
        nested = _extract(archive, target)
        for inner in nested:
            if inner.is_file():
                _extract(inner, inner.parent)
        atomic_write_text(marker, url + "\n")
    return target
