"""Read a clip into arrays and write a negative back as a playable MP4, reproducibly.

Reading: the video resampled to a constant frame rate (the frame on screen at every 1/fps s, so
a variable-frame-rate clip keeps its timing), downscaled so the longer side is at most
``max_side`` (negatives train the synchrony prior, which works on small frames; full-resolution
frames of a 60 s clip would not fit in memory), and the audio as float32 ``(C, S)`` at its own
rate and channel count.

Writing: H.264 (one x264 thread, fixed settings) + AAC in MP4 by a fresh FFmpeg process with
bitexact flags, so the same arrays always give the same bytes: same seed + same clip id gives a
byte-identical negative.
"""

from __future__ import annotations

import io
import os
import tempfile
from fractions import Fraction

import av
import numpy as np

from stages.decode import FrameNeed, decode_clip
from stages.ffmpeg import run_ffmpeg
from stages.probe import stream_timing


def load_clip(media: str | bytes, max_side: int = 256) -> tuple[np.ndarray, float, np.ndarray, int]:
    """(frames uint8 (T, H, W, 3), fps, audio float32 (C, S), rate_hz) of a clip."""
    timing = stream_timing(io.BytesIO(media) if isinstance(media, bytes) else media)
    duration_s = timing.duration_s.get("video", 0.0)
    source = io.BytesIO(media) if isinstance(media, bytes) else media
    with av.open(source) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        if not container.streams.audio:
            raise ValueError("the clip has no audio stream")
        audio_stream = container.streams.audio[0]
        rate = audio_stream.codec_context.sample_rate
        resampler = av.AudioResampler(format="fltp", layout=audio_stream.codec_context.layout, rate=rate)
        chunks = [f.to_ndarray() for frame in container.decode(audio_stream) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray() for f in resampler.resample(None)]
    num_frames = max(1, int(round(duration_s * fps)))
    need = FrameNeed("clip", fps=fps, max_side=max_side)
    frames = decode_clip(media, [need], audio=False, duration_s=num_frames / fps).frames["clip"][:num_frames]
    # the AAC decoder returns whole 1024-sample frames: trim to the video's duration
    audio = np.concatenate(chunks, axis=1).astype(np.float32)[:, : int(round(num_frames / fps * rate))]
    return frames, fps, audio, rate


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range YUV 4:2:0 planes stacked as PyAV's ``yuv420p`` ndarray ((H*3/2, W)).
    Done in numpy rather than by libswscale inside the encoder, whose output was seen to vary
    between processes: the same negative must always give the same bytes."""
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    height, width = y.shape

    def half(c: np.ndarray) -> np.ndarray:  # 2x2 average
        return c.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))

    planes = [np.round(p).clip(0, 255).astype(np.uint8) for p in (y, half(u), half(v))]
    return np.concatenate([p.ravel() for p in planes]).reshape(height * 3 // 2, width)  # planes back to back


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def write_clip(frames: np.ndarray, fps: float, audio: np.ndarray, rate_hz: int, crf: int = 20) -> bytes:
    """MP4 bytes (H.264 + AAC) of the arrays; the same input always gives the same bytes.

    Encoded by a fresh FFmpeg process per clip (raw YUV and float samples in, bitexact flags,
    one x264 thread, no metadata): in-process encoding through PyAV in long-lived workers was
    seen to give different H.264 bytes for identical frames."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    channels = 2 if audio.shape[0] >= 2 else 1
    samples = np.ascontiguousarray(np.clip(audio[:channels], -1, 1).T.astype("<f4"))  # interleaved
    rate = _fps_fraction(fps)
    with tempfile.TemporaryDirectory(prefix="javis-neg-") as tmp:
        video_in, audio_in, out = (os.path.join(tmp, n) for n in ("video.yuv", "audio.f32", "out.mp4"))
        with open(video_in, "wb") as f:
            for image in frames:
                f.write(rgb_to_yuv420p(image[:height, :width]).tobytes())
        samples.tofile(audio_in)
        run_ffmpeg([
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}", "-r", f"{rate.numerator}/{rate.denominator}",
            "-i", video_in, "-f", "f32le", "-ar", str(rate_hz), "-ac", str(channels), "-i", audio_in,
            "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-threads", "1",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "192k", "-map_metadata", "-1",
            "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-f", "mp4", out,
        ])  # fmt: skip
        with open(out, "rb") as f:
            return f.read()


def load_audio_window(
    media: str | bytes, rate_hz: int, channels: int, start_s: float = 0.0, end_s: float | None = None
) -> np.ndarray:
    """float32 (channels, S) of [start_s, end_s) of a file's first audio stream, resampled to
    ``rate_hz``. Decoded from the start and counted in output samples (exact, unlike a seek);
    only the window is kept in memory."""
    source = io.BytesIO(media) if isinstance(media, bytes) else media
    layout = "stereo" if channels == 2 else "mono"
    first = int(round(start_s * rate_hz))
    last = None if end_s is None else int(round(end_s * rate_hz))
    kept, position = [], 0
    with av.open(source) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate_hz)
        frames = (f for frame in container.decode(container.streams.audio[0]) for f in resampler.resample(frame))
        for chunk in (c.to_ndarray() for c in frames):
            lo, hi = position, position + chunk.shape[1]
            position = hi
            if hi > first and (last is None or lo < last):
                kept.append(chunk[:, max(0, first - lo) : None if last is None else max(0, last - lo)])
            if last is not None and position >= last:
                break
    return np.concatenate(kept, axis=1).astype(np.float32) if kept else np.zeros((channels, 0), np.float32)
