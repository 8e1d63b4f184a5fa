"""scene_cut: find shots with PySceneDetect and turn each source into candidate clips;
clip_length: reject candidates shorter than the minimum.

``SceneCut`` (unit: source) decodes the source once, streaming, through PySceneDetect's PyAV
backend; its SceneManager downscales every frame before the detector sees it (automatically
from the width, or by a fixed factor). Boundaries come from presentation timestamps, so
variable-frame-rate sources get correct times. A scene longer than ``max_clip_s`` is split
into equal pieces no longer than the maximum (equal pieces never leave a too-short tail).
Output: ``scene_*`` columns on the source row and one pending clip row per piece, carrying the
source's ``src_*``/``probe_*`` columns and its bounds (``clip_start_frame`` inclusive,
``clip_end_frame`` exclusive, seconds likewise). Reason code: ``no_frames``.

``ClipLength`` (unit: clip) rejects pieces shorter than ``min_clip_s`` as ``too_short``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from pipeline import ids
from schemas import INHERITED_COLUMNS, Col, Kind
from stages.base import Outcome, passed, rejected

DETECTORS = ("adaptive", "content")


@dataclasses.dataclass(frozen=True)
class SceneCutConfig:
    detector: str = "adaptive"  # "adaptive" (AdaptiveDetector) or "content" (ContentDetector)
    adaptive_threshold: float = 3.0  # PySceneDetect's default adaptive_threshold
    content_threshold: float = 27.0  # PySceneDetect's default ContentDetector threshold
    min_scene_len_frames: int = 15  # PySceneDetect's default: no two cuts closer than this
    downscale: int | None = None  # None: SceneManager picks a factor from the width (~256 px)
    max_clip_s: float = 60.0  # longer scenes are split into equal pieces (paper: 2-60 s clips)

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"scene_cut.detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.adaptive_threshold <= 0 or self.content_threshold <= 0:
            raise ValueError("scene_cut thresholds must be > 0")
        if self.min_scene_len_frames < 1:
            raise ValueError("scene_cut.min_scene_len_frames must be >= 1")
        if self.downscale is not None and self.downscale < 1:
            raise ValueError("scene_cut.downscale must be >= 1 or null")
        if self.max_clip_s <= 0:
            raise ValueError("scene_cut.max_clip_s must be > 0")


@dataclasses.dataclass(frozen=True)
class Scene:
    """A half-open interval of frames [start_frame, end_frame) and its times in seconds."""

    start_frame: int
    end_frame: int
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def _make_detector(config: SceneCutConfig) -> Any:
    from scenedetect import AdaptiveDetector, ContentDetector

    if config.detector == "adaptive":
        return AdaptiveDetector(adaptive_threshold=config.adaptive_threshold, min_scene_len=config.min_scene_len_frames)
    return ContentDetector(threshold=config.content_threshold, min_scene_len=config.min_scene_len_frames)


def detect_scenes(path: str, config: SceneCutConfig) -> list[Scene]:
    """Shots of a video, covering it from the first to the last frame."""
    from scenedetect import SceneManager, open_video

    video = open_video(path, backend="pyav")
    manager = SceneManager()
    if config.downscale is not None:
        manager.auto_downscale = False
        manager.downscale = config.downscale
    manager.add_detector(_make_detector(config))
    manager.detect_scenes(video=video, show_progress=False)
    return [
        Scene(start.frame_num, end.frame_num, start.seconds, end.seconds)
        for start, end in manager.get_scene_list(start_in_scene=True)
        if end.frame_num > start.frame_num
    ]


def split_scene(scene: Scene, max_clip_s: float) -> list[Scene]:
    """Split into the fewest equal pieces no longer than ``max_clip_s``, on frame boundaries.
    Interior times are interpolated by frame index (exact for constant frame rate)."""
    num_frames = scene.end_frame - scene.start_frame
    pieces = max(1, math.ceil(scene.duration_s / max_clip_s - 1e-9))
    pieces = min(pieces, num_frames)
    seconds_per_frame = scene.duration_s / num_frames
    bounds = [scene.start_frame + round(k * num_frames / pieces) for k in range(pieces + 1)]
    return [
        Scene(
            a,
            b,
            scene.start_s + (a - scene.start_frame) * seconds_per_frame,
            scene.start_s + (b - scene.start_frame) * seconds_per_frame,
        )
        for a, b in zip(bounds[:-1], bounds[1:])
    ]


def clip_rows(source: dict[str, Any], scenes: list[Scene], max_clip_s: float) -> list[dict[str, Any]]:
    """One candidate clip row per piece, inheriting the source's metadata."""
    inherited = {c: source.get(c) for c in INHERITED_COLUMNS}
    rows = []
    for scene_index, scene in enumerate(scenes):
        for piece_index, piece in enumerate(split_scene(scene, max_clip_s)):
            rows.append(
                {
                    **inherited,
                    Col.ID: ids.clip_id(source[Col.ID], piece.start_frame, piece.end_frame),
                    Col.KIND: Kind.CLIP,
                    Col.SOURCE_ID: source[Col.ID],
                    Col.CLIP_SCENE_INDEX: scene_index,
                    Col.CLIP_PIECE_INDEX: piece_index,
                    Col.CLIP_START_FRAME: piece.start_frame,
                    Col.CLIP_END_FRAME: piece.end_frame,
                    Col.CLIP_START_S: piece.start_s,
                    Col.CLIP_END_S: piece.end_s,
                    Col.CLIP_DURATION_S: piece.duration_s,
                }
            )
    return rows


class SceneCut:
    """See the module docstring."""

    name: ClassVar[str] = "scene_cut"
    unit: ClassVar[str] = Kind.SOURCE
    reasons: ClassVar[tuple[str, ...]] = ("no_frames",)
    requires: ClassVar[tuple[str, ...]] = (Col.SRC_PATH, Col.PROBE_FPS)
    produces: ClassVar[tuple[str, ...]] = (  # on the source row, then on the clip rows it emits
        Col.SCENE_DETECTOR,
        Col.SCENE_NUM_SCENES,
        Col.SCENE_NUM_CLIPS,
        Col.CLIP_SCENE_INDEX,
        Col.CLIP_PIECE_INDEX,
        Col.CLIP_START_FRAME,
        Col.CLIP_END_FRAME,
        Col.CLIP_START_S,
        Col.CLIP_END_S,
        Col.CLIP_DURATION_S,
    )

    def __init__(self, config: SceneCutConfig) -> None:
        self.config = config

    def process(self, row: dict[str, Any]) -> Outcome:
        scenes = detect_scenes(row[Col.SRC_PATH], self.config)
        if not scenes:
            return rejected("no_frames", detail="the decoder returned no frames", scene_detector=self.config.detector)
        children = clip_rows(row, scenes, self.config.max_clip_s)
        outcome = passed(
            scene_detector=self.config.detector, scene_num_scenes=len(scenes), scene_num_clips=len(children)
        )
        outcome.children = children
        return outcome


@dataclasses.dataclass(frozen=True)
class ClipLengthConfig:
    min_clip_s: float = 2.0  # paper: clips of 2-60 s

    def __post_init__(self) -> None:
        if self.min_clip_s < 0:
            raise ValueError("clip_length.min_clip_s must be >= 0")


class ClipLength:
    """Rejects candidate clips shorter than ``min_clip_s`` (reason ``too_short``)."""

    name: ClassVar[str] = "clip_length"
    unit: ClassVar[str] = Kind.CLIP
    reasons: ClassVar[tuple[str, ...]] = ("too_short",)
    requires: ClassVar[tuple[str, ...]] = (Col.CLIP_DURATION_S,)
    produces: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ClipLengthConfig) -> None:
        self.config = config

    def process(self, row: dict[str, Any]) -> Outcome:
        duration = row[Col.CLIP_DURATION_S]
        if duration < self.config.min_clip_s:
            return rejected("too_short", metric=Col.CLIP_DURATION_S, value=duration, threshold=self.config.min_clip_s)
        return passed()
