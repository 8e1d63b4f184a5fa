import random

import pytest

from schemas import Col
from schemas.taxonomy import aspect
from stages.balance import Balance, BalanceConfig, category_counts, quota_caps, rank_key, select_over_quota


def _rows(counts: dict[str, int], prefix: str = "c") -> list[dict]:
    return [
        {Col.ID: f"{prefix}-{category}-{i}", Col.TAXONOMY_EVENT_SCENARIO: category}
        for category, num in counts.items()
        for i in range(num)
    ]


def _kept(rows, config) -> set[str]:
    dropped = select_over_quota(rows, config)
    return {r[Col.ID] for r in rows} - set(dropped)


def test_max_per_category_caps_every_category():
    rows = _rows({"natural": 10, "urban": 3, "living": 6})
    dropped = select_over_quota(rows, BalanceConfig(max_per_category=5))
    assert len(dropped) == 5 + 1
    by_category = category_counts([r for r in rows if r[Col.ID] not in dropped], aspect("event_scenario"))
    assert by_category == {"natural": 5, "urban": 3, "living": 5}
    natural = [r for i, r in dropped.items() if "natural" in i]
    assert {(r.reason, r.metric, r.value, r.threshold) for r in natural} == {
        ("over_quota", Col.TAXONOMY_EVENT_SCENARIO, 10.0, 5.0)
    }


def test_per_category_caps_leave_others_uncapped():
    rows = _rows({"natural": 10, "urban": 8})
    dropped = select_over_quota(rows, BalanceConfig(caps={"natural": 2}))
    assert len(dropped) == 8 and all("natural" in i for i in dropped)
    dropped = select_over_quota(rows, BalanceConfig(caps={"natural": 2}, max_per_category=4))
    assert len(dropped) == 8 + 4


def test_target_distribution_caps():
    counts = {"natural": 100, "urban": 30, "living": 50}
    config = BalanceConfig(target={"natural": 2, "urban": 1, "living": 1})
    # urban limits the total: N = 30 / 0.25 = 120 -> natural 60, urban 30, living 30
    assert quota_caps(counts, config) == {"natural": 60, "urban": 30, "living": 30}
    assert len(select_over_quota(_rows(counts), config)) == 180 - 120
    # a target category without clips cannot be met and does not zero the others
    assert quota_caps({"natural": 10, "urban": 10}, BalanceConfig(target={"natural": 1, "urban": 1, "virtual": 1}))[
        "natural"
    ] == 10
    assert quota_caps({}, BalanceConfig(target={"natural": 1})) == {"natural": 0}


def test_selection_is_deterministic_and_seeded():
    rows = _rows({"natural": 40, "urban": 40})
    config = BalanceConfig(max_per_category=10, seed=7)
    kept = _kept(rows, config)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert _kept(shuffled, config) == kept
    assert _kept(rows, BalanceConfig(max_per_category=10, seed=8)) != kept
    assert rank_key(7, "a") == rank_key(7, "a") != rank_key(8, "a")


def test_adding_clips_changes_the_selection_minimally():
    config = BalanceConfig(max_per_category=20)
    before = _rows({"natural": 50, "urban": 50})
    added = _rows({"natural": 5}, prefix="new")
    kept_before, kept_after = _kept(before, config), _kept(before + added, config)
    assert len(kept_after) == len(kept_before) == 40
    # each added clip displaces at most one kept clip, and only in its own category
    assert len(kept_before - kept_after) <= len(added)
    assert all("natural" in i for i in kept_before - kept_after)


def test_multi_label_aspect_counts_each_label():
    rows = [{Col.ID: f"c{i}", Col.TAXONOMY_SOUND_TYPE: ["ambient", "biological"] if i % 2 else ["ambient"]} for i in range(20)]
    dropped = select_over_quota(rows, BalanceConfig(aspect="sound_type", caps={"ambient": 5}))
    assert len(dropped) == 15
    kept = [r for r in rows if r[Col.ID] not in dropped]
    assert category_counts(kept, aspect("sound_type"))["ambient"] == 5


def test_config_and_input_checks():
    with pytest.raises(ValueError):
        BalanceConfig(aspect="mood")
    with pytest.raises(ValueError, match="not event_scenario categories"):
        BalanceConfig(caps={"ambient": 3})
    with pytest.raises(ValueError):
        BalanceConfig(target={"natural": 1}, max_per_category=3)
    with pytest.raises(ValueError):
        BalanceConfig(enabled=True)
    with pytest.raises(ValueError, match="no taxonomy_event_scenario"):
        select_over_quota([{Col.ID: "c0", Col.TAXONOMY_EVENT_SCENARIO: None}], BalanceConfig(max_per_category=1))
    assert Balance.reasons == ("over_quota",) and Balance(BalanceConfig(max_per_category=0)).select(_rows({"urban": 2}))
