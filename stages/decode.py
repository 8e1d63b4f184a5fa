"""Decoded media as the filters and captioners read it: frame needs, the analysis pack, and a
one-pass decoder for a whole file.

Each consumer (filter or captioner) states what it needs as a :class:`FrameNeed` (frames at
relative positions or at a fixed rate in seconds, a maximum size, colour or grey) and whether it
needs audio. In the pipeline the scene cut's single decode of the source (``stages.analysis``)
builds one :class:`DecodedClip` per candidate clip, the *analysis pack*: the frames every need
asked for, the clip's 16 kHz mono audio and its loudness. It travels in the transient ``decoded``
column as an ``.npz`` blob; the pipeline drops it once the last consumer has read it, so it never
reaches the outputs. :func:`decode_clip` decodes a whole file (an encoded clip or a negative) the
same way, for ``javis augment``, ``javis latents`` and tests.

A frame "at time t" is the frame on screen at t: the last frame whose timestamp is <= t.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Sequence
from typing import Any

import av
import numpy as np

from schemas import Col

AUDIO_RATE_HZ = 16_000  # what speech and audio models expect
_PACK_MAGIC = b"javispk1"
_ALIGN = 16


@dataclasses.dataclass(frozen=True)
class FrameNeed:
    """Frames one filter wants, stored under its ``name``."""

    name: str
    positions: tuple[float, ...] = ()  # relative positions in the clip, each in [0, 1]
    fps: float | None = None  # or: one frame every 1/fps seconds, from t = 0
    max_side: int = 512  # downscale (aspect kept) so the longer side is at most this
    gray: bool = False  # one channel (luma) instead of RGB

    def __post_init__(self) -> None:
        # frames come back in time order: one forward pass serves the targets in that order
        object.__setattr__(self, "positions", tuple(sorted(self.positions)))
        if bool(self.positions) == (self.fps is not None):
            raise ValueError(f"frame need {self.name!r}: give either positions or fps")
        if any(not 0.0 <= p <= 1.0 for p in self.positions):
            raise ValueError(f"frame need {self.name!r}: positions must be in [0, 1]")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"frame need {self.name!r}: fps must be > 0")
        if self.max_side < 16:
            raise ValueError(f"frame need {self.name!r}: max_side must be >= 16")

    def times_s(self, duration_s: float) -> np.ndarray:
        last = max(0.0, duration_s - 1e-3)  # a position of 1.0 means the last frame
        if self.positions:
            return np.minimum(np.asarray(self.positions, dtype=np.float64) * duration_s, last)
        return np.arange(0.0, max(duration_s, 1e-3), 1.0 / self.fps, dtype=np.float64)


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Even dimensions no larger than the source, longer side <= ``max_side``."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


@dataclasses.dataclass(frozen=True)
class Loudness:
    """The clip's audio as the sound check measures it, at the source's own rate, every channel.

    ``sum_squares / num_values`` is the mean power (``num_values`` = samples x channels), ``peak``
    the largest absolute sample. ``start_s`` / ``end_s``: the span of the clip (seconds from its
    start) that audio samples cover; a source whose audio ends early covers less than the clip."""

    sum_squares: float
    num_values: int
    peak: float
    num_samples: int  # per channel
    start_s: float
    end_s: float

    def to_array(self) -> np.ndarray:
        fields = (self.sum_squares, self.num_values, self.peak, self.num_samples, self.start_s, self.end_s)
        return np.asarray(fields, dtype=np.float64)

    @classmethod
    def from_array(cls, a: np.ndarray) -> Loudness:
        return cls(float(a[0]), int(a[1]), float(a[2]), int(a[3]), float(a[4]), float(a[5]))


@dataclasses.dataclass
class DecodedClip:
    duration_s: float
    frames: dict[str, np.ndarray]  # name -> (N, H, W, 3) uint8 RGB, or (N, H, W) when gray
    frame_times_s: dict[str, np.ndarray]  # name -> (N,) seconds from the clip's start
    audio: np.ndarray | None  # (S,) float32 mono in [-1, 1] at AUDIO_RATE_HZ, None without audio
    loudness: Loudness | None = None  # None: the source has no audio stream

    def to_bytes(self) -> bytes:
        """A JSON header (names, dtypes, shapes, offsets) and the raw arrays after it, in one copy.
        (``np.savez`` zipped and checksummed every byte, and buffered it twice: for the megabytes
        of frames each clip carries through several stages that cost real CPU and memory.)"""
        arrays: dict[str, np.ndarray] = {}
        for name, frames in self.frames.items():
            arrays[f"frames/{name}"] = frames
            arrays[f"times/{name}"] = self.frame_times_s[name]
        if self.audio is not None:
            arrays["audio"] = self.audio
        if self.loudness is not None:
            arrays["loudness"] = self.loudness.to_array()
        entries, parts, offset = [], [], 0
        for name, array in arrays.items():
            array = np.ascontiguousarray(array)
            pad = -offset % _ALIGN  # every array starts aligned for its dtype
            parts.append(bytes(pad))
            offset += pad
            entries.append([name, array.dtype.str, list(array.shape), offset])
            parts.append(memoryview(array).cast("B") if array.size else b"")
            offset += array.nbytes
        header = json.dumps({"duration_s": self.duration_s, "arrays": entries}).encode()
        return b"".join([_PACK_MAGIC, len(header).to_bytes(4, "little"), header, *parts])

    @classmethod
    def from_bytes(cls, data: bytes) -> DecodedClip:
        view = memoryview(data)
        if bytes(view[: len(_PACK_MAGIC)]) != _PACK_MAGIC:
            raise ValueError("not an analysis pack")
        start = len(_PACK_MAGIC) + 4
        size = int.from_bytes(view[len(_PACK_MAGIC) : start], "little")
        header = json.loads(bytes(view[start : start + size]))
        body = bytearray(view[start + size :])  # one copy: the arrays are writable views of it
        arrays = {}
        for name, dtype, shape, offset in header["arrays"]:
            count = int(np.prod(shape)) if shape else 1
            arrays[name] = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)
        frames = {k.split("/", 1)[1]: a for k, a in arrays.items() if k.startswith("frames/")}
        times = {k.split("/", 1)[1]: a for k, a in arrays.items() if k.startswith("times/")}
        loudness = Loudness.from_array(arrays["loudness"]) if "loudness" in arrays else None
        return cls(float(header["duration_s"]), frames, times, arrays.get("audio"), loudness)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DecodedClip:
        data = row.get(Col.DECODED)
        if data is None:
            raise ValueError("row has no analysis pack: did scene_cut build one for this stage (its frame_need)?")
        return cls.from_bytes(data)


def _convert(frame: av.VideoFrame, need: FrameNeed, reformatter: av.video.reformatter.VideoReformatter) -> np.ndarray:
    """``frame`` at the need's size and format; one reformatter per need keeps its swscale
    context (``frame.reformat`` builds a new one per frame, which costs more than the decode)."""
    width, height = scaled_size(frame.width, frame.height, need.max_side)
    fmt = "gray" if need.gray else "rgb24"
    return reformatter.reformat(frame, width=width, height=height, format=fmt).to_ndarray()


def _decode_video(container: Any, needs: Sequence[FrameNeed], duration_s: float) -> dict[str, list]:
    if not container.streams.video:
        raise ValueError("frames were requested from media without a video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    targets = {n.name: list(n.times_s(duration_s)) for n in needs}
    reformatters = {n.name: av.video.reformatter.VideoReformatter() for n in needs}
    picked: dict[str, list[tuple[float, np.ndarray]]] = {n.name: [] for n in needs}
    start = None
    previous: tuple[float, av.VideoFrame] | None = None

    def assign_until(t_limit: float, candidate: tuple[float, av.VideoFrame]) -> None:
        for need in needs:
            pending = targets[need.name]
            while pending and pending[0] < t_limit:
                picked[need.name].append((candidate[0], _convert(candidate[1], need, reformatters[need.name])))
                pending.pop(0)

    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        t = float(frame.pts * frame.time_base)
        start = t if start is None else start
        current = (t - start, frame)
        # targets before this frame's time are shown by the previous frame (or this one, if first)
        assign_until(current[0], previous or current)
        previous = current
    if previous is not None:
        assign_until(float("inf"), previous)
    return picked


def _decode_audio(container: Any) -> np.ndarray | None:
    if not container.streams.audio:
        return None
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE_HZ)
    chunks = []
    for frame in container.decode(container.streams.audio[0]):
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def decode_clip(media: str | bytes, needs: Sequence[FrameNeed], audio: bool, duration_s: float) -> DecodedClip:
    """Decode ``media`` once: the frames each need asks for, and 16 kHz mono audio."""
    names = [n.name for n in needs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate frame need names: {names}")
    source = io.BytesIO(media) if isinstance(media, bytes) else media
    picked: dict[str, list] = {n.name: [] for n in needs}
    samples = None
    if needs:
        with av.open(source) as container:
            picked = _decode_video(container, needs, duration_s)
    if audio:
        if isinstance(source, io.BytesIO):
            source.seek(0)
        with av.open(source) as container:
            samples = _decode_audio(container)
    frames = {
        name: np.stack([f for _, f in got]) if got else np.zeros((0, 0, 0), np.uint8) for name, got in picked.items()
    }
    times = {name: np.asarray([t for t, _ in got], dtype=np.float64) for name, got in picked.items()}
    return DecodedClip(duration_s, frames, times, samples)
