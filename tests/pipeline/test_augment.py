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
