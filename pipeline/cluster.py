"""What a run needs from a cluster whose nodes were started elsewhere: the driver's settings on
every worker, and an output location every node can write and the driver can read.

* :func:`runtime_env`: the Ray ``runtime_env`` of a run. Its environment variables are the
  ones javis reads (``JAVIS_*``, the scratch folder); joining a cluster, it also carries javis'
  own packages, so every node runs the driver's code. Storage credentials are never forwarded:
  each node takes them from its own environment or instance role, so they never travel in the
  job's configuration (or its logs).
* :func:`check_nodes_share_output`: a probe task pinned to each node writes a small file to the
  output location; the driver reads every one back. A node whose writes the driver cannot see
  (a local folder the nodes do not share) or that cannot write at all stops the run before any
  work, with the node and the reason.
"""

from __future__ import annotations

import importlib
import logging
import os
import uuid
from typing import Any

from pipeline.config import RayConfig
from stages.storage import SCRATCH_ENV, Storage, clear_source_cache

log = logging.getLogger(__name__)

PROBE_DIR = "_work/probe"
PROBE_TIMEOUT_S = 120.0
# javis' own packages: what a node started elsewhere needs of the driver's code
_PACKAGES = ("pipeline", "stages", "schemas", "augment", "model", "prompts")


def worker_env(ray_config: RayConfig) -> dict[str, str]:
    """The settings javis reads from the environment, as the driver has them."""
    env = {k: v for k, v in os.environ.items() if k.startswith("JAVIS_")}
    if ray_config.scratch_dir:
        env[SCRATCH_ENV] = ray_config.scratch_dir
    return env


def runtime_env(ray_config: RayConfig) -> dict[str, Any]:
    env: dict[str, Any] = {"env_vars": worker_env(ray_config)}
    if ray_config.address and ray_config.ship_code:
        env["py_modules"] = [os.path.dirname(importlib.import_module(p).__file__) for p in _PACKAGES]
    return env


def _write_probe(root: str, rel: str, token: str) -> str | None:
    """On one node: write the probe; the error as text when it cannot."""
    try:
        Storage(root).write_bytes(rel, token.encode())
        return None
    except Exception as e:  # reported by the driver with the node's name
        return f"{type(e).__name__}: {e}"


def _alive_worker_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n["Alive"] and (n["Resources"].get("CPU") or n["Resources"].get("GPU"))]


def clear_scratch_everywhere() -> None:
    """At the end of a run: every node drops the sources it fetched from object storage."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    clear = ray.remote(num_cpus=0, max_retries=0)(clear_source_cache)
    refs = [
        clear.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=True)).remote()
        for n in _alive_worker_nodes()
    ]
    ray.wait(refs, num_returns=len(refs), timeout=PROBE_TIMEOUT_S)


def check_nodes_share_output(storage: Storage) -> int:
    """Raise ``ValueError`` unless every alive node with CPUs or GPUs can write to ``storage``
    and the driver reads back what each wrote; returns the number of nodes checked. A single
    node started by this run has nothing to check."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = _alive_worker_nodes()
    if len(nodes) <= 1 and storage.is_local:
        return len(nodes)
    token = uuid.uuid4().hex
    probe = ray.remote(num_cpus=0, max_retries=0)(_write_probe)
    refs = {}
    for node in nodes:
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        rel = f"{PROBE_DIR}/{token}-{node['NodeID'][:12]}.txt"
        refs[node["NodeManagerAddress"], rel] = probe.options(scheduling_strategy=strategy).remote(storage.root, rel, token)
    problems = []
    try:
        for (address, rel), ref in refs.items():
            try:
                error = ray.get(ref, timeout=PROBE_TIMEOUT_S)
            except ray.exceptions.RayError as e:  # the node went away since it was listed: it runs nothing
                log.warning("node %s could not be probed (%s): skipped", address, type(e).__name__)
                continue
            if error is not None:
                problems.append(f"node {address} cannot write to {storage.location(rel)}: {error}")
            elif storage.size(rel) != len(token):
                problems.append(
                    f"node {address} wrote {storage.location(rel)} but the driver cannot see it: "
                    "the nodes do not share this folder"
                )
    finally:
        for _, rel in refs:
            storage.delete(rel)
    if problems:
        raise ValueError(
            "the output location is not shared by every node: "
            + "; ".join(problems)
            + ". Use object storage (--output s3://bucket/prefix) or a folder every node mounts."
        )
    return len(nodes)
