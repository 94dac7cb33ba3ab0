"""Average epoch checkpoints of an experiment into its self-contained ``model.pt`` package."""

from __future__ import annotations

import json
from pathlib import Path

from moe_asr.config import load_config
from moe_asr.data.labels import LabelVocab
from moe_asr.files import check_outputs
from moe_asr.package import save_package
from moe_asr.train.checkpoint import (
    CheckpointError,
    average_state_dicts,
    list_epoch_checkpoints,
    load_checkpoint,
)

__all__ = ["average_experiment"]


def average_experiment(
    exp_dir: str | Path, num: int, *, best: bool = False, overwrite: bool = False
) -> tuple[Path, list[int]]:
    """Average the last ``num`` (or the ``num`` best by dev loss) epoch checkpoints.

    Writes ``EXP/model.pt`` (config, averaged weights incl. CMVN, tokenizer, label vocabulary)
    and returns its path and the epochs used. Falls back to ``last.pt`` when no epoch
    checkpoint exists yet (a run stopped by its budget inside the first epoch). An existing
    ``model.pt`` is refused unless ``overwrite``.
    """
    from moe_asr.data.tokenizer import Tokenizer

    exp_dir = Path(exp_dir)
    check_outputs(exp_dir, ["model.pt"], overwrite, option="--exp")
    ckpt_dir = exp_dir / "checkpoints"
    available = list_epoch_checkpoints(ckpt_dir)
    if best:
        hist_path = ckpt_dir / "history.json"
        history = json.loads(hist_path.read_text()) if hist_path.exists() else []
        loss = {r["epoch"]: r["dev_loss"] for r in history}
        ranked = sorted((e for e, _ in available if e in loss), key=lambda e: loss[e])
        chosen = sorted(ranked[:num])
    else:
        chosen = [e for e, _ in available][-num:]
    paths = {e: p for e, p in available}
    if chosen:
        states = [load_checkpoint(paths[e])["model"] for e in chosen]
    elif (ckpt_dir / "last.pt").exists():
        states = [load_checkpoint(ckpt_dir / "last.pt")["model"]]
    else:
        raise CheckpointError(f"{ckpt_dir}: no checkpoints to average; train first")
    cfg = load_config(exp_dir / "config.yaml")
    tokenizer = Tokenizer.load(exp_dir / "tokenizer")
    vocab = json.loads((exp_dir / "label_vocab.json").read_text())
    out = save_package(
        exp_dir / "model.pt",
        config=cfg,
        model_state=average_state_dicts(states),
        tokenizer_bytes=tokenizer.to_bytes(),
        label_vocab=LabelVocab.from_dict(vocab) if vocab else None,
        meta={"averaged_epochs": chosen, "best": best},
    )
    return out, chosen
