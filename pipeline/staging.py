"""Crash-safe staging of finished rows, the basis of resume.

Finished rows are written to ``<out>/_work/parts/`` (a local folder or object storage) as
Parquet parts with unique names, each atomically (a renamed temporary file, or one upload): a
killed run leaves whole parts or none.
A rerun reads the parts back and keeps, per source, only the rows of its latest attempt (all
rows of one attempt share ``attempt``), and per id the newest row. A source is *complete*
when its row is terminal and not failed and, if it was segmented, every one of its clips is
terminal and not failed; complete sources are skipped, all others run again as a new attempt.
Because ids are deterministic, a rerun rewrites the same ids and never duplicates a row.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import defaultdict
from typing import Any

import pyarrow as pa

from schemas import WORK_SCHEMA, Col, Kind, State, conform
from stages.storage import Storage

log = logging.getLogger(__name__)

PARTS_DIR = "_work/parts"


class Staging:
    """The staged rows of one output location (``<out>/_work/parts/``, local or object storage)."""

    def __init__(self, storage: Storage, parts_dir: str = PARTS_DIR) -> None:
        self.storage, self.parts_dir = storage, parts_dir
        if storage.is_local:
            os.makedirs(storage.local_path(parts_dir), exist_ok=True)
            for leftover in storage.list_files(parts_dir):  # a local write a kill interrupted
                if leftover.rsplit("/", 1)[-1].startswith("."):
                    storage.delete(leftover)

    def parts(self) -> list[str]:
        return [f for f in self.storage.list_files(self.parts_dir) if f.rsplit("/", 1)[-1].startswith("part-")]

    def write(self, table: pa.Table) -> str:
        """Stage ``table`` as a new part (a unique name: a committed part is never overwritten)."""
        rel = f"{self.parts_dir}/part-{uuid.uuid4().hex}.parquet"
        self.storage.write_parquet(conform(table, WORK_SCHEMA), rel, compression="zstd")
        return rel

    def compact(self, rows: pa.Table) -> None:
        """Replace all parts by one holding ``rows`` (the current rows): reruns stay fast.
        The new part is written before the old ones go, so a kill in between loses nothing."""
        old = self.parts()
        if len(old) <= 1:
            return
        self.write(rows)
        for rel in old:
            self.storage.delete(rel)

    def load(self) -> pa.Table:
        """Current rows: latest attempt per source, newest row per id."""
        tables = []
        for rel in self.parts():
            try:
                tables.append(conform(self.storage.read_parquet(rel), WORK_SCHEMA))
            except (OSError, pa.ArrowException) as e:  # written atomically, so only outside damage
                log.warning("skipping unreadable staging part %s: %s", rel, e)
        if not tables:
            return WORK_SCHEMA.empty_table()
        return current_rows(pa.concat_tables(tables))


class StagingBuffer:
    """Finished rows, staged as one part per ``max_rows`` rows, ``max_bytes`` (clips embedded in
    their rows are megabytes each) or ``max_wait_s`` seconds, whichever comes first.

    Clips leave the pipeline one at a time; a part per clip would make millions of files on a
    large crawl. A kill loses at most the buffered rows, and their sources are then incomplete
    in staging, so the next run redoes them."""

    def __init__(
        self, staging: Staging, max_rows: int = 1000, max_bytes: int = 64 << 20, max_wait_s: float = 2.0
    ) -> None:
        self.staging, self.max_rows, self.max_bytes, self.max_wait_s = staging, max_rows, max_bytes, max_wait_s
        self.tables: list[pa.Table] = []
        self.num_rows = self.num_bytes = 0
        self.since = time.monotonic()

    def add(self, table: pa.Table) -> None:
        if not self.tables:
            self.since = time.monotonic()
        self.tables.append(table)
        self.num_rows += table.num_rows
        self.num_bytes += table.nbytes
        full = self.num_rows >= self.max_rows or self.num_bytes >= self.max_bytes
        if full or time.monotonic() - self.since >= self.max_wait_s:
            self.flush()

    def flush(self) -> None:
        if self.tables:
            self.staging.write(pa.concat_tables([conform(t, WORK_SCHEMA) for t in self.tables]))
        self.tables, self.num_rows, self.num_bytes = [], 0, 0


def current_rows(table: pa.Table) -> pa.Table:
    """Keep the latest attempt of each source and the newest row of each id."""
    ids = table.column(Col.ID).to_pylist()
    sources = table.column(Col.SOURCE_ID).to_pylist()
    attempts = [a or 0 for a in table.column(Col.ATTEMPT).to_pylist()]
    times = table.column(Col.UPDATED_AT).to_pylist()
    latest_attempt: dict[str, int] = defaultdict(int)
    for sid, attempt in zip(sources, attempts):
        latest_attempt[sid] = max(latest_attempt[sid], attempt)
    best: dict[str, int] = {}
    for i, (row_id, sid, attempt) in enumerate(zip(ids, sources, attempts)):
        if attempt != latest_attempt[sid]:
            continue
        j = best.get(row_id)
        if j is None or (times[i], i) >= (times[j], j):
            best[row_id] = i
    return table.take(sorted(best.values()))


def without_orphan_clips(rows: pa.Table) -> pa.Table:
    """Drop clips whose source row is not ``accepted``: a source that failed after its scene cut
    had already streamed some clips out. Those clips belong to an attempt that did not finish:
    the source is retried as a whole, and only its next attempt's clips count."""
    kinds, states = rows.column(Col.KIND).to_pylist(), rows.column(Col.STATE).to_pylist()
    sources = rows.column(Col.SOURCE_ID).to_pylist()
    accepted = {sid for sid, k, s in zip(sources, kinds, states) if k == Kind.SOURCE and s == State.ACCEPTED}
    keep = [i for i, (sid, k) in enumerate(zip(sources, kinds)) if k == Kind.SOURCE or sid in accepted]
    return rows if len(keep) == rows.num_rows else rows.take(keep)


def complete_sources(rows: pa.Table) -> dict[str, int]:
    """``{source_id: attempt}`` for every source whose latest attempt needs no more work,
    plus the attempt number of every incomplete one as a negative value (to continue counting)."""
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    cols = [Col.ID, Col.KIND, Col.SOURCE_ID, Col.STATE, Col.ATTEMPT, Col.SCENE_NUM_CLIPS]
    for row in rows.select(cols).to_pylist():
        by_source[row[Col.SOURCE_ID]].append(row)
    result = {}
    for sid, group in by_source.items():
        attempt = max(r[Col.ATTEMPT] or 0 for r in group)
        result[sid] = attempt if _is_complete(group) else -attempt
    return result


def _is_complete(group: list[dict[str, Any]]) -> bool:
    source = [r for r in group if r[Col.KIND] == Kind.SOURCE]
    if len(source) != 1 or source[0][Col.STATE] not in (State.ACCEPTED, State.REJECTED):
        return False
    if source[0][Col.STATE] == State.REJECTED:
        return True
    clips = [r for r in group if r[Col.KIND] == Kind.CLIP]
    done = all(r[Col.STATE] in (State.ACCEPTED, State.REJECTED) for r in clips)
    return done and len(clips) == (source[0][Col.SCENE_NUM_CLIPS] or 0)
