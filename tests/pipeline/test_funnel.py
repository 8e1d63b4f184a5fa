import pytest

from pipeline.funnel import InvariantError, check_invariant, compute_funnel
from schemas import Col, conform

STAGES = [("ingest", "source"), ("probe", "source"), ("scene_cut", "source"), ("cut", "clip"), ("sound", "clip")]


def _src(i, state, stage=None, reason=None, num_clips=None):
    return {Col.ID: f"s{i}", Col.KIND: "source", Col.SOURCE_ID: f"s{i}", Col.STATE: state, Col.STAGE: stage,
            Col.REASON: reason, Col.SCENE_NUM_CLIPS: num_clips}  # fmt: skip


def _clip(i, source, state, stage=None, reason=None):
    return {
        Col.ID: f"c{i}",
        Col.KIND: "clip",
        Col.SOURCE_ID: source,
        Col.STATE: state,
        Col.STAGE: stage,
        Col.REASON: reason,
    }


def _ledger():
    return [
        _src(1, "accepted", num_clips=3),
        _src(2, "rejected", "probe", "no_audio"),
        _src(3, "failed", "ingest"),
        _clip(1, "s1", "accepted"),
        _clip(2, "s1", "rejected", "sound", "silent"),
        _clip(3, "s1", "failed", "cut"),
    ]


def test_funnel_counts_per_stage_and_reason():
    funnel = {f.stage: f for f in compute_funnel(conform(_ledger()), STAGES, 3)}
    assert (funnel["ingest"].in_, funnel["ingest"].passed, funnel["ingest"].failed) == (3, 2, 1)
    assert (funnel["probe"].in_, funnel["probe"].passed, funnel["probe"].reasons) == (2, 1, {"no_audio": 1})
    assert (funnel["cut"].in_, funnel["cut"].passed, funnel["cut"].failed) == (3, 2, 1)
    assert (funnel["sound"].in_, funnel["sound"].passed, funnel["sound"].reasons) == (2, 1, {"silent": 1})
    table = conform(_ledger())
    check_invariant(table, compute_funnel(table, STAGES, 3), {"s1", "s2", "s3"})


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rows: rows + [dict(rows[3])], "more than once"),  # a duplicated clip row
        (lambda rows: rows[:-1], "stage cut"),  # a clip silently lost
        (lambda rows: rows[:3] + [{**rows[3], Col.STATE: "pending"}] + rows[4:], "terminal"),
        (lambda rows: rows[1:], "planned sources missing"),
    ],
)
def test_invariant_catches_lost_duplicated_and_unfinished_rows(mutate, message):
    table = conform(mutate(_ledger()))
    with pytest.raises(InvariantError, match=message):
        check_invariant(table, compute_funnel(table, STAGES, 3), {"s1", "s2", "s3"})
