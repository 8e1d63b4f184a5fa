import numpy as np
import pytest

from stages.boundary import QUIET_DBFS, Audio, refine_bounds

RATE = 1000  # Hz: 20 samples per 20 ms window keeps the arithmetic visible
FRAMES = [i * 0.04 for i in range(100)]  # 25 fps, 0 to 4 s


def _audio(loud: list[tuple[float, float]], seconds: float = 4.0, level: float = 0.25, floor: float = 1e-8) -> Audio:
    """Mean-square power ``floor`` everywhere, ``level`` inside each (start_s, end_s) span."""
    t = np.arange(round(seconds * RATE)) / RATE
    power = np.full(t.shape, floor)
    for a, b in loud:
        power[(t >= a) & (t < b)] = level
    return Audio(power, 0.0, RATE)


def test_a_sound_across_the_start_moves_the_start_after_it_onto_a_frame():
    bounds = refine_bounds(FRAMES, 0.0, 4.0, _audio([(0.0, 0.23)]), 0.5)
    assert bounds.start_s == pytest.approx(0.24) and bounds.end_s == 4.0  # first frame with a quiet window
    assert bounds.start_s in FRAMES and bounds.flag is None and bounds.start_dbfs <= QUIET_DBFS


def test_a_sound_across_the_end_moves_the_end_before_it():
    bounds = refine_bounds(FRAMES, 0.0, 4.0, _audio([(3.8, 4.0)]), 0.5)
    assert bounds.end_s == pytest.approx(3.76) and bounds.start_s == 0.0 and bounds.flag is None


def test_quiet_bounds_stay_put():
    bounds = refine_bounds(FRAMES, 0.0, 4.0, _audio([(1.0, 3.0)]), 0.5)
    assert (bounds.start_s, bounds.end_s, bounds.flag) == (0.0, 4.0, None)


def test_a_sound_longer_than_the_search_keeps_the_bound_and_is_flagged():
    bounds = refine_bounds(FRAMES, 0.0, 4.0, _audio([(0.0, 0.8), (3.0, 4.0)]), 0.5)
    assert (bounds.start_s, bounds.end_s, bounds.flag) == (0.0, 4.0, "both")
    assert refine_bounds(FRAMES, 0.0, 4.0, _audio([(0.0, 0.8)]), 0.5).flag == "start"


def test_a_steady_sound_is_never_quiet_so_nothing_moves():
    steady = _audio([(0.0, 4.0)], level=0.05)
    steady.power[200:210] = 0.04  # a dip of 1 dB is no gap
    bounds = refine_bounds(FRAMES, 0.0, 4.0, steady, 0.5)
    assert (bounds.start_s, bounds.end_s, bounds.flag) == (0.0, 4.0, "both")


def test_quiet_is_relative_to_the_clip_median():
    # loud clip (median -6 dBFS) with a -30 dBFS pause at 0.2 s: 24 dB below the median counts as quiet
    audio = _audio([(0.0, 4.0)], level=0.25)
    audio = Audio(np.where((np.arange(4000) >= 180) & (np.arange(4000) < 260), 1e-3, audio.power), 0.0, RATE)
    bounds = refine_bounds(FRAMES, 0.0, 4.0, audio, 0.5)
    assert bounds.start_s == pytest.approx(0.2) and bounds.start_dbfs == pytest.approx(-30.0)


def test_nearest_of_equally_quiet_points_wins_and_bounds_never_cross():
    bounds = refine_bounds(FRAMES, 1.0, 1.6, _audio([(0.9, 1.1), (1.5, 1.7)]), 0.5)
    assert bounds.start_s == pytest.approx(1.12) and bounds.end_s == pytest.approx(1.48)
    short = refine_bounds(FRAMES, 1.0, 1.4, _audio([(0.9, 1.3), (1.25, 1.5)]), 0.5)
    assert short.start_s <= 1.2 <= short.end_s  # the search stops at the clip's middle


def test_zero_search_or_no_audio():
    assert refine_bounds(FRAMES, 0.0, 4.0, _audio([(0.0, 4.0)]), 0.0).flag is None
    off = refine_bounds(FRAMES, 0.0, 4.0, _audio([(0.0, 0.3)]), 0.0)
    assert (off.start_s, off.end_s, off.start_dbfs) == (0.0, 4.0, None)
    assert refine_bounds(FRAMES, 0.0, 4.0, None, 0.5).flag == "both"
