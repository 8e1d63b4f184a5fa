"""Write a run's outputs from its ledger rows, each directory replaced atomically:

``sources/``            one row per source (SOURCE_SCHEMA)
``shards/``             accepted clips, sharded by size, zstd (CLIP_SCHEMA)
``rejections/<stage>/`` one row per rejected source or clip (REJECTION_SCHEMA)
``ledger/``             every source and clip with its terminal state and raw scores
``manifest.json``       resolved config, library versions, funnel, output files (written last)

Outputs are rebuilt from the staged rows on every run and sorted by id, so the same inputs
and config always give the same files, and a rerun can never add duplicates.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas import CLIP_SCHEMA, LEDGER_SCHEMA, REJECTION_SCHEMA, SOURCE_SCHEMA, Col, Kind, State, conform

SOURCES_DIR, SHARDS_DIR, REJECTIONS_DIR, LEDGER_DIR = "sources", "shards", "rejections", "ledger"
MANIFEST, CONFIG_JSON = "manifest.json", "config.json"


def _replace_dir(final: Path, fill: Callable[[Path], None]) -> None:
    """Build a directory under a temporary name, then swap it in."""
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    fill(tmp)
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def _writer_kwargs(compression: str, level: int | None) -> dict[str, Any]:
    if compression == "none":
        return {"compression": "none"}
    return {"compression": compression, "compression_level": level if compression == "zstd" else None}


def write_table(table: pa.Table, path: Path, compression: str = "zstd", level: int | None = 3) -> dict[str, Any]:
    pq.write_table(table, path, **_writer_kwargs(compression, level))
    return {"path": path.name, "rows": table.num_rows, "bytes": path.stat().st_size}


def _shard_slices(table: pa.Table, target_bytes: float, max_rows: int) -> list[tuple[int, int]]:
    """Row ranges whose in-memory size stays near ``target_bytes`` (at least one row each)."""
    slices, start, size = [], 0, 0.0
    per_row = [table.slice(i, 1).nbytes for i in range(table.num_rows)]
    for i, nbytes in enumerate(per_row):
        if i > start and (size + nbytes > target_bytes or i - start >= max_rows):
            slices.append((start, i))
            start, size = i, 0.0
        size += nbytes
    if start < table.num_rows:
        slices.append((start, table.num_rows))
    return slices


def write_outputs(out: Path, ledger_rows: pa.Table, output_config: Any) -> dict[str, Any]:
    """Write sources, shards, rejections and ledger; return a description for the manifest."""
    rows = ledger_rows.sort_by([(Col.ID, "ascending")])
    comp, level = output_config.compression, output_config.compression_level
    files: dict[str, Any] = {}
    is_source = pc.equal(rows.column(Col.KIND), Kind.SOURCE)

    def sources(tmp: Path) -> None:
        files["sources"] = [
            write_table(conform(rows.filter(is_source), SOURCE_SCHEMA), tmp / "sources.parquet", comp, level)
        ]

    def shards(tmp: Path) -> None:
        accepted = rows.filter(
            pc.and_(pc.equal(rows.column(Col.KIND), Kind.CLIP), pc.equal(rows.column(Col.STATE), State.ACCEPTED))
        )
        accepted = conform(
            accepted.sort_by([(Col.SOURCE_ID, "ascending"), (Col.CLIP_START_S, "ascending")]), CLIP_SCHEMA
        )
        target = output_config.shard_target_mb * 2**20
        files["shards"] = [
            write_table(accepted.slice(a, b - a), tmp / f"shard-{n:05d}.parquet", comp, level)
            for n, (a, b) in enumerate(_shard_slices(accepted, target, output_config.shard_max_rows))
        ]

    def rejections(tmp: Path) -> None:
        rejected = rows.filter(pc.equal(rows.column(Col.STATE), State.REJECTED))
        files["rejections"] = {}
        for stage in sorted(set(rejected.column(Col.STAGE).to_pylist())):
            part = rejected.filter(pc.equal(rejected.column(Col.STAGE), stage))
            (tmp / stage).mkdir()
            info = write_table(conform(part, REJECTION_SCHEMA), tmp / stage / "rejections.parquet", comp, level)
            files["rejections"][stage] = info

    def ledger(tmp: Path) -> None:
        files["ledger"] = [write_table(conform(rows, LEDGER_SCHEMA), tmp / "ledger.parquet", comp, level)]

    for name, fill in (
        (SOURCES_DIR, sources),
        (SHARDS_DIR, shards),
        (REJECTIONS_DIR, rejections),
        (LEDGER_DIR, ledger),
    ):
        _replace_dir(out / name, fill)
    return files


def prune_media(out: Path, rows: pa.Table, clips_dir: str, keep_rejected: bool) -> int:
    """Delete clip files no accepted row points at (rejected clips unless kept, and the
    ``.part`` files a killed run left behind). Returns the number of files removed."""
    root = out / clips_dir
    if not root.is_dir():
        return 0
    keep = set()
    for kind, state, path in zip(
        rows.column(Col.KIND).to_pylist(), rows.column(Col.STATE).to_pylist(), rows.column(Col.MEDIA_PATH).to_pylist()
    ):
        if kind == Kind.CLIP and path and (state == State.ACCEPTED or keep_rejected):
            keep.add((out / path).resolve())
    removed = 0
    for path in root.rglob("*"):
        if path.is_file() and path.resolve() not in keep:
            path.unlink()
            removed += 1
    return removed


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def read_ledger(out: str | os.PathLike) -> pa.Table:
    path = Path(out) / LEDGER_DIR / "ledger.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{out} has no ledger: is it the output folder of a finished javis run?")
    return pq.read_table(path)


def read_shards(out: str | os.PathLike) -> pa.Table:
    """All accepted clips of a run (reads every shard)."""
    paths = sorted((Path(out) / SHARDS_DIR).glob("shard-*.parquet"))
    if not paths:
        return CLIP_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(p) for p in paths])


def read_augment_ledger(out: str | os.PathLike, negatives_dir: str = "negatives") -> pa.Table | None:
    """The per-clip ledger of ``javis augment`` (None when it has not run)."""
    path = Path(out) / negatives_dir / "ledger.parquet"
    return pq.read_table(path) if path.exists() else None
