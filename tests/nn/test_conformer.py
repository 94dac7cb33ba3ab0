import pytest
import torch

from moe_asr.nn.attention import RelPositionBias
from moe_asr.nn.conformer import ConformerEncoder, Conv2dSubsampling, ConvModule, lengths_to_mask
from moe_asr.nn.decoder import TransformerDecoder
from moe_asr.nn.moe import FeedForward, MoEFeedForward, MoERouting

F_IN, D = 20, 16


def _encoder(moe: bool, subsampling: int = 4) -> ConformerEncoder:
    def make_ffn(i: int):
        if moe and i % 2 == 1:
            return MoEFeedForward(D, 32, num_experts=3, top_k=2, num_shared_experts=1)
        return FeedForward(D, 32)

    return ConformerEncoder(
        input_dim=F_IN,
        d_model=D,
        num_heads=2,
        num_layers=2,
        conv_kernel=5,
        dropout=0.1,
        subsampling=subsampling,
        subsampling_channels=4,
        max_rel_pos=8,
        make_ffn=make_ffn,
    ).eval()


@pytest.mark.parametrize("moe,subsampling", [(False, 4), (True, 4), (True, 6), (True, 8)])
def test_encoder_padding_invariance(moe, subsampling):
    torch.manual_seed(0)
    enc = _encoder(moe, subsampling)
    lens = torch.tensor([61, 40, 27])
    x = torch.randn(3, 61, F_IN)
    x[1, 40:] = 7.0  # garbage in the padding must not leak
    x[2, 27:] = -3.0
    out, out_lens, stats = enc(x, lens)
    assert len(stats) == (2 if moe else 0)
    for b in range(3):
        n = int(lens[b])
        alone, alone_lens, alone_stats = enc(x[b : b + 1, :n], lens[b : b + 1])
        t = int(alone_lens[0])
        assert int(out_lens[b]) == t == alone.shape[1]
        torch.testing.assert_close(out[b, :t], alone[0], atol=1e-5, rtol=1e-5)
        for s, sa in zip(stats, alone_stats):
            assert torch.equal(s.topk_idx[b, :t], sa.topk_idx[0])
            assert (s.layer, s.half) == (sa.layer, sa.half)
    if moe:
        assert [(s.layer, s.half) for s in stats] == [(1, 0), (1, 1)]


def test_layer_condition_is_added_to_the_real_frames_of_that_layers_input():
    torch.manual_seed(0)
    enc = _encoder(True)
    lens = torch.tensor([61, 40])
    x = torch.randn(2, 61, F_IN)
    cond = torch.randn(2, D)
    seen = []
    enc.layers[1].register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))

    def route(rows):
        return lambda i, h, mask: MoERouting(layer_cond=cond[rows]) if i == 1 else None

    plain, _, _ = enc(x, lens)
    conditioned, out_lens, _ = enc(x, lens, route(slice(None)))
    real = lengths_to_mask(out_lens, seen[0].shape[1])[..., None]
    torch.testing.assert_close(seen[1] - seen[0], cond[:, None, :] * real)
    assert not torch.allclose(conditioned, plain)
    t = int(out_lens[1])  # the padded utterance alone: the same output
    alone, _, _ = enc(x[1:, :40], lens[1:], route(slice(1, 2)))
    torch.testing.assert_close(conditioned[1, :t], alone[0], atol=1e-5, rtol=1e-5)


_EXPECTED_LEN = {  # WeNet's Conv2dSubsampling4/6/8 output lengths
    4: lambda t: ((t - 1) // 2 - 1) // 2,
    6: lambda t: ((t - 1) // 2 - 2) // 3,
    8: lambda t: (((t - 1) // 2 - 1) // 2 - 1) // 2,
}


@pytest.mark.parametrize("factor", [4, 6, 8])
def test_subsampling_lengths(factor):
    sub = Conv2dSubsampling(F_IN, D, 4, factor)
    assert _EXPECTED_LEN[factor](sub.min_input_frames) == 1
    assert _EXPECTED_LEN[factor](sub.min_input_frames - 1) == 0
    for t in range(sub.min_input_frames, sub.min_input_frames + 30):
        y, lens = sub(torch.randn(1, t, F_IN), torch.tensor([t]))
        assert int(lens[0]) == y.shape[1] == _EXPECTED_LEN[factor](t)
    short = sub.min_input_frames - 1
    assert int(sub.output_lengths(torch.tensor([short]))[0]) == 0


def test_subsampling_rejects_bad_factor():
    with pytest.raises(ValueError, match="subsampling"):
        Conv2dSubsampling(F_IN, D, 4, 3)


def test_conv_module_ignores_padding_values():
    torch.manual_seed(1)
    conv = ConvModule(D, 7).eval()
    x = torch.randn(1, 10, D)
    mask = lengths_to_mask(torch.tensor([6]), 10)
    y1 = conv(x, mask)
    x2 = x.clone()
    x2[:, 6:] = 100.0
    y2 = conv(x2, mask)
    torch.testing.assert_close(y1[:, :6], y2[:, :6])
    torch.testing.assert_close(y1[:, :6], conv(x[:, :6], mask[:, :6]))


def test_rel_position_bias_depends_on_clipped_distance():
    bias = RelPositionBias(num_heads=2, max_dist=3)
    with torch.no_grad():
        bias.table.copy_(torch.arange(14.0).view(2, 7))
    b = bias(6)[0]  # (H, T, T)
    assert b.shape == (2, 6, 6)
    for i in range(6):
        for j in range(6):
            assert b[1, i, j] == 7 + max(-3, min(3, j - i)) + 3


def test_decoder_is_causal_and_step_matches_forward():
    torch.manual_seed(2)
    dec = TransformerDecoder(11, D, 2, 2, 32, 0.0).eval()
    mem = torch.randn(2, 9, D)
    mem_lens = torch.tensor([9, 5])
    ys = torch.randint(0, 11, (2, 6))
    logits = dec(mem, mem_lens, ys)
    ys2 = ys.clone()
    ys2[:, 4:] = 3  # change the future
    torch.testing.assert_close(dec(mem, mem_lens, ys2)[:, :4], logits[:, :4])
    # padded memory frames are invisible
    mem2 = mem.clone()
    mem2[1, 5:] = 50.0
    torch.testing.assert_close(dec(mem2, mem_lens, ys)[1], logits[1])
    step = dec.step(mem, mem_lens, ys[:, :3])
    torch.testing.assert_close(step, logits[:, 2].log_softmax(-1))
