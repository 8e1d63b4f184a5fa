"""A multi-node Ray cluster on one machine (a head and two worker nodes, started as a cluster
whose nodes the run did not start): runs through ``--address`` to object storage, the driver's
settings reaching workers that never had them, a worker node lost mid-run, and a node that
does not share the output folder."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time

import pytest

from pipeline.config import load_config
from pipeline.outputs import read_ledger, read_shards
from pipeline.runner import run
from schemas import Col
from stages.ffmpeg import ffmpeg_exe
from stages.storage import Storage

pytestmark = pytest.mark.slow

WRAPPER_VERSION = "ffmpeg version javis-test-wrapper"


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    """Head + 2 worker nodes, 1 CPU each, started before any JAVIS_* variable exists: their
    workers see only what a run's runtime_env gives them."""
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("JAVIS_")}
    try:
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        workers = [nodes.add_node(num_cpus=1) for _ in range(2)]
        nodes.wait_for_nodes()
    finally:
        os.environ.update(saved)
    yield nodes, workers
    nodes.shutdown()


@pytest.fixture(scope="module")
def reference(samples, ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    run([str(samples)], out, load_config("demo-spine", overrides=["ray.progress_bars=false"]), show_progress=False)
    return sorted(read_shards(out).column(Col.ID).to_pylist()), read_ledger(out).num_rows


@pytest.fixture(scope="module")
def ffmpeg_wrapper(tmp_path_factory):
    """An FFmpeg that names itself differently: which binary cut a clip is visible in its row."""
    path = tmp_path_factory.mktemp("bin") / "ffmpeg-wrapper"
    path.write_text(f'#!/bin/sh\n[ "$1" = "-version" ] && echo "{WRAPPER_VERSION}" && exit 0\nexec "{ffmpeg_exe()}" "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _run_cli(address: str, env: dict[str, str], *args: str, background: bool = False):
    cmd = [sys.executable, "-m", "pipeline.cli", "run", *args, "--preset", "demo-spine", "--quiet", "--address", address]
    full_env = {**os.environ, **env, "RAY_AUTH_MODE": "disabled"}
    if background:
        return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=600)


def test_a_run_on_the_cluster_gives_workers_the_drivers_settings(cluster, s3_server, samples, reference, ffmpeg_wrapper,
                                                                 tmp_path):  # fmt: skip
    nodes, _ = cluster
    _, env = s3_server
    uri = f"s3://javis-test/{tmp_path.name}/cluster"
    done = _run_cli(nodes.address, {**env, "JAVIS_FFMPEG": str(ffmpeg_wrapper)}, "-i", str(samples), "-o", uri)
    assert done.returncode == 0, done.stderr[-3000:]
    accepted, num_rows = reference
    assert sorted(read_shards(uri).column(Col.ID).to_pylist()) == accepted
    ledger = read_ledger(uri)
    assert ledger.num_rows == num_rows == len(set(ledger.column(Col.ID).to_pylist()))
    # every clip was cut by the driver's FFmpeg, though no node had JAVIS_FFMPEG of its own
    cut = {v for v in ledger.column(Col.CUT_FFMPEG_VERSION).to_pylist() if v}
    assert cut == {WRAPPER_VERSION}
    assert Storage(uri).read_json("manifest.json")["versions"]["ffmpeg_that_cut_clips"] == [WRAPPER_VERSION]


def test_a_worker_node_lost_mid_run_costs_retries_never_rows(cluster, s3_server, samples, reference, tmp_path):
    nodes, workers = cluster
    _, env = s3_server
    uri = f"s3://javis-test/{tmp_path.name}/lost"
    store = Storage(uri)
    proc = _run_cli(nodes.address, env, "-i", str(samples), "-o", uri, background=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not store.list_files("_work/parts") and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the run finished before a node could be lost"
    nodes.remove_node(workers[0], allow_graceful=False)  # a spot node reclaimed mid-run
    proc.communicate(timeout=600)
    # the run either completed on the remaining nodes or stopped; a rerun converges either way
    done = _run_cli(nodes.address, env, "-i", str(samples), "-o", uri)
    assert done.returncode == 0, done.stderr[-3000:]
    accepted, num_rows = reference
    assert sorted(read_shards(uri).column(Col.ID).to_pylist()) == accepted
    ids = read_ledger(uri).column(Col.ID).to_pylist()
    assert len(ids) == len(set(ids)) == num_rows


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_node_that_does_not_share_the_output_folder_stops_the_run(cluster, samples, tmp_path):
    """A node in its own mount namespace, with an empty tmpfs over the output's parent folder:
    what it writes there the driver never sees, as on a machine without the shared disk."""
    nodes, _ = cluster
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not available")
    shared = tmp_path / "shared"
    shared.mkdir()
    before = _num_alive(nodes.address)
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    script = (f"mount -t tmpfs none {shared} && exec {ray_bin} start --address={nodes.address} --num-cpus=1 "
              f"--node-manager-port={_free_port()} --block")  # fmt: skip
    node = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _num_alive(nodes.address) <= before:
            if node.poll() is not None:
                pytest.skip(f"no separate mount namespace here: {node.stdout.read()[-500:]}")
            time.sleep(0.5)
        done = _run_cli(nodes.address, {}, "-i", str(samples), "-o", str(shared / "out"))
        assert done.returncode != 0
        assert "not shared by every node" in done.stderr and "driver cannot see it" in done.stderr
        assert "Traceback" not in done.stderr  # a clear message, not a crash
        assert not (shared / "out" / "shards").exists()  # no work started
    finally:
        node.terminate()
        node.wait(timeout=60)


def _num_alive(address: str) -> int:
    """Alive nodes of the cluster at ``address`` (asked from another process: this one already
    runs the test session's own Ray)."""
    code = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "RAY_AUTH_MODE": "disabled"})  # fmt: skip
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0
