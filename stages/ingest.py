"""ingest: make every source available at a location every node can read.

Input: pending source rows with ``src_path`` (a local file, or an object on object storage) or
``src_url`` (to download). yt-dlp works in this node's scratch directory; the finished file is
then stored in the output location's ``download_dir`` (renamed into a local folder, uploaded to
object storage), its completion marker last, so any node can read it and a rerun reuses it
without the network. What yt-dlp leaves in scratch is removed.
Output columns: ``src_path`` (local file or object URI), ``src_size_bytes`` and, for downloads,
the source metadata yt-dlp reports (title, uploader, upload date, licence, duration, extractor).
Reason codes: ``missing_file`` (local path gone), ``empty_file`` (zero bytes),
``duplicate`` (same content as another input), ``no_media_found`` (a folder, glob or list
that named no media file), ``not_media`` (a file under an input folder or prefix that has no
video or audio extension; the detail names it) and ``unreadable`` (a broken symbolic link, a
link loop, a file that cannot be read; the detail says which): these five set by input
planning (``pipeline/inputs.py``, ``pipeline/listing.py``),
``filtered`` (yt-dlp's duration / size / date filters skipped the video, a ``Content-Length``
over the size cap included), ``not_media`` (a download that is a web page, whatever its
``Content-Type``), ``unsupported_url`` (a list entry with a scheme other than http(s) or object
storage: ``file://``, ``ftp://``, ``javascript:``...) and ``outside_list_folder`` (a list's
local path that leads out of the list's folder): the last two set by input planning.
Download errors (HTTP errors, unsupported pages, time-outs) are ``failed`` and retried on the
next run.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any, ClassVar

from pipeline.listing import normalise_extensions
from schemas import Col, Kind
from stages.base import Outcome, passed, rejected
from stages.storage import Storage, is_uri, location_info, scratch_dir


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    download_dir: str = "media/raw"  # relative to the output folder; files named <source_id>.<ext>
    # Formats that always carry audio: best video + best audio merged, else one file with both.
    format: str = "bv*+ba/b[acodec!=none]/b"
    merge_output_format: str = "mkv"  # container for merged video+audio (holds any codec pair)
    max_duration_s: float | None = 1800.0  # skip longer videos (None: no cap)
    max_filesize_mb: float | None = 2048.0  # skip larger downloads (None: no cap)
    date_after: str | None = None  # YYYYMMDD, inclusive upload-date window
    date_before: str | None = None  # YYYYMMDD, inclusive
    retries: int = 3  # attempts per item, with exponential backoff
    backoff_s: float = 2.0  # first wait between attempts; doubles each time
    timeout_s: float = 900.0  # wall-clock limit for one item, all attempts included
    socket_timeout_s: float = 30.0  # yt-dlp: give up on a connection silent this long
    search_max_results: int = 10  # results taken per yt-dlp search query
    rate_limit_bytes_s: int | None = None  # download speed cap per item, bytes/s (None: no cap)
    # Only files with these extensions (e.g. [".mp4", ".mkv"]) under an input folder or prefix
    # are considered; the others are skipped and counted in the manifest (None: every file is
    # recorded, non-media ones rejected as not_media).
    extensions: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("date_after", "date_before"):
            value = getattr(self, name)
            if value is not None and not (len(str(value)) == 8 and str(value).isdigit()):
                raise ValueError(f"ingest.{name} must be YYYYMMDD, got {value!r}")
        if self.retries < 1:
            raise ValueError("ingest.retries must be >= 1")
        if self.timeout_s <= 0 or self.socket_timeout_s <= 0 or self.backoff_s < 0:
            raise ValueError("ingest time-outs must be > 0 and backoff >= 0")
        if self.search_max_results < 1:
            raise ValueError("ingest.search_max_results must be >= 1")
        if self.extensions is not None:  # ("MP4", ".mkv") -> (".mkv", ".mp4"): a stable config hash
            object.__setattr__(self, "extensions", normalise_extensions(self.extensions))


class Ingest:
    """See the module docstring."""

    name: ClassVar[str] = "ingest"
    unit: ClassVar[str] = Kind.SOURCE
    reasons: ClassVar[tuple[str, ...]] = (
        "missing_file",
        "empty_file",
        "duplicate",
        "filtered",
        "no_media_found",
        "not_media",
        "unreadable",
        "unsupported_url",
        "outside_list_folder",
    )
    requires: ClassVar[tuple[str, ...]] = (Col.SRC_PATH, Col.SRC_URL)
    produces: ClassVar[tuple[str, ...]] = (
        Col.SRC_PATH,
        Col.SRC_SIZE_BYTES,
        Col.SRC_TITLE,
        Col.SRC_UPLOADER,
        Col.SRC_UPLOAD_DATE,
        Col.SRC_LICENSE,
        Col.SRC_DURATION_S,
        Col.SRC_EXTRACTOR,
    )

    def __init__(self, config: IngestConfig, output_dir: str) -> None:
        self.config = config
        self.storage = Storage(output_dir)

    def process(self, row: dict[str, Any]) -> Outcome:
        path = row.get(Col.SRC_PATH)
        if path is None:
            return self._download(row[Col.SRC_URL], row[Col.ID])
        if is_uri(path):
            info = location_info(path)
            size = info.size if info.type.name == "File" else None
        else:
            size = os.path.getsize(path) if os.path.isfile(path) else None
        if size is None:
            return rejected("missing_file")
        if size == 0:
            return rejected("empty_file", metric=Col.SRC_SIZE_BYTES, value=0, threshold=1, src_size_bytes=0)
        return passed(src_size_bytes=size)

    def _download(self, url: str, source_id: str) -> Outcome:
        from stages import download  # yt-dlp import is slow: only when needed

        marker = f"{self.config.download_dir}/{download.marker_name(source_id)}"
        if self.storage.exists(marker):  # finished by an earlier run
            record = self.storage.read_json(marker)
            rel = f"{self.config.download_dir}/{record.get(Col.SRC_PATH)}"
            reused = download.reuse_outcome(record, self.storage.size(rel), self.storage.location(rel), self.config)
            if reused is not None:
                return reused
        work = scratch_dir() / "downloads" / source_id
        try:
            outcome = download.download(url, source_id, str(work), self.config)
            if outcome.rejection is None:
                local = outcome.columns[Col.SRC_PATH]
                rel = f"{self.config.download_dir}/{os.path.basename(local)}"
                self.storage.put_file(local, rel, move=True)
                self.storage.put_file(os.path.join(work, download.marker_name(source_id)), marker, move=True)
                outcome.columns[Col.SRC_PATH] = self.storage.location(rel)
            return outcome
        finally:
            shutil.rmtree(work, ignore_errors=True)
