"""Clip media in the shapes the backends send (PIL frames, JPEG/WAV bytes, base64 data URLs), and a
request as chat messages.

Frames arrive decoded once upstream (``(N, H, W, 3)`` uint8 RGB); audio as float32 mono in
[-1, 1]. Nothing here decodes a file again.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

DEFAULT_VIDEO_FPS = 2.0  # Qwen2-VL's own sampling rate, used when a request does not say


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Frames as a C-contiguous ``(N, H, W, 3)`` uint8 array, or ValueError."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8 with N >= 1, got {frames.shape} {frames.dtype}")
    return np.ascontiguousarray(frames)


def check_audio(audio: np.ndarray) -> np.ndarray:
    """Audio as a 1-D float32 array, or ValueError."""
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0 or not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"audio must be a non-empty 1-D float array, got {audio.shape} {audio.dtype}")
    return audio.astype(np.float32, copy=False)


def frames_to_pil(frames: np.ndarray) -> list:
    """One RGB ``PIL.Image`` per frame (what qwen-vl-utils takes for a pre-decoded video)."""
    from PIL import Image

    return [Image.fromarray(frame) for frame in check_frames(frames)]


def frame_to_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def audio_to_wav(audio: np.ndarray, rate_hz: int) -> bytes:
    """16-bit PCM WAV bytes (the format OpenAI-style ``input_audio`` parts accept)."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(check_audio(audio), -1.0, 1.0), rate_hz, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def b64(payload: bytes) -> str:
    return base64.b64encode(payload).decode("ascii")


def data_url(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64,{b64(payload)}"


def resample(audio: np.ndarray, rate_hz: int, target_hz: int) -> np.ndarray:
    """Polyphase resampling to ``target_hz`` (the Qwen2-Audio feature extractor wants 16 kHz)."""
    audio = check_audio(audio)
    if rate_hz == target_hz:
        return audio
    from math import gcd

    from scipy.signal import resample_poly

    divisor = gcd(rate_hz, target_hz)
    return resample_poly(audio, target_hz // divisor, rate_hz // divisor).astype(np.float32)


def chat_messages(request, video: Any = None, audio: Any = None, **video_fields: Any) -> list[dict[str, Any]]:
    """A :class:`~stages.llm.base.Request` as chat messages in the Hugging Face content format
    (what chat templates and qwen-vl-utils read): an optional system turn, then one user turn with
    the video part (``video`` plus ``video_fields`` such as ``sample_fps``), the audio part, then the text.
    Chat templates only need the part's type to place the media placeholder."""
    content: list[dict[str, Any]] = []
    if video is not None:
        content.append({"type": "video", "video": video, **video_fields})
    if audio is not None:
        content.append({"type": "audio", "audio": audio})
    content.append({"type": "text", "text": request.text})
    system = [{"role": "system", "content": request.system}] if request.system else []
    return system + [{"role": "user", "content": content}]
