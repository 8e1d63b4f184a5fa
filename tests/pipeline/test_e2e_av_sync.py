"""The av_sync filter through the DAG on the generated samples (local Ray), then refilter."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config, preset_values
from pipeline.outputs import read_ledger, read_shards
from pipeline.refilter import refilter
from pipeline.runner import run
from schemas import Col


@pytest.fixture(scope="module")
def sync_run(samples, ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("av_sync")
    config = load_config("demo-spine", overrides=["ray.progress_bars=false", "av_sync.enabled=true"])
    result = run([str(samples)], out, config, show_progress=False)
    return out, result


def test_av_sync_scores_every_clip_and_rejects_out_of_sync(sync_run):
    out, _ = sync_run
    manifest = json.loads((out / "manifest.json").read_text())
    stages = [f["stage"] for f in manifest["funnel"]]
    assert stages[5:] == ["av_sync", "cut"]
    (funnel,) = [f for f in manifest["funnel"] if f["stage"] == "av_sync"]
    assert funnel["in"] == funnel["passed"] + funnel["rejected"] + funnel["failed"] and funnel["failed"] == 0
    scored = [r for r in read_ledger(out).to_pylist() if r[Col.AV_SYNC_BACKEND] is not None]
    assert len(scored) == funnel["in"] > 0
    for r in scored:
        assert r[Col.AV_SYNC_BACKEND].startswith("av_align/") and r[Col.AV_SYNC_SCORE] >= 0.0
        assert r[Col.AV_SYNC_NUM_AUDIO_PEAKS] is not None and r[Col.AV_SYNC_NUM_VIDEO_PEAKS] is not None
    # steady sine tones have no onsets: AV-Align finds nothing to match and scores 0
    rejected = [r for r in scored if r[Col.REASON] == "out_of_sync"]
    assert len(rejected) == funnel["rejected"] > 0
    assert all(r[Col.AV_SYNC_SCORE] < r[Col.THRESHOLD] for r in rejected)
    rows = pq.read_table(out / "rejections" / "av_sync" / "rejections.parquet").to_pylist()
    assert {(r[Col.REASON], r[Col.METRIC]) for r in rows} == {("out_of_sync", Col.AV_SYNC_SCORE)}
    for row in read_shards(out).to_pylist() if (out / "shards").exists() else []:
        assert row[Col.AV_SYNC_SCORE] is not None


def test_refilter_av_sync_from_stored_scores(sync_run, tmp_path):
    src, _ = sync_run
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    funnel = {f.stage: f for f in refilter(out, ["av_sync.min_score=0.0"], dry_run=True)}
    assert funnel["av_sync"].rejected == 0 and funnel["av_sync"].passed == funnel["av_sync"].in_


def test_paper_preset_turns_av_sync_on_and_default_leaves_it_off():
    assert preset_values("paper")["av_sync"]["enabled"] is True
    assert preset_values("default")["av_sync"]["enabled"] is False
