"""Turn ``--input`` values into source rows with deterministic ids.

An input is one of:

* a local media file, a folder (searched recursively) or a glob pattern;
* a ``.txt`` / ``.csv`` / ``.tsv`` list: one URL (or local path) per line, or a ``url`` column;
* an ``http(s)://`` URL;
* a yt-dlp search query such as ``ytsearch5:dog barking`` (expanded into URLs here, on the
  driver, so every result gets its own source id before any work starts);
* an object-storage URI (``s3://bucket/videos/``, ``gs://...``): the media objects under it.
  They are read in place: each node that works on one fetches it into its scratch directory.
  Their id comes from the URI, size and modification time (hashing every object's content at
  planning time would read the whole bucket).

Every input lands in the plan, even a bad one: a path that does not exist becomes a source
that ingest rejects as ``missing_file``; a search that fails becomes a ``failed`` source.
A plan in which *every* input names nothing (:func:`names_nothing`) is refused before any
work starts (:func:`check_plan`): that is a typo, not a run.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from pipeline import ids
from schemas import Col, State
from stages.base import mark_failed, source_row
from stages.ingest import IngestConfig
from stages.storage import is_uri, list_location, location_info

log = logging.getLogger(__name__)

MEDIA_EXTENSIONS = frozenset(
    ".mp4 .mkv .webm .mov .avi .m4v .flv .ts .mts .m2ts .mpg .mpeg .wmv .3gp .ogv .mxf".split()
)
LIST_EXTENSIONS = frozenset({".txt", ".csv", ".tsv"})
_SEARCH_RE = re.compile(r"^[a-z0-9]*search(date)?(\d+|all)?:", re.IGNORECASE)
_GLOB_CHARS = re.compile(r"[*?\[]")


def is_search(text: str) -> bool:
    """A yt-dlp search (``ytsearch5:...``, ``nicosearchdate3:...``), unless a file has that name."""
    return bool(_SEARCH_RE.match(text)) and not os.path.exists(text)


def is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


class FileIdCache:
    """Remembers content hashes by (path, size, mtime) so reruns do not re-read every file;
    kept as JSON in the output location (``storage``, ``rel``), or nowhere without one."""

    def __init__(self, storage: Any = None, rel: str = "") -> None:
        self.storage, self.rel = storage, rel
        self.entries: dict[str, list[Any]] = {}
        if storage is not None and storage.exists(rel):
            try:
                self.entries = storage.read_json(rel)
            except (OSError, ValueError):
                log.warning("ignoring unreadable file-id cache %s", storage.location(rel))

    def sha256(self, file: str) -> str:
        st = os.stat(file)
        key = os.path.abspath(file)
        hit = self.entries.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        digest = ids.file_sha256(file)
        self.entries[key] = [st.st_size, st.st_mtime_ns, digest]
        return digest

    def save(self) -> None:
        if self.storage is not None:
            self.storage.write_bytes(self.rel, json.dumps(self.entries).encode())


def _list_entries(path: str) -> list[str]:
    """Entries of a URL list: a ``url`` column if the file has a header with one, else lines.
    ``#`` starts a comment line; local paths are relative to the list's own folder."""
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel writes a byte-order mark
        lines = [ln for ln in f.read().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    entries = [ln.strip() for ln in lines]
    if lines and path.lower().endswith((".csv", ".tsv")):
        delimiter = "\t" if path.lower().endswith(".tsv") else ","
        reader = csv.DictReader(lines, delimiter=delimiter)
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        if "url" in fields:
            key = (reader.fieldnames or [])[fields.index("url")]
            entries = [r[key].strip() for r in reader if r.get(key) and r[key].strip()]
    base = os.path.dirname(os.path.abspath(path))
    return [e if is_url(e) or is_search(e) or is_uri(e) or os.path.isabs(e) else os.path.join(base, e) for e in entries]


def _expand_local(text: str) -> list[str] | None:
    """Files named by a folder (media files, recursively) or a glob, or ``None`` if neither."""
    if os.path.isdir(text):
        return [str(p) for p in sorted(Path(text).rglob("*")) if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS]
    if _GLOB_CHARS.search(text) and not os.path.exists(text):
        return sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
    return None


def _names_a_file(location: str) -> bool:
    """``s3://b/x/clip.mp4`` names one object (ingest says if it is missing); ``s3://b/x/`` a prefix."""
    path = location.split("?", 1)[0]
    return not path.endswith("/") and bool(os.path.splitext(path.rsplit("/", 1)[-1])[1])


@dataclasses.dataclass(frozen=True)
class _Leaf:
    """One input after expansion; ``empty`` marks a folder, glob or list that named nothing."""

    text: str
    empty: bool = False
    version: str | None = None  # an object's size and modification time, from its listing


def _iter_leaf_inputs(values: Iterable[str], open_lists: frozenset[str] = frozenset()) -> Iterable[_Leaf]:
    for value in values:
        value = value.strip()
        if not value:
            continue
        if is_url(value) or is_search(value):
            yield _Leaf(value)
        elif os.path.isfile(value) and Path(value).suffix.lower() in LIST_EXTENSIONS:
            key = os.path.realpath(value)
            if key in open_lists:
                raise ValueError(f"input list {value!r} includes itself")
            entries = _list_entries(value)
            yield from _iter_leaf_inputs(entries, open_lists | {key}) if entries else [_Leaf(value, empty=True)]
        elif is_uri(value):
            objects = list_location(value, MEDIA_EXTENSIONS)
            kind = location_info(value).type if not objects else None
            if kind == pafs.FileType.File or (kind == pafs.FileType.NotFound and _names_a_file(value)):
                yield _Leaf(value)  # one object, whatever its name (probe decides), or a missing one
            elif not objects:
                log.info("input %r matched no media objects", value)
                yield _Leaf(value, empty=True)
            else:
                yield from (_Leaf(uri, version=f"{info.size}:{info.mtime_ns}") for uri, info in objects)
        else:
            local = _expand_local(value)
            if local is None:
                yield _Leaf(value)  # a file, or a path that does not exist (ingest rejects it)
            elif not local:
                log.info("input %r matched no media files", value)
                yield _Leaf(value, empty=True)
            else:
                yield from _iter_leaf_inputs(local, open_lists)


def _search_rows(query: str, config: IngestConfig) -> list[dict[str, Any]]:
    from stages.download import expand_search  # yt-dlp import is slow: only when needed

    try:
        hits = expand_search(query, config)
    except Exception as e:  # a failed search is a failed input, retried on the next run
        row = source_row(id=ids.source_id_for_text("search", query), input=query, src_query=query)
        mark_failed(row, "ingest", e, None)
        return [row]
    rows = []
    for url, title in hits:
        try:
            sid = ids.source_id_for_url(url)
        except ValueError:
            sid = ids.source_id_for_text("bad_url", url)
        rows.append(source_row(id=sid, input=url, src_url=url, src_query=query, src_title=title))
    return rows


def _leaf_rows(leaf: _Leaf, config: IngestConfig, cache: FileIdCache) -> list[dict[str, Any]]:
    text = leaf.text
    if leaf.empty:  # recorded, so an auditor sees why a folder or list produced nothing
        row = source_row(id=ids.source_id_for_text("empty", text), input=text)
        row.update({Col.STATE: State.REJECTED, Col.STAGE: "ingest", Col.REASON: "no_media_found"})
        return [row]
    if is_search(text):
        return _search_rows(text, config)
    if is_url(text):
        try:
            sid = ids.source_id_for_url(text)
        except ValueError:
            sid = ids.source_id_for_text("bad_url", text)
        return [source_row(id=sid, input=text, src_url=text)]
    if is_uri(text):
        version = leaf.version
        if version is None:
            info = location_info(text)
            version = f"{info.size}:{info.mtime_ns}" if info.type == pafs.FileType.File else "missing"
        return [source_row(id=ids.source_id_for_text("object", f"{text}:{version}"), input=text, src_path=text)]
    path = os.path.abspath(text)
    if os.path.isfile(text):
        return [source_row(id=ids.source_id_for_content(cache.sha256(text)), input=text, src_path=path)]
    return [source_row(id=ids.source_id_for_text("path", path), input=text, src_path=path)]


def plan_sources(
    values: Iterable[str], config: IngestConfig, id_cache: FileIdCache | None = None
) -> list[dict[str, Any]]:
    """One pending (or already terminal) source row per input, de-duplicated by id."""
    cache = id_cache or FileIdCache(None)
    rows: list[dict[str, Any]] = []
    for leaf in _iter_leaf_inputs(values):
        rows.extend(_leaf_rows(leaf, config, cache))
    return _mark_duplicates(rows)


def names_nothing(row: dict[str, Any]) -> str | None:
    """Why a planned source stands for no media at all, or None: a local path that does not
    exist, a folder, glob, list or prefix that matched no media, an object that is not there."""
    text, path = row[Col.INPUT], row.get(Col.SRC_PATH)
    if row.get(Col.REASON) == "no_media_found":
        return f"{text!r} matched no media files"
    if row.get(Col.STATE) != State.PENDING or not path:
        return None
    if not is_uri(path):
        return None if os.path.exists(path) else f"{text!r} does not exist"
    missing = row[Col.ID] == ids.source_id_for_text("object", f"{path}:missing")
    return f"{text!r} does not exist" if missing else None


def check_plan(rows: list[dict[str, Any]], values: Iterable[str]) -> None:
    """Refuse a plan with nothing to curate: no input at all, or only inputs that name nothing.
    A plan with some good inputs runs, and records the bad ones (``missing_file``,
    ``no_media_found``)."""
    if not rows:
        raise ValueError(f"no inputs found in {list(values)!r}")
    why = [w for w in (names_nothing(r) for r in rows) if w]
    if len(why) == len(rows):
        shown = "; ".join(why[:5]) + (f"; and {len(why) - 5} more" if len(why) > 5 else "")
        raise ValueError(f"nothing to curate: {shown}")


def _mark_duplicates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first input with an id wins; a later one with the same id (same content or the same
    canonical URL) keeps its own ledger entry, rejected as a duplicate of the first."""
    seen: dict[str, str] = {}
    out = []
    for row in rows:
        sid = row[Col.ID]
        where = row.get(Col.SRC_PATH) or row[Col.INPUT]  # a.mp4 and ./a.mp4 are one input
        if sid not in seen:
            seen[sid] = where
            out.append(row)
            continue
        if seen[sid] == where:
            continue  # the same input named twice: one source
        dup_id = ids.source_id_for_text("duplicate", f"{sid}:{row[Col.INPUT]}")
        out.append(
            {
                **row,
                Col.ID: dup_id,
                Col.SOURCE_ID: dup_id,
                Col.SRC_DUPLICATE_OF: sid,
                Col.STATE: State.REJECTED,
                Col.STAGE: "ingest",
                Col.REASON: "duplicate",
            }
        )
    return out
