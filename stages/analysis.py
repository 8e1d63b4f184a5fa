"""The one decode of a source: scene detection and the analysis pack of every candidate clip.

A source is demuxed once, video and audio together, and decoded by FFmpeg's multi-threaded
decoders (PyAV). Each video frame is used three ways, in the same pass:

* **scene detection**: libswscale shrinks the frame to PySceneDetect's working size (its
  downscale rule) with a fast-bilinear filter. Like PySceneDetect's cv2 ``INTER_LINEAR`` resize
  of a full frame, that filter samples rather than averages, and the detectors' scores (hence
  the reference cuts) depend on it: an averaging filter finds spurious cuts on the reference
  video. PySceneDetect's own ``AdaptiveDetector`` / ``ContentDetector`` decide, with the frame
  score computed by OpenCV kernels instead of numpy: the same number, a fraction of the cost;
* **frames at a rate** (a :class:`FrameNeed` with ``fps``: motion, video captions) are taken on
  a grid anchored at the source's first frame (the frame on screen at each grid time) and
  converted at once to the need's size;
* **frames at positions** (aesthetic, OCR: "the frame at 10/50/90 % of the clip") cannot be
  chosen before the clip's end is known. Candidates (*stills*) are kept on a grid of
  ``still_fps``, in YUV 4:2:0 at each need's size (half the bytes of RGB); a closed piece takes,
  for each position, the still nearest to it (at most half a grid step away). With a plan's
  ``thumb_height``, every piece (short ones too) also gets a JPEG strip of its frames at
  10/50/90 % (:mod:`stages.thumbnail`), picked the same way from a position need's stills (the
  smallest at least the thumbnail's size, scaled down) or, with no such need, from a still grid
  of the thumbnail's own size.

The audio stream, decoded in the same pass, feeds two buffers of the open scene: per-sample
power and peak at the source's own rate over every channel (the sound check's loudness, exactly
as it measured the encoded clip before) and 16 kHz mono float (speech, audio captions).

**Pieces.** A scene closes when the detector reports the next cut (it may report a few frames
late, so frames are confirmed ``event_buffer_length`` frames behind the decoder). A long scene
is split as it grows: when the open part reaches ``1.5 x max_piece_s``, a piece of
``max_piece_s`` is closed and the rest goes on; at the scene's end a remainder longer than
``max_piece_s`` is split into two equal halves (on frame boundaries). Pieces are therefore
between half and all of ``max_piece_s`` long (a scene shorter than that is one piece), no piece
is a short tail, and at most ``1.5 x max_piece_s`` of frames, stills and audio is ever held:
memory is flat in the source's length. A closed piece waits only for the audio decoder to pass
its end (the two streams interleave within a second or so). With a plan's ``boundary_search_s``
its bounds then move inward to quiet frame times (:mod:`stages.boundary`) before its pack and
thumbnail are taken: only its own frame times and audio are read, held until it is emitted.

Times are seconds from the video stream's start (as PySceneDetect reports them: presentation
timestamps, so variable frame rates are exact); frame numbers are ``round(t * frame_rate)``, the
stream's guessed rate, as PySceneDetect numbers frames. Frames in the pack are upright (the
source's display rotation applied), as the encoded clip will be.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np

from stages.boundary import WINDOW_S, Audio, Bounds, refine_bounds
from stages.decode import AUDIO_RATE_HZ, DecodedClip, FrameNeed, Loudness, scaled_size
from stages.thumbnail import THUMB_POSITIONS, strip_jpeg, thumb_sampler_size

log = logging.getLogger(__name__)

# About 550 lines, over the house 400: the pass, its segmentation, its samplers and its audio
# buffers share the open scene's state and read best together; each function stays short.

DETECT_INTERPOLATION = "POINT"  # samples like PySceneDetect's resize (see the docstring)
PACK_INTERPOLATION = "BILINEAR"  # PyAV's default: what the filters' thresholds were calibrated on
SPLIT_AT = 1.5  # an open scene this many max_piece_s long loses its first max_piece_s
MAX_BAD_PACKETS = 50  # consecutive undecodable packets of a stream before the source fails
# A closed piece waits for the audio decoder to pass its end, at most this much video: streams
# interleave within a second or two, while the audio of a source whose sound stops early never
# comes (its pieces then hold at most this much more of stills and audio in memory)
AUDIO_WAIT_S = 30.0
THUMB_SAMPLER = "_thumbnail"  # the thumbnails' own still grid, when no need's fits (not a need name)


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """What the detector needs of ``scene_cut``'s config (see ``stages.scene_cut``)."""

    detector: str = "adaptive"
    adaptive_threshold: float = 3.0
    content_threshold: float = 27.0
    min_scene_len_frames: int = 15
    downscale: int | None = None


@dataclasses.dataclass(frozen=True)
class PackPlan:
    """What each pack holds: the consumers' frame needs and audio, and the loudness."""

    needs: tuple[FrameNeed, ...] = ()
    audio: bool = False  # 16 kHz mono for a consumer (speech, audio captions)
    loudness: bool = False  # the sound check's measurements
    still_fps: float = 2.0  # candidate frames per second for position needs
    min_clip_s: float = 0.0  # shorter pieces get no pack: clip_length rejects them next
    max_piece_s: float = math.inf
    thumb_height: int | None = None  # a JPEG strip of every piece this high (stages.thumbnail); None: none
    boundary_search_s: float = 0.0  # how far a bound may move inward to a quiet point (stages.boundary); 0: none

    def __post_init__(self) -> None:
        names = [n.name for n in self.needs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate frame need names: {names}")

    @property
    def reads_audio(self) -> bool:
        return self.audio or self.loudness or self.boundary_search_s > 0

    @property
    def measures_power(self) -> bool:  # the per-sample power buffer: loudness and boundary levels
        return self.loudness or self.boundary_search_s > 0


@dataclasses.dataclass(frozen=True)
class Piece:
    """A candidate clip: frames [start_frame, end_frame), seconds [start_s, end_s)."""

    scene_index: int
    piece_index: int
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    pack: DecodedClip | None
    thumbnail: bytes | None = None  # JPEG strip (stages.thumbnail), when the plan asks for one
    visual_start_s: float | None = None  # the scene detector's bounds, before stages.boundary moved them
    visual_end_s: float | None = None  # (None: the same as start_s / end_s)
    start_dbfs: float | None = None  # the audio's 20 ms level at each bound (None: not measured)
    end_dbfs: float | None = None
    boundary_flag: str | None = None  # "start", "end", "both": a bound left loud (stages.boundary)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


# ---- scene detection ---------------------------------------------------------------------------


def _fast_score(self: Any, timecode: Any, frame_img: np.ndarray) -> float:
    """ContentDetector's frame score (mean absolute H, S, V difference to the previous frame,
    weighted) with OpenCV kernels: the same value as the library's numpy code."""
    if self._weights.delta_edges:  # edges: the library's own (slower) code
        from scenedetect import ContentDetector

        return ContentDetector._calculate_frame_score(self, timecode, frame_img)
    hsv = cv2.cvtColor(frame_img, cv2.COLOR_BGR2HSV)
    last, self._last_hsv = getattr(self, "_last_hsv", None), hsv
    if last is None:
        return 0.0
    delta = cv2.mean(cv2.absdiff(hsv, last))
    weights = self._weights
    total = weights.delta_hue * delta[0] + weights.delta_sat * delta[1] + weights.delta_lum * delta[2]
    return total / sum(abs(w) for w in weights)


def make_detector(config: DetectorConfig) -> Any:
    """PySceneDetect's detector for ``config``, with the fast frame score."""
    from scenedetect import AdaptiveDetector, ContentDetector

    if config.detector == "adaptive":
        cls = type("FastAdaptiveDetector", (AdaptiveDetector,), {"_calculate_frame_score": _fast_score})
        return cls(adaptive_threshold=config.adaptive_threshold, min_scene_len=config.min_scene_len_frames)
    cls = type("FastContentDetector", (ContentDetector,), {"_calculate_frame_score": _fast_score})
    return cls(threshold=config.content_threshold, min_scene_len=config.min_scene_len_frames)


def detection_size(width: int, height: int, downscale: int | None) -> tuple[int, int]:
    """The frame size the detector sees: PySceneDetect's SceneManager rule."""
    from scenedetect.scene_manager import compute_downscale_factor

    factor = compute_downscale_factor(max(width, height)) if downscale is None else downscale
    if factor <= 1:
        return width, height
    return max(1, round(width / factor)), max(1, round(height / factor))


class Segmenter:
    """Confirmed frames (in order) and cuts in, pieces out: see "Pieces" in the module docstring.
    Pure bookkeeping of times, so it is tested without media."""

    def __init__(self, max_piece_s: float = math.inf) -> None:
        self.max_piece_s = max_piece_s
        self.times: list[float] = []  # frames of the open part of the current scene
        self.scene_index = -1
        self.piece_index = 0
        self.num_scenes = 0

    def add(self, t: float, is_cut: bool) -> list[tuple[int, int, float, float]]:
        """Add the next frame; returns the pieces it closes as (scene, piece, start_s, end_s)."""
        closed: list[tuple[int, int, float, float]] = []
        if is_cut or self.scene_index < 0:
            if self.times:
                closed = self._close_scene(t)
            self.scene_index, self.piece_index, self.times = self.scene_index + 1, 0, [t]
            self.num_scenes += 1
            return closed
        self.times.append(t)
        start = self.times[0]
        if t - start >= SPLIT_AT * self.max_piece_s:
            boundary = bisect.bisect_left(self.times, start + self.max_piece_s)
            closed.append((self.scene_index, self.piece_index, start, self.times[boundary]))
            self.piece_index += 1
            self.times = self.times[boundary:]
        return closed

    def finish(self, end_s: float) -> list[tuple[int, int, float, float]]:
        return self._close_scene(end_s) if self.times else []

    def _close_scene(self, end_s: float) -> list[tuple[int, int, float, float]]:
        start, scene, piece = self.times[0], self.scene_index, self.piece_index
        if end_s - start <= self.max_piece_s or len(self.times) < 2:
            return [(scene, piece, start, end_s)]
        middle = self.times[round(len(self.times) / 2)]  # equal halves on a frame boundary
        return [(scene, piece, start, middle), (scene, piece + 1, middle, end_s)]


# ---- sampling ------------------------------------------------------------------------------------


class _Sampler:
    """The frame on screen at every grid time ``first + k / fps``, converted by one reformatter
    (a cached swscale context). Each sample: (frame time, array)."""

    def __init__(self, fps: float, width: int, height: int, fmt: str) -> None:
        self.step, self.k, self.first = 1.0 / fps, 0, None
        self.width, self.height, self.fmt = width, height, fmt
        self.reformatter = av.video.reformatter.VideoReformatter()
        self.times: list[float] = []
        self.arrays: list[np.ndarray] = []

    def offer(self, previous: tuple[float, av.VideoFrame] | None, t_next: float) -> None:
        """``previous`` is on screen until ``t_next``: it serves the grid times before it."""
        if previous is None:
            return
        if self.first is None:
            self.first = previous[0]
        converted = None
        while self.first + self.k * self.step < t_next:
            if converted is None:
                out = self.reformatter.reformat(
                    previous[1], width=self.width, height=self.height, format=self.fmt, interpolation=PACK_INTERPOLATION
                )
                converted = out.to_ndarray()
            self.times.append(previous[0])
            self.arrays.append(converted)
            self.k += 1

    def take(self, start_s: float, end_s: float) -> tuple[list[float], list[np.ndarray]]:
        lo, hi = bisect.bisect_left(self.times, start_s), bisect.bisect_left(self.times, end_s)
        return self.times[lo:hi], self.arrays[lo:hi]

    def drop_before(self, t: float) -> None:
        cut = bisect.bisect_left(self.times, t)
        del self.times[:cut], self.arrays[:cut]


def _nearest(times: list[float], t: float) -> int:
    """Index of the time in ``times`` (sorted) closest to ``t``."""
    i = bisect.bisect_left(times, t)
    if i == len(times) or (i > 0 and t - times[i - 1] <= times[i] - t):
        return i - 1
    return i


def _rotate(frame: np.ndarray, rotation_deg: int) -> np.ndarray:
    """Apply a display rotation (counter-clockwise degrees, as probe reads it) to the pixels."""
    turns = (rotation_deg // 90) % 4
    return np.ascontiguousarray(np.rot90(frame, turns)) if turns else frame


def _still_to(array: np.ndarray, height: int, gray: bool) -> np.ndarray:
    """A YUV 4:2:0 still as the need wants it: grey (the luma plane) or RGB (libswscale)."""
    if gray:
        return array[:height].copy()
    frame = av.VideoFrame.from_ndarray(array, format="yuv420p")
    return frame.to_ndarray(format="rgb24")


# ---- audio -------------------------------------------------------------------------------------


class _AudioBuffer:
    """Chunks of per-sample values with the absolute time of their first sample."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.rates: list[int] = []
        self.chunks: list[tuple[np.ndarray, ...]] = []

    def add(self, start_s: float, rate: int, *arrays: np.ndarray) -> None:
        if arrays[0].size:
            self.starts.append(start_s)
            self.rates.append(rate)
            self.chunks.append(arrays)

    def window(self, start_s: float, end_s: float) -> tuple[list[tuple[np.ndarray, ...]], float | None, float | None]:
        """The samples whose time lies in [start_s, end_s), and the time span they cover."""
        parts, first, last = [], None, None
        for t0, rate, arrays in zip(self.starts, self.rates, self.chunks):
            n = len(arrays[0])
            lo = max(0, math.ceil((start_s - t0) * rate - 1e-6))
            hi = min(n, math.ceil((end_s - t0) * rate - 1e-6))
            if hi <= lo:
                continue
            parts.append(tuple(a[lo:hi] for a in arrays))
            first = t0 + lo / rate if first is None else first
            last = t0 + hi / rate
        return parts, first, last

    def drop_before(self, t: float) -> None:
        keep = 0
        while keep < len(self.chunks) and self.starts[keep] + len(self.chunks[keep][0]) / self.rates[keep] < t:
            keep += 1
        del self.starts[:keep], self.rates[:keep], self.chunks[:keep]


# ---- the pass ----------------------------------------------------------------------------------


class SourceAnalysis:
    """One pass over a source; iterate it for the pieces, in time order. See the module docstring."""

    def __init__(self, path: str, detector: DetectorConfig, plan: PackPlan, rotation_deg: int = 0) -> None:
        self.path, self.detector_config, self.plan, self.rotation_deg = path, detector, plan, rotation_deg
        self.num_frames = 0
        self.num_bad_packets = 0
        self.num_scenes = 0

    def __iter__(self) -> Iterator[Piece]:
        with av.open(self.path, metadata_errors="ignore") as container:
            if not container.streams.video:
                raise ValueError("the source has no video stream")
            yield from self._run(container)

    def _setup(self, container: Any) -> None:
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        self.video = video
        self.time_base = Fraction(video.time_base)
        rate = video.guessed_rate or video.average_rate
        self.frame_rate = Fraction(rate) if rate else Fraction(25)
        self.video_start_s = float((video.start_time or 0) * self.time_base)
        self.audio = container.streams.audio[0] if container.streams.audio and self.plan.reads_audio else None
        width, height = video.codec_context.width, video.codec_context.height
        self.detect_size = detection_size(width, height, self.detector_config.downscale)
        self.detect_reformatter = av.video.reformatter.VideoReformatter()
        self.detector = make_detector(self.detector_config)
        from scenedetect.common import FrameTimecode, Timecode

        self.timecode = lambda pts: FrameTimecode(Timecode(pts=pts, time_base=self.time_base), fps=self.frame_rate)
        self.samplers: dict[str, _Sampler] = {}
        for need in self.plan.needs:
            w, h = scaled_size(width, height, need.max_side)
            if need.fps is not None:
                self.samplers[need.name] = _Sampler(need.fps, w, h, "gray" if need.gray else "rgb24")
            else:
                self.samplers[need.name] = _Sampler(self.plan.still_fps, w, h, "yuv420p")
        self.thumb_source: str | None = None  # the sampler whose stills make the thumbnails
        if self.plan.thumb_height:
            self.thumb_size = thumb_sampler_size(width, height, self.rotation_deg, self.plan.thumb_height)
            self.thumb_source = self._thumb_source()
        self.segmenter = Segmenter(self.plan.max_piece_s)
        self.frame_times: list[float] = []  # of the frames not yet emitted: where a bound may move
        self.loud, self.audio16 = _AudioBuffer(), _AudioBuffer()
        self.audio_until_s = 0.0  # absolute time up to which audio is decoded
        self.loud_channels = 1
        self.audio_done = self.audio is None
        self.loud_resampler = av.AudioResampler(format="fltp")
        self.resampler16 = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE_HZ)

    def _run(self, container: Any) -> Iterator[Piece]:
        self._setup(container)
        streams = [self.video] + ([self.audio] if self.audio is not None else [])
        unconfirmed: list[tuple[float, int]] = []  # (t, pts) of frames the detector may still cut at
        cuts: set[int] = set()  # normalized pts of cut frames
        lag = self.detector.event_buffer_length
        previous: tuple[float, av.VideoFrame] | None = None
        waiting: list[tuple[int, int, float, float]] = []  # closed pieces waiting for audio
        start_pts = self.video.start_time or 0
        for frame in self._decoded(container, streams):
            if isinstance(frame, av.AudioFrame):
                self._add_audio(frame)
            else:
                t = float((frame.pts - start_pts) * self.time_base)
                if previous is not None and t <= previous[0]:
                    continue  # a repeated or backwards timestamp (broken file): not a new frame
                for sampler in self.samplers.values():
                    sampler.offer(previous, t)
                previous = (t, frame)
                self.num_frames += 1
                self.frame_times.append(t)
                cuts.update(self._detect(frame, frame.pts - start_pts))
                unconfirmed.append((t, frame.pts - start_pts))
                while len(unconfirmed) > lag:
                    t_confirmed, pts = unconfirmed.pop(0)
                    waiting += self.segmenter.add(t_confirmed, pts in cuts)
            yield from self._emit_ready(waiting, previous[0] if previous else -math.inf)
        if previous is None:
            return
        cuts.update(self._post_process(previous[1].pts - start_pts))
        for t_confirmed, pts in unconfirmed:
            waiting += self.segmenter.add(t_confirmed, pts in cuts)
        end_s = previous[0] + 1.0 / float(self.frame_rate)  # the last frame lasts one frame
        for sampler in self.samplers.values():
            sampler.offer(previous, end_s)
        waiting += self.segmenter.finish(end_s)
        self._flush_audio()
        self.num_scenes = self.segmenter.num_scenes
        if self.num_bad_packets:
            log.warning("%s: skipped %d undecodable packets", self.path, self.num_bad_packets)
        yield from self._emit_ready(waiting, math.inf)

    def _decoded(self, container: Any, streams: Sequence[Any]) -> Iterator[Any]:
        """Every frame of ``streams`` in demux order; undecodable packets are skipped (a run of
        ``MAX_BAD_PACKETS`` of them fails the source)."""
        bad = 0
        for packet in container.demux(*streams):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as e:
                bad += 1
                self.num_bad_packets += 1
                if bad >= MAX_BAD_PACKETS:
                    raise ValueError(f"{bad} undecodable packets in a row: {e}") from e
                continue
            bad = 0
            for frame in frames:
                if frame.pts is not None or isinstance(frame, av.AudioFrame):
                    yield frame

    def _detect(self, frame: av.VideoFrame, pts: int) -> list[int]:
        small = self.detect_reformatter.reformat(
            frame, width=self.detect_size[0], height=self.detect_size[1], format="bgr24",
            interpolation=DETECT_INTERPOLATION,
        ).to_ndarray()  # fmt: skip
        return [cut.pts for cut in self.detector.process_frame(self.timecode(pts), small)]

    def _post_process(self, last_pts: int) -> list[int]:
        return [cut.pts for cut in self.detector.post_process(self.timecode(last_pts))]

    def _add_audio(self, frame: av.AudioFrame) -> None:
        # a frame without a timestamp follows the previous one
        t0 = float(frame.pts * frame.time_base) if frame.pts is not None else self.audio_until_s
        if self.plan.measures_power:
            for converted in self.loud_resampler.resample(frame):
                x = converted.to_ndarray()  # (channels, samples) float32
                self.loud_channels = x.shape[0]
                self.loud.add(t0, converted.sample_rate, np.square(x).mean(axis=0), np.abs(x).max(axis=0))
        if self.plan.audio:
            for out in self.resampler16.resample(frame):
                self._add16(out)
        self.audio_until_s = max(self.audio_until_s, t0 + frame.samples / frame.sample_rate)

    def _add16(self, out: av.AudioFrame) -> None:
        start = float(out.pts * out.time_base) if out.pts is not None else self.audio16_end()
        self.audio16.add(start, AUDIO_RATE_HZ, out.to_ndarray().reshape(-1))

    def audio16_end(self) -> float:
        if not self.audio16.chunks:
            return 0.0
        return self.audio16.starts[-1] + len(self.audio16.chunks[-1][0]) / AUDIO_RATE_HZ

    def _flush_audio(self) -> None:
        if self.audio is not None and self.plan.audio:
            for out in self.resampler16.resample(None):
                self._add16(out)
        self.audio_done = True

    def _emit_ready(self, waiting: list, video_t: float) -> Iterator[Piece]:
        """Yield the closed pieces whose audio is decoded (or given up on, see AUDIO_WAIT_S)."""
        while waiting:
            scene, piece, start_s, end_s = waiting[0]
            end_abs = end_s + self.video_start_s
            ready = self.audio_done or self.audio_until_s >= end_abs or video_t >= end_s + AUDIO_WAIT_S
            if not ready:
                return
            waiting.pop(0)
            yield self._piece(scene, piece, start_s, end_s)
            for sampler in self.samplers.values():
                sampler.drop_before(end_s)
            del self.frame_times[: bisect.bisect_left(self.frame_times, end_s)]
            self.loud.drop_before(end_abs)
            self.audio16.drop_before(end_abs)

    def _piece(self, scene: int, piece: int, visual_start_s: float, visual_end_s: float) -> Piece:
        bounds = self._refined(visual_start_s, visual_end_s)
        start_s, end_s, rate = bounds.start_s, bounds.end_s, float(self.frame_rate)
        pack = self._pack(start_s, end_s) if end_s - start_s >= self.plan.min_clip_s else None
        thumbnail = self._thumbnail(start_s, end_s) if self.thumb_source is not None else None
        return Piece(
            scene, piece, round(start_s * rate), round(end_s * rate), start_s, end_s, pack, thumbnail,
            visual_start_s, visual_end_s, bounds.start_dbfs, bounds.end_dbfs, bounds.flag,
        )  # fmt: skip

    def _refined(self, start_s: float, end_s: float) -> Bounds:
        """The piece's bounds moved inward to quiet points (:mod:`stages.boundary`). Inward moves
        read only the piece's own audio and frames, which are held until it is emitted."""
        search_s = self.plan.boundary_search_s
        if search_s <= 0:
            return Bounds(start_s, end_s, None, None, None)
        half, offset = WINDOW_S / 2, self.video_start_s
        parts, first, _ = self.loud.window(start_s + offset - half, end_s + offset + half)
        audio = None  # the chunks abut in a well-formed stream (a gap would shift the levels after it)
        if parts and first is not None:
            audio = Audio(np.concatenate([p[0] for p in parts]), first - offset, self.loud.rates[0])
        lo, hi = (bisect.bisect_left(self.frame_times, t) for t in (start_s, end_s))
        return refine_bounds(self.frame_times[lo:hi], start_s, end_s, audio, search_s)

    def _thumb_source(self) -> str:
        """The position need whose stills are the smallest at least the thumbnail's size (scaling
        three of them down per piece costs less than scaling every still of a grid of our own)."""
        width, height = self.thumb_size
        fits = [
            (sampler.width * sampler.height, need.name)
            for need in self.plan.needs
            if need.positions and (sampler := self.samplers[need.name]).width >= width and sampler.height >= height
        ]
        if fits:
            return min(fits)[1]
        self.samplers[THUMB_SAMPLER] = _Sampler(self.plan.still_fps, width, height, "yuv420p")
        return THUMB_SAMPLER

    def _thumbnail(self, start_s: float, end_s: float) -> bytes | None:
        """The piece's strip, each position taking the nearest still (a piece shorter than the
        still grid's step has none of its own: the nearest one held)."""
        sampler = self.samplers[self.thumb_source]
        times, stills = sampler.take(start_s, end_s)
        if not times:
            times, stills = sampler.times, sampler.arrays
        if not times:
            return None
        frames = []
        for i in (_nearest(times, start_s + p * (end_s - start_s)) for p in THUMB_POSITIONS):
            frame = cv2.cvtColor(stills[i], cv2.COLOR_YUV2RGB_I420)  # BT.601, a third of libswscale's time
            if (sampler.width, sampler.height) != self.thumb_size:
                frame = cv2.resize(frame, self.thumb_size, interpolation=cv2.INTER_AREA)
            frames.append(_rotate(frame, self.rotation_deg))
        return strip_jpeg(frames)

    def _pack(self, start_s: float, end_s: float) -> DecodedClip:
        duration = end_s - start_s
        frames: dict[str, np.ndarray] = {}
        times: dict[str, np.ndarray] = {}
        for need in self.plan.needs:
            sampler = self.samplers[need.name]
            got_times, got = sampler.take(start_s, end_s)
            if need.positions and got_times:
                picks = [_nearest(got_times, start_s + t) for t in need.times_s(duration)]
                got_times = [got_times[i] for i in picks]
                got = [_still_to(got[i], sampler.height, need.gray) for i in picks]
            got = [_rotate(a, self.rotation_deg) for a in got]
            frames[need.name] = np.stack(got) if got else np.zeros((0, 0, 0), np.uint8)
            times[need.name] = np.asarray(got_times, dtype=np.float64) - start_s
        start_abs, end_abs = start_s + self.video_start_s, end_s + self.video_start_s
        audio = None
        if self.plan.audio and self.audio is not None:
            parts, _, _ = self.audio16.window(start_abs, end_abs)
            audio = np.concatenate([p[0] for p in parts]).astype(np.float32) if parts else np.zeros(0, np.float32)
        return DecodedClip(duration, frames, times, audio, self._loudness(start_abs, end_abs))

    def _loudness(self, start_abs: float, end_abs: float) -> Loudness | None:
        if not self.plan.loudness or self.audio is None:
            return None
        parts, first, last = self.loud.window(start_abs, end_abs)
        channels = self.loud_channels
        num_samples = sum(len(p[0]) for p in parts)
        sum_squares = float(sum(p[0].sum(dtype=np.float64) for p in parts)) * channels
        peak = float(max((p[1].max(initial=0.0) for p in parts), default=0.0))
        if first is None:
            first = last = end_abs
        return Loudness(sum_squares, num_samples * channels, peak, num_samples, first - start_abs, last - start_abs)


def analyse(path: str, detector: DetectorConfig, plan: PackPlan, rotation_deg: int = 0) -> Iterator[Piece]:
    """The pieces of ``path`` with their packs, in time order (see :class:`SourceAnalysis`)."""
    return iter(SourceAnalysis(path, detector, plan, rotation_deg))
