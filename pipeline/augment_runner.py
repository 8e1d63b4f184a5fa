"""``javis augment OUT``: hard negatives for every accepted clip of a finished run, on Ray.

Pass 1 (a task per clip): supporting metadata, i.e. active sound intervals and moving objects.
The driver gathers every clip's objects into the trajectory pool. Pass 2 (a task per clip):
the negatives. Outputs under ``OUT/negatives/``: Parquet shards (one row per negative),
``metadata.parquet`` (intervals and encoded trajectories per clip, reusable), ``ledger.parquet``
(one row per clip: ``accepted`` with its number of negatives, or ``failed`` with the error) and
``manifest.json``. A clip that fails is recorded, never dropped; the run goes on. Reruns
rebuild byte-identical negatives (everything is seeded by the run seed and the clip id).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from augment.build import (
    AugmentConfig,
    build_context,
    clip_media,
    clip_metadata,
    clip_negatives,
    pick_donors,
    pool_for,
)
from augment.sync_check import check_negatives
from pipeline.card import write_card
from pipeline.config import RayConfig
from pipeline.outputs import MANIFEST as RUN_MANIFEST
from pipeline.outputs import new_generation, read_shards, require_run, write_table
from schemas import AUGMENT_LEDGER_SCHEMA, NEGATIVE_SCHEMA, Col, NegCol, State, conform
from stages.storage import Storage

LEDGER, METADATA, MANIFEST = "ledger.parquet", "metadata.parquet", "manifest.json"
_SYNC_COUNTS = "sync_counts_json"  # a result's per-family sync_check counts (not a ledger column)
_MAX_ERROR_CHARS = 2000
_META_SCHEMA = pa.schema(
    [("clip_id", pa.string()), ("active_json", pa.string()), ("trajectories", pa.list_(pa.large_binary())),
     (NegCol.ERROR_TYPE, pa.string()), (NegCol.ERROR_MESSAGE, pa.string())]
)  # fmt: skip


def _error(e: BaseException) -> dict[str, str]:
    return {NegCol.ERROR_TYPE: type(e).__name__, NegCol.ERROR_MESSAGE: (str(e) or repr(e))[:_MAX_ERROR_CHARS]}


def metadata_batch(batch: pa.Table, out: str, config: AugmentConfig) -> pa.Table:
    rows = []
    for row in batch.to_pylist():
        try:
            rows.append({**clip_metadata(row, Storage(out), config), NegCol.ERROR_TYPE: None, NegCol.ERROR_MESSAGE: None})
        except Exception as e:  # the row boundary: recorded as failed, the run goes on
            traceback.print_exc()
            rows.append({"clip_id": row[Col.ID], "active_json": None, "trajectories": [], **_error(e)})
    return pa.Table.from_pylist(rows, schema=_META_SCHEMA)


def _ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def negatives_batch(
    batch: pa.Table, out: str, config: AugmentConfig, media: dict[str, Any], pool: list[tuple[str, bytes]]
) -> pa.Table:
    results = []
    for row in batch.to_pylist():
        record = {NegCol.CLIP_ID: row[Col.ID], NegCol.SOURCE_ID: row[Col.SOURCE_ID]}
        try:
            donors = [{Col.ID: d, **media[d]} for d in pick_donors(row[Col.ID], sorted(media), config)]
            ctx = build_context(row, Storage(out), config, donors, pool_for(row[Col.ID], pool, config))
            negatives, skipped = clip_negatives(ctx, row, Storage(out), config)
            negatives, sync_counts = check_negatives(negatives, clip_media(row, Storage(out)), Storage(out),
                                                     config.sync_check, config.sync_margin, config.sync)  # fmt: skip
            record[_SYNC_COUNTS] = json.dumps(sync_counts)
            record.update({NegCol.STATE: State.ACCEPTED, NegCol.NUM_NEGATIVES: len(negatives),
                           NegCol.SKIPPED_JSON: json.dumps(skipped, sort_keys=True),
                           "negatives": _ipc(conform(negatives, NEGATIVE_SCHEMA))})  # fmt: skip
        except Exception as e:  # the row boundary: recorded as failed, the run goes on
            traceback.print_exc()
            record.update({NegCol.STATE: State.FAILED, NegCol.NUM_NEGATIVES: 0, "negatives": None, **_error(e)})
        results.append(record)
    return pa.Table.from_pylist(results)


def _media_refs(clips: pa.Table) -> dict[str, dict[str, Any]]:
    cols = [Col.ID, Col.MEDIA_PATH, Col.MEDIA_BYTES]
    return {
        r[Col.ID]: {Col.MEDIA_PATH: r[Col.MEDIA_PATH], Col.MEDIA_BYTES: r[Col.MEDIA_BYTES]}
        for r in clips.select(cols).to_pylist()
    }


def _map(ds: Any, fn: Any, **kwargs: Any) -> Any:
    return ds.map_batches(fn, fn_kwargs=kwargs, batch_format="pyarrow", batch_size=1, num_cpus=1)


def run_augment(out: str | os.PathLike, config: AugmentConfig, ray_config: RayConfig) -> dict[str, Any]:
    """Build the negatives of every accepted clip in ``out``; returns the negatives manifest."""
    import ray

    from pipeline.runner import library_versions, start_ray

    out = require_run(out)
    clips = read_shards(out).sort_by(Col.ID)
    if clips.num_rows == 0:
        raise ValueError(f"{out.root} has no accepted clips: nothing to augment (see `javis audit {out.root}`)")
    started = start_ray(ray_config)
    try:
        blocks = [clips.slice(i, 1) for i in range(clips.num_rows)]
        meta = pa.concat_tables(
            list(
                _map(ray.data.from_arrow(blocks), metadata_batch, out=out.root, config=config).iter_batches(
                    batch_format="pyarrow", batch_size=None
                )
            )
        )
        meta = meta.sort_by("clip_id")  # batches arrive in completion order: the pool must not
        pool = [(r["clip_id"], t) for r in meta.to_pylist() for t in r["trajectories"]]
        failed_meta = {r["clip_id"]: r for r in meta.to_pylist() if r[NegCol.ERROR_TYPE]}
        todo = [b for b in blocks if b.column(Col.ID)[0].as_py() not in failed_meta]
        results = []
        if todo:
            ds = _map(
                ray.data.from_arrow(todo),
                negatives_batch,
                out=out.root,
                config=config,
                media={k: v for k, v in _media_refs(clips).items() if k not in failed_meta},  # readable donors
                pool=pool,
            )
            results = [r for b in ds.iter_batches(batch_format="pyarrow", batch_size=None) for r in b.to_pylist()]
    finally:
        if started:
            ray.shutdown()
    return _write_outputs(out, config, clips, meta, failed_meta, results, library_versions())


def _write_outputs(out: Storage, config: AugmentConfig, clips: pa.Table, meta: pa.Table, failed_meta: dict,
                   results: list[dict], versions: dict) -> dict[str, Any]:  # fmt: skip
    folder = config.negatives_dir
    tables = [pa.ipc.open_stream(r.pop("negatives")).read_all() for r in results if r.get("negatives")]
    negatives = pa.concat_tables(tables) if tables else NEGATIVE_SCHEMA.empty_table()
    negatives = negatives.sort_by([(NegCol.CLIP_ID, "ascending"), (NegCol.FAMILY, "ascending")])
    source_of = dict(zip(clips.column(Col.ID).to_pylist(), clips.column(Col.SOURCE_ID).to_pylist()))
    sync_check: dict[str, dict[str, int]] = {}  # family -> {"checked": n, "flagged"/"dropped": m}
    for r in results:
        for family, counts in json.loads(r.pop(_SYNC_COUNTS, None) or "{}").items():
            total = sync_check.setdefault(family, dict.fromkeys(counts, 0))
            for key, n in counts.items():
                total[key] += n
    ledger_rows = [{k: v for k, v in r.items() if k != "negatives"} for r in results]
    ledger_rows += [{NegCol.CLIP_ID: c, NegCol.SOURCE_ID: source_of[c], NegCol.STATE: State.FAILED, NegCol.NUM_NEGATIVES: 0,
                     NegCol.ERROR_TYPE: r[NegCol.ERROR_TYPE], NegCol.ERROR_MESSAGE: r[NegCol.ERROR_MESSAGE]}
                    for c, r in failed_meta.items()]  # fmt: skip
    ledger = conform(sorted(ledger_rows, key=lambda r: r[NegCol.CLIP_ID]), AUGMENT_LEDGER_SCHEMA)
    # object storage: a new generation of shards beside the committed one, which goes after the
    # manifest; a local folder: the old shards go first and the new one is renamed into place
    old_shards = [f for f in out.list_files(folder, recursive=False) if f.rsplit("/", 1)[-1].startswith("shard-")]
    if out.is_local:
        for old in old_shards:
            out.delete(old)
    stem = "shard" if out.is_local else f"shard-{new_generation()}"
    files = [write_table(out, negatives, f"{folder}/{stem}-00000.parquet")]
    write_table(out, ledger, f"{folder}/{LEDGER}")
    write_table(out, meta.sort_by("clip_id"), f"{folder}/{METADATA}")
    _prune(out, f"{folder}/media", set(negatives.column(NegCol.MEDIA_PATH).to_pylist()))
    states = Counter(ledger.column(NegCol.STATE).to_pylist())
    manifest = {
        "config": dataclasses.asdict(config),
        "versions": versions,
        "funnel": {
            "stage": "augment",
            "unit": "clip",
            "in": clips.num_rows,
            "passed": states[State.ACCEPTED],
            "rejected": 0,
            "failed": states[State.FAILED],
        },  # fmt: skip
        "negatives": len(negatives),
        "by_operation": dict(
            Counter(
                f"{f}/{o}"
                for f, o in zip(
                    negatives.column(NegCol.FAMILY).to_pylist(), negatives.column(NegCol.OPERATION).to_pylist()
                )
            )
        ),  # fmt: skip
        "skipped_families": dict(
            Counter(f for r in ledger_rows for f in json.loads(r.get(NegCol.SKIPPED_JSON) or "{}"))
        ),
        "sync_check": dict(sorted(sync_check.items())),  # empty when augment.sync_check is off
        "easy_negatives": (
            f"enabled: audioldm2 from {config.easy.model_path}"
            if config.easy.enabled
            else "disabled: augment.easy.enabled is off (needs local AudioLDM2 weights)"
        ),
        "files": files,
    }
    out.write_json(f"{folder}/{MANIFEST}", manifest)
    if out.exists(RUN_MANIFEST):  # the dataset card gains the `negatives` config
        write_card(out, out.read_json(RUN_MANIFEST), folder)
    if not out.is_local:
        for old in old_shards:
            out.delete(old)
    return manifest


def _prune(out: Storage, media_dir: str, keep: set[str | None]) -> None:
    """Remove negative files no row points at (left by an earlier run with other settings)."""
    for rel in out.list_files(media_dir):
        if rel not in keep:
            out.delete(rel)
    if out.is_local:  # empty clip folders
        for folder in sorted((p for p in Path(out.local_path(media_dir)).rglob("*") if p.is_dir()), reverse=True):
            if not any(folder.iterdir()):
                shutil.rmtree(folder)
