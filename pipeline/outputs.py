"""Write a run's outputs from its ledger rows, into a local folder or object storage:

``sources/``            one row per source (SOURCE_SCHEMA)
``shards/``             accepted clips, sharded by size, zstd (CLIP_SCHEMA)
``rejections/<stage>/`` one row per rejected source or clip (REJECTION_SCHEMA)
``ledger/``             every source and clip with its terminal state and raw scores
``manifest.json``       resolved config, library versions, funnel, output files (written last)

Outputs are rebuilt from the staged rows on every run and sorted by id, so the same inputs
and config always give the same files, and a rerun can never add duplicates.

Each directory is replaced atomically. In a local folder it is built under a temporary name and
swapped in. Object storage has no rename, and a committed object is never overwritten (a
reader may be reading it): each run writes its files under a *generation* in their names
(``shards/shard-<generation>-00000.parquet``), the manifest written last names them, and only
then are the older generations deleted. Readers here follow the manifest's generation, so a
run killed before its manifest leaves the previous outputs readable.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas import CLIP_SCHEMA, LEDGER_SCHEMA, REJECTION_SCHEMA, SOURCE_SCHEMA, Col, Kind, State, conform
from stages.storage import Storage

SOURCES_DIR, SHARDS_DIR, REJECTIONS_DIR, LEDGER_DIR = "sources", "shards", "rejections", "ledger"
MANIFEST, CONFIG_JSON = "manifest.json", "config.json"
OUTPUT_DIRS = (SOURCES_DIR, SHARDS_DIR, REJECTIONS_DIR, LEDGER_DIR)
_GENERATION = re.compile(r"-(\d{8}T\d{6}-[0-9a-f]{6})(?=[-.])")


def as_storage(out: str | Any) -> Storage:
    return out if isinstance(out, Storage) else Storage(out)


def require_run(out: str | Any) -> Storage:
    """``out`` as a :class:`Storage`; ``FileNotFoundError`` saying to run ``javis run`` first when
    it holds no finished run (no manifest), for the commands that read one."""
    storage = as_storage(out)
    if not storage.exists(MANIFEST):
        raise FileNotFoundError(
            f"{storage.root} has no curated run (no {MANIFEST}): run `javis run -i INPUT -o {storage.root}` first"
        )
    return storage


def new_generation() -> str:
    """A sortable, unique tag for one run's output files on object storage."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _named(stem: str, generation: str | None) -> str:
    return f"{stem}.parquet" if generation is None else f"{stem}-{generation}.parquet"


def _replace_dir(storage: Storage, name: str, generation: str | None, fill: Callable[[str], None]) -> None:
    """Write one output directory: ``fill(prefix)`` writes its files under ``prefix``. Locally
    the directory is built under a temporary name and swapped in; on object storage the files
    go in place, under the run's generation (older ones are removed by :func:`drop_generations`)."""
    if generation is not None:
        fill(name)
        return
    tmp = f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    storage.fs.create_dir(storage.path(tmp))  # a directory with no file (no rejections) exists too
    fill(tmp)
    storage.delete_dir(f".{name}.old")
    if storage.fs.get_file_info(storage.path(name)).type.name != "NotFound":
        storage.fs.move(storage.path(name), storage.path(f".{name}.old"))
    storage.fs.move(storage.path(tmp), storage.path(name))
    storage.delete_dir(f".{name}.old")


def _writer_kwargs(compression: str, level: int | None) -> dict[str, Any]:
    if compression == "none":
        return {"compression": "none"}
    return {"compression": compression, "compression_level": level if compression == "zstd" else None}


def write_table(
    storage: Storage, table: pa.Table, rel: str, compression: str = "zstd", level: int | None = 3
) -> dict[str, Any]:
    """Write ``table`` at ``rel`` under the storage root; its manifest entry."""
    size = storage.write_parquet(table, rel, **_writer_kwargs(compression, level))
    return {"path": rel.rsplit("/", 1)[-1], "rows": table.num_rows, "bytes": size}


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


def write_outputs(out: Storage | str, ledger_rows: pa.Table, output_config: Any) -> dict[str, Any]:
    """Write sources, shards, rejections and ledger; return a description for the manifest
    (with the ``generation`` its files carry on object storage)."""
    storage = as_storage(out)
    generation = None if storage.is_local else new_generation()
    rows = ledger_rows.sort_by([(Col.ID, "ascending")])
    comp, level = output_config.compression, output_config.compression_level
    files: dict[str, Any] = {} if generation is None else {"generation": generation}
    is_source = pc.equal(rows.column(Col.KIND), Kind.SOURCE)

    def put(table: pa.Table, prefix: str, stem: str) -> dict[str, Any]:
        return write_table(storage, table, f"{prefix}/{_named(stem, generation)}", comp, level)

    def sources(prefix: str) -> None:
        files["sources"] = [put(conform(rows.filter(is_source), SOURCE_SCHEMA), prefix, "sources")]

    def shards(prefix: str) -> None:
        accepted = rows.filter(
            pc.and_(pc.equal(rows.column(Col.KIND), Kind.CLIP), pc.equal(rows.column(Col.STATE), State.ACCEPTED))
        )
        accepted = conform(
            accepted.sort_by([(Col.SOURCE_ID, "ascending"), (Col.CLIP_START_S, "ascending")]), CLIP_SCHEMA
        )
        target = output_config.shard_target_mb * 2**20
        slices = _shard_slices(accepted, target, output_config.shard_max_rows)
        stem = "shard" if generation is None else f"shard-{generation}"
        files["shards"] = [
            write_table(storage, accepted.slice(a, b - a), f"{prefix}/{stem}-{n:05d}.parquet", comp, level)
            for n, (a, b) in enumerate(slices)
        ]

    def rejections(prefix: str) -> None:
        rejected = rows.filter(pc.equal(rows.column(Col.STATE), State.REJECTED))
        files["rejections"] = {}
        for stage in sorted(set(rejected.column(Col.STAGE).to_pylist())):
            part = rejected.filter(pc.equal(rejected.column(Col.STAGE), stage))
            files["rejections"][stage] = put(conform(part, REJECTION_SCHEMA), f"{prefix}/{stage}", "rejections")

    def ledger(prefix: str) -> None:
        files["ledger"] = [put(conform(rows, LEDGER_SCHEMA), prefix, "ledger")]

    for name, fill in (
        (SOURCES_DIR, sources),
        (SHARDS_DIR, shards),
        (REJECTIONS_DIR, rejections),
        (LEDGER_DIR, ledger),
    ):
        _replace_dir(storage, name, generation, fill)
    return files


def _generation_of(rel: str) -> str | None:
    match = _GENERATION.search(rel.rsplit("/", 1)[-1])
    return match.group(1) if match else None


def drop_generations(out: Storage | str, keep: str | None) -> int:
    """After the manifest names generation ``keep``: delete every other generation's output
    files (object storage only; a local folder was swapped). Returns how many went."""
    storage = as_storage(out)
    if keep is None:
        return 0
    stale = [f for d in OUTPUT_DIRS for f in storage.list_files(d) if _generation_of(f) not in (None, keep)]
    for rel in stale:
        storage.delete(rel)
    return len(stale)


def output_files(out: Storage | str, directory: str) -> list[str]:
    """The committed files of one output directory: on object storage, those of the generation
    the manifest names (an interrupted run may have left a newer one beside it)."""
    storage = as_storage(out)
    found = [f for f in storage.list_files(directory) if f.endswith(".parquet")]
    generations = {_generation_of(f) for f in found} - {None}
    if not generations:
        return found
    committed = None
    if storage.exists(MANIFEST):
        committed = storage.read_json(MANIFEST).get("files", {}).get("generation")
    keep = committed if committed in generations else max(generations)
    return [f for f in found if _generation_of(f) == keep]


def prune_media(
    out: Storage | str, rows: pa.Table, clips_dir: str, keep_rejected: bool, thumbs_dir: str | None = None
) -> int:
    """Delete clip files no accepted row points at (rejected clips unless kept, and the
    ``.part`` files a killed run left behind). Returns the number of files removed.
    Thumbnails (``thumb_path``) of every clip, rejected or not, are kept, even in ``clips_dir``;
    with ``thumbs_dir``, a thumbnail no row points at (a killed worker's retry that cut the
    scene differently) is removed."""
    storage = as_storage(out)
    keep = set()
    for kind, state, path, thumb in zip(
        rows.column(Col.KIND).to_pylist(),
        rows.column(Col.STATE).to_pylist(),
        rows.column(Col.MEDIA_PATH).to_pylist(),
        rows.column(Col.THUMB_PATH).to_pylist(),
    ):
        if kind == Kind.CLIP and path and (state == State.ACCEPTED or keep_rejected):
            keep.add(posixpath.normpath(path))
        if kind == Kind.CLIP and thumb:
            keep.add(posixpath.normpath(thumb))  # "media/thumbs//x" (a folder set with a slash) is "media/thumbs/x"
    removed = 0
    for rel in sorted(set(storage.list_files(clips_dir)) | set(storage.list_files(thumbs_dir) if thumbs_dir else ())):
        if posixpath.normpath(rel) not in keep:
            storage.delete(rel)
            removed += 1
    return removed


def write_json(out: Storage | str, rel: str, data: dict[str, Any]) -> None:
    as_storage(out).write_json(rel, data)


def read_json(out: Storage | str, rel: str) -> Any:
    return as_storage(out).read_json(rel)


def _read_dir(storage: Storage, directory: str, empty: pa.Schema | None = None) -> pa.Table | None:
    files = output_files(storage, directory)
    if not files:
        return None if empty is None else empty.empty_table()
    return pa.concat_tables([storage.read_parquet(f) for f in files])


def iter_batches(
    out: Storage | str, directory: str, columns: list[str] | None = None, batch_size: int = 65_536
) -> Iterator[pa.RecordBatch]:
    """The committed rows of one output directory (``ledger``, ``shards``, ``sources``, a
    ``rejections/<stage>``), a batch at a time, only ``columns`` (all when None; a column a file
    lacks, e.g. one added by a newer schema, is skipped): memory stays bounded by the batch,
    whatever the size of the run."""
    storage = as_storage(out)
    for rel in output_files(storage, directory):
        with storage.fs.open_input_file(storage.path(rel)) as handle:
            reader = pq.ParquetFile(handle)
            names = reader.schema_arrow.names
            wanted = None if columns is None else [c for c in columns if c in names]
            yield from reader.iter_batches(batch_size=batch_size, columns=wanted)


def read_columns(out: Storage | str, directory: str, columns: list[str]) -> pa.Table:
    """A few columns of every committed row of one output directory (see :func:`iter_batches`)."""
    batches = list(iter_batches(out, directory, columns))
    if not batches:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    return pa.Table.from_batches(batches)


def find_rows(
    out: Storage | str, directory: str, column: str, values: Iterable[str], columns: list[str] | None = None
) -> pa.Table:
    """The committed rows of ``directory`` whose ``column`` is one of ``values``, reading as
    little as possible: a row group whose statistics exclude every value is skipped (the ledger,
    sources and rejections are sorted by id, so an id lookup reads one row group); the others
    are scanned on ``column`` alone, and only row groups with a match are read whole."""
    storage, wanted = as_storage(out), sorted(set(values))
    found, schema = [], pa.schema([])
    for rel in output_files(storage, directory):
        with storage.fs.open_input_file(storage.path(rel)) as handle:
            reader = pq.ParquetFile(handle)
            names = reader.schema_arrow.names
            if column not in names:
                continue
            index = names.index(column)
            keep = None if columns is None else [c for c in columns if c in names]
            schema = pa.schema([reader.schema_arrow.field(c) for c in keep or names])
            for group in range(reader.num_row_groups):
                stats = reader.metadata.row_group(group).column(index).statistics
                if stats is not None and stats.has_min_max and not any(stats.min <= v <= stats.max for v in wanted):
                    continue
                mask = pc.is_in(reader.read_row_group(group, columns=[column]).column(0), pa.array(wanted))
                if pc.any(mask).as_py():
                    found.append(reader.read_row_group(group, columns=keep).filter(mask))
    return pa.concat_tables(found) if found else schema.empty_table()


def read_ledger(out: Storage | str) -> pa.Table:
    ledger = _read_dir(as_storage(out), LEDGER_DIR)
    if ledger is None:
        raise FileNotFoundError(f"{out} has no ledger: is it the output folder of a finished javis run?")
    return ledger


def read_shards(out: Storage | str) -> pa.Table:
    """All accepted clips of a run (reads every shard)."""
    return _read_dir(as_storage(out), SHARDS_DIR, CLIP_SCHEMA)


def read_augment_ledger(out: Storage | str, negatives_dir: str = "negatives") -> pa.Table | None:
    """The per-clip ledger of ``javis augment`` (None when it has not run)."""
    storage = as_storage(out)
    rel = f"{negatives_dir}/ledger.parquet"
    return storage.read_parquet(rel) if storage.exists(rel) else None
