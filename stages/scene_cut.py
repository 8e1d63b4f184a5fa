"""scene_cut: the one decode of a source. Finds its shots and emits each candidate clip with
its analysis pack; clip_length: rejects candidates shorter than the minimum.

``SceneCut`` (unit: source) runs :mod:`stages.analysis` over the source: one streaming decode
that detects scenes with PySceneDetect's detectors on small frames and, for every candidate
clip, builds the *analysis pack* the later stages read (the frames each filter and captioner
declares, 16 kHz mono audio, loudness). Scenes longer than ``max_clip_s`` are split as they
grow into pieces between half and all of ``max_clip_s`` (never a short tail). Clip rows leave
as soon as their scene closes (:meth:`SceneCut.stream`), so a long source never holds more than
one open scene in memory, and nothing downstream opens the media again until the final encode.

Each piece's bounds then move inward, at most ``boundary_search_s``, to quiet frame times, so no
clip starts or ends inside a sound (:mod:`stages.boundary` states the rule); the pack, the
thumbnail and the encode use the moved bounds.

Output: ``scene_*`` columns on the source row and one pending clip row per piece, carrying the
source's ``src_*``/``probe_*`` columns, its bounds (``clip_start_frame`` inclusive,
``clip_end_frame`` exclusive, seconds likewise; the detector's own in ``clip_visual_start_s``/
``clip_visual_end_s``, the audio level at each bound in ``clip_start_dbfs``/``clip_end_dbfs``,
``clip_boundary_flag`` naming a bound left inside a sound) and the pack in the transient ``decoded``
column (none for pieces shorter than ``clip_length.min_clip_s``: they are rejected next).
Reason code: ``no_frames``. A source whose decode breaks down (a run of undecodable packets)
is ``failed``; the clips it already emitted are discarded with it and it is retried.

Thumbnails (``thumbnails``, on by default): every candidate clip, the ones rejected later
included, gets a JPEG strip of its frames at 10/50/90 %, ``thumb_height`` px high, made from
stills of the same decode (:mod:`stages.thumbnail`) and stored at
``<thumbs_dir>/<source_id>/<clip_id>.jpg`` of the output location (``thumb_path``, relative to
it). Media pruning keeps them. A source whose stream fails deletes the thumbnails it wrote (its
clips are discarded); one whose worker is killed leaves them, and its retry rewrites the same
paths, since clip ids are deterministic (only a retry under other scene_cut settings could leave
a file no row references).

``ClipLength`` (unit: clip) rejects pieces shorter than ``min_clip_s`` as ``too_short``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Generator
from typing import Any, ClassVar

from pipeline import ids
from schemas import INHERITED_COLUMNS, Col, Kind
from stages.analysis import DetectorConfig, PackPlan, Piece, SourceAnalysis
from stages.base import Outcome, passed, rejected
from stages.storage import Storage, local_copy, scratch_dir

DETECTORS = ("adaptive", "content")


@dataclasses.dataclass(frozen=True)
class SceneCutConfig:
    detector: str = "adaptive"  # "adaptive" (AdaptiveDetector) or "content" (ContentDetector)
    adaptive_threshold: float = 3.0  # PySceneDetect's default adaptive_threshold
    content_threshold: float = 27.0  # PySceneDetect's default ContentDetector threshold
    min_scene_len_frames: int = 15  # PySceneDetect's default: no two cuts closer than this
    downscale: int | None = None  # None: PySceneDetect's factor from the frame size (~256 px)
    max_clip_s: float = 60.0  # longer scenes are split (paper: 2-60 s clips)
    still_fps: float = 2.0  # candidate frames per second for the filters' "frame at 10 %" needs
    thumbnails: bool = True  # a JPEG strip of every candidate clip's frames at 10/50/90 % (thumb_path)
    thumb_height: int = 160  # px, even; the width follows the upright frame's aspect
    thumbs_dir: str = "media/thumbs"  # relative to the output folder: <thumbs_dir>/<source_id>/<clip_id>.jpg
    # how far (s) each clip bound may move inward, on the frame grid, to the quietest 20 ms of audio
    # near it so no clip starts or ends inside a sound (stages.boundary); 0: bounds stay where the cuts are
    boundary_search_s: float = 0.5

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
        if not 0.5 <= self.still_fps <= 30:
            raise ValueError("scene_cut.still_fps must be in [0.5, 30]")
        if not 0 <= self.boundary_search_s <= 5:
            raise ValueError(f"scene_cut.boundary_search_s must be in [0, 5], got {self.boundary_search_s}")
        if not 16 <= self.thumb_height <= 1080 or self.thumb_height % 2:
            raise ValueError(f"scene_cut.thumb_height must be even and in [16, 1080], got {self.thumb_height}")
        parts = os.path.normpath(self.thumbs_dir).split(os.sep)
        if os.path.isabs(self.thumbs_dir) or parts[0] in (".", ".."):
            raise ValueError(
                f"scene_cut.thumbs_dir must be a relative subfolder like 'media/thumbs', got {self.thumbs_dir!r}"
            )

    def detector_config(self) -> DetectorConfig:
        return DetectorConfig(
            self.detector, self.adaptive_threshold, self.content_threshold, self.min_scene_len_frames, self.downscale
        )


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


def detect_scenes(path: str, config: SceneCutConfig) -> list[Scene]:
    """Shots of a video (unsplit, no packs), covering it from the first to the last frame."""
    return [
        Scene(p.start_frame, p.end_frame, p.start_s, p.end_s)
        for p in SourceAnalysis(path, config.detector_config(), PackPlan())
    ]


def clip_row(source: dict[str, Any], piece: Piece, inherited: dict[str, Any]) -> dict[str, Any]:
    """The candidate clip row of one piece: the source's metadata, bounds, deterministic id, pack."""
    return {
        **inherited,
        Col.ID: ids.clip_id(source[Col.ID], piece.start_frame, piece.end_frame),
        Col.KIND: Kind.CLIP,
        Col.SOURCE_ID: source[Col.ID],
        Col.CLIP_SCENE_INDEX: piece.scene_index,
        Col.CLIP_PIECE_INDEX: piece.piece_index,
        Col.CLIP_START_FRAME: piece.start_frame,
        Col.CLIP_END_FRAME: piece.end_frame,
        Col.CLIP_START_S: piece.start_s,
        Col.CLIP_END_S: piece.end_s,
        Col.CLIP_DURATION_S: piece.duration_s,
        Col.CLIP_VISUAL_START_S: piece.start_s if piece.visual_start_s is None else piece.visual_start_s,
        Col.CLIP_VISUAL_END_S: piece.end_s if piece.visual_end_s is None else piece.visual_end_s,
        Col.CLIP_START_DBFS: piece.start_dbfs,
        Col.CLIP_END_DBFS: piece.end_dbfs,
        Col.CLIP_BOUNDARY_FLAG: piece.boundary_flag,
        Col.DECODED: None if piece.pack is None else piece.pack.to_bytes(),
    }


class SceneCut:
    """See the module docstring. ``plan``: what each pack holds (the pipeline derives it from
    the enabled consumers; without one, packs hold only the sound check's loudness)."""

    name: ClassVar[str] = "scene_cut"
    unit: ClassVar[str] = Kind.SOURCE
    reasons: ClassVar[tuple[str, ...]] = ("no_frames",)
    requires: ClassVar[tuple[str, ...]] = (Col.SRC_PATH, Col.PROBE_FPS, Col.PROBE_ROTATION_DEG)
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
        Col.CLIP_VISUAL_START_S,
        Col.CLIP_VISUAL_END_S,
        Col.CLIP_START_DBFS,
        Col.CLIP_END_DBFS,
        Col.CLIP_BOUNDARY_FLAG,
        Col.DECODED,
        Col.THUMB_PATH,
    )

    def __init__(self, config: SceneCutConfig, plan: PackPlan | None = None, output_dir: str | None = None) -> None:
        """``output_dir``: where thumbnails go (none are made without it)."""
        self.config = config
        self.storage = Storage(output_dir) if output_dir is not None and config.thumbnails else None
        plan = plan or PackPlan(loudness=True)
        thumb_height = config.thumb_height if self.storage is not None else None
        self.plan = dataclasses.replace(
            plan,
            still_fps=config.still_fps,
            max_piece_s=config.max_clip_s,
            thumb_height=thumb_height,
            boundary_search_s=config.boundary_search_s,
        )

    def stream(self, row: dict[str, Any]) -> Generator[dict[str, Any], None, Outcome]:
        """Yield each clip row as its scene closes; return the source's outcome."""
        inherited = {c: row.get(c) for c in INHERITED_COLUMNS}
        num_clips = 0
        thumbs: list[str] = []
        try:
            with local_copy(row[Col.SRC_PATH], scratch_dir()) as path:  # an object: fetched to this node
                rotation = row[Col.PROBE_ROTATION_DEG] or 0
                analysis = SourceAnalysis(path, self.config.detector_config(), self.plan, rotation)
                for piece in analysis:
                    num_clips += 1
                    child = clip_row(row, piece, inherited)
                    if piece.thumbnail is not None and self.storage is not None:
                        child[Col.THUMB_PATH] = f"{self.config.thumbs_dir}/{row[Col.ID]}/{child[Col.ID]}.jpg"
                        self.storage.write_bytes(child[Col.THUMB_PATH], piece.thumbnail)  # atomically
                        thumbs.append(child[Col.THUMB_PATH])
                    yield child
        except Exception:  # the source fails: its emitted clips are discarded, so are their thumbnails
            for rel in thumbs:
                self.storage.delete(rel)
            raise
        if not num_clips:
            return rejected("no_frames", detail="the decoder returned no frames", scene_detector=self.config.detector)
        return passed(
            scene_detector=self.config.detector, scene_num_scenes=analysis.num_scenes, scene_num_clips=num_clips
        )

    def process(self, row: dict[str, Any]) -> Outcome:
        """The whole source at once (in-process use; the pipeline streams with :meth:`stream`)."""
        stream = self.stream(row)
        children = []
        while True:
            try:
                children.append(next(stream))
            except StopIteration as done:
                outcome: Outcome = done.value
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
