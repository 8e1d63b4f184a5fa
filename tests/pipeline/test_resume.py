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
from schemas import Col

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
    assert failed["cut"] == 11 and first.counts["clip"].get("accepted", 0) == 0
    ledger = read_ledger(out).to_pylist()
    assert {r[Col.ERROR_TYPE] for r in ledger if r[Col.STATE] == "failed"} == {"FFmpegError"}
    second = run(
        [str(samples)], out, load_config("demo-spine", overrides=["ray.progress_bars=false"]), show_progress=False
    )
    assert second.num_skipped_sources == 3  # the sources rejected before the cut are final
    assert _accepted(out) == _accepted(reference)
    ledger = read_ledger(out).to_pylist()
    assert Counter(r[Col.STATE] for r in ledger)["failed"] == 0
    retried = {r[Col.ATTEMPT] for r in ledger if r[Col.KIND] == "clip"}
    assert retried == {2}
