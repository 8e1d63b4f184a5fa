"""The whole spine (no quality filters) on local Ray over generated media with known answers."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.audit import audit_json, explain
from pipeline.config import load_config
from pipeline.outputs import read_ledger, read_shards
from pipeline.runner import run
from schemas import SCHEMA_VERSION, Col, schema_version

# file -> (source state, source stage/reason, [clip outcomes in time order])
EXPECTED = {
    "three_scenes.mp4": ("accepted", None, ["accepted", "accepted", "accepted"]),
    "short_tail.mp4": ("accepted", None, ["accepted", "too_short"]),
    "silent.mp4": ("accepted", None, ["silent"]),
    "quiet_noise.mp4": ("accepted", None, ["silent"]),
    "no_audio.mp4": ("rejected", "no_audio", []),
    "audio_ends_early.mp4": ("accepted", None, ["partial_audio"]),
    "rotated.mp4": ("accepted", None, ["accepted"]),
    "vfr.mp4": ("accepted", None, ["accepted"]),
    "corrupt.mp4": ("rejected", "unreadable", []),
    "empty.mp4": ("rejected", "empty_file", []),
    "black.mp4": ("accepted", None, ["accepted"]),
    "text_card.mp4": ("accepted", None, ["accepted"]),
}


@pytest.fixture(scope="module")
def demo_run(samples, ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    config = load_config("demo-spine", overrides=["ray.progress_bars=false"])
    result = run([str(samples)], out, config, show_progress=False)
    return out, result, config


def _by_input(ledger_rows):
    groups: dict[str, dict] = {}
    for row in ledger_rows:
        name = Path(row[Col.INPUT]).name
        g = groups.setdefault(name, {"source": None, "clips": []})
        if row[Col.KIND] == "source":
            g["source"] = row
        else:
            g["clips"].append(row)
    return groups


def test_every_input_has_its_expected_fate(demo_run):
    out, _, _ = demo_run
    groups = _by_input(read_ledger(out).to_pylist())
    assert set(groups) == set(EXPECTED)
    for name, (state, reason, clips) in EXPECTED.items():
        src = groups[name]["source"]
        assert src[Col.STATE] == state, name
        assert src[Col.REASON] == reason, name
        got = [
            c[Col.STATE] if c[Col.STATE] == "accepted" else c[Col.REASON]
            for c in sorted(groups[name]["clips"], key=lambda c: c[Col.CLIP_START_S])
        ]
        assert got == clips, name


def test_funnel_adds_up_and_matches_the_files(demo_run):
    out, result, _ = demo_run
    manifest = json.loads((out / "manifest.json").read_text())
    funnel = {f["stage"]: f for f in manifest["funnel"]}
    assert [f["stage"] for f in manifest["funnel"]] == ["ingest", "probe", "scene_cut", "clip_length", "sound", "cut"]
    for f in funnel.values():
        assert f["in"] == f["passed"] + f["rejected"] + f["failed"]
    assert funnel["ingest"]["in"] == 12
    assert funnel["clip_length"]["in"] == 12  # 3 + 2 + 1 + 1 + 1 + 1 + 1 + 1 + 1 candidate clips
    assert funnel["sound"]["passed"] == 8
    assert funnel["sound"]["reasons"] == {"silent": 2, "partial_audio": 1}  # decided before any encode
    assert funnel["cut"]["in"] == 8 and manifest["encoded"]["num_clips_encoded"] == 8
    shards = read_shards(out)
    assert shards.num_rows == 8 == result.counts["clip"]["accepted"]
    for stage, f in funnel.items():
        path = out / "rejections" / stage / "rejections.parquet"
        assert (pq.read_table(path).num_rows if path.exists() else 0) == f["rejected"], stage


def test_shards_are_versioned_zstd_and_point_at_real_files(demo_run):
    out, _, config = demo_run
    paths = sorted((out / "shards").glob("shard-*.parquet"))
    assert len(paths) == 2  # the demo preset closes a shard every 4 rows
    meta = pq.ParquetFile(paths[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert schema_version(pq.read_schema(paths[0])) == SCHEMA_VERSION
    for row in read_shards(out).to_pylist():
        media = out / row[Col.MEDIA_PATH]
        data = media.read_bytes()
        assert len(data) == row[Col.MEDIA_SIZE_BYTES]
        assert hashlib.sha256(data).hexdigest() == row[Col.MEDIA_SHA256]
        assert row[Col.CUT_AV_DIFF_S] <= 1 / row[Col.CUT_FPS] + 1e-9 or row[Col.PROBE_IS_VFR]
        assert row[Col.SOUND_MEAN_DBFS] > config.sound.min_mean_dbfs
        assert 2.0 <= row[Col.CLIP_DURATION_S] <= 60.0


def test_only_accepted_clips_keep_media_files(demo_run):
    out, _, _ = demo_run
    on_disk = {p.relative_to(out).as_posix() for p in (out / "media" / "clips").rglob("*") if p.is_file()}
    assert on_disk == set(read_shards(out).column(Col.MEDIA_PATH).to_pylist())


def test_every_clip_keeps_a_thumbnail_strip_after_pruning(demo_run):
    import cv2
    import numpy as np

    out, _, config = demo_run
    clips = [r for r in read_ledger(out).to_pylist() if r[Col.KIND] == "clip"]
    assert {r[Col.STATE] for r in clips} == {"accepted", "rejected"}  # rejected ones' media was pruned
    for row in clips:
        assert row[Col.THUMB_PATH] == f"{config.scene_cut.thumbs_dir}/{row[Col.SOURCE_ID]}/{row[Col.ID]}.jpg"
        strip = cv2.imdecode(np.frombuffer((out / row[Col.THUMB_PATH]).read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        width, height = row[Col.PROBE_WIDTH], row[Col.PROBE_HEIGHT]
        if row[Col.PROBE_ROTATION_DEG] in (90, 270):  # the strip is upright, as the clip
            width, height = height, width
        assert strip.shape[0] == 160 and strip.shape[1] % 3 == 0  # three frames, 160 px high
        assert strip.shape[1] // 3 == pytest.approx(width * 160 / height, abs=1)
    on_disk = {p.relative_to(out).as_posix() for p in (out / "media" / "thumbs").rglob("*") if p.is_file()}
    assert on_disk == {r[Col.THUMB_PATH] for r in clips}
    rejected = pq.read_table(out / "rejections" / "sound" / "rejections.parquet").to_pylist()
    assert all((out / r[Col.THUMB_PATH]).is_file() for r in rejected)  # an auditor sees what was rejected


def test_shards_carry_the_encoded_clips_audio_format_and_frame_rate(demo_run):
    import av

    out, _, _ = demo_run
    for row in read_shards(out).to_pylist():
        with av.open(str(out / row[Col.MEDIA_PATH])) as c:
            audio, video = c.streams.audio[0].codec_context, c.streams.video[0]
            assert row[Col.CUT_AUDIO_SAMPLE_RATE_HZ] == audio.sample_rate == row[Col.PROBE_AUDIO_SAMPLE_RATE_HZ]
            assert row[Col.CUT_AUDIO_CHANNELS] == audio.channels == row[Col.PROBE_AUDIO_CHANNELS]
            assert row[Col.CUT_FPS] == pytest.approx(float(video.average_rate))
        assert row[Col.CUT_IS_VFR] == (Path(row[Col.INPUT]).name == "vfr.mp4")


def test_rejections_record_stage_reason_value_threshold_and_config(demo_run):
    out, _, config = demo_run
    rejected = pq.read_table(out / "rejections" / "sound" / "rejections.parquet").to_pylist()
    assert {r[Col.REASON] for r in rejected} == {"silent", "partial_audio"}
    silent = [r for r in rejected if r[Col.REASON] == "silent"]
    for r in silent:
        assert r[Col.METRIC] == Col.SOUND_MEAN_DBFS and r[Col.VALUE] < r[Col.THRESHOLD] == -60.0
        assert r[Col.CONFIG_HASH] == config.stage_hash("sound")
        assert r[Col.UPDATED_AT] is not None
    (partial,) = [r for r in rejected if r[Col.REASON] == "partial_audio"]  # 3 s of sound under 6 s of picture
    assert partial[Col.METRIC] == Col.SOUND_AUDIO_GAP_S and partial[Col.VALUE] == pytest.approx(3.0, abs=0.05)
    assert partial[Col.THRESHOLD] == pytest.approx(1 / 25) and "audio covers" in partial[Col.DETAIL]


def test_manifest_and_resolved_config_are_saved(demo_run):
    out, _, config = demo_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION
    as_json = json.loads(json.dumps(config.to_dict()))  # tuples become lists
    assert manifest["config"] == json.loads((out / "config.json").read_text()) == as_json
    for lib in ("ray", "pyarrow", "av", "scenedetect-headless", "ffmpeg"):
        assert manifest["versions"][lib] not in ("", "not installed")


def test_audit_json_contract(demo_run):
    out, _, _ = demo_run
    data = audit_json(out, with_items=True)
    assert [set(f) >= {"stage", "in", "passed", "rejected", "failed"} for f in data["funnel"]] == [True] * 6
    items = data["items"]
    assert Counter(i["kind"] for i in items) == {"source": 12, "clip": 12}
    for i in items:
        assert set(i) >= {
            "id",
            "kind",
            "source_id",
            "input",
            "state",
            "stage",
            "reason",
            "start_s",
            "end_s",
            "media",
            "metrics",
        }
        assert i["state"] in ("accepted", "rejected", "failed")
        if i["kind"] == "clip" and i["state"] == "accepted":
            assert (out / i["media"]).is_file() and i["start_s"] < i["end_s"]
            assert {"sound_mean_dbfs", "cut_av_diff_s", "clip_duration_s"} <= set(i["metrics"])
    json.dumps(data)  # plain JSON, no NaN/inf


def test_audit_explains_one_clip_and_one_source(demo_run):
    out, _, _ = demo_run
    ledger = read_ledger(out).to_pylist()
    silent = next(r for r in ledger if r[Col.REASON] == "silent")
    text = explain(out, silent[Col.ID])
    assert "rejected at sound: silent" in text and "threshold -60" in text
    source = next(r for r in ledger if Path(r[Col.INPUT]).name == "short_tail.mp4" and r[Col.KIND] == "source")
    story = explain(out, source[Col.ID])
    assert "2 clips" in story and "too_short" in story and "accepted ->" in story
    with pytest.raises(KeyError):
        explain(out, "nope")


def test_rerun_is_a_no_op_with_identical_outputs(demo_run, samples):
    out, first, config = demo_run
    before = read_ledger(out)
    shards_before = read_shards(out).select([Col.ID, Col.MEDIA_SHA256]).to_pylist()
    again = run([str(samples)], out, config, show_progress=False)
    assert again.num_skipped_sources == 12
    after = read_ledger(out)
    assert after.num_rows == before.num_rows
    assert sorted(after.column(Col.ID).to_pylist()) == sorted(before.column(Col.ID).to_pylist())
    assert read_shards(out).select([Col.ID, Col.MEDIA_SHA256]).to_pylist() == shards_before


def test_embedded_media_makes_self_contained_shards(samples, ray_local, tmp_path):
    config = load_config("demo-spine", overrides=["ray.progress_bars=false", "cut.embed_media=true"])
    run([str(samples / "three_scenes.mp4")], tmp_path, config, show_progress=False)
    rows = read_shards(tmp_path).to_pylist()
    assert len(rows) == 3
    for row in rows:
        assert row[Col.MEDIA_PATH] is None and len(row[Col.MEDIA_BYTES]) == row[Col.MEDIA_SIZE_BYTES]
        assert hashlib.sha256(row[Col.MEDIA_BYTES]).hexdigest() == row[Col.MEDIA_SHA256]
        assert row[Col.SOUND_MEAN_DBFS] > -60  # the sound check ran on the pack, before the encode
    assert not list(tmp_path.rglob("*.mp4"))
    assert Col.MEDIA_BYTES not in read_ledger(tmp_path).column_names  # the ledger stays small
