"""balance: cap the clips per category of one taxonomy aspect (a global step).

Unlike the other stages this one needs every accepted clip at once, so it is a pure function
the runner calls after the per-clip stages: :func:`select_over_quota` takes the accepted rows
(id + taxonomy columns) and returns the ids to reject, each with reason ``over_quota``
(metric: the aspect's column, value: how many clips the category had, threshold: its cap).

Caps come from one of:

- ``max_per_category``: the same cap for every category of the aspect;
- ``caps``: a cap per category id (categories not listed are uncapped, or capped by
  ``max_per_category`` when that is also set);
- ``target``: a target distribution (relative weights per category id, normalised over the
  listed ones). The caps are the largest set that meets it exactly given the counts: with
  ``N = min(count_c / p_c)`` over listed categories that have clips, ``cap_c = floor(N p_c)``.
  Categories not listed are uncapped; listed ones without any clip cannot be met and are left
  out of ``N`` (logged).

Selection is deterministic: clips are ranked by a hash of (seed, clip id) and kept in that
order while every category they belong to is under its cap (multi-label aspects: a clip counts
towards each of its categories, and is dropped when any of them is full). A rerun gives the
same selection; adding clips only moves the cut where a new clip outranks a kept one, so a
single-choice aspect changes by at most one kept clip per added clip.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from schemas import Col, Kind
from schemas.taxonomy import ASPECT_IDS, TAXONOMY_COLUMNS, Aspect, aspect
from stages.base import Rejection

log = logging.getLogger(__name__)

OVER_QUOTA = "over_quota"


@dataclasses.dataclass(frozen=True)
class BalanceConfig:
    enabled: bool = False  # cap accepted clips per taxonomy category (needs the taxonomy step)
    aspect: str = "event_scenario"  # the taxonomy aspect whose categories are balanced
    max_per_category: int | None = None  # one cap for every category
    caps: dict[str, int] = dataclasses.field(default_factory=dict)  # category id -> cap
    target: dict[str, float] = dataclasses.field(default_factory=dict)  # category id -> relative weight
    seed: int = 0  # which clips are kept when a category is over its cap

    def __post_init__(self) -> None:
        if self.aspect not in ASPECT_IDS:
            raise ValueError(f"balance.aspect must be one of {ASPECT_IDS}, got {self.aspect!r}")
        ids = set(aspect(self.aspect).category_ids)
        for name, values in (("caps", self.caps), ("target", self.target)):
            unknown = set(values) - ids
            if unknown:
                raise ValueError(f"balance.{name}: {sorted(unknown)} are not {self.aspect} categories {sorted(ids)}")
        if self.max_per_category is not None and self.max_per_category < 0:
            raise ValueError("balance.max_per_category must be >= 0")
        if any(v < 0 for v in self.caps.values()) or any(v < 0 for v in self.target.values()):
            raise ValueError("balance.caps and balance.target must be >= 0")
        if self.target and (self.caps or self.max_per_category is not None):
            raise ValueError("balance: give either target or caps / max_per_category, not both")
        if self.target and not sum(self.target.values()) > 0:
            raise ValueError("balance.target needs a positive weight")
        if self.enabled and not (self.target or self.caps or self.max_per_category is not None):
            raise ValueError("balance is enabled but has no max_per_category, caps or target")


def rank_key(seed: int, clip_id: str) -> int:
    """A clip's place in the keep order: stable across runs and independent of other clips."""
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{clip_id}".encode()).digest()[:8], "big")


def categories_of(row: Mapping[str, Any], a: Aspect) -> list[str]:
    value = row.get(a.column)
    if value is None:
        raise ValueError(f"clip {row.get(Col.ID)} has no {a.column}: balance runs on classified clips only")
    return sorted(set(value)) if a.multi_label else [value]


def category_counts(rows: Iterable[Mapping[str, Any]], a: Aspect) -> collections.Counter[str]:
    return collections.Counter(c for row in rows for c in categories_of(row, a))


def quota_caps(counts: Mapping[str, int], config: BalanceConfig) -> dict[str, int]:
    """Category id -> cap, for the capped categories only."""
    ids = aspect(config.aspect).category_ids
    if config.target:
        total = sum(config.target.values())
        weights = {c: w / total for c, w in config.target.items() if w > 0}
        present = {c: p for c, p in weights.items() if counts.get(c, 0) > 0}
        missing = sorted(set(weights) - set(present))
        if missing:
            log.warning("balance: target categories %s have no clips; the target cannot be met for them", missing)
        if not present:
            return {c: 0 for c in config.target}
        scale = min(counts[c] / p for c, p in present.items())
        caps = {c: math.floor(scale * weights.get(c, 0.0) + 1e-9) for c in config.target}
        return caps
    caps = {c: config.max_per_category for c in ids} if config.max_per_category is not None else {}
    caps.update(config.caps)
    return caps


def select_over_quota(rows: Iterable[Mapping[str, Any]], config: BalanceConfig) -> dict[str, Rejection]:
    """Clip id -> ``over_quota`` rejection for the clips balancing drops (see the module docstring)."""
    a = aspect(config.aspect)
    rows = list(rows)
    counts = category_counts(rows, a)
    caps = quota_caps(counts, config)
    kept: collections.Counter[str] = collections.Counter()
    dropped: dict[str, Rejection] = {}
    for row in sorted(rows, key=lambda r: (rank_key(config.seed, r[Col.ID]), r[Col.ID])):
        cats = categories_of(row, a)
        full = [c for c in cats if c in caps and kept[c] >= caps[c]]
        if not full:
            kept.update(cats)
            continue
        c = full[0]
        dropped[row[Col.ID]] = Rejection(
            OVER_QUOTA,
            metric=a.column,
            value=float(counts[c]),
            threshold=float(caps[c]),
            detail=f"{a.id} category {c!r} has {counts[c]} clips, cap {caps[c]} (seed {config.seed})",
        )
    return dropped


class Balance:
    """The balancing step's identity for the ledger and the funnel (it has no per-row
    ``process``: the runner calls :meth:`select` on all accepted clips). Reason: ``over_quota``."""

    name: ClassVar[str] = "balance"
    unit: ClassVar[str] = Kind.CLIP
    reasons: ClassVar[tuple[str, ...]] = (OVER_QUOTA,)
    requires: ClassVar[tuple[str, ...]] = TAXONOMY_COLUMNS
    produces: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: BalanceConfig) -> None:
        self.config = config

    def select(self, rows: Iterable[Mapping[str, Any]]) -> dict[str, Rejection]:
        return select_over_quota(rows, self.config)
