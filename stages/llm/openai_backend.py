"""OpenAI-compatible HTTP backend: ``POST {endpoint}/chat/completions`` (e.g. a ``vllm serve`` server).

Media go inline as base64 data URLs, never as paths or links (the server need not see our disks):

- video, ``LLMConfig.video_part="video_url"`` (default): one ``{"type": "video_url"}`` part whose URL is
  ``data:video/jpeg;base64,<frame 1>,<frame 2>,...``, comma-separated base64 JPEG frames. This is
  vLLM's own format for pre-decoded frames (``vllm serve`` decodes it without re-sampling; start it
  with ``--media-io-kwargs '{"video": {"fps": F}}'`` at the upstream sampling rate where the vLLM
  version reads that, and with ``--limit-mm-per-prompt '{"video": 1}'``). Other servers:
  ``video_part="images"`` sends one ``image_url`` JPEG part per frame, in time order.
- audio: an ``{"type": "input_audio", "input_audio": {"data": <base64 WAV>, "format": "wav"}}`` part
  (vLLM serve accepts this for Qwen2-Audio, as OpenAI's API does).

``json_schema`` is sent as ``response_format={"type": "json_schema", ...}`` (vLLM: guided decoding).
Errors: a timeout is retried ``retries`` times with exponential backoff, then BackendTimeout; an
HTTP 5xx, 429 or a connection error likewise, then BackendError; any other 4xx is our request's
fault and raises BackendError at once. The requests of one batch are sent concurrently
(``max_batch`` threads). Uses only the standard library.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stages.llm import media
from stages.llm.base import BackendError, BackendTimeout, Completion, LLMConfig, Request

log = logging.getLogger(__name__)

MODALITIES = ("video", "audio", "text")


def content_parts(request: Request, modality: str, video_part: str = "video_url") -> list[dict[str, Any]]:
    """The user turn's content parts: media first, then the text."""
    parts: list[dict[str, Any]] = []
    if modality == "video" and request.frames is not None:
        frames = [media.frame_to_jpeg(frame) for frame in media.check_frames(request.frames)]
        if video_part == "video_url":
            url = "data:video/jpeg;base64," + ",".join(media.b64(jpeg) for jpeg in frames)
            parts.append({"type": "video_url", "video_url": {"url": url}})
        else:
            parts += [{"type": "image_url", "image_url": {"url": media.data_url(jpeg, "image/jpeg")}} for jpeg in frames]
    if modality == "audio" and request.audio is not None:
        wav = media.b64(media.audio_to_wav(request.audio, request.audio_rate_hz))
        parts.append({"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}})
    parts.append({"type": "text", "text": request.text})
    return parts


class OpenAIBackend:
    """``generate(requests) -> completions`` against an OpenAI-compatible chat completions endpoint.

    Inputs: :class:`Request` s. Outputs: one :class:`Completion` per request, in order.
    Raises BackendTimeout / BackendError as described in the module docstring."""

    def __init__(self, config: LLMConfig, modality: str):
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        if not config.endpoint:
            raise ValueError("llm.endpoint must be set for backend 'openai' (e.g. http://host:8000/v1)")
        model = config.model or (Path(config.model_path).name if config.model_path else None)
        if not model:
            raise ValueError("llm.model (the served model name) or llm.model_path must be set for backend 'openai'")
        self.api_key = None
        if config.api_key_env:
            self.api_key = os.environ.get(config.api_key_env)
            if not self.api_key:
                raise ValueError(f"llm.api_key_env names {config.api_key_env}, which is not set")
        self.config, self.modality = config, modality
        self.url = config.endpoint.rstrip("/") + "/chat/completions"
        self.model_id = model
        self.backend_id = f"openai:{model}"

    def payload(self, request: Request) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
        messages.append({"role": "user", "content": content_parts(request, self.modality, self.config.video_part)})
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": 0,
        }
        if request.json_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "annotation", "schema": request.json_schema, "strict": True}}
        return body

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        if len(requests) <= 1:
            return [self._call(request) for request in requests]
        with ThreadPoolExecutor(max_workers=min(self.config.max_batch, len(requests))) as pool:
            return list(pool.map(self._call, requests))  # re-raises the first failure, in request order

    def _call(self, request: Request) -> Completion:
        data = json.dumps(self.payload(request)).encode()
        error: BackendError | None = None
        for attempt in range(self.config.retries + 1):
            if attempt:
                time.sleep(self.config.retry_backoff_s * 2 ** (attempt - 1))
            try:
                return self._parse(self._post(data))
            except (BackendTimeout, _Retriable) as failure:
                error = failure if isinstance(failure, BackendTimeout) else BackendError(str(failure))
                log.warning("%s: attempt %d of %d failed: %s", self.backend_id, attempt + 1,
                            self.config.retries + 1, failure)
        assert error is not None
        raise error

    def _post(self, data: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        http_request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(http_request, timeout=self.config.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as failure:
            detail = failure.read()[:500].decode(errors="replace")
            if failure.code >= 500 or failure.code == 429:
                raise _Retriable(f"{self.backend_id}: HTTP {failure.code}: {detail}") from failure
            raise BackendError(f"{self.backend_id}: HTTP {failure.code}: {detail}") from failure
        except TimeoutError as failure:
            raise BackendTimeout(f"{self.backend_id}: no answer in {self.config.timeout_s} s") from failure
        except urllib.error.URLError as failure:
            if isinstance(failure.reason, TimeoutError):
                raise BackendTimeout(f"{self.backend_id}: no answer in {self.config.timeout_s} s") from failure
            raise _Retriable(f"{self.backend_id}: {failure.reason}") from failure
        except (ConnectionError, json.JSONDecodeError) as failure:  # reset mid-answer, or a garbled body
            raise _Retriable(f"{self.backend_id}: {type(failure).__name__}: {failure}") from failure

    def _parse(self, body: dict[str, Any]) -> Completion:
        try:
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
            finish_reason = choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError) as failure:
            raise BackendError(f"{self.backend_id}: unexpected response {str(body)[:300]}") from failure
        if finish_reason not in ("stop", "length"):
            raise BackendError(f"{self.backend_id}: request ended with finish_reason={finish_reason!r}")
        usage = body.get("usage") or {}
        return Completion(text=text, finish_reason=finish_reason,
                          prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"))


class _Retriable(Exception):
    """A server-side or connection failure worth another attempt (becomes BackendError at the end)."""
