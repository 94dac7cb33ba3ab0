"""The tiny Conformer the model-level tests build (2 layers, d 16, 4 experts): one place for
its shape, so that test files differ only in what they test (routing, guidance, ffn)."""

from __future__ import annotations

from moe_asr.config import DecoderConfig, ModelConfig, MoEConfig

__all__ = ["tiny_model_config"]


def tiny_model_config(
    *, ffn: str = "moe", moe: MoEConfig | None = None, input_dim: int = 40, dec_ff: int = 32
) -> ModelConfig:
    """2 encoder layers of d_model 16 (ffn 32, kernel 3, no dropout), 1 decoder layer;
    ``moe`` defaults to 4 experts, top-1."""
    return ModelConfig(
        input_dim=input_dim,
        d_model=16,
        num_heads=2,
        num_layers=2,
        d_ff=32,
        conv_kernel=3,
        dropout=0.0,
        subsampling_channels=4,
        max_rel_pos=8,
        ffn=ffn,
        moe=moe or MoEConfig(num_experts=4, top_k=1),
        decoder=DecoderConfig(num_layers=1, num_heads=2, d_ff=dec_ff, dropout=0.0),
    )
