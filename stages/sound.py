"""sound: reject clips without usable sound, before anything is encoded, and store their loudness.

Input: the clip's analysis pack (``decoded``), whose loudness the source's single decode measured
over the clip's span of the audio, at the source's own rate, over every channel. Loudness is in
dBFS relative to a full-scale square wave: the mean is the RMS level over all samples and
channels (the quantity FFmpeg's ``volumedetect`` reports as ``mean_volume``), the peak is the
largest absolute sample. Digital silence has no finite level: it is stored as ``DBFS_FLOOR``.

Output columns: ``sound_mean_dbfs``, ``sound_peak_dbfs``, ``sound_audio_gap_s`` (seconds of the
clip that no audio sample covers: a source whose audio starts late or ends early).
Reason codes: ``no_audio`` (no audio stream or no samples in the clip), ``partial_audio``
(the gap is longer than ``max_audio_gap_frames`` video frames: the encoded clip would fail the
cut's A/V check, so it is never encoded), ``silent`` (mean level below ``min_mean_dbfs``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from schemas import Col, Kind
from stages.base import Outcome, passed, rejected
from stages.decode import DecodedClip, Loudness

DBFS_FLOOR = -120.0  # stored for digital silence; below any real recording's noise floor


@dataclasses.dataclass(frozen=True)
class SoundConfig:
    min_mean_dbfs: float = -60.0  # near-silence floor: quieter clips are rejected as "silent"
    # audio may miss this many video frames' worth of the clip (the cut's A/V check allows one)
    max_audio_gap_frames: float = 1.0

    def __post_init__(self) -> None:
        if not DBFS_FLOOR <= self.min_mean_dbfs <= 0:
            raise ValueError(f"sound.min_mean_dbfs must be in [{DBFS_FLOOR}, 0]")
        if self.max_audio_gap_frames <= 0:
            raise ValueError("sound.max_audio_gap_frames must be > 0")


def to_dbfs(power: float) -> float:
    """Mean-square power of samples in [-1, 1] to dBFS, floored for silence."""
    return max(DBFS_FLOOR, 10.0 * math.log10(power)) if power > 0 else DBFS_FLOOR


def loudness_columns(loudness: Loudness, duration_s: float) -> dict[str, float]:
    """The sound columns of a clip from its pack's loudness."""
    mean_power = loudness.sum_squares / loudness.num_values if loudness.num_values else 0.0
    gap = max(0.0, loudness.start_s) + max(0.0, duration_s - loudness.end_s)
    return {
        Col.SOUND_MEAN_DBFS: to_dbfs(mean_power),
        Col.SOUND_PEAK_DBFS: to_dbfs(loudness.peak * loudness.peak),
        Col.SOUND_AUDIO_GAP_S: gap,
    }


class Sound:
    """See the module docstring."""

    name: ClassVar[str] = "sound"
    unit: ClassVar[str] = Kind.CLIP
    reasons: ClassVar[tuple[str, ...]] = ("no_audio", "partial_audio", "silent")
    requires: ClassVar[tuple[str, ...]] = (Col.DECODED, Col.CLIP_DURATION_S, Col.PROBE_FPS)
    produces: ClassVar[tuple[str, ...]] = (Col.SOUND_MEAN_DBFS, Col.SOUND_PEAK_DBFS, Col.SOUND_AUDIO_GAP_S)

    def __init__(self, config: SoundConfig) -> None:
        self.config = config

    def process(self, row: dict[str, Any]) -> Outcome:
        loudness = DecodedClip.from_row(row).loudness
        if loudness is None or loudness.num_samples == 0:
            return rejected("no_audio", detail="the clip has no audio samples")
        columns = loudness_columns(loudness, row[Col.CLIP_DURATION_S])
        max_gap = self.config.max_audio_gap_frames / (row[Col.PROBE_FPS] or 25.0)
        gap = columns[Col.SOUND_AUDIO_GAP_S]
        if gap > max_gap:
            detail = (
                f"audio covers {loudness.start_s:.3f}-{loudness.end_s:.3f} s of a {row[Col.CLIP_DURATION_S]:.3f} s clip"
            )
            return rejected("partial_audio", Col.SOUND_AUDIO_GAP_S, gap, max_gap, detail, **columns)
        mean = columns[Col.SOUND_MEAN_DBFS]
        if mean < self.config.min_mean_dbfs:
            return rejected(
                "silent", metric=Col.SOUND_MEAN_DBFS, value=mean, threshold=self.config.min_mean_dbfs, **columns
            )
        return passed(**columns)
