"""Neural network building blocks: attention, MoE feed-forward, Conformer encoder, decoder."""

from moe_asr.nn.attention import MultiHeadAttention, RelPositionBias
from moe_asr.nn.conformer import ConformerEncoder, ConformerLayer, Conv2dSubsampling, ConvModule
from moe_asr.nn.decoder import TransformerDecoder
from moe_asr.nn.groups import LabelGroups
from moe_asr.nn.guidance import LabelGuidance
from moe_asr.nn.moe import FeedForward, MoEFeedForward, MoERouting, RouterStats
from moe_asr.nn.routing import LabelProbs, RoutingOptions

__all__ = [
    "MultiHeadAttention",
    "RelPositionBias",
    "ConformerEncoder",
    "ConformerLayer",
    "Conv2dSubsampling",
    "ConvModule",
    "TransformerDecoder",
    "LabelGuidance",
    "LabelGroups",
    "RoutingOptions",
    "LabelProbs",
    "FeedForward",
    "MoEFeedForward",
    "MoERouting",
    "RouterStats",
]
