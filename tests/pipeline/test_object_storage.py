"""Outputs and inputs on object storage (an S3-compatible server on 127.0.0.1, moto's), and the
driver's check of what it commits. Runs go through the CLI in a fresh process, as a user runs
them, with the storage settings in the environment (credentials are never javis config)."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.config import load_config
from pipeline.outputs import read_ledger, read_shards
from pipeline.runner import run
from schemas import Col
from stages.storage import Storage

pytestmark = pytest.mark.slow


def _javis(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.cli", "run", *args, "--preset", "demo-spine", "--quiet", "--num-cpus", "2"]
    full_env = {**os.environ, **env, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def reference(samples, ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    run([str(samples)], out, load_config("demo-spine", overrides=["ray.progress_bars=false"]), show_progress=False)
    return out


def _accepted(out) -> list[str]:
    return sorted(read_shards(out).column(Col.ID).to_pylist())


def test_a_run_writes_every_output_to_object_storage(samples, reference, s3_server, tmp_path):
    _, env = s3_server
    uri = f"s3://javis-test/{tmp_path.name}/run"
    done = _javis(env, "-i", str(samples), "-o", uri, "--set", f"ray.scratch_dir={tmp_path / 'scratch'}")
    assert done.returncode == 0, done.stderr[-3000:]
    store = Storage(uri)
    assert store.exists("manifest.json") and store.exists("config.json")
    assert _accepted(uri) == _accepted(reference)
    # a trainer reads the shards with pyarrow straight from s3://
    shards = pq.read_table(f"javis-test/{tmp_path.name}/run/shards", filesystem=store.fs)
    assert sorted(shards.column(Col.ID).to_pylist()) == _accepted(reference)
    for row in shards.to_pylist():  # every accepted clip is in the bucket, as recorded
        data = store.read_bytes(row[Col.MEDIA_PATH])
        assert len(data) == row[Col.MEDIA_SIZE_BYTES] and hashlib.sha256(data).hexdigest() == row[Col.MEDIA_SHA256]
        assert row[Col.CUT_FFMPEG_VERSION].startswith("ffmpeg version")
    clips = {f for f in store.list_files("media/clips")}
    assert clips == set(shards.column(Col.MEDIA_PATH).to_pylist())  # rejected clips were never encoded
    ledger = read_ledger(uri).to_pylist()  # every clip's thumbnail, rejected ones too, is in the bucket
    thumbs = {r[Col.THUMB_PATH] for r in ledger if r[Col.KIND] == "clip"}
    assert None not in thumbs and set(store.list_files("media/thumbs")) == thumbs
    assert all(store.read_bytes(t)[:3] == b"\xff\xd8\xff" for t in sorted(thumbs)[:3])  # JPEGs
    manifest = store.read_json("manifest.json")
    assert manifest["versions"]["ffmpeg_that_cut_clips"] and manifest["files"]["generation"]
    assert not list((tmp_path / "scratch").rglob("*.mp4"))  # work files were cleaned up
    # a second run: nothing to redo, new generation of outputs, the old one removed
    again = _javis(env, "-i", str(samples), "-o", uri)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(store.list_files("ledger")) == 1  # the older generation was removed after the manifest
    assert read_ledger(uri).num_rows == read_ledger(reference).num_rows
    # the dataset card's globs pick exactly the committed generation's files
    card = yaml.safe_load(store.read_bytes("README.md").decode().split("---\n")[1])
    generation = store.read_json("manifest.json")["files"]["generation"]
    listing = [f for d in ("shards", "rejections", "ledger", "sources", "_work") for f in store.list_files(d)]
    for config in card["configs"]:
        glob = config["data_files"][0]["path"]
        matched = [f for f in listing if fnmatch.fnmatch(f, glob)]
        assert matched and all(generation in f for f in matched), (glob, matched)
    # hard negatives of the clips on object storage, written there too
    augment = subprocess.run([sys.executable, "-m", "pipeline.cli", "augment", uri, "--set", "max_side=64",
                              "--num-cpus", "2"], env={**os.environ, **env, "RAY_AUTH_MODE": "disabled"},
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert augment.returncode == 0, augment.stderr[-3000:]
    (shard,) = [f for f in store.list_files("negatives", recursive=False) if "/shard-" in f]
    negatives = store.read_parquet(shard).to_pylist()
    assert len(negatives) == 4 * len(_accepted(reference))
    assert all(store.size(n["media_path"]) == n["media_size_bytes"] for n in negatives)


def test_sigkill_on_object_storage_then_resume(samples, reference, s3_server, tmp_path):
    _, env = s3_server
    uri = f"s3://javis-test/{tmp_path.name}/killed"
    store = Storage(uri)
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "-i", str(samples), "-o", uri, "--preset", "demo-spine",
           "--quiet", "--num-cpus", "1"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env={**os.environ, **env, "RAY_AUTH_MODE": "disabled"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not store.list_files("_work/parts") and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray workers, mid-run
    proc.wait()
    assert not store.exists("manifest.json"), "the run finished before it could be killed"
    done = _javis(env, "-i", str(samples), "-o", uri)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _accepted(uri) == _accepted(reference)
    ids = read_ledger(uri).column(Col.ID).to_pylist()
    assert len(ids) == len(set(ids)) == read_ledger(reference).num_rows


def test_inputs_on_object_storage_are_listed_and_fetched(samples, reference, s3_server, tmp_path):
    _, env = s3_server
    inputs = Storage(f"s3://javis-test/{tmp_path.name}/videos")
    for path in sorted(samples.iterdir()):
        if path.is_file():
            inputs.put_file(path, path.name)
    out = tmp_path / "out"
    done = _javis(env, "-i", inputs.root + "/", "-o", str(out), "--set", f"ray.scratch_dir={tmp_path / 'scratch'}")
    assert done.returncode == 0, done.stderr[-3000:]
    ledger = read_ledger(out).to_pylist()
    sources = [r for r in ledger if r[Col.KIND] == "source"]
    assert len(sources) == 12 and all(r[Col.SRC_PATH].startswith("s3://") for r in sources)
    by_name = {r[Col.INPUT].rsplit("/", 1)[-1]: r for r in sources}
    assert by_name["empty.mp4"][Col.REASON] == "empty_file" and by_name["corrupt.mp4"][Col.REASON] == "unreadable"
    assert len(_accepted(out)) == len(_accepted(reference))
    assert not list((tmp_path / "scratch").rglob("*.mp4"))  # fetched copies removed at the end


def test_an_accepted_clip_whose_file_is_gone_is_failed_then_redone(samples, ray_local, tmp_path):
    config = load_config("demo-spine", overrides=["ray.progress_bars=false"])
    out = tmp_path / "out"
    run([str(samples / "three_scenes.mp4")], out, config, show_progress=False)
    victim = read_shards(out).to_pylist()[0]
    (out / victim[Col.MEDIA_PATH]).unlink()  # a file lost after the run: the next run must notice
    second = run([str(samples / "three_scenes.mp4")], out, config, show_progress=False)
    row = next(r for r in read_ledger(out).to_pylist() if r[Col.ID] == victim[Col.ID])
    assert (row[Col.STATE], row[Col.STAGE], row[Col.ERROR_TYPE]) == ("failed", "cut", "MissingMedia")
    assert "where the driver reads the outputs" in row[Col.ERROR_MESSAGE]
    assert second.counts["clip"]["accepted"] == 2
    third = run([str(samples / "three_scenes.mp4")], out, config, show_progress=False)  # retried
    assert third.counts["clip"] == {"accepted": 3} and (out / victim[Col.MEDIA_PATH]).is_file()


def test_planning_lists_objects_without_a_request_per_object(s3_server, tmp_path):
    from pipeline.inputs import plan_sources
    from stages.ingest import IngestConfig

    bucket = Storage(f"s3://javis-test/{tmp_path.name}/plan")
    for name in ("a/one.mp4", "a/two.MKV", "a/notes.txt", "b/three.webm"):
        bucket.write_bytes(name, name.encode())
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"{bucket.location('b/three.webm')}\n")  # object URIs in a local list stay URIs
    all_rows = plan_sources([bucket.root + "/a", str(listing), bucket.location("a/missing.mp4")], IngestConfig())
    assert [r[Col.REASON] for r in all_rows if r[Col.SRC_PATH].endswith("notes.txt")] == ["not_media"]
    rows = [r for r in all_rows if r[Col.STATE] == "pending"]
    assert [r[Col.SRC_PATH].rsplit("/", 2)[-2:] for r in rows] == [["a", "one.mp4"], ["a", "two.MKV"],
                                                                   ["b", "three.webm"], ["a", "missing.mp4"]]  # fmt: skip
    again = plan_sources([bucket.root + "/a"], IngestConfig())
    assert [r[Col.ID] for r in again] == [r[Col.ID] for r in all_rows[:3]]  # deterministic ids
    bucket.write_bytes("a/one.mp4", b"new content")  # a changed object is a new source
    assert plan_sources([bucket.location("a/one.mp4")], IngestConfig())[0][Col.ID] != rows[0][Col.ID]
