"""AsrModel: global CMVN, MoE Conformer encoder, CTC head, attention decoder and its losses.

Token ids: blank = 0, unk = 1, sos = eos = vocab_size - 1; ``tokens`` are padded with -1.
Labels (``{"accent": LongTensor (B,)}``) use the ``LabelVocab`` ids, 0 = unk.

Losses (``ModelOutput``, ``LOSS_FIELDS``): the functions of ``moe_asr.model_losses``.

Label guidance of the routers (any ``utt2<label>``: accent, noise, ...), forcing labels,
masking experts and label probabilities are owned by ``moe_asr.nn.guidance.LabelGuidance``;
the model exposes them through ``forced_routing``, ``encode`` and ``label_probs``.

Streaming (``model.streaming``, ``moe_asr.nn.streaming``): in training each batch draws a
chunk size (or full context; ``dual_mode``: both, the mean of the two passes' losses);
``encode(..., chunk_frames=c, left_chunks=k)`` applies the chunk mask at inference, and
``init_stream``/``encode_chunk`` encode chunk by chunk with caches, which equals ``encode``
under the same chunk mask.

Which layers are MoE and the config checks live in ``moe_asr.model_spec``, parameter
counts in ``moe_asr.model_params``; their public names are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from moe_asr.config import ModelConfig
from moe_asr.data.labels import LabelVocab
from moe_asr.errors import UserError
from moe_asr.model_losses import (
    LOSS_FIELDS,
    attention_loss,
    check_tokens,
    ctc_loss,
    decoder_targets,
    router_losses,
)
from moe_asr.model_params import ParamRow, parameter_summary
from moe_asr.model_spec import (
    check_model_config,
    guidance_labels,
    model_moe_layers,
    moe_layer_indices,
)
from moe_asr.nn.clean_target import CleanFeatureHead, keep_layer_input
from moe_asr.nn.conformer import ConformerEncoder, lengths_to_mask
from moe_asr.nn.decoder import TransformerDecoder
from moe_asr.nn.guidance import LabelGuidance
from moe_asr.nn.moe import FeedForward, MoEFeedForward, RouterStats
from moe_asr.nn.routing import LabelProbs, RoutingOptions
from moe_asr.nn.streaming import EncoderCache, conv_mode, draw_chunk, history_frames

__all__ = [
    "RoutingOptions",
    "LabelProbs",
    "EncoderOutput",
    "ModelOutput",
    "LOSS_FIELDS",
    "AsrModel",
    "build_model",
    "moe_layer_indices",
    "model_moe_layers",
    "guidance_labels",
    "ParamRow",
    "parameter_summary",
]


@dataclass
class EncoderOutput:
    """out: (B, T', D); lens: (B,); router_stats: one per MoE feed-forward, in layer order;
    label_logits: name -> (B, V_name) from the (d) estimate head (index 0 = unk, never chosen);
    group_logits: layer -> (B, T', G) of the (e) group routers (hierarchical routing)."""

    out: Tensor
    lens: Tensor
    router_stats: list[RouterStats]
    label_logits: dict[str, Tensor]
    group_logits: dict[int, Tensor] = field(default_factory=dict)
    # (B, T', D) states after model.clean_target.layer layers (training with that head only)
    clean_states: Tensor | None = None


@dataclass
class ModelOutput:
    """Scalar losses (zero when unused) plus what the router decided."""

    loss: Tensor
    ctc: Tensor
    att: Tensor
    moe_balance: Tensor
    z_loss: Tensor
    diversity: Tensor
    label_loss: Tensor
    clean_target: Tensor
    router_stats: list[RouterStats]
    label_logits: dict[str, Tensor]
    # what the losses were computed on (dual mode: the full-context pass), e.g. for dev CER
    # without a second pass
    encoder: EncoderOutput


# per-utterance std floor of ``input_norm: utterance`` (features after global CMVN have std
# about 1; a near-constant dimension is centred, not amplified)
_UTTERANCE_STD_FLOOR = 0.1


class AsrModel(nn.Module):
    """Hybrid CTC/attention MoE Conformer. Build with ``build_model``."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, label_vocab: LabelVocab | None) -> None:
        super().__init__()
        check_model_config(cfg, vocab_size)
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.label_vocab = label_vocab
        self.blank, self.unk, self.sos, self.eos = 0, 1, vocab_size - 1, vocab_size - 1
        moe = cfg.moe
        self.moe_layers = model_moe_layers(cfg)
        moe_set = set(self.moe_layers)
        # the encoder builds ff1 then ff2 of each layer, layers in order: the order of the list
        sizes, fixed = iter(moe.ffn_experts), iter(moe.ffn_fixed_group)

        def make_moe(
            d_ff: int, dropout: float, num_experts: int, group: int = 0, route_block: int = 0
        ) -> MoEFeedForward:
            return MoEFeedForward(
                cfg.d_model,
                d_ff,
                num_experts,
                moe.top_k,
                dropout=dropout,
                capacity_factor=moe.capacity_factor,
                noisy_gate_std=moe.noisy_gate_std,
                num_shared_experts=moe.num_shared_experts,
                probe_diversity=moe.output_diversity_weight > 0,
                fixed_group=group,
                fixed_free=moe.fixed_group_free if group else 0,
                route_block=route_block,
            )

        def make_ffn(i: int) -> nn.Module:
            if i not in moe_set:
                return FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout)
            d_ff = moe.expert_d_ff or cfg.d_ff
            return make_moe(
                d_ff, cfg.dropout, next(sizes, moe.num_experts), next(fixed, 0), moe.route_block
            )

        self.register_buffer("cmvn_mean", torch.zeros(cfg.input_dim))
        self.register_buffer("cmvn_std", torch.ones(cfg.input_dim))
        self.encoder = ConformerEncoder(
            input_dim=cfg.input_dim,
            d_model=cfg.d_model,
            num_heads=cfg.num_heads,
            num_layers=cfg.num_layers,
            conv_kernel=cfg.conv_kernel,
            dropout=cfg.dropout,
            subsampling=cfg.subsampling,
            subsampling_channels=cfg.subsampling_channels,
            max_rel_pos=cfg.max_rel_pos,
            make_ffn=make_ffn,
            attention_dropout=cfg.attention_dropout,
            conv_mode=conv_mode(cfg.streaming),
        )
        if moe.ffn_experts:
            built = [m.num_experts for m in self.encoder.modules() if isinstance(m, MoEFeedForward)]
            assert built == list(moe.ffn_experts), (built, moe.ffn_experts)
        self.ctc_head = nn.Linear(cfg.d_model, vocab_size)
        dec = cfg.decoder
        self.decoder = TransformerDecoder(
            vocab_size,
            cfg.d_model,
            dec.num_heads,
            dec.num_layers,
            dec.d_ff,
            dec.dropout,
            cfg.attention_dropout,
            make_ffn=(lambda: make_moe(dec.d_ff, dec.dropout, moe.num_experts))
            if dec.ffn == "moe"
            else None,
        )
        # owns routing for every MoE model (labels, groups, forcing, masks); none if dense
        self.guidance: LabelGuidance | None = None
        if self.moe_layers:
            self.guidance = LabelGuidance(
                cfg.d_model, moe, self.moe_layers, cfg.num_layers, label_vocab
            )
        # built last, so that a model without it initialises exactly as before
        self.clean_head: CleanFeatureHead | None = None
        if cfg.clean_target.enabled:
            self.clean_head = CleanFeatureHead(cfg.d_model, cfg.input_dim, cfg.subsampling)

    @property
    def is_moe(self) -> bool:
        """True when some feed-forward is a Mixture of Experts (routing exists)."""
        return bool(self.moe_layers)

    @property
    def guide_names(self) -> list[str]:
        """Label names that guide the routers (forcible at inference); [] = none."""
        return list(self.guidance.names) if self.guidance is not None else []

    # ------------------------------------------------------------------ inference API
    @property
    def streaming(self) -> bool:
        """Trained for streaming (chunk masks, a convolution that never reads a later chunk):
        can decode chunk by chunk."""
        return self.cfg.streaming.enabled

    def forced_routing(
        self, forced: dict[str, str] | None = None, expert_mask: dict[int, list[int]] | None = None
    ) -> RoutingOptions:
        """Checked inference routing: force label values (``{"noise": "white"}``; empty =
        label-free) and switch experts off (``{3: [0, 1]}``). UserError for a label the
        model was not guided by, an unknown value, a non-MoE layer or a bad expert."""
        if self.guidance is None:
            if forced or expert_mask:
                raise UserError(
                    "this is a dense model (no MoE layers): it has no routing to force or mask"
                )
            return RoutingOptions()
        return self.guidance.forced_routing(forced, expert_mask)

    def label_probs(self, enc: EncoderOutput) -> dict[str, LabelProbs]:
        """Per-utterance label probabilities of an encoder output (label head, else routers
        trained with the label loss); ``{}`` when the model predicts no label."""
        if self.guidance is None:
            return {}
        mask = lengths_to_mask(enc.lens, enc.out.shape[1])
        return self.guidance.label_probs(enc.router_stats, enc.label_logits, enc.group_logits, mask)

    def group_probs(self, enc: EncoderOutput) -> LabelProbs | None:
        """Per-utterance probabilities (B, G) of the group label's expert groups from the
        routing of an encoder output; None when the model has no expert groups."""
        if self.guidance is None:
            return None
        mask = lengths_to_mask(enc.lens, enc.out.shape[1])
        return self.guidance.group_probs(enc.router_stats, enc.group_logits, mask)

    def set_cmvn(self, mean: Tensor, std: Tensor) -> None:
        """Global CMVN applied at the start of ``encode``: mean (F,), std (F,) > 0."""
        if mean.shape != self.cmvn_mean.shape or std.shape != self.cmvn_std.shape:
            raise UserError(
                f"CMVN stats have shape {tuple(mean.shape)}/{tuple(std.shape)}, the model "
                f"expects ({self.cmvn_mean.numel()},): recompute them with the model's features"
            )
        if not bool((std > 0).all()):
            raise UserError("CMVN std has entries <= 0; recompute the CMVN statistics")
        self.cmvn_mean.copy_(mean)
        self.cmvn_std.copy_(std)

    def _global_cmvn(self, feats: Tensor) -> Tensor:
        return (feats - self.cmvn_mean) / self.cmvn_std

    def _normalize(self, feats: Tensor, mask: Tensor) -> Tensor:
        """Global CMVN, then (``input_norm: utterance``) each utterance's own mean and
        variance per dimension over its real frames; padded frames are 0."""
        pad = ~mask[..., None]
        x = self._global_cmvn(feats).masked_fill(pad, 0.0)
        if self.cfg.input_norm != "utterance":
            return x
        count = mask.sum(1, keepdim=True).clamp_min(1)[..., None].to(x.dtype)  # (B, 1, 1)
        mean = x.sum(1, keepdim=True) / count
        centred = (x - mean).masked_fill(pad, 0.0)
        std = (centred.square().sum(1, keepdim=True) / count).sqrt()
        # a floor, so a constant dimension (digital silence) is centred, not blown up
        return centred / std.clamp_min(_UTTERANCE_STD_FLOOR)

    def encode(
        self,
        feats: Tensor,
        feat_lens: Tensor,
        routing: RoutingOptions | None = None,
        labels: dict[str, Tensor] | None = None,
        *,
        chunk_frames: int = 0,
        left_chunks: int = -1,
    ) -> EncoderOutput:
        """feats: (B, T, F) raw fbank, feat_lens: (B,) -> EncoderOutput.

        ``routing=None`` means: training with labels -> oracle labels (with label dropout),
        otherwise label-free. ``labels`` are needed for ``mode="oracle"``. ``chunk_frames``
        > 0: the streaming chunk mask (encoder frames per chunk, ``left_chunks`` of history,
        -1 = all); 0: full context (training draws its chunks in ``forward``).
        """
        if routing is None:
            mode = "oracle" if self.training and labels else "free"
            routing = RoutingOptions(mode=mode)
        self._check_routing(routing, labels)
        if chunk_frames:
            self._check_chunk(chunk_frames, left_chunks)
        need = self.encoder.frontend.min_input_frames
        short = (feat_lens < need).nonzero().flatten().tolist()
        if short:
            raise UserError(
                f"batch item(s) {short} have fewer than {need} feature frames (subsampling "
                f"{self.cfg.subsampling} needs {need}); drop such short utterances"
            )
        mask = lengths_to_mask(feat_lens, feats.shape[1])
        x = self._normalize(feats, mask)
        label_logits: dict[str, Tensor] = {}
        group_logits: dict[int, Tensor] = {}
        route_fn = self._route_fn(routing, labels, feats, label_logits, group_logits)
        kept: list[Tensor] = []
        keep = self.clean_head is not None and self.training
        if keep:
            route_fn = keep_layer_input(route_fn, self.cfg.clean_target.layer, kept)
        out, lens, stats = self.encoder(
            x, feat_lens, route_fn, chunk=chunk_frames, left_chunks=left_chunks
        )
        return EncoderOutput(
            out=out,
            lens=lens,
            router_stats=stats,
            label_logits=label_logits,
            group_logits=group_logits,
            clean_states=(kept[0] if kept else out) if keep else None,
        )

    def init_stream(self, batch: int = 1) -> EncoderCache:
        """Empty encoder cache for ``encode_chunk`` (streaming models only)."""
        self._check_chunk(1, -1)
        return self.encoder.init_cache(batch)

    def encode_chunk(
        self,
        feats: Tensor,
        cache: EncoderCache,
        *,
        chunk_frames: int,
        left_chunks: int = -1,
        routing: RoutingOptions | None = None,
        labels: dict[str, Tensor] | None = None,
    ) -> tuple[EncoderOutput, EncoderCache]:
        """New raw fbank frames (B, t, F) of B equally long streams -> this chunk's encoder
        output and the new cache. The caller feeds ``subsampling * chunk_frames`` frames per
        chunk (``encoder.frontend.context_frames`` more for the first; a shorter last chunk);
        routing is decided per chunk. Equals ``encode(..., chunk_frames, left_chunks)``
        (for dropless MoE; with ``capacity_factor`` > 0 the expert capacity is per chunk)."""
        routing = routing or RoutingOptions()
        self._check_routing(routing, labels)
        self._check_chunk(chunk_frames, left_chunks)
        x = self._global_cmvn(feats)  # streaming models normalise globally only (validation)
        label_logits: dict[str, Tensor] = {}
        group_logits: dict[int, Tensor] = {}
        route_fn = self._route_fn(routing, labels, feats, label_logits, group_logits)
        out, cache, stats = self.encoder.forward_chunk(
            x, cache, route_fn, history=history_frames(chunk_frames, left_chunks)
        )
        lens = torch.full((feats.shape[0],), out.shape[1], dtype=torch.long, device=out.device)
        enc = EncoderOutput(
            out=out,
            lens=lens,
            router_stats=stats,
            label_logits=label_logits,
            group_logits=group_logits,
        )
        return enc, cache

    def _route_fn(self, routing, labels, feats: Tensor, label_logits: dict, group_logits: dict):
        """The encoder's routing closure (None for a model without guidance)."""
        if self.guidance is None:
            return None
        return self.guidance.route_fn(
            routing, labels, feats.shape[0], feats.device, label_logits, group_logits
        )

    def _check_chunk(self, chunk_frames: int, left_chunks: int) -> None:
        if not self.cfg.streaming.enabled:
            raise UserError(
                "chunked (streaming) decoding needs a model trained with "
                "model.streaming.enabled=true (dynamic chunks); "
                "decode this model with full context (--chunk-frames 0)"
            )
        if chunk_frames < 1 or left_chunks < -1:
            raise UserError(
                f"chunk_frames={chunk_frames} must be >= 1 and left_chunks={left_chunks} "
                ">= -1 (-1 = all history)"
            )

    def ctc_log_probs(self, enc_out: Tensor | EncoderOutput) -> Tensor:
        """(B, T', D) encoder states (or an EncoderOutput) -> (B, T', V) float32 log-probs."""
        h = enc_out.out if isinstance(enc_out, EncoderOutput) else enc_out
        return self.ctc_head(h).float().log_softmax(-1)

    # ------------------------------------------------------------------ training
    def forward(
        self,
        feats: Tensor,
        feat_lens: Tensor,
        tokens: Tensor,
        token_lens: Tensor,
        labels: dict[str, Tensor] | None = None,
        routing: RoutingOptions | None = None,
        step: int | None = None,
        clean_feats: Tensor | None = None,
    ) -> ModelOutput:
        """feats (B, T, F), feat_lens (B,), tokens (B, L) padded with -1, token_lens (B,);
        ``step``: the training step, for the label-loss schedule and the start of the
        streaming chunk draws (None: no schedule). A streaming model in training encodes with
        a chunk drawn per batch; with ``model.streaming.dual_mode`` also with full context,
        and the output is the mean of the two passes (its routing and encoder output are the
        full-context pass's). ``clean_feats`` (B, T, F): the raw fbank of the audio before
        the augmentation's reverberation and noise, the target of ``model.clean_target``."""
        check_tokens(tokens, token_lens, self.vocab_size)
        outs = [
            self._pass_output(
                self.encode(feats, feat_lens, routing, labels, chunk_frames=c, left_chunks=k),
                tokens,
                token_lens,
                labels,
                step,
                (clean_feats, feat_lens),
            )
            for c, k in self._training_chunks(feat_lens, step)
        ]
        if len(outs) == 1:
            return outs[0]
        mean = {f: sum(getattr(o, f) for o in outs) / len(outs) for f in LOSS_FIELDS}
        return replace(outs[0], **mean)

    def _training_chunks(self, feat_lens: Tensor, step: int | None) -> list[tuple[int, int]]:
        """The (chunk frames, left chunks) of each encoder pass of this batch; 0 = full context."""
        st = self.cfg.streaming
        if not (self.training and st.enabled):
            return [(0, -1)]
        frames = int(self.encoder.frontend.output_lengths(feat_lens.max().cpu()))
        drawn = draw_chunk(st, frames, step)
        return [(0, -1), drawn] if st.dual_mode and drawn[0] > 0 else [drawn]

    def _pass_output(
        self,
        enc: EncoderOutput,
        tokens: Tensor,
        token_lens: Tensor,
        labels: dict[str, Tensor] | None,
        step: int | None,
        clean: tuple[Tensor | None, Tensor],
    ) -> ModelOutput:
        zero = enc.out.new_zeros((), dtype=torch.float32)
        w = self.cfg.ctc_weight
        ctc = zero
        if w > 0:
            ctc = ctc_loss(self.ctc_log_probs(enc), enc.lens, tokens, token_lens, self.blank)
        dec_stats: list[RouterStats] = []  # decoder MoE (model.decoder.ffn = moe)
        att = zero
        if w < 1:
            ys_in, ys_out = decoder_targets(tokens, token_lens, self.sos, self.eos)
            logits = self.decoder(enc.out, enc.lens, ys_in, token_lens + 1, dec_stats)
            att = attention_loss(logits, ys_out, self.cfg.lsm_weight)
        balance, z, diversity = router_losses(self.cfg.moe, enc.router_stats + dec_stats, zero)
        label_loss = self._label_loss(enc, labels, zero, step)
        clean_target = self._clean_target_loss(enc, *clean, zero)
        loss = w * ctc + (1 - w) * att + balance + z + diversity + label_loss + clean_target
        return ModelOutput(
            loss=loss,
            ctc=ctc,
            att=att,
            moe_balance=balance,
            z_loss=z,
            diversity=diversity,
            label_loss=label_loss,
            clean_target=clean_target,
            router_stats=enc.router_stats,
            label_logits=enc.label_logits,
            encoder=enc,
        )

    def _label_loss(
        self, enc: EncoderOutput, labels: dict[str, Tensor] | None, zero: Tensor, step: int | None
    ) -> Tensor:
        if not labels or self.guidance is None or not self.guidance.names:
            return zero
        mask = lengths_to_mask(enc.lens, enc.out.shape[1])
        return self.guidance.label_loss(
            enc.router_stats, enc.label_logits, enc.group_logits, labels, mask, zero, step
        )

    def _clean_target_loss(
        self, enc: EncoderOutput, clean_feats: Tensor | None, feat_lens: Tensor, zero: Tensor
    ) -> Tensor:
        if self.clean_head is None or clean_feats is None or enc.clean_states is None:
            return zero
        target = self._global_cmvn(clean_feats)
        err = self.clean_head.loss(enc.clean_states, enc.lens, target, feat_lens)
        return self.cfg.clean_target.weight * err

    # ------------------------------------------------------------------ checks
    def _check_routing(self, routing: RoutingOptions, labels: dict[str, Tensor] | None) -> None:
        if self.guidance is not None:
            self.guidance.check_routing(routing, labels)
        elif routing.forced or routing.expert_mask:
            self.forced_routing(routing.forced, routing.expert_mask)  # raises: dense model
        for layer, experts in routing.expert_mask.items():  # layers of an extracted model
            if layer in self.moe_layers:
                e = min(self._layer_experts(layer))
                bad = [x for x in experts if not 0 <= x < e]
                if bad:
                    raise UserError(
                        f"expert mask for layer {layer}: experts {bad} not in 0..{e - 1}"
                    )

    def _layer_experts(self, layer: int) -> list[int]:
        """Expert counts of the MoE feed-forwards of encoder layer ``layer`` (ff1, ff2)."""
        halves = (self.encoder.layers[layer].ff1, self.encoder.layers[layer].ff2)
        return [m.num_experts for m in halves if isinstance(m, MoEFeedForward)]


def build_model(cfg: ModelConfig, vocab_size: int, label_vocab: LabelVocab | None) -> AsrModel:
    """The model from config + vocabulary sizes only (so a state_dict restores it)."""
    return AsrModel(cfg, vocab_size, label_vocab)
