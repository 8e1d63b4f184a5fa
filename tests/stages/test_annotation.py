"""Shared reply parsing, the batched LLM stage, and the prompt files.

Also home of the helpers the other annotation tests import: a fake backend that answers with
recorded replies, and the recorded cases under ``tests/data/llm_outputs/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from prompts import list_prompts, load_prompt, parse_prompt, quoted, untrusted
from schemas import Col, Kind, State, conform
from stages.annotation import (
    LLMStage,
    ReplyRejected,
    caption_text,
    extract_json,
    parse_json_reply,
    strip_search_prefix,
)
from stages.base import apply_stage, passed
from stages.llm.base import BackendError, BackendTimeout, Completion, LLMConfig, Request

OUTPUTS = Path(__file__).resolve().parents[1] / "data" / "llm_outputs"


def load_cases(step: str) -> list[dict[str, Any]]:
    return json.loads((OUTPUTS / f"{step}.json").read_text(encoding="utf-8"))


def case(step: str, name: str) -> dict[str, Any]:
    return next(c for c in load_cases(step) if c["name"] == name)


def completion(c: dict[str, Any]) -> Completion:
    return Completion(text=c["text"], finish_reason=c["finish_reason"])


class FakeBackend:
    """An :class:`LLMBackend` that answers with given completions (one per request, in order,
    or from a function of the request) and records what it was asked."""

    backend_id = "fake:recorded"
    model_id = "recorded"

    def __init__(
        self,
        replies: Sequence[Completion] | Callable[[Request], Completion] = (),
        error: BaseException | None = None,
    ) -> None:
        self.replies = replies if callable(replies) else list(replies)
        self.error = error
        self.calls: list[list[Request]] = []

    @property
    def requests(self) -> list[Request]:
        return [r for call in self.calls for r in call]

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        self.calls.append(list(requests))
        if self.error is not None:
            raise self.error
        if callable(self.replies):
            return [self.replies(r) for r in requests]
        return [self.replies.pop(0) for _ in requests]


def clip_row(clip_id: str, **columns: Any) -> dict[str, Any]:
    return {Col.ID: clip_id, Col.KIND: Kind.CLIP, Col.SOURCE_ID: "s0", Col.STATE: State.PENDING, Col.ATTEMPT: 1, **columns}


def run_stage(stage: Any, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``apply_stage`` over conformed rows; the result rows by id."""
    return {r[Col.ID]: r for r in apply_stage(stage, conform(rows), "cfg").to_pylist()}


# --- reading replies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "b": "x"}',
        '```json\n{"a": 1, "b": "x"}\n```',
        '```\n{"a": 1, "b": "x"}\n```\nHope this helps!',
        'Sure. The answer is {"a": 1, "b": "x"} as requested.',
        'Note {not json} first, then {"a": 1, "b": "x"}',
        '```json\n{"a": 1, "b": "x"}',  # fence never closed
    ],
)
def test_extract_json_skips_packaging(text):
    assert extract_json(text) == {"a": 1, "b": "x"}


@pytest.mark.parametrize("text", ["", "no json here", '["a", "b"]', "{'a': 1}", '{"a": 1,', "null"])
def test_extract_json_never_guesses(text):
    with pytest.raises(ReplyRejected) as e:
        extract_json(text)
    assert e.value.reason == "unparsable"


SCHEMA = {
    "type": "object",
    "properties": {"caption": {"type": "string"}, "flag": {"type": "boolean"}},
    "required": ["caption", "flag"],
}


def test_parse_json_reply_checks_the_schema():
    assert parse_json_reply(Completion('{"caption": "x", "flag": true, "extra": 1}', "stop"), SCHEMA)["flag"] is True
    for text in ['{"caption": "x"}', '{"caption": "x", "flag": "yes"}', '{"caption": 3, "flag": false}']:
        with pytest.raises(ReplyRejected) as e:
            parse_json_reply(Completion(text, "stop"), SCHEMA)
        assert e.value.reason == "unparsable"
    with pytest.raises(ReplyRejected, match="flag"):
        parse_json_reply(Completion('{"caption": "x"}', "stop"), SCHEMA)


def test_a_reply_that_hit_max_tokens_is_truncated_even_if_it_parses():
    with pytest.raises(ReplyRejected) as e:
        parse_json_reply(Completion('{"caption": "x", "flag": true}', "length", completion_tokens=9), SCHEMA)
    assert e.value.reason == "truncated" and "9 tokens" in e.value.detail


@pytest.mark.parametrize("c", load_cases("captions"), ids=lambda c: c["name"])
def test_caption_text_on_recorded_replies(c):
    if c["expect"] == "passed":
        assert caption_text(completion(c)) == c["text"].strip()
    else:
        with pytest.raises(ReplyRejected) as e:
            caption_text(completion(c))
        assert e.value.reason == c["expect"]


def test_strip_search_prefix():
    assert strip_search_prefix("ytsearch20:dog barking in the rain") == "dog barking in the rain"
    assert strip_search_prefix("ytsearchdate5: rain") == "rain"
    assert strip_search_prefix("scsearchall:x") == "x"
    assert strip_search_prefix("research: cats") == "cats"  # anything shaped like a prefix goes
    assert strip_search_prefix("dog barking") == "dog barking"
    assert strip_search_prefix("ytsearch10:") is None and strip_search_prefix(None) is None


# --- the batched stage -------------------------------------------------------------------------


class _Echo(LLMStage):
    """A minimal LLM stage: asks with the clip id, stores the reply as the video caption."""

    name: ClassVar[str] = "echo"
    modality: ClassVar[str] = "text"
    prompt_name: ClassVar[str] = "caption_audio"
    reasons: ClassVar[tuple[str, ...]] = ("empty_caption", "truncated")
    requires: ClassVar[tuple[str, ...]] = ()
    produces: ClassVar[tuple[str, ...]] = (Col.CAPTION_VIDEO_TEXT, Col.CAPTION_VIDEO_PROMPT, Col.CAPTION_VIDEO_BACKEND)
    prompt_column: ClassVar[str] = Col.CAPTION_VIDEO_PROMPT
    backend_column: ClassVar[str] = Col.CAPTION_VIDEO_BACKEND

    def request(self, row):
        if row[Col.ID] == "bad":
            raise ValueError("cannot build a request")
        return Request(text=row[Col.ID])

    def judge(self, row, completion):
        if completion.text == "boom":
            raise RuntimeError("bug in judge")
        return passed(**{Col.CAPTION_VIDEO_TEXT: caption_text(completion)}, **self.provenance())


class _Config:
    def __init__(self, max_batch: int) -> None:
        self.llm = LLMConfig(max_batch=max_batch)


def test_llm_stage_batches_and_isolates_row_problems():
    def answer(request: Request) -> Completion:
        return {"c2": Completion("  ", "stop"), "c3": Completion("boom", "stop")}.get(
            request.text, Completion(f"caption of {request.text}", "stop")
        )

    backend = FakeBackend(answer)
    stage = _Echo(_Config(max_batch=2), backend)
    rows = [clip_row(i) for i in ("c0", "c1", "bad", "c2", "c3")]
    out = run_stage(stage, rows)
    assert [len(call) for call in backend.calls] == [2, 2]  # the bad row never reached the backend
    assert out["c0"][Col.STATE] == State.PENDING and out["c0"][Col.CAPTION_VIDEO_TEXT] == "caption of c0"
    assert out["c0"][Col.CAPTION_VIDEO_PROMPT] == "caption_audio@1"
    assert out["c0"][Col.CAPTION_VIDEO_BACKEND] == "fake:recorded"
    assert (out["c2"][Col.STATE], out["c2"][Col.REASON]) == (State.REJECTED, "empty_caption")
    assert out["c2"][Col.BACKEND] == "fake:recorded" and out["c2"][Col.CAPTION_VIDEO_PROMPT] == "caption_audio@1"
    assert (out["bad"][Col.STATE], out["bad"][Col.ERROR_TYPE]) == (State.FAILED, "ValueError")
    assert (out["c3"][Col.STATE], out["c3"][Col.ERROR_TYPE]) == (State.FAILED, "RuntimeError")


def test_a_timeout_fails_only_its_chunk_and_is_retriable():
    class Flaky(FakeBackend):
        def generate(self, requests):
            if any(r.text == "c2" for r in requests):
                self.calls.append(list(requests))
                raise BackendTimeout("no answer in 120 s")
            return super().generate(requests)

    stage = _Echo(_Config(max_batch=2), Flaky(lambda r: Completion("ok", "stop")))
    out = run_stage(stage, [clip_row(f"c{i}") for i in range(4)])
    assert [out[f"c{i}"][Col.STATE] for i in range(4)] == [State.PENDING, State.PENDING, State.FAILED, State.FAILED]
    assert out["c2"][Col.ERROR_TYPE] == "BackendTimeout" and out["c2"][Col.REASON] is None


def test_a_backend_that_loses_requests_fails_the_batch():
    class Lossy(FakeBackend):
        def generate(self, requests):
            return [Completion("ok", "stop")]

    out = run_stage(_Echo(_Config(max_batch=8), Lossy()), [clip_row("c0"), clip_row("c1")])
    assert {r[Col.ERROR_TYPE] for r in out.values()} == {"BackendError"}
    assert issubclass(BackendTimeout, BackendError)


# --- prompt files ----------------------------------------------------------------------------


def test_every_prompt_loads_with_a_versioned_id():
    names = list_prompts()
    assert {"caption_video", "caption_audio", "caption_merge", "taxonomy", "keywords"} <= set(names)
    for name in names:
        prompt = load_prompt(name)
        assert prompt.id == f"{name}@{prompt.version}" and prompt.user


def test_json_prompts_embed_their_schema():
    for name in ("caption_merge", "taxonomy", "keywords"):
        assert "json_schema" in load_prompt(name).placeholders


def test_render_fails_on_missing_or_unexpected_values():
    prompt = load_prompt("caption_video")
    with pytest.raises(KeyError, match="keyword"):
        prompt.render(title="x")
    with pytest.raises(KeyError, match="caption"):
        prompt.render(title="x", keyword="y", caption="z")


def _parse(text: str, name: str = "demo") -> Any:
    return parse_prompt(text, Path(f"/p/{name}.md"))


def test_prompt_file_format_is_checked():
    good = "---\nname: demo\nversion: 3\n---\n# system\nBe brief.\n# user\nSay {{ word }}.\n"
    prompt = _parse(good)
    assert (prompt.id, prompt.system, prompt.user) == ("demo@3", "Be brief.", "Say {{ word }}.")
    assert prompt.render(word="hi").user == "Say hi."
    bad = [
        "# user\nno front matter",
        "---\nname: demo\n---\n# user\nx",  # no version
        "---\nname: other\nversion: 1\n---\n# user\nx",  # name differs from the file
        "---\nname: demo\nversion: v2\n---\n# user\nx",
        "---\nname: demo\nversion: 1\n---\n# system\nonly a system turn",
        "---\nname: demo\nversion: 1\n---\nstray text\n# user\nx",
        "---\nname: demo\nversion: 1\ncolour: red\n---\n# user\nx",
    ]
    for text in bad:
        with pytest.raises(ValueError):
            _parse(text)


def test_values_are_substituted_once():
    prompt = _parse("---\nname: demo\nversion: 1\n---\n# user\nA {{a}} B {{b}}\n")
    assert prompt.render(a="{{b}}", b="}}{{a").user == "A {{b}} B }}{{a"


def test_untrusted_and_quoted():
    assert untrusted(None) == "null" and untrusted("  \n ") == "null"
    assert untrusted('a\n\n"b"\t\x00c') == '"a \\"b\\" c"'
    assert untrusted("x" * 500, max_chars=10) == json.dumps("x" * 9 + "\u2026", ensure_ascii=False)
    assert quoted("line 1\nline 2") == '"line 1\\nline 2"'
