"""Hugging Face transformers backend: Qwen2-VL / Qwen2.5-VL (video), Qwen2-Audio (audio) and a Qwen2.5
text model, loaded from a local directory only. CPU by default; for small models and tests.

Requests are batched with left padding, grouped by (max_tokens, temperature) so one ``generate``
call serves each group exactly. Greedy when ``temperature == 0``. A reply that ends with an
end-of-sequence token finishes ``"stop"``; one that used all ``max_tokens`` finishes ``"length"``.
``LLMConfig.timeout_s`` caps each ``generate`` call (transformers' ``max_time``): a reply cut by
the clock raises :class:`BackendTimeout`. ``json_schema`` cannot constrain decoding here: the
caller's prompt carries the schema and the caller validates the reply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from stages.llm import media
from stages.llm.base import BackendTimeout, Completion, LLMConfig, Request

log = logging.getLogger(__name__)

MODALITIES = ("video", "audio", "text")


def _torch_dtype(name: str, device: str):
    import torch

    if name == "auto":  # the checkpoint's dtype on a GPU; float32 on CPU, where bf16 matmuls are slow
        return "auto" if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class TransformersBackend:
    """``generate(requests) -> completions`` over a local Hugging Face checkpoint.

    Inputs: :class:`Request` s (frames for ``modality="video"``, audio for ``"audio"``, text only for
    ``"text"``). Outputs: one :class:`Completion` per request, in order. Raises BackendTimeout."""

    def __init__(self, config: LLMConfig, modality: str):
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        import torch
        import transformers

        path = Path(config.model_path)
        # qwen-vl-utils 0.0.14 pre-resizes each frame on a grid of 2 x 28 px before the video resize:
        # a smaller per-frame cap rounds a frame down to zero pixels
        if modality == "video" and config.video_max_pixels is not None and config.video_max_pixels < 56 * 56:
            raise ValueError(f"llm.video_max_pixels must be >= {56 * 56} for the transformers backend")
        self.config, self.modality = config, modality
        self.model_id = path.name
        self.backend_id = f"transformers:{path.name}"
        dtype = _torch_dtype(config.dtype, config.device)
        if modality == "text":
            self.processor = None
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            model_class = transformers.AutoModelForCausalLM
        else:
            self.processor = transformers.AutoProcessor.from_pretrained(path, local_files_only=True)
            self.tokenizer = self.processor.tokenizer
            model_class = (transformers.AutoModelForImageTextToText if modality == "video"
                           else transformers.Qwen2AudioForConditionalGeneration)
        self.tokenizer.padding_side = "left"
        self.model = model_class.from_pretrained(path, dtype=dtype, local_files_only=True).to(config.device).eval()
        self.eos_ids = self._eos_ids()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        self._torch = torch
        log.info("loaded %s (%s) on %s", self.backend_id, model_class.__name__, config.device)

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [] if ids is None else [ids])
        for token in (self.tokenizer.eos_token, "<|im_end|>", "<|endoftext|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token) if token else None
            if token_id is not None and token_id != self.tokenizer.unk_token_id:
                ids.add(token_id)
        return ids

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        groups: dict[tuple[int, float], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault((request.max_tokens, request.temperature), []).append(index)
        completions: list[Completion | None] = [None] * len(requests)
        step = self.config.max_batch
        for (max_tokens, temperature), indices in groups.items():
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                for index, completion in zip(chunk, self._generate([requests[i] for i in chunk], max_tokens, temperature)):
                    completions[index] = completion
        return completions  # type: ignore[return-value]

    def model_inputs(self, requests: Sequence[Request]):
        """The processor output (token ids, attention mask, pixel or audio features) for one batch."""
        if self.modality == "text":
            prompts = [self.tokenizer.apply_chat_template(media.chat_messages(r), tokenize=False,
                                                          add_generation_prompt=True) for r in requests]
            return self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        if self.modality == "video":
            return self._video_inputs(requests)
        return self._audio_inputs(requests)

    def _video_inputs(self, requests: Sequence[Request]):
        from qwen_vl_utils import process_vision_info

        budget = {key: value for key, value in (("min_pixels", self.config.video_min_pixels),
                                                ("max_pixels", self.config.video_max_pixels)) if value}
        conversations = [media.chat_messages(r, video=None if r.frames is None else media.frames_to_pil(r.frames),
                                             sample_fps=r.fps or media.DEFAULT_VIDEO_FPS, **budget) for r in requests]
        prompts = [self.processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                   for c in conversations]
        patch_size = getattr(self.processor.image_processor, "patch_size", 14)
        # frames were decoded once upstream: qwen-vl-utils only resizes them to the patch grid
        _, videos, video_kwargs = process_vision_info(conversations, return_video_kwargs=True,
                                                      return_video_metadata=True, image_patch_size=patch_size)
        if not videos:
            return self.processor(text=prompts, return_tensors="pt", padding=True)
        frames, metadata = zip(*videos)
        if hasattr(self.processor.video_processor, "cap_pixels_per_frame"):  # transformers >= 5.2x: as qwen-vl-utils
            video_kwargs["cap_pixels_per_frame"] = True
        if budget:  # the processor resizes again: give it the same budget
            size = dict(self.processor.video_processor.size)
            size.update({"shortest_edge": budget.get("min_pixels", size.get("shortest_edge")),
                         "longest_edge": budget.get("max_pixels", size.get("longest_edge"))})
            video_kwargs["size"] = size
        return self.processor(text=prompts, videos=list(frames), video_metadata=list(metadata), return_tensors="pt",
                              padding=True, **video_kwargs)

    def _audio_inputs(self, requests: Sequence[Request]):
        rate = self.processor.feature_extractor.sampling_rate
        prompts = [self.processor.apply_chat_template(media.chat_messages(r, audio=None if r.audio is None else "<clip>"), tokenize=False,
                                                      add_generation_prompt=True) for r in requests]
        audios = [media.resample(r.audio, r.audio_rate_hz, rate) for r in requests if r.audio is not None]
        return self.processor(text=prompts, audio=audios or None, sampling_rate=rate, return_tensors="pt", padding=True)

    def _generate(self, requests: Sequence[Request], max_tokens: int, temperature: float) -> list[Completion]:
        inputs = self.model_inputs(requests).to(self.config.device)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        started = time.monotonic()
        with self._torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=max_tokens, max_time=self.config.timeout_s,
                                         eos_token_id=sorted(self.eos_ids), pad_token_id=self.pad_id, **sampling)
        elapsed_s = time.monotonic() - started
        prompt_len = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        completions = []
        for row, num_prompt in zip(output[:, prompt_len:].tolist(), prompt_tokens):
            end = next((i for i, token in enumerate(row) if token in self.eos_ids), None)
            if end is None and len(row) < max_tokens:
                raise BackendTimeout(f"{self.backend_id}: generate stopped by timeout_s={self.config.timeout_s} "
                                     f"after {elapsed_s:.1f} s ({len(row)} of {max_tokens} tokens)")
            tokens = row if end is None else row[: end + 1]
            completions.append(Completion(
                text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                finish_reason="length" if end is None else "stop",
                prompt_tokens=int(num_prompt),
                completion_tokens=len(tokens),
            ))
        return completions
