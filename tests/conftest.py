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
        ray.init(num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """Real media (``../shared/media``) through ``JAVIS_MEDIA_DIR``; tests skip without it."""
    value = os.environ.get("JAVIS_MEDIA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("JAVIS_MEDIA_DIR is not set to a folder of real media")
    return Path(value)
