"""Easy negatives (paper appendix C.2.4 (1)): audio generated from the clip's caption alone.

A text-to-audio model hears only the clip's text (its merged caption, else its audio caption,
else its source's title) and never sees the video, so the generated sound fits the words but
not the picture's timing. ``javis augment`` pairs it with the clip's own frames as the ``easy``
family. ``javis sync-eval`` uses these as its caption-only negatives (paper D.4.2).

Production backend: AudioLDM2 through diffusers' ``AudioLDM2Pipeline``, loaded from a local
folder (``augment.easy.model_path``; nothing is downloaded). Tests build a tiny random pipeline
of the same classes. Generation is seeded by a ``torch.Generator`` on the CPU from the family
seed (run seed, clip id, ``easy``), so a rerun gives the same audio on the same machine.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from augment.context import ClipContext, MissingInput
from schemas import Col

EASY = "easy"  # the family name in negatives/ (not one of context.FAMILIES: it needs weights)
OPERATION = "text_to_audio"
PROMPT_COLUMNS = (Col.CAPTION_MERGE_TEXT, Col.CAPTION_AUDIO_TEXT, Col.SRC_TITLE)  # first non-empty wins


@dataclasses.dataclass(frozen=True)
class EasyConfig:
    enabled: bool = False  # off by default: it needs AudioLDM2 weights on local disk
    model_path: str = ""  # a local AudioLDM2Pipeline folder (save_pretrained layout)
    device: str = "cpu"  # "cuda" on a GPU worker; the noise is drawn on the CPU either way
    num_inference_steps: int = 200  # diffusers' AudioLDM2 default
    guidance_scale: float = 3.5  # diffusers' AudioLDM2 default
    match_loudness: bool = True  # scale to the clip's RMS: loudness alone must not give it away

    def __post_init__(self) -> None:
        if self.enabled and not self.model_path:
            raise ValueError(
                "augment.easy.enabled needs augment.easy.model_path: a local AudioLDM2 folder "
                "(--set easy.model_path=DIR)"
            )
        if self.num_inference_steps < 1 or self.guidance_scale < 0:
            raise ValueError("augment.easy.num_inference_steps >= 1 and augment.easy.guidance_scale >= 0")


def caption_prompt(row: dict[str, Any]) -> tuple[str, str]:
    """(prompt, the column it came from): the clip's merged caption, audio caption, or title."""
    for column in PROMPT_COLUMNS:
        text = row.get(column)
        if isinstance(text, str) and text.strip():
            return text.strip(), column
    raise MissingInput(f"no text to prompt from: {', '.join(PROMPT_COLUMNS)} are all empty")


def folder_sha256(path: str | Path) -> str:
    """One hash of every file under ``path`` (relative names and contents, in sorted order)."""
    root, digest = Path(path), hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        with file.open("rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def fit_audio(audio: np.ndarray, rate_hz: int, ctx: ClipContext, match_loudness: bool) -> tuple[np.ndarray, float]:
    """Generated mono audio -> the clip's rate, channel count and number of samples (and, when
    asked, its RMS). Returns (float32 (C, S), the gain applied)."""
    from scipy.signal import resample_poly

    mono = np.asarray(audio, dtype=np.float64).reshape(-1)
    if rate_hz != ctx.rate_hz:
        divisor = np.gcd(int(rate_hz), int(ctx.rate_hz))
        mono = resample_poly(mono, ctx.rate_hz // divisor, rate_hz // divisor)
    mono = np.pad(mono[: ctx.num_samples], (0, max(0, ctx.num_samples - mono.size)))  # same duration
    gain = 1.0
    rms, target = float(np.sqrt(np.mean(mono**2))), float(np.sqrt(np.mean(ctx.audio.astype(np.float64) ** 2)))
    if match_loudness and rms > 0 and target > 0:
        gain = target / rms
    out = np.clip(mono * gain, -1, 1).astype(np.float32)
    return np.repeat(out[None], ctx.audio.shape[0], axis=0), gain


class AudioLDM2TextToAudio:
    """The :class:`augment.negatives.TextToAudio` backend: AudioLDM2 from a local folder.

    Input: a prompt, a duration and a seed. Output: float32 mono ``(S,)`` at ``rate_hz`` (the
    vocoder's rate). ``version`` names the diffusers release and the folder's hash."""

    name = "audioldm2"

    def __init__(self, config: EasyConfig) -> None:
        import diffusers
        from diffusers import AudioLDM2Pipeline

        path = Path(config.model_path)
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(
                f"augment.easy.model_path {path} is not an AudioLDM2 pipeline folder (no model_index.json)"
            )
        self.config = config
        self.pipeline = AudioLDM2Pipeline.from_pretrained(str(path), local_files_only=True).to(config.device)
        self.pipeline.set_progress_bar_config(disable=True)
        self.rate_hz = int(self.pipeline.vocoder.config.sampling_rate)
        self.model_sha256 = folder_sha256(path)
        self.version = f"diffusers-{diffusers.__version__}/audioldm2/sha256:{self.model_sha256[:8]}"

    def generate(self, caption: str, duration_s: float, seed: int) -> np.ndarray:
        import torch

        generator = torch.Generator("cpu").manual_seed(seed)  # CPU noise: the same on any device
        with torch.inference_mode():
            audios = self.pipeline(
                caption,
                audio_length_in_s=duration_s,
                num_inference_steps=self.config.num_inference_steps,
                guidance_scale=self.config.guidance_scale,
                num_waveforms_per_prompt=1,  # >1 would rank by CLAP score; one is enough here
                generator=generator,
                output_type="np",
            ).audios
        return np.asarray(audios[0], dtype=np.float32)


@functools.lru_cache(maxsize=2)
def load_text_to_audio(config: EasyConfig) -> AudioLDM2TextToAudio:
    """The backend, loaded once per worker process (Ray reuses workers across clips)."""
    return AudioLDM2TextToAudio(config)


def easy_negative(
    ctx: ClipContext, row: dict[str, Any], config: EasyConfig, seed: int, backend: Any | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """(audio float32 (C, S) for the clip's frames, the parameters to record). Raises
    ``MissingInput`` when the clip has no text to prompt from."""
    prompt, source = caption_prompt(row)
    backend = backend or load_text_to_audio(config)
    duration_s = ctx.num_frames / ctx.fps  # the clip's duration (its audio is trimmed to it)
    audio, gain = fit_audio(backend.generate(prompt, duration_s, seed), backend.rate_hz, ctx, config.match_loudness)
    params = {
        "backend": backend.name,
        "version": backend.version,
        "model_sha256": backend.model_sha256,
        "prompt": prompt,
        "prompt_source": source,
        "audio_length_s": round(duration_s, 6),
        "num_inference_steps": config.num_inference_steps,
        "guidance_scale": config.guidance_scale,
        "generated_rate_hz": backend.rate_hz,
        "gain": round(gain, 6),
        "seed": seed,
    }
    return audio, params
