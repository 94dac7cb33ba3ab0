"""`moe-asr decode` on a model trained in the test to memorise four utterances: every
mode returns the transcripts, greedy == prefix beam at beam 1, joint decoding with
ctc_weight=1 scores the exact CTC likelihood, a corrupt utterance goes to errors.txt."""

from __future__ import annotations

import json

import pytest
import torch

from moe_asr.cli import main
from moe_asr.config import DecodeConfig
from moe_asr.data.datadir import read_table
from moe_asr.data.features import compute_fbank
from moe_asr.decode.rescore import ctc_sequence_scores
from moe_asr.decode.search import Recognizer, inference_routing
from moe_asr.errors import UserError
from moe_asr.package import load_package
from tests.decode_model import ACCENTS, TEXTS, train_tiny_package, write_datadir_of
from tests.tone_corpus import tone_wave


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    model = train_tiny_package(root / "exp")
    data = write_datadir_of(root, TEXTS)
    return {"root": root, "model": model, "data": data, "package": load_package(model)}


@pytest.mark.parametrize(
    "mode", ["ctc_greedy", "ctc_prefix_beam", "attention", "attention_rescoring"]
)
def test_every_mode_returns_the_memorised_transcripts(setup, mode, capsys):
    out = setup["root"] / f"dec_{mode}"
    args = ["decode", "--model", str(setup["model"]), "--data", str(setup["data"])]
    assert main([*args, "--mode", mode, "--beam", "4", "--out", str(out), "--no-progress"]) == 0
    hyp = read_table(out / "hyp.txt", allow_empty=True)
    ref = read_table(setup["data"] / "text")
    assert hyp == ref
    assert (out / "errors.txt").read_text() == ""
    summary = json.loads((out / "decode.json").read_text())
    assert summary["mode"] == mode and summary["num_decoded"] == 4
    assert summary["rtf"] > 0 and summary["audio_seconds"] == pytest.approx(
        sum(len(tone_wave(t, seed=i)) for i, t in enumerate(TEXTS)) / 16000, abs=1e-3
    )
    nbest = (out / "nbest.txt").read_text().splitlines()
    firsts = {line.split()[0]: line.split(maxsplit=3) for line in nbest if line.split()[1] == "1"}
    assert {u: (f[3] if len(f) > 3 else "") for u, f in firsts.items()} == ref
    assert "RTF" in capsys.readouterr().out


def _recognize(package, feats, **opts):
    return Recognizer.from_package(package, DecodeConfig(**opts)).recognize(feats)


def _noisy_feats(package):
    """Unseen noise draws and extra noise: the model makes errors there, so the searches
    are compared on uncertain posteriors, not only on the memorised inputs."""
    g = torch.Generator().manual_seed(0)
    feats = []
    for noise in (0.003, 0.006):
        for i, t in enumerate(TEXTS):
            wav = torch.from_numpy(tone_wave(t, seed=100 + i))
            wav = wav + noise * torch.randn(wav.shape, generator=g)
            feats.append(compute_fbank(wav, package.config.data.features))
    return feats


def test_greedy_equals_prefix_beam_with_beam_one(setup):
    pkg = setup["package"]
    feats = _noisy_feats(pkg)
    greedy = _recognize(pkg, feats, mode="ctc_greedy")
    beam1 = _recognize(pkg, feats, mode="ctc_prefix_beam", beam=1, nbest=1)
    assert [r.text for r in greedy] == [r.text for r in beam1]
    assert [r.score for r in greedy] == pytest.approx([r.score for r in beam1], abs=1e-3)


def test_joint_decoding_with_ctc_weight_one_scores_the_exact_ctc_likelihood(setup):
    # Which hypothesis two approximate searches keep on uncertain posteriors depends on
    # float rounding (prefix beam and joint beam prune differently), so their texts are not
    # compared here; test_search_algorithms checks both against brute force on toy inputs.
    pkg = setup["package"]
    feats = _noisy_feats(pkg)
    joint = _recognize(pkg, feats, mode="attention", beam=5, nbest=3, ctc_weight=1.0)
    for r in joint:
        for h in r.hyps[:3]:
            exact = float(ctc_sequence_scores(r.log_probs, [h.tokens])[0])
            assert h.score == pytest.approx(exact, abs=1e-3)


def test_nbest_lists_are_sorted_and_batched_equals_alone(setup):
    pkg = setup["package"]
    feats = _noisy_feats(pkg)
    batched = _recognize(pkg, feats, mode="attention_rescoring", beam=4, nbest=3)
    for i, r in enumerate(batched):
        scores = [s for _, s in r.nbest]
        assert scores == sorted(scores, reverse=True)
        alone = _recognize(pkg, [feats[i]], mode="attention_rescoring", beam=4, nbest=3)[0]
        assert alone.text == r.text and alone.score == pytest.approx(r.score, abs=1e-3)


def test_a_corrupt_utterance_is_listed_and_the_others_decoded(setup, capsys):
    root = setup["root"] / "bad"
    data = write_datadir_of(root, TEXTS, bad={1: b"RIFF\x10\x00\x00\x00WAVEjunk"})
    out = root / "out"
    args = ["decode", "--model", str(setup["model"]), "--data", str(data), "--out", str(out)]
    assert main([*args, "--mode", "ctc_prefix_beam", "--batch-size", "4", "--no-progress"]) == 0
    hyp = read_table(out / "hyp.txt", allow_empty=True)
    assert hyp == {u: t for u, t in read_table(data / "text").items() if u != "s1-u001"}
    errors = (out / "errors.txt").read_text().splitlines()
    assert len(errors) == 1 and errors[0].startswith("s1-u001 ") and "s1-u001.wav" in errors[0]
    assert "1 utterance(s) failed" in capsys.readouterr().err


def test_bad_options_are_one_line_errors(setup, capsys):
    base = ["decode", "--model", str(setup["model"]), "--data", str(setup["data"])]
    out = str(setup["root"] / "never")
    assert main([*base, "--out", out, "--mode", "attention", "--ctc-weight", "1.5"]) == 1
    assert "ctc_weight must be in [0, 1]" in capsys.readouterr().err
    assert main([*base, "--out", out, "--accent", "zz"]) == 1
    assert "unknown accent; the model knows x, y" in capsys.readouterr().err
    lm = str(setup["root"] / "nope.arpa")
    assert main([*base, "--out", out, "--mode", "ctc_prefix_beam", "--lm", lm]) == 1
    assert "language model file not found" in capsys.readouterr().err


def test_accent_is_predicted_from_routers_trained_with_the_label_loss(setup, tmp_path):
    guidance = {"labels": ["accent"], "router_loss_weight": 1.0, "label_dropout": 0.0}
    pkg = load_package(train_tiny_package(tmp_path, steps=150, guidance=guidance))
    assert not pkg.model.guidance.heads  # no label head: the routers are the only source
    feats = [
        compute_fbank(tone_wave(t, seed=i), pkg.config.data.features) for i, t in enumerate(TEXTS)
    ]
    recs = _recognize(pkg, feats, mode="ctc_greedy")
    predicted = [max(r.labels["accent"], key=r.labels["accent"].get) for r in recs]
    assert predicted == ACCENTS
    assert all(sum(r.labels["accent"].values()) == pytest.approx(1.0, abs=1e-3) for r in recs)


def test_force_and_mask_experts_options(setup, capsys):
    base = ["decode", "--model", str(setup["model"]), "--data", str(setup["data"])]
    out = setup["root"] / "forced"
    opts = ["--force", "accent=y", "--mask-experts", "1:0", "--no-progress"]
    assert main([*base, "--out", str(out), *opts]) == 0
    assert set(read_table(out / "hyp.txt", allow_empty=True)) == set(
        read_table(setup["data"] / "text")
    )
    never = str(setup["root"] / "never")
    for bad, err in [
        (
            ["--force", "noise=white"],
            "cannot force 'noise', this model was trained with label guidance on accent",
        ),
        (["--force", "accent"], "expected LABEL=VALUE"),
        (["--mask-experts", "5:0"], "layer 5 is not an MoE layer"),
        (["--mask-experts", "0:0,1"], "fewer than top_k=1"),
        (["--accent", "x", "--force", "accent=y"], "--accent x contradicts --force accent=y"),
    ]:
        assert main([*base, "--out", never, *bad]) == 1, bad
        assert err in capsys.readouterr().err, bad
    # the options reach the encoder: layer 1 uses only the unmasked expert
    pkg = setup["package"]
    routing = inference_routing(pkg, {}, {1: [0]}, accent="x")
    assert routing.forced == {"accent": "x"} and routing.mode == "forced"
    assert inference_routing(pkg) is None
    feats = compute_fbank(tone_wave(TEXTS[0], seed=0), pkg.config.data.features)
    with torch.no_grad():
        enc = pkg.model.encode(feats[None], torch.tensor([feats.shape[0]]), routing)
    assert all((s.topk_idx[s.mask] == 1).all() for s in enc.router_stats if s.layer == 1)


def test_force_from_data_routes_each_utterance_by_its_own_label(setup, monkeypatch, tmp_path):
    data = write_datadir_of(tmp_path, TEXTS + TEXTS[:2])
    utts = sorted(read_table(data / "text"))
    values = ["x", "y", "x", "y", "zz"]  # the 6th utterance has no value at all
    (data / "utt2accent").write_text("".join(f"{u} {v}\n" for u, v in zip(utts, values)))
    seen: list[tuple[str, int]] = []
    recognize = Recognizer.recognize

    def spy(self, feats, routing=None):
        seen.append((routing.forced["accent"], len(feats)))
        return recognize(self, feats, routing)

    monkeypatch.setattr(Recognizer, "recognize", spy)
    out = tmp_path / "known"
    args = ["decode", "--model", str(setup["model"]), "--data", str(data), "--out", str(out)]
    assert main([*args, "--force-from-data", "accent", "--batch-size", "8", "--no-progress"]) == 0
    # batches never mix label values: one call per value, two utterances each
    assert sorted(seen) == [("x", 2), ("y", 2)]
    assert set(read_table(out / "hyp.txt", allow_empty=True)) == set(utts[:4])
    errors = dict(line.split(" ", 1) for line in (out / "errors.txt").read_text().splitlines())
    assert "unknown accent; the model knows x, y" in errors[utts[4]]
    assert f"no accent in {data}/utt2accent" in errors[utts[5]]
    summary = json.loads((out / "decode.json").read_text())
    assert summary["num_utts"] == 6 and summary["num_decoded"] == 4
    assert summary["options"]["labels_from_data"] == ["accent"]


def test_force_from_data_needs_the_label_file(setup, tmp_path, capsys):
    args = ["decode", "--model", str(setup["model"]), "--data", str(setup["data"])]
    assert main([*args, "--out", str(tmp_path / "o"), "--force-from-data", "noise"]) == 1
    assert "utt2noise does not exist" in capsys.readouterr().err


def test_force_from_data_reads_condition_labels_as_the_augmentation_recorded_them():
    # a model trained with augmentation labels knows snr buckets, not utt2snr's dB
    from moe_asr.config import AugmentConfig
    from moe_asr.data.datadir import DataDir
    from moe_asr.decode.batch import data_label_values

    utts = ["a", "b", "c", "d", "e"]
    dd = DataDir(
        utt2spk={u: u for u in utts},
        groups={
            "noise": {"a": "white", "b": "babble", "c": "clean", "d": "pink", "e": "white"},
            "accent": {"a": "fr", "b": "de"},
        },
        extra={"snr": {"a": "-3", "b": "5", "c": "inf", "d": "12"}},
    )
    aug = AugmentConfig(noise_prob=0.5, noise_types=["white", "pink", "babble"])
    values = data_label_values(aug, dd, ["snr", "noise", "accent"])
    assert values["snr"] == {"a": "<0", "b": "0..10", "c": "clean", "d": ">=10"}
    assert values["noise"] == dd.groups["noise"]
    assert values["accent"] == {"a": "fr", "b": "de"}  # not a condition label: as in the file
    # without augmentation labels the data's values are the labels
    plain = data_label_values(AugmentConfig(), dd, ["snr"])
    assert plain["snr"] == dd.extra["snr"]
    with pytest.raises(UserError, match="utt2reverb does not exist"):
        data_label_values(aug, dd, ["reverb"])
