"""ImageBind's vision and audio encoders as JavisScore uses them (``stages.av_sync``).

The model code is the ``imagebind`` package's (``imagebind_huge``); its PyPI builds pin an old
CUDA torch, so install it without dependencies (``pip install --no-deps imagebind-packaged``
plus ``timm iopath ftfy regex einops``). The weights come from a local file
(``imagebind_huge.pth``), loaded strictly; nothing is downloaded.

The preprocessing is ImageBind's own (``imagebind/data.py``), rewritten on torch alone so that
torchaudio is not needed:

- vision: resize the short side to 224 (bicubic), centre crop 224, CLIP mean/std;
- audio: a 2 s, 16 kHz window minus its mean -> Kaldi fbank (25 ms Hanning frames every 10 ms,
  pre-emphasis 0.97, DC removed, 512-point FFT power, 128 Kaldi mel bands from 20 Hz to
  Nyquist, log) -> (128, 204) padded or cropped, normalised with mean -4.268 and std 9.138.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

VISION_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
AUDIO_RATE_HZ = 16_000
NUM_MEL_BINS = 128
TARGET_FRAMES = 204  # ImageBind's target_length for a 2 s clip
AUDIO_MEAN, AUDIO_STD = -4.268, 9.138
FRAME_SAMPLES, SHIFT_SAMPLES, FFT_SIZE = 400, 160, 512  # 25 ms, 10 ms, next power of two


def _kaldi_mel_banks(torch: Any) -> Any:
    """(NUM_MEL_BINS, FFT_SIZE // 2 + 1) triangular filters on Kaldi's mel scale, 20 Hz - Nyquist."""

    def mel(f: Any) -> Any:
        return 1127.0 * torch.log(1.0 + f / 700.0)

    low, high = mel(torch.tensor(20.0)), mel(torch.tensor(AUDIO_RATE_HZ / 2))
    delta = (high - low) / (NUM_MEL_BINS + 1)
    left = low + torch.arange(NUM_MEL_BINS) * delta
    centre, right = left + delta, left + 2 * delta
    bins = mel(AUDIO_RATE_HZ / FFT_SIZE * torch.arange(FFT_SIZE // 2, dtype=torch.float64)).float()
    up = (bins[None] - left[:, None]) / (centre - left)[:, None]
    down = (right[:, None] - bins[None]) / (right - centre)[:, None]
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1))  # Kaldi leaves the Nyquist bin out


def audio_features(windows: np.ndarray) -> Any:
    """(W, S) float32 16 kHz windows -> (W, 1, 128, 204) normalised log-mel, as ImageBind's data.py."""
    import torch

    waves = torch.as_tensor(np.asarray(windows, np.float32))
    waves = waves - waves.mean(dim=1, keepdim=True)
    num = 1 + (waves.shape[1] - FRAME_SAMPLES) // SHIFT_SAMPLES
    frames = waves.unfold(1, FRAME_SAMPLES, SHIFT_SAMPLES)[:, :num]  # (W, F, 400)
    frames = frames - frames.mean(dim=2, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=2)
    frames = (frames - 0.97 * previous) * torch.hann_window(FRAME_SAMPLES, periodic=False)
    power = torch.fft.rfft(frames, n=FFT_SIZE).abs().pow(2)  # (W, F, 257)
    fbank = torch.log(torch.clamp(power @ _kaldi_mel_banks(torch).T, min=torch.finfo(torch.float32).eps))
    fbank = fbank.transpose(1, 2)[:, :, :TARGET_FRAMES]  # (W, 128, <=204)
    fbank = torch.nn.functional.pad(fbank, (0, TARGET_FRAMES - fbank.shape[2]))
    return ((fbank - AUDIO_MEAN) / AUDIO_STD).unsqueeze(1)


def vision_inputs(frames: np.ndarray) -> Any:
    """(N, H, W, 3) uint8 RGB -> (N, 3, 224, 224) normalised, as ImageBind's data.py."""
    import torch
    import torch.nn.functional as F

    images = torch.as_tensor(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    height, width = images.shape[-2:]
    scale = VISION_SIZE / min(height, width)
    size = (max(VISION_SIZE, round(height * scale)), max(VISION_SIZE, round(width * scale)))
    images = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    top, left = (size[0] - VISION_SIZE) // 2, (size[1] - VISION_SIZE) // 2
    images = images[:, :, top : top + VISION_SIZE, left : left + VISION_SIZE]
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


class ImageBindEmbedder:
    """``embed_vision`` / ``embed_audio`` on a module with ImageBind's forward
    (``model({"vision": x}) -> {"vision": (N, D)}``, same for ``"audio"``)."""

    def __init__(self, model: Any, device: str, version: str) -> None:
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"av_sync.device={device!r} but torch sees no CUDA device")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.version = version

    def _run(self, modality: str, inputs: Any) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.model({modality: inputs.to(self.device)})[modality]
        return out.float().cpu().numpy()

    def embed_vision(self, frames: np.ndarray) -> np.ndarray:
        return self._run("vision", vision_inputs(frames))

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        return self._run("audio", audio_features(windows))


def load_imagebind(weights: str | None, device: str) -> ImageBindEmbedder:
    """imagebind_huge from the ``imagebind`` package's code and local weights, strictly."""
    import os

    if not weights or not os.path.isfile(weights):
        raise FileNotFoundError(f"av_sync.imagebind_weights={weights!r} is not a file")
    try:
        from imagebind.models.imagebind_model import imagebind_huge
    except ImportError as e:
        raise ImportError(
            "javisscore needs ImageBind's model code: pip install --no-deps imagebind-packaged "
            "&& pip install timm iopath ftfy regex einops"
        ) from e
    import torch

    from stages.aesthetic import sha256_file

    model = imagebind_huge(pretrained=False)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return ImageBindEmbedder(model, device, f"imagebind_huge/sha256:{sha256_file(weights)[:8]}")


def num_fbank_frames(num_samples: int) -> int:
    """Kaldi frames (snip_edges) in ``num_samples``: 198 for a 2 s window."""
    return 1 + math.floor((num_samples - FRAME_SAMPLES) / SHIFT_SAMPLES)
