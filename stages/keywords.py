"""keywords: search keywords per taxonomy category from the text LLM (paper D.3.1), and the
yt-dlp search inputs they become, with per-category quotas.

The crawl asks the text model, once per category, for ``num_keywords`` search queries
(:func:`keyword_request`, prompt ``keywords``, JSON answer). A reply is read strictly
(:func:`parse_keywords`): ``truncated`` / ``unparsable`` like every annotation reply; then each
keyword is cleaned (:func:`clean_keyword`) and anything that could be more than plain search
words is dropped rather than repaired: URLs, yt-dlp search prefixes (``ytsearch5:``), leading
dashes, control characters, over-long strings. Duplicates (case-insensitive) are dropped.

:func:`plan_queries` spreads each category's quota of videos over its keywords and returns
``(category, "ytsearchN:keyword", N)`` triples for the ingest stage's yt-dlp search input.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from prompts import json_block, load_prompt
from schemas.taxonomy import all_category_ids, find_category
from stages.annotation import SEARCH_PREFIX, ReplyRejected, check_llm_step, parse_json_reply
from stages.llm.base import BackendError, Completion, LLMBackend, LLMConfig, Request

log = logging.getLogger(__name__)

PROMPT_NAME = "keywords"
# speech videos are what the speech and content filters remove: crawling for them wastes downloads
DEFAULT_CATEGORIES: tuple[str, ...] = tuple(c for c in all_category_ids() if c != "speech")
_URL = re.compile(r"://|\bwww\.|\b[\w-]+\.(?:com|net|org|be|tv|ly|io|co|gg)\b", re.IGNORECASE)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f<>{}\[\]\\|`]")
_EDGE_QUOTES = "\"'\u201c\u201d\u2018\u2019"


@dataclasses.dataclass(frozen=True)
class KeywordsConfig:
    enabled: bool = False  # needs a text LLM; the crawl command uses it
    llm: LLMConfig = dataclasses.field(default_factory=LLMConfig)
    categories: tuple[str, ...] = DEFAULT_CATEGORIES  # category ids to search for
    num_keywords: int = 10  # asked per category
    quota_per_category: int = 100  # videos searched per category, split over its keywords
    max_keyword_chars: int = 60  # longer keywords from the model are dropped
    max_keyword_words: int = 8  # so are keywords of more words
    max_tokens: int = 512  # reply budget per category

    def __post_init__(self) -> None:
        object.__setattr__(self, "categories", tuple(self.categories))  # YAML gives lists
        for c in self.categories:
            find_category(c)  # raises on an unknown id
        if self.num_keywords < 1 or self.quota_per_category < 1:
            raise ValueError("keywords.num_keywords and keywords.quota_per_category must be >= 1")
        if self.max_keyword_chars < 3 or self.max_keyword_words < 1:
            raise ValueError("keywords.max_keyword_chars must be >= 3 and max_keyword_words >= 1")
        check_llm_step("keywords", self.enabled, self.llm, self.max_tokens)


def keywords_schema(num_keywords: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "keywords": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": num_keywords}
        },
        "required": ["keywords"],
        "additionalProperties": False,
    }


def keyword_request(category_id: str, num_keywords: int, max_tokens: int = 512) -> Request:
    """The request asking for search keywords for one taxonomy category."""
    a, c = find_category(category_id)
    schema = keywords_schema(num_keywords)
    rendered = load_prompt(PROMPT_NAME).render(
        num_keywords=num_keywords,
        aspect=a.name,
        category=c.name,
        definition=c.definition,
        json_schema=json_block(schema),
    )
    return Request(text=rendered.user, system=rendered.system, json_schema=schema, max_tokens=max_tokens)


def clean_keyword(text: str, max_chars: int = 60, max_words: int = 8) -> str | None:
    """A plain, lower-case search phrase, or None when the string is not one (see the module
    docstring). Surrounding whitespace and quotes are trimmed; nothing else is repaired."""
    if not isinstance(text, str):
        return None
    if _UNSAFE.search(text):  # checked before normalising: a newline must not turn into a space
        return None
    text = " ".join(unicodedata.normalize("NFKC", text).split()).strip(_EDGE_QUOTES).strip().lower()
    if not text or len(text) > max_chars or len(text.split()) > max_words:
        return None
    if SEARCH_PREFIX.match(text) or _URL.search(text) or text.startswith(("-", "#", "@")):
        return None
    return text


def parse_keywords(completion: Completion, max_keywords: int, max_chars: int = 60, max_words: int = 8) -> list[str]:
    """The usable keywords of a reply, de-duplicated, in the model's order, at most
    ``max_keywords``. Raises :class:`ReplyRejected` (``truncated``, ``unparsable``), also when
    no keyword survives cleaning."""
    answer = parse_json_reply(completion, keywords_schema(max(max_keywords, 1_000)))
    cleaned = [clean_keyword(k, max_chars, max_words) for k in answer["keywords"]]
    dropped = [k for k, c in zip(answer["keywords"], cleaned) if c is None]
    if dropped:
        log.info("keywords: dropped %d unusable strings: %r", len(dropped), dropped[:5])
    keywords = list(dict.fromkeys(c for c in cleaned if c is not None))[:max_keywords]
    if not keywords:
        raise ReplyRejected("unparsable", f"no usable keyword among {answer['keywords']!r}"[:500])
    return keywords


def generate_keywords(
    backend: LLMBackend, config: KeywordsConfig
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Keywords per configured category in batched calls, and, per category that got none,
    why (a rejected reply or a backend error): the crawl goes on with the others."""
    keywords: dict[str, list[str]] = {}
    problems: dict[str, str] = {}
    categories = list(config.categories)
    step = config.llm.max_batch
    for start in range(0, len(categories), step):
        chunk = categories[start : start + step]
        try:
            replies = backend.generate([keyword_request(c, config.num_keywords, config.max_tokens) for c in chunk])
        except BackendError as e:
            problems.update({c: f"{type(e).__name__}: {e}" for c in chunk})
            continue
        for category, reply in zip(chunk, replies):
            try:
                keywords[category] = parse_keywords(
                    reply, config.num_keywords, config.max_keyword_chars, config.max_keyword_words
                )
            except ReplyRejected as r:
                problems[category] = str(r)
    return keywords, problems


def plan_queries(
    keywords_by_category: Mapping[str, Sequence[str]], quota_per_category: int | Mapping[str, int]
) -> list[tuple[str, str, int]]:
    """``(category, "ytsearchN:keyword", N)`` per keyword: each category's quota split as evenly
    as possible over its keywords (the first ones get the remainder; a keyword whose share is 0
    is skipped). Keywords must already be clean (:func:`clean_keyword`); anything else raises."""
    plan = []
    for category, keywords in keywords_by_category.items():
        quota = quota_per_category if isinstance(quota_per_category, int) else quota_per_category.get(category, 0)
        if quota < 0:
            raise ValueError(f"quota for {category!r} must be >= 0, got {quota}")
        keywords = list(dict.fromkeys(keywords))
        for keyword in keywords:
            if clean_keyword(keyword, max_chars=len(keyword) + 1, max_words=len(keyword.split()) or 1) != keyword:
                raise ValueError(f"keyword {keyword!r} for {category!r} is not a clean search phrase")
        if not keywords:
            continue
        share, extra = divmod(quota, len(keywords))
        for i, keyword in enumerate(keywords):
            num = share + (1 if i < extra else 0)
            if num > 0:
                plan.append((category, f"ytsearch{num}:{keyword}", num))
    return plan
