"""caption_merge: one text prompt from the video and audio captions, with a conflict check
(paper D.3.3: Qwen2.5-72B-Instruct).

The text model reasons over both captions, flags a logical conflict (a dog on screen, only an
engine on the audio) and lists sounds whose source neither caption identifies, then writes the
merged caption: the clip's text condition for training. It answers in JSON
(:func:`merge_schema`); the schema is in the prompt and is passed for constrained decoding.

Output: ``caption_merge_text``, ``caption_merge_conflict``, ``caption_merge_conflict_detail``,
``caption_merge_unknown_source`` (flag), ``caption_merge_unknown_sources`` (what they are),
``caption_merge_prompt``, ``caption_merge_backend``; all kept on rejected rows too. The two
flags are stored metric columns; a flag is a verdict, not a score with a threshold, so the
rejection itself carries no metric/threshold, only the model's explanation as its detail.

Reason codes: ``conflict`` (the paper removes these; ``reject_conflict``), ``unknown_source``
(only with ``reject_unknown_source``: the paper keeps such clips), ``empty_caption``,
``unparsable``, ``truncated``. A backend error or timeout makes the row ``failed``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from prompts import json_block, quoted
from schemas import Col
from stages.annotation import (
    EMPTY_CAPTION,
    TRUNCATED,
    UNPARSABLE,
    LLMStage,
    check_llm_step,
    parse_json_reply,
)
from stages.base import Outcome, passed, rejected
from stages.llm.base import Completion, LLMConfig, Request

CONFLICT = "conflict"
UNKNOWN_SOURCE = "unknown_source"


def merge_schema() -> dict[str, Any]:
    """The merge answer. Reasoning fields come first: constrained decoding writes fields in
    schema order, so the model judges the captions before it writes the merged one."""
    return {
        "type": "object",
        "properties": {
            "conflict_detail": {"type": "string"},
            "conflict": {"type": "boolean"},
            "unknown_sources": {"type": "array", "items": {"type": "string"}},
            "caption": {"type": "string"},
        },
        "required": ["conflict_detail", "conflict", "unknown_sources", "caption"],
        "additionalProperties": False,
    }


@dataclasses.dataclass(frozen=True)
class CaptionMergeConfig:
    enabled: bool = False  # needs a text LLM (Qwen2.5-Instruct); off unless configured
    llm: LLMConfig = dataclasses.field(default_factory=LLMConfig)
    reject_conflict: bool = True  # the paper removes captions with logical conflicts
    reject_unknown_source: bool = False  # the paper flags unknown sound sources but keeps the clips
    max_caption_chars: int = 4000  # per input caption, in the prompt
    max_tokens: int = 768  # reasoning + merged caption

    def __post_init__(self) -> None:
        if self.max_caption_chars < 1:
            raise ValueError("caption_merge.max_caption_chars must be >= 1")
        check_llm_step("caption_merge", self.enabled, self.llm, self.max_tokens)


def merged_columns(answer: dict[str, Any]) -> dict[str, Any]:
    """Row columns from a schema-checked answer: text stripped, unknown sources cleaned and
    de-duplicated (order kept), the flag derived from the list."""
    sources = list(dict.fromkeys(s.strip() for s in answer["unknown_sources"] if s.strip()))
    return {
        Col.CAPTION_MERGE_TEXT: answer["caption"].strip(),
        Col.CAPTION_MERGE_CONFLICT: answer["conflict"],
        Col.CAPTION_MERGE_CONFLICT_DETAIL: answer["conflict_detail"].strip(),
        Col.CAPTION_MERGE_UNKNOWN_SOURCE: bool(sources),
        Col.CAPTION_MERGE_UNKNOWN_SOURCES: sources,
    }


class CaptionMerge(LLMStage):
    """See the module docstring. Input: ``caption_video_text``, ``caption_audio_text``."""

    name: ClassVar[str] = "caption_merge"
    modality: ClassVar[str] = "text"
    prompt_name: ClassVar[str] = "caption_merge"
    reasons: ClassVar[tuple[str, ...]] = (CONFLICT, UNKNOWN_SOURCE, EMPTY_CAPTION, UNPARSABLE, TRUNCATED)
    requires: ClassVar[tuple[str, ...]] = (Col.CAPTION_VIDEO_TEXT, Col.CAPTION_AUDIO_TEXT)
    produces: ClassVar[tuple[str, ...]] = (
        Col.CAPTION_MERGE_TEXT,
        Col.CAPTION_MERGE_CONFLICT,
        Col.CAPTION_MERGE_CONFLICT_DETAIL,
        Col.CAPTION_MERGE_UNKNOWN_SOURCE,
        Col.CAPTION_MERGE_UNKNOWN_SOURCES,
        Col.CAPTION_MERGE_PROMPT,
        Col.CAPTION_MERGE_BACKEND,
    )
    prompt_column: ClassVar[str] = Col.CAPTION_MERGE_PROMPT
    backend_column: ClassVar[str] = Col.CAPTION_MERGE_BACKEND

    def request(self, row: dict[str, Any]) -> Request:
        video, audio = row.get(Col.CAPTION_VIDEO_TEXT), row.get(Col.CAPTION_AUDIO_TEXT)
        if not video or not audio:
            raise ValueError("caption_merge needs both captions: run caption_video and caption_audio first")
        schema = merge_schema()
        cap = self.config.max_caption_chars
        rendered = self.prompt.render(
            video_caption=quoted(video, cap), audio_caption=quoted(audio, cap), json_schema=json_block(schema)
        )
        return Request(
            text=rendered.user, system=rendered.system, json_schema=schema, max_tokens=self.config.max_tokens
        )

    def judge(self, row: dict[str, Any], completion: Completion) -> Outcome:
        columns = {**merged_columns(parse_json_reply(completion, merge_schema())), **self.provenance()}
        if not columns[Col.CAPTION_MERGE_TEXT]:
            return rejected(EMPTY_CAPTION, detail="the merged caption is empty", **columns)
        if columns[Col.CAPTION_MERGE_CONFLICT] and self.config.reject_conflict:
            detail = columns[Col.CAPTION_MERGE_CONFLICT_DETAIL] or "the model flagged a conflict without a reason"
            return rejected(CONFLICT, detail=detail, **columns)
        sources = columns[Col.CAPTION_MERGE_UNKNOWN_SOURCES]
        if sources and self.config.reject_unknown_source:
            detail = "sounds without a known source: " + "; ".join(sources)
            return rejected(UNKNOWN_SOURCE, detail=detail, **columns)
        return passed(**columns)
