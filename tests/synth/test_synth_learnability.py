"""The accents are learnable: a tiny classifier on fbank statistics identifies the accent
of held-out speakers (test split) far above chance."""

import numpy as np
import torch
from torchaudio.compliance.kaldi import fbank

from moe_asr.synth.corpus import SynthConfig, plan_corpus, render_utterance

ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-us-nyc"]
ACCENTS += ["es", "pt-br", "it", "fr", "de"]


def _features(server, plans) -> tuple[np.ndarray, np.ndarray]:
    """Per utterance: mean and std of 40-dim fbank over speech frames, std of deltas."""
    xs, ys = [], []
    for p in plans:
        wav = torch.from_numpy(render_utterance(server, p)).unsqueeze(0) * 32768
        f = fbank(wav, num_mel_bins=40, sample_frequency=16000)  # (T, 40)
        energy = f.mean(1)
        f = f[energy > energy.max() - 8]  # speech frames
        d = f[2:] - f[:-2]
        xs.append(torch.cat([f.mean(0), f.std(0), d.std(0)]).numpy())
        ys.append(ACCENTS.index(p.accent))
    return np.array(xs, dtype=np.float64), np.array(ys)


def test_accent_of_held_out_speakers_is_identified(espeak_server):
    torch.set_num_threads(1)
    voices = {a: espeak_server.resolve(a) for a in ACCENTS}
    train = plan_corpus(
        SynthConfig(num_utts=200, split="train", noise=("clean",), utts_per_speaker=2), voices
    )
    test = plan_corpus(
        SynthConfig(num_utts=100, split="test", noise=("clean",), utts_per_speaker=2), voices
    )
    assert not {p.spk[6:] for p in train} & {p.spk[5:] for p in test}  # held-out speakers
    x_tr, y_tr = _features(espeak_server, train)
    x_te, y_te = _features(espeak_server, test)
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    # nearest centroid under a shared, shrunk within-accent covariance (LDA)
    cent = np.stack([x_tr[y_tr == k].mean(0) for k in range(len(ACCENTS))])  # (A, D)
    within = x_tr - cent[y_tr]
    prec = np.linalg.inv(within.T @ within / len(x_tr) + 0.1 * np.eye(x_tr.shape[1]))
    scores = x_te @ prec @ cent.T - 0.5 * np.einsum("ad,de,ae->a", cent, prec, cent)
    accuracy = float((scores.argmax(1) == y_te).mean())
    chance = 1 / len(ACCENTS)
    assert accuracy >= 3 * chance, accuracy
