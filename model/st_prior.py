"""ST-Prior (HiST-Sypo) estimator, the training-only VA encoder, and the contrastive objective
(JavisDiT paper sec. 3.2 and appendix C.2).

- :class:`STPriorEstimator`: frozen ImageBind text states ``(B, 77, prior_text_dim)`` -> 32 spatial
  and 32 temporal prior tokens of width 128, each a diagonal Gaussian (mean, log-variance) sampled
  with the reparameterisation trick (C.2.1), so one caption yields different plausible priors.
- :class:`VAEncoder` (C.2.2): video latent ``(B, Cv, T, H, W)`` and audio latent ``(B, Ca, A, F)``
  -> spatial and temporal VA embeddings ``(B, 32, 128)`` each, the targets the priors are pulled
  toward (synchronous pairs) or pushed from (asynchronous pairs). It holds the auxiliary
  discriminator too, so everything trained only in the "prior" stage lives in one module.
- :func:`prior_loss` (C.2.3, eq. A2) and :func:`margin` (the held-out positive-vs-negative gap).

Architecture choices that land on the published size (Tab. A1: 29.3M trainable in stage 2,
counted like OpenSora's ``format_numel_str``, i.e. in units of 2**20 = 30.7M parameters):
"a 4-layer transformer" queried by learned tokens is read as a standard encoder-decoder
transformer with 4 encoder layers over the text states and 4 decoder layers for the 64 queries
(self-attention, cross-attention to text, FFN), width 512, 4 heads, FFN 4x, pre-norm, after a
1024 -> 512 input projection and a 512 -> 2 x 128 output head: 30.12M. The VA encoder (1x2x2 /
2x2 patch embeddings to 128 channels, one bidirectional-attention fuser with a 2-layer MLP per
spatial/temporal pair) and the one-layer attention discriminator add 0.53M, 30.65M in all
(29.23 "M" in the paper's units). The frozen ImageBind text encoder is not part of this module.

VA-encoding gaps in C.2.2, filled as follows: each latent is first standardised per sample and
channel (see ``VAEncoder._standardize``); the "linear layer" that unifies channels is a
patch embedding (a linear map on 1x2x2 video / 2x2 audio patches); a sin-cos position embedding is
added over space (video) and frequency (audio); spatial tokens are the raster-ordered patches of a
frame, linearly interpolated to N_s, and temporal tokens the latent frames interpolated to N_t; the
bidirectional attention runs per spatial token across time and per temporal token across space, its
outputs averaged over that axis and summed over the two modalities before a 2-layer MLP.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from model.javisdit import BiCrossAttention, FeedForward, SelfAttention, sincos_1d, sincos_2d
from model.presets import PriorConfig, PriorLossWeights


@dataclasses.dataclass
class PriorOutput:
    """Sampled priors ``spatial (B, N_s, D)`` and ``temporal (B, N_t, D)`` with their Gaussians."""

    spatial: torch.Tensor
    temporal: torch.Tensor
    spatial_mean: torch.Tensor
    spatial_logvar: torch.Tensor
    temporal_mean: torch.Tensor
    temporal_logvar: torch.Tensor


@dataclasses.dataclass
class VAEmbedding:
    """VA embeddings ``spatial (B, N_s, D)`` and ``temporal (B, N_t, D)``; negatives may carry an
    extra axis ``(B, K, N, D)`` for K negatives per sample."""

    spatial: torch.Tensor
    temporal: torch.Tensor


class STPriorEstimator(nn.Module):
    """Text states -> ST-priors. ``forward(text_states, text_mask=None, *, generator=None)``:
    text_states ``(B, L, prior_text_dim)``, text_mask ``(B, L)`` bool (True = token) ->
    :class:`PriorOutput`. :meth:`sample` is the no-grad inference path."""

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_size
        num_queries = config.num_spatial_tokens + config.num_temporal_tokens
        self.in_proj = nn.Linear(config.latents.prior_text_dim, dim)
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)

        def layer(cls):
            return cls(dim, config.num_heads, dim_feedforward=dim * config.ffn_ratio, dropout=0.0,
                       activation="gelu", batch_first=True, norm_first=True)

        self.encoder = nn.TransformerEncoder(layer(nn.TransformerEncoderLayer), config.num_encoder_layers,
                                             norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(layer(nn.TransformerDecoderLayer), config.num_decoder_layers,
                                             norm=nn.LayerNorm(dim))
        self.out_proj = nn.Linear(dim, 2 * config.prior_dim)  # mean and log-variance

    def forward(self, text_states: torch.Tensor, text_mask: torch.Tensor | None = None, *,
                generator: torch.Generator | None = None) -> PriorOutput:
        cfg = self.config
        padding = None if text_mask is None else ~text_mask.bool()  # torch convention: True = ignore
        memory = self.encoder(self.in_proj(text_states), src_key_padding_mask=padding)  # (B, L, hidden)
        queries = self.queries[None].expand(text_states.shape[0], -1, -1).to(memory.dtype)
        h = self.decoder(queries, memory, memory_key_padding_mask=padding)  # (B, N_s + N_t, hidden)
        mean, logvar = self.out_proj(h).chunk(2, dim=-1)  # (B, N, D) each
        logvar = logvar.clamp(cfg.logvar_min, cfg.logvar_max)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        sample = mean + torch.exp(0.5 * logvar) * noise
        split = [cfg.num_spatial_tokens, cfg.num_temporal_tokens]
        (s, t), (sm, tm), (sl, tl) = (x.split(split, dim=1) for x in (sample, mean, logvar))
        return PriorOutput(s, t, sm, sl, tm, tl)

    @torch.no_grad()
    def sample(self, text_states: torch.Tensor, text_mask: torch.Tensor | None = None, *,
               generator: torch.Generator | None = None) -> PriorOutput:
        """Inference: one plausible prior per caption, reproducible with ``generator``."""
        return self(text_states, text_mask, generator=generator)


class VAFuser(nn.Module):
    """Bidirectional attention between video and audio token sets ``(N, Lv, D)`` / ``(N, La, D)``,
    averaged over the sequence, summed over modalities and projected by a 2-layer MLP -> ``(N, D)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.attn = BiCrossAttention(dim, num_heads, fused=True)
        self.mlp = FeedForward(dim, mlp_ratio)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        dv, da = self.attn(self.norm(video), self.norm(audio))
        merged = (video + dv).mean(dim=1) + (audio + da).mean(dim=1)  # (N, D)
        # a plain projection, as C.2.2 says; a residual here would keep the part a negative shares
        # with its positive (e.g. the untouched video) in the output and slow their separation
        return self.mlp(self.norm(merged))


class SyncDiscriminator(nn.Module):
    """One attention layer whose class token reads ``[prior; embedding]`` tokens -> a logit that the
    VA pair behind the embedding is synchronous (C.2.3, auxiliary discriminative loss)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.attn = SelfAttention(dim, num_heads, qk_norm=False, fused=True)
        self.classifier = nn.Linear(dim, 1)

    def forward(self, prior: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.cls.expand(prior.shape[0], -1, -1).to(prior.dtype), prior, embedding], dim=1)
        return self.classifier(self.attn(tokens)[:, 0]).squeeze(-1)  # (B,)


class VAEncoder(nn.Module):
    """Training-only: ``forward(video (B, Cv, T, H, W), audio (B, Ca, A, F)) -> VAEmbedding``.
    Also owns ``discriminator`` (:class:`SyncDiscriminator`) for :func:`prior_loss`."""

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.config = config
        dim, spec = config.prior_dim, config.latents
        self.video_embed = nn.Conv3d(spec.video_channels, dim, config.va_video_patch, stride=config.va_video_patch)
        self.audio_embed = nn.Conv2d(spec.audio_channels, dim, config.va_audio_patch, stride=config.va_audio_patch)
        self.spatial_fuser = VAFuser(dim, config.va_num_heads, config.va_mlp_ratio)
        self.temporal_fuser = VAFuser(dim, config.va_num_heads, config.va_mlp_ratio)
        self.discriminator = SyncDiscriminator(dim, config.disc_num_heads)

    @staticmethod
    def _patchify(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        patch = conv.kernel_size
        pads = [(-size) % p for size, p in zip(x.shape[2:], patch)]
        x = F.pad(x, [amount for pad in reversed(pads) for amount in (0, pad)])
        return conv(x)  # (B, D, T', *space)

    @staticmethod
    def _standardize(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
        """Per sample and channel, zero mean and unit variance over time/space (an instance norm).

        VAE latents carry large channel offsets shared by every clip (the tiny audio VAE's channel 0
        sits near -7 with a within-clip spread near 1.5), and the fuser averages tokens over a whole
        axis: without this, every clip's embedding pointed the same way (cosine 0.9999 between clips,
        0.999 between a clip and its negative), the cosine losses had next to no gradient and the
        prior margin stayed at noise level. Where and when things happen is what is kept."""
        dims = tuple(range(2, x.ndim))
        mean = x.mean(dim=dims, keepdim=True)
        std = x.float().std(dim=dims, keepdim=True, correction=0).to(x.dtype)
        return (x - mean) / (std + eps)

    def _tokens(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        video, audio = self._standardize(video), self._standardize(audio)
        v = self._patchify(self.video_embed, video)  # (B, D, T, H, W)
        dim, (_, h, w) = v.shape[1], v.shape[2:]
        v = v.flatten(3).permute(0, 2, 3, 1) + sincos_2d(h, w, dim, v.device).to(v.dtype)  # (B, T, S, D)
        a = self._patchify(self.audio_embed, audio).permute(0, 2, 3, 1)  # (B, A', F', D)
        a = a + sincos_1d(torch.arange(a.shape[2], device=a.device), dim).to(a.dtype)
        return v, a

    @staticmethod
    def _resize(x: torch.Tensor, size: int, axis: int) -> torch.Tensor:
        """Linear interpolation of ``(B, T, S, D)`` along axis 1 (time) or 2 (space) to ``size``."""
        moved = x.movedim(axis, -1)  # (B, other, D, axis)
        lead = moved.shape[:-1]
        out = F.interpolate(moved.reshape(-1, 1, moved.shape[-1]).float(), size=size, mode="linear",
                            align_corners=False)
        return out.view(*lead, size).movedim(-1, axis).to(x.dtype)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> VAEmbedding:
        cfg = self.config
        v, a = self._tokens(video, audio)
        b, dim = v.shape[0], v.shape[-1]
        # spatial pair: N_s tokens per frame; attention across time for each spatial token
        vs, as_ = self._resize(v, cfg.num_spatial_tokens, 2), self._resize(a, cfg.num_spatial_tokens, 2)
        spatial = self.spatial_fuser(vs.transpose(1, 2).reshape(-1, vs.shape[1], dim),
                                     as_.transpose(1, 2).reshape(-1, as_.shape[1], dim))
        # temporal pair: N_t tokens per location; attention across space for each temporal token
        vt, at = self._resize(v, cfg.num_temporal_tokens, 1), self._resize(a, cfg.num_temporal_tokens, 1)
        temporal = self.temporal_fuser(vt.reshape(-1, vt.shape[2], dim), at.reshape(-1, at.shape[2], dim))
        return VAEmbedding(spatial.view(b, cfg.num_spatial_tokens, dim), temporal.view(b, cfg.num_temporal_tokens, dim))


# ---------------------------------------------------------------- losses (C.2.3)


def _with_neg_axis(neg: torch.Tensor) -> torch.Tensor:
    return neg[:, None] if neg.ndim == 3 else neg  # (B, N, D) -> (B, 1, N, D)


def hinge_loss(prior: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, margin_value: float) -> torch.Tensor:
    """Token-level hinge: ``relu(margin - cos(p, e+) + cos(p, e-))`` per token and negative."""
    neg = _with_neg_axis(neg)
    s_pos = F.cosine_similarity(prior, pos, dim=-1)[:, None]  # (B, 1, N)
    s_neg = F.cosine_similarity(prior[:, None], neg, dim=-1)  # (B, K, N)
    return F.relu(margin_value - s_pos + s_neg).mean()


def discrepancy_loss(pos: torch.Tensor, neg: torch.Tensor, cos_floor: float) -> torch.Tensor:
    """VA-embedding discrepancy: ``relu(cos(e+, e-) - floor)``, pushing the positive and negative
    embeddings of the same sample apart."""
    return F.relu(F.cosine_similarity(pos[:, None], _with_neg_axis(neg), dim=-1) - cos_floor).mean()


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over tokens and channels, mean over the batch."""
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(dim=1).mean()


def discriminator_loss(discriminator: nn.Module, prior: torch.Tensor, pos: torch.Tensor,
                       neg: torch.Tensor) -> torch.Tensor:
    """BCE of the discriminator: (prior, positive embedding) -> 1, (prior, each negative) -> 0."""
    neg = _with_neg_axis(neg)
    b, k = neg.shape[:2]
    logit_pos = discriminator(prior, pos)  # (B,)
    logit_neg = discriminator(prior[:, None].expand(-1, k, -1, -1).flatten(0, 1), neg.flatten(0, 1))  # (B*K,)
    logits = torch.cat([logit_pos, logit_neg])
    labels = torch.cat([torch.ones_like(logit_pos), torch.zeros_like(logit_neg)])
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def prior_loss(prior_out: PriorOutput, pos_emb: VAEmbedding, neg_emb: VAEmbedding, weights: PriorLossWeights, *,
               discriminator: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The ST-Prior objective (eq. A2), applied alike to the spatial and temporal sets and summed.

    Returns ``{"loss": weighted total, "hinge", "disc", "va", "l2", "kl": unweighted terms}``.
    ``discriminator`` is ``VAEncoder.discriminator``; required when ``weights.disc > 0``.
    """
    if weights.disc > 0 and discriminator is None:
        raise ValueError("weights.disc > 0 needs the discriminator (VAEncoder.discriminator)")
    pairs = (
        (prior_out.spatial, prior_out.spatial_mean, prior_out.spatial_logvar, pos_emb.spatial, neg_emb.spatial),
        (prior_out.temporal, prior_out.temporal_mean, prior_out.temporal_logvar, pos_emb.temporal, neg_emb.temporal),
    )
    terms = {name: 0.0 for name in ("hinge", "disc", "va", "l2", "kl")}
    for prior, mean, logvar, pos, neg in pairs:
        prior, pos, neg = prior.float(), pos.float(), neg.float()
        terms["hinge"] = terms["hinge"] + hinge_loss(prior, pos, neg, weights.hinge_margin)
        if discriminator is not None:
            terms["disc"] = terms["disc"] + discriminator_loss(discriminator, prior, pos, neg)
        terms["va"] = terms["va"] + discrepancy_loss(pos, neg, weights.va_cos_floor)
        # the L2 term moves the prior to the positive, not the positive to the prior: without the
        # stop-gradient it also drags the VA embeddings toward the prior, a shortcut to a collapsed
        # (and sync-blind) embedding that the cosine terms then cannot tell from its negative
        terms["l2"] = terms["l2"] + F.mse_loss(prior, pos.detach())
        terms["kl"] = terms["kl"] + kl_to_standard_normal(mean.float(), logvar.float())
    terms = {k: torch.as_tensor(v, device=prior_out.spatial.device) for k, v in terms.items()}
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return {"loss": total, **terms}


@torch.no_grad()
def margin(prior_out: PriorOutput, pos_emb: VAEmbedding, neg_emb: VAEmbedding) -> torch.Tensor:
    """Mean cosine similarity of the prior means to the positive embeddings minus that to the
    negatives, over tokens, negatives, samples and both token sets: > 0 when positives are preferred."""
    gaps = []
    for mean, pos, neg in ((prior_out.spatial_mean, pos_emb.spatial, neg_emb.spatial),
                           (prior_out.temporal_mean, pos_emb.temporal, neg_emb.temporal)):
        s_pos = F.cosine_similarity(mean.float(), pos.float(), dim=-1)  # (B, N)
        s_neg = F.cosine_similarity(mean.float()[:, None], _with_neg_axis(neg).float(), dim=-1).mean(dim=1)
        gaps.append((s_pos - s_neg).mean())
    return torch.stack(gaps).mean()
