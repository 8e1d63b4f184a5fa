"""Crawl end to end: a URL list served by an HTTP server on 127.0.0.1, through yt-dlp and the
whole pipeline on local Ray."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.outputs import read_ledger, read_shards
from pipeline.runner import run
from schemas import Col


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def site(tmp_path, samples):
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(samples / "three_scenes.mp4", root / "video.mp4")
    (root / "page.html").write_text("<html><body>no media here</body></html>")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_list_through_the_pipeline(site, ray_local, tmp_path):
    root, base = site
    urls = tmp_path / "urls.txt"
    urls.write_text(f"# three inputs\n{base}/video.mp4\n{base}/missing.mp4\n{base}/page.html\n")
    out = tmp_path / "out"
    config = load_config("demo-spine", overrides=["ray.progress_bars=false", "ingest.retries=1", "ingest.timeout_s=60"])
    first = run([str(urls)], out, config, show_progress=False)
    assert first.counts["source"] == {"accepted": 1, "failed": 2}
    assert first.counts["clip"] == {"accepted": 3}
    sources = {r[Col.SRC_URL]: r for r in pq.read_table(out / "sources" / "sources.parquet").to_pylist()}
    good = sources[f"{base}/video.mp4"]
    assert Path(good[Col.SRC_PATH]).name.startswith(good[Col.ID])  # named by id, not by title
    assert good[Col.SRC_EXTRACTOR] and good[Col.SRC_SIZE_BYTES] == (root / "video.mp4").stat().st_size
    missing = sources[f"{base}/missing.mp4"]
    assert (missing[Col.STATE], missing[Col.STAGE]) == ("failed", "ingest") and "404" in missing[Col.ERROR_MESSAGE]
    assert sources[f"{base}/page.html"][Col.STATE] == "failed"
    # the server gets the missing file: the rerun retries only the failed sources
    shutil.copy(root / "video.mp4", root / "missing.mp4")
    second = run([str(urls)], out, config, show_progress=False)
    assert second.num_skipped_sources == 1
    ledger = {r[Col.SRC_URL]: r for r in read_ledger(out).to_pylist() if r[Col.KIND] == "source"}
    assert ledger[f"{base}/missing.mp4"][Col.STATE] == "accepted"
    assert ledger[f"{base}/missing.mp4"][Col.ATTEMPT] == 2
    assert ledger[f"{base}/page.html"][Col.STATE] == "failed"
    assert read_shards(out).num_rows == 6  # same bytes, different URL: distinct sources
