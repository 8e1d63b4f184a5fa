"""download: fetch one remote source with yt-dlp (its Python API) and expand yt-dlp searches.

Called by :class:`stages.ingest.Ingest` for rows with a ``src_url`` and by input planning for
``<extractor>search<N>:`` queries.

* **Files** are ``<download_dir>/<source_id>.<ext>``: named by the deterministic id, never by
  the title, so reruns find them and no title can produce an odd path. The extension is what
  yt-dlp chose; it is not trusted (a ``.txt`` URL is saved as ``.unknown_video``): the probe
  stage checks the content.
* **Filters** (duration, upload-date window, file size) are yt-dlp's own, so a skipped video is
  never downloaded. A skip is recognised from the info dict and the absence of a written file
  (not from yt-dlp's English messages) and becomes ``rejected("filtered")``.
* **Errors** raise :class:`DownloadFailed` (or ``TimeoutError``); ``apply_stage`` records them
  as ``failed`` and the next run retries. Within one call, transient errors (time-outs, 5xx,
  429) are retried with exponential backoff, or after the server's ``Retry-After`` when that
  fits in what is left of ``timeout_s`` (else the item fails at once, saying so); permanent
  ones (most 4xx, redirect loops, unsupported pages) are not.
* **Not media**: a file that starts like a web page (a server that labels HTML ``video/mp4``)
  is deleted and becomes ``rejected("not_media")``.
* **Time-out**: yt-dlp has no overall deadline and a slow server can keep it busy forever, so
  each item runs in a child process that is killed after ``timeout_s`` (all attempts included).
  ``spawn`` because forking a multi-threaded Ray worker can deadlock the child.
* **Resume**: after a success a small marker ``<source_id>.ingest.json`` is written *last*. A
  later call reuses the file without touching the network only if that marker is there, the
  file still has the recorded size and no ``.part`` file of the id is present (an interrupted
  re-download); the filters are re-applied to the recorded metadata. A reused file keeps the
  format it was downloaded with: delete it to force a new download.
* **Failures leave nothing**: partial files of the id (``.part``, ``.ytdl``, unmerged format
  files, merge temp files) are removed after a time-out or a final error, so the next run
  starts clean. Between attempts of one call they are kept, so yt-dlp resumes them.
"""

# Longer than the 400-line guide: the child-process time-out, the resume marker and the error
# classification are what make unattended downloads safe, and search shares that handling.

from __future__ import annotations

import glob
import json
import logging
import multiprocessing
import os
import re
import signal
import time
from collections.abc import Mapping
from typing import Any

from schemas import Col
from stages.base import Outcome, Rejection, passed, rejected
from stages.ffmpeg import ffmpeg_exe
from stages.ingest import Ingest, IngestConfig

log = logging.getLogger(__name__)

_MARKER_SUFFIX = ".ingest.json"  # completion marker, written after the media file
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]+$")  # ids become file names and glob patterns
_RETRYABLE_HTTP = frozenset({408, 425, 429})  # 4xx codes that mean "try again later"
_KILL_GRACE_S = 5.0
_RETRY_MARGIN_S = 2.0  # a Retry-After wait must leave this much of the time-out for the attempt
# <key>[<count>]:<terms>; "date" belongs to keys such as nicosearchdate. yt-dlp wants counts >= 1.
_SEARCH_QUERY = re.compile(r"^(?P<key>[a-z0-9]*?search(?:date)?)(?P<count>\d+|all)?:(?P<terms>.+)$", re.I | re.S)


class DownloadFailed(RuntimeError):
    """A download (or search) that produced no file. ``error_type`` names the underlying error
    (``HTTPError``, ``UnsupportedError``, ``TransportError``...); the message starts with it and
    the HTTP status so the ledger's ``error_message`` says what happened without a traceback."""

    def __init__(
        self,
        error_type: str,
        detail: str,
        status: int | None = None,
        permanent: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        self.error_type = error_type
        self.detail = detail
        self.status = status
        self.permanent = permanent
        self.retry_after_s = retry_after_s  # the server's Retry-After (429, 503), in seconds
        super().__init__(f"{error_type}{f' {status}' if status is not None else ''}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:  # keep the extra fields when pickled
        return (DownloadFailed, (self.error_type, self.detail, self.status, self.permanent, self.retry_after_s))


class _YtdlpLog:
    """yt-dlp's console output, routed into ``logging``. Its errors are raised to us and become
    the exception message, so they only log at debug; its warnings are mostly extractor noise."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)


class _EntryFilter:
    """yt-dlp ``match_filter``: skips videos longer than ``max_duration_s`` (unknown durations
    pass) and playlists. A callable rather than ``match_filter_func("duration <=? N")`` because
    that string form misreads non-integer thresholds (2.5 is read as 2). Playlists are skipped
    (and remembered in ``playlist``) because one source id names one file: the caller reports
    the URL as an error instead of downloading every video onto the same name."""

    def __init__(self, max_duration_s: float | None) -> None:
        self.max_duration_s = max_duration_s
        self.playlist: str | None = None

    def __call__(self, info: Mapping[str, Any], incomplete: bool = False) -> str | None:
        if info.get("playlist_index") is not None or info.get("playlist_id") is not None:
            self.playlist = str(info.get("playlist_title") or info.get("playlist") or info.get("playlist_id"))
            return "playlists are not downloaded"
        duration = info.get("duration")
        if self.max_duration_s is not None and duration is not None and duration > self.max_duration_s:
            return f"duration {duration} s > {self.max_duration_s} s"
        return None


def max_filesize_bytes(config: IngestConfig) -> int | None:
    """``max_filesize_mb`` in bytes (MiB, as yt-dlp's ``--max-filesize 2048M``)."""
    return None if config.max_filesize_mb is None else int(config.max_filesize_mb * 2**20)


def ydl_options(source_id: str, download_dir: str, config: IngestConfig) -> dict[str, Any]:
    """yt-dlp options for one item. ``%`` in the folder is escaped: the template is formatted."""
    from yt_dlp.utils import DateRange

    folder = os.path.abspath(download_dir).replace("%", "%%")
    options: dict[str, Any] = {
        "outtmpl": os.path.join(folder, f"{source_id}.%(ext)s"),
        "restrictfilenames": True,
        "noplaylist": True,  # a watch?v=..&list=.. URL means the video, not the list
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _YtdlpLog(),
        "socket_timeout": config.socket_timeout_s,
        "format": config.format,
        "merge_output_format": config.merge_output_format,
        "match_filter": _EntryFilter(config.max_duration_s),
        "daterange": DateRange(config.date_after, config.date_before),  # inclusive, YYYYMMDD
        "max_filesize": max_filesize_bytes(config),
        "ratelimit": config.rate_limit_bytes_s,
        # A missing fragment must fail the download, not leave a silent hole in the file.
        "skip_unavailable_fragments": False,
        # the same FFmpeg the cut uses: fresh machines have none on PATH, and without one yt-dlp
        # cannot merge "bv*+ba" downloads
        "ffmpeg_location": ffmpeg_exe(),
    }
    return options


def _cause_chain(err: BaseException) -> list[BaseException]:
    """``err`` and what it wraps: yt-dlp keeps causes in ``exc_info`` and ``cause``."""
    chain: list[BaseException] = []
    current: Any = err
    while isinstance(current, BaseException) and all(current is not seen for seen in chain):
        chain.append(current)
        exc_info = getattr(current, "exc_info", None)
        wrapped = exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else None
        current = wrapped or getattr(current, "cause", None) or current.__cause__
    return chain


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds from now: delta-seconds or an HTTP date (RFC 9110);
    ``None`` when absent or unparsable. A date in the past is 0."""
    import email.utils

    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify_error(err: BaseException) -> DownloadFailed:
    """A :class:`DownloadFailed` naming the real error, and whether retrying can help.

    Permanent: HTTP 4xx except 408/425/429, redirect loops, unsupported pages or URL schemes,
    extractor errors yt-dlp marks as expected (private, removed, geo-blocked videos), and bugs
    (non-I/O errors). Transient: everything else yt-dlp or the OS raises (time-outs, refused
    connections, 5xx). A ``Retry-After`` of the response is kept for the retry loop.
    """
    from yt_dlp.networking.exceptions import HTTPError, NoSupportingHandlers
    from yt_dlp.utils import DownloadError, ExtractorError, UnsupportedError, YoutubeDLError

    chain = _cause_chain(err)
    detail = re.sub(r"^ERROR:\s*", "", str(err)) or repr(err)
    http = next((e for e in chain if isinstance(e, HTTPError)), None)
    if http is not None:
        if getattr(http, "redirect_loop", False) or 300 <= http.status < 400:  # the same loop next time
            return DownloadFailed("RedirectLoop", detail, status=http.status, permanent=True)
        permanent = 400 <= http.status < 500 and http.status not in _RETRYABLE_HTTP
        headers = getattr(getattr(http, "response", None), "headers", None)
        wait = retry_after_s(headers.get("Retry-After")) if headers is not None else None
        return DownloadFailed("HTTPError", detail, status=http.status, permanent=permanent, retry_after_s=wait)
    inner = next((e for e in chain if not isinstance(e, DownloadError)), chain[-1])
    if any(isinstance(e, (UnsupportedError, NoSupportingHandlers)) for e in chain):
        permanent = True
    elif any(isinstance(e, ExtractorError) and e.expected for e in chain):
        permanent = True
    else:
        permanent = not isinstance(inner, (YoutubeDLError, OSError))
    return DownloadFailed(type(inner).__name__, detail, permanent=permanent)


def metadata_columns(info: Mapping[str, Any]) -> dict[str, Any]:
    """The source metadata yt-dlp reports (``None`` where the site gives none: a direct media
    URL has no duration, and its title and date are guesses from the file name and headers)."""
    duration = info.get("duration")
    return {
        Col.SRC_TITLE: info.get("title"),
        Col.SRC_UPLOADER: info.get("uploader") or info.get("channel"),
        Col.SRC_UPLOAD_DATE: info.get("upload_date"),
        Col.SRC_LICENSE: info.get("license"),
        Col.SRC_DURATION_S: None if duration is None else float(duration),
        Col.SRC_EXTRACTOR: info.get("extractor"),
    }


def filter_rejection(info: Mapping[str, Any], config: IngestConfig) -> Rejection | None:
    """Which configured filter a video fails, judged on known values only (unknown passes)."""
    duration = info.get("duration")
    if config.max_duration_s is not None and duration is not None and duration > config.max_duration_s:
        return Rejection("filtered", Col.SRC_DURATION_S, float(duration), float(config.max_duration_s))
    date = info.get("upload_date")
    date = date if isinstance(date, str) and len(date) == 8 and date.isdigit() else None
    if date and config.date_after and date < config.date_after:
        return Rejection("filtered", Col.SRC_UPLOAD_DATE, float(date), float(config.date_after))
    if date and config.date_before and date > config.date_before:
        return Rejection("filtered", Col.SRC_UPLOAD_DATE, float(date), float(config.date_before))
    size = info.get("filesize") or info.get("filesize_approx")
    limit = max_filesize_bytes(config)
    if limit is not None and size is not None and size > limit:
        return Rejection("filtered", Col.SRC_SIZE_BYTES, float(size), float(limit))
    return None


def _written_file(info: Mapping[str, Any]) -> str | None:
    """The file yt-dlp wrote, as it reports it (``filepath`` is set only once a file exists)."""
    for item in info.get("requested_downloads") or []:
        path = item.get("filepath")
        if path and os.path.isfile(path):
            return os.path.abspath(path)
    return None


def _interpret(info: Mapping[str, Any] | None, playlist: str | None, config: IngestConfig) -> Outcome:
    """Turn what ``extract_info`` returned into an outcome; no file and no error means a filter
    skipped the video (yt-dlp returns normally in that case)."""
    if playlist is not None or (info is not None and info.get("_type") in ("playlist", "multi_video")):
        raise DownloadFailed(
            "PlaylistURL", f"the URL is a playlist ({playlist}); give its videos as separate inputs", permanent=True
        )
    if info is None:
        raise DownloadFailed("NoInfo", "yt-dlp returned no information", permanent=True)
    columns = metadata_columns(info)
    path = _written_file(info)
    if path is not None:
        return passed(**{Col.SRC_PATH: path, Col.SRC_SIZE_BYTES: os.path.getsize(path)}, **columns)
    rejection = filter_rejection(info, config)
    limit = max_filesize_bytes(config)
    if rejection is None and info.get("requested_downloads") and limit is not None:
        # A format was chosen but no file kept: the downloader stopped on a Content-Length over
        # max_filesize (the one filter applied while downloading), so the size is not in info.
        rejection = Rejection("filtered", Col.SRC_SIZE_BYTES, None, float(limit))
    if rejection is None:
        raise DownloadFailed("NoFileWritten", "yt-dlp finished without an error but wrote no file")
    return rejected(rejection.reason, rejection.metric, rejection.value, rejection.threshold, **columns)


def _attempt(url: str, source_id: str, download_dir: str, config: IngestConfig) -> Outcome:
    """One yt-dlp run; every failure comes out as :class:`DownloadFailed`."""
    import yt_dlp

    options = ydl_options(source_id, download_dir, config)
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(url, download=True)
    except Exception as e:  # yt-dlp raises many types; classify_error sorts them
        raise classify_error(e) from None
    return _interpret(info, options["match_filter"].playlist, config)


def download_with_retries(
    url: str, source_id: str, download_dir: str, config: IngestConfig, deadline: float | None = None
) -> Outcome:
    """Up to ``config.retries`` attempts, waiting ``backoff_s``, then twice as long, ...;
    a permanent error stops at once. A server's ``Retry-After`` (429, 503) replaces the
    backoff when the wait fits before ``deadline`` (``time.monotonic()``; default: ``timeout_s``
    from now); when it does not, the item fails at once with that reason instead of being killed
    midway. yt-dlp's own per-connection retries (which resume a partial file) still happen inside
    each attempt."""
    deadline = time.monotonic() + config.timeout_s if deadline is None else deadline
    delay = config.backoff_s
    for attempt in range(1, config.retries + 1):
        try:
            return _attempt(url, source_id, download_dir, config)
        except DownloadFailed as e:
            if e.permanent or attempt == config.retries:
                if attempt == 1:
                    raise
                raise _with_detail(e, f"{e.detail} (after {attempt} attempts)") from None
            wait = delay if e.retry_after_s is None else e.retry_after_s
            left_s = deadline - time.monotonic()
            if e.retry_after_s is not None and wait > left_s - _RETRY_MARGIN_S:
                detail = (
                    f"{e.detail}; the server asked to retry after {wait:g} s, more than the {max(left_s, 0):.0f} s"
                    f" left of ingest.timeout_s ({config.timeout_s:g} s); retried on the next run"
                )
                raise _with_detail(e, detail) from None
            log.warning(
                "download %s: attempt %d/%d failed (%s); retrying in %.1f s",
                source_id,
                attempt,
                config.retries,
                e,
                wait,
            )
        time.sleep(wait)
        delay *= 2
    raise AssertionError("unreachable: the last attempt returns or raises")


def _with_detail(e: DownloadFailed, detail: str) -> DownloadFailed:
    return DownloadFailed(e.error_type, detail, e.status, e.permanent, e.retry_after_s)


def _child_main(conn: Any, url: str, source_id: str, download_dir: str, config: IngestConfig, deadline: float) -> None:
    """Child-process entry: its own process group (so a kill also reaches an FFmpeg started
    for a merge), and exactly one message back: ``("ok", Outcome)`` or ``("error", DownloadFailed)``."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    try:
        message: tuple[str, Any] = ("ok", download_with_retries(url, source_id, download_dir, config, deadline))
    except DownloadFailed as e:
        message = ("error", e)
    except BaseException as e:  # anything else must still reach the parent, as a message
        message = ("error", DownloadFailed(type(e).__name__, str(e) or repr(e), permanent=True))
    conn.send(message)
    conn.close()


def _stop(proc: multiprocessing.process.BaseProcess, kill: bool) -> None:
    """Reap the child; with ``kill`` (or if it lingers) kill its whole process group first."""
    if not kill:
        proc.join(_KILL_GRACE_S)
    if proc.is_alive():
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        except (ProcessLookupError, PermissionError):
            proc.kill()  # the child had not made its own group yet
        proc.join(_KILL_GRACE_S)


def _run_in_child(url: str, source_id: str, download_dir: str, config: IngestConfig) -> Outcome:
    """Run :func:`download_with_retries` in a child process under the wall-clock limit."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    deadline = time.monotonic() + config.timeout_s  # CLOCK_MONOTONIC is system-wide: the child shares it
    proc = ctx.Process(
        target=_child_main,
        args=(sender, url, source_id, download_dir, config, deadline),
        name=f"download-{source_id}",
    )
    proc.start()
    sender.close()  # so a child that dies without a message shows up as EOF
    message = None
    try:
        if not receiver.poll(config.timeout_s):
            raise TimeoutError(f"download of {url} took longer than {config.timeout_s:g} s (all attempts); killed")
        try:
            message = receiver.recv()
        except EOFError:
            proc.join(_KILL_GRACE_S)
            raise DownloadFailed("ChildDied", f"download process exited with code {proc.exitcode}") from None
    finally:
        receiver.close()
        _stop(proc, kill=message is None)
    if message[0] == "ok":
        return message[1]
    raise message[1]


def _partial_files(download_dir: str, source_id: str) -> list[str]:
    """Files of this id that are not a finished download: yt-dlp's finished files are
    ``<id>.<ext>`` (one extension); ``.part``, ``.ytdl``, ``.f137.mp4``, ``.temp.mkv`` and
    fragment files have more. The completion marker is not partial."""
    found = glob.glob(os.path.join(glob.escape(download_dir), f"{source_id}.*"))
    return [p for p in found if not p.endswith(_MARKER_SUFFIX) and os.path.basename(p).count(".") > 1]


def _remove_partials(download_dir: str, source_id: str) -> None:
    for path in _partial_files(download_dir, source_id):
        try:
            os.remove(path)
            log.info("removed partial download %s", path)
        except OSError as e:
            log.warning("could not remove partial download %s: %s", path, e)


def _marker_path(download_dir: str, source_id: str) -> str:
    return os.path.join(download_dir, marker_name(source_id))


def _write_marker(download_dir: str, source_id: str, outcome: Outcome) -> None:
    """Record a finished download (file name relative to the folder, so it survives a move)."""
    record = dict(outcome.columns)
    record[Col.SRC_PATH] = os.path.basename(record[Col.SRC_PATH])
    path = _marker_path(download_dir, source_id)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:  # the marker is written last: see the module doc
        json.dump(record, f)
    os.replace(tmp, path)


def _reuse(download_dir: str, source_id: str, config: IngestConfig) -> Outcome | None:
    """The outcome of an earlier complete download of this id, or ``None`` (see module doc)."""
    marker = _marker_path(download_dir, source_id)
    if not os.path.isfile(marker) or glob.glob(os.path.join(glob.escape(download_dir), f"{source_id}.*.part")):
        return None
    try:
        with open(marker, encoding="utf-8") as f:
            record = json.load(f)
        path = os.path.join(download_dir, record[Col.SRC_PATH])
        size = os.path.getsize(path) if os.path.isfile(path) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return reuse_outcome(record, size, os.path.abspath(path), config)


def reuse_outcome(record: Mapping[str, Any], size: int | None, location: str, config: IngestConfig) -> Outcome | None:
    """The outcome of a finished download from its marker ``record``, given the size of the
    file it names (``None``: gone), now at ``location``; ``None`` if it cannot be reused."""
    try:
        columns = {k: v for k, v in record.items() if k in Ingest.produces}
        if size is None or size != columns[Col.SRC_SIZE_BYTES]:
            return None
    except (KeyError, TypeError, AttributeError):
        return None
    columns[Col.SRC_PATH] = location
    known = {
        "duration": columns.get(Col.SRC_DURATION_S),
        "upload_date": columns.get(Col.SRC_UPLOAD_DATE),
        "filesize": columns.get(Col.SRC_SIZE_BYTES),
    }
    rejection = filter_rejection(known, config)  # the config may be stricter than last time
    if rejection is not None:
        return rejected(rejection.reason, rejection.metric, rejection.value, rejection.threshold, **columns)
    log.info("reusing complete download %s", location)
    return passed(**columns)


def marker_name(source_id: str) -> str:
    return source_id + _MARKER_SUFFIX


def download(url: str, source_id: str, download_dir: str, config: IngestConfig) -> Outcome:
    """Download ``url`` to ``<download_dir>/<source_id>.<ext>``.

    Returns ``passed`` with ``src_path`` (absolute), ``src_size_bytes`` and yt-dlp's metadata,
    ``rejected("filtered")`` when a duration / date / size filter skipped the video (a
    ``Content-Length`` over the size cap stops before the body), or ``rejected("not_media")``
    when the server sent a web page instead of media (the file is deleted). Raises
    :class:`DownloadFailed` on a download error and ``TimeoutError`` past ``config.timeout_s``.
    """
    if not _SAFE_ID.match(source_id):
        raise ValueError(f"source id {source_id!r} cannot name a file")
    download_dir = os.path.abspath(download_dir)
    os.makedirs(download_dir, exist_ok=True)
    reused = _reuse(download_dir, source_id, config)
    if reused is not None:
        return reused
    try:
        outcome = _run_in_child(url, source_id, download_dir, config)
    except BaseException:
        _remove_partials(download_dir, source_id)
        raise
    if outcome.rejection is None and _is_markup(outcome.columns[Col.SRC_PATH]):
        os.remove(outcome.columns.pop(Col.SRC_PATH))
        detail = "the server sent an HTML/XML page, not media (whatever its Content-Type said)"
        return rejected("not_media", detail=detail, **outcome.columns)
    if outcome.rejection is None:
        _write_marker(download_dir, source_id, outcome)
    return outcome


def _is_markup(path: str) -> bool:
    """The file starts like a web page (``<html``, ``<!DOCTYPE``, ``<?xml``...): no container
    javis decodes starts with ``<``, so a server that labels a page ``video/mp4`` is caught here,
    before the file is stored, instead of as an ``unreadable`` source at probe."""
    with open(path, "rb") as f:
        head = f.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"<")


def search_url(query: str, max_results: int) -> str:
    """The yt-dlp search string for ``query``: the count is kept when given (``all`` too) and
    set to ``max_results`` when missing, so an open query cannot expand without bound."""
    match = _SEARCH_QUERY.match(query.strip())
    if match is None or not match["terms"].strip():
        raise ValueError(f"not a yt-dlp search query (<extractor>search[N|all]:<terms>): {query!r}")
    count = match["count"]
    if count is None:
        count = str(max_results)
    elif count.isdigit():
        if int(count) < 1:
            raise ValueError(f"search count must be >= 1 in {query!r}")
        count = str(int(count))
    return f"{match['key'].lower()}{count.lower()}:{match['terms'].strip()}"


def search_hits(info: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(url, title) of each search result, in result order, without repeats. Results without an
    http(s) URL are skipped: input planning derives source ids from URLs."""
    hits: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for entry in info.get("entries") or []:
        if not entry:
            continue
        candidates = (entry.get("webpage_url"), entry.get("url"), entry.get("original_url"))
        url = next(
            (u for u in candidates if isinstance(u, str) and u.lower().startswith(("http://", "https://"))), None
        )
        if url is None:
            log.warning("search result without an http(s) URL skipped: %r", entry.get("id"))
        elif url not in seen:
            seen.add(url)
            hits.append((url, entry.get("title")))
    return hits


def _check_search_supported(search: str) -> None:
    """Fail fast, offline, on a prefix no extractor handles (yt-dlp would otherwise try it as a
    URL and fail with a confusing 'unsupported url scheme')."""
    from yt_dlp.extractor import gen_extractor_classes

    if not any(ie.ie_key() != "Generic" and ie.suitable(search) for ie in gen_extractor_classes()):
        raise ValueError(f"no yt-dlp extractor handles the search {search!r} (unknown search prefix?)")


def expand_search(query: str, config: IngestConfig) -> list[tuple[str, str | None]]:
    """Run a yt-dlp search without downloading (``extract_flat``): (url, title) pairs.

    Raises ``ValueError`` for a malformed or unknown query and :class:`DownloadFailed` when
    the search fails or finds nothing (so the input is recorded as failed, not lost).
    """
    import yt_dlp

    search = search_url(query, config.search_max_results)
    _check_search_supported(search)
    options = {
        "extract_flat": True,
        "skip_download": True,
        "quiet": True,
        "no_warnings": True,
        "logger": _YtdlpLog(),
        "socket_timeout": config.socket_timeout_s,
    }
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(search, download=False)
    except Exception as e:
        raise classify_error(e) from None
    hits = search_hits(info or {})
    if not hits:
        raise DownloadFailed("NoResults", f"the search {search!r} returned no videos")
    log.info("search %r: %d results", search, len(hits))
    return hits
