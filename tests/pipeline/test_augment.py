"""javis augment over a curated output folder, on local Ray."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from augment.build import AugmentConfig
from pipeline.audit import audit_json
from pipeline.augment_runner import run_augment
from pipeline.config import RayConfig, load_config
from pipeline.outputs import read_shards
from pipeline.runner import run
from schemas import SCHEMA_VERSION, NegCol, schema_version
from stages.cut import measure_clip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def curated(samples, ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("augment")
    run([str(samples)], out, load_config("demo-spine", overrides=["ray.progress_bars=false"]), show_progress=False)
    return out


def test_negatives_for_every_clip_and_family_reproducibly(curated):
    manifest = run_augment(curated, AugmentConfig(seed=3), RayConfig())
    clips = read_shards(curated).num_rows
    assert manifest["funnel"]["in"] == clips == manifest["funnel"]["passed"]
    shard = curated / "negatives" / "shard-00000.parquet"
    assert schema_version(pq.read_schema(shard)) == SCHEMA_VERSION
    rows = pq.read_table(shard).to_pylist()
    assert len(rows) >= 3 * clips  # every clip gets its video families and at least one audio family
    positives = {r["id"]: r for r in read_shards(curated).to_pylist()}
    for row in rows:
        data = (curated / row[NegCol.MEDIA_PATH]).read_bytes()
        measured, max_frame = measure_clip(data)
        positive = positives[row[NegCol.CLIP_ID]]
        assert (
            abs(measured["cut_video_duration_s"] - positive["cut_video_duration_s"]) <= 1 / positive["cut_fps"] + 1e-6
        )
        assert measured["cut_av_diff_s"] <= max_frame + 1e-6
        assert json.loads(row[NegCol.PARAMS_JSON]) is not None
    again = run_augment(curated, AugmentConfig(seed=3), RayConfig())
    assert again["negatives"] == len(rows)
    assert pq.read_table(shard).column(NegCol.MEDIA_SHA256).to_pylist() == [r[NegCol.MEDIA_SHA256] for r in rows]
    funnel = audit_json(curated)["funnel"]
    assert funnel[-1]["stage"] == "augment" and funnel[-1]["passed"] == clips


def test_a_clip_that_cannot_be_read_is_recorded_as_failed(curated, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(curated, out)
    victim = read_shards(out).to_pylist()[0]
    Path(out / victim["media_path"]).write_bytes(b"not a video")
    manifest = run_augment(out, AugmentConfig(), RayConfig())
    assert manifest["funnel"]["failed"] == 1 and manifest["funnel"]["passed"] == manifest["funnel"]["in"] - 1
    ledger = {r[NegCol.CLIP_ID]: r for r in pq.read_table(out / "negatives" / "ledger.parquet").to_pylist()}
    assert ledger[victim["id"]][NegCol.STATE] == "failed" and ledger[victim["id"]][NegCol.ERROR_TYPE]
    assert victim["id"] in audit_json(out)["funnel"][-1]["errors"]


def test_easy_negatives_from_captions_join_the_same_shards_and_ledger(curated, tmp_path):
    """A tiny random AudioLDM2 pipeline; every clip but the first gets a caption (the first has
    no text at all: its easy family is skipped with the reason)."""
    import pyarrow as pa

    from augment.easy import EASY, EasyConfig
    from schemas import Col
    from tests.audioldm2_tiny import build_tiny_audioldm2

    pytest.importorskip("diffusers")
    out = tmp_path / "copy"
    shutil.copytree(curated, out, ignore=shutil.ignore_patterns("negatives"))
    clip_ids = sorted(read_shards(out).column(Col.ID).to_pylist())
    for shard in sorted((out / "shards").glob("*.parquet")):
        table = pq.read_table(shard)
        captions = [
            None if i == clip_ids[0] else f"a tone beeps in video {i}" for i in table.column(Col.ID).to_pylist()
        ]
        index = table.schema.get_field_index(Col.CAPTION_MERGE_TEXT)
        pq.write_table(table.set_column(index, table.schema.field(index), pa.array(captions, pa.string())), shard)
    easy = EasyConfig(True, str(build_tiny_audioldm2(tmp_path / "audioldm2")), num_inference_steps=2)
    manifest = run_augment(out, AugmentConfig(families=("audio_temporal",), easy=easy), RayConfig())
    assert manifest["funnel"]["passed"] == len(clip_ids) and manifest["easy_negatives"].startswith("enabled")
    assert manifest["skipped_families"].get(EASY) == 1
    rows = pq.read_table(out / "negatives" / "shard-00000.parquet").to_pylist()
    by_clip = {r[NegCol.CLIP_ID]: r for r in rows if r[NegCol.FAMILY] == EASY}
    assert sorted(by_clip) == clip_ids[1:]
    for clip_id, row in by_clip.items():
        params = json.loads(row[NegCol.PARAMS_JSON])
        assert (
            params["prompt"] == f"a tone beeps in video {clip_id}" and params["prompt_source"] == Col.CAPTION_MERGE_TEXT
        )
        assert measure_clip((out / row[NegCol.MEDIA_PATH]).read_bytes())[0]["cut_av_diff_s"] is not None
    ledger = {r[NegCol.CLIP_ID]: r for r in pq.read_table(out / "negatives" / "ledger.parquet").to_pylist()}
    assert "no text to prompt from" in json.loads(ledger[clip_ids[0]][NegCol.SKIPPED_JSON])[EASY]
