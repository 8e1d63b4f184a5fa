"""JavisDiT++: one Wan2.1-style DiT over the concatenated video and audio tokens, with
modality-specific FFNs (MS-MoE) and temporally aligned 3-D RoPE (``model/ta_rope.py``).

Inputs (B = batch): video latents ``(B, 16, T_lat, H_lat, W_lat)`` from Wan2.1's VAE and audio
latents ``(B, 8, A_lat, F_lat)`` from AudioLDM2's VAE, either may be ``None``; timesteps in [0, 1]
(``model/flow.py``) per sample ``(B,)`` or per latent frame ``(B, T_lat)`` / ``(B, A_lat)``; umT5
text states ``(B, 512, 4096)``. Tokens::

    video: Conv3d patch (1, 2, 2)   -> (B, Lv = T' * H' * W', C)   rows = T' latent frames
    audio: Conv2d patch (4, 1)      -> (B, La = R * F', C)         rows = R groups of 4 latent frames
    x = [video; audio]              -> (B, Lv + La, C)

Each of the ``depth`` blocks is Wan2.1's ``WanTransformerBlock`` with its FFN split by modality::

    x += gate1 * SelfAttn(modulate(LN(x), shift1, scale1), TA-RoPE)   shared, qk RMSNorm over C
    x += CrossAttn(LN_affine(x), text)                                shared, not modulated
    video tokens += gate2 * VideoFFN(modulate(LN(x_v), shift2, scale2))
    audio tokens += gate2' * AudioFFN(modulate(LN(x_a), shift2', scale2'))

Modulation is Wan's: a per-block table ``(6, C)`` plus one shared projection of the timestep
embedding (sin-cos of ``1000 t`` -> MLP -> SiLU -> Linear to ``6 C``), per token row, so a
per-frame ``t`` modulates per frame (as Wan2.2's per-token timesteps) and a per-sample ``t``
reproduces Wan2.1 exactly. The audio FFN has its own 3 rows (shift2', scale2', gate2'); the
attention rows are shared. Each modality has its own output head (LN, ``(2, C)`` table on the
timestep embedding, Linear) and un-patchify; outputs are velocities in the input latent shapes.

Classifier-free guidance: a ``null_text (512, 4096)`` in raw umT5 space, swapped in for samples
with ``cond_drop``. It starts at zeros, i.e. 512 padding rows, close to what Wan2.1 conditions
on for the empty prompt (one end token, then zeros); production copies umT5's encoding of the
empty prompt into it (:meth:`JavisDiTPP.set_null_text`, Wan's approach). Wan2.1 cross-attends to
all 512 positions, padding included, as it was trained: ``mask_text_padding=False`` keeps that.

This module is over the house 400-line guide: config, model, stage freezing and the Wan2.1
checkpoint mapping are one contract and change together.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from model.javisdit import GuidedDiT, _heads, _merge, attend, pad_to_patch, row_timesteps, unpatchify
from model.lora import LORA_MARKER, apply_lora, has_lora_keys, lora_parameters
from model.spec import DITPP_PAPER, DITPP_TINY, LatentSpec
from model.ta_rope import (
    apply_rope,
    audio_position_ids,
    audio_token_spans_s,
    rope_angles,
    rope_dims,
    video_latent_frame_spans_s,
    video_latent_frames_covering,
    video_position_ids,
)

DITPP_STAGES = ("audio-pp", "sft", "dpo")
CHECKPOINT_MODEL = "ditpp"  # meta.json "model" of the checkpoints these stages write
# the shared attention projections: what Stage B's LoRA adapts
LORA_TARGETS = tuple(f"{attn}.{proj}" for attn in ("self_attn", "cross_attn") for proj in ("q", "k", "v", "out"))
# "audio bridge layers" trained in audio-pp: everything only audio tokens pass through
AUDIO_PREFIXES = ("audio_embed.", "audio_head.")
AUDIO_BLOCK_PARTS = ("audio_ffn.", "audio_ffn_modulation")


@dataclasses.dataclass(frozen=True)
class DiTPPConfig:
    """Sizes of :class:`JavisDiTPP`; the text width comes from ``latents.text_dim``."""

    latents: LatentSpec
    hidden_size: int = 1536  # Wan2.1-T2V-1.3B
    num_heads: int = 12
    depth: int = 30
    ffn_dim: int = 8960  # video FFN (Wan2.1's)
    audio_ffn_dim: int = 8960  # audio expert: as wide as the video FFN, so it starts as its copy
    freq_dim: int = 256  # sin-cos timestep features
    video_patch: tuple[int, int, int] = (1, 2, 2)  # (T, H, W) as Wan2.1
    # (time, freq): 4 audio latent frames = 160 ms, shorter than a 250 ms Wan latent frame at 16 fps, so
    # each token falls mostly within one video frame's span; all 16 frequency bins stay separate tokens
    # (distinct height ids in TA-RoPE); the same tokenisation as JavisDiT's audio branch
    audio_patch: tuple[int, int] = (4, 1)
    qk_norm: bool = True  # RMSNorm over the full width on queries and keys (Wan: rms_norm_across_heads)
    cross_attn_norm: bool = True  # affine LayerNorm before the text cross-attention (Wan2.1)
    eps: float = 1e-6
    rope_theta: float = 10000.0
    mask_text_padding: bool = False  # Wan2.1 attends to padded umT5 positions too (see module docstring)
    lora_rank: int = 32  # Stage B/C adapters (not given by the paper: an assumption)
    lora_alpha: float = 32.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    cond_dropout_prob: float = 0.1  # chance the trainer swaps the text for the null text (CFG)
    gradient_checkpointing: bool = False  # recompute each block in backward
    fused_attention: bool = True  # torch SDPA; False uses the explicit softmax
    timestep_scale: float = 1000.0  # t in [0, 1] is embedded as t * 1000 (Wan's timestep range)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}")
        rope_dims(self.hidden_size // self.num_heads)  # raises for an unusable head size
        if min(self.depth, self.ffn_dim, self.audio_ffn_dim, self.freq_dim, self.lora_rank) < 1:
            raise ValueError("depth, ffn_dim, audio_ffn_dim, freq_dim and lora_rank must be positive")
        if self.freq_dim % 2:
            raise ValueError("freq_dim must be even")
        if len(self.video_patch) != 3 or len(self.audio_patch) != 2 or min(*self.video_patch, *self.audio_patch) < 1:
            raise ValueError("video_patch is (T, H, W) and audio_patch (time, freq), all positive")
        if not 0.0 <= self.cond_dropout_prob < 1.0:
            raise ValueError("cond_dropout_prob must be in [0, 1)")
        if not self.lora_targets:
            raise ValueError("lora_targets is empty")

    @property
    def text_dim(self) -> int:
        return self.latents.text_dim


def paper() -> DiTPPConfig:
    """Wan2.1-T2V-1.3B (30 x 1536, 12 heads, FFN 8960) plus a full-width audio FFN per block."""
    return DiTPPConfig(latents=DITPP_PAPER)


def tiny() -> DiTPPConfig:
    """Same structure, ~100k parameters: forward+backward in a few milliseconds on CPU."""
    return DiTPPConfig(latents=DITPP_TINY, hidden_size=32, num_heads=2, depth=2, ffn_dim=64, audio_ffn_dim=64,
                       freq_dim=32, lora_rank=4, lora_alpha=4.0)


DITPP_PRESETS = {"paper": paper, "tiny": tiny}


def ditpp_preset(name: str) -> DiTPPConfig:
    if name not in DITPP_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(DITPP_PRESETS)}")
    return DITPP_PRESETS[name]()


# ---------------------------------------------------------------- layers


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``(N,)`` timesteps (Wan's 0-1000 range) -> ``(N, dim)`` float32 ``[cos, sin]`` features
    (diffusers ``Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)``)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class WanAttention(nn.Module):
    """Self- (``context=None``) or cross-attention as Wan2.1's: q, k, v, out projections; RMSNorm
    over the full width on q and k; optional rotary ``(cos, sin)`` and boolean key mask ``(B, L)``."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float, fused: bool) -> None:
        super().__init__()
        self.num_heads, self.fused = num_heads, fused
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = nn.RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()
        self.norm_k = nn.RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        context = x if context is None else context
        q = _heads(self.norm_q(self.q(x)), self.num_heads)  # (B, h, L, d)
        k = _heads(self.norm_k(self.k(context)), self.num_heads)
        v = _heads(self.v(context), self.num_heads)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        attn_mask = None if mask is None else mask[:, None, None, :]
        return self.out(_merge(attend(q, k, v, attn_mask, self.fused)))


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the module's dtype (Wan keeps its norms in float32);
    returns float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)


def _ffn(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


@dataclasses.dataclass
class Segment:
    """One modality's stretch of the token sequence: ``length = rows * tokens per row``;
    ``t_mod (B, rows, 6, C)`` float32 and ``t_emb (B, rows, C)`` per row."""

    name: str
    length: int
    rows: int
    t_mod: torch.Tensor
    t_emb: torch.Tensor


def _split_rows(x: torch.Tensor, segments: list[Segment]) -> list[torch.Tensor]:
    """``(B, L, C)`` -> one ``(B, rows, tokens per row, C)`` view per segment."""
    return [p.unflatten(1, (s.rows, -1)) for s, p in zip(segments, x.split([s.length for s in segments], dim=1))]


def _join_rows(parts: list[torch.Tensor]) -> torch.Tensor:
    flat = [p.flatten(1, 2) for p in parts]
    return flat[0] if len(flat) == 1 else torch.cat(flat, dim=1)


def _rows_of(table: torch.Tensor, t_mod: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``table (k, C) + t_mod (B, rows, k, C)`` -> k tensors ``(B, rows, 1, C)`` float32."""
    return (table.float()[None, None] + t_mod.float()).unsqueeze(3).unbind(2)


class DiTPPBlock(nn.Module):
    """Wan2.1 block with an MS-MoE FFN: tokens ``(B, L, C)`` in the order of ``segments``."""

    def __init__(self, config: DiTPPConfig) -> None:
        super().__init__()
        dim, eps, fused = config.hidden_size, config.eps, config.fused_attention
        self.norm1 = FP32LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.self_attn = WanAttention(dim, config.num_heads, config.qk_norm, eps, fused)
        self.norm2 = FP32LayerNorm(dim, eps=eps) if config.cross_attn_norm else nn.Identity()
        self.cross_attn = WanAttention(dim, config.num_heads, config.qk_norm, eps, fused)
        self.norm3 = FP32LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.video_ffn = _ffn(dim, config.ffn_dim)
        self.audio_ffn = _ffn(dim, config.audio_ffn_dim)
        # Wan's scale_shift_table: rows 0-2 self-attention (all tokens), rows 3-5 the video FFN
        self.modulation = nn.Parameter(torch.randn(6, dim) / dim**0.5)
        self.audio_ffn_modulation = nn.Parameter(torch.randn(3, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, segments: list[Segment], text: torch.Tensor, text_mask: torch.Tensor | None,
                rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        parts, mods = _split_rows(x, segments), [_rows_of(self.modulation[:3], s.t_mod[:, :, :3]) for s in segments]
        h = _join_rows([self.norm1(p.float()) * (1 + scale) + shift for p, (shift, scale, _) in zip(parts, mods)])
        attn = _split_rows(self.self_attn(h.type_as(x), rope=rope), segments)
        x = _join_rows([p.float() + a * gate for p, a, (_, _, gate) in zip(parts, attn, mods)]).type_as(x)
        x = x + self.cross_attn(self.norm2(x.float()).type_as(x), text, text_mask)
        out = []
        for s, p in zip(segments, _split_rows(x, segments)):
            ffn, table = ((self.video_ffn, self.modulation[3:]) if s.name == "video"
                          else (self.audio_ffn, self.audio_ffn_modulation))  # fmt: skip
            shift, scale, gate = _rows_of(table, s.t_mod[:, :, 3:])
            h = (self.norm3(p.float()) * (1 + scale) + shift).type_as(x)
            out.append((p.float() + ffn(h).float() * gate).type_as(x))
        return _join_rows(out)


class OutputHead(nn.Module):
    """Wan's output layer: ``modulate(LN(x), table + t_emb)`` then a Linear to patch values."""

    def __init__(self, dim: int, out_dim: int, eps: float) -> None:
        super().__init__()
        self.norm = FP32LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.modulation = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        shift, scale = _rows_of(self.modulation, t_emb[:, :, None].expand(-1, -1, 2, -1))  # (B, rows, 1, C)
        return self.proj((self.norm(x.float()) * (1 + scale) + shift).type_as(x))  # x: (B, rows, n, C)


# ---------------------------------------------------------------- the model


class JavisDiTPP(GuidedDiT):
    """Joint audio-video DiT, JavisDiT++ (module docstring). :meth:`forward` has
    :meth:`model.javisdit.JavisDiT.forward`'s signature: video ``(B, 16, T, H, W)`` / audio
    ``(B, 8, A, F)`` (either ``None``), t_video ``(B,)`` or ``(B, T)``, t_audio ``(B,)`` or
    ``(B, A)`` in [0, 1], text ``(B, text_len, text_dim)``, text_mask ``(B, text_len)`` or ``None``,
    prior_spatial / prior_temporal must be ``None`` (no ST-Prior); keyword-only video_mask ``(B, T)``
    / audio_mask ``(B, A)`` (True = clean condition frame, t forced to 0) and cond_drop ``(B,)``
    (True = null text). Returns ``(v_video, v_audio)`` in the input shapes (``None`` if absent)."""

    def __init__(self, config: DiTPPConfig) -> None:
        super().__init__()
        self.config = config
        spec, dim = config.latents, config.hidden_size
        self.video_embed = nn.Conv3d(spec.video_channels, dim, config.video_patch, stride=config.video_patch)
        self.audio_embed = nn.Conv2d(spec.audio_channels, dim, config.audio_patch, stride=config.audio_patch)
        self.time_embedder = nn.Sequential(nn.Linear(config.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.text_embedder = nn.Sequential(nn.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"),
                                           nn.Linear(dim, dim))  # fmt: skip
        self.null_text = nn.Parameter(torch.zeros(spec.text_len, config.text_dim))
        self.blocks = nn.ModuleList(DiTPPBlock(config) for _ in range(config.depth))
        self.video_head = OutputHead(dim, math.prod(config.video_patch) * spec.video_channels, config.eps)
        self.audio_head = OutputHead(dim, math.prod(config.audio_patch) * spec.audio_channels, config.eps)
        self._init_weights()

    def _init_weights(self) -> None:
        """Wan2.1's init: Xavier-uniform linears and patch embeddings, zero biases, N(0, 0.02) for
        the text and time embedders. The output projections get N(0, 0.02) rather than Wan's zeros,
        so a stage that freezes them from a random start still passes gradients (as JavisDiT)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for conv in (self.video_embed, self.audio_embed):
            nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
            nn.init.zeros_(conv.bias)
        for seq in (self.text_embedder, self.time_embedder):
            for layer in (seq[0], seq[2]):
                nn.init.normal_(layer.weight, std=0.02)
        for head in (self.video_head, self.audio_head):
            nn.init.normal_(head.proj.weight, std=0.02)

    def add_lora(self) -> list[str]:
        """Adapters on ``config.lora_targets`` (idempotent); returns the adapted layer names."""
        return apply_lora(self, self.config.lora_rank, self.config.lora_alpha, self.config.lora_targets)

    @torch.no_grad()
    def set_null_text(self, states: torch.Tensor) -> None:
        """Use ``states (text_len, text_dim)`` (umT5 of the empty prompt) as the CFG null text."""
        self.null_text.copy_(states.reshape(self.null_text.shape))

    # -- tokens

    def _segment(self, name: str, tokens: torch.Tensor, rows: int, t_rows: torch.Tensor, dtype) -> Segment:
        b = t_rows.shape[0]
        feats = timestep_features(t_rows.reshape(-1) * self.config.timestep_scale, self.config.freq_dim)
        t_emb = self.time_embedder(feats.to(self.time_embedder[0].weight.dtype)).to(dtype)  # (B * rows, C)
        t_mod = self.time_proj(t_emb).unflatten(-1, (6, -1))  # (B * rows, 6, C)
        return Segment(name, tokens.shape[1], rows, t_mod.view(b, rows, 6, -1), t_emb.view(b, rows, -1))

    # -- forward

    def forward(self, video, audio, t_video, t_audio, text, text_mask, prior_spatial, prior_temporal, *,
                video_mask=None, audio_mask=None, cond_drop=None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        cfg = self.config
        if prior_spatial is not None or prior_temporal is not None:
            raise ValueError("JavisDiT++ has no ST-Prior: pass prior_spatial=None and prior_temporal=None")
        if video is None and audio is None:
            raise ValueError("need at least one of video and audio")
        ref = video if video is not None else audio
        dtype = self.video_embed.weight.dtype
        text = text.to(dtype)
        if cond_drop is not None:
            text = torch.where(cond_drop[:, None, None].to(text.device), self.null_text.to(dtype)[None], text)
            if text_mask is not None:
                text_mask = text_mask | cond_drop[:, None].to(text_mask.device)  # the null text has no padding
        text = self.text_embedder(text)  # (B, text_len, C)
        text_mask = text_mask.bool() if (cfg.mask_text_padding and text_mask is not None) else None

        tokens, segments, ids, grids = [], [], [], {}
        if video is not None:
            h = self.video_embed(pad_to_patch(video.to(dtype), cfg.video_patch))  # (B, C, T', H', W')
            grids["video"] = tuple(h.shape[2:])
            tokens.append(h.flatten(2).transpose(1, 2))  # (B, Lv, C)
            t_rows = row_timesteps(t_video, video_mask, video.shape[2], cfg.video_patch[0], ref.device)  # (B, T')
            segments.append(self._segment("video", tokens[-1], grids["video"][0], t_rows, dtype))
            ids.append(video_position_ids(*grids["video"], device=ref.device))
        if audio is not None:
            h = self.audio_embed(pad_to_patch(audio.to(dtype), cfg.audio_patch))  # (B, C, R, F')
            grids["audio"] = tuple(h.shape[2:])
            tokens.append(h.flatten(2).transpose(1, 2))  # (B, La, C)
            t_rows = row_timesteps(t_audio, audio_mask, audio.shape[2], cfg.audio_patch[0], ref.device)  # (B, R)
            segments.append(self._segment("audio", tokens[-1], grids["audio"][0], t_rows, dtype))
            ids.append(self._audio_ids(audio.shape[2], grids["audio"], video.shape[2] if video is not None else None,
                                       grids.get("video"), ref.device))  # fmt: skip
        x = torch.cat(tokens, dim=1) if len(tokens) > 1 else tokens[0]  # (B, Lv + La, C)
        rope = rope_angles(torch.cat(ids), cfg.hidden_size // cfg.num_heads, cfg.rope_theta)  # (L, d/2) x 2

        for block in self.blocks:
            if cfg.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, segments, text, text_mask, rope, use_reentrant=False)
            else:
                x = block(x, segments, text, text_mask, rope)

        outs: dict[str, torch.Tensor] = {}
        for s, part in zip(segments, _split_rows(x, segments)):
            head, patch = (self.video_head, cfg.video_patch) if s.name == "video" else (self.audio_head, cfg.audio_patch)
            source = video if s.name == "video" else audio
            out = head(part, s.t_emb).flatten(1, 2)  # (B, L_m, prod(patch) * C_m)
            outs[s.name] = unpatchify(out, grids[s.name], patch, source.shape)
        return outs.get("video"), outs.get("audio")

    def _audio_ids(self, audio_frames: int, audio_grid, video_frames: int | None, video_grid, device) -> torch.Tensor:
        """TA-RoPE ids of the audio tokens. Without video (audio-only passes) the time ids come
        from the video latent frames the clip would have; offsets then do not matter (RoPE is
        relative and only audio tokens attend to each other)."""
        cfg, spec = self.config, self.config.latents
        rows, freq = audio_grid
        audio_spans = audio_token_spans_s(spec, rows, cfg.audio_patch[0])
        if video_frames is None:
            latent_frame_s = spec.audio_time_stride * spec.audio_mel_hop / spec.audio_rate_hz
            video_frames = video_latent_frames_covering(spec, audio_frames * latent_frame_s)
            h_offset = w_offset = 0
        else:
            h_offset, w_offset = video_grid[1], video_grid[2]
        video_spans = video_latent_frame_spans_s(spec, video_frames, cfg.video_patch[0])
        return audio_position_ids(rows * freq, audio_spans, video_spans, h_offset, w_offset).to(device)


# ---------------------------------------------------------------- stages and checkpoints


def is_audio_parameter(name: str) -> bool:
    """Audio-only parameters ("audio bridge layers"): patch embedding, each block's audio FFN and
    its modulation rows, the audio output head."""
    return name.startswith(AUDIO_PREFIXES) or any(f".{part}" in name for part in AUDIO_BLOCK_PARTS)


def is_video_parameter(name: str) -> bool:
    """Video-only parameters: patch embedding, each block's video FFN, the video output head
    (the block tables' FFN rows are one tensor with the shared attention rows: counted shared)."""
    return name.startswith(("video_embed.", "video_head.")) or ".video_ffn." in name


def freeze_for_ditpp_stage(model: JavisDiTPP, stage: str) -> list[nn.Parameter]:
    """Set ``requires_grad`` for ``stage`` and return the trainable parameters.

    "audio-pp" (Stage A, audio pretraining): only the audio-only parameters
    (:func:`is_audio_parameter`); the shared attention, embedders, tables and the whole video path
    stay frozen (LoRA adapters too, if any). "sft" and "dpo" (Stages B, C): only the LoRA adapters
    (``ValueError`` if :meth:`JavisDiTPP.add_lora` has not run)."""
    if stage not in DITPP_STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {DITPP_STAGES}")
    if stage == "audio-pp":
        for name, param in model.named_parameters():
            param.requires_grad_(is_audio_parameter(name) and LORA_MARKER not in name)
    else:
        adapters = {id(p) for p in lora_parameters(model)}
        if not adapters:
            raise ValueError(f"stage {stage!r} trains LoRA adapters: call model.add_lora() first")
        for param in model.parameters():
            param.requires_grad_(id(param) in adapters)
    return [p for p in model.parameters() if p.requires_grad]


def ditpp_from_state_dict(config: DiTPPConfig, state_dict: Mapping[str, torch.Tensor]) -> JavisDiTPP:
    """A :class:`JavisDiTPP` holding ``state_dict`` (strictly), with LoRA applied first when the
    state dict has adapter keys."""
    model = JavisDiTPP(config)
    if has_lora_keys(dict(state_dict)):
        model.add_lora()
    model.load_state_dict(state_dict, strict=True)
    return model


# ---- Wan2.1 weights (diffusers WanTransformer3DModel) --------------------------------------------

_WAN_TOP = {
    "patch_embedding.": "video_embed.",
    "condition_embedder.time_embedder.linear_1.": "time_embedder.0.",
    "condition_embedder.time_embedder.linear_2.": "time_embedder.2.",
    "condition_embedder.time_proj.": "time_proj.1.",
    "condition_embedder.text_embedder.linear_1.": "text_embedder.0.",
    "condition_embedder.text_embedder.linear_2.": "text_embedder.2.",
    "proj_out.": "video_head.proj.",
}
_WAN_BLOCK = {
    "ffn.net.0.proj.": "video_ffn.0.",
    "ffn.net.2.": "video_ffn.2.",
    "norm2.": "norm2.",
    **{f"{wan}.{a}.": f"{ours}.{b}." for wan, ours in (("attn1", "self_attn"), ("attn2", "cross_attn"))
       for a, b in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "out"), ("norm_q", "norm_q"),
                    ("norm_k", "norm_k"))},
}


def wan_key(key: str) -> str | None:
    """Our parameter name for a diffusers ``WanTransformer3DModel`` key (None: no counterpart)."""
    if key == "scale_shift_table":
        return "video_head.modulation"
    for wan, ours in _WAN_TOP.items():
        if key.startswith(wan):
            return ours + key[len(wan):]
    if key.startswith("blocks."):
        _, index, rest = key.split(".", 2)
        if rest == "scale_shift_table":
            return f"blocks.{index}.modulation"
        for wan, ours in _WAN_BLOCK.items():
            if rest.startswith(wan):
                return f"blocks.{index}.{ours}{rest[len(wan):]}"
    return None


def _wan_state_dict(source) -> dict[str, torch.Tensor]:
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, nn.Module):
        return source.state_dict()
    folder = Path(os.fspath(source)).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"Wan2.1 transformer not found at {folder}; weights are never downloaded")
    folder = folder / "transformer" if (folder / "transformer").is_dir() else folder
    # the safetensors shards directly: no model instance (diffusers' from_pretrained of Wan also
    # needs `accelerate` for its fp32-kept modules), and keys are the state-dict keys
    files = sorted(folder.glob("diffusion_pytorch_model*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no diffusion_pytorch_model*.safetensors in {folder} (a diffusers Wan2.1 folder?)")
    from safetensors.torch import load_file

    return {key: value for path in files for key, value in load_file(path).items()}


@torch.no_grad()
def load_wan_transformer(model: JavisDiTPP, source) -> dict:
    """Load Wan2.1 T2V weights (a local diffusers folder, a ``WanTransformer3DModel`` or its state
    dict) into the shared layers and the video path; each block's audio FFN starts as a copy of
    its video FFN (when ``audio_ffn_dim < ffn_dim``: the first ``audio_ffn_dim`` hidden units) and
    its modulation rows as the video FFN's. The audio patch embedding and head keep their init.
    Returns ``{"loaded", "audio_init", "not_loaded"}`` (our parameter names left as they were)."""
    if model.config.audio_ffn_dim > model.config.ffn_dim:
        raise ValueError("audio_ffn_dim > ffn_dim: the audio FFN cannot start from the video FFN")
    wan = _wan_state_dict(source)
    ours = model.state_dict()
    mapped, unknown = {}, []
    for key, value in wan.items():
        name = wan_key(key)
        if name is None or name not in ours:
            unknown.append(key)
            continue
        value = value.reshape(ours[name].shape) if name.endswith("modulation") else value
        if value.shape != ours[name].shape:
            raise ValueError(f"Wan {key} {tuple(value.shape)} does not fit {name} {tuple(ours[name].shape)}")
        mapped[name] = value
    if unknown:
        raise ValueError(f"Wan keys with no counterpart (not a Wan2.1 T2V transformer?): {unknown[:8]}")
    for name, value in mapped.items():
        ours[name].copy_(value)
    audio_init = []
    for i, block in enumerate(model.blocks):
        hidden = block.audio_ffn[0].out_features
        block.audio_ffn[0].weight.copy_(block.video_ffn[0].weight[:hidden])
        block.audio_ffn[0].bias.copy_(block.video_ffn[0].bias[:hidden])
        block.audio_ffn[2].weight.copy_(block.video_ffn[2].weight[:, :hidden])
        block.audio_ffn[2].bias.copy_(block.video_ffn[2].bias)
        block.audio_ffn_modulation.copy_(block.modulation[3:])
        audio_init += [f"blocks.{i}.audio_ffn", f"blocks.{i}.audio_ffn_modulation"]
    not_loaded = sorted(k for k in ours if k not in mapped and not any(k.startswith(a) for a in audio_init))
    return {"loaded": sorted(mapped), "audio_init": audio_init, "not_loaded": not_loaded}
