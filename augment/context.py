"""What an augmentation operation sees, and the operation contract.

Arrays: video frames are ``uint8`` ``(T, H, W, 3)`` RGB at ``fps``; audio is ``float32``
``(C, S)`` in [-1, 1] at ``rate_hz``. Every operation keeps the length of what it changes
(T frames, S samples): a negative has the duration of its positive.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

VIDEO_SPATIAL, VIDEO_TEMPORAL = "video_spatial", "video_temporal"
AUDIO_SPATIAL, AUDIO_TEMPORAL = "audio_spatial", "audio_temporal"
FAMILIES = (VIDEO_SPATIAL, VIDEO_TEMPORAL, AUDIO_SPATIAL, AUDIO_TEMPORAL)


@dataclasses.dataclass(frozen=True)
class Interval:
    """A half-open time interval [start_s, end_s) in seconds from the clip's start."""

    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if not self.end_s > self.start_s >= 0:
            raise ValueError(f"bad interval [{self.start_s}, {self.end_s})")


@dataclasses.dataclass
class Source:
    """One separated sound source of a clip: its waveform (same shape as the clip audio) and
    the intervals where it is active (RMS above a threshold)."""

    name: str  # e.g. "harmonic", "percussive", "nmf_2", or an AudioSep text query
    audio: np.ndarray  # float32 (C, S)
    active: list[Interval]


@dataclasses.dataclass
class Trajectory:
    """A moving object: its RGB pixels and binary masks over consecutive frames."""

    frames: np.ndarray  # uint8 (N, h, w, 3): the object's pixels, cropped to its box, per frame
    masks: np.ndarray  # bool (N, h, w): where the object is, per frame
    boxes: np.ndarray  # int (N, 4): x0, y0, x1, y1 of the crop in its own clip, per frame
    times_s: np.ndarray  # float (N,): frame times in its own clip


@dataclasses.dataclass
class ClipContext:
    """Everything an operation may use. Optional parts are None when not computed; an
    operation that needs one raises ``MissingInput`` and the sampler draws another."""

    clip_id: str
    frames: np.ndarray  # uint8 (T, H, W, 3)
    fps: float
    audio: np.ndarray  # float32 (C, S)
    rate_hz: int
    active: list[Interval] | None = None  # sound-producing intervals of this clip (all sources)
    sources: list[Source] | None = None  # this clip's separated sources
    source_audio: np.ndarray | None = None  # float32 (C, S_src): the whole source video's audio
    clip_offset_s: float = 0.0  # where this clip starts in source_audio
    donor_sources: list[Source] | None = None  # separated sources of other clips (to add)
    trajectories: list[Trajectory] | None = None  # trajectory pool from other clips (to overlay)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.audio.shape[-1])


class MissingInput(Exception):
    """The operation needs context this clip does not have (e.g. no active interval)."""


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One augmentation: ``draw(ctx, rng) -> params`` (JSON-serialisable, every random choice
    in it) and ``apply(ctx, params) -> array`` (frames for video ops, audio for audio ops).
    ``apply`` is deterministic: the same context and params give the same array."""

    name: str
    family: str  # one of FAMILIES
    draw: Callable[[ClipContext, np.random.Generator], dict[str, Any]]
    apply: Callable[[ClipContext, dict[str, Any]], np.ndarray]
