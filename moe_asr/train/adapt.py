"""Adapt a trained MoE model to a new accent (any label value) from little data:
``moe-asr adapt``. ``adapt_model(AdaptSetup(...))`` writes a normal package.

1. **Data**: the utterances of ``train_data`` whose ``utt2<label>`` is the value (all of
   them when the dir has no ``utt2<label>``) up to ``data.max_utt_seconds``; with
   ``minutes``, the longest prefix of a seeded random order that fits (``select_minutes``:
   deterministic, never over budget, nested in ``minutes`` for one seed). The work copy
   ``EXP/adapt/data`` has ``utt2<label>`` = the value everywhere (the user's dir is never
   modified); a small set is listed repeatedly (``<utt>_rN``) so that an epoch holds at
   least ``epoch_minutes`` of audio. Without ``dev_data`` the dev set is the selection.
   With ``replay_data`` (``moe_asr.train.adapt_data.replay_selection``), ``replay_ratio`` x
   an epoch's audio of utterances of the values the model already knows trains beside it,
   with their own labels, so that shared routers and experts keep serving them.
2. **Vocabulary**: a new value is appended to the label's vocabulary (ids keep their
   meaning); ``LabelGuidance.grown_rows`` grows embedding and estimate-head rows. With
   expert groups of the label (router loss, hard groups, group routers) the value joins an
   existing group (a new one would re-partition the experts): ``group``, else its family in
   the config's ``groups`` when that is a group of the model, else the group the model's
   own label-free routing of the selection prefers (mean ``AsrModel.group_probs``); it is
   added to ``model.moe.guidance.groups`` and starts as the mean of its group's values.
3. **Training**: the trainer (checkpoints, exact resume, logging, ``steps`` updates) from
   the grown model ``EXP/adapt/base.pt`` (``train.init``) with ``train.trainable`` =
   ``params`` (``moe_asr.train.trainable``); a quarter of the model's lr, cosine schedule,
   10% warmup unless ``overrides`` (``--set``) say otherwise; shapes cannot change.
4. **Package**: the weights after the last update, the adaptation's config and
   ``meta["adapt"]`` (options, selection, group choice, steps, parameter counts).

Files: ``EXP/adapt/{adapt.json,base.pt,tokenizer/,data/,dev/}`` beside the trainer's own;
``EXP`` defaults to ``<out dir>/<out stem>_adapt``.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from moe_asr.config import (
    TRAINABLE_SETS,
    VALUE_SET_PREFIX,
    Config,
    ConfigError,
    apply_overrides,
    validate_config,
)
from moe_asr.errors import UserError
from moe_asr.files import DirLock, atomic_write_text
from moe_asr.train.adapt_data import (
    AdaptDataError,
    ReplayDraw,
    repeat_datadir,
    replay_selection,
    select_minutes,
    select_value,
    subset,
    value_durations,
)
from moe_asr.train.trainable import set_trainable

__all__ = [
    "PARAM_SETS",
    "AdaptError",
    "AdaptSetup",
    "AdaptResult",
    "select_minutes",
    "adapt_model",
]

# `--params` choices, cheapest first (the names of train.trainable; `value`: the new
# value's own rows, train.trainable = value:NAME=VALUE)
PARAM_SETS = ("value", "router", "router+experts", "all")
assert set(PARAM_SETS) == {"value", *TRAINABLE_SETS}


class AdaptError(UserError):
    """An adaptation cannot be made (bad model, label, data, budget or output)."""


@dataclass(kw_only=True)
class AdaptSetup:
    model: Path  # the package to adapt
    train_data: Path  # Kaldi data dir of the new accent (or with utt2<label> naming it)
    label: str  # e.g. "accent"
    value: str  # e.g. "pt"
    out: Path  # the adapted package
    params: str = "router"  # value | router | router+experts | all
    minutes: float | None = None  # None: every utterance of the value
    dev_data: Path | None = None  # None: the selection itself
    exp_dir: Path | None = None  # None: <out dir>/<out stem>_adapt
    group: str | None = None  # expert group of a new value (models with expert groups)
    seed: int = 0
    steps: int = 200  # updates
    epoch_minutes: float = 10.0  # audio per epoch at least (repeats a small set); 0 = off
    replay_data: Path | None = None  # data of the values the model knows, trained beside
    replay_ratio: float = 1.0  # replay audio per second of the new value's audio per epoch
    overrides: list[str] = field(default_factory=list)  # --set KEY=VALUE (train./data.)
    overwrite: bool = False
    resume: bool = False


@dataclass
class AdaptResult:
    path: Path
    exp_dir: Path
    plan: dict  # what EXP/adapt/adapt.json holds
    steps: int
    stopped_because: str
    trainable: int
    total: int


def adapt_model(setup: AdaptSetup) -> AdaptResult:
    """Adapt per ``setup`` (see the module docstring). Every check that can fail on the
    inputs runs before anything is written; AdaptError names what to pass instead."""
    from moe_asr.data.datadir import load_datadir, write_datadir
    from moe_asr.package import load_package, save_package
    from moe_asr.train.checkpoint import load_checkpoint
    from moe_asr.train.trainer import TrainSetup, train

    out = Path(setup.out)
    exp = Path(setup.exp_dir) if setup.exp_dir else out.parent / f"{out.stem}_adapt"
    work = exp / "adapt"
    _check_options(setup, out)
    pkg = load_package(setup.model)
    guidance = _check_model(setup, pkg)
    stored = _check_exp(setup, exp, work)
    cfg = _adapt_config(setup, pkg.config, work / "base.pt")
    dd = load_datadir(setup.train_data)
    try:
        durations = value_durations(dd, setup.label, setup.value, cfg.data)
        where = f"{setup.train_data} ({setup.label}={setup.value})"
        utts = select_value(durations, setup.minutes, setup.seed, where)
    except AdaptDataError as e:
        raise AdaptError(str(e)) from e
    if setup.dev_data is not None:
        load_datadir(setup.dev_data)  # a bad dev dir fails now, not after the work files
    selection = subset(dd, utts)
    selection.groups[setup.label] = {u: setup.value for u in utts}
    selection.utt2dur = {u: durations[u] for u in utts}
    plan = _plan(setup, exp, utts, durations)
    replay = _replay(setup, plan, cfg)
    if replay is not None:
        plan.update(
            replay_utts=replay.utts,
            replay_seconds=round(replay.seconds, 3),
            replay_values=replay.values,
        )
    # a resumed run trains on the work data it wrote; a new one fails here on a clash first
    train_dir = _train_datadir(setup, selection, plan, replay) if stored is None else None
    if stored is not None:
        _same_run(stored, plan, exp)
        plan.update({k: stored[k] for k in ("group", "group_from", "group_probs")})
    else:
        plan.update(_choose_group(setup, pkg, guidance, selection))
    vocab, cfg.model, base = _grow(setup, pkg, guidance, plan["group"], cfg)
    total = sum(p.numel() for p in base.parameters())
    trainable = set_trainable(base, _trainable(setup))

    with DirLock(work, what="adaptation"):
        if stored is None:
            for d in ("data", "dev"):
                shutil.rmtree(work / d, ignore_errors=True)  # an earlier attempt's (--overwrite)
            assert train_dir is not None
            write_datadir(train_dir, work / "data")
            if setup.dev_data is None:
                write_datadir(selection, work / "dev")
            pkg.tokenizer.save(work / "tokenizer")
            save_package(
                work / "base.pt",
                config=cfg,
                model_state=base.state_dict(),
                tokenizer_bytes=pkg.tokenizer.to_bytes(),
                label_vocab=vocab,
                meta={"adapt_base": {"from": plan["model"]}},
            )
            atomic_write_text(work / "adapt.json", json.dumps(plan, indent=1) + "\n")
        result = train(
            TrainSetup(
                config=cfg,
                train_data=work / "data",
                dev_data=Path(setup.dev_data) if setup.dev_data else work / "dev",
                tokenizer_dir=work / "tokenizer",
                exp_dir=exp,
                resume=setup.resume,
                label_vocab=vocab,
            )
        )
        final = load_checkpoint(exp / "checkpoints" / "last.pt")["model"]
        meta = {
            "adapt": {
                **{k: v for k, v in plan.items() if k != "utts"},
                "num_utts": len(utts),
                "exp": str(exp),
                "steps_done": result.steps,
                "stopped_because": result.stopped_because,
                "trainable_params": trainable,
                "total_params": total,
                "source_meta": dict(pkg.meta),
            }
        }
        save_package(
            out,
            config=cfg,
            model_state=final,
            tokenizer_bytes=pkg.tokenizer.to_bytes(),
            label_vocab=vocab,
            meta=meta,
        )
    return AdaptResult(out, exp, plan, result.steps, result.stopped_because, trainable, total)


# ----------------------------------------------------------------------------- checks


def _check_options(setup: AdaptSetup, out: Path) -> None:
    if setup.params not in PARAM_SETS:
        raise AdaptError(f"--params {setup.params}: use one of {', '.join(PARAM_SETS)}")
    if setup.minutes is not None and not setup.minutes > 0:
        raise AdaptError(f"--minutes {setup.minutes:g}: must be > 0 (e.g. 1, 5 or 15)")
    if setup.steps < 1:
        raise AdaptError(f"--steps {setup.steps}: must be >= 1 (the number of updates)")
    if setup.epoch_minutes < 0:
        raise AdaptError(f"--epoch-minutes {setup.epoch_minutes:g}: must be >= 0 (0 = off)")
    if not setup.replay_ratio > 0:
        raise AdaptError(
            f"--replay-ratio {setup.replay_ratio:g}: must be > 0 (e.g. 1: as much replay "
            "audio as adaptation audio); to train without replay, drop --replay-data"
        )
    if not setup.label or not setup.value:
        raise AdaptError("--label: expected NAME=VALUE, e.g. --label accent=pt")
    if out.exists() and out.resolve() == Path(setup.model).resolve():
        raise AdaptError(f"--out {out} is the --model itself; choose another --out")
    if out.exists() and not setup.overwrite:
        raise AdaptError(f"{out}: exists; pass --overwrite to replace it, or another --out")


def _check_model(setup: AdaptSetup, pkg):
    """The model's LabelGuidance; AdaptError for a dense model or one without the label."""
    model = pkg.model
    if not model.is_moe:
        raise AdaptError(
            f"{setup.model}: a dense model (model.ffn: {pkg.config.model.ffn}) has no routers "
            "to adapt; pass a package trained with model.ffn: moe and label guidance"
        )
    if setup.label not in model.guide_names:
        have = ", ".join(model.guide_names)
        instead = (
            f"pass --label <one of {have}>=VALUE"
            if have
            else "pass a model trained with model.moe.guidance.labels"
        )
        raise AdaptError(
            f"{setup.model}: not guided by label {setup.label!r} (its guidance labels: "
            f"{have or 'none'}); {instead}"
        )
    return model.guidance


def _check_exp(setup: AdaptSetup, exp: Path, work: Path) -> dict | None:
    """The stored plan of the run to resume (None for a new run); refuses a new run over
    an earlier one and a resume of nothing. Reads only."""
    last = exp / "checkpoints" / "last.pt"
    plan_path = work / "adapt.json"
    if setup.resume:
        if not plan_path.is_file() or not last.is_file():
            missing = plan_path if not plan_path.is_file() else last
            raise AdaptError(f"{missing}: nothing to resume in {exp}; drop --resume")
        return json.loads(plan_path.read_text(encoding="utf-8"))
    if last.exists() and plan_path.is_file():
        raise AdaptError(
            f"{exp}: holds an earlier adaptation run; pass --resume to continue it, or another "
            "--exp (nothing is overwritten)"
        )
    if last.exists():
        raise AdaptError(f"{exp}: holds a training run, not an adaptation; choose another --exp")
    if plan_path.is_file() and not setup.overwrite:
        raise AdaptError(
            f"{exp}: holds an adaptation that stopped before its first checkpoint; pass "
            "--overwrite to start it again, or another --exp"
        )
    return None


def _same_run(stored: dict, plan: dict, exp: Path) -> None:
    for key, value in plan.items():
        if stored.get(key) != value:
            what = "selected utterances" if key == "utts" else key
            raise AdaptError(
                f"{exp}: the run to resume has other {what} ({_short(stored.get(key))}, now "
                f"{_short(value)}); resume with the options it was started with, or another --exp"
            )


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ----------------------------------------------------------------------------- data


def _plan(setup: AdaptSetup, exp: Path, utts: list[str], durations: dict[str, float]) -> dict:
    """The options and selection of this run (resume compares them), without the group."""
    seconds = sum(durations[u] for u in utts)
    target = setup.epoch_minutes * 60
    return {
        "model": str(Path(setup.model).resolve()),
        "train_data": str(Path(setup.train_data).resolve()),
        "dev_data": str(Path(setup.dev_data).resolve()) if setup.dev_data else None,
        "label": setup.label,
        "value": setup.value,
        "params": setup.params,
        "minutes": setup.minutes,
        "seed": setup.seed,
        "steps": setup.steps,
        "epoch_minutes": setup.epoch_minutes,
        "overrides": list(setup.overrides),
        "group_option": setup.group,
        "replay_data": str(Path(setup.replay_data).resolve()) if setup.replay_data else None,
        "replay_ratio": setup.replay_ratio if setup.replay_data else None,
        "seconds": round(seconds, 3),
        "repeats": max(1, math.ceil(target / seconds)) if target > 0 else 1,
        "utts": utts,
    }


def _replay(setup: AdaptSetup, plan: dict, cfg: Config) -> ReplayDraw | None:
    """The replay utterances (``replay_ratio`` x an epoch of the new value's audio); None
    without ``replay_data`` (the plan then has no replay keys: a run stored before replay
    existed resumes)."""
    if setup.replay_data is None:
        return None
    target = setup.replay_ratio * plan["seconds"] * plan["repeats"]
    try:
        return replay_selection(
            Path(setup.replay_data), setup.label, setup.value, target, setup.seed, cfg.data
        )
    except AdaptDataError as e:
        raise AdaptError(str(e)) from e


def _train_datadir(setup: AdaptSetup, selection, plan: dict, replay: ReplayDraw | None):
    """The training data: the selection, repeated, beside the drawn replay utterances."""
    from moe_asr.data.datadir import DataDirError, combine_datadirs

    train = repeat_datadir(selection, plan["repeats"])
    if replay is None:
        return train
    try:
        return combine_datadirs([train, replay.data])
    except DataDirError as e:
        raise AdaptError(
            f"--replay-data {setup.replay_data}: cannot train beside {setup.train_data} ({e}); "
            "pass a replay dir laid out as the adaptation data (both with or both without "
            "segments, distinct utterance ids)"
        ) from e


# ----------------------------------------------------------------------------- model


# train.* keys that adapt's own options set
_SET_BY_OPTIONS = {
    "train.init": "--model",
    "train.trainable": "--params",
    "train.max_steps": "--steps",
    "train.seed": "--seed",
}


def _trainable(setup: AdaptSetup) -> str:
    """train.trainable of ``--params``."""
    if setup.params == "value":
        return f"{VALUE_SET_PREFIX}{setup.label}={setup.value}"
    return setup.params


def _adapt_config(setup: AdaptSetup, config: Config, base: Path) -> Config:
    """The package's config with the adaptation's training settings and ``--set``."""
    for item in setup.overrides:
        key = item.split("=", 1)[0].strip()
        if key in _SET_BY_OPTIONS:
            raise AdaptError(f"--set {key}: adapt sets it from {_SET_BY_OPTIONS[key]}; use that")
    cfg = copy.deepcopy(config)
    t = cfg.train
    t.seed = setup.seed
    t.init, t.init_noise = str(base.resolve()), 0.0
    t.trainable = _trainable(setup)
    t.max_steps, t.max_epochs = setup.steps, 1_000_000  # the update budget decides
    t.max_minutes, t.patience, t.save_every_steps = 0.0, 0, 0
    t.lr, t.scheduler, t.warmup_steps = t.lr / 4, "cosine", max(1, setup.steps // 10)
    try:
        cfg = apply_overrides(cfg, setup.overrides)
        validate_config(cfg)
    except ConfigError as e:
        raise AdaptError(f"--set: {e}") from e
    return cfg


def _choose_group(setup: AdaptSetup, pkg, guidance, selection) -> dict:
    """group, group_from (--group | config | routing | None) and the routing's group
    probabilities for a new value of a label with expert groups."""
    label, value = setup.label, setup.value
    groups = guidance.router_groups.get(label)
    known = value in pkg.label_vocab.values[label]
    none = {"group": None, "group_from": None, "group_probs": None}
    if known or groups is None:
        if setup.group is not None:
            why = (
                f"{label} {value} is known to the model"
                if known
                else f"the model has no expert groups of {label}"
            )
            raise AdaptError(f"--group {setup.group}: {why}; drop --group")
        return none
    if label != guidance.group_label:
        raise AdaptError(
            f"{label} has one expert group per value for the router label loss (only the "
            f"group label {guidance.group_label!r} takes values into existing groups); pass "
            f"--label {guidance.group_label}=VALUE or a value of {label} the model knows"
        )
    names = list(groups.names)
    if setup.group is not None:
        if setup.group not in names:
            raise AdaptError(
                f"--group {setup.group}: not an expert group of {label} in this model; its "
                f"groups are {', '.join(names)}"
            )
        return {**none, "group": setup.group, "group_from": "--group"}
    configured = pkg.config.model.moe.guidance.groups.get(value)
    if configured in names:
        return {**none, "group": configured, "group_from": "config"}
    probs = _routing_group_probs(pkg, selection)
    best = max(range(len(names)), key=lambda g: (probs[g], -g))
    return {
        "group": names[best],
        "group_from": "routing",
        "group_probs": {n: round(float(p), 6) for n, p in zip(names, probs)},
    }


@torch.no_grad()
def _routing_group_probs(pkg, selection) -> list[float]:
    """Mean over the selected utterances of their label-free group probabilities."""
    from moe_asr.data.dataset import AsrDataset, make_loader, make_sampler

    ds = AsrDataset(selection, None, None, pkg.config.data, train=False)
    total, n = None, 0
    for batch in make_loader(ds, make_sampler(ds, shuffle=False), 0):
        if len(batch) == 0:
            continue
        probs = pkg.model.group_probs(pkg.model.encode(batch.feats, batch.feat_lens))
        assert probs is not None  # the label has groups
        s = probs.probs.sum(0)
        total, n = (s if total is None else total + s), n + len(batch)
    if total is None:
        raise AdaptError(f"{selection.path}: no utterance could be read to choose a group")
    return (total / n).tolist()


def _grow(setup: AdaptSetup, pkg, guidance, group: str | None, cfg: Config):
    """(label vocabulary, model config, model) to adapt: the package's, with a new value
    appended (rows grown by LabelGuidance) and joined to ``group``."""
    from moe_asr.data.labels import LabelVocab
    from moe_asr.model import build_model

    label, value = setup.label, setup.value
    vocab = LabelVocab.from_dict(pkg.label_vocab.to_dict())
    model_cfg = copy.deepcopy(cfg.model)
    state = dict(pkg.model.state_dict())
    if value not in vocab.values[label]:
        gid = None
        if group is not None:
            gid = list(guidance.router_groups[label].names).index(group)
            model_cfg.moe.guidance.groups[value] = group
        rows = guidance.grown_rows(label, gid)
        vocab.values[label].append(value)
        state.update({f"guidance.{k}": v for k, v in rows.items()})
    try:
        model = build_model(model_cfg, pkg.tokenizer.vocab_size, vocab)
    except ConfigError as e:
        raise AdaptError(f"--set: {e}") from e
    own = model.state_dict()
    bad = [k for k in own.keys() | state.keys() if k not in own or k not in state]
    bad += [k for k in own if k in state and own[k].shape != state[k].shape]
    if bad:
        raise AdaptError(
            f"--set: the adapted config builds other weights than --model has (e.g. "
            f"{sorted(bad)[0]}); --set may change training, data, dropout and loss weights, "
            "not the architecture"
        )
    model.load_state_dict(state, strict=True)
    return vocab, model_cfg, model
