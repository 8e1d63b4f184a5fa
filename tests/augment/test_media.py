import numpy as np
import pytest

from augment.media import load_audio_window, load_clip, rgb_to_yuv420p, write_clip
from stages.cut import measure_clip


def _clip(num_frames=50, height=96, width=128, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.stack([((xx + 3 * t) % 64 * 4 + yy)[..., None].repeat(3, -1) % 256 for t in range(num_frames)]).astype(
        np.uint8
    )
    audio = (0.2 * rng.standard_normal((2, int(num_frames / 25 * 44100)))).astype(np.float32)
    return frames, audio


def test_write_is_byte_identical_and_keeps_durations():
    frames, audio = _clip()
    first = write_clip(frames, 25.0, audio, 44100)
    assert first == write_clip(frames, 25.0, audio, 44100)
    measured, _ = measure_clip(first)
    assert measured["cut_video_duration_s"] == pytest.approx(2.0, abs=1e-6)
    assert measured["cut_av_diff_s"] <= 1 / 25
    back, fps, audio_back, rate = load_clip(first, max_side=256)
    assert back.shape == frames.shape and fps == 25.0 and rate == 44100 and audio_back.shape[0] == 2
    assert np.abs(back.astype(int) - frames).mean() < 6  # H.264 at crf 20


def test_yuv_conversion_of_grey_and_primaries():
    grey = np.full((4, 4, 3), 128, np.uint8)
    y, rest = rgb_to_yuv420p(grey)[:4], rgb_to_yuv420p(grey)[4:]
    assert np.all(np.abs(y.astype(int) - 126) <= 1) and np.all(np.abs(rest.astype(int) - 128) <= 1)
    white = rgb_to_yuv420p(np.full((2, 2, 3), 255, np.uint8))
    assert white[:2].min() == 235  # limited-range white


def test_audio_window_is_sample_exact(samples):
    whole = load_audio_window(str(samples / "three_scenes.mp4"), 16000, 1)
    window = load_audio_window(str(samples / "three_scenes.mp4"), 16000, 1, 2.5, 4.0)
    assert window.shape == (1, 24000)
    assert np.array_equal(window, whole[:, 40000:64000])
