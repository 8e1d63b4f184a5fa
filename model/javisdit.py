"""JavisDiT: joint audio-video diffusion transformer (JavisDiT paper, sec. 3.1 and appendix C.1).

Two branches of ST-DiT blocks, one for video latents ``(B, Cv, T, H, W)`` and one for audio latents
``(B, Ca, A, F)``, predict rectified-flow velocities (``model/flow.py``). Each of the ``depth``
steps runs, in both branches at once (appendix C.1)::

    Spatial-SelfAttn - CrossAttn(text) - Spatial-CrossAttn(spatial priors) - Bi-CrossAttn - FFN
    Temporal-SelfAttn - CrossAttn(text) - Temporal-CrossAttn(temporal priors) - Bi-CrossAttn - FFN

Video tokens are ``(T, S)`` = (latent frames, 1x2x2 patches of a frame); audio tokens are
``(R, M)`` = (groups of 4 latent frames, frequency bins), so "spatial" attention for audio runs over
frequency and "temporal" attention over time (sec. 3.1). Conventions:

- Self-attention and FFN are adaLN-modulated by the timestep (shift, scale, gate; OpenSora v1.2
  STDiT3), per latent frame, so conditioned frames of x-conditional tasks run at t = 0
  (``model/masking.py``). The prior cross-attention has its own shift, scale and gate (released
  JavisDiT code). Text cross-attention and Bi-CrossAttn are not modulated; Bi-CrossAttn adds its
  output through a zero-initialised per-channel gate.
- ST-prior cross-attention: every token of a frame attends to the 32 spatial priors, every token of
  a location to the 32 temporal priors. With no mask, attending "per frame" or "per location" to
  the same prior set equals attending once per sample, so it runs on the flattened tokens.
- Bi-CrossAttn (sec. 3.1): one score matrix ``A = Q_v K_a^T``; video reads ``softmax(A) V_a``,
  audio reads ``softmax(A^T) V_v``. The paper does not say what distinguishes the spatial from the
  temporal one; both here are global over all tokens of the clip (as the released code's single
  block), with separate weights. Width 1152, 16 heads ("all attention modules", C.1).
- Classifier-free guidance: learned null text (per branch, in raw T5 space) and null prior;
  ``cond_drop`` swaps them in per sample; :meth:`JavisDiT.forward_with_cfg` combines both passes.

This module is over the house 400-line guide because the attention layers shared with
``model/st_prior.py`` (sin-cos, RoPE, Bi-CrossAttn) live here next to the only other user.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from model.presets import DiTConfig

STAGES = ("video", "audio", "prior", "joint")


# ---------------------------------------------------------------- shared layers


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``(L,)`` float positions -> ``(L, dim)`` sin-cos features (no parameters)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / half)
    angles = positions.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def sincos_2d(height: int, width: int, dim: int, device: torch.device) -> torch.Tensor:
    """Raster-order ``(height * width, dim)`` 2-D sin-cos embedding: half the channels per axis."""
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    return torch.cat([sincos_1d(rows, dim // 2), sincos_1d(cols, dim // 2)], dim=-1)


def rotary(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding over the sequence axis of ``(N, heads, L, d)`` (interleaved pairs)."""
    length, dim = x.shape[-2], x.shape[-1]
    freqs = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim))
    angles = torch.arange(length, device=x.device, dtype=torch.float32)[:, None] * freqs[None]  # (L, d/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, fused: bool) -> torch.Tensor:
    """Scaled dot-product attention on ``(N, heads, L, d)``; ``mask`` is boolean, True = may attend."""
    if fused:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)  # (N, L, C) -> (N, h, L, d)


def _merge(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).flatten(-2)  # (N, h, L, d) -> (N, L, C)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool, fused: bool) -> None:
        super().__init__()
        self.num_heads, self.fused = num_heads, fused
        self.qkv = nn.Linear(dim, 3 * dim)
        head_dim = dim // num_heads
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, use_rope: bool = False) -> torch.Tensor:
        q, k, v = (_heads(part, self.num_heads) for part in self.qkv(x).chunk(3, dim=-1))  # (N, h, L, d)
        q, k = self.q_norm(q), self.k_norm(k)
        if use_rope:
            q, k = rotary(q), rotary(k)
        return self.proj(_merge(attend(q, k, v, None, self.fused)))


class CrossAttention(nn.Module):
    """Queries from ``x (B, N, C)``, keys/values from ``context (B, L, C)`` with a ``(B, L)`` mask."""

    def __init__(self, dim: int, num_heads: int, fused: bool) -> None:
        super().__init__()
        self.num_heads, self.fused = num_heads, fused
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q = _heads(self.q(x), self.num_heads)
        k, v = (_heads(part, self.num_heads) for part in self.kv(context).chunk(2, dim=-1))
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, L)
        return self.proj(_merge(attend(q, k, v, attn_mask, self.fused)))


class BiCrossAttention(nn.Module):
    """Bidirectional attention between token sets ``a (N, La, C)`` and ``b (N, Lb, C)``: one score
    matrix ``A = Q_a K_b^T``; ``a`` reads ``softmax(A) V_b``, ``b`` reads ``softmax(A^T) V_a``.
    Returns the two updates (not yet added to the inputs)."""

    def __init__(self, dim: int, num_heads: int, fused: bool) -> None:
        super().__init__()
        self.num_heads, self.fused = num_heads, fused
        self.q_a, self.k_b = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_a, self.v_b = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out_a, self.out_b = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.num_heads
        q_a, k_b = _heads(self.q_a(a), h), _heads(self.k_b(b), h)
        v_a, v_b = _heads(self.v_a(a), h), _heads(self.v_b(b), h)
        to_a = attend(q_a, k_b, v_b, None, self.fused)  # softmax over b for each a
        to_b = attend(k_b, q_a, v_a, None, self.fused)  # the same scores transposed
        return self.out_a(_merge(to_a)), self.out_b(_merge(to_b))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, ratio: float) -> None:
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


def _norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)


def row_timesteps(t: torch.Tensor, mask: torch.Tensor | None, num_frames: int, patch_t: int,
                  device: torch.device) -> torch.Tensor:
    """``(B,)`` or per latent frame ``(B, frames)`` timesteps -> one per token row ``(B, ceil(frames
    / patch_t))``: 0 on frames ``mask (B, frames)`` marks as clean conditions, averaged over the
    frames a row's patch spans (the last row's padding repeats the last frame)."""
    t = t.to(device=device, dtype=torch.float32)
    t = t[:, None].expand(-1, num_frames) if t.ndim == 1 else t
    if t.shape[1] != num_frames:
        raise ValueError(f"per-frame timesteps have {t.shape[1]} frames, latent has {num_frames}")
    if mask is not None:
        t = torch.where(mask.to(t.device), torch.zeros_like(t), t)
    pad = (-num_frames) % patch_t
    t = F.pad(t[:, None], (0, pad), mode="replicate")[:, 0] if pad else t
    return t.reshape(t.shape[0], -1, patch_t).mean(dim=-1)


def pad_to_patch(x: torch.Tensor, patch: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad the trailing ``len(patch)`` axes of a latent ``(B, C, ...)`` up to multiples of ``patch``."""
    pads = [(-size) % p for size, p in zip(x.shape[2:], patch)]
    return F.pad(x, [amount for pad in reversed(pads) for amount in (0, pad)]) if any(pads) else x


def unpatchify(out: torch.Tensor, grid: tuple[int, ...], patch: tuple[int, ...], shape) -> torch.Tensor:
    """Per-token patch values ``(B, *grid or prod(grid), prod(patch) * C)`` -> a latent ``(B, C,
    *grid * patch)`` cropped to ``shape`` (the padding of :func:`pad_to_patch` removed)."""
    b, channels, ndim = out.shape[0], shape[1], len(grid)  # ndim: 3 (video) or 2 (audio)
    out = out.reshape(b, *grid, *patch, channels)
    order = [0, 2 * ndim + 1] + [axis for i in range(ndim) for axis in (1 + i, 1 + ndim + i)]
    out = out.permute(order).reshape(b, channels, *(g * p for g, p in zip(grid, patch)))
    return out[(slice(None), slice(None), *(slice(0, size) for size in shape[2:]))]


# ---------------------------------------------------------------- conditioning embedders


class TimestepEmbedder(nn.Module):
    """t in [0, 1] (any shape) -> ``(*t.shape, hidden)``: sin-cos of ``t * scale`` through an MLP."""

    def __init__(self, hidden: int, freq_dim: int, scale: float) -> None:
        super().__init__()
        self.freq_dim, self.scale = freq_dim, scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        feats = sincos_1d(t.reshape(-1) * self.scale, self.freq_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(feats).view(*t.shape, -1)


class ConditionProjection(nn.Module):
    """Projects condition tokens ``(B, L, in_dim)`` to the DiT width; holds a learned null condition
    ``(L, in_dim)`` that replaces the tokens of samples with ``drop`` set (classifier-free guidance)."""

    def __init__(self, in_dim: int, hidden: int, num_tokens: int) -> None:
        super().__init__()
        self.null = nn.Parameter(torch.randn(num_tokens, in_dim) / in_dim**0.5)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, hidden))

    def forward(self, tokens: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
        if drop is not None:
            tokens = torch.where(drop[:, None, None], self.null.to(tokens.dtype)[None], tokens)
        return self.mlp(tokens)


# ---------------------------------------------------------------- blocks


class HalfBlock(nn.Module):
    """One half of a depth step for one branch: self-attention along ``axis`` ("spatial" over S,
    "temporal" over T with RoPE), text cross-attention, prior cross-attention; the FFN runs after the
    shared Bi-CrossAttn (:meth:`ffn_step`). Tokens are ``(B, T, S, C)`` throughout."""

    def __init__(self, config: DiTConfig, axis: str) -> None:
        super().__init__()
        dim, heads, fused = config.hidden_size, config.num_heads, config.fused_attention
        self.axis = axis
        self.norm = _norm(dim)
        self.self_attn = SelfAttention(dim, heads, config.qk_norm, fused)
        self.text_attn = CrossAttention(dim, heads, fused)
        self.prior_attn = CrossAttention(dim, heads, fused)
        self.ffn = FeedForward(dim, config.mlp_ratio)
        # per-block offsets added to the shared timestep projections (OpenSora scale_shift_table)
        self.modulation = nn.Parameter(torch.randn(6, dim) / dim**0.5)  # self-attn and FFN
        self.prior_modulation = nn.Parameter(torch.randn(3, dim) / dim**0.5)  # prior cross-attn

    def attention_step(self, x: torch.Tensor, t_mod: torch.Tensor, t_prior_mod: torch.Tensor, text: torch.Tensor,
                       text_mask: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
        b, t, s, c = x.shape
        shift, scale, gate = (self.modulation[None, None, :3] + t_mod[:, :, :3]).unsqueeze(3).unbind(2)
        h = modulate(self.norm(x), shift, scale)  # (B, T, S, C)
        if self.axis == "spatial":
            h = self.self_attn(h.reshape(b * t, s, c)).view(b, t, s, c)
        else:
            h = self.self_attn(h.transpose(1, 2).reshape(b * s, t, c), use_rope=True)
            h = h.view(b, s, t, c).transpose(1, 2)
        x = x + gate * h
        x = x + self.text_attn(self.norm(x).view(b, t * s, c), text, text_mask).view(b, t, s, c)
        if prior is not None:
            shift, scale, gate = (self.prior_modulation[None, None] + t_prior_mod).unsqueeze(3).unbind(2)
            h = modulate(self.norm(x), shift, scale).view(b, t * s, c)
            x = x + gate * self.prior_attn(h, prior).view(b, t, s, c)
        return x

    def ffn_step(self, x: torch.Tensor, t_mod: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = (self.modulation[None, None, 3:] + t_mod[:, :, 3:]).unsqueeze(3).unbind(2)
        return x + gate * self.ffn(modulate(self.norm(x), shift, scale))


class BranchBlock(nn.Module):
    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.spatial = HalfBlock(config, "spatial")
        self.temporal = HalfBlock(config, "temporal")


class BiBlock(nn.Module):
    """Bi-CrossAttn between the video and audio tokens, added through zero-initialised gates."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.attn = BiCrossAttention(dim, config.num_heads, config.fused_attention)
        self.norm = _norm(dim)
        self.gate_video = nn.Parameter(torch.zeros(dim))
        self.gate_audio = nn.Parameter(torch.zeros(dim))

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bv, tv, sv, c = video.shape
        ba, ta, sa, _ = audio.shape
        dv, da = self.attn(self.norm(video).view(bv, tv * sv, c), self.norm(audio).view(ba, ta * sa, c))
        return video + self.gate_video * dv.view_as(video), audio + self.gate_audio * da.view_as(audio)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = _norm(dim)
        self.modulation = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation[None, None] + t_emb[:, :, None]).unsqueeze(3).unbind(2)  # (B, T, 1, C)
        return self.linear(modulate(self.norm(x), shift, scale))


class Branch(nn.Module):
    """Patch embedding, text projection, ``depth`` blocks and the output layer of one modality."""

    def __init__(self, config: DiTConfig, in_channels: int, patch: tuple[int, ...]) -> None:
        super().__init__()
        dim, spec = config.hidden_size, config.latents
        self.patch = patch
        conv = nn.Conv3d if len(patch) == 3 else nn.Conv2d
        self.patch_embed = conv(in_channels, dim, kernel_size=patch, stride=patch)
        self.text_proj = ConditionProjection(spec.text_dim, dim, spec.text_len)
        self.blocks = nn.ModuleList(BranchBlock(config) for _ in range(config.depth))
        self.final = FinalLayer(dim, math.prod(patch) * in_channels)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Latent -> tokens ``(B, T', S', C)`` with position embedding; returns the padded grid."""
        h = self.patch_embed(pad_to_patch(x, self.patch))  # (B, C, T', *space)
        grid = tuple(h.shape[2:])
        h = h.flatten(3).transpose(1, 2).transpose(2, 3)  # (B, T', S', C)
        dim = h.shape[-1]
        if len(grid) == 3:
            pos = sincos_2d(grid[1], grid[2], dim, h.device)
        else:
            pos = sincos_1d(torch.arange(grid[1], device=h.device), dim)
        return h + pos.to(h.dtype), grid

    def unembed(self, h: torch.Tensor, t_emb: torch.Tensor, grid: tuple[int, ...], shape) -> torch.Tensor:
        """Tokens ``(B, T', S', C)`` -> velocity in latent shape ``shape`` (padding cropped)."""
        return unpatchify(self.final(h, t_emb), grid, self.patch, shape)  # final: (B, T', S', prod(patch) * C_out)


# ---------------------------------------------------------------- the model


class GuidedDiT(nn.Module):
    """Condition dropout and classifier-free guidance for a DiT whose ``forward`` takes
    ``(video, audio, t_video, t_audio, text, text_mask, prior_spatial, prior_temporal, *,
    video_mask, audio_mask, cond_drop)`` and has ``config.cond_dropout_prob``: JavisDiT and
    JavisDiT++ (``model/ditpp.py``) share it."""

    def draw_cond_drop(self, batch_size: int, *, generator: torch.Generator | None = None,
                       device=None) -> torch.Tensor:
        """``(B,)`` bool: which samples train unconditionally (``config.cond_dropout_prob``), for CFG."""
        return torch.rand(batch_size, generator=generator, device=device) < self.config.cond_dropout_prob

    def forward_with_cfg(self, video, audio, t_video, t_audio, text, text_mask, prior_spatial, prior_temporal, *,
                         cfg_scale: float, video_mask=None, audio_mask=None,
                         ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Classifier-free guidance: ``uncond + cfg_scale * (cond - uncond)``, both passes in one batch;
        the unconditional pass swaps text and prior for the learned nulls (conditioned frames stay)."""
        b = (video if video is not None else audio).shape[0]

        def twice(x):
            return None if x is None else torch.cat([x, x], dim=0)

        drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(text.device)
        outs = self(twice(video), twice(audio), twice(t_video), twice(t_audio), twice(text), twice(text_mask),
                    twice(prior_spatial), twice(prior_temporal),
                    video_mask=twice(video_mask), audio_mask=twice(audio_mask), cond_drop=drop)
        guided = []
        for out in outs:
            if out is None:
                guided.append(None)
                continue
            cond, uncond = out.chunk(2, dim=0)
            guided.append(uncond + cfg_scale * (cond - uncond))
        return tuple(guided)


class JavisDiT(GuidedDiT):
    """Joint audio-video DiT.

    Inputs of :meth:`forward` (B = batch):
      video ``(B, Cv, T, H, W)`` and audio ``(B, Ca, A, F)`` noisy latents (either may be ``None``
      for a single-branch pass, e.g. the audio pretraining stage); t_video ``(B,)`` or per latent
      frame ``(B, T)``; t_audio ``(B,)`` or ``(B, A)``, in [0, 1] (``model/flow.py``); text
      ``(B, text_len, text_dim)`` T5 states with text_mask ``(B, text_len)`` bool (True = token);
      prior_spatial ``(B, N_s, prior_dim)`` and prior_temporal ``(B, N_t, prior_dim)`` from the
      ST-Prior estimator, or both ``None`` to skip the prior cross-attention.
    Keyword-only: video_mask ``(B, T)`` / audio_mask ``(B, A)`` bool, True where a frame is a clean
      condition (its timestep is forced to 0); cond_drop ``(B,)`` bool, True to replace text and
      prior by the learned null condition (CFG training, inference's unconditional pass).
    Returns velocities ``(v_video, v_audio)`` in the input latent shapes (``None`` for a missing
    branch).
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        spec, dim = config.latents, config.hidden_size
        self.t_embedder = TimestepEmbedder(dim, config.timestep_freq_dim, config.timestep_scale)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))  # self-attn + FFN modulation
        self.prior_t_block = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))  # prior cross-attn modulation
        self.prior_proj = ConditionProjection(config.prior_dim, dim, config.num_prior_tokens)
        self.video = Branch(config, spec.video_channels, config.video_patch)
        self.audio = Branch(config, spec.audio_channels, config.audio_patch)
        self.bi_attn = nn.ModuleList(nn.ModuleDict({"spatial": BiBlock(config), "temporal": BiBlock(config)})
                                     for _ in range(config.depth))
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for branch in (self.video, self.audio):
            weight = branch.patch_embed.weight
            nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
            nn.init.zeros_(branch.patch_embed.bias)
            # small rather than zero: every training stage, even one that freezes this layer from a
            # random start, then gets gradients to the modules it trains
            nn.init.normal_(branch.final.linear.weight, std=0.02)
            for block in branch.blocks:
                for half in (block.spatial, block.temporal):
                    nn.init.zeros_(half.prior_attn.proj.weight)  # new conditioning starts as a no-op
        for linear in (self.t_embedder.mlp[0], self.t_embedder.mlp[2], self.t_block[1], self.prior_t_block[1]):
            nn.init.normal_(linear.weight, std=0.02)

    # -- forward

    def forward(self, video, audio, t_video, t_audio, text, text_mask, prior_spatial, prior_temporal, *,
                video_mask=None, audio_mask=None, cond_drop=None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        cfg = self.config
        if (prior_spatial is None) != (prior_temporal is None):
            raise ValueError("pass both prior_spatial and prior_temporal, or neither")
        if video is None and audio is None:
            raise ValueError("need at least one of video and audio")
        ref = video if video is not None else audio
        dtype = self.t_block[1].weight.dtype
        text = text.to(dtype)
        if text_mask is None:
            text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        if cond_drop is not None:
            text_mask = text_mask | cond_drop[:, None]  # the null text has no padding

        priors = (None, None)
        if prior_spatial is not None:
            prior = self.prior_proj(torch.cat([prior_spatial, prior_temporal], dim=1).to(dtype), cond_drop)
            priors = prior.split([cfg.num_spatial_priors, cfg.num_temporal_priors], dim=1)

        streams = {}
        for name, x, t, mask in (("video", video, t_video, video_mask), ("audio", audio, t_audio, audio_mask)):
            if x is None:
                continue
            branch = getattr(self, name)
            tokens, grid = branch.embed(x.to(dtype))  # (B, T', S', C)
            t_rows = row_timesteps(t, mask, x.shape[2], branch.patch[0], ref.device)  # (B, T')
            t_emb = self.t_embedder(t_rows)  # (B, T', C)
            streams[name] = {
                "x": tokens, "grid": grid, "shape": x.shape, "t_emb": t_emb,
                "t_mod": self.t_block(t_emb).unflatten(-1, (6, -1)),  # (B, T', 6, C)
                "t_prior_mod": self.prior_t_block(t_emb).unflatten(-1, (3, -1)),  # (B, T', 3, C)
                "text": branch.text_proj(text, cond_drop),  # (B, L, C)
            }

        video_x = streams["video"]["x"] if "video" in streams else None
        audio_x = streams["audio"]["x"] if "audio" in streams else None
        for depth in range(cfg.depth):
            args = (depth, text_mask, priors, video_x, audio_x, streams)
            if cfg.gradient_checkpointing and self.training and torch.is_grad_enabled():
                video_x, audio_x = checkpoint(self._depth_step, *args, use_reentrant=False)
            else:
                video_x, audio_x = self._depth_step(*args)
        for name, x in (("video", video_x), ("audio", audio_x)):
            if x is not None:
                streams[name]["x"] = x

        out = []
        for name in ("video", "audio"):
            if name not in streams:
                out.append(None)
                continue
            s = streams[name]
            out.append(getattr(self, name).unembed(s["x"], s["t_emb"], s["grid"], s["shape"]))
        return tuple(out)

    def _depth_step(self, depth, text_mask, priors, video, audio, streams):
        xs = {"video": video, "audio": audio}
        for axis, prior in zip(("spatial", "temporal"), priors):
            for name in streams:
                s, half = streams[name], getattr(getattr(self, name).blocks[depth], axis)
                xs[name] = half.attention_step(xs[name], s["t_mod"], s["t_prior_mod"], s["text"], text_mask, prior)
            if "video" in streams and "audio" in streams:
                xs["video"], xs["audio"] = self.bi_attn[depth][axis](xs["video"], xs["audio"])
            for name in streams:
                half = getattr(getattr(self, name).blocks[depth], axis)
                xs[name] = half.ffn_step(xs[name], streams[name]["t_mod"])
        return xs["video"], xs["audio"]


# ---------------------------------------------------------------- training-stage helpers


def _stage_predicate(stage: str):
    """Which parameter names train in ``stage`` (paper sec. 3.3, appendix C.1, Tab. A1)."""
    prior_names = ("prior_attn", "prior_modulation", "prior_t_block", "prior_proj")

    def is_prior(name: str) -> bool:
        return any(part in name for part in prior_names)

    if stage == "video":  # stands in for the OpenSora v1.2 checkpoint the paper starts from
        return lambda n: n.startswith(("video.", "t_embedder.", "t_block.")) and not is_prior(n)
    if stage == "audio":  # audio branch only; shared timestep layers stay as the video branch left them
        return lambda n: n.startswith("audio.") and not is_prior(n)
    if stage == "prior":  # the DiT is not trained while the ST-Prior estimator is
        return lambda n: False
    if stage == "joint":  # ST-CrossAttn (+ its modulation and prior projection) and Bi-CrossAttn
        return lambda n: is_prior(n) or n.startswith("bi_attn.")
    raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")


def freeze_for_stage(model: nn.Module, stage: str) -> list[nn.Parameter]:
    """Set ``requires_grad`` for ``stage`` and return the trainable parameters (for the optimizer).

    JavisDiT: "video" trains the video branch and the shared timestep layers (the paper loads
    OpenSora instead); "audio" the audio branch (patch embedding, text projection, self-attention,
    text cross-attention, FFN, output layer); "prior" nothing; "joint" only the ST-prior
    cross-attention with its modulation and prior projection, and the Bi-CrossAttn blocks: the paper
    freezes both branches' self-attention and, per C.1, the video branch's coarse text cross-attention
    and FFN for all stages, so the audio branch's are frozen too after its pretraining.
    Any other module (the ST-Prior estimator, the VA encoder) trains only in "prior".
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    if isinstance(model, JavisDiT):
        keep = _stage_predicate(stage)
        for name, param in model.named_parameters():
            param.requires_grad_(keep(name))
    else:
        model.requires_grad_(stage == "prior")
    return [p for p in model.parameters() if p.requires_grad]


def init_audio_from_video(model: JavisDiT) -> list[str]:
    """Copy video-branch weights into the audio branch wherever names and shapes match (paper
    sec. 3.3: the audio branch starts from the video branch). The patch embedding and output
    projection differ in shape and keep their own init; prior cross-attention is not copied (it is
    trained later, in "joint"). Returns the copied parameter names (relative to the branch)."""
    video, audio = model.video.state_dict(), model.audio.state_dict()
    copied = [k for k, v in video.items() if k in audio and audio[k].shape == v.shape and "prior" not in k]
    with torch.no_grad():
        for key in copied:
            audio[key].copy_(video[key])
    return copied
