"""The training loop: AdamW + warmup schedule, accumulation, clipping, bf16, logging,
per-epoch dev loss/CER, atomic checkpoints with exact resume, early stopping, a
wall-clock budget, NaN/inf skipping, and DDP under torchrun (gloo on CPU, nccl on GPU).

Files (rank 0 only): ``EXP/config.yaml``, ``EXP/train.log``, ``EXP/tensorboard/``,
``EXP/checkpoints/{epoch-N.pt,last.pt}``, ``EXP/checkpoints/history.json``, and with
``train.init`` ``EXP/init.json`` (what was loaded, upcycled, skipped, new).

Host syncs per micro-batch: one, the finite-loss check that decides whether the batch is
skipped (all ranks must agree before ``backward``); per update one more, the finite
gradient-norm check that decides whether the update is skipped. Everything else is read
from the device only at a log step (``TrainLogger.log_step``: one transfer) and at the end
of an epoch (the mean train loss, summed on the device by ``LossTotals``); the progress
bar shows the loss of the last log step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from moe_asr.config import Config, dump_config, load_config, validate_config
from moe_asr.data.labels import LabelVocab
from moe_asr.errors import UserError
from moe_asr.files import DirLock, WriteError, atomic_write_text, remove_stale_temps
from moe_asr.nn.dropout import cpu_dropout
from moe_asr.train.checkpoint import (
    atomic_save,
    list_epoch_checkpoints,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from moe_asr.train.dev import evaluate_dev, mean_over_ranks
from moe_asr.train.monitor import LossTotals, TrainLogger
from moe_asr.train.schedule import build_optimizer, build_scheduler
from moe_asr.train.trainable import set_trainable

__all__ = ["TrainError", "TrainSetup", "TrainResult", "train", "transcript_warnings"]

log = logging.getLogger("moe_asr.train")


class TrainError(UserError):
    """Training cannot start or cannot go on (bad setup, too many NaN losses, ...)."""


@dataclass(kw_only=True)
class TrainSetup:
    config: Config
    train_data: Path
    dev_data: Path
    tokenizer_dir: Path
    exp_dir: Path
    cmvn_path: Path | None = None
    resume: bool = False
    # the run's label vocabulary (`moe-asr adapt`: the init model's, grown by a value);
    # None: built from the train data's utt2<label> files
    label_vocab: LabelVocab | None = None


@dataclass
class TrainResult:
    steps: int
    epochs_completed: int
    stopped_because: str
    history: list[dict] = field(default_factory=list)  # one dict per finished epoch
    skipped_batches: int = 0


# ----------------------------------------------------------------------------- distributed


def _init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), device


def _all_true(flag: bool, device: torch.device) -> bool:
    """True on every rank only if ``flag`` is true on every rank (DDP must skip together)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def _param_checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum().item() for p in model.parameters()))


# ----------------------------------------------------------------------------- setup


def _check_exp_dir(setup: TrainSetup) -> Path:
    """Refuse to start a new run over an earlier one or to resume nothing; reads only."""
    ckpt_dir = setup.exp_dir / "checkpoints"
    last = ckpt_dir / "last.pt"
    if last.exists() and not setup.resume:
        raise TrainError(
            f"{setup.exp_dir}: holds checkpoints from an earlier run; pass --resume to continue "
            "it, or choose another --exp (nothing is overwritten)"
        )
    if setup.resume and not last.exists():
        raise TrainError(f"{last}: nothing to resume (no last.pt); drop --resume")
    cfg_path = setup.exp_dir / "config.yaml"
    # compared as configs, so fields added since (with their defaults) do not count
    if setup.resume and cfg_path.exists() and load_config(cfg_path) != setup.config:
        raise TrainError(
            f"{cfg_path}: the resumed run had a different config; resume with the same "
            "config and --set options, or start a new --exp"
        )
    return ckpt_dir


def _write_exp_dir(setup: TrainSetup, tokenizer, label_vocab) -> None:
    """Rank 0, after everything was built: config, tokenizer and labels of the run."""
    ckpt_dir = setup.exp_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    # a process killed inside atomic_save leaves its temporary file (never a checkpoint);
    # only those of dead writers go: the lock keeps other runs out, but not other tools
    remove_stale_temps(ckpt_dir)
    dump_config(setup.config, setup.exp_dir / "config.yaml")
    # the exp dir is self-contained: `moe-asr average` packages from it alone
    tokenizer.save(setup.exp_dir / "tokenizer")
    vocab = label_vocab.to_dict() if label_vocab is not None else {}
    atomic_write_text(setup.exp_dir / "label_vocab.json", json.dumps(vocab, indent=1))


def transcript_warnings(dd, utt_ids: list[str], tokenizer) -> list[str]:
    """Warnings about training transcripts: empty ones (the model learns to output nothing
    for them) and characters the tokenizer maps to ``<unk>``; each names examples."""
    empty = [u for u in utt_ids if not dd.text.get(u, "").strip()]
    unknown: dict[str, str] = {}  # character -> first utterance holding it
    for u in utt_ids:
        text = dd.text.get(u, "")
        if tokenizer.unk_id in tokenizer.encode(text):
            for c in sorted(set(text) - {" "}):
                if c not in unknown and tokenizer.encode(c) == [tokenizer.unk_id]:
                    unknown[c] = u
    out = []
    if empty:
        out.append(
            f"{dd.path or 'train data'}: {len(empty)} utterance(s) with an empty transcript are "
            f"trained on as silence (e.g. {', '.join(empty[:3])}); remove them with "
            "`moe-asr fix-data` if they are not"
        )
    if unknown:
        shown = ", ".join(f"{c!r} ({u})" for c, u in list(unknown.items())[:8])
        out.append(
            f"{dd.path or 'train data'}: {len(unknown)} character(s) the tokenizer does not know "
            f"are trained as <unk>: {shown}; retrain the tokenizer on this text or normalise it"
        )
    return out


def _build(setup: TrainSetup, rank: int, world: int, device: torch.device):
    from moe_asr.data.datadir import load_datadir
    from moe_asr.data.dataset import AsrDataset, build_label_vocab, make_loader, make_sampler
    from moe_asr.data.features import Cmvn
    from moe_asr.data.tokenizer import Tokenizer
    from moe_asr.model import build_model, guidance_labels

    cfg = setup.config
    tokenizer = Tokenizer.load(setup.tokenizer_dir)
    train_dd = load_datadir(setup.train_data)
    guide = guidance_labels(cfg.model)
    # adapt passes its grown vocabulary; otherwise the data's values, and those of the labels
    # the augmentation records (noise, snr, reverb) from the config
    label_vocab = setup.label_vocab
    if label_vocab is None and guide:
        label_vocab = build_label_vocab(train_dd, guide, cfg.data.augment)
    seed = cfg.train.seed
    clean = cfg.model.clean_target.enabled
    train_ds = AsrDataset(
        train_dd, tokenizer, label_vocab, cfg.data, train=True, seed=seed, clean_targets=clean
    )
    dev_ds = AsrDataset(setup.dev_data, tokenizer, label_vocab, cfg.data, train=False, seed=seed)
    sampler = make_sampler(train_ds, shuffle=True, seed=seed, rank=rank, world_size=world)
    dev_sampler = make_sampler(dev_ds, shuffle=False, seed=seed, rank=rank, world_size=world)
    train_loader = make_loader(train_ds, sampler, cfg.data.num_workers)
    dev_loader = make_loader(dev_ds, dev_sampler, cfg.data.num_workers)
    model = build_model(cfg.model, tokenizer.vocab_size, label_vocab)
    if setup.cmvn_path is not None:
        cmvn = Cmvn.load(setup.cmvn_path)
        model.set_cmvn(torch.as_tensor(cmvn.mean), torch.as_tensor(cmvn.std))
    model.to(device)
    warnings = transcript_warnings(train_dd, train_ds.utt_ids, tokenizer)
    return tokenizer, label_vocab, train_ds, sampler, train_loader, dev_loader, model, warnings


# ----------------------------------------------------------------------------- loop


def train(setup: TrainSetup) -> TrainResult:
    """Train per ``setup``; returns a summary. Raises TrainError for a bad setup.

    The config is validated before anything is written; rank 0 holds an exclusive lock
    on the exp dir (``EXP/.lock``) for the whole run, so a second run there is refused.
    """
    validate_config(setup.config)
    rank, world, device = _init_distributed()
    lock = DirLock(setup.exp_dir, what="training run") if rank == 0 else None
    with lock if lock is not None else contextlib.nullcontext():
        stale = lock.stale if lock is not None else None
        with cpu_dropout(setup.config.train.cpu_dropout):
            return _train(setup, rank, world, device, stale_lock=stale)


def _train(
    setup: TrainSetup, rank: int, world: int, device: torch.device, *, stale_lock: str | None
) -> TrainResult:
    cfg = setup.config
    tcfg = cfg.train
    if tcfg.num_threads > 0:
        torch.set_num_threads(tcfg.num_threads)
    torch.set_flush_denormal(True)
    ckpt_dir = _check_exp_dir(setup)
    torch.manual_seed(tcfg.seed)
    random.seed(tcfg.seed)
    np.random.seed(tcfg.seed)

    tokenizer, label_vocab, train_ds, sampler, loader, dev_loader, model, data_warnings = _build(
        setup, rank, world, device
    )
    # before DDP (which broadcasts rank 0's weights) and the optimizer; a resumed run's
    # weights come from last.pt, which already descends from the init
    init_report = None
    if tcfg.init and not setup.resume:
        from moe_asr.train.init import init_from

        init_report = init_from(
            model,
            tcfg.init,
            tokenizer=tokenizer,
            noise=tcfg.init_noise,
            generator=torch.Generator().manual_seed(tcfg.seed),
        )
        if rank == 0:
            init_report.save(setup.exp_dir / "init.json")
    trainable = ""
    if tcfg.trainable != "all":  # frozen before DDP and the optimizer see the parameters
        n = set_trainable(model, tcfg.trainable)
        trainable = f"; trainable {n:,} (train.trainable={tcfg.trainable})"
    if rank == 0:
        _write_exp_dir(setup, tokenizer, label_vocab)
    ddp_model: torch.nn.Module = model
    if world > 1:
        # an expert may get no frames on a rank: DDP must tolerate unused parameters
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=model.is_moe or cfg.model.decoder.ffn == "moe"
        )
    optimizer = build_optimizer(model, tcfg)
    steps_per_epoch = max(1, math.ceil(len(sampler) / max(1, tcfg.accum_grad)))
    total_steps = tcfg.max_steps or steps_per_epoch * tcfg.max_epochs
    scheduler = build_scheduler(optimizer, tcfg, total_steps)

    state = {"epoch": 0, "batches_done": 0, "step": 0, "history": [], "bad_total": 0}
    last_path = ckpt_dir / "last.pt"
    if setup.resume:
        ck = load_checkpoint(last_path, map_location=device)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])
        state.update(ck["state"])
        sampler.load_state_dict(ck["sampler"])

    logger = TrainLogger(setup.exp_dir, enabled=rank == 0)
    logger.info(
        f"params {sum(p.numel() for p in model.parameters()):,}{trainable}; train utts "
        f"{len(train_ds)}; "
        f"{len(sampler)} batches/epoch on each of {world} rank(s); threads "
        f"{torch.get_num_threads()}; device {device}"
        + (
            f"; resumed at epoch {state['epoch']} batch {state['batches_done']}"
            if setup.resume
            else ""
        )
    )
    if stale_lock:
        logger.warning(
            f"{setup.exp_dir}: took over the stale lock of a dead training run ({stale_lock})"
        )
    for w in data_warnings:
        logger.warning(w)

    if init_report is not None:
        logger.info(f"{init_report.summary()}; details in {setup.exp_dir / 'init.json'}")
    elif tcfg.init:
        logger.info(f"train.init={tcfg.init} not applied: resumed from {last_path}")

    def save(path: Path) -> None:
        if rank != 0:
            return
        try:
            atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng_state(),
                    "state": dict(state),
                    "sampler": sampler.state_dict(),
                    "config_yaml": dump_config(cfg),
                },
                path,
            )
        except WriteError as e:
            logger.close()
            kept = (
                f"the last good checkpoint {last_path} is intact: free space, then continue "
                "with --resume"
                if last_path.exists()
                else "no checkpoint was written yet: free space and start again"
            )
            raise TrainError(f"{e} Training stopped at step {state['step']}; {kept}") from e

    started = time.monotonic()
    stopped = ""
    bad_run = 0
    accum = max(1, tcfg.accum_grad)
    while not stopped and state["epoch"] < tcfg.max_epochs:
        epoch = state["epoch"]
        sampler.set_epoch(epoch)  # keeps a loaded mid-epoch resume point of this epoch
        # the loader draws worker seeds at iterator creation: from its own generator, so
        # that a mid-epoch resume leaves the global RNG stream exactly as an unbroken run
        loader.generator = torch.Generator().manual_seed(tcfg.seed * 100_003 + epoch)
        ddp_model.train()
        micro = 0
        totals = LossTotals(("loss",))  # summed on the device; read once, at the epoch's end
        if tcfg.max_steps and state["step"] >= tcfg.max_steps:  # e.g. resuming a finished run
            stopped = f"reached train.max_steps={tcfg.max_steps}"
        bar = logger.progress(len(sampler), initial=state["batches_done"], desc=f"epoch {epoch}")
        for batch in loader if not stopped else []:
            state["batches_done"] += 1
            bar.update(1)
            if not _all_true(len(batch) > 0, device):
                continue  # all utterances of a batch had unreadable audio (logged); DDP skips together
            batch = batch.to(device)
            sync = micro + 1 == accum
            # gradients are all-reduced only on the last micro-batch of an accumulation
            ctx = ddp_model.no_sync() if (world > 1 and not sync) else contextlib.nullcontext()
            with ctx:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tcfg.bf16):
                    out = ddp_model(
                        batch.feats,
                        batch.feat_lens,
                        batch.tokens,
                        batch.token_lens,
                        batch.labels,
                        step=state["step"],  # label-loss schedule
                        clean_feats=batch.clean_feats,
                    )
                finite = _all_true(bool(torch.isfinite(out.loss).item()), device)
                if finite:
                    (out.loss / accum).backward()
            if not finite:
                bad_run += 1
                state["bad_total"] += 1
                optimizer.zero_grad(set_to_none=True)
                micro = 0
                logger.warning(
                    f"epoch {epoch} batch {state['batches_done']}: non-finite loss, batch "
                    f"skipped ({bad_run} in a row; utts {' '.join(batch.utt_ids[:3])} ...)"
                )
                if bad_run >= tcfg.max_bad_steps:
                    raise TrainError(
                        f"{bad_run} non-finite losses in a row at step {state['step']}: training "
                        f"stopped; the last good checkpoint is {last_path}. Lower train.lr, "
                        "check the data, or enable train.grad_clip"
                    )
                continue
            bad_run = 0
            micro += 1
            totals.add(out)
            if micro < accum:
                continue
            micro = 0
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), tcfg.grad_clip if tcfg.grad_clip > 0 else float("inf")
            )
            if not _all_true(bool(torch.isfinite(grad_norm).item()), device):
                state["bad_total"] += 1
                optimizer.zero_grad(set_to_none=True)
                logger.warning(f"step {state['step']}: non-finite gradient norm, update skipped")
                continue
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            if state["step"] % tcfg.log_interval == 0 or state["step"] == 1:
                terms = logger.log_step(state["step"], out, scheduler.get_last_lr()[0], grad_norm)
                if terms:
                    bar.set_postfix(loss=f"{terms['loss']:.3f}")
            if tcfg.save_every_steps and state["step"] % tcfg.save_every_steps == 0:
                save(last_path)
            if tcfg.max_steps and state["step"] >= tcfg.max_steps:
                stopped = f"reached train.max_steps={tcfg.max_steps}"
                break
            if tcfg.max_minutes and (time.monotonic() - started) / 60 >= tcfg.max_minutes:
                stopped = f"reached the wall-clock budget of {tcfg.max_minutes} minutes"
                break
        bar.close()
        skipped = getattr(train_ds, "pop_skipped", lambda: [])()
        if skipped:
            logger.warning(
                f"epoch {epoch}: {len(skipped)} utterance(s) skipped for unreadable audio: "
                + ", ".join(skipped[:10])
                + (" ..." if len(skipped) > 10 else "")
            )
        if stopped and state["batches_done"] == 0:
            break  # stopped at an epoch boundary: that epoch is already recorded
        # the epoch finished, or a budget stopped it part-way: either way its weights are
        # evaluated and kept as epoch-N.pt (a partial one is replaced if a resume completes it)
        partial = bool(stopped) and state["batches_done"] < len(sampler)
        dev = evaluate_dev(model, dev_loader, tokenizer, device, tcfg.bf16)
        dev = mean_over_ranks(dev, device)
        train_means = totals.means()
        record = {
            "epoch": epoch,
            "step": state["step"],
            "train_loss": train_means["loss"] if train_means else None,
            **{f"dev_{k}": v for k, v in dev.items()},
            "skipped_utts": len(skipped),
            "minutes": (time.monotonic() - started) / 60,
        }
        if partial:
            record["partial_batches"] = state["batches_done"]
        state["history"] = [r for r in state["history"] if r["epoch"] != epoch] + [record]
        logger.log_epoch(record)
        if not partial:
            state["epoch"] += 1
            state["batches_done"] = 0
        save(ckpt_dir / f"epoch-{epoch}.pt")
        save(last_path)  # mid-epoch after a budget stop: resume continues from this batch
        if rank == 0:
            _keep_best(ckpt_dir, state["history"], tcfg.keep_best)
        if partial:
            break
        if tcfg.patience and _no_improvement(state["history"], tcfg.patience):
            stopped = f"early stopping: dev loss did not improve for {tcfg.patience} epochs"
    if not stopped:
        stopped = f"finished {tcfg.max_epochs} epochs"
    if world > 1:
        sums = [0.0] * world
        dist.all_gather_object(sums, _param_checksum(model))
        logger.info(f"parameter checksums per rank: {sums}")
        if rank == 0:
            atomic_write_text(setup.exp_dir / "ddp_check.json", json.dumps({"checksums": sums}))
    logger.info(f"stopped: {stopped}; steps {state['step']}; skipped batches {state['bad_total']}")
    logger.close()
    return TrainResult(
        steps=state["step"],
        epochs_completed=state["epoch"],
        stopped_because=stopped,
        history=list(state["history"]),
        skipped_batches=state["bad_total"],
    )


def _keep_best(ckpt_dir: Path, history: list[dict], keep: int) -> None:
    """Delete epoch checkpoints outside the best ``keep`` by dev loss (last.pt stays)."""
    if keep <= 0:
        return
    ranked = sorted(history, key=lambda r: r["dev_loss"])
    best = {r["epoch"] for r in ranked[:keep]}
    for epoch, path in list_epoch_checkpoints(ckpt_dir):
        if epoch not in best:
            path.unlink()
    atomic_write_text(ckpt_dir / "history.json", json.dumps(history, indent=1))


def _no_improvement(history: list[dict], patience: int) -> bool:
    if len(history) <= patience:
        return False
    best_before = min(r["dev_loss"] for r in history[:-patience])
    return min(r["dev_loss"] for r in history[-patience:]) >= best_before
