"""Where files live: a local folder or object storage, and the node-local scratch directory.

A *location* is a local path or a URI that pyarrow opens (``s3://bucket/prefix``, ``gs://...``,
``hdfs://...``) or, failing that, any protocol fsspec knows (``memory://``, ``az://``, ...).
:class:`Storage` is a location used as a root: paths given to its methods are relative to it,
with ``/`` separators. Nothing here handles credentials: each filesystem takes them from its
usual environment (``AWS_*`` variables, ``~/.aws``, an instance role, ``AWS_ENDPOINT_URL`` for
an S3-compatible server; ``GOOGLE_APPLICATION_CREDENTIALS``; ...), never from javis' config.
Query parameters pyarrow understands may be part of an S3 URI
(``s3://bucket/out?endpoint_override=host:port&scheme=http``).

**Atomic writes.** A local file is written under a temporary name in its folder and renamed; an
object store's single upload is atomic by itself (a reader sees all of the object or none), so
it is written in place. Callers never overwrite a committed object another reader may be
reading: outputs on object storage carry a generation in their names (``pipeline.outputs``).

**Scratch.** Work files (downloads in progress, encodes before upload, sources fetched from
object storage) go to a node-local directory, :func:`scratch_dir`, and are removed when done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SCRATCH_ENV = "JAVIS_SCRATCH_DIR"  # where work files go on each node (default: the system temp dir)


def is_uri(location: str) -> bool:
    """A URI with a scheme other than ``file``; a local path (or ``file://``) otherwise."""
    scheme, sep, _ = str(location).partition("://")
    return bool(sep) and scheme.lower() != "file" and scheme.isidentifier()


def _open(location: str) -> tuple[pafs.FileSystem, str]:
    if is_uri(location) and "@" in location.split("://", 1)[1].split("/", 1)[0]:
        # pyarrow would take s3://key:secret@bucket: it would then sit in manifests and logs
        raise ValueError(
            f"credentials in {location.split('@')[0]}@...: put them in the environment (AWS_ACCESS_KEY_ID, "
            "~/.aws, an instance role), not in the location"
        )
    if not is_uri(location):
        local = location[len("file://") :] if location.startswith("file://") else location
        return pafs.LocalFileSystem(), os.path.abspath(local)
    try:
        return pafs.FileSystem.from_uri(location)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        pass
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(location)
    except (ImportError, ValueError) as e:
        raise ValueError(f"no filesystem for {location!r}: pyarrow and fsspec do not know its scheme ({e})") from e
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def _download(fs: pafs.FileSystem, fs_path: str, local: str | os.PathLike) -> None:
    """Copy one file of ``fs`` to a local path: written under a temporary name, then renamed."""
    tmp = f"{local}.{uuid.uuid4().hex[:8]}.part"
    try:
        with fs.open_input_stream(fs_path) as src, open(tmp, "wb") as dst:
            while chunk := src.read(8 << 20):
                dst.write(chunk)
        os.replace(tmp, local)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


class Storage:
    """A root location (see the module docstring). Pickles as its location string, so Ray
    workers open their own filesystem with their own node's credentials."""

    def __init__(self, root: str | os.PathLike) -> None:
        root = str(root)
        if is_uri(root):
            self.root = root.rstrip("/")
        else:
            self.root = os.path.abspath(root[len("file://") :] if root.startswith("file://") else root)
        self.fs, self.base = _open(self.root)
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Storage, (self.root,))

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    def path(self, rel: str = "") -> str:
        """The filesystem path of ``rel`` (what ``self.fs`` takes)."""
        return f"{self.base.rstrip('/')}/{rel}" if rel else self.base

    def location(self, rel: str) -> str:
        """``rel`` as a location other code can open: an absolute path, or a URI."""
        if self.is_local:
            return os.path.join(self.base, rel)
        root, query = (self.root.split("?", 1) + [""])[:2]
        return f"{root}/{rel}" + (f"?{query}" if query else "")

    def local_path(self, rel: str = "") -> str | None:
        return os.path.join(self.base, rel) if self.is_local else None

    # -- reading -------------------------------------------------------------------------------

    def size(self, rel: str) -> int | None:
        """Size in bytes of a file, ``None`` when there is none."""
        info = self.fs.get_file_info(self.path(rel))
        return info.size if info.type == pafs.FileType.File else None

    def exists(self, rel: str) -> bool:
        return self.size(rel) is not None

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def read_parquet(self, rel: str) -> pa.Table:
        return pq.read_table(self.path(rel), filesystem=self.fs)

    def list_files(self, rel: str = "", recursive: bool = True) -> list[str]:
        """Files under ``rel``, as paths relative to the root, sorted; none if it is missing."""
        return sorted(self.file_sizes(rel, recursive))

    def file_sizes(self, rel: str = "", recursive: bool = True) -> dict[str, int]:
        """``{path relative to the root: size}`` of the files under ``rel``: one listing (on object
        storage, one request per thousand objects) instead of a request per file."""
        selector = pafs.FileSelector(self.path(rel), recursive=recursive, allow_not_found=True)
        prefix = self.base.rstrip("/") + "/"
        infos = self.fs.get_file_info(selector)
        return {i.path[len(prefix) :]: i.size for i in infos if i.type == pafs.FileType.File}

    def get_file(self, rel: str, local: str | os.PathLike) -> None:
        """Copy ``rel`` to a local file (written under a temporary name, then renamed)."""
        _download(self.fs, self.path(rel), local)

    # -- writing -------------------------------------------------------------------------------

    def _local_tmp(self, rel: str) -> tuple[str, str]:
        final = os.path.join(self.base, rel)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        return final, os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.{uuid.uuid4().hex[:8]}.tmp")

    def _write(self, rel: str, write: Callable[[str, pafs.FileSystem], None]) -> None:
        if not self.is_local:
            write(self.path(rel), self.fs)
            return
        final, tmp = self._local_tmp(rel)
        try:
            write(tmp, self.fs)
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)

    def write_bytes(self, rel: str, data: bytes) -> None:
        def write(path: str, fs: pafs.FileSystem) -> None:
            with fs.open_output_stream(path) as f:
                f.write(data)

        self._write(rel, write)

    def write_json(self, rel: str, data: Any) -> None:
        self.write_bytes(rel, (json.dumps(data, indent=2, default=str) + "\n").encode())

    def write_parquet(self, table: pa.Table, rel: str, **kwargs: Any) -> int:
        """Write ``table`` to ``rel``; returns the file's size."""
        self._write(rel, lambda path, fs: pq.write_table(table, path, filesystem=fs, **kwargs))
        return self.size(rel) or 0

    def put_file(self, local: str | os.PathLike, rel: str, move: bool = False) -> None:
        """Store a local file at ``rel`` (renamed into place when ``move`` and on one disk)."""
        if self.is_local:
            final, tmp = self._local_tmp(rel)
            if move:
                try:
                    os.replace(local, final)
                    return
                except OSError:  # another device: copy, then remove
                    pass
            shutil.copyfile(local, tmp)
            os.replace(tmp, final)
        else:
            with open(local, "rb") as src, self.fs.open_output_stream(self.path(rel)) as dst:
                while chunk := src.read(8 << 20):
                    dst.write(chunk)
        if move:
            with contextlib.suppress(FileNotFoundError):
                os.remove(local)

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path(rel))

    def delete_dir(self, rel: str) -> None:
        if self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound:
            self.fs.delete_dir(self.path(rel))


def open_location(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of one location (a local path or a URI)."""
    return _open(location)


def location_info(location: str) -> pafs.FileInfo:
    """Type, size and modification time of one location (``FileType.NotFound`` when absent)."""
    fs, path = _open(location)
    return fs.get_file_info(path)


def list_location(location: str, suffixes: frozenset[str] | None) -> list[tuple[str, pafs.FileInfo]]:
    """The files under a location on object storage whose name ends with one of ``suffixes``
    (lower case; ``None``: every file), as (location, info), sorted: one listing, no request
    per object. The location itself when it is such a file."""
    fs, path = _open(location)
    info = fs.get_file_info(path)
    root, _, query = location.partition("?")
    scheme = root.split("://", 1)[0]

    def uri(found: str) -> str:
        return f"{scheme}://{found}" + (f"?{query}" if query else "")

    if info.type == pafs.FileType.File:
        return [(location, info)] if suffixes is None or os.path.splitext(path)[1].lower() in suffixes else []
    if info.type == pafs.FileType.NotFound:
        return []
    found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    media = [
        i
        for i in found
        if i.type == pafs.FileType.File and (suffixes is None or os.path.splitext(i.path)[1].lower() in suffixes)
    ]
    return sorted((uri(i.path), i) for i in media)


def scratch_dir(configured: str | None = None) -> Path:
    """This node's scratch directory for work files: ``configured``, else ``$JAVIS_SCRATCH_DIR``,
    else ``<system temp>/javis-scratch``. Created if needed."""
    folder = Path(configured or os.environ.get(SCRATCH_ENV) or os.path.join(tempfile.gettempdir(), "javis-scratch"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


SOURCE_CACHE_BYTES = 20 << 30  # sources fetched from object storage kept per node (least recently used go first)


@contextlib.contextmanager
def local_copy(location: str, scratch: Path, max_cache_bytes: int = SOURCE_CACHE_BYTES) -> Iterator[str]:
    """A local path for ``location``: itself when local, else a copy fetched into this node's
    scratch cache. The decoders seek, so a source on object storage is fetched whole, once per
    node: probe, scene_cut and every clip's encode on that node share the copy. Copies not in
    use are evicted, least recently used first, beyond ``max_cache_bytes``; the run removes its
    scratch directory when it ends."""
    if not is_uri(location):
        yield location
        return
    folder = scratch / "sources"
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(location.encode()).hexdigest()[:24] + os.path.splitext(location.split("?")[0])[1]
    path = folder / name
    marker = folder / f"{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.using"
    marker.touch()
    try:
        if path.exists():
            path.touch()  # recently used
        else:
            _download(*open_location(location), path)
        yield str(path)
    finally:
        marker.unlink()
        _evict(folder, max_cache_bytes)


def clear_source_cache(configured: str | None = None) -> None:
    """Remove this node's cached sources that nobody is using (at the end of a run)."""
    folder = scratch_dir(configured) / "sources"
    if folder.is_dir():
        _evict(folder, 0)


def _evict(folder: Path, max_bytes: int) -> None:
    """Delete cached sources nobody uses, oldest first, until the cache fits ``max_bytes``."""
    cached = []
    for entry in folder.iterdir():
        if entry.suffix in (".using", ".part"):
            continue
        with contextlib.suppress(FileNotFoundError):
            cached.append((entry.stat().st_mtime, entry.stat().st_size, entry))
    total = sum(size for _, size, _ in cached)
    for _, size, entry in sorted(cached):
        if total <= max_bytes:
            return
        if not list(folder.glob(f"{entry.name}.*.using")):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                total -= size
