"""Clip bounds that never split a sound: each bound of a candidate clip moves *inward* (the start
later, the end earlier), by at most ``search_s``, to a quiet point of the audio.

The rule, for each bound (``scene_cut.boundary_search_s``; pure maths, tested without media):

* **candidates** are the video frame times within ``search_s`` of the visual bound, inward, and
  not past the clip's middle (the end may also stay at its own time, the end of the clip's last
  frame), so a moved bound is still on the frame grid;
* the **level** at a candidate is the RMS of the audio in a ``WINDOW_S`` (20 ms) window centred
  on it, in dBFS (mean-square power over every channel, the sound check's convention; digital
  silence is ``DBFS_FLOOR``). A window holding less than a quarter of its samples has no level;
* a level is **quiet** when it is at least ``QUIET_BELOW_MEDIAN_DB`` (10 dB) below the median
  level of the clip's 20 ms windows, or below ``QUIET_DBFS`` (-60 dBFS, the sound check's
  near-silence floor) whatever the clip's level. 10 dB is about what a pause between words or
  the gap between two barks or notes falls below the sound around it; a steady tone, noise or a
  sustained chord never drops that far, so those clips are not trimmed at all;
* a quiet visual bound stays. Otherwise the bound moves to the quietest candidate; candidates
  within ``TIE_DB`` (3 dB) of the quietest count as equally quiet and the one nearest the visual
  bound wins, so a clip loses no more than it must;
* when no candidate is quiet (or there is no audio to judge), the bound keeps its visual
  position and is **flagged** (``start``, ``end`` or ``both``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from stages.sound import to_dbfs

WINDOW_S = 0.02  # short-window RMS: shorter than a syllable, longer than a 50 Hz hum's period
QUIET_BELOW_MEDIAN_DB = 10.0  # quiet: this far below the clip's median 20 ms level
QUIET_DBFS = -60.0  # ... or below the sound check's near-silence floor
TIE_DB = 3.0  # levels this close to the quietest are as good: the least trimming wins
MIN_WINDOW_FILL = 0.25  # a window with fewer of its samples has no level


@dataclasses.dataclass(frozen=True)
class Bounds:
    """A clip's refined bounds, the level at each (None: no audio there) and the flag."""

    start_s: float
    end_s: float
    start_dbfs: float | None
    end_dbfs: float | None
    flag: str | None  # None, "start", "end" or "both": bounds left loud at their visual position


class Audio:
    """Per-sample mean-square power (every channel averaged) from ``start_s`` at ``rate_hz``."""

    def __init__(self, power: np.ndarray, start_s: float, rate_hz: int) -> None:
        self.power, self.start_s, self.rate_hz = power, start_s, rate_hz

    def level_dbfs(self, t: float, window_s: float = WINDOW_S) -> float | None:
        """The RMS level of the window centred on ``t``; None when it holds too few samples."""
        n = len(self.power)
        lo = min(n, max(0, round((t - window_s / 2 - self.start_s) * self.rate_hz)))
        hi = min(n, max(0, round((t + window_s / 2 - self.start_s) * self.rate_hz)))
        if hi - lo < max(1, MIN_WINDOW_FILL * window_s * self.rate_hz):
            return None
        return to_dbfs(float(self.power[lo:hi].mean(dtype=np.float64)))

    def median_dbfs(self, start_s: float, end_s: float, window_s: float = WINDOW_S) -> float | None:
        """The median level of the whole windows of [start_s, end_s)."""
        lo = max(0, round((start_s - self.start_s) * self.rate_hz))
        hi = min(len(self.power), round((end_s - self.start_s) * self.rate_hz))
        size = max(1, round(window_s * self.rate_hz))
        num = (hi - lo) // size if hi > lo else 0
        if not num:
            return None
        means = self.power[lo : lo + num * size].reshape(num, size).mean(axis=1, dtype=np.float64)
        return to_dbfs(float(np.median(means)))


def _pick(candidates: Sequence[float], audio: Audio, quiet_dbfs: float) -> tuple[float, float | None, bool]:
    """(bound, its level, whether it is quiet) among ``candidates``, nearest the visual bound first."""
    levels = [audio.level_dbfs(t) for t in candidates]
    visual, visual_level = candidates[0], levels[0]
    if visual_level is not None and visual_level <= quiet_dbfs:
        return visual, visual_level, True
    known = [level for level in levels if level is not None]
    if not known or min(known) > quiet_dbfs:
        return visual, visual_level, False
    good_enough = min(min(known) + TIE_DB, quiet_dbfs)
    i = next(i for i, level in enumerate(levels) if level is not None and level <= good_enough)
    return candidates[i], levels[i], True


def refine_bounds(
    frame_times: Sequence[float], start_s: float, end_s: float, audio: Audio | None, search_s: float
) -> Bounds:
    """Refined bounds of the clip [start_s, end_s) (see the module docstring). ``frame_times``:
    the times of the video frames in it, sorted (the start among them)."""
    if search_s <= 0:
        return Bounds(start_s, end_s, None, None, None)
    if audio is None:  # no audio to judge by (a source whose sound stopped early)
        return Bounds(start_s, end_s, None, None, "both")
    middle = (start_s + end_s) / 2
    starts = [t for t in frame_times if start_s <= t <= min(start_s + search_s, middle)] or [start_s]
    if starts[0] != start_s:
        starts.insert(0, start_s)
    ends = [end_s] + [t for t in reversed(frame_times) if max(end_s - search_s, middle) <= t < end_s]
    median = audio.median_dbfs(start_s, end_s)
    quiet = QUIET_DBFS if median is None else max(median - QUIET_BELOW_MEDIAN_DB, QUIET_DBFS)
    new_start, start_level, start_ok = _pick(starts, audio, quiet)
    new_end, end_level, end_ok = _pick(ends, audio, quiet)
    flag = {(True, True): None, (False, True): "start", (True, False): "end", (False, False): "both"}
    return Bounds(new_start, new_end, start_level, end_level, flag[(start_ok, end_ok)])
