"""Audio hard negatives (paper C.2.4, "Audio Spatial / Temporal Augmentation").

Each operation changes ``ctx.audio`` (float32 ``(C, S)`` at ``ctx.rate_hz``) and keeps the video,
so the pair loses its synchrony in *what* sounds (spatial: add / remove a source, reshape the
volume) or *when* it sounds (temporal: shift, silence, repeat, speed). The paper gives no numeric
ranges for these; where the authors' reference augmentor (JavisDiT ``VASpatioTemporalAugmentor``)
has one we follow it, and every range is a named constant below. As the paper asks, all
operations except the temporal shift aim at sound-producing intervals (``ctx.active``) when the
clip has them.

Output of every ``apply``: a new float32 array of the input's shape; the input is never written.
Donor and separated-source waveforms are taken to be at ``ctx.rate_hz`` (``Source`` carries no
rate of its own).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from augment.context import AUDIO_SPATIAL, AUDIO_TEMPORAL, ClipContext, Interval, MissingInput, OpSpec

SILENT_RMS = 1e-4  # below this RMS a waveform counts as silence: adding / removing it changes nothing
MIN_CLIP_S = 0.5  # temporal edits of a shorter clip leave too little to misalign
# add_source: the donor covers S/3..S of the clip (reference: S/3..S) at -6..+6 dB relative to the
# clip's RMS (audible but not drowning the original); the gain cap stops a near-silent donor from
# being blown up into noise
ADD_SPAN = (1 / 3, 1.0)
ADD_LEVEL_DB = (-6.0, 6.0)
MAX_ADD_GAIN = 10.0
# volume_curve: gains stay inside [0.5, 2] (the reference's factor range) with at least a 2x
# (6 dB) swing, so the curve is audible yet the interval is never muted (that would be a removal)
VOLUME_GAIN = (0.5, 2.0)
VOLUME_MIN_RATIO = 2.0
VOLUME_SHAPES = ("sine", "cosine", "rising", "falling")
MIN_VOLUME_INTERVAL_S = 0.2  # a shorter active interval has no room for a curve
# audio_shift: the new window starts at least max(0.5 s, 10% of the clip) away from the clip's own
SHIFT_MIN_S = 0.5
SHIFT_MIN_FRACTION = 0.1
SILENCE_SPAN = (1 / 5, 1 / 2)  # inserted silence, fraction of the clip (reference: S/5..S/2)
# repeat: S/5..S/3 so that both copies fit inside the clip (the reference allows S/2 and lets the
# second copy run off the end)
REPEAT_SPAN = (1 / 5, 1 / 3)
SPEED_FACTORS = (0.5, 2.0)  # playback speed; the interval lasts length / factor afterwards
SPEED_SPAN = (1 / 5, 1 / 2)  # the re-timed interval, fraction of the clip


# ---------------------------------------------------------------------------------------------
# Pure maths: arrays in, new arrays out.


def donor_segment(donor_audio: np.ndarray, start: int, length: int, num_channels: int) -> np.ndarray:
    """``length`` samples of a donor from ``start``, zero-padded past its end (not looped: a loop
    would add a repetition, a temporal cue this spatial negative should not carry). A donor with
    another channel count is downmixed to mono and copied to every channel."""
    segment = np.zeros((donor_audio.shape[0], length), dtype=np.float32)
    available = donor_audio[:, start : start + length]
    segment[:, : available.shape[1]] = available
    if segment.shape[0] != num_channels:
        segment = np.repeat(segment.mean(axis=0, keepdims=True), num_channels, axis=0)
    return segment


def mix_at(audio: np.ndarray, segment: np.ndarray, offset: int, gain: float) -> np.ndarray:
    """``audio`` with ``gain * segment`` added from sample ``offset`` on (not clipped)."""
    out = audio.astype(np.float32, copy=True)
    out[:, offset : offset + segment.shape[1]] += np.float32(gain) * segment
    return out


def peak_guard_gain(audio: np.ndarray) -> float:
    """The scale that brings the peak back to 1 when it exceeds 1, else 1.0: scaling the whole clip
    keeps the mix undistorted, where hard clipping would add distortion the video does not explain."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return 1.0 / peak if peak > 1.0 else 1.0


def volume_envelope(shape: str, num_samples: int, gain_min: float, gain_max: float) -> np.ndarray:
    """Gain per sample, ``gain_min + (gain_max - gain_min) * curve(u)`` for u = 0..1 over the
    interval. sine: a hump sin(pi u) (loudest mid-interval); cosine: a dip (1 + cos(2 pi u)) / 2
    (quietest mid-interval; the reference's cos over [0, pi] changes sign and duplicates
    "falling"); rising: u; falling: 1 - u."""
    u = np.linspace(0.0, 1.0, num_samples)
    curves = {
        "sine": lambda: np.sin(np.pi * u),
        "cosine": lambda: 0.5 * (1.0 + np.cos(2.0 * np.pi * u)),
        "rising": lambda: u,
        "falling": lambda: 1.0 - u,
    }
    if shape not in curves:
        raise ValueError(f"unknown volume shape {shape!r}; expected one of {VOLUME_SHAPES}")
    return gain_min + (gain_max - gain_min) * curves[shape]()


def apply_envelope(audio: np.ndarray, start: int, envelope: np.ndarray) -> np.ndarray:
    """``audio`` with samples ``start .. start + len(envelope)`` scaled by the envelope and clipped
    to [-1, 1] (a local boost: scaling the whole clip down would change samples outside it)."""
    out = audio.astype(np.float32, copy=True)
    end = start + envelope.shape[0]
    out[:, start:end] = np.clip(audio[:, start:end] * envelope, -1.0, 1.0)
    return out


def insert_zeros(audio: np.ndarray, position: int, length: int) -> np.ndarray:
    """``length`` zeros inserted at ``position``; what followed plays ``length`` samples later and
    the end is cut so the clip keeps its length."""
    out = np.zeros_like(audio, dtype=np.float32)
    num_samples = audio.shape[1]
    out[:, :position] = audio[:, :position]
    out[:, position + length :] = audio[:, position : num_samples - length]
    return out


def repeat_span(audio: np.ndarray, start: int, length: int) -> np.ndarray:
    """Samples ``start .. start + length`` played twice back to back; the rest later, end cut."""
    end = start + length
    joined = np.concatenate([audio[:, :end], audio[:, start:end], audio[:, end:]], axis=1)
    return joined[:, : audio.shape[1]].astype(np.float32, copy=True)


def speed_change_unfixed(audio: np.ndarray, start: int, length: int, factor: float) -> np.ndarray:
    """``audio`` with samples ``start .. start + length`` played at ``factor`` times the speed, so
    they last ``length / factor`` samples; the rest follows, length NOT restored (see
    :func:`fit_length`). 0.5x: linear interpolation (each new odd sample is the mean of its
    neighbours, the last repeats the final sample); 2x: mean of each pair, a two-tap low-pass
    before decimation that keeps aliasing down. Pitch moves with speed: fine for a negative."""
    segment = audio[:, start : start + length].astype(np.float32)
    if factor == 2.0:
        if length % 2:
            raise ValueError(f"2x speed needs an even interval length, got {length}")
        timed = 0.5 * (segment[:, 0::2] + segment[:, 1::2])
    elif factor == 0.5:
        timed = np.empty((audio.shape[0], 2 * length), dtype=np.float32)
        timed[:, 0::2] = segment
        timed[:, 1:-1:2] = 0.5 * (segment[:, :-1] + segment[:, 1:])
        timed[:, -1] = segment[:, -1]
    else:
        raise ValueError(f"speed factor must be one of {SPEED_FACTORS}, got {factor}")
    return np.concatenate([audio[:, :start], timed, audio[:, start + length :]], axis=1).astype(np.float32)


def fit_length(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """Cut the end off, or pad it with zeros, to exactly ``num_samples``."""
    out = np.zeros((audio.shape[0], num_samples), dtype=np.float32)
    kept = min(num_samples, audio.shape[1])
    out[:, :kept] = audio[:, :kept]
    return out


# ---------------------------------------------------------------------------------------------
# Shared drawing helpers.


def _audio(ctx: ClipContext) -> np.ndarray:
    if ctx.audio.ndim != 2:
        raise ValueError(f"ctx.audio must be (C, S), got shape {ctx.audio.shape}")
    return ctx.audio


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def _spans(intervals: Sequence[Interval] | None, rate_hz: int, num_samples: int) -> list[tuple[int, int]]:
    """Intervals as sample spans [a, b) clipped to the waveform; empty ones dropped."""
    spans = []
    for interval in intervals or []:
        a = min(num_samples, int(round(interval.start_s * rate_hz)))
        b = min(num_samples, int(round(interval.end_s * rate_hz)))
        if b > a:
            spans.append((a, b))
    return spans


def _draw_length(rng: np.random.Generator, num_samples: int, span: tuple[float, float]) -> int:
    low, high = math.ceil(num_samples * span[0]), math.floor(num_samples * span[1])
    if low < 1 or high < low:
        raise MissingInput(f"clip of {num_samples} samples is too short for a {span} fraction")
    return int(rng.integers(low, high + 1))


def _draw_start(ctx: ClipContext, rng: np.random.Generator, max_start: int) -> tuple[int, str]:
    """A start in [0, max_start], inside an active interval when one reaches that far (the paper:
    edit where sound is produced); anchor says which."""
    spans = [(a, min(b, max_start + 1)) for a, b in _spans(ctx.active, ctx.rate_hz, ctx.num_samples) if a <= max_start]
    if spans:
        a, b = spans[int(rng.integers(len(spans)))]
        return int(rng.integers(a, b)), "active"
    return int(rng.integers(0, max_start + 1)), "anywhere"


def _require_duration(ctx: ClipContext) -> None:
    if ctx.num_samples < MIN_CLIP_S * ctx.rate_hz:
        raise MissingInput(f"clip of {ctx.num_samples / ctx.rate_hz:.2f} s is shorter than {MIN_CLIP_S} s")


def _pick(items: Sequence[Any] | None, index: int, what: str) -> Any:
    if not items or not 0 <= index < len(items):
        raise ValueError(f"params name {what}[{index}] but the clip has {len(items or [])}")
    return items[index]


# ---------------------------------------------------------------------------------------------
# Audio spatial.


def _draw_add_source(ctx: ClipContext, rng: np.random.Generator) -> dict[str, Any]:
    audio = _audio(ctx)
    donors = ctx.donor_sources or []
    candidates = [i for i, d in enumerate(donors) if _spans(d.active, ctx.rate_hz, d.audio.shape[-1])]
    if not candidates:
        raise MissingInput("no donor source with an active interval (ctx.donor_sources)")
    index = candidates[int(rng.integers(len(candidates)))]
    donor = donors[index]
    length = _draw_length(rng, ctx.num_samples, ADD_SPAN)
    offset = int(rng.integers(0, ctx.num_samples - length + 1))
    spans = _spans(donor.active, ctx.rate_hz, donor.audio.shape[-1])
    a, b = spans[int(rng.integers(len(spans)))]
    donor_start = int(rng.integers(a, max(a, b - length) + 1))  # start where the donor sounds
    segment = donor_segment(donor.audio, donor_start, length, audio.shape[0])
    segment_rms = _rms(segment)
    if segment_rms < SILENT_RMS:
        raise MissingInput(f"donor {donor.name!r} is silent where it is marked active")
    level_db = float(rng.uniform(*ADD_LEVEL_DB))
    clip_rms = _rms(audio)
    reference_rms = clip_rms if clip_rms >= SILENT_RMS else segment_rms  # silent clip: donor's own level
    gain = float(min(MAX_ADD_GAIN, reference_rms / segment_rms * 10 ** (level_db / 20)))
    guard = peak_guard_gain(mix_at(audio, segment, offset, gain))
    return {
        "donor_index": index,
        "donor_name": donor.name,
        "donor_start": donor_start,
        "offset": offset,
        "length": length,
        "level_db": level_db,
        "gain": gain,
        "clip_guard_gain": guard,  # < 1 when the mix peaked above 1 and was scaled down
    }


def _apply_add_source(ctx: ClipContext, params: dict[str, Any]) -> np.ndarray:
    audio = _audio(ctx)
    donor = _pick(ctx.donor_sources, params["donor_index"], "donor_sources")
    segment = donor_segment(donor.audio, params["donor_start"], params["length"], audio.shape[0])
    return mix_at(audio, segment, params["offset"], params["gain"]) * np.float32(params["clip_guard_gain"])


def _draw_remove_source(ctx: ClipContext, rng: np.random.Generator) -> dict[str, Any]:
    audio = _audio(ctx)
    candidates = []
    for i, source in enumerate(ctx.sources or []):
        if source.audio.shape != audio.shape:
            raise ValueError(f"source {source.name!r} has shape {source.audio.shape}, the clip {audio.shape}")
        sounding = bool(_spans(source.active, ctx.rate_hz, ctx.num_samples)) and _rms(source.audio) >= SILENT_RMS
        # removing a source that is the whole mix leaves silence: an easy negative, not a hard one
        if sounding and _rms(audio - source.audio) >= SILENT_RMS:
            candidates.append(i)
    if not candidates:
        raise MissingInput("no separated source with activity whose removal leaves sound (ctx.sources)")
    index = candidates[int(rng.integers(len(candidates)))]
    source = ctx.sources[index]
    guard = peak_guard_gain(audio - source.audio)
    return {"source_index": index, "source_name": source.name, "clip_guard_gain": guard}


def _apply_remove_source(ctx: ClipContext, params: dict[str, Any]) -> np.ndarray:
    audio = _audio(ctx)
    source = _pick(ctx.sources, params["source_index"], "sources")
    residual = audio.astype(np.float32) - source.audio.astype(np.float32)
    return residual * np.float32(params["clip_guard_gain"])


def _draw_volume_curve(ctx: ClipContext, rng: np.random.Generator) -> dict[str, Any]:
    _audio(ctx)
    if not ctx.active:
        raise MissingInput("no active interval (ctx.active) to reshape")
    min_samples = max(2, math.ceil(MIN_VOLUME_INTERVAL_S * ctx.rate_hz))
    spans = [(a, b) for a, b in _spans(ctx.active, ctx.rate_hz, ctx.num_samples) if b - a >= min_samples]
    if not spans:
        raise MissingInput(f"no active interval of at least {MIN_VOLUME_INTERVAL_S} s inside the clip")
    start, end = spans[int(rng.integers(len(spans)))]
    shape = VOLUME_SHAPES[int(rng.integers(len(VOLUME_SHAPES)))]
    # log-uniform: a 0.5..2 gain range is symmetric in dB
    low_log2, high_log2 = math.log2(VOLUME_GAIN[0]), math.log2(VOLUME_GAIN[1])
    min_log2 = float(rng.uniform(low_log2, high_log2 - math.log2(VOLUME_MIN_RATIO)))
    max_log2 = float(rng.uniform(min_log2 + math.log2(VOLUME_MIN_RATIO), high_log2))
    return {"start": start, "end": end, "shape": shape, "gain_min": 2.0**min_log2, "gain_max": 2.0**max_log2}


def _apply_volume_curve(ctx: ClipContext, params: dict[str, Any]) -> np.ndarray:
    start, end = params["start"], params["end"]
    envelope = volume_envelope(params["shape"], end - start, params["gain_min"], params["gain_max"])
    return apply_envelope(_audio(ctx), start, envelope)


# ---------------------------------------------------------------------------------------------
# Audio temporal.


def _draw_audio_shift(ctx: ClipContext, rng: np.random.Generator) -> dict[str, Any]:
    audio = _audio(ctx)
    source = ctx.source_audio
    if source is None:
        raise MissingInput("no source-video audio (ctx.source_audio) to take another window from")
    if source.ndim != 2 or source.shape[0] != audio.shape[0]:
        raise ValueError(f"source audio has shape {source.shape}, the clip {audio.shape}")
    num_samples = ctx.num_samples
    clip_start = int(round(ctx.clip_offset_s * ctx.rate_hz))
    min_shift = max(math.ceil(SHIFT_MIN_S * ctx.rate_hz), math.ceil(SHIFT_MIN_FRACTION * num_samples))
    last = source.shape[1] - num_samples  # last window start that fits
    num_before = max(0, min(clip_start - min_shift, last) + 1)  # starts 0 .. clip_start - min_shift
    after = max(0, clip_start + min_shift)
    num_after = max(0, last - after + 1)  # starts after .. last
    if num_before + num_after == 0:
        raise MissingInput(f"source audio of {source.shape[1]} samples has no window {min_shift} samples away")
    k = int(rng.integers(num_before + num_after))
    offset = k if k < num_before else after + k - num_before
    return {"source_offset": offset, "shift_s": (offset - clip_start) / ctx.rate_hz}


def _apply_audio_shift(ctx: ClipContext, params: dict[str, Any]) -> np.ndarray:
    source, offset = ctx.source_audio, params["source_offset"]
    if source is None or not 0 <= offset <= source.shape[1] - ctx.num_samples:
        raise ValueError(f"source_offset {offset} does not fit the source audio")
    return source[:, offset : offset + ctx.num_samples].astype(np.float32, copy=True)


def _draw_insert_silence(ctx: ClipContext, rng: np.random.Generator) -> dict[str, Any]:
    _audio(ctx)
    _require_duration(ctx)
    length = _draw_length(rng, ctx.num_samples, SILENCE_SPAN)
    position, anchor = _draw_start(ctx, rng, ctx.num_samples - length - 1)  # leave sound after the gap
    return {"position": position, "length": length, "anchor": anchor}


def _apply_insert_silence(ctx: ClipContext, params: dict[str, Any]) -> np.ndarray:
    return insert_zeros(_audio(ctx), params["position"], params["length"])


def _draw_repeat_segment(ctx: ClipContext, rng: np.random.Generator) -> dict[str, Any]:
    _audio(ctx)
    _require_duration(ctx)
    length = _draw_length(rng, ctx.num_samples, REPEAT_SPAN)
    start, anchor = _draw_start(ctx, rng, ctx.num_samples - 2 * length)  # both copies inside the clip
    return {"start": start, "length": length, "anchor": anchor}


def _apply_repeat_segment(ctx: ClipContext, params: dict[str, Any]) -> np.ndarray:
    return repeat_span(_audio(ctx), params["start"], params["length"])


def _draw_audio_speed(ctx: ClipContext, rng: np.random.Generator) -> dict[str, Any]:
    _audio(ctx)
    _require_duration(ctx)
    factor = SPEED_FACTORS[int(rng.integers(len(SPEED_FACTORS)))]
    length = _draw_length(rng, ctx.num_samples, SPEED_SPAN) // 2 * 2  # even: 2x halves it exactly
    if length < 2:
        raise MissingInput("clip too short for a speed change")
    start, anchor = _draw_start(ctx, rng, ctx.num_samples - length)
    return {"factor": float(factor), "start": start, "length": length, "anchor": anchor}


def _apply_audio_speed(ctx: ClipContext, params: dict[str, Any]) -> np.ndarray:
    """0.5x pushes the rest later and cuts the end; 2x pulls it earlier and pads the end with zeros."""
    timed = speed_change_unfixed(_audio(ctx), params["start"], params["length"], params["factor"])
    return fit_length(timed, ctx.num_samples)


OPS: tuple[OpSpec, ...] = (
    OpSpec("add_source", AUDIO_SPATIAL, _draw_add_source, _apply_add_source),
    OpSpec("remove_source", AUDIO_SPATIAL, _draw_remove_source, _apply_remove_source),
    OpSpec("volume_curve", AUDIO_SPATIAL, _draw_volume_curve, _apply_volume_curve),
    OpSpec("audio_shift", AUDIO_TEMPORAL, _draw_audio_shift, _apply_audio_shift),
    OpSpec("insert_silence", AUDIO_TEMPORAL, _draw_insert_silence, _apply_insert_silence),
    OpSpec("repeat_segment", AUDIO_TEMPORAL, _draw_repeat_segment, _apply_repeat_segment),
    OpSpec("audio_speed", AUDIO_TEMPORAL, _draw_audio_speed, _apply_audio_speed),
)
