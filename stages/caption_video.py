"""caption_video: a detailed caption of each clip's frames (paper D.3.3: Qwen2-VL).

Input: the shared decode's frames for this step (``FrameNeed`` named ``caption_video``: ``fps``
frames per second, longer side at most ``max_side``), subsampled evenly to at most
``max_frames``; the rate the model is told is the rate of the frames it gets. The source's
title and search keyword go into the prompt as context, as the paper does with YouTube
metadata, but rendered as quoted, length-capped, untrusted data (see ``prompts/``): a title
is written by whoever uploaded the video.

Output: ``caption_video_text``, ``caption_video_prompt`` (prompt id), ``caption_video_backend``.
Reason codes: ``empty_caption``, ``truncated``. A clip without decoded frames, or a backend
error or timeout, is ``failed`` (retried next run).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from prompts import untrusted
from schemas import Col
from stages.annotation import EMPTY_CAPTION, TRUNCATED, LLMStage, caption_text, check_llm_step, strip_search_prefix
from stages.base import Outcome, passed
from stages.decode import DecodedClip, FrameNeed
from stages.llm.base import Completion, LLMConfig, Request


@dataclasses.dataclass(frozen=True)
class CaptionVideoConfig:
    enabled: bool = False  # needs a video LLM (Qwen2-VL family); off unless configured
    llm: LLMConfig = dataclasses.field(default_factory=LLMConfig)
    fps: float = 1.0  # frames decoded per second of clip
    max_frames: int = 32  # evenly subsampled down to this (a 60 s clip at 1 fps gives 60); even for Qwen2-VL
    max_side: int = 448  # longer side of each frame, pixels (Qwen2-VL works in 28 px patches)
    use_metadata: bool = True  # put the source title and search keyword in the prompt (paper D.3.3)
    max_metadata_chars: int = 200  # per metadata value; longer titles are cut
    max_tokens: int = 512  # reply budget; a reply that hits it is rejected as truncated

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.max_frames < 2 or self.max_side < 28:
            raise ValueError("caption_video: fps must be > 0, max_frames >= 2, max_side >= 28")
        if self.max_metadata_chars < 1:
            raise ValueError("caption_video.max_metadata_chars must be >= 1")
        check_llm_step("caption_video", self.enabled, self.llm, self.max_tokens)


def subsample(frames: np.ndarray, duration_s: float, max_frames: int, fps: float) -> tuple[np.ndarray, float]:
    """At most ``max_frames`` frames spread evenly over the clip, and their rate in frames per
    second of clip time."""
    num = len(frames)
    if num <= max_frames:
        return frames, fps
    keep = np.unique(np.linspace(0, num - 1, max_frames).round().astype(int))
    return frames[keep], len(keep) / max(duration_s, 1e-3)


class CaptionVideo(LLMStage):
    """See the module docstring. Input: ``decoded``, ``src_title``, ``src_query``."""

    name: ClassVar[str] = "caption_video"
    modality: ClassVar[str] = "video"
    prompt_name: ClassVar[str] = "caption_video"
    reasons: ClassVar[tuple[str, ...]] = (EMPTY_CAPTION, TRUNCATED)
    requires: ClassVar[tuple[str, ...]] = (Col.DECODED, Col.SRC_TITLE, Col.SRC_QUERY)
    produces: ClassVar[tuple[str, ...]] = (Col.CAPTION_VIDEO_TEXT, Col.CAPTION_VIDEO_PROMPT, Col.CAPTION_VIDEO_BACKEND)
    prompt_column: ClassVar[str] = Col.CAPTION_VIDEO_PROMPT
    backend_column: ClassVar[str] = Col.CAPTION_VIDEO_BACKEND

    @staticmethod
    def frame_need(config: CaptionVideoConfig) -> FrameNeed | None:
        return FrameNeed(name=CaptionVideo.name, fps=config.fps, max_side=config.max_side) if config.enabled else None

    @staticmethod
    def needs_audio(config: CaptionVideoConfig) -> bool:
        return False

    def metadata(self, row: dict[str, Any]) -> dict[str, str]:
        """The prompt's context values: quoted, capped, or ``null`` when absent or disabled."""
        if not self.config.use_metadata:
            return {"title": "null", "keyword": "null"}
        cap = self.config.max_metadata_chars
        return {
            "title": untrusted(row.get(Col.SRC_TITLE), cap),
            "keyword": untrusted(strip_search_prefix(row.get(Col.SRC_QUERY)), cap),
        }

    def request(self, row: dict[str, Any]) -> Request:
        decoded = DecodedClip.from_row(row)
        frames = decoded.frames.get(self.name)
        if frames is None or len(frames) == 0:
            raise ValueError(
                "the analysis pack has no 'caption_video' frames: scene_cut's pack plan lacks CaptionVideo.frame_need"
            )
        frames, fps = subsample(frames, decoded.duration_s, self.config.max_frames, self.config.fps)
        rendered = self.prompt.render(**self.metadata(row))
        return Request(
            text=rendered.user,
            system=rendered.system,
            frames=np.ascontiguousarray(frames),
            fps=fps,
            max_tokens=self.config.max_tokens,
        )

    def judge(self, row: dict[str, Any], completion: Completion) -> Outcome:
        return passed(**{Col.CAPTION_VIDEO_TEXT: caption_text(completion)}, **self.provenance())
