"""The full CPU pipeline (spine + decode + quality filters) on local Ray, then refilter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.outputs import read_ledger, read_shards
from pipeline.refilter import NEEDS_RESCORE, refilter
from pipeline.runner import run
from schemas import Col, component_columns

FILTERED = {  # file -> clip outcomes in time order, with the quality filters on
    "three_scenes.mp4": ["accepted", "accepted", "static"],  # the last scene is still colour bars
    "black.mp4": ["low_image_quality"],
    "text_card.mp4": ["too_much_text"],
}


def _outcomes(out: Path) -> dict[str, list[str]]:
    got: dict[str, list] = {}
    for r in read_ledger(out).to_pylist():
        if r[Col.KIND] == "clip":
            got.setdefault(Path(r[Col.INPUT]).name, []).append(r)
    return {
        name: [
            c[Col.STATE] if c[Col.STATE] != "rejected" else c[Col.REASON]
            for c in sorted(rows, key=lambda c: c[Col.CLIP_START_S])
        ]
        for name, rows in got.items()
    }


@pytest.fixture(scope="module")
def filtered_run(samples, ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("filtered")
    config = load_config("demo", overrides=["ray.progress_bars=false"])
    result = run([str(samples)], out, config, show_progress=False)
    return out, result


def test_filters_reject_with_their_reasons_and_keep_scores(filtered_run):
    out, result = filtered_run
    outcomes = _outcomes(out)
    for name, expected in FILTERED.items():
        assert outcomes[name] == expected, name
    manifest = json.loads((out / "manifest.json").read_text())
    stages = [f["stage"] for f in manifest["funnel"]]
    assert stages[:5] == ["ingest", "probe", "scene_cut", "clip_length", "sound"]
    assert stages[5:] == ["aesthetic", "motion", "speech", "ocr", "cut"]  # cheapest filters first, the encode last
    assert manifest["encoded"]["accepted_share_of_encoded_s"] == 1.0  # no clip a filter rejects is encoded
    for f in manifest["funnel"]:
        assert f["in"] == f["passed"] + f["rejected"] + f["failed"]
    for row in read_shards(out).to_pylist():  # accepted clips carry every filter's raw scores
        assert row[Col.AESTHETIC_IQ_MEAN] >= 3.0 and row[Col.AESTHETIC_LAION_MEAN] is None
        assert row[Col.MOTION_FLOW_MEAN] >= 0.003 and row[Col.SPEECH_RATIO] <= 0.2 and row[Col.OCR_NUM_REGIONS] <= 5
        assert row[Col.MOTION_BACKEND].startswith("opencv-dis")
    # the image-quality rejection is explained by its stored sub-scores: black frames, no exposure
    (black,) = [r for r in read_ledger(out).to_pylist() if r[Col.REASON] == "low_image_quality"]
    assert black[Col.AESTHETIC_IQ_EXPOSURE] == 0.0 and black[Col.AESTHETIC_IQ_MEAN] == 0.0
    assert all(0.0 <= black[c] <= 1.0 for c in component_columns() if c.startswith("aesthetic_iq_"))


def test_decoded_media_never_reaches_the_outputs(filtered_run):
    out, _ = filtered_run
    for path in [*(out / "shards").glob("*.parquet"), out / "ledger" / "ledger.parquet"]:
        assert Col.DECODED not in pq.read_schema(path).names
    rejections = pq.read_table(out / "rejections" / "motion" / "rejections.parquet").to_pylist()
    assert [(r[Col.REASON], r[Col.METRIC]) for r in rejections] == [("static", Col.MOTION_FLOW_MEAN)]
    assert rejections[0][Col.BACKEND].startswith("opencv-dis") and rejections[0][Col.THRESHOLD] == 0.003


def test_refilter_from_stored_scores_then_rerun_fills_the_gaps(filtered_run, samples, tmp_path):
    src, _ = filtered_run
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    # dry run: nothing written
    before = (out / "ledger" / "ledger.parquet").read_bytes()
    strict = {f.stage: f for f in refilter(out, ["aesthetic.min_image_quality=9.9"], dry_run=True)}
    assert strict["aesthetic"].rejected > 1 and (out / "ledger" / "ledger.parquet").read_bytes() == before
    # looser motion: the static clip now reaches speech, which never scored it
    funnel = {f.stage: f for f in refilter(out, ["motion.min_flow=0.0005"])}
    assert funnel["motion"].rejected == 0 and funnel["speech"].failed == 1
    ledger = read_ledger(out).to_pylist()
    rescore = [r for r in ledger if r[Col.ERROR_TYPE] == NEEDS_RESCORE]
    assert len(rescore) == 1 and rescore[0][Col.STAGE] == "speech"
    assert json.loads((out / "config.json").read_text())["motion"]["min_flow"] == 0.0005
    # the next run with the same settings computes what is missing
    config = load_config("demo", overrides=["ray.progress_bars=false", "motion.min_flow=0.0005"])
    again = run([str(samples)], out, config, show_progress=False)
    assert again.counts["clip"].get("failed", 0) == 0
    assert _outcomes(out)["three_scenes.mp4"] == ["accepted", "accepted", "accepted"]


@pytest.mark.media
def test_speech_is_removed_from_real_footage(media_dir, ray_local, tmp_path):
    from stages.ffmpeg import run_ffmpeg

    inputs = tmp_path / "in"
    inputs.mkdir()
    bunny = media_dir / "mp_big_buck_bunny_0_30.webm"
    # the same animated shots once with their own score, once with a man speaking over them
    shutil.copy(bunny, inputs / "bunny_score.webm")
    run_ffmpeg(["-i", str(bunny), "-i", str(media_dir / "fw_jfk.flac"), "-map", "0:v", "-map", "1:a", "-t", "11",
                "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(inputs / "bunny_speech.mp4")])  # fmt: skip
    out = tmp_path / "out"
    run([str(inputs)], out, load_config("demo", overrides=["ray.progress_bars=false"]), show_progress=False)
    clips = [r for r in read_ledger(out).to_pylist() if r[Col.KIND] == "clip" and r[Col.SPEECH_RATIO] is not None]
    spoken = [r for r in clips if Path(r[Col.INPUT]).name == "bunny_speech.mp4"]
    scored = [r for r in clips if Path(r[Col.INPUT]).name == "bunny_score.webm"]
    assert spoken and all(r[Col.REASON] == "speech" for r in spoken if r[Col.SPEECH_RATIO] > 0.2)
    assert any(r[Col.REASON] == "speech" for r in spoken)
    assert scored and all(r[Col.SPEECH_RATIO] < 0.2 for r in scored)
