"""Shared machinery of the annotation steps: judging model replies, and the batched LLM stage.

A reply is judged, never trusted. Each way a reply can be unusable has its own reason code:

- ``truncated``: the model hit ``max_tokens`` (``finish_reason == "length"``); judged first, so
  an over-long answer is never half-read.
- ``empty_caption``: a caption that is empty or only whitespace.
- ``unparsable``: no JSON object can be read from the reply, or it lacks a required field or
  has a field of the wrong type (checked against the step's JSON schema).
- ``off_taxonomy`` (taxonomy step): valid JSON naming a category outside the taxonomy.

Reading JSON is tolerant of packaging and strict about content: code fences and prose around
the object are skipped, but a missing field is never filled in and a wrong type never coerced.

Backend problems are not the model's fault: :class:`BackendError` (``BackendTimeout``
included) makes the affected rows ``failed``, so the next run retries them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import jsonschema

from prompts import Prompt, load_prompt
from schemas import Kind
from stages.base import Outcome, Rejection, rejected
from stages.llm.base import BackendError, Completion, LLMBackend, LLMConfig, Request

log = logging.getLogger(__name__)

UNPARSABLE = "unparsable"
OFF_TAXONOMY = "off_taxonomy"
EMPTY_CAPTION = "empty_caption"
TRUNCATED = "truncated"

# a yt-dlp search input ("ytsearch20:", "ytsearchdate5:", "scsearchall:"): never model output
SEARCH_PREFIX = re.compile(r"^\s*[a-z0-9]*search(?:\d+|all|date\d*)?:", re.IGNORECASE)
_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)
_EXCERPT_CHARS = 300


class ReplyRejected(ValueError):
    """A model reply that cannot be used, with its reason code (see the module docstring)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def rejection(self, metric: str | None = None) -> Rejection:
        return Rejection(self.reason, metric=metric, detail=self.detail)


def excerpt(text: str, num_chars: int = _EXCERPT_CHARS) -> str:
    """The start of a reply, for a rejection's detail (auditors see what the model said)."""
    return repr(text if len(text) <= num_chars else text[:num_chars] + "...")


def check_finished(completion: Completion) -> None:
    if completion.finish_reason == "length":
        tokens = f" after {completion.completion_tokens} tokens" if completion.completion_tokens else ""
        raise ReplyRejected(TRUNCATED, f"reply hit max_tokens{tokens}: {excerpt(completion.text)}")


def caption_text(completion: Completion) -> str:
    """A free-text caption: finished and not blank, with surrounding whitespace stripped."""
    check_finished(completion)
    text = completion.text.strip()
    if not text:
        raise ReplyRejected(EMPTY_CAPTION, f"the caption is empty: {excerpt(completion.text)}")
    return text


def _candidates(text: str) -> list[str]:
    """Where a JSON object may sit: the whole reply, then each fenced block."""
    return [text.strip()] + [m.group(1).strip() for m in _FENCE.finditer(text)]


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in ``text``: the whole reply, inside a code fence, or after some
    prose (then the object must parse completely from its opening brace; trailing text is ignored)."""
    decoder = json.JSONDecoder()
    for candidate in _candidates(text):
        try:
            value = json.loads(candidate)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
        for start in (i for i, ch in enumerate(candidate) if ch == "{"):
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    raise ReplyRejected(UNPARSABLE, f"no JSON object in the reply: {excerpt(text)}")


def parse_json_reply(completion: Completion, schema: dict[str, Any]) -> dict[str, Any]:
    """The reply's JSON object, checked against ``schema`` (missing fields, wrong types)."""
    check_finished(completion)
    value = extract_json(completion.text)
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the object"
        raise ReplyRejected(UNPARSABLE, f"{where}: {error.message}; reply: {excerpt(completion.text)}")
    return value


def strip_search_prefix(query: str | None) -> str | None:
    """The keyword of a yt-dlp search input ("ytsearch20:dog barking" -> "dog barking")."""
    if query is None:
        return None
    return SEARCH_PREFIX.sub("", query, count=1).strip() or None


# --- the batched LLM stage ------------------------------------------------------------------


def check_llm_step(where: str, enabled: bool, llm: LLMConfig, max_tokens: int) -> None:
    """Shared config checks of the LLM steps (called from their ``__post_init__``)."""
    if max_tokens < 1:
        raise ValueError(f"{where}.max_tokens must be >= 1, got {max_tokens}")
    if enabled:
        llm.check_model(f"{where}.llm")


class LLMStage:
    """Base of the annotation stages that call a model: one batched ``generate`` per
    ``llm.max_batch`` rows. Subclasses set the class attributes of the stage contract plus
    ``modality`` and ``prompt_name``, and implement ``request(row)`` and ``judge(row, completion)``
    (which raises :class:`ReplyRejected` for an unusable reply). ``prompt_column`` and
    ``backend_column`` are written on every judged row, accepted or rejected."""

    unit: ClassVar[str] = Kind.CLIP
    modality: ClassVar[str]  # "video", "audio" or "text": which backend the factory builds
    prompt_name: ClassVar[str]
    prompt_column: ClassVar[str]
    backend_column: ClassVar[str]
    name: ClassVar[str]

    def __init__(self, config: Any, backend: LLMBackend | None = None) -> None:
        self.config = config
        self.prompt: Prompt = load_prompt(self.prompt_name)
        if backend is None:  # lazily: the backends import torch / vllm
            from stages.llm.build import build_backend

            backend = build_backend(config.llm, self.modality, where=f"{self.name}.llm")
        self.backend = backend
        self.backend_id: str = backend.backend_id
        log.info("%s: backend %s, prompt %s", self.name, self.backend_id, self.prompt.id)

    def request(self, row: dict[str, Any]) -> Request:
        raise NotImplementedError

    def judge(self, row: dict[str, Any], completion: Completion) -> Outcome:
        raise NotImplementedError

    def provenance(self) -> dict[str, Any]:
        return {self.prompt_column: self.prompt.id, self.backend_column: self.backend_id}

    def _judged(self, row: dict[str, Any], completion: Completion) -> Outcome | Exception:
        try:
            return self.judge(row, completion)
        except ReplyRejected as r:
            return rejected(r.reason, detail=r.detail, **self.provenance())
        except Exception as e:  # a bug on one row must not lose the batch
            return e

    def process_batch(self, rows: Sequence[dict[str, Any]]) -> list[Outcome | Exception]:
        results: list[Outcome | Exception | None] = [None] * len(rows)
        requests: list[tuple[int, Request]] = []
        for i, row in enumerate(rows):
            try:
                requests.append((i, self.request(row)))
            except Exception as e:  # e.g. no decoded frames: this row fails, the others go on
                results[i] = e
        step = self.config.llm.max_batch
        for chunk in (requests[k : k + step] for k in range(0, len(requests), step)):
            try:
                completions = self.backend.generate([r for _, r in chunk])
            except BackendError as e:  # timeouts included: these rows fail and are retried next run
                log.warning("%s: backend failed on %d requests: %s", self.name, len(chunk), e)
                for i, _ in chunk:
                    results[i] = e
                continue
            if len(completions) != len(chunk):
                raise BackendError(f"{self.backend_id} returned {len(completions)} completions for {len(chunk)}")
            for (i, _), completion in zip(chunk, completions):
                results[i] = self._judged(rows[i], completion)
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def process(self, row: dict[str, Any]) -> Outcome:
        (result,) = self.process_batch([row])
        if isinstance(result, Exception):
            raise result
        return result

