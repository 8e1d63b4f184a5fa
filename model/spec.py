"""The tensor contract between encoders, latents on disk, and the models.

Every module that produces or consumes a latent or a text state reads its sizes from one
:class:`LatentSpec`, so the frozen encoders (``model/encoders.py``), the latents written by the
precompute stage (``model/latents.py``) and the networks (``model/st_prior.py``,
``model/javisdit.py``) cannot drift apart. Shapes, without the batch dimension:

- video latent: ``(video_channels, T_lat, H_lat, W_lat)`` from RGB frames ``(T, H, W, 3)`` at
  ``video_fps``; ``H_lat = H / video_space_stride``; ``T_lat`` from :meth:`LatentSpec.video_latent_frames`:
  ``ceil(T / video_time_stride)`` for ``video_vae="opensora"`` (the tiny stand-in; the OpenSora VAE
  reports its own), ``1 + (T - 1) // video_time_stride`` for the causal Wan2.1 VAE (``"wan"``: the
  first latent frame holds frame 0 alone, each later one ``video_time_stride`` frames).
- audio latent: ``(audio_channels, A_lat, F_lat)`` from a log-mel spectrogram
  ``(A, audio_mel_bins)`` of 16 kHz mono with hop ``audio_mel_hop`` samples;
  ``A_lat = A / audio_time_stride``, ``F_lat = audio_mel_bins / audio_freq_stride``.
- DiT text states: ``(text_len, text_dim)`` plus a boolean mask ``(text_len,)`` (``text_encoder``:
  T5 for JavisDiT, umT5 for JavisDiT++).
- prior text states: ``(prior_text_len, prior_text_dim)`` plus a mask (ImageBind text, 77 tokens);
  ``prior_text_len = 0`` for JavisDiT++, which has no ST-Prior: no prior text is encoded or stored.
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
    prior_text_len: int  # 0: the model has no ST-Prior, no prior text states
    prior_text_dim: int
    video_vae: str = "opensora"  # "opensora" (JavisDiT) | "wan" (JavisDiT++: Wan2.1's causal VAE)
    text_encoder: str = "t5"  # "t5" (T5-XXL, JavisDiT) | "umt5" (umT5-XXL, Wan2.1 / JavisDiT++)

    def __post_init__(self) -> None:
        if self.video_vae not in VIDEO_VAES:
            raise ValueError(f"unknown video_vae {self.video_vae!r}; choose one of {VIDEO_VAES}")
        if self.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"unknown text_encoder {self.text_encoder!r}; choose one of {TEXT_ENCODERS}")
        if self.prior_text_len < 0 or (self.prior_text_len > 0) != (self.prior_text_dim > 0):
            raise ValueError("prior_text_len and prior_text_dim must both be positive, or both 0 (no prior text)")

    @property
    def has_prior_text(self) -> bool:
        return self.prior_text_len > 0

    def video_latent_frames(self, num_frames: int) -> int:
        """Latent frames of ``num_frames`` RGB frames (see the module docstring)."""
        if num_frames < 1:
            raise ValueError("num_frames must be positive")
        if self.video_vae == "wan":
            return 1 + (num_frames - 1) // self.video_time_stride
        return -(-num_frames // self.video_time_stride)


VIDEO_VAES = ("opensora", "wan")
TEXT_ENCODERS = ("t5", "umt5")


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

# JavisDiT++: Wan2.1's video VAE (16 channels, 8x space, causal 4x time, 16 fps as Wan2.1), umT5-XXL text
# (512 tokens x 4096, Wan2.1's text_len), AudioLDM2 audio exactly as PAPER; no ST-Prior, so no prior text
DITPP_PAPER = dataclasses.replace(
    PAPER, video_channels=16, video_fps=16.0, text_len=512, prior_text_len=0, prior_text_dim=0, video_vae="wan",
    text_encoder="umt5",
)

# the same structure for a laptop CPU: tiny text, 8 fps
DITPP_TINY = dataclasses.replace(DITPP_PAPER, video_fps=8.0, text_len=16, text_dim=32)

SPECS = {"paper": PAPER, "tiny": TINY, "ditpp-paper": DITPP_PAPER, "ditpp-tiny": DITPP_TINY}


def latent_spec(name: str) -> LatentSpec:
    if name not in SPECS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(SPECS)}")
    return SPECS[name]
