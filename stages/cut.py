"""cut: encode each clip that passed every other stage as its own file, video and audio together.

Input: pending clip rows with ``src_path`` and ``clip_start_s``/``clip_end_s``; the last map
stage, so only clips no filter or model rejected are ever encoded. The clip is re-encoded
(H.264 + AAC in MP4) from the source, which makes video boundaries frame-accurate; the audio is
cut to the same interval by the same seek. FFmpeg's autorotation applies the source's display
rotation to the pixels, so clips play upright without relying on rotation metadata.

The seek point sits a quarter frame before the first frame's timestamp: FFmpeg keeps frames
whose timestamp is at or after the seek point, so rounding can never drop or add a frame.
Clip times count from the video stream's first timestamp, FFmpeg's ``-ss`` from the file's
start (the earliest stream): the difference is added, or a source whose video starts after its
audio would be cut a frame early.

The encode keeps the source's frame timestamps (``-fps_mode passthrough``, ``-vsync`` before 5.1: no frame is
duplicated or dropped to reach a constant rate), so a variable-frame-rate source makes a
variable-frame-rate clip; the audio keeps the source's sample rate and channels (no ``-ar`` /
``-ac``). Trainers read both from the clip's columns, measured on the encoded file.

Output columns: ``media_path`` (relative to the output folder), ``media_size_bytes``,
``media_sha256`` or, with ``embed_media``, ``media_bytes`` instead of a file; ``cut_width``,
``cut_height`` (after rotation), ``cut_fps`` (the video stream's average rate), ``cut_is_vfr``
(its frame timestamps are not evenly spaced: the spread of the gaps between them exceeds
``VFR_TOLERANCE`` of their median, probe's rule), ``cut_audio_sample_rate_hz``,
``cut_audio_channels`` (null without audio), and the measured ``cut_video_duration_s``,
``cut_audio_duration_s`` and their difference ``cut_av_diff_s``, and ``cut_max_frame_s``, the
longest video frame (the unit of the A/V tolerance, so the decision can be recomputed from the row).
Reason code: ``av_mismatch`` (audio and video durations differ by more than
``max_av_diff_frames`` video frames, e.g. a source whose audio track ends early).
FFmpeg errors are ``failed`` rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import uuid
from typing import Any, ClassVar

import av

from schemas import Col, Kind
from stages.base import Outcome, passed, rejected
from stages.ffmpeg import ffmpeg_version, fps_mode_args, run_ffmpeg
from stages.probe import frame_durations_vary, stream_timing
from stages.storage import Storage, local_copy, scratch_dir

SEEK_MARGIN_FRAMES = 0.25
AV_TOLERANCE_S = 1e-6  # timestamp arithmetic: a difference of exactly the allowed frames is allowed
VFR_TOLERANCE = 0.05  # relative spread of frame durations above which a clip is VFR (probe.vfr_tolerance's default)


@dataclasses.dataclass(frozen=True)
class CutConfig:
    clips_dir: str = "media/clips"  # relative to the output folder: <clips_dir>/<source_id>/<clip_id>.mp4
    embed_media: bool = False  # store clip bytes in the Parquet rows instead of files
    x264_preset: str = "veryfast"  # libx264 speed/size trade-off (ultrafast ... veryslow)
    crf: int = 18  # visually lossless for training data
    audio_bitrate_kbps: int = 192  # AAC bitrate of the encoded clip
    threads: int = 0  # FFmpeg threads per clip (0: FFmpeg decides)
    max_av_diff_frames: float = 1.0  # tolerated |audio - video| duration, in video frames
    timeout_s: float = 600.0  # per clip

    def __post_init__(self) -> None:
        parts = os.path.normpath(self.clips_dir).split(os.sep)
        if os.path.isabs(self.clips_dir) or parts[0] in (".", ".."):
            # javis deletes unreferenced files in this folder: it must be a dedicated subfolder
            raise ValueError(f"cut.clips_dir must be a relative subfolder like 'media/clips', got {self.clips_dir!r}")
        if not 0 <= self.crf <= 51:
            raise ValueError("cut.crf must be in [0, 51]")
        if self.audio_bitrate_kbps < 8 or self.threads < 0 or self.timeout_s <= 0:
            raise ValueError("cut.audio_bitrate_kbps >= 8, cut.threads >= 0 and cut.timeout_s > 0 required")
        if self.max_av_diff_frames <= 0:
            raise ValueError("cut.max_av_diff_frames must be > 0")


def video_start_offset_s(src: str) -> float:
    """Seconds from the file's start (FFmpeg's ``-ss`` origin) to the video stream's first timestamp;
    0 for a file PyAV cannot read (FFmpeg then fails on it with its own message)."""
    try:
        with av.open(src, metadata_errors="ignore") as container:
            if not container.streams.video:
                return 0.0
            video = container.streams.video[0]
            video_start = float(video.start_time * video.time_base) if video.start_time is not None else 0.0
            file_start = container.start_time / av.time_base if container.start_time is not None else 0.0
    except av.FFmpegError:
        return 0.0
    return video_start - file_start


def ffmpeg_cut_args(
    src: str, dst: str, start_s: float, end_s: float, fps: float, config: CutConfig, offset_s: float = 0.0
) -> list[str]:
    """FFmpeg arguments that cut [start_s, end_s) of both streams into ``dst``; times count from
    the video stream's start, ``offset_s`` after the file's (:func:`video_start_offset_s`)."""
    margin = SEEK_MARGIN_FRAMES / fps
    seek = max(0.0, start_s + offset_s - margin)
    return [
        "-ss", f"{seek:.6f}", "-i", src, "-t", f"{end_s + offset_s - margin - seek:.6f}",
        "-map", "0:v:0", "-map", "0:a:0?",
        "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2",  # x264 + yuv420p need even sizes
        "-c:v", "libx264", "-preset", config.x264_preset, "-crf", str(config.crf), "-pix_fmt", "yuv420p",
        *fps_mode_args("passthrough"),  # keep source timestamps: no duplicated or dropped frames
        "-c:a", "aac", "-b:a", f"{config.audio_bitrate_kbps}k",
        "-threads", str(config.threads), "-movflags", "+faststart", "-f", "mp4", dst,
    ]  # fmt: skip


def measure_clip(media: str | bytes) -> tuple[dict[str, Any], float]:
    """Size, frame rate (and whether it varies), audio format and durations of a written clip,
    without decoding anything.

    Video: from packet timestamps (first frame to the end of the last frame). Audio: the track
    duration the MP4 muxer recorded, which excludes the encoder's priming and padding samples
    (decoding would count AAC's padding to a whole 1024-sample frame). Also returns the longest
    video frame, the unit of the sync tolerance for variable frame rates."""
    source = io.BytesIO(media) if isinstance(media, bytes) else media
    with av.open(source) as container:
        video = container.streams.video[0]
        width, height = video.codec_context.width, video.codec_context.height
        fps = float(video.average_rate or video.guessed_rate or 0) or None
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_s = float(audio.duration * audio.time_base) if audio and audio.duration else None
        sample_rate = audio.codec_context.sample_rate if audio else None
        channels = audio.codec_context.channels if audio else None
    if isinstance(source, io.BytesIO):
        source.seek(0)
    timing = stream_timing(source)
    video_s = timing.duration_s.get("video", 0.0)
    if audio_s is None:
        audio_s = timing.duration_s.get("audio")
    return {
        Col.CUT_WIDTH: width,
        Col.CUT_HEIGHT: height,
        Col.CUT_FPS: fps,
        Col.CUT_IS_VFR: frame_durations_vary(list(timing.video_pts), VFR_TOLERANCE),
        Col.CUT_AUDIO_SAMPLE_RATE_HZ: sample_rate,
        Col.CUT_AUDIO_CHANNELS: channels,
        Col.CUT_VIDEO_DURATION_S: video_s,
        Col.CUT_AUDIO_DURATION_S: audio_s,
        Col.CUT_AV_DIFF_S: abs(audio_s - video_s) if audio_s else None,
    }, timing.max_video_frame_s


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Cut:
    """See the module docstring."""

    name: ClassVar[str] = "cut"
    unit: ClassVar[str] = Kind.CLIP
    reasons: ClassVar[tuple[str, ...]] = ("av_mismatch",)
    requires: ClassVar[tuple[str, ...]] = (Col.SRC_PATH, Col.CLIP_START_S, Col.CLIP_END_S, Col.PROBE_FPS)
    produces: ClassVar[tuple[str, ...]] = (
        Col.MEDIA_PATH,
        Col.MEDIA_SIZE_BYTES,
        Col.MEDIA_SHA256,
        Col.MEDIA_BYTES,
        Col.CUT_WIDTH,
        Col.CUT_HEIGHT,
        Col.CUT_FPS,
        Col.CUT_IS_VFR,
        Col.CUT_AUDIO_SAMPLE_RATE_HZ,
        Col.CUT_AUDIO_CHANNELS,
        Col.CUT_VIDEO_DURATION_S,
        Col.CUT_AUDIO_DURATION_S,
        Col.CUT_AV_DIFF_S,
        Col.CUT_MAX_FRAME_S,
        Col.CUT_FFMPEG_VERSION,
    )

    def __init__(self, config: CutConfig, output_dir: str) -> None:
        self.config = config
        self.storage = Storage(output_dir)

    def _write(self, row: dict[str, Any]) -> tuple[str, bytes]:
        """Encode into this node's scratch, then store the clip (renamed into a local output
        folder, uploaded to object storage): a killed run never leaves a half-written clip."""
        rel = f"{self.config.clips_dir}/{row[Col.SOURCE_ID]}/{row[Col.ID]}.mp4"
        work = scratch_dir() / "encodes"
        work.mkdir(parents=True, exist_ok=True)
        tmp = work / f"{row[Col.ID]}.{uuid.uuid4().hex[:8]}.mp4"
        fps = row[Col.PROBE_FPS] or 25.0
        try:
            with local_copy(row[Col.SRC_PATH], scratch_dir()) as src:
                offset = video_start_offset_s(src)
                args = ffmpeg_cut_args(
                    src, str(tmp), row[Col.CLIP_START_S], row[Col.CLIP_END_S], fps, self.config, offset
                )
                run_ffmpeg(args, timeout_s=self.config.timeout_s)
            data = tmp.read_bytes()
            if self.config.embed_media:
                return "", data
            self.storage.put_file(tmp, rel, move=True)
            return rel, data
        finally:
            tmp.unlink(missing_ok=True)

    def process(self, row: dict[str, Any]) -> Outcome:
        rel, data = self._write(row)
        columns: dict[str, Any] = {
            Col.MEDIA_SIZE_BYTES: len(data),
            Col.MEDIA_SHA256: _sha256(data),
            Col.CUT_FFMPEG_VERSION: ffmpeg_version(),
        }
        if self.config.embed_media:
            columns[Col.MEDIA_BYTES] = data
        else:
            columns[Col.MEDIA_PATH] = rel
        measured, max_frame_s = measure_clip(data)
        columns.update(measured)
        frame_s = max_frame_s or 1.0 / (measured[Col.CUT_FPS] or row[Col.PROBE_FPS] or 25.0)
        columns[Col.CUT_MAX_FRAME_S] = frame_s  # stored: the decision's threshold depends on it
        threshold = self.config.max_av_diff_frames * frame_s
        diff = columns[Col.CUT_AV_DIFF_S]
        if diff is not None and diff > threshold + AV_TOLERANCE_S:
            return rejected("av_mismatch", metric=Col.CUT_AV_DIFF_S, value=diff, threshold=threshold, **columns)
        return passed(**columns)
