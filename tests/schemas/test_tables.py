import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import (
    CLIP_SCHEMA,
    LEDGER_SCHEMA,
    SCHEMA_VERSION,
    WORK_SCHEMA,
    Col,
    conform,
    metric_columns,
    schema_version,
)


def test_round_trip_through_parquet_keeps_schema_and_version(tmp_path):
    row = {
        Col.ID: "c1", Col.KIND: "clip", Col.SOURCE_ID: "s1", Col.STATE: "accepted", Col.ATTEMPT: 1,
        Col.UPDATED_AT: dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), Col.CLIP_START_S: 1.5,
        Col.MEDIA_BYTES: b"\x00\x01", Col.PROBE_IS_VFR: True, Col.SOUND_MEAN_DBFS: -20.5,
    }  # fmt: skip
    table = conform([row], CLIP_SCHEMA)
    pq.write_table(table, tmp_path / "t.parquet", compression="zstd")
    back = pq.read_table(tmp_path / "t.parquet")
    assert back.schema.equals(CLIP_SCHEMA, check_metadata=True)
    assert schema_version(back.schema) == SCHEMA_VERSION
    assert back.to_pylist()[0] == {**{n: None for n in CLIP_SCHEMA.names}, **row}


def test_conform_refuses_unknown_columns_and_fills_missing_ones():
    with pytest.raises(KeyError, match="typo_column"):
        conform([{Col.ID: "x", "typo_column": 1}])
    table = conform(pa.table({Col.ID: ["a"]}), LEDGER_SCHEMA)
    assert table.schema.names == LEDGER_SCHEMA.names and table.column(Col.STATE).null_count == 1


def test_metric_columns_are_the_raw_scores():
    metrics = metric_columns(WORK_SCHEMA)
    assert {Col.SOUND_MEAN_DBFS, Col.SOUND_PEAK_DBFS, Col.CUT_AV_DIFF_S, Col.CLIP_DURATION_S} <= set(metrics)
    assert Col.ID not in metrics and Col.MEDIA_BYTES not in metrics
    assert Col.MEDIA_BYTES not in LEDGER_SCHEMA.names and Col.DECODED not in LEDGER_SCHEMA.names
    assert Col.DECODED not in CLIP_SCHEMA.names


def test_component_columns_explain_metric_columns():
    from schemas import REJECTION_SCHEMA, component_columns

    components = component_columns(WORK_SCHEMA)
    assert components[Col.AESTHETIC_IQ_EXPOSURE] == Col.AESTHETIC_IQ_MEAN
    assert components[Col.CUT_MAX_FRAME_S] == Col.CUT_AV_DIFF_S
    assert set(components.values()) <= set(metric_columns(WORK_SCHEMA))  # each explains a raw score
    assert not set(components) & set(metric_columns(WORK_SCHEMA))  # and is not one itself
    assert set(components) <= set(LEDGER_SCHEMA.names) and set(components) <= set(CLIP_SCHEMA.names)
    assert Col.THUMB_PATH in REJECTION_SCHEMA.names  # a rejected clip's thumbnail, for auditors
