"""probe: read container and stream facts of every source with PyAV (demux only, plus the
first decoded video frame to prove the codec works and read its display rotation).

Input: source rows with ``src_path``. Output columns ``probe_*``: container, duration,
video codec, width/height (coded, before rotation), display rotation in degrees, sample and
display aspect ratios, average frame rate, whether the frame rate is variable (from packet
timestamps, never from frame counts), and the audio codec / sample rate / channels.

Reason codes: ``unreadable`` (not a media file FFmpeg can open), ``no_video``, ``undecodable``
(a video stream whose frames cannot be decoded), ``zero_duration``, ``no_audio`` (no audio
stream, when ``require_audio``).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any, ClassVar

import av
import numpy as np

from schemas import Col, Kind
from stages.base import Outcome, passed, rejected
from stages.storage import local_copy, scratch_dir


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    require_audio: bool = True  # sounding videos only: a source without audio is rejected here
    vfr_packets: int = 300  # video packets whose timestamps decide constant vs variable rate
    vfr_tolerance: float = 0.05  # relative spread of frame durations above which a stream is VFR

    def __post_init__(self) -> None:
        if self.vfr_packets < 2 or not 0 < self.vfr_tolerance < 1:
            raise ValueError("probe.vfr_packets must be >= 2 and 0 < probe.vfr_tolerance < 1")


class ProbeError(Exception):
    """A source that cannot be used, with its reason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _ratio(value: Fraction | None) -> str | None:
    return f"{value.numerator}:{value.denominator}" if value else None


def _rotation_deg(frame: av.VideoFrame) -> int:
    """Display rotation, counter-clockwise degrees in [0, 360), as FFmpeg applies it."""
    return int(round(getattr(frame, "rotation", 0) or 0)) % 360


def frame_durations_vary(pts: list[int], tolerance: float) -> bool:
    """True when the gaps between consecutive presentation timestamps are not constant."""
    if len(pts) < 3:
        return False
    gaps = np.diff(np.sort(np.asarray(pts, dtype=np.float64)))
    gaps = gaps[gaps > 0]
    if len(gaps) < 2:
        return False
    median = float(np.median(gaps))
    return bool(np.max(np.abs(gaps - median)) / median > tolerance)


@dataclasses.dataclass(frozen=True)
class StreamTiming:
    """Per-stream spans from packet timestamps: first pts to the last packet's pts + duration."""

    duration_s: dict[str, float]
    max_video_frame_s: float  # the longest video frame: "one frame" for variable frame rates
    video_pts: tuple[int, ...] = ()  # every video packet's timestamp, in decode order


def stream_timing(path_or_file: Any) -> StreamTiming:
    """Demux only (no decode) and measure every audio and video stream."""
    spans: dict[str, list[float]] = {}
    max_frame = 0.0
    video_pts: list[int] = []
    with av.open(path_or_file) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        for packet in container.demux(streams):
            if packet.pts is None or packet.stream.time_base is None:
                continue
            tb = packet.stream.time_base
            start = float(packet.pts * tb)
            length = float((packet.duration or 0) * tb)
            if packet.stream.type == "video":
                max_frame = max(max_frame, length)
                video_pts.append(packet.pts)
            span = spans.setdefault(packet.stream.type, [start, start + length])
            span[0], span[1] = min(span[0], start), max(span[1], start + length)
    return StreamTiming({kind: end - start for kind, (start, end) in spans.items()}, max_frame, tuple(video_pts))


def _video_streams(container: av.container.InputContainer) -> list[av.video.stream.VideoStream]:
    """The real video streams: an attached picture (an audio file's cover art) is a one-frame
    "video" stream to FFmpeg, not a video."""
    cover = av.stream.Disposition.attached_pic
    return [s for s in container.streams.video if not s.disposition & cover]


def _video_facts(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, config: ProbeConfig
) -> dict[str, Any]:
    pts: list[int] = []
    for packet in container.demux(stream):
        if packet.pts is not None:
            pts.append(packet.pts)
        if len(pts) >= config.vfr_packets:
            break
    container.seek(0)
    try:
        frame = next(container.decode(stream))
    except (StopIteration, av.FFmpegError) as e:
        raise ProbeError("undecodable", f"cannot decode a video frame ({stream.codec_context.name}): {e}") from e
    rate = stream.average_rate or stream.guessed_rate
    return {
        Col.PROBE_VIDEO_CODEC: stream.codec_context.name,
        Col.PROBE_WIDTH: stream.codec_context.width,
        Col.PROBE_HEIGHT: stream.codec_context.height,
        Col.PROBE_ROTATION_DEG: _rotation_deg(frame),
        Col.PROBE_SAR: _ratio(stream.sample_aspect_ratio),
        Col.PROBE_DAR: _ratio(stream.display_aspect_ratio),
        Col.PROBE_FPS: float(rate) if rate else None,
        Col.PROBE_IS_VFR: frame_durations_vary(pts, config.vfr_tolerance),
    }


def _duration_s(container: av.container.InputContainer) -> float | None:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    spans = [float(s.duration * s.time_base) for s in container.streams if s.duration and s.time_base]
    return max(spans) if spans else None


def probe_media(path: str, config: ProbeConfig) -> dict[str, Any]:
    """All ``probe_*`` columns for a file; raises :class:`ProbeError` for unusable files."""
    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise ProbeError("unreadable", f"FFmpeg cannot open the file: {e}") from e
    with container:
        video = _video_streams(container)
        if not video:
            cover = " (only an attached picture: cover art)" if container.streams.video else ""
            raise ProbeError("no_video", f"the file has no video stream{cover}")
        facts: dict[str, Any] = {Col.PROBE_CONTAINER: container.format.name}
        facts[Col.PROBE_DURATION_S] = _duration_s(container)
        audio = container.streams.audio[0] if container.streams.audio else None
        facts[Col.PROBE_HAS_AUDIO] = audio is not None
        if audio is not None:
            facts[Col.PROBE_AUDIO_CODEC] = audio.codec_context.name
            facts[Col.PROBE_AUDIO_SAMPLE_RATE_HZ] = audio.codec_context.sample_rate
            facts[Col.PROBE_AUDIO_CHANNELS] = audio.codec_context.channels
        facts.update(_video_facts(container, video[0], config))
    if facts[Col.PROBE_DURATION_S] is None:
        facts[Col.PROBE_DURATION_S] = stream_timing(path).duration_s.get("video")
    return facts


class Probe:
    """See the module docstring."""

    name: ClassVar[str] = "probe"
    unit: ClassVar[str] = Kind.SOURCE
    reasons: ClassVar[tuple[str, ...]] = ("unreadable", "no_video", "undecodable", "zero_duration", "no_audio")
    requires: ClassVar[tuple[str, ...]] = (Col.SRC_PATH,)
    produces: ClassVar[tuple[str, ...]] = (
        Col.PROBE_CONTAINER,
        Col.PROBE_DURATION_S,
        Col.PROBE_VIDEO_CODEC,
        Col.PROBE_WIDTH,
        Col.PROBE_HEIGHT,
        Col.PROBE_ROTATION_DEG,
        Col.PROBE_SAR,
        Col.PROBE_DAR,
        Col.PROBE_FPS,
        Col.PROBE_IS_VFR,
        Col.PROBE_HAS_AUDIO,
        Col.PROBE_AUDIO_CODEC,
        Col.PROBE_AUDIO_SAMPLE_RATE_HZ,
        Col.PROBE_AUDIO_CHANNELS,
    )

    def __init__(self, config: ProbeConfig) -> None:
        self.config = config

    def process(self, row: dict[str, Any]) -> Outcome:
        try:
            with local_copy(row[Col.SRC_PATH], scratch_dir()) as path:  # an object: fetched to this node
                facts = probe_media(path, self.config)
        except ProbeError as e:
            return rejected(e.reason, detail=str(e))
        duration = facts[Col.PROBE_DURATION_S]
        if not duration or duration <= 0:
            return rejected("zero_duration", metric=Col.PROBE_DURATION_S, value=duration or 0.0, threshold=0.0, **facts)
        if self.config.require_audio and not facts[Col.PROBE_HAS_AUDIO]:
            return rejected("no_audio", detail="the file has no audio stream", **facts)
        return passed(**facts)
