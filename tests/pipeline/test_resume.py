"""Kill a run at an arbitrary moment, rerun the same command: same accepted clips, no
duplicates; failed items are retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.outputs import read_ledger, read_shards
from pipeline.runner import run
from pipeline.staging import Staging
from schemas import Col
from stages.storage import Storage

pytestmark = pytest.mark.slow


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "run", *args]


def _accepted(out: Path) -> list[str]:
    return sorted(read_shards(out).column(Col.ID).to_pylist())


@pytest.fixture(scope="module")
def reference(samples, ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    run([str(samples)], out, load_config("demo-spine", overrides=["ray.progress_bars=false"]), show_progress=False)
    return out


def test_sigkill_then_rerun_gives_the_same_clips(samples, reference, tmp_path):
    out = tmp_path / "killed"
    # one CPU: sources finish one after another, so the kill lands mid-run
    args = _cli("-i", str(samples), "-o", str(out), "--preset", "demo-spine", "--quiet", "--num-cpus", "1")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    parts = out / "_work" / "parts"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(parts.glob("part-*.parquet")) and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray workers, mid-run
    proc.wait()
    assert not (out / "manifest.json").exists(), "the run finished before it could be killed"
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _accepted(out) == _accepted(reference)
    ids = read_ledger(out).column(Col.ID).to_pylist()
    assert len(ids) == len(set(ids)) == read_ledger(reference).num_rows


def test_failed_items_are_retried_on_the_next_run(samples, reference, tmp_path):
    out = tmp_path / "flaky"
    # a cut time-out no FFmpeg can meet: every clip that reaches the cut fails
    flaky = load_config("demo-spine", overrides=["ray.progress_bars=false", "cut.timeout_s=0.001"])
    first = run([str(samples)], out, flaky, show_progress=False)
    failed = {f.stage: f.failed for f in first.funnel}
    assert failed["cut"] == 8 and first.counts["clip"].get("accepted", 0) == 0
    ledger = read_ledger(out).to_pylist()
    assert {r[Col.ERROR_TYPE] for r in ledger if r[Col.STATE] == "failed"} == {"FFmpegError"}
    second = run(
        [str(samples)], out, load_config("demo-spine", overrides=["ray.progress_bars=false"]), show_progress=False
    )
    # final: the 3 sources rejected before the scene cut, and the 3 whose only clip the sound
    # check rejected (it runs before the encode, so their clips never reached the failing cut)
    assert second.num_skipped_sources == 6
    assert _accepted(out) == _accepted(reference)
    ledger = read_ledger(out).to_pylist()
    assert Counter(r[Col.STATE] for r in ledger)["failed"] == 0
    attempts = Counter((r[Col.STATE], r[Col.REASON], r[Col.ATTEMPT]) for r in ledger if r[Col.KIND] == "clip")
    # every clip that failed at the cut came back in its source's second attempt; the sound
    # check's rejections were final in the first
    assert {a for (state, _, a) in attempts if state == "accepted"} == {2}
    assert {a for (_, reason, a) in attempts if reason in ("silent", "partial_audio")} == {1}


def test_a_source_whose_decode_breaks_midway_keeps_none_of_its_clips(samples, ray_local, tmp_path):
    from tests.stages.test_analysis import _break_after

    inputs = tmp_path / "in"
    inputs.mkdir()
    # the decoder gives up on the last fifth: the first scene's clip has already left by then
    _break_after(samples / "three_scenes.mp4", inputs / "broken.mp4", 0.8)
    (inputs / "fine.mp4").write_bytes((samples / "short_tail.mp4").read_bytes())
    out = tmp_path / "out"
    config = load_config("demo-spine", overrides=["ray.progress_bars=false"])
    for attempt in (1, 2):  # failed again on the rerun, and again nothing of it is kept
        result = run([str(inputs)], out, config, show_progress=False)
        ledger = read_ledger(out).to_pylist()
        broken = [r for r in ledger if Path(r[Col.INPUT]).name == "broken.mp4"]
        assert [(r[Col.KIND], r[Col.STATE], r[Col.STAGE], r[Col.ATTEMPT]) for r in broken] == [
            ("source", "failed", "scene_cut", attempt)
        ]
        assert "undecodable packets" in broken[0][Col.ERROR_MESSAGE]
        assert result.counts["clip"] == {"accepted": 1, "rejected": 1}  # short_tail's two clips
        # its first clip did leave (and was encoded) before the failure: staged, never committed
        staged = Staging(Storage(out)).load().to_pylist()
        assert [r[Col.STATE] for r in staged if r[Col.SOURCE_ID] == broken[0][Col.ID] and r[Col.KIND] == "clip"] == [
            "accepted"
        ]
        assert not list((out / "media" / "clips" / broken[0][Col.ID]).glob("*"))  # its file was pruned
        assert not list((out / "media" / "thumbs" / broken[0][Col.ID]).glob("*"))  # its thumbnail was removed


def test_finished_rows_are_staged_in_parts_of_many_rows_but_never_held_long(tmp_path):
    from pipeline.staging import StagingBuffer
    from schemas import WORK_SCHEMA, conform

    staging = Staging(Storage(tmp_path))
    buffer = StagingBuffer(staging, max_rows=3, max_bytes=1 << 30, max_wait_s=3600)
    rows = [conform([{Col.ID: f"c{i}", Col.KIND: "clip", Col.SOURCE_ID: "s", Col.STATE: "accepted"}], WORK_SCHEMA)
            for i in range(7)]  # fmt: skip
    for table in rows:
        buffer.add(table)
    assert len(staging.parts()) == 2  # 3 + 3, one row still buffered
    buffer.flush()
    assert sorted(staging.load().column(Col.ID).to_pylist()) == [f"c{i}" for i in range(7)]
    by_size = StagingBuffer(Staging(Storage(tmp_path / "b")), max_rows=1000, max_bytes=1, max_wait_s=3600)
    by_size.add(rows[0])  # a row over the byte budget is staged at once (embedded clip bytes)
    assert len(by_size.staging.parts()) == 1
    by_time = StagingBuffer(Staging(Storage(tmp_path / "t")), max_rows=1000, max_bytes=1 << 30, max_wait_s=0.0)
    by_time.add(rows[0])
    assert len(by_time.staging.parts()) == 1
