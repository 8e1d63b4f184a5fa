import pytest

from schemas.taxonomy import all_category_ids
from stages.annotation import ReplyRejected
from stages.keywords import (
    DEFAULT_CATEGORIES,
    KeywordsConfig,
    clean_keyword,
    generate_keywords,
    keyword_request,
    keywords_schema,
    parse_keywords,
    plan_queries,
)
from stages.llm.base import BackendTimeout, Completion, LLMConfig
from tests.stages.test_annotation import FakeBackend, completion, load_cases


@pytest.mark.parametrize("c", load_cases("keywords"), ids=lambda c: c["name"])
def test_recorded_replies(c):
    if c["expect"] == "passed":
        assert parse_keywords(completion(c), max_keywords=10) == c["keywords"]
    else:
        with pytest.raises(ReplyRejected) as e:
            parse_keywords(completion(c), max_keywords=10)
        assert e.value.reason == c["expect"]


def test_parse_keeps_at_most_the_asked_number():
    reply = Completion('{"keywords": ["a b", "c d", "e f"]}', "stop")
    assert parse_keywords(reply, max_keywords=2) == ["a b", "c d"]


@pytest.mark.parametrize(
    "text",
    ["ytsearch5:cats", "YTSEARCHDATE:cats", "http://x", "see youtube.com", "-o /etc/passwd", "a\nb", "{x}", "", "  "],
)
def test_clean_keyword_drops_anything_but_plain_words(text):
    assert clean_keyword(text) is None


def test_clean_keyword_normalises():
    assert clean_keyword('  "Rain  On A\u00a0Tin Roof" ') == "rain on a tin roof"
    assert clean_keyword("x" * 61) is None and clean_keyword("one two three", max_words=2) is None


def test_keyword_request():
    request = keyword_request("mechanical", num_keywords=7, max_tokens=100)
    assert request.json_schema == keywords_schema(7) and request.max_tokens == 100
    assert "Suggest 7 distinct" in request.text and "Mechanical Sounds" in request.text
    with pytest.raises(ValueError):
        keyword_request("engines", 3)


def test_plan_splits_each_quota_over_keywords():
    plan = plan_queries({"natural": ["waves", "rain on leaves", "waves"], "urban": ["street traffic"]}, 10)
    assert plan == [
        ("natural", "ytsearch5:waves", 5),
        ("natural", "ytsearch5:rain on leaves", 5),
        ("urban", "ytsearch10:street traffic", 10),
    ]
    plan = plan_queries({"natural": ["a b", "c d", "e f"], "urban": ["g h"], "living": []}, {"natural": 2, "urban": 0})
    assert plan == [("natural", "ytsearch1:a b", 1), ("natural", "ytsearch1:c d", 1)]
    assert sum(n for _, _, n in plan_queries({"natural": ["a", "b", "c"]}, 10)) == 10


def test_plan_refuses_unclean_keywords():
    for keyword in ["ytsearch100:cats", "cats\nytsearch5:dogs", "-x", "Upper Case"]:
        with pytest.raises(ValueError, match="not a clean search phrase"):
            plan_queries({"natural": [keyword]}, 5)
    with pytest.raises(ValueError):
        plan_queries({"natural": ["cats"]}, -1)


def test_generate_keywords_batches_and_reports_failures():
    def answer(request):
        if "Urban Scenario" in request.text:
            return Completion("I cannot help with that.", "stop")
        return Completion('{"keywords": ["wind in trees", "river rapids"]}', "stop")

    config = KeywordsConfig(categories=("natural", "urban", "living"), num_keywords=2, llm=LLMConfig(max_batch=2))
    backend = FakeBackend(answer)
    keywords, problems = generate_keywords(backend, config)
    assert [len(c) for c in backend.calls] == [2, 1]
    assert keywords == {"natural": ["wind in trees", "river rapids"], "living": ["wind in trees", "river rapids"]}
    assert set(problems) == {"urban"} and "unparsable" in problems["urban"]
    keywords, problems = generate_keywords(FakeBackend(error=BackendTimeout("slow")), config)
    assert keywords == {} and set(problems) == {"natural", "urban", "living"}


def test_config():
    assert "speech" not in DEFAULT_CATEGORIES and len(DEFAULT_CATEGORIES) == len(all_category_ids()) - 1
    assert KeywordsConfig(categories=["natural"]).categories == ("natural",)
    with pytest.raises(ValueError):
        KeywordsConfig(categories=("forests",))
    with pytest.raises(ValueError, match="keywords.llm.endpoint"):
        KeywordsConfig(enabled=True, llm=LLMConfig(backend="openai"))
