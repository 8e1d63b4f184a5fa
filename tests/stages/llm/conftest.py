"""Tiny random Qwen checkpoints, built once per session (see tests/llm_tiny.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests import llm_tiny


@pytest.fixture(scope="session")
def tiny_text_dir(tmp_path_factory) -> Path:
    return llm_tiny.build_tiny_text_model(tmp_path_factory.mktemp("llm") / "tiny-qwen2-text")


@pytest.fixture(scope="session")
def tiny_text_stop_dir(tmp_path_factory) -> Path:
    return llm_tiny.build_tiny_text_model(tmp_path_factory.mktemp("llm") / "tiny-qwen2-stop", always_stop=True)


@pytest.fixture(scope="session")
def tiny_vl_dir(tmp_path_factory) -> Path:
    return llm_tiny.build_tiny_vl_model(tmp_path_factory.mktemp("llm") / "tiny-qwen2-vl")


@pytest.fixture(scope="session")
def tiny_audio_dir(tmp_path_factory) -> Path:
    return llm_tiny.build_tiny_audio_model(tmp_path_factory.mktemp("llm") / "tiny-qwen2-audio")


@pytest.fixture(scope="session")
def clip_frames() -> np.ndarray:
    """6 frames of a 64x48 synthetic video: a bright square moving right over a gradient."""
    frames = np.zeros((6, 48, 64, 3), dtype=np.uint8)
    frames[..., 2] = np.linspace(0, 255, 64, dtype=np.uint8)[None, None, :]
    for index in range(6):
        frames[index, 16:32, 8 * index : 8 * index + 16] = (255, 200, 0)
    return frames


@pytest.fixture(scope="session")
def clip_audio() -> np.ndarray:
    """2 s at 16 kHz: a 440 Hz tone plus a little noise."""
    time_s = np.arange(32_000) / 16_000
    noise = np.random.default_rng(0).normal(0, 0.05, time_s.size)
    return (0.4 * np.sin(2 * np.pi * 440 * time_s) + noise).astype(np.float32)
