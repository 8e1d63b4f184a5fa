"""caption_audio: a detailed caption of each clip's audio (paper D.3.3: Qwen2-Audio).

Input: the shared decode's 16 kHz mono audio only. Deliberately no video caption and no
source metadata in the prompt: the paper found that context makes the audio model hear sounds
the picture suggests but the audio lacks. Qwen2-Audio's feature extractor reads at most 30 s,
so longer clips are captioned on their first ``max_audio_s`` seconds (stated here rather than
left to a silent cut inside the processor).

Output: ``caption_audio_text``, ``caption_audio_prompt``, ``caption_audio_backend``.
Reason codes: ``empty_caption``, ``truncated``. A clip without decoded audio, or a backend
error or timeout, is ``failed``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from schemas import Col
from stages.annotation import EMPTY_CAPTION, TRUNCATED, LLMStage, caption_text, check_llm_step
from stages.base import Outcome, passed
from stages.decode import AUDIO_RATE_HZ, DecodedClip, FrameNeed
from stages.llm.base import Completion, LLMConfig, Request


@dataclasses.dataclass(frozen=True)
class CaptionAudioConfig:
    enabled: bool = False  # needs an audio LLM (Qwen2-Audio); off unless configured
    llm: LLMConfig = dataclasses.field(default_factory=LLMConfig)
    max_audio_s: float = 30.0  # Qwen2-Audio's window; longer clips are captioned on their start
    max_tokens: int = 512  # reply budget; a reply that hits it is rejected as truncated

    def __post_init__(self) -> None:
        if self.max_audio_s <= 0:
            raise ValueError("caption_audio.max_audio_s must be > 0")
        check_llm_step("caption_audio", self.enabled, self.llm, self.max_tokens)


class CaptionAudio(LLMStage):
    """See the module docstring. Input: ``decoded`` (audio)."""

    name: ClassVar[str] = "caption_audio"
    modality: ClassVar[str] = "audio"
    prompt_name: ClassVar[str] = "caption_audio"
    reasons: ClassVar[tuple[str, ...]] = (EMPTY_CAPTION, TRUNCATED)
    requires: ClassVar[tuple[str, ...]] = (Col.DECODED,)
    produces: ClassVar[tuple[str, ...]] = (Col.CAPTION_AUDIO_TEXT, Col.CAPTION_AUDIO_PROMPT, Col.CAPTION_AUDIO_BACKEND)
    prompt_column: ClassVar[str] = Col.CAPTION_AUDIO_PROMPT
    backend_column: ClassVar[str] = Col.CAPTION_AUDIO_BACKEND

    @staticmethod
    def frame_need(config: CaptionAudioConfig) -> FrameNeed | None:
        return None

    @staticmethod
    def needs_audio(config: CaptionAudioConfig) -> bool:
        return True

    def request(self, row: dict[str, Any]) -> Request:
        audio = DecodedClip.from_row(row).audio
        if audio is None or len(audio) == 0:
            raise ValueError("the clip has no decoded audio: scene_cut's pack plan lacks CaptionAudio.needs_audio")
        audio = np.ascontiguousarray(audio[: int(self.config.max_audio_s * AUDIO_RATE_HZ)], dtype=np.float32)
        rendered = self.prompt.render()
        return Request(
            text=rendered.user,
            system=rendered.system,
            audio=audio,
            audio_rate_hz=AUDIO_RATE_HZ,
            max_tokens=self.config.max_tokens,
        )

    def judge(self, row: dict[str, Any], completion: Completion) -> Outcome:
        return passed(**{Col.CAPTION_AUDIO_TEXT: caption_text(completion)}, **self.provenance())
