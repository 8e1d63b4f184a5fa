"""The keyword crawl's plan: keywords per category from a text model, cleaned, split into
yt-dlp searches by quota, saved, and reused by a rerun."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.crawl import KEYWORDS_JSON, plan_crawl
from pipeline.inputs import is_search
from stages.llm.base import Completion
from tests.stages.test_annotation import FakeBackend

CATEGORIES = ["natural", "industrial"]


def _config(**keywords):
    overrides = ["keywords.enabled=true", "keywords.llm.model_path=/models/qwen2.5",
                 f"keywords.categories={json.dumps(CATEGORIES)}", "keywords.quota_per_category=5"]  # fmt: skip
    overrides += [f"keywords.{k}={v}" for k, v in keywords.items()]
    return load_config("spine", overrides=overrides)


def _reply(request):
    if "industrial" in request.text.lower():
        return Completion('```json\n{"keywords": ["factory machines", "https://evil.example/x", "ytsearch99:drill"]}\n```',
                          "stop")  # fmt: skip
    return Completion('{"keywords": ["waterfall sound", "forest birds", "ocean waves at night"]}', "stop")


def test_keywords_become_quota_split_searches_and_the_plan_is_saved(tmp_path):
    backend = FakeBackend(_reply)
    plan = plan_crawl(tmp_path, _config(), backend=backend)
    assert not plan.reused and len(backend.requests) == 2
    assert plan.keywords["natural"] == ["waterfall sound", "forest birds", "ocean waves at night"]
    assert "factory machines" in plan.keywords["industrial"]
    assert not any("http" in k or "ytsearch" in k for ks in plan.keywords.values() for k in ks)  # hostile dropped
    per_category = {}
    for category, query, n in plan.queries:
        assert is_search(query) and query.startswith(f"ytsearch{n}:")
        per_category[category] = per_category.get(category, 0) + n
    assert per_category == {"natural": 5, "industrial": 5}  # the quota, split over keywords
    saved = json.loads((tmp_path / KEYWORDS_JSON).read_text())
    assert saved["prompt"] == "keywords@1" and saved["backend"] == "fake:recorded"
    assert [tuple(q) for q in saved["queries"]] == plan.queries


def test_a_rerun_reuses_the_plan_and_new_settings_ask_again(tmp_path):
    plan_crawl(tmp_path, _config(), backend=FakeBackend(_reply))
    again = plan_crawl(tmp_path, _config(), backend=FakeBackend(error=AssertionError("must not be called")))
    assert again.reused and again.queries == plan_crawl(tmp_path, _config(), backend=FakeBackend(_reply)).queries
    changed = FakeBackend(_reply)
    assert not plan_crawl(tmp_path, _config(quota_per_category=2), backend=changed).reused and changed.requests


def test_a_bad_reply_costs_one_category_not_the_crawl(tmp_path):
    def reply(request):
        return Completion("sure! here are some ideas", "stop") if "industrial" in request.text.lower() else _reply(request)

    plan = plan_crawl(tmp_path, _config(), backend=FakeBackend(reply))
    assert set(plan.keywords) == {"natural"} and "industrial" in plan.problems
    assert {c for c, _, _ in plan.queries} == {"natural"}


def test_crawl_needs_a_model():
    with pytest.raises(ValueError, match="keywords.enabled"):
        plan_crawl("/nonexistent", load_config("spine"))


@pytest.mark.slow
def test_cli_keywords_only_with_a_tiny_local_model(tmp_path):
    from tests.llm_tiny import build_tiny_text_model

    model = build_tiny_text_model(tmp_path / "text", reply_tokens=3)
    args = ["crawl", "-o", str(tmp_path / "out"), "--keywords-only", "--preset", "spine", "--quiet",
            "--set", "keywords.enabled=true", "--set", "keywords.llm.backend=transformers",
            "--set", f"keywords.llm.model_path={model}", "--set", f"keywords.categories={json.dumps(CATEGORIES)}"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "0 searches over 0 categories" in result.output  # nonsense replies: no keywords, said per category
    assert result.output.count("no keywords for") == 2
    saved = json.loads((tmp_path / "out" / KEYWORDS_JSON).read_text())
    assert saved["backend"].startswith("transformers:") and all(v["problem"] for v in saved["categories"].values())
