"""The one interface every LLM backend implements, and the errors it may raise.

A :class:`Request` is one chat turn for one clip: a system prompt, a user text, and optionally
the clip's video frames (RGB uint8, already decoded once by the ``decode`` stage) or its audio
(float32 mono). ``json_schema``, when set, asks for structured output: a backend that can
constrain decoding to the schema (vLLM guided decoding, an OpenAI-compatible ``response_format``)
does so; one that cannot still receives the schema in the prompt text, and the caller validates
the reply either way, so a model that ignores the schema is caught, never trusted.

``generate`` is batched: one call, many requests, one :class:`Completion` per request in order.
A per-request problem the caller can judge (empty text, truncated output) is reported in the
completion; a problem with the backend itself raises:

- :class:`BackendTimeout`: the backend did not answer in time. Retriable: the rows are recorded
  as ``failed`` and retried by the next run.
- :class:`BackendError`: anything else the backend reports (HTTP 5xx, engine crash).
- :class:`MissingWeights`: a configured local model path does not exist. Raised at
  construction, so a run fails at start instead of on the first clip.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class BackendError(RuntimeError):
    """The backend failed to answer (not the model's fault)."""


class BackendTimeout(BackendError):
    """The backend did not answer within its timeout; retriable on the next run."""


class MissingWeights(FileNotFoundError):
    """A configured local model path does not exist (weights are never downloaded)."""


@dataclasses.dataclass(frozen=True)
class Request:
    text: str  # the user turn, rendered from a prompt template
    system: str | None = None
    frames: np.ndarray | None = None  # (N, H, W, 3) uint8 RGB video frames, in time order
    fps: float | None = None  # the rate the frames were sampled at (frames per second of clip time)
    audio: np.ndarray | None = None  # (S,) float32 mono in [-1, 1]
    audio_rate_hz: int = 16_000
    json_schema: dict[str, Any] | None = None  # ask for JSON matching this schema
    max_tokens: int = 512
    temperature: float = 0.0  # greedy by default: annotations must be reproducible


@dataclasses.dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" (ended normally) or "length" (hit max_tokens: truncated)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class LLMBackend(Protocol):
    backend_id: str  # e.g. "vllm:qwen2-vl-7b-instruct", recorded in each annotated row
    model_id: str  # the model's name (from its local path or config)

    def generate(self, requests: Sequence[Request]) -> list[Completion]: ...


BACKENDS = ("transformers", "vllm", "openai")


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    """Where one annotation step's model lives and how to call it (a nested config section).

    - ``vllm`` (production): an offline vLLM engine over ``model_path`` on the actor's GPU(s).
    - ``openai``: an OpenAI-compatible HTTP endpoint (e.g. ``vllm serve``) at ``endpoint``;
      ``model`` names the served model; the API key, if any, is read from ``api_key_env``.
    - ``transformers``: Hugging Face classes over ``model_path`` (CPU by default); small models and tests.
    """

    backend: str = "vllm"  # "vllm", "openai" or "transformers" (see above)
    model_path: str | None = None  # local directory with weights (vllm, transformers); never downloaded
    model: str | None = None  # served model name (openai); defaults to the path's last part
    endpoint: str | None = None  # e.g. http://host:8000/v1 (openai)
    api_key_env: str | None = None  # environment variable holding the API key (openai)
    timeout_s: float = 120.0  # per request (openai) / per generate call (others, best effort)
    retries: int = 2  # extra attempts after a timeout or a 5xx (openai)
    retry_backoff_s: float = 1.0  # openai: wait before retry k (k = 0, 1, ...) is retry_backoff_s * 2**k
    video_part: str = "video_url"  # openai: "video_url" (frames as one vLLM video/jpeg data URL) or "images"
    max_batch: int = 8  # requests per generate call
    device: str = "cpu"  # transformers only: "cpu", "cuda", "cuda:N"
    dtype: str = "auto"  # "auto", "float32", "bfloat16", "float16"
    gpu_memory_utilization: float = 0.85  # vllm
    tensor_parallel_size: int = 1  # vllm
    max_model_len: int | None = None  # vllm: cap the context (saves KV-cache memory)
    # per-frame pixel budget of Qwen-VL video input (transformers, vllm); None: the model's own default
    video_min_pixels: int | None = None
    video_max_pixels: int | None = None  # the upper bound of that budget

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"llm.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.timeout_s <= 0 or self.retries < 0 or self.max_batch < 1:
            raise ValueError("llm: timeout_s must be > 0, retries >= 0, max_batch >= 1")
        if self.retry_backoff_s < 0 or self.video_part not in ("video_url", "images"):
            raise ValueError("llm: retry_backoff_s must be >= 0, video_part 'video_url' or 'images'")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("llm.gpu_memory_utilization must be in (0, 1]")
        low, high = self.video_min_pixels, self.video_max_pixels
        if (low is not None and low < 1) or (high is not None and high < max(low or 1, 1)):
            raise ValueError("llm: video_min_pixels and video_max_pixels must be >= 1, min <= max")

    def check_model(self, where: str) -> None:
        """For an enabled step: the model must be named (a disabled step may leave it empty).
        Whether the path exists is checked when the backend is built, on the worker."""
        if self.backend in ("vllm", "transformers") and not self.model_path:
            raise ValueError(f"{where}.model_path must name a local model directory for backend {self.backend!r}")
        if self.backend == "openai" and not self.endpoint:
            raise ValueError(f"{where}.endpoint must be set for backend 'openai' (e.g. http://host:8000/v1)")
