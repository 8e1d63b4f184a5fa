"""augment.sync_check: negatives scored against their clip, flagged or dropped by a margin."""

from __future__ import annotations

import json
import math
import shutil

import pyarrow.parquet as pq
import pytest

from augment.build import AugmentConfig, clip_media
from augment.sync_check import check_negatives
from pipeline.augment_runner import run_augment
from pipeline.config import RayConfig, load_config
from pipeline.outputs import read_shards
from pipeline.runner import run
from schemas import NegCol
from stages.av_sync import AvSyncConfig
from stages.storage import Storage

FAST = AvSyncConfig(backend="av_align")  # CPU, no weights


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="sync_check"):
        AugmentConfig(sync_check="sometimes")


@pytest.fixture(scope="module")
def flagged(samples, ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("sync_check")
    run([str(samples)], out, load_config("demo-spine", overrides=["ray.progress_bars=false"]), show_progress=False)
    manifest = run_augment(out, AugmentConfig(sync_check="flag", sync_margin=0.0, sync=FAST), RayConfig())
    return out, manifest


@pytest.mark.slow
def test_flag_keeps_every_negative_and_marks_those_not_strictly_below_their_clip(flagged):
    out, manifest = flagged
    rows = pq.read_table(out / "negatives" / "shard-00000.parquet").to_pylist()
    assert rows and manifest["negatives"] == len(rows)
    for row in rows:
        assert row[NegCol.SYNC_FLAGGED] == (not row[NegCol.SYNC_SCORE] < row[NegCol.SYNC_POSITIVE_SCORE])
    expected = {}
    for row in rows:
        counts = expected.setdefault(row[NegCol.FAMILY], {"checked": 0, "flagged": 0})
        counts["checked"] += 1
        counts["flagged"] += int(row[NegCol.SYNC_FLAGGED])
    assert manifest["sync_check"] == expected
    assert json.loads((out / "negatives" / "manifest.json").read_text())["sync_check"] == expected


@pytest.mark.slow
def test_the_margin_decides_what_is_dropped(flagged):
    out, _ = flagged
    storage = Storage(str(out))
    rows = pq.read_table(out / "negatives" / "shard-00000.parquet").to_pylist()
    clip = next(c for c in read_shards(out).to_pylist() if c["id"] == rows[0][NegCol.CLIP_ID])
    mine = [r for r in rows if r[NegCol.CLIP_ID] == clip["id"]]
    media = clip_media(clip, storage)
    kept, counts = check_negatives(mine, media, storage, "drop", -math.inf, FAST)
    assert len(kept) == len(mine) and sum(c["dropped"] for c in counts.values()) == 0
    kept, counts = check_negatives(mine, media, storage, "drop", 1e9, FAST)
    assert kept == [] and sum(c["dropped"] for c in counts.values()) == len(mine)
    assert check_negatives(mine, media, storage, "off", 1e9, FAST) == (mine, {})


@pytest.mark.slow
def test_drop_with_a_huge_margin_leaves_no_negatives(flagged, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(flagged[0], out)
    manifest = run_augment(out, AugmentConfig(sync_check="drop", sync_margin=1e9, sync=FAST), RayConfig())
    assert manifest["negatives"] == 0 and manifest["funnel"]["failed"] == 0
    assert manifest["sync_check"] and all(c["dropped"] == c["checked"] > 0 for c in manifest["sync_check"].values())
    assert not list((out / "negatives" / "media").rglob("*.mp4"))  # dropped media is pruned
    ledger = pq.read_table(out / "negatives" / "ledger.parquet").to_pylist()
    assert all(r[NegCol.NUM_NEGATIVES] == 0 for r in ledger)
