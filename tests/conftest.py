"""Shared fixtures: generated sample media, one local Ray for the session, real media."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> Path:
    from pipeline.samples import make_sample_media

    folder = tmp_path_factory.mktemp("samples")
    make_sample_media(folder)
    return folder


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray for all tests that run the pipeline (start-up costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """Real media (``../shared/media``) through ``JAVIS_MEDIA_DIR``; tests skip without it."""
    value = os.environ.get("JAVIS_MEDIA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("JAVIS_MEDIA_DIR is not set to a folder of real media")
    return Path(value)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """An S3-compatible server on 127.0.0.1 (moto's standalone server) with one empty bucket.
    Yields ``(endpoint, env)``: ``env`` holds the fake credentials and the endpoint, as a user's
    environment would; this process's environment gets them too."""
    import socket
    import subprocess
    import sys
    import time

    pytest.importorskip("moto")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups on a test machine
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import pyarrow.fs as pafs

        deadline = time.monotonic() + 30
        while True:
            try:
                s3 = pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True)
                s3.create_dir("javis-test")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield endpoint, env
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
