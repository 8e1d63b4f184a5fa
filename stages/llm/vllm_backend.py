"""vLLM backend (production, GPU): one offline ``vllm.LLM`` engine over a local checkpoint.

Prompts are rendered with the checkpoint's own chat template (Hugging Face processor or tokenizer
from the same directory), media go in ``multi_modal_data`` and vLLM expands the placeholders:

- video (Qwen2-VL / Qwen2.5-VL): ``(frames, metadata)``, the ``(N, H, W, 3)`` uint8 frames decoded
  once upstream with the metadata dict vLLM itself builds for pre-decoded JPEG frame sequences
  (``fps``, ``total_num_frames``, ``frames_indices``, ``do_sample_frames=False``: no resampling in
  time); the HF processor inside vLLM resizes them (``LLMConfig.video_*_pixels`` override its budget).
- audio (Qwen2-Audio): ``(array, rate_hz)``; vLLM resamples to the feature extractor's rate.
- text (Qwen2.5): the prompt alone.

All requests of a ``generate`` call go to the engine at once (it schedules its own batches).
``json_schema`` becomes guided decoding: ``SamplingParams(structured_outputs=StructuredOutputsParams(json=...))``
on vLLM >= 0.11, ``SamplingParams(guided_decoding=GuidedDecodingParams(json=...))`` before.
``timeout_s`` is not enforced: an offline engine call cannot be interrupted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stages.llm import media
from stages.llm.base import BackendError, Completion, LLMConfig, Request

log = logging.getLogger(__name__)

_LIMIT_MM_PER_PROMPT = {"video": {"video": 1, "image": 0}, "audio": {"audio": 1}, "text": None}


def engine_kwargs(config: LLMConfig, modality: str) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for one annotation model."""
    kwargs: dict[str, Any] = {
        "model": str(config.model_path),
        "dtype": config.dtype,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "tensor_parallel_size": config.tensor_parallel_size,
        "seed": 0,
    }
    if config.max_model_len is not None:
        kwargs["max_model_len"] = config.max_model_len
    if _LIMIT_MM_PER_PROMPT[modality] is not None:
        kwargs["limit_mm_per_prompt"] = _LIMIT_MM_PER_PROMPT[modality]
    return kwargs


def video_item(frames, fps: float | None) -> tuple[Any, dict[str, Any]]:
    frames = media.check_frames(frames)
    fps = fps or media.DEFAULT_VIDEO_FPS
    count = int(frames.shape[0])
    metadata = {
        "fps": float(fps),
        "duration": count / fps,
        "total_num_frames": count,
        "frames_indices": list(range(count)),
        "video_backend": "javis",
        "do_sample_frames": False,  # frames were sampled upstream at `fps`
    }
    return frames, metadata


def sampling_params(request: Request):
    """``vllm.SamplingParams`` for one request, with guided JSON decoding when it has a schema."""
    import vllm

    kwargs: dict[str, Any] = {"max_tokens": request.max_tokens, "temperature": request.temperature, "seed": 0}
    if request.json_schema is not None:
        try:  # vLLM >= 0.11
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(json=request.json_schema)
        except ImportError:  # vLLM 0.6 - 0.10
            from vllm.sampling_params import GuidedDecodingParams

            kwargs["guided_decoding"] = GuidedDecodingParams(json=request.json_schema)
    return vllm.SamplingParams(**kwargs)


class VLLMBackend:
    """``generate(requests) -> completions`` on an offline vLLM engine.

    Inputs: :class:`Request` s (frames for ``modality="video"``, audio for ``"audio"``). Outputs: one
    :class:`Completion` per request, in order. Raises BackendError when the engine fails or aborts
    a request. ``engine`` replaces the ``vllm.LLM`` built from the config (tests pass a fake one)."""

    def __init__(self, config: LLMConfig, modality: str, engine: Any = None):
        if modality not in _LIMIT_MM_PER_PROMPT:
            raise ValueError(f"modality must be one of {tuple(_LIMIT_MM_PER_PROMPT)}, got {modality!r}")
        import transformers

        path = Path(config.model_path)
        self.config, self.modality = config, modality
        self.model_id = path.name
        self.backend_id = f"vllm:{path.name}"
        # the chat template lives with the processor for multimodal checkpoints
        loader = transformers.AutoTokenizer if modality == "text" else transformers.AutoProcessor
        self.renderer = loader.from_pretrained(path, local_files_only=True)
        if engine is None:
            import vllm

            engine = vllm.LLM(**engine_kwargs(config, modality))
            log.info("vLLM engine up: %s", self.backend_id)
        self.engine = engine

    def prompt(self, request: Request) -> dict[str, Any]:
        """The engine input for one request: rendered prompt, media, processor overrides."""
        video = None if self.modality != "video" or request.frames is None else video_item(request.frames, request.fps)
        audio = None if self.modality != "audio" or request.audio is None else (
            media.check_audio(request.audio), request.audio_rate_hz)
        messages = media.chat_messages(request, video=None if video is None else "<clip>",
                                       audio=None if audio is None else "<clip>")
        prompt: dict[str, Any] = {
            "prompt": self.renderer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)}
        if video is not None:
            prompt["multi_modal_data"] = {"video": video}
            budget = {key: value for key, value in (("shortest_edge", self.config.video_min_pixels),
                                                    ("longest_edge", self.config.video_max_pixels)) if value}
            if budget:
                prompt["mm_processor_kwargs"] = {"size": budget}
        if audio is not None:
            prompt["multi_modal_data"] = {"audio": audio}
        return prompt

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        if not requests:
            return []
        prompts = [self.prompt(request) for request in requests]
        params = [sampling_params(request) for request in requests]
        try:
            outputs = self.engine.generate(prompts, params, use_tqdm=False)
        except Exception as error:  # the engine's own errors: not the caller's to judge row by row
            raise BackendError(f"{self.backend_id}: {type(error).__name__}: {error}") from error
        if len(outputs) != len(requests):
            raise BackendError(f"{self.backend_id}: {len(outputs)} outputs for {len(requests)} requests")
        return [self._completion(output) for output in outputs]

    def _completion(self, output) -> Completion:
        choice = output.outputs[0]
        if choice.finish_reason not in ("stop", "length"):
            raise BackendError(f"{self.backend_id}: request {output.request_id} ended with {choice.finish_reason!r}")
        return Completion(
            text=choice.text,
            finish_reason=choice.finish_reason,
            prompt_tokens=len(output.prompt_token_ids) if output.prompt_token_ids is not None else None,
            completion_tokens=len(choice.token_ids),
        )
