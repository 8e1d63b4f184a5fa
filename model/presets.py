"""Model sizes as named presets: ``paper`` (the published JavisDiT and ST-Prior sizes) and ``tiny``
(same structure, laptop-CPU sized).

Each component has a small frozen config; a preset is a function returning both configs, built on
the same :class:`~model.spec.LatentSpec` so that the prior the estimator emits has exactly the
token count and width the DiT cross-attends to. Configs validate themselves in ``__post_init__``
(``ValueError`` for inconsistent sizes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from model.spec import PAPER, TINY, LatentSpec


@dataclasses.dataclass(frozen=True)
class PriorLossWeights:
    """Weights of the ST-Prior contrastive objective (appendix C.2.3, eq. A2) and its margins."""

    hinge: float = 1.0  # token-level hinge on cosine similarity
    hinge_margin: float = 1.0  # cos(prior, pos) must beat cos(prior, neg) by this much (cosines span 2)
    disc: float = 1.0  # auxiliary synchronous-vs-asynchronous discriminator (BCE)
    va: float = 1.0  # VA-embedding discrepancy between positive and negative embeddings
    va_cos_floor: float = -1.0  # discrepancy is relu(cos(pos, neg) - floor): -1 pushes them to opposite
    # L2 from the sampled prior to the (stop-gradient) positive embedding: a smooth pull that the
    # paper credits with convergence; at weight 1 its unbounded gradient drowns the bounded cosine
    # terms that make the prior prefer positives (8 tiny 40-step runs: mean held-back margin gain
    # 0.09 at weight 1 against 0.15 at 0.1; worst seed 0.004 against 0.04)
    l2: float = 0.1
    kl: float = 1e-6  # KL(q(prior | text) || N(0, I)), summed over tokens and channels: kept tiny


@dataclasses.dataclass(frozen=True)
class PriorConfig:
    """ST-Prior estimator (text -> spatial/temporal priors) plus the training-only VA encoder."""

    latents: LatentSpec
    hidden_size: int = 512  # width of the query transformer
    num_heads: int = 4
    num_encoder_layers: int = 4  # self-attention layers over the 77 frozen text states
    num_decoder_layers: int = 4  # query layers: self-attention, cross-attention to text, FFN
    ffn_ratio: int = 4
    num_spatial_tokens: int = 32  # N_s (paper: 32)
    num_temporal_tokens: int = 32  # N_t (paper: 32)
    prior_dim: int = 128  # width of each prior token (paper: 128)
    logvar_min: float = -30.0  # clamp as in a VAE's diagonal Gaussian: keeps exp() finite in bf16
    logvar_max: float = 20.0
    va_video_patch: tuple[int, int, int] = (1, 2, 2)  # VA encoder patch over (T, H, W) video latents
    va_audio_patch: tuple[int, int] = (2, 2)  # VA encoder patch over (time, freq) audio latents
    va_num_heads: int = 4
    va_mlp_ratio: float = 4.0
    disc_num_heads: int = 4
    loss: PriorLossWeights = dataclasses.field(default_factory=PriorLossWeights)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}")
        for name, heads in (("va_num_heads", self.va_num_heads), ("disc_num_heads", self.disc_num_heads)):
            if self.prior_dim % heads:
                raise ValueError(f"prior_dim {self.prior_dim} not divisible by {name} {heads}")
        if min(self.num_spatial_tokens, self.num_temporal_tokens, self.num_encoder_layers) < 1:
            raise ValueError("token counts and encoder layers must be positive")
        if self.num_decoder_layers < 1:
            raise ValueError("num_decoder_layers must be positive")


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """JavisDiT: a video and an audio branch of ST-DiT blocks joined by bidirectional attention."""

    latents: LatentSpec
    hidden_size: int = 1152
    num_heads: int = 16
    depth: int = 28
    mlp_ratio: float = 4.0
    video_patch: tuple[int, int, int] = (1, 2, 2)  # (T, H, W) as OpenSora v1.2
    audio_patch: tuple[int, int] = (4, 1)  # (time, freq) as the released JavisDiT code
    num_spatial_priors: int = 32
    num_temporal_priors: int = 32
    prior_dim: int = 128
    qk_norm: bool = True  # RMSNorm on self-attention queries/keys (OpenSora v1.2)
    fused_attention: bool = True  # torch SDPA; False uses the explicit softmax (debugging, exact maths)
    gradient_checkpointing: bool = False  # recompute each depth step in backward (paper sizes on GPU)
    cond_dropout_prob: float = 0.1  # chance the trainer swaps text and prior for the learned null (CFG)
    timestep_freq_dim: int = 256  # sinusoidal features before the timestep MLP
    timestep_scale: float = 1000.0  # t in [0, 1] is embedded as t * scale (DiT/OpenSora range)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}")
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError("head dimension must be even for rotary embeddings")
        if self.hidden_size % 4:
            raise ValueError("hidden_size must be divisible by 4 for the 2-D sin-cos position embedding")
        if self.depth < 1:
            raise ValueError("depth must be positive")
        if not 0.0 <= self.cond_dropout_prob < 1.0:
            raise ValueError("cond_dropout_prob must be in [0, 1)")

    @property
    def num_prior_tokens(self) -> int:
        return self.num_spatial_priors + self.num_temporal_priors


@dataclasses.dataclass(frozen=True)
class Preset:
    prior: PriorConfig
    dit: DiTConfig


def paper() -> Preset:
    """Published sizes: ST-Prior (4+4 layers, width 512, 32+32 tokens of 128), DiT 28 x 1152 x 16 heads."""
    return Preset(prior=PriorConfig(latents=PAPER), dit=DiTConfig(latents=PAPER))


def tiny() -> Preset:
    """Same structure, a few hundred thousand parameters: forward+backward in well under a second on CPU."""
    prior = PriorConfig(
        latents=TINY,
        hidden_size=32,
        num_heads=2,
        num_encoder_layers=1,
        num_decoder_layers=2,
        num_spatial_tokens=8,
        num_temporal_tokens=8,
        prior_dim=16,
        va_num_heads=2,
        disc_num_heads=2,
    )
    dit = DiTConfig(
        latents=TINY,
        hidden_size=32,
        num_heads=2,
        depth=2,
        num_spatial_priors=8,
        num_temporal_priors=8,
        prior_dim=16,
        timestep_freq_dim=32,
    )
    return Preset(prior=prior, dit=dit)


PRESETS: dict[str, Callable[[], Preset]] = {"paper": paper, "tiny": tiny}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def prior_preset(name: str) -> PriorConfig:
    return preset(name).prior


def dit_preset(name: str) -> DiTConfig:
    return preset(name).dit
