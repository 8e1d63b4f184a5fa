"""TA-RoPE: temporally aligned 3-D rotary positions for one sequence of video and audio tokens
(JavisDiT++, "Temporal-Aligned RoPE").

Every token carries an integer position id ``(t, h, w)``; the rotary embedding is Wan2.1's 3-D RoPE:
the head dimension ``d`` is split into a time part of ``d - 4 * (d // 6)`` channels and height and
width parts of ``2 * (d // 6)`` each, each part rotated (interleaved pairs) by its own id with
frequencies ``theta ** (-2i / part)``. Built from explicit ids, so video and audio ids are made
independently and simply concatenated:

- video token ``(frame k, row y, column x)`` of the patch grid: ``(k, y, x)``, exactly Wan2.1's ids;
- audio token ``(time row r, frequency bin f)``: ``(t(r), H + f, W)`` with ``H, W`` the video
  token grid's height and width (the offsets). ``t(r)`` is the index of the video latent frame
  whose time span contains the centre of the audio token's span; audio tokens past the last video
  latent frame (the audio latent is padded up to whole tokens) take the last one. Since every
  audio height id is ``>= H`` and no video height id is, no audio id equals a video id.

Time spans (seconds, half-open ``[start, end)``), from the spec and the patch sizes:

- RGB frame ``j`` covers ``[j / fps, (j + 1) / fps)``.
- Wan2.1's causal VAE (``spec.video_vae == "wan"``) encodes frame 0 alone into latent frame 0 and
  frames ``4k - 3 .. 4k`` into latent frame ``k >= 1``: latent 0 spans ``[0, 1 / fps)``, latent
  ``k`` spans ``[(4k - 3) / fps, (4k + 1) / fps)``. Other VAEs: latent ``k`` holds frames
  ``4k .. 4k + 3``. A token of ``patch_t`` latent frames spans from its first frame's start to
  its last frame's end.
- audio latent frame ``a`` covers ``audio_time_stride * audio_mel_hop`` samples (40 ms for
  AudioLDM2), so audio token row ``r`` (``patch_t`` latent frames) spans
  ``[r * patch_t * 0.04, (r + 1) * patch_t * 0.04)`` s.

Rotary embeddings make the logit between a query at id ``p`` and a key at id ``q`` a function of
the contents and ``p - q`` only, so with the other ids fixed, audio-video attention depends on the
time-id distance alone: an audio token is "at" the video frame it is heard with.
"""

from __future__ import annotations

import torch

from model.spec import LatentSpec


def rope_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels of the (time, height, width) parts of a head, as Wan2.1 splits them."""
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"head_dim must be even and >= 6 for 3-D RoPE, got {head_dim}")
    side = 2 * (head_dim // 6)
    return head_dim - 2 * side, side, side


# ---- position ids --------------------------------------------------------------------------------


def video_position_ids(t_lat: int, h_tokens: int, w_tokens: int, device=None) -> torch.Tensor:
    """``(t_lat * h_tokens * w_tokens, 3)`` int64 ids ``(t, h, w)`` in raster order (t slowest)."""
    t, h, w = torch.meshgrid(torch.arange(t_lat, device=device), torch.arange(h_tokens, device=device),
                             torch.arange(w_tokens, device=device), indexing="ij")  # fmt: skip
    return torch.stack([t, h, w], dim=-1).reshape(-1, 3)


def time_ids_for(token_spans_s: torch.Tensor, video_latent_frame_spans_s: torch.Tensor) -> torch.Tensor:
    """For each span ``(N, 2)``, the index of the video latent frame span ``(T, 2)`` (sorted,
    contiguous) holding its centre; clamped to ``[0, T - 1]``."""
    centres = token_spans_s.to(torch.float64).mean(dim=-1)
    starts = video_latent_frame_spans_s[:, 0].to(torch.float64).contiguous()
    index = torch.searchsorted(starts, centres, right=True) - 1
    return index.clamp(0, len(starts) - 1)


def audio_position_ids(num_audio_tokens: int, audio_token_times_s: torch.Tensor,
                       video_latent_frame_times_s: torch.Tensor, h_offset: int, w_offset: int) -> torch.Tensor:
    """``(num_audio_tokens, 3)`` int64 ids of audio tokens in raster order (time row slowest).

    ``audio_token_times_s``: ``(R, 2)`` spans of the ``R`` audio token rows (:func:`audio_token_spans_s`);
    ``num_audio_tokens = R * F`` with ``F`` frequency tokens per row. ``video_latent_frame_times_s``:
    ``(T, 2)`` spans of the video token frames (:func:`video_latent_frame_spans_s`). Row ``r``,
    bin ``f`` -> ``(t(r), h_offset + f, w_offset)`` (module docstring)."""
    rows = audio_token_times_s.shape[0]
    if rows == 0 or num_audio_tokens % rows:
        raise ValueError(f"{num_audio_tokens} audio tokens do not split into {rows} time rows")
    freq = num_audio_tokens // rows
    device = audio_token_times_s.device
    t = time_ids_for(audio_token_times_s, video_latent_frame_times_s).to(device)[:, None].expand(rows, freq)
    h = (h_offset + torch.arange(freq, device=device))[None].expand(rows, freq)
    w = torch.full((rows, freq), w_offset, device=device, dtype=torch.long)
    return torch.stack([t, h, w], dim=-1).reshape(-1, 3)


# ---- time spans ----------------------------------------------------------------------------------


def video_latent_frame_spans_s(spec: LatentSpec, num_latent_frames: int, patch_t: int = 1) -> torch.Tensor:
    """``(ceil(num_latent_frames / patch_t), 2)`` float64 ``[start, end)`` seconds of each video
    token frame (module docstring: Wan's causal first latent frame holds one RGB frame)."""
    k = torch.arange(num_latent_frames, dtype=torch.float64)
    stride = spec.video_time_stride
    if spec.video_vae == "wan":
        first = torch.where(k == 0, torch.zeros_like(k), stride * k - (stride - 1))
        last = stride * k  # inclusive
    else:
        first, last = stride * k, stride * k + stride - 1
    starts, ends = first / spec.video_fps, (last + 1) / spec.video_fps
    index = torch.arange(0, num_latent_frames, patch_t)
    ends_grouped = ends[torch.clamp(index + patch_t - 1, max=num_latent_frames - 1)]
    return torch.stack([starts[index], ends_grouped], dim=-1)


def audio_token_spans_s(spec: LatentSpec, num_rows: int, patch_t: int) -> torch.Tensor:
    """``(num_rows, 2)`` float64 ``[start, end)`` seconds of each audio token row of ``patch_t``
    audio latent frames."""
    latent_frame_s = spec.audio_time_stride * spec.audio_mel_hop / spec.audio_rate_hz
    r = torch.arange(num_rows, dtype=torch.float64)
    return torch.stack([r, r + 1], dim=-1) * patch_t * latent_frame_s


def video_latent_frames_covering(spec: LatentSpec, duration_s: float) -> int:
    """Video latent frames whose spans reach ``duration_s`` (audio-only passes: the clip's frames)."""
    num_frames = max(1, round(duration_s * spec.video_fps))
    return spec.video_latent_frames(num_frames)


# ---- the rotation --------------------------------------------------------------------------------


def rope_angles(position_ids: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L, 3)`` ids -> ``(cos, sin)``, each ``(L, head_dim // 2)`` float32: one angle per
    channel pair, time pairs first, then height, then width (Wan2.1's layout). Angles are
    computed in float64 as diffusers does, so positions in the hundreds stay exact."""
    parts = []
    for axis, dim in enumerate(rope_dims(head_dim)):
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=position_ids.device) / dim)
        parts.append(position_ids[:, axis].to(torch.float64)[:, None] * freqs[None])
    angles = torch.cat(parts, dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of ``x (B, heads, L, d)`` by ``cos/sin (L, d / 2)``."""
    even, odd = x.float()[..., 0::2], x.float()[..., 1::2]
    out = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)
    return out.type_as(x)
