"""The tensor contract between encoders, latents on disk, and the models.

Every module that produces or consumes a latent or a text state reads its sizes from one
:class:`LatentSpec`, so the frozen encoders (``model/encoders.py``), the latents written by the
precompute stage (``model/latents.py``) and the networks (``model/st_prior.py``,
``model/javisdit.py``) cannot drift apart. Shapes, without the batch dimension:

- video latent: ``(video_channels, T_lat, H_lat, W_lat)`` from RGB frames ``(T, H, W, 3)`` at
  ``video_fps``; ``T_lat = ceil(T / video_time_stride)``, ``H_lat = H / video_space_stride``.
- audio latent: ``(audio_channels, A_lat, F_lat)`` from a log-mel spectrogram
  ``(A, audio_mel_bins)`` of 16 kHz mono with hop ``audio_mel_hop`` samples;
  ``A_lat = A / audio_time_stride``, ``F_lat = audio_mel_bins / audio_freq_stride``.
- DiT text states: ``(text_len, text_dim)`` plus a boolean mask ``(text_len,)`` (T5).
- prior text states: ``(prior_text_len, prior_text_dim)`` plus a mask (ImageBind text, 77 tokens).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LatentSpec:
    video_channels: int
    video_time_stride: int
    video_space_stride: int
    video_fps: float
    audio_channels: int
    audio_mel_bins: int
    audio_mel_hop: int
    audio_time_stride: int
    audio_freq_stride: int
    audio_rate_hz: int
    text_len: int
    text_dim: int
    prior_text_len: int
    prior_text_dim: int


# OpenSora v1.2 video VAE (4 channels, 8x space, 4x time), AudioLDM2 audio VAE (8 channels,
# 64 mel bins, hop 160 at 16 kHz, 4x time and frequency), T5-XXL text (300 tokens x 4096),
# ImageBind-huge text (77 tokens x 1024)
PAPER = LatentSpec(
    video_channels=4,
    video_time_stride=4,
    video_space_stride=8,
    video_fps=24.0,
    audio_channels=8,
    audio_mel_bins=64,
    audio_mel_hop=160,
    audio_time_stride=4,
    audio_freq_stride=4,
    audio_rate_hz=16_000,
    text_len=300,
    text_dim=4096,
    prior_text_len=77,
    prior_text_dim=1024,
)

# small enough for a laptop CPU: same structure, fewer channels and tokens
TINY = LatentSpec(
    video_channels=4,
    video_time_stride=4,
    video_space_stride=8,
    video_fps=8.0,
    audio_channels=8,
    audio_mel_bins=64,
    audio_mel_hop=160,
    audio_time_stride=4,
    audio_freq_stride=4,
    audio_rate_hz=16_000,
    text_len=16,
    text_dim=32,
    prior_text_len=77,
    prior_text_dim=32,
)

SPECS = {"paper": PAPER, "tiny": TINY}


def latent_spec(name: str) -> LatentSpec:
    if name not in SPECS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(SPECS)}")
    return SPECS[name]
