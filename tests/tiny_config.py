"""The tiny Conformer the model-level tests build (2 layers, d 16, 4 experts): one place for
its shape, so that test files differ only in what they test (routing, guidance, ffn)."""

from __future__ import annotations

from moe_asr.config import DecoderConfig, ModelConfig, MoEConfig

__all__ = ["tiny_model_config", "untrained_package"]


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


def untrained_package(path, cfg, texts, vocab=None, edit=None, meta=None):
    """Save a package of an untrained model of ``cfg`` (a Config) with a char tokenizer of
    ``texts``, label vocabulary ``vocab`` and ``meta``; ``edit(model)`` may set weights first."""
    from moe_asr.config import TokenizerConfig
    from moe_asr.data.tokenizer import train_tokenizer
    from moe_asr.model import build_model
    from moe_asr.package import save_package

    tok = train_tokenizer(texts, TokenizerConfig(type="char"))
    model = build_model(cfg.model, tok.vocab_size, vocab)
    if edit is not None:
        edit(model)
    return save_package(
        path,
        config=cfg,
        model_state=model.state_dict(),
        tokenizer_bytes=tok.to_bytes(),
        label_vocab=vocab,
        meta=meta,
    )
