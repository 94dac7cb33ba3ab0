"""A tiny MoE model trained in seconds to memorise four tone-coded utterances, packaged.

Used by the decoding, transcription and export tests. Letters are tones
(``tests.tone_corpus``), a space is silence. The model has an accent head (utterance
estimate) so accent prediction and forced routing can be tested.

A model trained during a test differs between CPUs (float results differ), so a test may
assert the text it outputs only where that text is separated from every alternative by a
margin no float difference can cross: ``assert_memorised`` checks that on every encoder
frame the best CTC token beats the runner-up by ``MARGIN`` nats (and, for the attention
decoder, that every reference token beats the runner-up by ``MARGIN`` under teacher
forcing). Float differences between machines and thread counts are below 1e-3 nats. Training goes
on past ``steps`` until every training input has twice ``MARGIN`` (at most 4x ``steps``):
with a fixed step count, seeds 0-4 at 1 and 2 threads gave CTC margins from 0.57 to 7.4
nats on the memorised inputs, so a fixed count alone would not hold on every machine.
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

__all__ = [
    "TEXTS",
    "ACCENTS",
    "SR",
    "MARGIN",
    "train_tiny_package",
    "write_datadir_of",
    "ctc_margin",
    "attention_margin",
    "assert_memorised",
]

TEXTS = ["abc", "bad cab", "face", "head fed"]
ACCENTS = ["x", "y", "x", "y"]
SR = 16000
MARGIN = 1.0  # nats; see the module docstring

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
    # train ``steps`` steps, then on until every training input is memorised with twice the
    # margin the tests rely on (a trajectory differs between CPUs; this end point does not)
    for step in range(4 * steps):
        loss = model(x, lens, tokens, token_lens, labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (
            step + 1 >= steps
            and (step + 1) % 25 == 0
            and _batch_margin(model, x, lens) >= 2 * MARGIN
        ):
            break
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


@torch.no_grad()
def _batch_margin(model, x, lens) -> float:
    """Smallest best-minus-runner-up CTC log-prob over the real frames of a batch."""
    model.eval()
    enc = model.encode(x, lens)
    top = model.ctc_log_probs(enc).topk(2, dim=-1).values  # (B, T', 2)
    real = torch.arange(top.shape[1])[None] < enc.lens[:, None]
    model.train()
    return float((top[..., 0] - top[..., 1])[real].min())


@torch.no_grad()
def ctc_margin(package, wav) -> tuple[str, float]:
    """(greedy CTC text, smallest best-minus-runner-up log-prob over the encoder frames)."""
    feats = compute_fbank(torch.as_tensor(wav), package.config.data.features)
    x, lens = pad_features([feats])
    model = package.model
    lp = model.ctc_log_probs(model.encode(x, lens))[0]  # (T', V)
    top = lp.topk(2, dim=-1).values
    path = lp.argmax(-1).tolist()
    tokens = [t for i, t in enumerate(path) if t != 0 and (i == 0 or t != path[i - 1])]
    return package.tokenizer.decode(tokens), float((top[:, 0] - top[:, 1]).min())


@torch.no_grad()
def attention_margin(package, wav, text: str) -> float:
    """Smallest margin of the reference token (and <eos>) over the runner-up under teacher
    forcing of the attention decoder."""
    model, tok = package.model, package.tokenizer
    feats = compute_fbank(torch.as_tensor(wav), package.config.data.features)
    x, lens = pad_features([feats])
    enc = model.encode(x, lens)
    eos = tok.vocab_size - 1
    ids = tok.encode(text)
    ys_in = torch.tensor([[eos, *ids]])
    ys_out = torch.tensor([*ids, eos])
    logp = model.decoder(enc.out, enc.lens, ys_in)[0].float().log_softmax(-1)  # (L, V)
    ref = logp.gather(-1, ys_out[:, None])[:, 0]
    other = logp.scatter(-1, ys_out[:, None], float("-inf")).max(-1).values
    return float((ref - other).min())


def assert_memorised(package, wav, text: str, *, attention: bool = False) -> None:
    """The model outputs ``text`` for ``wav`` with at least ``MARGIN`` nats to spare."""
    got, margin = ctc_margin(package, wav)
    assert got == text and margin >= MARGIN, (
        f"greedy CTC gives {got!r} (want {text!r}) with frame margin {margin:.2f} < {MARGIN}: "
        "the tiny model did not memorise this input well enough for an exact-text check"
    )
    if attention:
        margin = attention_margin(package, wav, text)
        assert margin >= MARGIN, f"attention margin {margin:.2f} < {MARGIN} for {text!r}"
