"""Decode a Kaldi data dir with a model package.

Writes to ``OUT``:

- ``hyp.txt``: ``utt-id words`` (Kaldi text, sorted), the input of ``moe-asr score``;
- ``nbest.txt``: ``utt-id rank score words`` for up to ``nbest`` hypotheses;
- ``errors.txt``: ``utt-id reason`` for every utterance that could not be decoded
  (empty when none failed); the others are decoded regardless;
- ``decode.json``: mode, options, counts, audio seconds, decode seconds and the
  real-time factor (decode time, audio loading and features included, over audio time).

Utterances are sorted by duration and decoded ``batch_size`` at a time; when a batch
fails, its items are retried one by one so that only the bad one is reported.

``labels_from_data`` (``moe-asr decode --force-from-data accent``): each utterance is routed
as if its label had the value in ``DATA/utt2<label>`` (the known-label case beside the
label-free one); utterances are then batched per label value. A condition label of a model
trained with augmentation labels (noise, snr, reverb) is read as training read it
(``data_label_values``): ``utt2snr``'s dB become the model's SNR buckets.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import Tensor

from moe_asr.config import AugmentConfig, DecodeConfig
from moe_asr.data.augment import Condition, condition_label_names
from moe_asr.data.datadir import DataDir
from moe_asr.decode.search import Recognition, Recognizer
from moe_asr.errors import UserError
from moe_asr.files import atomic_write_text, check_outputs

__all__ = ["DECODE_FILES", "DecodeSummary", "data_label_values", "decode_datadir"]

DECODE_FILES = ("hyp.txt", "nbest.txt", "errors.txt", "decode.json")  # what decode writes


@dataclass
class DecodeSummary:
    mode: str
    num_utts: int
    num_decoded: int
    num_errors: int
    audio_seconds: float
    decode_seconds: float
    rtf: float
    options: dict = field(default_factory=dict)
    out_dir: str = ""


def _reason(err: BaseException) -> str:
    if isinstance(err, UserError):
        return " ".join(str(err).split())
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def decode_datadir(
    package,
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: DecodeConfig,
    *,
    routing=None,
    labels_from_data: tuple[str, ...] = (),
    progress: bool = True,
    overwrite: bool = False,
) -> DecodeSummary:
    """Decode every utterance of ``data_dir`` into ``out_dir`` (created); see module doc.

    ``package``: a loaded ``ModelPackage``; ``routing``: RoutingOptions or None (label-free);
    ``labels_from_data``: labels forced per utterance from ``utt2<label>`` (see module doc).
    An ``out_dir`` holding any of ``DECODE_FILES`` is refused unless ``overwrite``; with it
    only those files are replaced. Every file is written atomically.
    """
    from moe_asr.audio import audio_info, load_audio
    from moe_asr.data.datadir import load_datadir, write_table
    from moe_asr.data.features import compute_fbank
    from moe_asr.progress import progress_bar

    out = Path(out_dir)
    check_outputs(out, DECODE_FILES, overwrite)
    dd = load_datadir(data_dir)
    errors: dict[str, str] = {}
    # before any output or audio scan: a missing utt2<label> file stops the job here
    route_of = _routing_per_utterance(package, dd, routing, labels_from_data, errors)
    out.mkdir(parents=True, exist_ok=True)
    recognizer = Recognizer.from_package(package, cfg)
    fcfg = package.config.data.features
    sr = fcfg.sample_rate
    hyps: dict[str, str] = {}
    nbest_lines: dict[str, list[str]] = {}
    audio_seconds = 0.0
    start_time = time.perf_counter()

    durations: dict[str, float] = {}
    for utt in dd.utt_ids:
        if dd.utt2dur is not None and utt in dd.utt2dur:
            durations[utt] = dd.utt2dur[utt]
            continue
        entry, s, e = dd.audio_of(utt)
        if s is not None and e is not None and e > 0:
            durations[utt] = e - s
            continue
        try:
            durations[utt] = audio_info(entry).duration
        except UserError:
            durations[utt] = 0.0  # reported when loaded
    keys = {u: route_of[u][0] for u in dd.utt_ids if u in route_of}
    order = sorted(keys, key=lambda u: (keys[u], durations[u], u))

    def features(utt: str) -> tuple[Tensor, float]:
        entry, s, e = dd.audio_of(utt)
        wav = load_audio(entry, sr, s, e)
        feats = compute_fbank(wav, fcfg)
        if feats.shape[0] < recognizer.min_frames:
            raise UserError(
                f"{len(wav) / sr:.3f} s of audio is too short for the model "
                f"(needs {recognizer.min_frames} feature frames)"
            )
        return feats, len(wav) / sr

    def emit(utt: str, rec: Recognition, seconds: float) -> None:
        nonlocal audio_seconds
        audio_seconds += seconds
        hyps[utt] = rec.text
        nbest_lines[utt] = [
            f"{utt} {rank} {score:.4f} {text}".rstrip()
            for rank, (text, score) in enumerate(rec.nbest, 1)
        ]

    bar = progress_bar(len(dd.utt_ids), desc=f"decode {cfg.mode}", unit="utt", disable=not progress)
    bar.update(len(dd.utt_ids) - len(order))  # utterances refused by their label
    for batch_utts in _batches(order, keys, cfg.batch_size):
        routing = route_of[batch_utts[0]][1]
        batch: list[tuple[str, Tensor, float]] = []
        for utt in batch_utts:
            try:
                feats, seconds = features(utt)
            except Exception as e:  # noqa: BLE001 - one bad utterance must not stop the job
                errors[utt] = _reason(e)
                continue
            batch.append((utt, feats, seconds))
        try:
            recs = recognizer.recognize([f for _, f, _ in batch], routing) if batch else []
            for (utt, _, sec), rec in zip(batch, recs):
                emit(utt, rec, sec)
        except Exception:  # noqa: BLE001 - retry one by one to isolate the bad item
            for utt, feats, sec in batch:
                try:
                    emit(utt, recognizer.recognize([feats], routing)[0], sec)
                except Exception as e:  # noqa: BLE001
                    errors[utt] = _reason(e)
        bar.update(len(batch_utts))
        bar.set_postfix(errors=len(errors))
    bar.close()
    elapsed = time.perf_counter() - start_time

    write_table(out / "hyp.txt", hyps)
    atomic_write_text(
        out / "nbest.txt",
        "".join(line + "\n" for utt in sorted(nbest_lines) for line in nbest_lines[utt]),
    )
    atomic_write_text(out / "errors.txt", "".join(f"{u} {errors[u]}\n" for u in sorted(errors)))
    summary = DecodeSummary(
        mode=cfg.mode,
        num_utts=len(dd.utt_ids),
        num_decoded=len(hyps),
        num_errors=len(errors),
        audio_seconds=round(audio_seconds, 3),
        decode_seconds=round(elapsed, 3),
        rtf=round(elapsed / audio_seconds, 5) if audio_seconds > 0 else float("nan"),
        options={**asdict(cfg), "labels_from_data": list(labels_from_data)},
        out_dir=str(out),
    )
    atomic_write_text(out / "decode.json", json.dumps(asdict(summary), indent=1) + "\n")
    return summary


def _routing_per_utterance(package, dd, routing, names, errors: dict[str, str]) -> dict:
    """utt -> (batch key, RoutingOptions | None). With ``names``: the routing that forces each
    utterance's own values (on top of ``routing``'s forced values and expert mask); an
    utterance without a value, or with one the model does not know, goes to ``errors``."""
    if not names:
        return {u: ("", routing) for u in dd.utt_ids}
    base_forced = dict(routing.forced) if routing is not None else {}
    mask = dict(routing.expert_mask) if routing is not None else {}
    values = data_label_values(package.config.data.augment, dd, names)
    cache: dict[str, object] = {}
    out = {}
    for utt in dd.utt_ids:
        missing = [n for n in names if values[n].get(utt) is None]
        if missing:
            errors[utt] = f"no {missing[0]} in {dd.path}/utt2{missing[0]} (--force-from-data)"
            continue
        forced = {**base_forced, **{n: values[n][utt] for n in names}}
        key = ",".join(f"{n}={forced[n]}" for n in sorted(forced))
        if key not in cache:
            try:
                cache[key] = package.model.forced_routing(forced, mask)
            except UserError as e:
                cache[key] = e
        if isinstance(cache[key], UserError):
            errors[utt] = _reason(cache[key])
            continue
        out[utt] = (key, cache[key])
    return out


def data_label_values(
    augment: AugmentConfig, dd: DataDir, names: list[str] | tuple[str, ...]
) -> dict[str, dict[str, str | None]]:
    """name -> utt -> the value of label ``name`` that ``dd`` gives each utterance, as a model
    trained with ``augment`` learnt it: a label that augmentation records (noise, snr,
    reverb) from the utterance's condition (snr as the SNR bucket, not utt2snr's dB), any
    other from ``utt2<name>`` (None or absent: no value). Raises UserError when ``dd`` has
    no ``utt2<name>``."""
    files = {**dd.groups, **dd.extra}
    for name in names:
        if name not in files:
            raise UserError(
                f"--force-from-data {name}: {dd.path}/utt2{name} does not exist; decode "
                f"label-free or with --force {name}=VALUE"
            )
    from_condition = condition_label_names(names, augment)
    conditions = {}  # utt -> its condition's label values, once for all condition labels
    if from_condition:
        edges = augment.snr_buckets
        conditions = {u: Condition.of_datadir(dd, u).labels(edges) for u in dd.utt_ids}
    return {
        name: (
            {u: conditions[u][name] for u in dd.utt_ids if u in files[name]}
            if name in from_condition
            else files[name]
        )
        for name in names
    }


def _batches(order: list[str], keys: dict[str, str], size: int):
    """Runs of at most ``size`` consecutive utterances sharing a key."""
    i = 0
    while i < len(order):
        j = i + 1
        while j < len(order) and j - i < size and keys[order[j]] == keys[order[i]]:
            j += 1
        yield order[i:j]
        i = j
