"""stages/download.py against a local HTTP server: real yt-dlp, real media, no network."""

from __future__ import annotations

import collections
import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import pytest

from pipeline import ids
from schemas import Col, State, conform
from stages import download as dl
from stages.base import apply_stage, source_row
from stages.ingest import Ingest, IngestConfig

# Small limits so failures are quick; socket time-out above the item time-out so the stall test
# exercises the wall-clock kill, not yt-dlp's own socket time-out.
FAST = IngestConfig(retries=3, backoff_s=0.05, timeout_s=60.0, socket_timeout_s=10.0)
STALL_BYTES = 256 * 1024
HUGE_BYTES = 512 * 2**20
HOSTILE = {  # path -> _Handler method
    "/loop-a": "_loop",
    "/loop-b": "_loop",
    "/drip.mp4": "_drip",
    "/huge.mp4": "_huge",
    "/truncated.mp4": "_truncated",
    "/fake.mp4": "_fake",
    "/down.mp4": "_down",
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s 160x120 H.264 + AAC mp4 made with FFmpeg."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y"]
    cmd += ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=2"]
    cmd += ["-f", "lavfi", "-i", "sine=frequency=440:duration=2"]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)]
    subprocess.run(cmd, check=True, timeout=60)
    return path


class _State:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits: collections.Counter[str] = collections.Counter()
        self.statuses: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.stalled = threading.Event()
        self.huge_done = threading.Event()
        self.huge_sent = 0
        self.base = ""

    def url(self, name: str) -> str:
        return self.base + name


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files plus special paths: ``/flaky.mp4`` (503 on the first request, then the
    clip), ``/stall.mp4`` (headers and some bytes, then silence until the server stops) and the
    hostile servers of :data:`HOSTILE`."""

    def __init__(self, *args: Any, state: _State, **kwargs: Any) -> None:
        self.state = state
        super().__init__(*args, directory=str(state.root), **kwargs)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        with self.state.lock:
            self.state.statuses.append((self.path, code))
        super().send_response(code, message)

    def do_GET(self) -> None:
        with self.state.lock:
            self.state.hits[self.path] += 1
            hits = self.state.hits[self.path]
        if self.path == "/flaky.mp4":
            if hits == 1:
                self.send_error(503, "try later")
                return
            self.path = "/clip.mp4"
        elif self.path == "/stall.mp4":
            self._stall()
            return
        elif self.path == "/busy.mp4":  # 429 with a short Retry-After once, then the clip
            if hits == 1:
                self._refuse(429, "1")
                return
            self.path = "/clip.mp4"
        elif self.path in HOSTILE:
            getattr(self, HOSTILE[self.path])()
            return
        super().do_GET()

    def _refuse(self, code: int, retry_after: str) -> None:
        self.send_response(code)
        self.send_header("Retry-After", retry_after)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _down(self) -> None:
        self._refuse(503, "3600")

    def _loop(self) -> None:  # /loop-a -> /loop-b -> /loop-a ...
        self.send_response(302)
        self.send_header("Location", "/loop-b" if self.path == "/loop-a" else "/loop-a")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _media_headers(self, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _drip(self) -> None:  # one byte a second: never silent long enough for a socket time-out
        self._media_headers(10_000)
        while not self.state.stop.wait(1.0):
            try:
                self.wfile.write(b"\0")
                self.wfile.flush()
            except OSError:
                return

    def _huge(self) -> None:  # claims 512 MiB and sends until the client hangs up
        self._media_headers(HUGE_BYTES)
        chunk = b"\0" * 65536
        try:
            while self.state.huge_sent < HUGE_BYTES and not self.state.stop.is_set():
                self.wfile.write(chunk)
                with self.state.lock:
                    self.state.huge_sent += len(chunk)
        except OSError:
            pass
        finally:
            self.state.huge_done.set()

    def _truncated(self) -> None:  # the clip's Content-Length, half its bytes, then the connection closes
        body = (self.state.root / "clip.mp4").read_bytes()
        self._media_headers(len(body))
        try:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def _fake(self) -> None:  # a web page labelled as video
        body = b"<!DOCTYPE html><html><head><title>Login</title></head><body>sign in</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stall(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(10 * STALL_BYTES))
        self.end_headers()
        try:
            self.wfile.write(b"\0" * STALL_BYTES)
            self.wfile.flush()
        except OSError:
            return  # the extractor's probe request hangs up after the headers
        self.state.stalled.set()
        self.state.stop.wait(30)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # do not wait for the stalled handler at shutdown


@pytest.fixture
def server(tmp_path: Path, clip: Path) -> Any:
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(clip, root / "clip.mp4")
    shutil.copy(clip, root / "Dog_Barking_Title.mp4")
    shutil.copy(clip, root / "old.mp4")
    os.utime(root / "old.mp4", (978307200, 978307200))  # 2001-01-01: Last-Modified -> upload date
    (root / "page.html").write_text("<html><head><title>No video</title></head><body>text</body></html>")
    (root / "two.html").write_text(
        '<html><body><video src="clip.mp4"></video><video src="old.mp4"></video></body></html>'
    )
    state = _State(root)
    httpd = _Server(("127.0.0.1", 0), functools.partial(_Handler, state=state))
    state.base = f"http://127.0.0.1:{httpd.server_port}/"
    ld = {
        "@context": "https://schema.org",
        "@type": "VideoObject",
        "name": "Dog barking in the park",
        "contentUrl": state.url("clip.mp4"),
        "duration": "PT2S",
        "uploadDate": "2020-03-04",
        "author": {"@type": "Person", "name": "Alice"},
    }
    (root / "video.html").write_text(
        f'<html><head><script type="application/ld+json">{json.dumps(ld)}</script></head><body>x</body></html>'
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    state.stop.set()
    httpd.shutdown()
    httpd.server_close()


def _files_of(folder: Path, source_id: str) -> list[str]:
    return sorted(p.name for p in folder.glob(f"{source_id}.*")) if folder.exists() else []


def _sid(url: str) -> str:
    return ids.source_id_for_url(url)


def test_direct_media_url_is_saved_under_its_id(server: _State, tmp_path: Path) -> None:
    url = server.url("Dog_Barking_Title.mp4")
    out = tmp_path / "raw"
    outcome = dl.download(url, _sid(url), str(out), FAST)
    assert outcome.rejection is None
    path = Path(outcome.columns[Col.SRC_PATH])
    assert path == out / f"{_sid(url)}.mp4" and path.is_absolute()
    assert "Dog" not in path.name
    assert path.read_bytes() == (server.root / "Dog_Barking_Title.mp4").read_bytes()
    assert outcome.columns[Col.SRC_SIZE_BYTES] == path.stat().st_size
    assert outcome.columns[Col.SRC_EXTRACTOR] == "generic"
    assert outcome.columns[Col.SRC_DURATION_S] is None  # a direct URL carries no duration
    assert _files_of(out, _sid(url)) == [f"{_sid(url)}.ingest.json", f"{_sid(url)}.mp4"]


def test_page_metadata_is_recorded(server: _State, tmp_path: Path) -> None:
    url = server.url("video.html")
    outcome = dl.download(url, _sid(url), str(tmp_path), FAST)
    assert outcome.rejection is None
    cols = outcome.columns
    assert (cols[Col.SRC_TITLE], cols[Col.SRC_UPLOADER]) == ("Dog barking in the park", "Alice")
    assert (cols[Col.SRC_UPLOAD_DATE], cols[Col.SRC_DURATION_S]) == ("20200304", 2.0)
    assert Path(cols[Col.SRC_PATH]).name == f"{_sid(url)}.mp4"


def test_404_raises_at_once_and_leaves_nothing(server: _State, tmp_path: Path) -> None:
    url = server.url("missing.mp4")
    config = IngestConfig(retries=3, backoff_s=1.0, timeout_s=60.0)
    with pytest.raises(dl.DownloadFailed) as info:
        dl.download(url, _sid(url), str(tmp_path), config)
    assert info.value.error_type == "HTTPError" and info.value.status == 404
    assert str(info.value).startswith("HTTPError 404:")
    assert server.hits["/missing.mp4"] == 1  # permanent: not retried
    assert _files_of(tmp_path, _sid(url)) == []


def test_page_without_media_raises_unsupported(server: _State, tmp_path: Path) -> None:
    url = server.url("page.html")
    with pytest.raises(dl.DownloadFailed, match="Unsupported URL") as info:
        dl.download(url, _sid(url), str(tmp_path), FAST)
    assert info.value.error_type == "UnsupportedError"
    assert server.hits["/page.html"] == 1
    assert _files_of(tmp_path, _sid(url)) == []


def test_transient_503_is_retried(server: _State, tmp_path: Path) -> None:
    url = server.url("flaky.mp4")
    outcome = dl.download(url, _sid(url), str(tmp_path), FAST)
    assert outcome.rejection is None
    assert server.statuses[0] == ("/flaky.mp4", 503)
    assert server.hits["/flaky.mp4"] >= 2
    assert Path(outcome.columns[Col.SRC_PATH]).read_bytes() == (server.root / "clip.mp4").read_bytes()


def test_transient_error_fails_when_attempts_run_out(server: _State, tmp_path: Path) -> None:
    url = server.url("flaky.mp4")
    with pytest.raises(dl.DownloadFailed, match="HTTPError 503"):
        dl.download(url, _sid(url), str(tmp_path), IngestConfig(retries=1, timeout_s=60.0))
    assert server.hits["/flaky.mp4"] == 1


def test_timeout_kills_the_download_and_removes_partial_files(server: _State, tmp_path: Path) -> None:
    url = server.url("stall.mp4")
    config = IngestConfig(retries=1, timeout_s=3.0, socket_timeout_s=30.0)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="longer than 3 s"):
        dl.download(url, _sid(url), str(tmp_path), config)
    assert time.monotonic() - start < 8.0
    assert server.stalled.is_set()  # the download had started writing
    assert _files_of(tmp_path, _sid(url)) == []


@pytest.mark.parametrize(
    ("name", "overrides", "metric", "value", "threshold"),
    [
        ("video.html", {"max_duration_s": 1.5}, Col.SRC_DURATION_S, 2.0, 1.5),
        ("old.mp4", {"date_after": "20100101"}, Col.SRC_UPLOAD_DATE, 20010101.0, 20100101.0),
        ("clip.mp4", {"max_filesize_mb": 0.01}, Col.SRC_SIZE_BYTES, None, 10485.0),
    ],
)
def test_filters_reject_without_downloading(
    server: _State, tmp_path: Path, name: str, overrides: dict[str, Any], metric: str, value: Any, threshold: float
) -> None:
    url = server.url(name)
    config = IngestConfig(retries=1, timeout_s=60.0, **overrides)
    outcome = dl.download(url, _sid(url), str(tmp_path), config)
    assert outcome.rejection is not None
    assert (outcome.rejection.reason, outcome.rejection.metric) == ("filtered", metric)
    assert (outcome.rejection.value, outcome.rejection.threshold) == (value, threshold)
    assert _files_of(tmp_path, _sid(url)) == []


def test_playlist_url_raises_and_downloads_nothing(server: _State, tmp_path: Path) -> None:
    url = server.url("two.html")
    with pytest.raises(dl.DownloadFailed, match="is a playlist") as info:
        dl.download(url, _sid(url), str(tmp_path), FAST)
    assert info.value.error_type == "PlaylistURL"
    assert server.hits["/clip.mp4"] == 0 and server.hits["/old.mp4"] == 0
    assert _files_of(tmp_path, _sid(url)) == []


def test_complete_download_is_reused_without_network(server: _State, tmp_path: Path) -> None:
    url = server.url("clip.mp4")
    sid = _sid(url)
    first = dl.download(url, sid, str(tmp_path), FAST)
    hits = sum(server.hits.values())
    (server.root / "clip.mp4").unlink()  # the server would now answer 404

    again = dl.download(url, sid, str(tmp_path), FAST)
    assert again.rejection is None and again.columns == first.columns
    assert sum(server.hits.values()) == hits

    stricter = dl.download(url, sid, str(tmp_path), IngestConfig(max_filesize_mb=0.01))
    assert stricter.rejection is not None and stricter.rejection.metric == Col.SRC_SIZE_BYTES

    (tmp_path / f"{sid}.mp4.part").write_bytes(b"\0")  # an interrupted re-download: not complete
    with pytest.raises(dl.DownloadFailed, match="404"):
        dl.download(url, sid, str(tmp_path), FAST)
    assert sum(server.hits.values()) == hits + 1
    assert not (tmp_path / f"{sid}.mp4.part").exists()


def test_ingest_stage_records_failed_and_pending_rows(server: _State, tmp_path: Path) -> None:
    good, bad = server.url("clip.mp4"), server.url("missing.mp4")
    table = conform(
        [source_row(id=_sid(u), input=u, src_url=u, src_path=None) for u in (good, bad)],
    )
    out = apply_stage(Ingest(FAST, str(tmp_path)), table, "cfg").to_pylist()
    by_input = {row[Col.INPUT]: row for row in out}
    assert len(out) == 2
    failed = by_input[bad]
    assert (failed[Col.STATE], failed[Col.STAGE], failed[Col.ERROR_TYPE]) == (State.FAILED, "ingest", "DownloadFailed")
    assert "404" in failed[Col.ERROR_MESSAGE]
    passed = by_input[good]
    assert passed[Col.STATE] == State.PENDING and passed[Col.ERROR_TYPE] is None
    assert passed[Col.SRC_PATH] == str(tmp_path / "media" / "raw" / f"{_sid(good)}.mp4")
    assert os.path.getsize(passed[Col.SRC_PATH]) == passed[Col.SRC_SIZE_BYTES]


def test_unsafe_source_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot name a file"):
        dl.download("http://127.0.0.1:1/x.mp4", "../escape", str(tmp_path), FAST)


def test_filter_rejection_judges_known_values_only() -> None:
    config = IngestConfig(max_duration_s=10.0, date_after="20200101", date_before="20201231", max_filesize_mb=1.0)
    assert dl.filter_rejection({}, config) is None
    assert dl.filter_rejection({"duration": 10.0, "upload_date": "20201231", "filesize": 2**20}, config) is None
    late = dl.filter_rejection({"upload_date": "20210101"}, config)
    assert late is not None and (late.metric, late.value, late.threshold) == (Col.SRC_UPLOAD_DATE, 20210101, 20201231)
    big = dl.filter_rejection({"filesize_approx": 2**20 + 1}, config)
    assert big is not None and (big.metric, big.threshold) == (Col.SRC_SIZE_BYTES, 2**20)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ytsearch:dog barking", "ytsearch7:dog barking"),
        ("ytsearch5:dog barking", "ytsearch5:dog barking"),
        ("YTSearch05: cat ", "ytsearch5:cat"),
        ("scsearchall:rain", "scsearchall:rain"),
        ("nicosearchdate:train", "nicosearchdate7:train"),
        ("nicosearchdate3:train", "nicosearchdate3:train"),
    ],
)
def test_search_url_caps_open_queries(query: str, expected: str) -> None:
    assert dl.search_url(query, 7) == expected


@pytest.mark.parametrize("query", ["dog barking", "ytsearch:", "ytsearch0:dog", "https://example.com/v"])
def test_search_url_refuses_non_queries(query: str) -> None:
    with pytest.raises(ValueError):
        dl.search_url(query, 7)


def test_search_hits_keeps_order_and_drops_repeats() -> None:
    info = {
        "entries": [
            {"url": "https://www.youtube.com/watch?v=b", "title": "B"},
            {"url": "https://www.youtube.com/watch?v=a", "title": "A"},
            None,
            {"url": "https://www.youtube.com/watch?v=b", "title": "B again"},
            {"url": "a-bare-id", "id": "x"},
            {"url": "a-bare-id", "webpage_url": "https://site.example/v/c", "title": None},
        ]
    }
    assert dl.search_hits(info) == [
        ("https://www.youtube.com/watch?v=b", "B"),
        ("https://www.youtube.com/watch?v=a", "A"),
        ("https://site.example/v/c", None),
    ]


def test_unknown_search_prefix_fails_fast() -> None:
    start = time.monotonic()
    with pytest.raises(ValueError, match="no yt-dlp extractor"):
        dl.expand_search("nosuchsitesearch3:x", IngestConfig())
    assert time.monotonic() - start < 10.0


@pytest.mark.parametrize("where", ["local", "s3"])
def test_downloads_work_in_scratch_and_land_in_the_output_for_every_node(
    where: str, server: _State, tmp_path: Path, request, monkeypatch
) -> None:
    from stages.storage import SCRATCH_ENV, Storage

    scratch = tmp_path / "scratch"
    monkeypatch.setenv(SCRATCH_ENV, str(scratch))
    if where == "s3":
        request.getfixturevalue("s3_server")
        output = f"s3://javis-test/{tmp_path.name}/out"
    else:
        output = str(tmp_path / "out")
    url = server.url("clip.mp4")
    table = conform([source_row(id=_sid(url), input=url, src_url=url, src_path=None)])
    row = apply_stage(Ingest(FAST, output), table, "cfg").to_pylist()[0]
    store = Storage(output)
    assert row[Col.SRC_PATH] == store.location(f"media/raw/{_sid(url)}.mp4")
    assert store.size(f"media/raw/{_sid(url)}.mp4") == row[Col.SRC_SIZE_BYTES]
    assert store.exists(f"media/raw/{_sid(url)}.ingest.json")  # the completion marker, written last
    assert not [p for p in scratch.rglob("*") if p.is_file()]  # nothing left in scratch
    hits = sum(server.hits.values())
    again = apply_stage(Ingest(FAST, output), table, "cfg").to_pylist()[0]  # a rerun: from the output
    assert again[Col.SRC_PATH] == row[Col.SRC_PATH] and sum(server.hits.values()) == hits


# Hostile servers: each ends in one outcome with a reason, quickly, leaving no file behind.


def test_redirect_loop_fails_at_once(server: _State, tmp_path: Path) -> None:
    url = server.url("loop-a")
    with pytest.raises(dl.DownloadFailed, match="redirect") as info:
        dl.download(url, _sid(url), str(tmp_path), FAST)
    assert info.value.error_type == "RedirectLoop" and info.value.permanent
    assert server.hits["/loop-a"] <= 20  # one attempt's redirects, not three
    assert _files_of(tmp_path, _sid(url)) == []


def test_a_server_that_drips_a_byte_a_second_is_killed_at_the_time_out(server: _State, tmp_path: Path) -> None:
    url = server.url("drip.mp4")
    config = IngestConfig(retries=3, backoff_s=0.05, timeout_s=4.0, socket_timeout_s=3.0)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="longer than 4 s"):
        dl.download(url, _sid(url), str(tmp_path), config)
    assert time.monotonic() - start < 12.0
    assert _files_of(tmp_path, _sid(url)) == []


def test_a_content_length_over_the_size_cap_is_refused_before_the_body(server: _State, tmp_path: Path) -> None:
    url = server.url("huge.mp4")
    outcome = dl.download(url, _sid(url), str(tmp_path), IngestConfig(retries=1, timeout_s=60.0, max_filesize_mb=1))
    assert outcome.rejection is not None
    assert (outcome.rejection.reason, outcome.rejection.metric) == ("filtered", Col.SRC_SIZE_BYTES)
    assert server.huge_done.wait(10)  # the client hung up ...
    assert server.huge_sent < HUGE_BYTES // 8  # ... long before the body (socket buffers aside)
    assert _files_of(tmp_path, _sid(url)) == []


def test_a_body_cut_off_midway_fails_and_leaves_nothing(server: _State, tmp_path: Path) -> None:
    url = server.url("truncated.mp4")
    with pytest.raises(dl.DownloadFailed) as info:
        dl.download(url, _sid(url), str(tmp_path), IngestConfig(retries=2, backoff_s=0.05, timeout_s=60.0))
    assert not info.value.permanent  # the next run tries again
    assert "after 2 attempts" in str(info.value)
    assert _files_of(tmp_path, _sid(url)) == []


def test_html_served_as_video_is_rejected_not_media(server: _State, tmp_path: Path) -> None:
    url = server.url("fake.mp4")
    outcome = dl.download(url, _sid(url), str(tmp_path), FAST)
    assert outcome.rejection is not None and outcome.rejection.reason == "not_media"
    assert "HTML" in (outcome.rejection.detail or "") and Col.SRC_PATH not in outcome.columns
    assert _files_of(tmp_path, _sid(url)) == []  # neither the page nor a completion marker


def test_retry_after_within_the_budget_is_honoured(server: _State, tmp_path: Path) -> None:
    url = server.url("busy.mp4")
    start = time.monotonic()
    outcome = dl.download(url, _sid(url), str(tmp_path), FAST)  # backoff 0.05 s, Retry-After 1 s
    assert outcome.rejection is None
    assert server.statuses[0] == ("/busy.mp4", 429)
    assert time.monotonic() - start >= 1.0


def test_retry_after_beyond_the_budget_gives_up_at_once_with_the_reason(server: _State, tmp_path: Path) -> None:
    url = server.url("down.mp4")
    start = time.monotonic()
    with pytest.raises(dl.DownloadFailed, match="retry after 3600 s") as info:
        dl.download(url, _sid(url), str(tmp_path), FAST)
    assert info.value.status == 503 and not info.value.permanent  # failed: retried on the next run
    assert server.hits["/down.mp4"] == 1 and time.monotonic() - start < 30.0
    assert _files_of(tmp_path, _sid(url)) == []


def test_retry_after_header_forms() -> None:
    assert dl.retry_after_s("120") == 120.0
    assert dl.retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 30) == 30.0
    assert dl.retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 + 30) == 0.0
    assert dl.retry_after_s(None) is None and dl.retry_after_s("soon") is None


def test_ingest_records_every_hostile_download_in_one_terminal_state(server: _State, tmp_path: Path) -> None:
    urls = [server.url(name) for name in ("clip.mp4", "loop-a", "huge.mp4", "fake.mp4", "down.mp4")]
    config = IngestConfig(retries=2, backoff_s=0.05, timeout_s=30.0, max_filesize_mb=1)
    table = conform([source_row(id=_sid(u), input=u, src_url=u, src_path=None) for u in urls])
    out = tmp_path / "out"
    rows = {r[Col.INPUT]: r for r in apply_stage(Ingest(config, str(out)), table, "cfg").to_pylist()}
    got = {name: (rows[server.url(name)][Col.STATE], rows[server.url(name)][Col.REASON])
           for name in ("clip.mp4", "loop-a", "huge.mp4", "fake.mp4", "down.mp4")}  # fmt: skip
    assert got == {
        "clip.mp4": (State.PENDING, None),
        "loop-a": (State.FAILED, None),
        "huge.mp4": (State.REJECTED, "filtered"),
        "fake.mp4": (State.REJECTED, "not_media"),
        "down.mp4": (State.FAILED, None),
    }
    assert [p.name for p in (out / "media" / "raw").iterdir() if not p.name.endswith(".ingest.json")] == [
        f"{_sid(urls[0])}.mp4"
    ]
