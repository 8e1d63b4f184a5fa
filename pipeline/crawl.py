"""Keyword crawl (paper D.3.1): search keywords per taxonomy category from the text LLM, then
yt-dlp searches with per-category quotas, through the normal pipeline.

``javis crawl -o OUT --set keywords.llm.model_path=...`` asks the model for
``keywords.num_keywords`` search phrases per category in ``keywords.categories``, cleans them
(no URLs, no yt-dlp prefixes, length caps: ``stages/keywords.py``), splits each category's
``keywords.quota_per_category`` over its phrases as ``ytsearchN:phrase`` inputs, and runs the
pipeline on them. The plan is saved as ``OUT/keywords.json`` (prompt id, backend, keywords,
queries, and why a category got none) before any download, and reused by a rerun with the same
keyword settings: the model is asked once, so a resumed crawl searches the same phrases and the
pipeline's resume skips finished sources. Searches that fail (no network, an extractor error)
are ``failed`` sources in the ledger and are retried by the next run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from typing import Any

from pipeline.config import Config
from stages.keywords import generate_keywords, plan_queries
from stages.storage import Storage

log = logging.getLogger(__name__)

KEYWORDS_JSON = "keywords.json"


@dataclasses.dataclass(frozen=True)
class CrawlPlan:
    keywords: dict[str, list[str]]  # category id -> search phrases
    problems: dict[str, str]  # category id -> why it has no phrases
    queries: list[tuple[str, str, int]]  # (category, "ytsearchN:phrase", N)
    reused: bool  # read from an earlier keywords.json instead of asking the model

    @property
    def inputs(self) -> list[str]:
        return [query for _, query, _ in self.queries]


def _settings_hash(config: Config) -> str:
    """The keyword settings that change the plan (not timeouts or batch sizes)."""
    k = config.keywords
    keys = {"categories": list(k.categories), "num_keywords": k.num_keywords, "quota": k.quota_per_category,
            "max_chars": k.max_keyword_chars, "max_words": k.max_keyword_words,
            "model": k.llm.model_path or k.llm.model, "endpoint": k.llm.endpoint}  # fmt: skip
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:12]


def plan_crawl(output_dir: str | os.PathLike, config: Config, backend: Any = None) -> CrawlPlan:
    """The crawl plan, from ``OUT/keywords.json`` when it matches ``config``, else from the model."""
    from prompts import load_prompt

    if not config.keywords.enabled:
        raise ValueError("keywords.enabled is false: the crawl needs a text model (set keywords.enabled=true "
                         "and keywords.llm.model_path, or keywords.llm.backend=openai with an endpoint)")  # fmt: skip
    out = Storage(output_dir)
    path = out.location(KEYWORDS_JSON)
    settings = _settings_hash(config)
    if out.exists(KEYWORDS_JSON):
        saved = out.read_json(KEYWORDS_JSON)
        if saved.get("settings_hash") == settings:
            cats = saved["categories"]
            keywords = {c: v["keywords"] for c, v in cats.items() if v["keywords"]}
            problems = {c: v["problem"] for c, v in cats.items() if v.get("problem")}
            queries = [tuple(q) for q in saved["queries"]]
            log.info("reusing the keyword plan in %s", path)
            return CrawlPlan(keywords, problems, queries, reused=True)  # type: ignore[arg-type]
        log.info("keyword settings changed since %s was written: asking the model again", path)
    if backend is None:
        from stages.llm.build import build_backend

        backend = build_backend(config.keywords.llm, "text", where="keywords.llm")
    keywords, problems = generate_keywords(backend, config.keywords)
    queries = plan_queries(keywords, config.keywords.quota_per_category)
    out.write_json(
        KEYWORDS_JSON,
        {
            "settings_hash": settings,
            "prompt": load_prompt("keywords").id,
            "backend": backend.backend_id,
            "categories": {
                c: {"keywords": keywords.get(c, []), "problem": problems.get(c)} for c in config.keywords.categories
            },
            "queries": [list(q) for q in queries],
        },
    )
    return CrawlPlan(keywords, problems, queries, reused=False)
