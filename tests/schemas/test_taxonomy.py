import jsonschema
import pyarrow as pa
import pytest

from schemas import WORK_SCHEMA, metric_columns
from schemas.taxonomy import (
    ASPECT_IDS,
    ASPECTS,
    TAXONOMY_COLUMNS,
    all_category_ids,
    answer_schema,
    aspect,
    describe,
    find_category,
)

ANSWER = {
    "event_scenario": "natural",
    "visual_style": "camera_shooting",
    "sound_type": ["ambient", "biological"],
    "spatial_composition": ["single_subject", "off_screen"],
    "temporal_composition": "single_event",
}


def test_the_paper_taxonomy_has_5_aspects_and_19_categories():
    assert len(ASPECTS) == 5 and sum(len(a.categories) for a in ASPECTS) == 19
    assert len(set(all_category_ids())) == 19  # ids are unique across aspects
    assert [len(a.categories) for a in ASPECTS] == [5, 3, 5, 3, 3]
    assert {a.id: a.multi_label for a in ASPECTS} == {
        "event_scenario": False,
        "visual_style": False,
        "sound_type": True,
        "spatial_composition": True,
        "temporal_composition": False,
    }
    for a in ASPECTS:
        assert all(c.definition.endswith((".", '."')) and c.name for c in a.categories)


def test_columns_match_the_work_schema():
    for a in ASPECTS:
        field = WORK_SCHEMA.field(a.column)
        assert pa.types.is_list(field.type) if a.multi_label else field.type == pa.string()
    assert TAXONOMY_COLUMNS == tuple(a.column for a in ASPECTS)
    assert not set(TAXONOMY_COLUMNS) & set(metric_columns())  # labels, not scores


def test_lookups():
    a, c = find_category("off_screen")
    assert (a.id, c.name) == ("spatial_composition", "Off-screen Sound")
    assert aspect("sound_type").category_ids == ("ambient", "biological", "mechanical", "musical", "speech")
    with pytest.raises(ValueError):
        find_category("Natural Scenario")
    with pytest.raises(ValueError):
        aspect("mood")


def test_answer_schemas():
    strict, shape = answer_schema(with_ids=True), answer_schema(with_ids=False)
    jsonschema.Draft202012Validator.check_schema(strict)
    jsonschema.Draft202012Validator.check_schema(shape)
    assert strict["required"] == list(ASPECT_IDS)
    jsonschema.validate(ANSWER, strict)
    wrong_id = {**ANSWER, "event_scenario": "forest"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong_id, strict)
    jsonschema.validate({**wrong_id, "notes": "extra keys are tolerated when reading"}, shape)
    for broken in ({**ANSWER, "sound_type": "ambient"}, {**ANSWER, "sound_type": []}, {"event_scenario": "natural"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, shape)


def test_describe_lists_every_id_and_how_many_to_pick():
    text = describe()
    for a in ASPECTS:
        assert f'Aspect "{a.id}"' in text
        assert all(f'"{c.id}" ({c.name}): {c.definition}' in text for c in a.categories)
    assert "exactly one category id" in text and "one or more category ids" in text
    assert "Never combine: multiple_subjects, single_subject." in text
