import pytest
import torch

from moe_asr.config import ConfigError, GuidanceConfig
from moe_asr.nn.groups import (
    LabelGroups,
    group_label_loss,
    group_scores,
    mean_group_log_probs,
    placeholder_vocab,
)
from moe_asr.nn.moe import expert_groups

ACCENTS = ["unk", "de", "en-gb", "en-us", "es", "fr", "vi"]
FAMILIES = {"en-gb": "native", "en-us": "native", "es": "romance", "fr": "romance", "xx": "z"}


def test_one_group_per_value_is_the_flat_partition():
    g = LabelGroups.build("accent", ACCENTS, {}, 8)
    assert g.names == tuple(ACCENTS[1:]) and not g.families
    assert g.value_group == (-1, 0, 1, 2, 3, 4, 5)
    assert [list(b) for b in g.experts] == expert_groups(8, 6)


def test_families_join_values_and_unlisted_values_are_their_own_group():
    g = LabelGroups.build("accent", ACCENTS, FAMILIES, 4)
    # vocabulary order of first appearance: de, native, romance, vi ("xx" is not in the data)
    assert g.names == ("de", "native", "romance", "vi") and g.families
    assert g.value_group == (-1, 0, 1, 1, 2, 2, 3)
    assert g.experts == ((0,), (1,), (2,), (3,))
    ids = torch.tensor([3, 0, 5, 6])  # en-us, unk, fr, vi
    assert g.group_ids(ids).tolist() == [1, -1, 2, 3]
    m = g.expert_mask(g.group_ids(ids), 4)
    assert m.tolist() == [
        [False, True, False, False],
        [True, True, True, True],  # unknown: every expert
        [False, False, True, False],
        [False, False, False, True],
    ]
    with pytest.raises(ConfigError, match="num_experts >= values.*families"):
        LabelGroups.build("accent", ACCENTS, FAMILIES, 3)
    # a value finds its family, a family name itself; the values of a group in vocab order
    assert [g.group_of(v) for v in ("fr", "romance", "de", "vi", "xx", "unk", "z")] == [
        2,
        2,
        0,
        3,
        None,
        None,
        None,
    ]
    assert g.group_values(1) == ["en-gb", "en-us"] and g.group_values(0) == ["de"]


def test_group_scores_and_loss_closed_form():
    g = LabelGroups.build("accent", ["unk", "a", "b"], {}, 4)  # {0, 1}, {2, 3}
    logits = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [9.0, 0.0, 0.0, 0.0]]])  # (1, 2, 4)
    scores = group_scores(logits, g)
    l2 = torch.log(torch.tensor(2.0))
    torch.testing.assert_close(scores[0, 0], torch.stack([l2, 1 + l2]))
    mask = torch.tensor([[True, False]])  # the second frame is padding
    target = torch.tensor([1])  # group 1
    expected = torch.log1p(torch.exp(torch.tensor(-1.0)))
    torch.testing.assert_close(group_label_loss(scores, target, mask), expected)
    assert float(group_label_loss(scores, torch.tensor([-1]), mask)) == 0.0
    lp = mean_group_log_probs(scores, mask)
    torch.testing.assert_close(lp, scores[:, 0].log_softmax(-1))


def test_placeholder_vocab_uses_the_configured_families():
    cfg = GuidanceConfig(labels=["accent", "noise"], groups=FAMILIES)
    v = placeholder_vocab(cfg, 3)
    assert v.values["accent"] == ["unk", "en-gb", "en-us", "es", "fr", "xx"]
    assert v.values["noise"] == ["unk", "v0", "v1", "v2"]
