import json

import pytest

from schemas import Col, State
from schemas.taxonomy import ASPECTS, answer_schema, describe
from stages.llm.base import BackendTimeout
from stages.taxonomy import Taxonomy, TaxonomyConfig
from tests.stages.test_annotation import FakeBackend, case, clip_row, completion, load_cases, run_stage


def _row(clip_id: str = "c0", **columns) -> dict:
    captions = {
        Col.CAPTION_MERGE_TEXT: "A dog barks on a windy beach.",
        Col.CAPTION_VIDEO_TEXT: "A dog on a beach.",
        Col.CAPTION_AUDIO_TEXT: "Wind and a barking dog.",
    }
    return clip_row(clip_id, **{**captions, **columns})


def _classify(name: str) -> dict:
    stage = Taxonomy(TaxonomyConfig(), FakeBackend([completion(case("taxonomy", name))]))
    return run_stage(stage, [_row()])["c0"]


@pytest.mark.parametrize("c", load_cases("taxonomy"), ids=lambda c: c["name"])
def test_recorded_replies(c):
    out = _classify(c["name"])
    assert (out[Col.TAXONOMY_PROMPT], out[Col.TAXONOMY_BACKEND]) == ("taxonomy@1", "fake:recorded")
    if c["expect"] != "passed":
        assert (out[Col.STATE], out[Col.STAGE], out[Col.REASON]) == (State.REJECTED, "taxonomy", c["expect"])
        assert all(out[a.column] is None for a in ASPECTS)  # nothing half-written
        return
    assert out[Col.STATE] == State.PENDING
    assert {a.id: out[a.column] for a in ASPECTS} == c["columns"]


def test_off_taxonomy_names_every_bad_value():
    out = _classify("invented_category")
    assert "'household' is not a category id" in out[Col.DETAIL] and "sound_type" in out[Col.DETAIL]
    out = _classify("exclusive_combination")
    assert "exclude each other" in out[Col.DETAIL]


def test_request_lists_the_taxonomy_and_the_captions():
    backend = FakeBackend([completion(case("taxonomy", "well_formed"))])
    run_stage(Taxonomy(TaxonomyConfig(), backend), [_row()])
    (request,) = backend.requests
    assert request.json_schema == answer_schema(with_ids=True)
    assert describe() in request.text
    assert f"Merged description: {json.dumps('A dog barks on a windy beach.')}" in request.text
    assert "Audio-only description: " in request.text


def test_no_merged_caption_or_a_timeout_fails():
    backend = FakeBackend([])
    out = run_stage(Taxonomy(TaxonomyConfig(), backend), [_row(caption_merge_text=None)])
    assert out["c0"][Col.STATE] == State.FAILED and not backend.calls
    out = run_stage(Taxonomy(TaxonomyConfig(), FakeBackend(error=BackendTimeout("slow"))), [_row()])
    assert (out["c0"][Col.STATE], out["c0"][Col.ERROR_TYPE]) == (State.FAILED, "BackendTimeout")
