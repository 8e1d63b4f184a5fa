"""The four frozen encoders behind the models, each built from a :class:`~model.spec.LatentSpec`.

Which ones is read from the spec: ``spec.video_vae`` ("opensora" | "wan"), ``spec.text_encoder``
("t5" | "umt5") and ``spec.has_prior_text`` (JavisDiT++ has no ST-Prior: ``prior_text`` is None).

=================  ==========================================  ==========================================
role               production (local weights, never a download)  tiny (random, seeded: tests and smoke runs)
=================  ==========================================  ==========================================
DiT text           T5 encoder + tokenizer (``transformers``)   a 2-layer random T5 + :class:`HashingTokenizer`
DiT text (umt5)    umT5-XXL encoder + tokenizer (Wan2.1)       a 2-layer random umT5 + :class:`HashingTokenizer`
ST-Prior text      ImageBind text tower (``imagebind``)        :class:`TinyRandomPriorTextEncoder`
video VAE          OpenSora v1.2 VAE (``opensora``)            :class:`TinyRandomVideoVAE`
video VAE (wan)    Wan2.1 VAE (``diffusers.AutoencoderKLWan``)  :class:`TinyRandomWanVideoVAE`
audio VAE          AudioLDM2 VAE (``diffusers``) + HiFi-GAN    :class:`TinyRandomAudioVAE`
=================  ==========================================  ==========================================

Interfaces (all batched; every module is frozen: eval mode, no gradients):

- text encoders: ``encode(texts) -> (states float32 (B, L, D), mask bool (B, L))``, ``L`` = ``max_len``.
- video VAE: ``encode(frames uint8 (B, T, H, W, 3)) -> (B, C, T_lat, H_lat, W_lat)``,
  ``decode(latents, num_frames) -> uint8 (B, T, H, W, 3)``, ``latent_shape(T, H, W)``.
- audio VAE: ``encode(mel (B, A, F)) -> (B, C, A_lat, F_lat)``, ``decode(latents) -> mel (B, A, F)``,
  ``vocode(mel) -> waveform (B, S)``; the log-mel itself comes from :func:`log_mel` (same for both
  kinds: STFT in torch, Slaney mel filterbank built in numpy, AudioLDM2's settings).

Sampling audio: ``vocode`` uses the AudioLDM2 HiFi-GAN when a local ``vocoder`` path is given
(``transformers.SpeechT5HifiGan``, the class AudioLDM2 ships its vocoder as), else Griffin-Lim on
the mel pseudo-inverse (:func:`griffin_lim`; intelligible enough to check timing, not for listening).

This module is over 400 lines because it holds four encoders in two kinds each; splitting it
would scatter one contract over several files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.spec import LatentSpec

# AudioLDM2's mel settings (16 kHz): 1024-sample window and FFT, 0-8 kHz, log of the clamped magnitude
MEL_N_FFT = 1024
MEL_FMIN_HZ = 0.0
MEL_FMAX_HZ = 8000.0
MEL_LOG_FLOOR = 1e-5
TINY_SEED = 0  # every tiny module is seeded from this plus a per-role offset
PATH_KEYS = ("t5", "umt5", "imagebind", "imagebind_bpe", "video_vae", "audio_vae", "vocoder")


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with a fixed initialisation, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _freeze(build())


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _require_path(path: str | os.PathLike | None, what: str, key: str) -> Path:
    if not path:
        raise FileNotFoundError(f"no local path for the {what}: pass paths={{{key!r}: ...}} (weights are never downloaded)")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} not found at {p} (paths[{key!r}]); weights are never downloaded")
    return p


def _require_package(name: str, what: str, install: str) -> None:
    import importlib.util

    if importlib.util.find_spec(name) is None:
        raise ImportError(f"the {what} needs the `{name}` package, which is not installed: {install}")


# ---- tokenizers ------------------------------------------------------------------------------


class HashingTokenizer:
    """A deterministic local tokenizer for the tiny text encoders: lower-cased words and
    punctuation, each hashed (blake2b) into ``vocab_size - 2`` ids; 0 = padding, 1 = end."""

    PAD, EOS = 0, 1

    def __init__(self, vocab_size: int = 1024) -> None:
        if vocab_size < 3:
            raise ValueError("vocab_size must be >= 3")
        self.vocab_size = vocab_size

    def token_id(self, word: str) -> int:
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        return 2 + int.from_bytes(digest, "little") % (self.vocab_size - 2)

    def __call__(self, texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(texts), max_len, dtype=torch.long)
        for i, text in enumerate(texts):
            words = re.findall(r"\w+|[^\w\s]", text.lower())[: max_len - 1]
            row = [self.token_id(w) for w in words] + [self.EOS]
            ids[i, : len(row)] = torch.tensor(row)
        return ids, ids != self.PAD


def _hf_tokenize(tokenizer: Any) -> Callable[[Sequence[str], int], tuple[torch.Tensor, torch.Tensor]]:
    def tokenize(texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = tokenizer(list(texts), max_length=max_len, padding="max_length", truncation=True, return_tensors="pt")
        return out["input_ids"], out["attention_mask"].bool()

    return tokenize


# ---- DiT text encoder: T5 --------------------------------------------------------------------


class T5TextEncoder(nn.Module):
    """T5 encoder states for the DiT: texts -> ``(B, text_len, text_dim)`` and a token mask.
    Padded positions are zeroed so stored states do not depend on the padding length."""

    def __init__(self, model: nn.Module, tokenize: Callable, spec: LatentSpec) -> None:
        super().__init__()
        hidden = model.config.d_model
        if hidden != spec.text_dim:
            raise ValueError(f"T5 hidden size {hidden} != spec.text_dim {spec.text_dim}")
        self.model = _freeze(model)
        self.tokenize = tokenize
        self.max_len, self.dim = spec.text_len, spec.text_dim

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(texts, self.max_len)
        device = _device(self.model)
        states = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        mask = mask.to(device)
        return states.float() * mask[..., None], mask


class TinyRandomT5TextEncoder(T5TextEncoder):
    """A 2-layer randomly initialised T5 (the real ``transformers`` code) of width
    ``spec.text_dim`` with a :class:`HashingTokenizer`. Not a text model: tests and smoke runs only."""

    def __init__(self, spec: LatentSpec, seed: int = TINY_SEED, vocab_size: int = 1024) -> None:
        from transformers import T5Config, T5EncoderModel

        config = _tiny_t5_config(T5Config, spec, vocab_size)
        super().__init__(_seeded(seed, lambda: T5EncoderModel(config)), HashingTokenizer(vocab_size), spec)


def _tiny_t5_config(config_class: type, spec: LatentSpec, vocab_size: int) -> Any:
    """A 2-layer (um)T5 config of width ``spec.text_dim`` for the tiny random text encoders."""
    heads = 4 if spec.text_dim % 4 == 0 else 1
    return config_class(
        vocab_size=vocab_size, d_model=spec.text_dim, d_kv=spec.text_dim // heads, d_ff=2 * spec.text_dim,
        num_layers=2, num_heads=heads, dropout_rate=0.0, pad_token_id=HashingTokenizer.PAD,
        eos_token_id=HashingTokenizer.EOS,
    )  # fmt: skip


def load_t5_text_encoder(path: str | os.PathLike | None, spec: LatentSpec, dtype: torch.dtype = torch.float32) -> T5TextEncoder:
    """T5 encoder and tokenizer from a local ``save_pretrained`` folder (e.g. t5-v1_1-xxl)."""
    folder = _require_path(path, "T5 text encoder", "t5")
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = T5EncoderModel.from_pretrained(folder, local_files_only=True, dtype=dtype)
    return T5TextEncoder(model, _hf_tokenize(tokenizer), spec)


class TinyRandomUMT5TextEncoder(T5TextEncoder):
    """:class:`TinyRandomT5TextEncoder`'s umT5 twin (``transformers.UMT5EncoderModel``, the class
    Wan2.1 ships its text encoder as). Not a text model: tests and smoke runs only."""

    def __init__(self, spec: LatentSpec, seed: int = TINY_SEED + 4, vocab_size: int = 1024) -> None:
        from transformers import UMT5Config, UMT5EncoderModel

        config = _tiny_t5_config(UMT5Config, spec, vocab_size)
        super().__init__(_seeded(seed, lambda: UMT5EncoderModel(config)), HashingTokenizer(vocab_size), spec)


def load_umt5_text_encoder(path: str | os.PathLike | None, spec: LatentSpec, dtype: torch.dtype = torch.float32) -> T5TextEncoder:
    """umT5-XXL from a local folder: a diffusers Wan2.1 folder (``text_encoder/`` and ``tokenizer/``)
    or one ``save_pretrained`` folder holding both. States are zero past the prompt, as Wan's
    pipeline pads them to 512 tokens."""
    folder = _require_path(path, "umT5 text encoder", "umt5")
    from transformers import AutoTokenizer, UMT5EncoderModel

    model_dir = folder / "text_encoder" if (folder / "text_encoder").is_dir() else folder
    tokenizer_dir = folder / "tokenizer" if (folder / "tokenizer").is_dir() else folder
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    model = UMT5EncoderModel.from_pretrained(model_dir, local_files_only=True, dtype=dtype)
    return T5TextEncoder(model, _hf_tokenize(tokenizer), spec)


# ---- ST-Prior text encoder: ImageBind --------------------------------------------------------


class ImageBindTextEncoder(nn.Module):
    """The 77 last-layer hidden states of ImageBind's text trunk (before its EOS head), and a
    mask up to and including the end token (CLIP BPE: the end token has the largest id)."""

    def __init__(self, model: nn.Module, tokenize: Callable[[Sequence[str]], torch.Tensor], spec: LatentSpec) -> None:
        super().__init__()
        self.model = _freeze(model)
        self.tokenize = tokenize
        self.max_len, self.dim = spec.prior_text_len, spec.prior_text_dim

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = _device(self.model)
        tokens = self.tokenize(list(texts)).to(device)  # (B, 77)
        pre = self.model.modality_preprocessors["text"](text=tokens)
        states = self.model.modality_trunks["text"](**pre["trunk"]).float()  # (B, 77, 1024)
        mask = torch.arange(tokens.shape[1], device=device)[None] <= tokens.argmax(dim=-1)[:, None]
        if states.shape[1:] != (self.max_len, self.dim):
            raise ValueError(f"ImageBind text states {tuple(states.shape[1:])} != spec {(self.max_len, self.dim)}")
        return states * mask[..., None], mask


def load_imagebind_text_encoder(
    path: str | os.PathLike | None, spec: LatentSpec, bpe_path: str | os.PathLike | None = None
) -> ImageBindTextEncoder:
    """ImageBind-huge from a local checkpoint file (``imagebind_huge.pth``), text tower only."""
    checkpoint = _require_path(path, "ImageBind checkpoint", "imagebind")
    _require_package(
        "imagebind", "ImageBind text encoder",
        "pip install git+https://github.com/facebookresearch/ImageBind (it is not on PyPI)",
    )  # fmt: skip
    import imagebind
    from imagebind.models import imagebind_model
    from imagebind.models.multimodal_preprocessors import SimpleTokenizer

    bpe = Path(bpe_path) if bpe_path else Path(imagebind.__file__).parent / "bpe" / "bpe_simple_vocab_16e6.txt.gz"
    if not bpe.exists():
        raise FileNotFoundError(f"ImageBind BPE vocabulary not found at {bpe}: pass paths['imagebind_bpe']")
    model = imagebind_model.imagebind_huge(pretrained=False)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    for name in list(model.modality_trunks):
        if name != "text":  # keep only the text tower: the others are ~1B parameters we never use
            for part in (model.modality_preprocessors, model.modality_trunks, model.modality_heads):
                del part[name]
    tokenizer = SimpleTokenizer(bpe_path=str(bpe), context_length=spec.prior_text_len)
    return ImageBindTextEncoder(model, tokenizer, spec)


class TinyRandomPriorTextEncoder(nn.Module):
    """A 2-layer random causal transformer (like ImageBind's text trunk, much smaller) over a
    :class:`HashingTokenizer`: texts -> ``(B, prior_text_len, prior_text_dim)`` and a mask."""

    def __init__(self, spec: LatentSpec, seed: int = TINY_SEED + 1, vocab_size: int = 1024) -> None:
        super().__init__()
        self.max_len, self.dim = spec.prior_text_len, spec.prior_text_dim
        self.tokenizer = HashingTokenizer(vocab_size)
        heads = 4 if self.dim % 4 == 0 else 1

        def build() -> nn.Module:
            layer = nn.TransformerEncoderLayer(self.dim, heads, 2 * self.dim, dropout=0.0, batch_first=True, norm_first=True)
            return nn.ModuleDict({
                "embed": nn.Embedding(vocab_size, self.dim),
                "pos": nn.Embedding(self.max_len, self.dim),
                "trunk": nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                "norm": nn.LayerNorm(self.dim),
            })  # fmt: skip

        self.net = _seeded(seed, build)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = _device(self.net)
        ids, mask = self.tokenizer(texts, self.max_len)
        ids, mask = ids.to(device), mask.to(device)
        x = self.net["embed"](ids) + self.net["pos"].weight[None]  # (B, L, D)
        causal = nn.Transformer.generate_square_subsequent_mask(self.max_len, device=device)
        x = self.net["norm"](self.net["trunk"](x, mask=causal, is_causal=True))
        return x * mask[..., None], mask


# ---- video VAE -------------------------------------------------------------------------------


def _frames_to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float (B, 3, T, H, W) in [-1, 1]."""
    if frames.dtype != torch.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (B, T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    return frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def _unit_to_frames(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)


class TinyRandomVideoVAE(nn.Module):
    """Random patchify conv encoder / transposed-conv decoder with the spec's strides: frames
    ``(B, T, H, W, 3)`` -> ``(B, video_channels, ceil(T / ts), H / ss, W / ss)``. The time axis
    is padded with the last frame up to a multiple of the stride. Not a trained VAE."""

    def __init__(self, spec: LatentSpec, seed: int = TINY_SEED + 2, hidden: int = 16) -> None:
        super().__init__()
        self.spec, self.channels = spec, spec.video_channels
        ts, ss = spec.video_time_stride, spec.video_space_stride
        kernel = (ts, ss, ss)
        self.encoder = _seeded(seed, lambda: nn.Sequential(
            nn.Conv3d(3, hidden, kernel, stride=kernel), nn.SiLU(), nn.Conv3d(hidden, spec.video_channels, 1)))
        self.decoder = _seeded(seed + 100, lambda: nn.Sequential(
            nn.Conv3d(spec.video_channels, hidden, 1), nn.SiLU(), nn.ConvTranspose3d(hidden, 3, kernel, stride=kernel),
            nn.Tanh()))  # fmt: skip

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        ss = self.spec.video_space_stride
        if height % ss or width % ss:
            raise ValueError(f"frame size {height}x{width} is not a multiple of the space stride {ss}")
        return (self.channels, math.ceil(num_frames / self.spec.video_time_stride), height // ss, width // ss)

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        _, t, h, w, _ = frames.shape
        self.latent_shape(t, h, w)  # validates the size
        x = _frames_to_unit(frames.to(_device(self.encoder)))
        pad = -t % self.spec.video_time_stride
        if pad:
            x = torch.cat([x, x[:, :, -1:].expand(-1, -1, pad, -1, -1)], dim=2)
        return self.encoder(x)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, num_frames: int) -> torch.Tensor:
        return _unit_to_frames(self.decoder(latents.to(_device(self.decoder)))[:, :, :num_frames])


class OpenSoraVideoVAE(nn.Module):
    """OpenSora v1.2's VAE (2-D SDXL VAE + temporal VAE). Its latent length is its own
    (``get_latent_size``: 17 frames -> 5 latents, causal), not ``ceil(T / 4)``: read shapes from
    :meth:`latent_shape`, never from the formula."""

    def __init__(self, vae: nn.Module, spec: LatentSpec) -> None:
        super().__init__()
        self.vae, self.spec, self.channels = _freeze(vae), spec, spec.video_channels

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        return (self.channels, *(int(n) for n in self.vae.get_latent_size([num_frames, height, width])))

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        x = _frames_to_unit(frames.to(self.vae.device)).to(self.vae.dtype)
        return self.vae.encode(x).float()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, num_frames: int) -> torch.Tensor:
        x = self.vae.decode(latents.to(self.vae.device, self.vae.dtype), num_frames=num_frames)
        return _unit_to_frames(x.float())


def load_opensora_video_vae(path: str | os.PathLike | None, spec: LatentSpec, micro_frame_size: int = 17) -> OpenSoraVideoVAE:
    """OpenSora-VAE-v1.2 from a local folder (its ``config.json`` + weights); the hub is switched
    off while it loads, so a config that names a remote sub-model fails instead of downloading."""
    folder = _require_path(path, "OpenSora video VAE", "video_vae")
    _require_package(
        "opensora", "OpenSora video VAE", "pip install git+https://github.com/hpcaitech/Open-Sora@v1.2.0"
    )
    os.environ["HF_HUB_OFFLINE"] = "1"
    from opensora.models.vae.vae import OpenSoraVAE_V1_2

    vae = OpenSoraVAE_V1_2(from_pretrained=str(folder), micro_frame_size=micro_frame_size, micro_batch_size=4)
    return OpenSoraVideoVAE(vae, spec)


class WanVideoVAE(nn.Module):
    """Wan2.1's causal video VAE (``diffusers.AutoencoderKLWan``): frames -> the posterior mode,
    normalised per channel with the config's ``latents_mean`` / ``latents_std`` (as Wan's pipeline
    feeds its DiT), and back. ``T_lat = 1 + (T - 1) // 4``: frame 0 alone, then groups of 4; frames
    past the last whole group are dropped by the VAE, so use ``T = 4k + 1``."""

    def __init__(self, vae: nn.Module, spec: LatentSpec) -> None:
        super().__init__()
        if vae.config.z_dim != spec.video_channels:
            raise ValueError(f"Wan VAE z_dim {vae.config.z_dim} != spec.video_channels {spec.video_channels}")
        self.vae, self.spec, self.channels = _freeze(vae), spec, spec.video_channels
        shape = (1, spec.video_channels, 1, 1, 1)
        self.register_buffer("mean", torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(vae.config.latents_std, dtype=torch.float32).view(shape))

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        ss = self.spec.video_space_stride
        if height % ss or width % ss:
            raise ValueError(f"frame size {height}x{width} is not a multiple of the space stride {ss}")
        return (self.channels, self.spec.video_latent_frames(num_frames), height // ss, width // ss)

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        _, t, h, w, _ = frames.shape
        self.latent_shape(t, h, w)  # validates the size
        x = _frames_to_unit(frames.to(self.vae.device)).to(self.vae.dtype)
        latents = self.vae.encode(x).latent_dist.mode().float()
        return (latents - self.mean) / self.std

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, num_frames: int) -> torch.Tensor:
        z = latents.to(self.mean.device).float() * self.std + self.mean
        x = self.vae.decode(z.to(self.vae.dtype)).sample.float()[:, :, :num_frames]  # (B, 3, 1 + 4 (T_lat - 1), H, W)
        if x.shape[2] < num_frames:  # asked for more frames than the latents hold: repeat the last
            x = torch.cat([x, x[:, :, -1:].expand(-1, -1, num_frames - x.shape[2], -1, -1)], dim=2)
        return _unit_to_frames(x)


class TinyRandomWanVideoVAE(WanVideoVAE):
    """A real ``AutoencoderKLWan`` (the same causal 4x time / 8x space structure) with base width 8,
    one residual block per level and seeded random weights: a 25-frame 64x64 clip encodes in about
    0.1 s on CPU. Keeps Wan2.1's ``latents_mean``/``latents_std``. Not a trained VAE."""

    def __init__(self, spec: LatentSpec, seed: int = TINY_SEED + 5, base_dim: int = 8) -> None:
        from diffusers import AutoencoderKLWan

        if (spec.video_time_stride, spec.video_space_stride) != (4, 8):
            raise ValueError("the Wan VAE has a 4x time and 8x space stride")
        super().__init__(_seeded(seed, lambda: AutoencoderKLWan(
            base_dim=base_dim, z_dim=spec.video_channels, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
            temperal_downsample=[False, True, True])), spec)  # fmt: skip


def load_wan_video_vae(path: str | os.PathLike | None, spec: LatentSpec, dtype: torch.dtype = torch.float32) -> WanVideoVAE:
    """Wan2.1's VAE from a local folder: a diffusers Wan2.1 folder (its ``vae/``) or the VAE folder."""
    folder = _require_path(path, "Wan2.1 video VAE", "video_vae")
    from diffusers import AutoencoderKLWan

    sub = "vae" if (folder / "vae").is_dir() else None
    return WanVideoVAE(AutoencoderKLWan.from_pretrained(folder, subfolder=sub, local_files_only=True, torch_dtype=dtype), spec)


# ---- audio: log-mel, VAE, vocoder ------------------------------------------------------------


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(f < 1000.0, f * 3.0 / 200.0, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / log_step)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(m < 15.0, m * 200.0 / 3.0, 1000.0 * np.exp(log_step * (m - 15.0)))


def mel_filterbank(rate_hz: int, n_fft: int, num_mels: int, fmin_hz: float, fmax_hz: float) -> np.ndarray:
    """(num_mels, n_fft // 2 + 1) triangular filters, Slaney area normalisation."""
    fft_hz = np.linspace(0.0, rate_hz / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin_hz), _hz_to_mel(fmax_hz), num_mels + 2))
    lower = (fft_hz[None] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - fft_hz[None]) / (edges[2:] - edges[1:-1])[:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


def num_mel_frames(num_samples: int, spec: LatentSpec) -> int:
    """Mel frames for ``num_samples``: one per hop, rounded up to a multiple of the audio VAE's
    time stride so the latent length is exact."""
    frames = max(1, math.ceil(num_samples / spec.audio_mel_hop))
    return math.ceil(frames / spec.audio_time_stride) * spec.audio_time_stride


def log_mel(waveform: torch.Tensor, spec: LatentSpec) -> torch.Tensor:
    """16 kHz mono float ``(B, S)`` -> log-magnitude mel ``(B, A, audio_mel_bins)``,
    ``A = num_mel_frames(S)``; the waveform is zero-padded to ``A * hop`` samples."""
    if waveform.ndim != 2:
        raise ValueError(f"waveform must be (B, S), got {tuple(waveform.shape)}")
    frames = num_mel_frames(waveform.shape[1], spec)
    hop = spec.audio_mel_hop
    x = torch.nn.functional.pad(waveform.float(), (0, frames * hop - waveform.shape[1]))
    window = torch.hann_window(MEL_N_FFT, device=x.device)
    stft = torch.stft(x, MEL_N_FFT, hop, MEL_N_FFT, window, center=True, pad_mode="reflect", return_complex=True)
    fb = torch.from_numpy(_filterbank(spec)).to(x.device)
    mel = fb @ stft.abs()[..., :frames]  # (B, mels, A)
    return torch.log(mel.clamp(min=MEL_LOG_FLOOR)).transpose(1, 2)


def _filterbank(spec: LatentSpec) -> np.ndarray:
    return mel_filterbank(spec.audio_rate_hz, MEL_N_FFT, spec.audio_mel_bins, MEL_FMIN_HZ, MEL_FMAX_HZ)


def griffin_lim(mel: torch.Tensor, spec: LatentSpec, num_iters: int = 32, seed: int = 0) -> torch.Tensor:
    """Log-mel ``(B, A, F)`` -> waveform ``(B, A * hop)`` by Griffin-Lim on the filterbank's
    pseudo-inverse. A fallback for sampling without the HiFi-GAN vocoder."""
    fb = torch.from_numpy(np.linalg.pinv(_filterbank(spec))).to(mel.device)  # (bins, mels)
    magnitude = (fb @ mel.float().exp().transpose(1, 2)).clamp(min=0.0)  # (B, bins, A)
    hop, length = spec.audio_mel_hop, mel.shape[1] * spec.audio_mel_hop
    window = torch.hann_window(MEL_N_FFT, device=mel.device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    phase = torch.exp(2j * math.pi * torch.rand(magnitude.shape, generator=gen)).to(mel.device)
    magnitude = torch.cat([magnitude, magnitude[..., -1:]], dim=-1)  # center=True gives A + 1 frames
    phase = torch.cat([phase, phase[..., -1:]], dim=-1)
    for _ in range(num_iters):
        wave = torch.istft(magnitude * phase, MEL_N_FFT, hop, MEL_N_FFT, window, center=True, length=length)
        spec_c = torch.stft(wave, MEL_N_FFT, hop, MEL_N_FFT, window, center=True, return_complex=True)
        phase = torch.exp(1j * torch.angle(spec_c))
    return torch.istft(magnitude * phase, MEL_N_FFT, hop, MEL_N_FFT, window, center=True, length=length)


class TinyRandomAudioVAE(nn.Module):
    """Random patchify conv encoder / decoder with the spec's strides: log-mel ``(B, A, F)`` ->
    ``(B, audio_channels, A / ta, F / fa)`` and back. Vocoding is Griffin-Lim. Not a trained VAE."""

    def __init__(self, spec: LatentSpec, seed: int = TINY_SEED + 3, hidden: int = 16) -> None:
        super().__init__()
        self.spec, self.channels = spec, spec.audio_channels
        kernel = (spec.audio_time_stride, spec.audio_freq_stride)
        self.encoder = _seeded(seed, lambda: nn.Sequential(
            nn.Conv2d(1, hidden, kernel, stride=kernel), nn.SiLU(), nn.Conv2d(hidden, spec.audio_channels, 1)))
        self.decoder = _seeded(seed + 100, lambda: nn.Sequential(
            nn.Conv2d(spec.audio_channels, hidden, 1), nn.SiLU(), nn.ConvTranspose2d(hidden, 1, kernel, stride=kernel)))  # fmt: skip

    def latent_shape(self, num_samples: int) -> tuple[int, int, int]:
        return _audio_latent_shape(num_samples, self.spec)

    @torch.inference_mode()
    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        _check_mel(mel, self.spec)
        return self.encoder(mel.float().to(_device(self.encoder))[:, None])

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents.to(_device(self.decoder)))[:, 0]

    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        return griffin_lim(mel, self.spec)


def _audio_latent_shape(num_samples: int, spec: LatentSpec) -> tuple[int, int, int]:
    frames = num_mel_frames(num_samples, spec)
    return (spec.audio_channels, frames // spec.audio_time_stride, spec.audio_mel_bins // spec.audio_freq_stride)


def _check_mel(mel: torch.Tensor, spec: LatentSpec) -> None:
    if mel.ndim != 3 or mel.shape[2] != spec.audio_mel_bins or mel.shape[1] % spec.audio_time_stride:
        raise ValueError(
            f"mel must be (B, A, {spec.audio_mel_bins}) with A a multiple of {spec.audio_time_stride}, got {tuple(mel.shape)}"
        )


class AudioLDM2AudioVAE(nn.Module):
    """AudioLDM2's mel VAE (``diffusers.AutoencoderKL``): the posterior mode times the VAE's
    scaling factor, so stored latents are deterministic; optional HiFi-GAN vocoder."""

    def __init__(self, vae: nn.Module, spec: LatentSpec, vocoder: nn.Module | None = None) -> None:
        super().__init__()
        self.vae, self.spec, self.channels = _freeze(vae), spec, spec.audio_channels
        self.vocoder = _freeze(vocoder) if vocoder is not None else None
        self.scale = float(vae.config.scaling_factor)

    def latent_shape(self, num_samples: int) -> tuple[int, int, int]:
        return _audio_latent_shape(num_samples, self.spec)

    @torch.inference_mode()
    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        _check_mel(mel, self.spec)
        x = mel[:, None].to(self.vae.device, self.vae.dtype)
        return self.vae.encode(x).latent_dist.mode().float() * self.scale

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents.to(self.vae.device, self.vae.dtype) / self.scale).sample[:, 0].float()

    @torch.inference_mode()
    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        if self.vocoder is None:
            return griffin_lim(mel, self.spec)
        return self.vocoder(mel.to(_device(self.vocoder))).float()


def load_audioldm2_audio_vae(
    path: str | os.PathLike | None, spec: LatentSpec, vocoder_path: str | os.PathLike | None = None
) -> AudioLDM2AudioVAE:
    """The VAE from a local AudioLDM2 folder (``vae/`` sub-folder, or the VAE folder itself) and,
    when given, the HiFi-GAN from ``vocoder_path`` (its ``vocoder/`` sub-folder)."""
    folder = _require_path(path, "AudioLDM2 audio VAE", "audio_vae")
    _require_package("diffusers", "AudioLDM2 audio VAE", "pip install diffusers")
    from diffusers import AutoencoderKL

    sub = "vae" if (folder / "vae").is_dir() else None
    vae = AutoencoderKL.from_pretrained(folder, subfolder=sub, local_files_only=True)
    vocoder = None
    if vocoder_path:
        from transformers import SpeechT5HifiGan

        voc = _require_path(vocoder_path, "AudioLDM2 vocoder", "vocoder")
        vocoder = SpeechT5HifiGan.from_pretrained(voc / "vocoder" if (voc / "vocoder").is_dir() else voc, local_files_only=True)
    return AudioLDM2AudioVAE(vae, spec, vocoder)


# ---- the four together -----------------------------------------------------------------------


@dataclasses.dataclass
class Encoders:
    """The frozen encoders of one kind, all sized by ``spec``."""

    text: nn.Module  # DiT text: T5TextEncoder | TinyRandomT5TextEncoder | TinyRandomUMT5TextEncoder
    prior_text: nn.Module | None  # ST-Prior text: ImageBindTextEncoder | TinyRandomPriorTextEncoder; None: no prior
    video: nn.Module  # OpenSoraVideoVAE | TinyRandomVideoVAE | WanVideoVAE (TinyRandomWanVideoVAE)
    audio: nn.Module  # AudioLDM2AudioVAE | TinyRandomAudioVAE
    spec: LatentSpec
    kind: str  # "tiny" | "production"

    def to(self, device: str | torch.device) -> Encoders:
        for module in (self.text, self.prior_text, self.video, self.audio):
            if module is not None:
                module.to(device)
        return self

    def describe(self) -> dict[str, str | None]:
        return {role: None if getattr(self, role) is None else type(getattr(self, role)).__name__
                for role in ("text", "prior_text", "video", "audio")}  # fmt: skip


def build_encoders(kind: str, spec: LatentSpec, paths: Mapping[str, str] | None = None) -> Encoders:
    """``tiny``: random seeded modules (no files). ``production``: local weights from ``paths``
    (keys: t5 or umt5, imagebind, [imagebind_bpe], video_vae, audio_vae, [vocoder]); a missing path
    or package raises at once, nothing is downloaded. The spec picks the text encoder and video VAE,
    and leaves the prior text encoder out when it has no prior text (JavisDiT++)."""
    paths = dict(paths or {})
    unknown = set(paths) - set(PATH_KEYS)
    if unknown:
        raise ValueError(f"unknown encoder path keys {sorted(unknown)}; known: {list(PATH_KEYS)}")
    if kind not in ("tiny", "production"):
        raise ValueError(f"unknown encoders kind {kind!r}; choose 'tiny' or 'production'")
    tiny = kind == "tiny"
    if spec.text_encoder == "umt5":
        text = TinyRandomUMT5TextEncoder(spec) if tiny else load_umt5_text_encoder(paths.get("umt5"), spec)
    else:
        text = TinyRandomT5TextEncoder(spec) if tiny else load_t5_text_encoder(paths.get("t5"), spec)
    prior = None
    if spec.has_prior_text:
        prior = (TinyRandomPriorTextEncoder(spec) if tiny
                 else load_imagebind_text_encoder(paths.get("imagebind"), spec, paths.get("imagebind_bpe")))  # fmt: skip
    if spec.video_vae == "wan":
        video = TinyRandomWanVideoVAE(spec) if tiny else load_wan_video_vae(paths.get("video_vae"), spec)
    else:
        video = TinyRandomVideoVAE(spec) if tiny else load_opensora_video_vae(paths.get("video_vae"), spec)
    audio = TinyRandomAudioVAE(spec) if tiny else load_audioldm2_audio_vae(paths.get("audio_vae"), spec, paths.get("vocoder"))
    return Encoders(text, prior, video, audio, spec, kind)
