"""taxonomy: classify each clip into the JavisBench taxonomy (paper D.2, D.3.3: Qwen2.5).

Text only, as in the paper (the generative models under test only ever see the caption): the
merged caption plus the two single-modality captions, and the taxonomy with every category's
id and definition (``schemas.taxonomy.describe``). The answer is JSON, one key per aspect: a
category id for single-choice aspects, a non-empty list of ids for multi-label ones
(``schemas.taxonomy`` says which and why). The id-restricted schema goes to the prompt and to
constrained decoding; the reply is then read in two steps so the reasons stay distinct:

- shape (keys present, string vs list, no empty list) -> ``unparsable``;
- every id in its aspect, no excluded combination -> else ``off_taxonomy``.

Ids are compared after trimming and lower-casing only; a category *name* or a near-miss is
off-taxonomy, never mapped to a guess. Duplicate ids in a list are dropped.

Output: one column per aspect (``taxonomy_event_scenario`` ...), ``taxonomy_prompt``,
``taxonomy_backend``. Reason codes: ``unparsable``, ``off_taxonomy``, ``truncated``. A backend
error or timeout makes the row ``failed``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from prompts import json_block, quoted
from schemas import Col
from schemas.taxonomy import ASPECTS, TAXONOMY_COLUMNS, answer_schema, describe
from stages.annotation import (
    OFF_TAXONOMY,
    TRUNCATED,
    UNPARSABLE,
    LLMStage,
    ReplyRejected,
    check_llm_step,
    excerpt,
    parse_json_reply,
)
from stages.base import Outcome, passed
from stages.llm.base import Completion, LLMConfig, Request


@dataclasses.dataclass(frozen=True)
class TaxonomyConfig:
    enabled: bool = False  # needs a text LLM (Qwen2.5-Instruct); off unless configured
    llm: LLMConfig = dataclasses.field(default_factory=LLMConfig)
    max_caption_chars: int = 4000  # per caption, in the prompt
    max_tokens: int = 256  # the answer is short JSON

    def __post_init__(self) -> None:
        if self.max_caption_chars < 1:
            raise ValueError("taxonomy.max_caption_chars must be >= 1")
        check_llm_step("taxonomy", self.enabled, self.llm, self.max_tokens)


def _norm(value: str) -> str:
    return value.strip().lower()


def taxonomy_columns(answer: dict[str, Any], reply: str = "") -> dict[str, Any]:
    """Row columns from a shape-checked answer; raises ``off_taxonomy`` naming every bad id."""
    columns: dict[str, Any] = {}
    problems: list[str] = []
    for a in ASPECTS:
        ids = set(a.category_ids)
        if a.multi_label:
            values = list(dict.fromkeys(_norm(v) for v in answer[a.id]))
            problems += [f"{a.id}: {v!r} is not a category id" for v in values if v not in ids]
            problems += [f"{a.id}: {sorted(g)} exclude each other" for g in a.exclusive if g <= set(values)]
            columns[a.column] = values
        else:
            value = _norm(answer[a.id])
            if value not in ids:
                problems.append(f"{a.id}: {value!r} is not a category id")
            columns[a.column] = value
    if problems:
        raise ReplyRejected(OFF_TAXONOMY, "; ".join(problems) + (f"; reply: {excerpt(reply)}" if reply else ""))
    return columns


class Taxonomy(LLMStage):
    """See the module docstring. Input: ``caption_merge_text``, ``caption_video_text``,
    ``caption_audio_text``."""

    name: ClassVar[str] = "taxonomy"
    modality: ClassVar[str] = "text"
    prompt_name: ClassVar[str] = "taxonomy"
    reasons: ClassVar[tuple[str, ...]] = (UNPARSABLE, OFF_TAXONOMY, TRUNCATED)
    requires: ClassVar[tuple[str, ...]] = (Col.CAPTION_MERGE_TEXT, Col.CAPTION_VIDEO_TEXT, Col.CAPTION_AUDIO_TEXT)
    produces: ClassVar[tuple[str, ...]] = (*TAXONOMY_COLUMNS, Col.TAXONOMY_PROMPT, Col.TAXONOMY_BACKEND)
    prompt_column: ClassVar[str] = Col.TAXONOMY_PROMPT
    backend_column: ClassVar[str] = Col.TAXONOMY_BACKEND

    def request(self, row: dict[str, Any]) -> Request:
        caption = row.get(Col.CAPTION_MERGE_TEXT)
        if not caption:
            raise ValueError("taxonomy needs the merged caption: run caption_merge first")
        schema = answer_schema(with_ids=True)
        cap = self.config.max_caption_chars
        rendered = self.prompt.render(
            taxonomy=describe(),
            caption=quoted(caption, cap),
            video_caption=quoted(row.get(Col.CAPTION_VIDEO_TEXT), cap),
            audio_caption=quoted(row.get(Col.CAPTION_AUDIO_TEXT), cap),
            json_schema=json_block(schema),
        )
        return Request(
            text=rendered.user, system=rendered.system, json_schema=schema, max_tokens=self.config.max_tokens
        )

    def judge(self, row: dict[str, Any], completion: Completion) -> Outcome:
        answer = parse_json_reply(completion, answer_schema(with_ids=False))
        return passed(**taxonomy_columns(answer, completion.text), **self.provenance())
