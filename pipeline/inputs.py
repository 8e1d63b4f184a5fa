"""Turn ``--input`` values into source rows with deterministic ids.

An input is one of:

* a local media file, a folder (searched recursively: every file under it is recorded or
  counted, see :mod:`pipeline.listing`) or a glob pattern;
* a ``.txt`` / ``.csv`` / ``.tsv`` list: one URL (or local path) per line, or a ``url`` column;
* an ``http(s)://`` URL;
* a yt-dlp search query such as ``ytsearch5:dog barking`` (expanded into URLs here, on the
  driver, so every result gets its own source id before any work starts);
* an object-storage URI (``s3://bucket/videos/``, ``gs://...``): the objects under it, by the
  same rules as a folder's files.
  They are read in place: each node that works on one fetches it into its scratch directory.
  Their id comes from the URI, size and modification time (hashing every object's content at
  planning time would read the whole bucket).

Every input lands in the plan, even a bad one: a path that does not exist becomes a source
that ingest rejects as ``missing_file``; a search that fails becomes a ``failed`` source; a
file under a folder that is no media is rejected at ingest as ``not_media``, a broken link as
``unreadable``; hidden files and sidecars are counted in :class:`SkippedInputs`.
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
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow.fs as pafs

from pipeline import ids
from pipeline.listing import (
    MEDIA_EXTENSIONS,  # noqa: F401 (bench/ imports it from here)
    Entry,
    SkippedInputs,
    classify,
    link_problem,
    walk_folder,
)
from schemas import Col, State
from stages.base import mark_failed, source_row
from stages.ingest import IngestConfig
from stages.storage import is_uri, list_location, location_info

log = logging.getLogger(__name__)

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
    keep = (is_url, is_search, os.path.isabs, lambda e: _scheme_of(e, base) is not None)
    return [e if any(test(e) for test in keep) else os.path.join(base, e) for e in entries]


_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*):", re.IGNORECASE)
# Schemes a list may name besides http(s): object storage, read in place (see the module doc).
LIST_URI_SCHEMES = frozenset({"s3", "gs", "gcs", "az", "abfs", "abfss", "hdfs", "hf"})


def _scheme_of(entry: str, base: str) -> str | None:
    """The URL scheme an entry starts with (``ftp``, ``file``, ``javascript``), unless a file
    of that name exists beside the list (``clip:1.mp4``)."""
    match = _SCHEME.match(entry)
    return match.group(1).lower() if match and not os.path.exists(os.path.join(base, entry)) else None


def list_entry_refusal(entry: str, list_path: str) -> tuple[str, str] | None:
    """Why an entry of a URL list is not followed, as (reason, detail), or ``None``. A list is
    untrusted text: only http(s) URLs, searches, object-storage URIs and local paths inside the
    list's own folder are followed; ``file://``, ``ftp://``, ``javascript:`` and ``../../etc/passwd``
    become ``unsupported_url`` and ``outside_list_folder`` rejections at ingest."""
    base = os.path.dirname(os.path.abspath(list_path))
    if is_url(entry) or is_search(entry):
        return None
    scheme = _scheme_of(entry, base)
    if scheme is not None:
        if scheme in LIST_URI_SCHEMES and is_uri(entry):
            return None
        return "unsupported_url", f"{scheme}: is not followed in an input list (http, https, object storage)"
    root, path = os.path.realpath(base), os.path.realpath(os.path.join(base, entry))
    if os.path.commonpath([root, path]) != root:
        return "outside_list_folder", f"{entry} leads out of the folder of {list_path}"
    return None


def _expand_glob(text: str) -> list[str] | None:
    """Files named by a glob (broken links included: they are recorded), or ``None`` if ``text``
    is no glob."""
    if _GLOB_CHARS.search(text) and not os.path.exists(text):
        found = glob.glob(text, recursive=True)
        return sorted(p for p in found if os.path.isfile(p) or (os.path.islink(p) and not os.path.isdir(p)))
    return None


def _names_a_file(location: str) -> bool:
    """``s3://b/x/clip.mp4`` names one object (ingest says if it is missing); ``s3://b/x/`` a prefix."""
    path = location.split("?", 1)[0]
    return not path.endswith("/") and bool(os.path.splitext(path.rsplit("/", 1)[-1])[1])


@dataclasses.dataclass(frozen=True)
class _Leaf:
    """One input after expansion; ``empty`` marks a folder, glob or list that named nothing;
    ``reason`` a file found under a folder or prefix that planning rejects (``not_media``,
    ``unreadable``); ``found`` any file found there (never a list, URL or search)."""

    text: str
    empty: bool = False
    version: str | None = None  # an object's size and modification time, from its listing
    reason: str | None = None
    detail: str | None = None
    found: bool = False


def _found_leaves(
    value: str, entries: list[Entry], extensions: frozenset[str] | None, skipped: SkippedInputs
) -> Iterable[_Leaf]:
    """The leaves of a folder or prefix: its files' fates (:mod:`pipeline.listing`)."""
    leaves = []
    for fate in classify(entries, extensions):
        location = fate.entry.location
        if fate.kind == "source":
            leaves.append(_Leaf(location, version=fate.entry.version, found=True))
        elif fate.kind in ("not_media", "unreadable"):
            leaves.append(_Leaf(location, version=fate.entry.version, reason=fate.kind, detail=fate.detail, found=True))
        else:
            skipped.add(fate.kind, location)
    if not leaves:
        log.info("input %r matched no media files", value)
        return [_Leaf(value, empty=True)]
    return leaves


def _object_entries(value: str, objects: list[tuple[str, pafs.FileInfo]]) -> list[Entry]:
    prefix = value.split("?", 1)[0].rstrip("/") + "/"
    entries = []
    for uri, info in objects:
        path = uri.split("?", 1)[0]
        rel = path[len(prefix) :] if path.startswith(prefix) else path.rsplit("/", 1)[-1]
        entries.append(Entry(uri, PurePosixPath(rel), version=f"{info.size}:{info.mtime_ns}"))
    return entries


def _iter_leaf_inputs(
    values: Iterable[str],
    extensions: frozenset[str] | None,
    skipped: SkippedInputs,
    open_lists: frozenset[str] = frozenset(),
) -> Iterable[_Leaf]:
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
            if not entries:
                yield _Leaf(value, empty=True)
            for entry in entries:
                refusal = list_entry_refusal(entry, value)
                if refusal is not None:  # recorded, never opened
                    yield _Leaf(entry, reason=refusal[0], detail=refusal[1])
                else:
                    yield from _iter_leaf_inputs([entry], extensions, skipped, open_lists | {key})
        elif is_uri(value):
            objects = list_location(value, None)
            if len(objects) == 1 and objects[0][0] == value:  # one object, whatever its name (probe decides)
                yield _Leaf(value, version=f"{objects[0][1].size}:{objects[0][1].mtime_ns}")
            elif not objects and location_info(value).type == pafs.FileType.NotFound and _names_a_file(value):
                yield _Leaf(value)  # a missing object: ingest rejects it
            else:
                yield from _found_leaves(value, _object_entries(value, objects), extensions, skipped)
        elif os.path.isdir(value):
            yield from _found_leaves(value, walk_folder(value), extensions, skipped)
        else:
            found = _expand_glob(value)
            if found is None:
                yield _Leaf(value)  # a file, or a path that does not exist (ingest rejects it)
            elif not found:
                log.info("input %r matched no files", value)
                yield _Leaf(value, empty=True)
            else:
                yield from _iter_leaf_inputs(found, extensions, skipped, open_lists)


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


def _rejected_row(sid: str, text: str, reason: str, detail: str | None, **columns: Any) -> dict[str, Any]:
    row = source_row(id=sid, input=text, **columns)
    row.update({Col.STATE: State.REJECTED, Col.STAGE: "ingest", Col.REASON: reason, Col.DETAIL: detail})
    return row


def _leaf_rows(leaf: _Leaf, config: IngestConfig, cache: FileIdCache) -> list[dict[str, Any]]:
    text = leaf.text
    if leaf.empty:  # recorded, so an auditor sees why a folder or list produced nothing
        return [_rejected_row(ids.source_id_for_text("empty", text), text, "no_media_found", None)]
    if leaf.reason is not None:  # a file under a folder or prefix, a list entry refused: its location is its id
        where = text if is_uri(text) or not leaf.found else os.path.abspath(text)
        path = {Col.SRC_PATH: where} if leaf.found else {}
        return [_rejected_row(ids.source_id_for_text(leaf.reason, where), text, leaf.reason, leaf.detail, **path)]
    if not leaf.found and is_search(text):
        return _search_rows(text, config)
    if not leaf.found and is_url(text):
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
    broken = link_problem(text)
    if broken:
        return [_rejected_row(ids.source_id_for_text("unreadable", path), text, "unreadable", broken, src_path=path)]
    if os.path.isfile(text):
        try:
            digest = cache.sha256(text)
        except OSError as e:  # no permission, a file that vanished: recorded, the run goes on
            detail = f"cannot read the file: {e.strerror or e}"
            return [
                _rejected_row(ids.source_id_for_text("unreadable", path), text, "unreadable", detail, src_path=path)
            ]
        return [source_row(id=ids.source_id_for_content(digest), input=text, src_path=path)]
    return [source_row(id=ids.source_id_for_text("path", path), input=text, src_path=path)]


def plan_sources(
    values: Iterable[str],
    config: IngestConfig,
    id_cache: FileIdCache | None = None,
    skipped: SkippedInputs | None = None,
) -> list[dict[str, Any]]:
    """One pending (or already terminal) source row per input, de-duplicated by id. Files under
    a folder or prefix that get no row (hidden ones, sidecars, other extensions than
    ``config.extensions``) are counted in ``skipped``."""
    cache = id_cache or FileIdCache(None)
    skipped = skipped if skipped is not None else SkippedInputs()
    extensions = frozenset(config.extensions) if config.extensions is not None else None
    rows: list[dict[str, Any]] = []
    for leaf in _iter_leaf_inputs(values, extensions, skipped):
        rows.extend(_leaf_rows(leaf, config, cache))
    if skipped.counts:
        log.info("files under the inputs skipped and counted: %s", dict(skipped.counts))
    return _mark_duplicates(rows)


def names_nothing(row: dict[str, Any]) -> str | None:
    """Why a planned source stands for no media at all, or None: a local path that does not
    exist, a folder, glob, list or prefix that matched no media, an object that is not there,
    a file found there that is no media or cannot be read."""
    text, path = row[Col.INPUT], row.get(Col.SRC_PATH)
    if row.get(Col.REASON) == "no_media_found":
        return f"{text!r} matched no media files"
    if row.get(Col.STATE) == State.REJECTED and row.get(Col.REASON) in ("not_media", "unreadable"):
        return f"{text!r} is {row[Col.REASON].replace('_', ' ')} ({row.get(Col.DETAIL)})"
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
