"""Run the curation pipeline end to end: plan, resume, execute on Ray, write outputs.

1. Plan: expand ``--input`` values into source rows with deterministic ids.
2. Resume: read staged rows of earlier runs into the same folder; complete sources are
   skipped, the rest (never seen, failed, or interrupted) run again as a new attempt.
3. Execute: one Ray Dataset over the pending sources; finished rows are staged (atomically)
   every few hundred rows or seconds, so a SIGKILL loses at most those and the rows in flight.
4. Finish: rows still pending after the last stage are accepted; outputs are rebuilt from the
   staged rows of the planned sources, the invariant is checked, the manifest written last.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import logging
import os
import platform
import posixpath
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import __version__
from pipeline.card import write_card
from pipeline.cluster import check_nodes_share_output, clear_scratch_everywhere, runtime_env
from pipeline.config import Config, RayConfig
from pipeline.dag import (
    STAGES,
    TARGET_BLOCK_BYTES,
    active_stages,
    annotation_summary,
    apply_balance,
    build_dataset,
    check_gpus,
    funnel_stages,
)
from pipeline.funnel import FunnelRow, check_invariant, compute_funnel, count_states
from pipeline.inputs import FileIdCache, SkippedInputs, check_plan, plan_sources
from pipeline.outputs import CONFIG_JSON, MANIFEST, drop_generations, prune_media, write_outputs
from pipeline.staging import Staging, StagingBuffer, complete_sources, without_orphan_clips
from schemas import SCHEMA_VERSION, WORK_SCHEMA, Col, Kind, State, conform
from stages.base import mark_failed
from stages.ffmpeg import ffmpeg_info, ffmpeg_version, select_ffmpeg
from stages.storage import SCRATCH_ENV, Storage

log = logging.getLogger(__name__)

WORK_DIR = "_work"
_LIBRARIES = ("ray", "pyarrow", "av", "scenedetect-headless", "yt-dlp", "numpy", "opencv-python-headless")


@dataclasses.dataclass
class RunResult:
    output_dir: Path | str  # a local folder, or the object-storage URI
    funnel: list[FunnelRow]
    counts: dict[str, dict[str, int]]
    num_skipped_sources: int
    wall_s: float
    run_id: str = ""  # this invocation's id, on every row it decided
    skipped_inputs: dict[str, int] = dataclasses.field(default_factory=dict)  # files with no row, by reason


def new_run_id() -> str:
    """One ``javis run`` invocation: its UTC start and 6 random hex digits (sortable, unique)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def with_run_id(batch: pa.Table, run_id: str) -> pa.Table:
    """``batch`` with every row's ``run_id`` set: the rows this invocation decided."""
    column = pa.array([run_id] * batch.num_rows, pa.string())
    idx = batch.schema.get_field_index(Col.RUN_ID)
    return batch.append_column(Col.RUN_ID, column) if idx < 0 else batch.set_column(idx, Col.RUN_ID, column)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "javis": __version__}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["ffmpeg"] = ffmpeg_version()
    versions["ffmpeg_binary"] = ffmpeg_info()  # path, source (env|path|bundled), why it was chosen
    return versions


def start_ray(ray_config: RayConfig) -> bool:
    """Join ``ray_config.address`` or start an embedded local Ray, its workers with the driver's
    settings (:func:`runtime_env`); True if we started it."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local runs: no token prompts
    if ray_config.scratch_dir:
        os.environ[SCRATCH_ENV] = ray_config.scratch_dir  # the driver's own work files too
    import ray

    if ray.is_initialized():
        return False
    if ray_config.address:
        ray.init(address=ray_config.address, log_to_driver=True, runtime_env=runtime_env(ray_config))
    else:
        store = ray_config.object_store_mb * 2**20 if ray_config.object_store_mb else None
        ray.init(
            address="local",  # a new embedded Ray, even where a `ray start` cluster runs on this machine
            num_cpus=ray_config.num_cpus,
            object_store_memory=store,
            include_dashboard=False,
            runtime_env=runtime_env(ray_config),
        )
    return True


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="source", desc="javis", disable=not enabled or total == 0, file=sys.stderr)


def _execute(
    pending: pa.Table, config: Config, storage: Storage, staging: Staging, show_progress: bool, run_id: str
) -> None:
    import ray

    started = start_ray(config.ray)
    ctx = ray.data.DataContext.get_current()
    block_bytes = ctx.target_max_block_size
    try:
        # a cluster joined by address may add GPU nodes on demand; a local Ray cannot
        resources = ray.cluster_resources()
        check_gpus(config, resources.get("GPU", 0.0), autoscaling=bool(config.ray.address))
        check_nodes_share_output(storage)
        ctx.enable_progress_bars = config.ray.progress_bars and show_progress
        ctx.target_max_block_size = TARGET_BLOCK_BYTES
        fixed_cpus = None if config.ray.address else resources.get("CPU")  # a joined cluster may autoscale
        ds = build_dataset(pending, config, storage.root, available_cpus=fixed_cpus)
        tally = _Tally()
        buffer = StagingBuffer(staging)
        with _progress(pending.num_rows, show_progress) as bar:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                batch = with_run_id(_accept_pending(batch), run_id)
                buffer.add(batch)
                bar.update(tally.add(batch))
                bar.set_postfix_str(tally.line(), refresh=False)
        buffer.flush()
        clear_scratch_everywhere()
    finally:
        ctx.target_max_block_size = block_bytes  # this process may run other datasets (augment, latents)
        if started:
            ray.shutdown()


class _Tally:
    """Running counts for the progress line: accepted clips, then rejected/failed per stage."""

    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()
        self.ended: Counter[tuple[str, str]] = Counter()

    def add(self, batch: pa.Table) -> int:
        cols = [batch.column(c).to_pylist() for c in (Col.KIND, Col.STATE, Col.STAGE)]
        for kind, state, stage in zip(*cols):
            if state == State.ACCEPTED:
                self.accepted[kind] += 1
            else:
                self.ended[(state, stage)] += 1
        return cols[0].count(Kind.SOURCE)

    def line(self) -> str:
        parts = [f"clips ok={self.accepted[Kind.CLIP]}"]
        for state in (State.REJECTED, State.FAILED):
            stages = [f"{stage}={n}" for (s, stage), n in sorted(self.ended.items()) if s == state]
            if stages:
                parts.append(f"{state}: " + " ".join(stages))
        return " | ".join(parts)


class MissingMedia(Exception):
    """An accepted clip whose file is not where the driver reads the outputs."""


def verify_media(
    storage: Storage, rows: pa.Table, staging: Staging, clips_dir: str, cut_hash: str, run_id: str | None = None
) -> tuple[pa.Table, int]:
    """Check, before anything is committed, that every accepted clip's file is at its recorded
    location with its recorded size, read through the output's own filesystem (a worker that
    wrote to a disk the driver cannot see, a file deleted since). A clip that fails becomes
    ``failed`` at ``cut`` (its source is retried by the next run) and the change is staged."""
    cols = [Col.KIND, Col.STATE, Col.MEDIA_PATH, Col.MEDIA_SIZE_BYTES]
    # one listing, not a request per clip; normalised paths ("media/clips//x" for a folder set with a slash)
    found = {posixpath.normpath(rel): size for rel, size in storage.file_sizes(clips_dir).items()}
    bad = []
    for i, (kind, state, path, size) in enumerate(zip(*(rows.column(c).to_pylist() for c in cols))):
        if kind == Kind.CLIP and state == State.ACCEPTED and path is not None and found.get(posixpath.normpath(path)) != size:
            bad.append(i)
    if not bad:
        return rows, 0
    records = rows.to_pylist()
    for i in bad:
        row = records[i]
        found_size = found.get(posixpath.normpath(row[Col.MEDIA_PATH]))
        why = "no file" if found_size is None else f"{found_size} bytes instead of {row[Col.MEDIA_SIZE_BYTES]}"
        error = MissingMedia(f"{why} at {storage.location(row[Col.MEDIA_PATH])}, where the driver reads the outputs")
        mark_failed(row, "cut", error, cut_hash)
        row[Col.RUN_ID] = run_id
        log.warning("accepted clip %s: %s", row[Col.ID], error)
    changed = conform([records[i] for i in bad], WORK_SCHEMA)
    staging.write(changed)
    return conform(records, WORK_SCHEMA), len(bad)


def _ffmpeg_versions(rows: pa.Table) -> list[str]:
    """Every FFmpeg that encoded a clip of this output (workers may differ from the driver)."""
    return sorted({v for v in rows.column(Col.CUT_FFMPEG_VERSION).to_pylist() if v})


def encode_summary(rows: pa.Table) -> dict[str, Any]:
    """How much of the encoding was kept: clips (and seconds) the cut encoded vs accepted. Every
    filter runs before the encode, so only the cut's own A/V check and balancing (which needs
    every accepted clip) can reject an encoded clip."""
    clips = (
        rows.filter(pc.equal(rows.column(Col.KIND), Kind.CLIP))
        .select([Col.STATE, Col.STAGE, Col.REASON, Col.MEDIA_SIZE_BYTES, Col.CLIP_DURATION_S])
        .to_pylist()
    )
    encoded = [c for c in clips if c[Col.MEDIA_SIZE_BYTES] is not None]
    accepted = [c for c in clips if c[Col.STATE] == State.ACCEPTED]
    encoded_s = sum(c[Col.CLIP_DURATION_S] for c in encoded)
    accepted_s = sum(c[Col.CLIP_DURATION_S] for c in accepted)
    after = Counter(
        f"{c[Col.STAGE]}:{c[Col.REASON] or c[Col.STATE]}" for c in encoded if c[Col.STATE] != State.ACCEPTED
    )
    return {
        "num_clips_encoded": len(encoded),
        "encoded_s": round(encoded_s, 3),
        "num_clips_accepted": len(accepted),
        "accepted_s": round(accepted_s, 3),
        "accepted_share_of_encoded_s": round(accepted_s / encoded_s, 4) if encoded_s else None,
        "encoded_then_not_accepted": dict(sorted(after.items())),
    }


def _accept_pending(batch: pa.Table) -> pa.Table:
    """A row still pending after the last stage passed every stage."""
    state = batch.column(Col.STATE)
    is_pending = pc.equal(state, State.PENDING)
    idx = batch.schema.get_field_index(Col.STATE)
    return batch.set_column(idx, Col.STATE, pc.if_else(is_pending, State.ACCEPTED, state))


def _plan(inputs: Sequence[str], config: Config, storage: Storage, skipped: SkippedInputs) -> list[dict[str, Any]]:
    """The sources to curate (files skipped under the inputs are counted in ``skipped``); a plan
    with nothing to curate raises before the output location is created."""
    cache = FileIdCache(storage, f"{WORK_DIR}/file_ids.json")
    plan = plan_sources(inputs, config.ingest, cache, skipped)
    check_plan(plan, inputs)
    if storage.is_local:
        Path(storage.base).mkdir(parents=True, exist_ok=True)
    storage.write_json(CONFIG_JSON, config.to_dict())
    cache.save()
    return plan


def run(inputs: Sequence[str], output_dir: str | os.PathLike, config: Config, show_progress: bool = True) -> RunResult:
    """Curate ``inputs`` into ``output_dir`` (a local folder or an object-storage URI);
    rerunning the same command resumes."""
    t0 = time.monotonic()
    started_at = dt.datetime.now(dt.timezone.utc)
    run_id = new_run_id()
    select_ffmpeg()  # logs which FFmpeg runs and why; an unusable $JAVIS_FFMPEG stops here, before OUT exists
    storage = Storage(output_dir)
    skipped = SkippedInputs()
    plan = _plan(inputs, config, storage, skipped)
    staging = Staging(storage)
    status = complete_sources(staging.load())
    pending = []
    for row in plan:
        attempt = status.get(row[Col.ID])
        if attempt is not None and attempt > 0:
            continue  # complete: nothing to redo
        row[Col.ATTEMPT] = 1 if attempt is None else 1 - attempt  # next attempt after an incomplete one
        pending.append(row)
    num_skipped = len(plan) - len(pending)
    log.info("%d sources planned, %d already complete, %d to run", len(plan), num_skipped, len(pending))
    if pending:
        _execute(conform(pending, WORK_SCHEMA), config, storage, staging, show_progress, run_id)
    return _finish(storage, config, plan, staging, num_skipped, t0, started_at, inputs, run_id, skipped)


def _finish(
    storage: Storage,
    config: Config,
    plan: list[dict[str, Any]],
    staging: Staging,
    num_skipped: int,
    t0: float,
    started_at: dt.datetime,
    inputs: Sequence[str],
    run_id: str,
    skipped: SkippedInputs | None = None,
) -> RunResult:
    planned_ids = {row[Col.ID] for row in plan}
    staged = staging.load()  # may hold sources of earlier runs with other inputs: kept, not reported
    current = without_orphan_clips(staged)
    rows = current.filter(pc.is_in(current.column(Col.SOURCE_ID), value_set=pa.array(sorted(planned_ids))))
    rows, num_missing = verify_media(storage, rows, staging, config.cut.clips_dir, config.stage_hash("cut"), run_id)
    specs = active_stages(config)
    rows = apply_balance(rows, config)
    funnel = compute_funnel(rows, funnel_stages(config), len(planned_ids))
    check_invariant(rows, funnel, planned_ids)
    files = write_outputs(storage, rows, config.output)
    num_pruned = prune_media(
        storage, current, config.cut.clips_dir, config.output.keep_rejected_media, config.scene_cut.thumbs_dir
    )
    staging.compact(staging.load())
    counts = count_states(rows)
    wall_s = time.monotonic() - t0
    manifest = {
        "javis_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,  # this invocation; rows reused from earlier ones keep theirs
        "run_ids": sorted({r for r in rows.column(Col.RUN_ID).to_pylist() if r}),
        "run": {
            "started_at": started_at.isoformat(),
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "wall_s": round(wall_s, 3),
            "inputs": list(inputs),
            "num_sources_planned": len(planned_ids),
            "num_sources_skipped_as_complete": num_skipped,
            "num_media_files_pruned": num_pruned,
            "num_accepted_clips_whose_media_was_missing": num_missing,
        },
        "config": config.to_dict(),
        "stages": [s.name for s in specs],
        "disabled_stages": [s.name for s in STAGES if s not in specs],
        "config_hashes": {s.name: config.stage_hash(s.name) for s in specs},
        "annotation": annotation_summary(config),
        "versions": {**library_versions(), "ffmpeg_that_cut_clips": _ffmpeg_versions(rows)},
        "funnel": [row.to_json() for row in funnel],
        "counts": counts,
        "encoded": encode_summary(rows),
        "files": files,
        "invariant": "in = passed + rejected + failed holds for every stage; every input has one terminal state",
        # files under the input folders that got no ledger row, by reason (hidden, sidecar,
        # extension_filter): with the ledger, every file there is accounted for
        "skipped_inputs": skipped.to_json() if skipped is not None else {},
    }
    write_card(storage, manifest)  # names the files just written; the manifest commits them
    storage.write_json(MANIFEST, manifest)  # last: it commits this run's outputs
    drop_generations(storage, files.get("generation"))
    location = Path(storage.base) if storage.is_local else storage.root
    skipped_counts = dict(sorted(skipped.counts.items())) if skipped is not None else {}
    return RunResult(location, funnel, counts, num_skipped, wall_s, run_id, skipped_counts)
