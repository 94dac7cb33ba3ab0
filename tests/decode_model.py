"""A tiny MoE model trained in seconds to memorise four tone-coded utterances, packaged.

Used by the decoding, transcription and export tests: every decode mode must return the
memorised transcripts. Letters are tones (``tests.tone_corpus``), a space is silence.
The model has an accent head (utterance estimate) so accent prediction and forced
routing can be tested.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from moe_asr.audio import resample, save_audio
from moe_asr.config import config_from_dict
from moe_asr.data.features import compute_fbank
from moe_asr.data.labels import LabelVocab
from moe_asr.data.tokenizer import TokenizerConfig, train_tokenizer
from moe_asr.decode.search import pad_features
from moe_asr.model import build_model
from moe_asr.package import save_package
from tests.tone_corpus import tone_wave

__all__ = ["TEXTS", "ACCENTS", "SR", "train_tiny_package", "write_datadir_of"]

TEXTS = ["abc", "bad cab", "face", "head fed"]
ACCENTS = ["x", "y", "x", "y"]
SR = 16000

_CONFIG = {
    "model": {
        "input_dim": 40,
        "d_model": 32,
        "num_heads": 2,
        "num_layers": 2,
        "d_ff": 64,
        "conv_kernel": 7,
        "dropout": 0.0,
        "subsampling_channels": 8,
        "ffn": "moe",
        "moe": {
            "num_experts": 2,
            "top_k": 1,
            "guidance": {
                "labels": ["accent"],
                "embed": True,
                "utterance_estimate": True,
                "estimate_layer": 0,
                "label_dropout": 0.0,
            },
        },
        "decoder": {"num_layers": 1, "num_heads": 2, "d_ff": 64, "dropout": 0.0},
        "ctc_weight": 0.5,
        "lsm_weight": 0.0,
    },
    "data": {"features": {"num_mel_bins": 40}},
    "tokenizer": {"type": "char"},
}


def train_tiny_package(
    out: Path,
    *,
    steps: int = 250,
    seed: int = 0,
    guidance: dict | None = None,
    streaming: dict | None = None,
) -> Path:
    """Train on TEXTS until memorised; write ``out/model.pt``; return its path.

    ``guidance`` replaces the label-guidance config (default: accent head, estimate_layer 0);
    ``streaming``: the ``model.streaming`` config (dynamic-chunk training).
    """
    torch.manual_seed(seed)
    conf = copy.deepcopy(_CONFIG)
    if guidance is not None:
        conf["model"]["moe"]["guidance"] = guidance
    if streaming is not None:
        conf["model"]["streaming"] = streaming
    cfg = config_from_dict(conf)
    tok = train_tokenizer(TEXTS, TokenizerConfig(type="char"))
    vocab = LabelVocab.from_tables({"accent": dict(enumerate(ACCENTS))}, ["accent"])
    model = build_model(cfg.model, tok.vocab_size, vocab)
    # each utterance also as telephone-band audio (16 -> 8 -> 16 kHz), so 8 kHz input works
    waves = [tone_wave(t, seed=i) for i, t in enumerate(TEXTS)]
    waves += [resample(resample(w, SR, 8000), 8000, SR) for w in waves]
    feats = [compute_fbank(w, cfg.data.features) for w in waves]
    allf = torch.cat(feats)
    model.set_cmvn(allf.mean(0), allf.std(0).clamp_min(1e-3))
    x, lens = pad_features(feats)
    ids = [tok.encode(t) for t in TEXTS + TEXTS]
    tokens = torch.full((len(ids), max(map(len, ids))), -1, dtype=torch.long)
    for i, t in enumerate(ids):
        tokens[i, : len(t)] = torch.tensor(t)
    token_lens = torch.tensor([len(t) for t in ids])
    labels = {"accent": torch.tensor([vocab.index("accent", a) for a in ACCENTS + ACCENTS])}
    opt = torch.optim.Adam(model.parameters(), lr=4e-3)
    model.train()
    for _ in range(steps):
        loss = model(x, lens, tokens, token_lens, labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    return save_package(
        out / "model.pt",
        config=cfg,
        model_state=model.state_dict(),
        tokenizer_bytes=tok.to_bytes(),
        label_vocab=vocab,
        meta={"final_loss": float(loss.detach())},
    )


def write_datadir_of(root: Path, texts: list[str], *, bad: dict[int, bytes] | None = None) -> Path:
    """A Kaldi data dir of tone utterances; ``bad[i]`` replaces file i with these bytes."""
    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    lines = {"wav.scp": [], "text": [], "utt2spk": [], "spk2utt": []}
    for i, text in enumerate(texts):
        utt = f"s{i}-u{i:03d}"
        path = wav_dir / f"{utt}.wav"
        if bad and i in bad:
            path.write_bytes(bad[i])
        else:
            save_audio(path, tone_wave(text, seed=i), SR)
        lines["wav.scp"].append(f"{utt} {path}")
        lines["text"].append(f"{utt} {text}")
        lines["utt2spk"].append(f"{utt} s{i}")
        lines["spk2utt"].append(f"s{i} {utt}")
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, rows in lines.items():
        (data / name).write_text("".join(r + "\n" for r in sorted(rows)))
    return data
