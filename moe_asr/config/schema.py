"""The config schema: nested keyword-only dataclasses with their defaults, and ConfigError."""

from __future__ import annotations

from dataclasses import dataclass, field

from moe_asr.errors import UserError

__all__ = [
    "ConfigError",
    "MoEConfig",
    "GuidanceConfig",
    "DecoderConfig",
    "StreamingConfig",
    "CleanTargetConfig",
    "ModelConfig",
    "FeatureConfig",
    "AugmentConfig",
    "DataConfig",
    "TokenizerConfig",
    "TrainConfig",
    "DecodeConfig",
    "Config",
]


class ConfigError(UserError):
    """A config file or override names an unknown key, or holds a wrong type or bad value."""


@dataclass(kw_only=True)
class GuidanceConfig:
    """Label guidance for the routers (accent / noise labels, training only)."""

    labels: list[str] = field(default_factory=list)  # e.g. ["accent", "noise"]; empty = off
    # (a) label embedding added to the router input; `unk` for missing labels / dropout
    embed: bool = False
    # where the (a)/(d) label embedding goes in the guided layers: "router" (the router input
    # only) or "layer" (the layer's input frames: attention, convolution, feed-forwards and
    # router all see it; accent-conditioned layers, not only accent-conditioned routing)
    condition: str = "router"
    label_dropout: float = 0.3  # probability of replacing a label with `unk` in training
    # (b) auxiliary loss predicting the label from router logits of these layers
    router_loss_weight: float = 0.0
    router_loss_layers: list[int] = field(default_factory=list)  # empty = every MoE layer
    # (c) experts partitioned per label value, routing restricted to the group in training
    hard_groups: bool = False
    # (d) utterance-level label estimate from pooled states after `estimate_layer`,
    # its soft label embedding fed to the routers of later layers
    utterance_estimate: bool = False
    estimate_layer: int = 1
    estimate_loss_weight: float = 0.3
    # (f) each label value its own router correction (E x D per MoE feed-forward of the
    # guided layers) added to the router weight, selected and mixed like the embedding of
    # (a)/(d) (label-free: the (d) estimate's probabilities); zero-initialised with the
    # embeddings, so a model continued from an unguided one starts exactly where it was
    value_routers: bool = False
    # MoE layers (0-based) that get guidance ((a), (b), (c), (d) inputs, (e)); the others
    # route freely. Empty = every MoE layer. (b)/(c)/(e) use `router_loss_layers` if given.
    guided_layers: list[int] = field(default_factory=list)
    # expert groups of `group_label` (empty = the first label) for (b), (c) and (e):
    # label value -> group name (a family, e.g. {en-us: native, fr: romance}); a value not
    # listed is a group of its own; empty = one group per value. Groups (sorted by name)
    # split the experts into contiguous blocks, so num_experts >= groups (not >= values).
    group_label: str = ""
    groups: dict[str, str] = field(default_factory=dict)
    # (e) hierarchical routing (DLG-MoE style): a group router per layer of (b), trained
    # with the (b) loss, picks a group of experts per frame; the MoE router picks top-k
    # inside it. Training/forced/oracle use the label's group (label dropout: the group
    # router's own choice); label-free inference uses the group router.
    group_router: bool = False
    group_decision: str = "frame"  # frame | utterance (group log-probs averaged over frames)
    # of the top_k choices, this many are free over all experts ((c) and (e)); e.g. top_k=2,
    # free_experts=1: one expert of the label's group plus one of any group
    free_experts: int = 0
    # label-loss weight schedule by training step: linear ramp 0 -> 1 over the first
    # `loss_warmup_steps`, then linear decay to `loss_final_scale` over `loss_decay_steps`
    # (0 = no ramp / no decay: the weights stay as given)
    loss_warmup_steps: int = 0
    loss_decay_steps: int = 0
    loss_final_scale: float = 0.0


@dataclass(kw_only=True)
class MoEConfig:
    num_experts: int = 4
    top_k: int = 1
    expert_d_ff: int = (
        0  # hidden size of each expert; 0 = model.d_ff (top-k: k x the dense compute)
    )
    capacity_factor: float = 0.0  # 0 = dropless; >0 = overflow passes through the residual
    noisy_gate_std: float = 0.0  # noisy top-k: std of gate noise in training (0 = off)
    # block routing in the encoder: 0 = every frame routed on its own; N > 0 = the router's
    # logits are averaged over blocks of frames, and a block's frames share its expert choice:
    # the streaming chunk under a chunk mask (chunk-by-chunk decoding: one choice per chunk,
    # so a chunk reads k experts' weights, not nearly all), else blocks of N frames
    route_block: int = 0
    num_shared_experts: int = 0
    balance_weight: float = 0.01  # Switch load-balance loss
    z_loss_weight: float = 0.001  # router z-loss
    importance_cv_weight: float = 0.0  # Shazeer et al. 2017 importance CV^2
    output_diversity_weight: float = 0.0  # penalty on cosine similarity of expert outputs
    layers: str = "all"  # all | every_other | comma-separated layer indices "1,3,5"
    # experts of each MoE feed-forward in encoder order (ff1, ff2 of every MoE layer), for
    # models cut down by `moe-asr extract`; empty = num_experts in every one
    ffn_experts: list[int] = field(default_factory=list)
    # per MoE feed-forward (as ffn_experts), written by `moe-asr extract --group-of` for a
    # group-routed layer cut to one group: its first N experts are that group's, the first
    # top_k - fixed_group_free choices are made among them, the last fixed_group_free among
    # the other experts (the free path); 0 or empty = plain top-k over all experts
    ffn_fixed_group: list[int] = field(default_factory=list)
    fixed_group_free: int = 0
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)


@dataclass(kw_only=True)
class DecoderConfig:
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 576
    dropout: float = 0.1
    # dense | moe: experts of width d_ff, routing and its losses as in model.moe (no guidance)
    ffn: str = "dense"


@dataclass(kw_only=True)
class StreamingConfig:
    """Dynamic-chunk training (U2): per batch, full context with ``full_context_prob``,
    else a chunk of ``min_chunk..max_chunk`` encoder frames (uniform) seeing ``left_chunks``
    chunks of history (-1 = all; ``dynamic_left_chunks``: drawn per batch from 0 up to all,
    as WeNet's dynamic left chunks, for decoding with limited history).
    ``conv``: the depthwise convolution of a streaming model. ``causal`` (U2++): it reads
    frames t - kernel + 1 .. t. ``chunk`` (dynamic chunk convolution, Li et al. 2023): the
    centred kernel of a non-streaming model, whose right context stops at the end of the
    frame's chunk; with full context it is the non-streaming convolution, so full-context
    accuracy is not traded away and a non-streaming model is a warm start.
    ``full_context_steps``: the first N updates of a run train with full context only, and
    the chunk draws start after them: the warm start from a non-streaming model inside one
    run of the same number of updates (with ``conv: chunk``).
    ``dual_mode`` (Dual-mode ASR, Yu et al. 2021): after ``full_context_steps`` every batch is
    encoded twice, with full context and with a drawn chunk (``full_context_prob`` is not
    used), and the loss is the mean of the two passes' losses: both modes learn on every
    update, at about twice the compute per update."""

    enabled: bool = False
    min_chunk: int = 1
    max_chunk: int = 25
    full_context_prob: float = 0.5
    full_context_steps: int = 0
    dual_mode: bool = False
    left_chunks: int = -1
    dynamic_left_chunks: bool = False
    conv: str = "causal"  # causal | chunk


@dataclass(kw_only=True)
class CleanTargetConfig:
    """Clean-feature reconstruction, a denoising auxiliary loss for noise robustness: a linear
    head reads the encoder states after ``layer`` layers and predicts the log-mel frames
    (global CMVN) of the training utterance before the augmentation's reverberation and noise
    (each encoder frame the ``model.subsampling`` input frames it starts at); the L1 error is
    added to the loss with ``weight``. Training only (the head is unused in decoding); an
    utterance the augmentation left alone is its own target. 0 = off."""

    weight: float = 0.0
    layer: int = 2

    @property
    def enabled(self) -> bool:
        """The head is built and the training data carries clean targets."""
        return self.weight > 0


@dataclass(kw_only=True)
class ModelConfig:
    input_dim: int = 80
    d_model: int = 144
    num_heads: int = 4
    num_layers: int = 6
    d_ff: int = 576
    conv_kernel: int = 15
    dropout: float = 0.1
    subsampling: int = 4  # 4 | 6 | 8
    subsampling_channels: int = 32
    max_rel_pos: int = 64  # rel-pos bias clipped at +-this many (subsampled) frames
    # dropout on attention weights (encoder and decoder); > 0 makes SDPA leave its fused CPU
    # kernel (about 10x slower attention), so off by default as in WeNet's recipes
    attention_dropout: float = 0.0
    ffn: str = "moe"  # dense | moe
    moe: MoEConfig = field(default_factory=MoEConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    ctc_weight: float = 0.3
    lsm_weight: float = 0.1
    # input feature normalisation: "global" = the training set's CMVN only; "utterance" =
    # then each utterance's own mean and variance per feature dimension (over its real
    # frames), as Kaldi's per-utterance apply-cmvn --norm-vars: stationary noise and channel
    # shift the log-mel features of a whole utterance, which global CMVN leaves in. Needs
    # the whole utterance, so not for streaming models.
    input_norm: str = "global"
    clean_target: CleanTargetConfig = field(default_factory=CleanTargetConfig)


@dataclass(kw_only=True)
class FeatureConfig:
    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0
    # read fbank from DATA/feats.scp (written by `moe-asr dump-feats`) instead of computing it
    # from the audio; waveform augmentation (speed_perturb, noise) is then impossible
    precomputed: bool = False


@dataclass(kw_only=True)
class AugmentConfig:
    """Training-time augmentation (see ``moe_asr.data.augment``); every draw is seeded per
    (seed, epoch, utterance). Noise and reverberation record the applied condition as the
    labels ``noise``, ``snr`` (bucket) and ``reverb``, which guided routing can use."""

    speed_perturb: list[float] = field(default_factory=list)  # e.g. [0.9, 1.0, 1.1]
    # additive noise, with probability noise_prob, of a type drawn uniformly from the
    # synthetic generators in noise_types (white, pink, brown, music, babble: other training
    # utterances) and the user sources in noise_files: audio files, directories (searched)
    # or Kaldi noise.scp files, each optionally TYPE=PATH (e.g. music=/data/musan/music;
    # untyped: type "file")
    noise_files: list[str] = field(default_factory=list)
    noise_types: list[str] = field(default_factory=list)
    noise_snrs: list[float] = field(default_factory=lambda: [5.0, 10.0, 20.0])  # dB, drawn
    snr_range: list[float] = field(default_factory=list)  # [low, high] dB (e.g. [-5, 20]),
    # uniform; replaces noise_snrs when given. SNR = active speech power / noise power.
    snr_buckets: list[float] = field(default_factory=lambda: [0.0, 10.0])  # `snr` label edges
    noise_prob: float = 0.0
    # reverberation (before the noise), with probability reverb_prob, by a simulated RIR
    # (RT60 and direct-to-reverberant ratio drawn uniformly from the ranges) or, when
    # rir_files are given (files, directories or rir.scp), by one of those
    reverb_prob: float = 0.0
    rt60_range: list[float] = field(default_factory=lambda: [0.2, 0.8])  # seconds
    drr_range: list[float] = field(default_factory=lambda: [0.0, 10.0])  # dB
    rir_files: list[str] = field(default_factory=list)
    specaug: bool = True
    freq_masks: int = 2
    freq_mask_width: int = 27
    time_masks: int = 2
    time_mask_width: int = 40
    time_mask_max_ratio: float = 0.2  # a time mask covers at most this share of frames


@dataclass(kw_only=True)
class DataConfig:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_batch_seconds: float = 80.0
    max_utt_seconds: float = 30.0
    num_buckets: int = 10
    num_workers: int = 0


@dataclass(kw_only=True)
class TokenizerConfig:
    type: str = "char"  # char | bpe | unigram
    vocab_size: int = 256  # ignored for char


@dataclass(kw_only=True)
class TrainConfig:
    seed: int = 0
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    scheduler: str = "noam"  # noam | cosine | constant
    max_epochs: int = 20
    max_steps: int = 0  # 0 = no step limit
    max_minutes: float = 0.0  # 0 = no wall-clock budget
    grad_clip: float = 5.0
    accum_grad: int = 1
    bf16: bool = False
    log_interval: int = 10
    save_every_steps: int = 0  # also write last.pt every N optimizer steps (0 = epoch ends only)
    keep_best: int = 5
    patience: int = 0  # epochs without dev improvement before stopping; 0 = off
    max_bad_steps: int = 20  # consecutive NaN/inf losses before training stops
    num_threads: int = 0  # torch.set_num_threads; 0 = leave as is
    # dropout masks on CPU: torch (nn.Dropout's bernoulli_) | fast (16-bit masks from 64-bit
    # draws, moe_asr.nn.dropout: about 14 % off a CPU training step; the same distribution,
    # other draws than torch's, so a run's numbers change as with another seed)
    cpu_dropout: str = "torch"
    # start from this model's weights (package or checkpoint; dense FFNs upcycled into MoE
    # experts; see moe_asr.train.init); "" = random init. A resumed run ignores it.
    init: str = ""
    init_noise: float = 0.0  # noise on upcycled expert copies, relative std (e.g. 0.01)
    # the parameters that train (the rest stay frozen): all | router (MoE routers and the
    # label guidance: embeddings, group routers, estimate heads) | router+experts (also the
    # expert and shared-expert feed-forwards); `moe-asr adapt` sets it
    trainable: str = "all"


@dataclass(kw_only=True)
class DecodeConfig:
    mode: str = "ctc_greedy"
    beam: int = 10
    ctc_weight: float = 0.3
    lm_path: str = ""
    lm_unit: str = "word"  # word: ARPA from `moe-asr train-lm` + lexicon; token: token-level LM
    lm_weight: float = 0.5
    word_score: float = 0.0
    batch_size: int = 16
    nbest: int = 5  # hypotheses written to nbest.txt; attention_rescoring rescores `beam` of them
    window_seconds: float = 30.0  # transcribe: longer files are cut into windows and stitched
    # chunk mask of streaming models (offline simulation of streaming); 0 = full context
    chunk_frames: int = 0  # encoder frames per chunk
    left_chunks: int = -1  # chunks of history each frame sees; -1 = all


@dataclass(kw_only=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
