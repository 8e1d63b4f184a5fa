"""The dataset card (OUT/README.md): Hugging Face ``datasets`` loads the accepted clips by
default and the other tables as named configs; run ids on every row; audit items."""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.audit import audit_json, explain
from pipeline.card import card_text, front_matter
from pipeline.config import load_config
from pipeline.outputs import read_ledger, read_shards
from pipeline.refilter import refilter
from pipeline.runner import run
from schemas import SCHEMA_VERSION, Col

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def _offline_hf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


def _load(out: Path, cache: Path, name: str | None = None):
    return datasets.load_dataset(str(out), name, split="train", cache_dir=str(cache))


def _configs(out: Path) -> dict[str, str]:
    text = (out / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    return {c["config_name"]: c["data_files"][0]["path"] for c in meta["configs"]}


@pytest.fixture(scope="module")
def filtered_run(samples, ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("card")
    config = load_config("demo", overrides=["ray.progress_bars=false"])
    result = run([str(samples)], out, config, show_progress=False)
    return out, result, config


def test_globs_name_the_generation_on_object_storage_and_never_reach_staging():
    files = {"generation": "20261205T101010-abcdef", "shards": [{}], "rejections": {"sound": {}}, "ledger": [{}],
             "sources": [{}]}  # fmt: skip
    globs = {c["config_name"]: c["data_files"][0]["path"] for c in front_matter(files, [])["configs"]}
    listing = [
        "shards/shard-20261205T101010-abcdef-00000.parquet",
        "shards/shard-20261205T090000-123456-00000.parquet",  # the older generation, not yet deleted
        "rejections/sound/rejections-20261205T101010-abcdef.parquet",
        "ledger/ledger-20261205T101010-abcdef.parquet",
        "sources/sources-20261205T101010-abcdef.parquet",
        "_work/parts/part-0123.parquet",
    ]
    matched = {name: [f for f in listing if fnmatch.fnmatch(f, glob)] for name, glob in globs.items()}
    assert matched == {
        "default": [listing[0]],
        "rejections": [listing[2]],
        "ledger": [listing[3]],
        "sources": [listing[4]],
    }


def test_a_run_without_accepted_clips_has_no_default_config():
    manifest = {"files": {"shards": [], "rejections": {}, "ledger": [{}], "sources": [{}]}, "counts": {}}
    names = [c["config_name"] for c in front_matter(manifest["files"], [])["configs"]]
    assert names == ["ledger", "sources"]  # load_dataset(OUT) then asks for a config name
    assert "no clip was accepted" in card_text(manifest, [])


def test_load_dataset_gives_only_the_accepted_clips_by_default(filtered_run, tmp_path):
    out, result, config = filtered_run
    accepted = result.counts["clip"]["accepted"]
    assert 0 < accepted < sum(result.counts["clip"].values())  # the run rejected some clips
    clips = _load(out, tmp_path)
    assert clips.num_rows == accepted == read_shards(out).num_rows
    assert set(clips["state"]) == {"accepted"} and set(clips["kind"]) == {"clip"}
    assert all((out / p).is_file() for p in clips["media_path"])  # relative to OUT, as the card says
    ledger = read_ledger(out)
    counts = {"ledger": ledger.num_rows, "sources": sum(result.counts["source"].values())}
    counts["rejections"] = ledger.column(Col.STATE).to_pylist().count("rejected")
    for name, expected in counts.items():
        assert _load(out, tmp_path, name).num_rows == expected, name
    assert not any("_work" in glob for glob in _configs(out).values())


def test_the_card_states_paths_schema_counts_hashes_and_run(filtered_run):
    out, result, config = filtered_run
    text = (out / "README.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert "relative to this folder" in text and "`media_path`" in text and "`thumb_path`" in text
    assert f"schema version: {SCHEMA_VERSION}" in text and manifest["run_id"] in text
    assert all(h in text for h in manifest["config_hashes"].values())
    assert f"| clips | {result.counts['clip']['accepted']} | {result.counts['clip']['rejected']} | 0 |" in text
    assert "aesthetic_iq_sharpness` (part of aesthetic_iq_mean)" in text  # the column guide


def test_every_row_carries_the_run_id(filtered_run):
    out, result, _ = filtered_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run_id"] == result.run_id and manifest["run_ids"] == [result.run_id]
    for folder in ("sources", "shards", "rejections", "ledger"):
        table = pq.read_table(out / folder)
        assert set(table.column(Col.RUN_ID).to_pylist()) == {result.run_id}, folder


def test_a_rerun_keeps_the_run_id_of_rows_it_reuses(filtered_run, samples, tmp_path):
    out, first, config = filtered_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    extra = str(tmp_path / "gone.mp4")  # a new input: its row is decided by the rerun
    second = run([str(samples), extra], copy, config, show_progress=False)
    assert second.run_id != first.run_id
    rows = read_ledger(copy).to_pylist()
    by_run = {r[Col.RUN_ID] for r in rows if r[Col.INPUT] != extra}
    assert by_run == {first.run_id}
    assert {r[Col.RUN_ID] for r in rows if r[Col.INPUT] == extra} == {second.run_id}
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["run_id"] == second.run_id and manifest["run_ids"] == sorted([first.run_id, second.run_id])


def test_refilter_rewrites_the_card_and_keeps_run_ids(filtered_run, tmp_path):
    out, first, _ = filtered_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    best = max(read_shards(copy).column(Col.AESTHETIC_IQ_MEAN).to_pylist())  # the best clip alone passes
    funnel = refilter(copy, [f"aesthetic.min_image_quality={best}"])
    accepted = funnel[-1].passed
    assert 0 < accepted < first.counts["clip"]["accepted"]
    assert _load(copy, tmp_path / "hf").num_rows == accepted == read_shards(copy).num_rows
    text = (copy / "README.md").read_text()
    assert f"| clips | {accepted} |" in text and "javis refilter" in text
    assert {r[Col.RUN_ID] for r in read_ledger(copy).to_pylist()} == {first.run_id}


def test_audit_items_carry_the_decision_and_its_provenance(filtered_run):
    out, result, config = filtered_run
    items = {i["id"]: i for i in audit_json(out, with_items=True)["items"]}
    rows = {r[Col.ID]: r for r in read_ledger(out).to_pylist()}
    rejected = [i for i in items.values() if i["stage"] == "aesthetic" and i["state"] == "rejected"]
    assert rejected
    for entry in rejected:
        row = rows[entry["id"]]
        assert (entry["metric"], entry["value"], entry["threshold"]) == (row[Col.METRIC], row[Col.VALUE],
                                                                          row[Col.THRESHOLD])  # fmt: skip
        assert entry["config_hash"] == config.stage_hash("aesthetic") and entry["backend"] == row[Col.BACKEND]
        assert entry["time"] == row[Col.UPDATED_AT].isoformat() and entry["run_id"] == result.run_id
        assert entry["thumb"] == row[Col.THUMB_PATH] and (out / entry["thumb"]).is_file()
        assert set(entry["components"]) == {"aesthetic_iq_sharpness", "aesthetic_iq_exposure",
                                            "aesthetic_iq_contrast", "aesthetic_iq_colour"}  # fmt: skip
    sources = [i for i in items.values() if i["kind"] == "source"]
    assert all(i["components"] == {} and i["thumb"] is None for i in sources)
    text = explain(out, rejected[0]["id"])
    assert "aesthetic_iq_mean = " in text and "from: aesthetic_iq_sharpness=" in text
    assert f"thumbnail: {rejected[0]['thumb']}" in text and result.run_id in text


@pytest.mark.slow
def test_augment_adds_the_negatives_config(filtered_run, tmp_path):
    from augment.build import AugmentConfig
    from pipeline.augment_runner import run_augment
    from pipeline.config import RayConfig

    out, result, _ = filtered_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = run_augment(copy, AugmentConfig(max_side=64), RayConfig())
    assert _configs(copy)["negatives"] == ["negatives/shard-00000.parquet"]  # not its ledger or metadata
    assert _load(copy, tmp_path / "hf", "negatives").num_rows == manifest["negatives"] > 0
    assert _load(copy, tmp_path / "hf").num_rows == result.counts["clip"]["accepted"]
