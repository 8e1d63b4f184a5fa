"""sound: reject clips without usable sound and store their loudness.

Input: clip rows with a written clip (``media_path`` or ``media_bytes``). The audio is decoded
and streamed through two accumulators (sum of squares, peak), so memory does not depend on the
clip's length. Loudness is in dBFS relative to a full-scale square wave: the mean is the RMS
level over all samples and channels (the quantity FFmpeg's ``volumedetect`` reports as
``mean_volume``), the peak is the largest absolute sample. Digital silence has no finite level:
it is stored as ``DBFS_FLOOR``.

Output columns: ``sound_mean_dbfs``, ``sound_peak_dbfs``.
Reason codes: ``no_audio`` (no audio stream or no samples), ``silent`` (mean level below
``min_mean_dbfs``).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from typing import Any, ClassVar

import av
import numpy as np

from schemas import Col, Kind
from stages.base import Outcome, passed, rejected

DBFS_FLOOR = -120.0  # stored for digital silence; below any real recording's noise floor


@dataclasses.dataclass(frozen=True)
class SoundConfig:
    min_mean_dbfs: float = -60.0  # near-silence floor: quieter clips are rejected as "silent"

    def __post_init__(self) -> None:
        if not DBFS_FLOOR <= self.min_mean_dbfs <= 0:
            raise ValueError(f"sound.min_mean_dbfs must be in [{DBFS_FLOOR}, 0]")


def to_dbfs(power: float) -> float:
    """Mean-square power of samples in [-1, 1] to dBFS, floored for silence."""
    return max(DBFS_FLOOR, 10.0 * math.log10(power)) if power > 0 else DBFS_FLOOR


def loudness_dbfs(media: str | bytes) -> tuple[float, float, int]:
    """(mean dBFS, peak dBFS, number of samples per channel) of the first audio stream.
    Returns ``num_samples == 0`` when there is no audio."""
    source = io.BytesIO(media) if isinstance(media, bytes) else media
    sum_squares, peak, num_values, num_samples = 0.0, 0.0, 0, 0
    with av.open(source) as container:
        if not container.streams.audio:
            return DBFS_FLOOR, DBFS_FLOOR, 0
        # float planar at the source rate: no resampling, only a sample-format conversion
        resampler = av.AudioResampler(format="fltp")
        for frame in container.decode(container.streams.audio[0]):
            for converted in resampler.resample(frame):
                samples = converted.to_ndarray().astype(np.float64, copy=False)
                sum_squares += float(np.square(samples).sum())
                peak = max(peak, float(np.abs(samples).max(initial=0.0)))
                num_values += samples.size
                num_samples += converted.samples
    mean_power = sum_squares / num_values if num_values else 0.0
    return to_dbfs(mean_power), to_dbfs(peak * peak), num_samples


class Sound:
    """See the module docstring."""

    name: ClassVar[str] = "sound"
    unit: ClassVar[str] = Kind.CLIP
    reasons: ClassVar[tuple[str, ...]] = ("no_audio", "silent")
    requires: ClassVar[tuple[str, ...]] = (Col.MEDIA_PATH, Col.MEDIA_BYTES)
    produces: ClassVar[tuple[str, ...]] = (Col.SOUND_MEAN_DBFS, Col.SOUND_PEAK_DBFS)

    def __init__(self, config: SoundConfig, output_dir: str) -> None:
        self.config = config
        self.output_dir = output_dir

    def process(self, row: dict[str, Any]) -> Outcome:
        media = row[Col.MEDIA_BYTES] or os.path.join(self.output_dir, row[Col.MEDIA_PATH])
        mean, peak, num_samples = loudness_dbfs(media)
        if num_samples == 0:
            return rejected("no_audio", detail="the clip has no audio samples")
        columns = {Col.SOUND_MEAN_DBFS: mean, Col.SOUND_PEAK_DBFS: peak}
        if mean < self.config.min_mean_dbfs:
            return rejected(
                "silent", metric=Col.SOUND_MEAN_DBFS, value=mean, threshold=self.config.min_mean_dbfs, **columns
            )
        return passed(**columns)
