"""audio_ops: each operation's effect measured on synthetic waveforms with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from augment.audio_ops import (
    OPS,
    fit_length,
    speed_change_unfixed,
    volume_envelope,
)
from augment.context import AUDIO_SPATIAL, AUDIO_TEMPORAL, ClipContext, Interval, MissingInput, Source

RATE_HZ = 8000
NUM_SAMPLES = 8000  # a 1 s stereo clip
NUM_CHANNELS = 2
CLIP_OFFSET_S = 2.0  # where the clip sits in its 5 s source audio
OPS_BY_NAME = {op.name: op for op in OPS}
SEEDS = range(12)


def noise(num_samples: int = NUM_SAMPLES, amplitude: float = 0.3, seed: int = 0, channels: int = NUM_CHANNELS):
    """Random samples with |x| in [amplitude / 5, amplitude]: never zero, every sample distinct."""
    rng = np.random.default_rng(seed)
    magnitude = rng.uniform(amplitude / 5, amplitude, size=(channels, num_samples))
    return (magnitude * rng.choice([-1.0, 1.0], size=magnitude.shape)).astype(np.float32)


def tone(freq_hz: float, amplitude: float, num_samples: int = NUM_SAMPLES) -> np.ndarray:
    t = np.arange(num_samples) / RATE_HZ
    return np.repeat((amplitude * np.sin(2 * np.pi * freq_hz * t))[None], NUM_CHANNELS, axis=0).astype(np.float32)


def frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False  # an in-place edit of an input raises
    return array


def make_ctx(audio: np.ndarray | None = None, **overrides) -> ClipContext:
    """A clip with everything every operation may use: active 0.2-0.8 s, two separated sources,
    the 5 s source audio and one donor."""
    audio = noise(seed=1) if audio is None else audio
    half = (audio / 2).astype(np.float32)
    fields = dict(
        active=[Interval(0.2, 0.8)],
        sources=[
            Source("a", frozen(half.copy()), [Interval(0.0, 1.0)]),
            Source("b", frozen(half), [Interval(0.2, 0.5)]),
        ],
        source_audio=frozen(noise(5 * RATE_HZ, seed=2)),
        clip_offset_s=CLIP_OFFSET_S,
        donor_sources=[Source("dog", frozen(noise(2 * RATE_HZ, amplitude=0.2, seed=3)), [Interval(0.5, 1.5)])],
    )
    fields.update(overrides)
    frames = frozen(np.zeros((24, 4, 4, 3), dtype=np.uint8))
    return ClipContext("clip0", frames, 24.0, frozen(audio), RATE_HZ, **fields)


def draw(name: str, ctx: ClipContext, seed: int = 0) -> dict:
    return OPS_BY_NAME[name].draw(ctx, np.random.default_rng(seed))


def run(name: str, ctx: ClipContext, seed: int = 0) -> tuple[dict, np.ndarray]:
    params = draw(name, ctx, seed)
    return params, OPS_BY_NAME[name].apply(ctx, params)


def band_energy_db(audio: np.ndarray, low_hz: float, high_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(audio.shape[-1], 1 / RATE_HZ)
    return float(10 * np.log10(spectrum[:, (freqs >= low_hz) & (freqs < high_hz)].sum() + 1e-30))


# --- contract, every operation ---


def test_ops_registered_once_per_name_in_audio_families():
    assert len(OPS_BY_NAME) == len(OPS) == 7
    spatial = {op.name for op in OPS if op.family == AUDIO_SPATIAL}
    temporal = {op.name for op in OPS if op.family == AUDIO_TEMPORAL}
    assert spatial == {"add_source", "remove_source", "volume_curve"}
    assert temporal == {"audio_shift", "insert_silence", "repeat_segment", "audio_speed"}


@pytest.mark.parametrize("name", OPS_BY_NAME)
def test_params_are_plain_json(name):
    for seed in range(4):
        params = draw(name, make_ctx(), seed)
        assert json.loads(json.dumps(params)) == params
        assert all(type(v) in (int, float, str, bool) for v in params.values()), params


@pytest.mark.parametrize("name", OPS_BY_NAME)
def test_same_seed_same_params_and_bytes_through_json(name):
    ctx = make_ctx()
    params_a, out_a = run(name, ctx, seed=7)
    params_b = json.loads(json.dumps(draw(name, ctx, seed=7)))  # as recorded in the manifest
    out_b = OPS_BY_NAME[name].apply(ctx, params_b)
    assert params_a == params_b
    assert out_a.tobytes() == out_b.tobytes()


@pytest.mark.parametrize("name", OPS_BY_NAME)
def test_different_seeds_different_params(name):
    ctx = make_ctx()
    drawn = {json.dumps(draw(name, ctx, seed), sort_keys=True) for seed in SEEDS}
    # remove_source's only choice is which of the clip's two sources goes
    assert len(drawn) >= (2 if name == "remove_source" else len(SEEDS) // 2)


@pytest.mark.parametrize("name", OPS_BY_NAME)
def test_shape_dtype_kept_and_input_untouched(name):
    ctx = make_ctx()
    before = ctx.audio.copy()
    for seed in range(3):
        params, out = run(name, ctx, seed)
        assert out.shape == (NUM_CHANNELS, NUM_SAMPLES) and out.dtype == np.float32
        assert not np.shares_memory(out, ctx.audio)
        assert not np.array_equal(out, ctx.audio), params  # it is a negative: something changed
    assert np.array_equal(ctx.audio, before)


# --- add_source ---


def test_add_source_difference_is_the_gained_offset_donor():
    ctx = make_ctx(noise(amplitude=0.1, seed=1))
    donor = ctx.donor_sources[0].audio
    for seed in range(5):
        params, out = run("add_source", ctx, seed)
        assert params["clip_guard_gain"] == 1.0
        start, offset, length = params["donor_start"], params["offset"], params["length"]
        expected = np.zeros_like(ctx.audio)
        taken = donor[:, start : start + length]
        expected[:, offset : offset + taken.shape[1]] = params["gain"] * taken
        np.testing.assert_allclose(out - ctx.audio, expected, atol=1e-6)


def test_add_source_level_relative_to_clip_and_ranges():
    ctx = make_ctx()
    clip_rms = np.sqrt(np.mean(ctx.audio.astype(np.float64) ** 2))
    for seed in SEEDS:
        params, out = run("add_source", ctx, seed)
        assert -6.0 <= params["level_db"] <= 6.0
        assert NUM_SAMPLES / 3 <= params["length"] <= NUM_SAMPLES
        assert 0 <= params["offset"] <= NUM_SAMPLES - params["length"]
        assert 0.5 * RATE_HZ <= params["donor_start"] < 1.5 * RATE_HZ  # starts inside the donor's activity
        added = (out - ctx.audio)[:, params["offset"] : params["offset"] + params["length"]]
        measured_db = 20 * np.log10(np.sqrt(np.mean(added.astype(np.float64) ** 2)) / clip_rms)
        assert measured_db == pytest.approx(params["level_db"], abs=0.05)


def test_add_source_short_donor_is_zero_padded_not_looped():
    short = frozen(noise(int(0.3 * RATE_HZ), amplitude=0.2, seed=4))
    ctx = make_ctx(noise(amplitude=0.1, seed=1), donor_sources=[Source("bark", short, [Interval(0.0, 0.3)])])
    params, out = run("add_source", ctx, seed=0)
    assert params["length"] > short.shape[1] - params["donor_start"]  # the segment runs past the donor
    diff = out - ctx.audio
    end = params["offset"] + short.shape[1] - params["donor_start"]
    assert np.abs(diff[:, :end]).max() > 0
    assert np.all(diff[:, end:] == 0)


def test_add_source_mono_donor_reaches_every_channel():
    mono = frozen(noise(RATE_HZ, amplitude=0.2, seed=5, channels=1))
    ctx = make_ctx(noise(amplitude=0.1, seed=1), donor_sources=[Source("m", mono, [Interval(0.0, 1.0)])])
    _, out = run("add_source", ctx)
    diff = out - ctx.audio
    np.testing.assert_allclose(diff[0], diff[1], atol=1e-6)
    assert np.abs(diff).max() > 0


def test_add_source_guard_scales_down_only_when_the_mix_clips():
    loud = frozen(np.full((NUM_CHANNELS, NUM_SAMPLES), 0.9, dtype=np.float32))
    donor = frozen(np.full((NUM_CHANNELS, NUM_SAMPLES), 0.9, dtype=np.float32))
    ctx = make_ctx(loud, donor_sources=[Source("hum", donor, [Interval(0.0, 1.0)])])
    params, out = run("add_source", ctx)
    assert params["clip_guard_gain"] < 1.0
    assert np.abs(out).max() == pytest.approx(1.0, abs=1e-6)
    mixed = loud.copy()
    mixed[:, params["offset"] : params["offset"] + params["length"]] += params["gain"] * 0.9
    np.testing.assert_allclose(out, mixed * params["clip_guard_gain"], atol=1e-6)


@pytest.mark.parametrize(
    "donors",
    [None, [], [Source("mute", np.zeros((2, RATE_HZ), np.float32), [])]],
    ids=["none", "empty", "no_activity"],
)
def test_add_source_missing_donor(donors):
    with pytest.raises(MissingInput):
        draw("add_source", make_ctx(donor_sources=donors))


# --- remove_source ---


def test_remove_source_drops_its_band_and_keeps_the_other():
    low, high = tone(200.0, 0.3), tone(2000.0, 0.3)
    mix = (low + high).astype(np.float32)
    sources = [Source("low", frozen(low), [Interval(0.0, 1.0)]), Source("high", frozen(high), [Interval(0.0, 1.0)])]
    ctx = make_ctx(mix, sources=sources)
    bands = {"low": (100.0, 400.0), "high": (1500.0, 2500.0)}
    removed_seen = set()
    for seed in SEEDS:
        params, out = run("remove_source", ctx, seed)
        removed = params["source_name"]
        kept = "low" if removed == "high" else "high"
        removed_seen.add(removed)
        assert band_energy_db(mix, *bands[removed]) - band_energy_db(out, *bands[removed]) > 20.0
        assert abs(band_energy_db(mix, *bands[kept]) - band_energy_db(out, *bands[kept])) < 1.0
    assert removed_seen == {"low", "high"}


def test_remove_source_picks_only_sounding_sources():
    low, high = tone(200.0, 0.3), tone(2000.0, 0.3)
    sources = [Source("low", frozen(low), []), Source("high", frozen(high), [Interval(0.0, 1.0)])]
    ctx = make_ctx((low + high).astype(np.float32), sources=sources)
    assert {draw("remove_source", ctx, seed)["source_index"] for seed in SEEDS} == {1}


def test_remove_source_missing_inputs_and_bad_shape():
    audio = noise(seed=1)
    whole = [Source("all", frozen(audio.copy()), [Interval(0.0, 1.0)])]  # removal would leave silence
    for sources in (None, [], whole):
        with pytest.raises(MissingInput):
            draw("remove_source", make_ctx(audio, sources=sources))
    with pytest.raises(ValueError):
        draw("remove_source", make_ctx(audio, sources=[Source("x", noise(100, seed=2), [Interval(0.0, 1.0)])]))


# --- volume_curve ---


def expected_envelope(shape: str, n: int, low: float, high: float) -> np.ndarray:
    u = np.arange(n) / (n - 1)
    curve = {
        "sine": np.sin(np.pi * u),
        "cosine": (1 + np.cos(2 * np.pi * u)) / 2,
        "rising": u,
        "falling": 1 - u,
    }[shape]
    return low + (high - low) * curve


def test_volume_curve_ratio_is_the_envelope_inside_and_one_outside():
    square = np.where(np.arange(NUM_SAMPLES) % 2 == 0, 0.25, -0.25)
    audio = np.repeat(square[None], NUM_CHANNELS, axis=0).astype(np.float32)
    ctx = make_ctx(audio, active=[Interval(0.2, 0.8), Interval(0.85, 0.95)])
    shapes_seen = set()
    for seed in range(24):
        params, out = run("volume_curve", ctx, seed)
        start, end = params["start"], params["end"]
        assert (start, end) in {(1600, 6400), (6800, 7600)}
        assert 0.5 <= params["gain_min"] and params["gain_max"] <= 2.0
        assert params["gain_max"] / params["gain_min"] >= 2.0 - 1e-9
        ratio = out.astype(np.float64) / audio
        expected = expected_envelope(params["shape"], end - start, params["gain_min"], params["gain_max"])
        np.testing.assert_allclose(
            ratio[:, start:end], np.broadcast_to(expected, (NUM_CHANNELS, end - start)), rtol=1e-6
        )
        assert np.all(ratio[:, :start] == 1.0) and np.all(ratio[:, end:] == 1.0)
        shapes_seen.add(params["shape"])
    assert shapes_seen == {"sine", "cosine", "rising", "falling"}


def test_volume_envelope_extremes_where_the_shape_says():
    n = 1001
    assert volume_envelope("sine", n, 0.5, 2.0)[[0, n // 2, -1]].tolist() == pytest.approx([0.5, 2.0, 0.5])
    assert volume_envelope("cosine", n, 0.5, 2.0)[[0, n // 2, -1]].tolist() == pytest.approx([2.0, 0.5, 2.0])
    assert volume_envelope("rising", n, 0.5, 2.0)[[0, -1]].tolist() == pytest.approx([0.5, 2.0])
    assert volume_envelope("falling", n, 0.5, 2.0)[[0, -1]].tolist() == pytest.approx([2.0, 0.5])
    with pytest.raises(ValueError):
        volume_envelope("square", n, 0.5, 2.0)


def test_volume_curve_boost_stays_within_full_scale():
    loud = np.full((NUM_CHANNELS, NUM_SAMPLES), 0.9, dtype=np.float32)
    for seed in range(6):
        _, out = run("volume_curve", make_ctx(loud), seed)
        assert np.abs(out).max() <= 1.0


@pytest.mark.parametrize("active", [None, [], [Interval(0.1, 0.15)], [Interval(1.5, 2.0)]])
def test_volume_curve_needs_an_active_interval(active):
    with pytest.raises(MissingInput):
        draw("volume_curve", make_ctx(active=active))


# --- audio_shift ---


def test_audio_shift_is_another_window_of_the_source():
    ctx = make_ctx()
    clip_start = int(CLIP_OFFSET_S * RATE_HZ)
    min_shift = 0.5 * RATE_HZ  # max(0.5 s, 10% of a 1 s clip)
    sides = set()
    for seed in SEEDS:
        params, out = run("audio_shift", ctx, seed)
        offset = params["source_offset"]
        assert abs(offset - clip_start) >= min_shift
        assert params["shift_s"] == pytest.approx((offset - clip_start) / RATE_HZ)
        assert np.array_equal(out, ctx.source_audio[:, offset : offset + NUM_SAMPLES])
        sides.add(offset < clip_start)
    assert sides == {True, False}


def test_audio_shift_missing_or_too_short_source():
    with pytest.raises(MissingInput):
        draw("audio_shift", make_ctx(source_audio=None))
    # 1.4 s of source around a 1 s clip at 0.2 s: every other window is < 0.5 s away
    with pytest.raises(MissingInput):
        draw("audio_shift", make_ctx(source_audio=noise(int(1.4 * RATE_HZ)), clip_offset_s=0.2))
    with pytest.raises(MissingInput):
        draw("audio_shift", make_ctx(source_audio=noise(NUM_SAMPLES // 2), clip_offset_s=0.0))


# --- insert_silence ---


def test_insert_silence_inserts_exactly_the_zeros_and_shifts_the_rest():
    ctx = make_ctx()
    assert np.all(ctx.audio != 0)
    for seed in SEEDS:
        params, out = run("insert_silence", ctx, seed)
        position, length = params["position"], params["length"]
        assert NUM_SAMPLES / 5 <= length <= NUM_SAMPLES / 2
        assert params["anchor"] == "active" and 1600 <= position < 6400
        zero_columns = np.flatnonzero(np.all(out == 0, axis=0))
        assert zero_columns.tolist() == list(range(position, position + length))
        assert np.array_equal(out[:, :position], ctx.audio[:, :position])
        assert np.array_equal(out[:, position + length :], ctx.audio[:, position : NUM_SAMPLES - length])


def test_insert_silence_without_active_intervals_goes_anywhere():
    params = draw("insert_silence", make_ctx(active=None))
    assert params["anchor"] == "anywhere"
    assert 0 <= params["position"] < NUM_SAMPLES - params["length"]


# --- repeat_segment ---


def test_repeat_segment_plays_the_segment_twice_back_to_back():
    ctx = make_ctx()
    for seed in SEEDS:
        params, out = run("repeat_segment", ctx, seed)
        start, length = params["start"], params["length"]
        assert NUM_SAMPLES / 5 <= length <= NUM_SAMPLES / 3
        assert start + 2 * length <= NUM_SAMPLES
        segment = ctx.audio[:, start : start + length]
        assert np.array_equal(out[:, start : start + length], segment)
        assert np.array_equal(out[:, start + length : start + 2 * length], segment)
        assert np.array_equal(out[:, :start], ctx.audio[:, :start])
        assert np.array_equal(out[:, start + 2 * length :], ctx.audio[:, start + length : NUM_SAMPLES - length])


# --- audio_speed ---


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_speed_change_scales_the_interval_duration_by_the_factor(factor):
    audio = noise(seed=1)
    start, length = 1000, 2000
    timed = speed_change_unfixed(audio, start, length, factor)
    new_length = int(length / factor)
    assert timed.shape == (NUM_CHANNELS, NUM_SAMPLES - length + new_length)
    assert np.array_equal(timed[:, :start], audio[:, :start])
    assert np.array_equal(timed[:, start + new_length :], audio[:, start + length :])
    fixed = fit_length(timed, NUM_SAMPLES)
    assert fixed.shape == (NUM_CHANNELS, NUM_SAMPLES)
    if factor == 2.0:  # the end is padded with the samples the interval gave up
        assert np.all(fixed[:, -length // 2 :] == 0)


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_speed_change_moves_a_tone_by_the_factor(factor):
    audio = tone(400.0, 0.5)
    start, length = 800, 4000
    timed = speed_change_unfixed(audio, start, length, factor)
    part = timed[:1, start : start + int(length / factor)]
    freqs = np.fft.rfftfreq(part.shape[-1], 1 / RATE_HZ)
    assert freqs[np.argmax(np.abs(np.fft.rfft(part[0])))] == pytest.approx(400.0 * factor, abs=5.0)


def test_speed_change_rejects_other_factors_and_odd_lengths():
    with pytest.raises(ValueError):
        speed_change_unfixed(noise(), 0, 100, 1.5)
    with pytest.raises(ValueError):
        speed_change_unfixed(noise(), 0, 101, 2.0)


def test_audio_speed_op_draws_both_factors_and_keeps_length():
    ctx = make_ctx()
    factors = set()
    for seed in SEEDS:
        params, out = run("audio_speed", ctx, seed)
        assert params["factor"] in (0.5, 2.0) and params["length"] % 2 == 0
        assert NUM_SAMPLES / 5 - 1 <= params["length"] <= NUM_SAMPLES / 2
        assert params["start"] + params["length"] <= NUM_SAMPLES
        expected = speed_change_unfixed(ctx.audio, params["start"], params["length"], params["factor"])
        assert np.array_equal(out, fit_length(expected, NUM_SAMPLES))
        factors.add(params["factor"])
    assert factors == {0.5, 2.0}


@pytest.mark.parametrize("name", ["insert_silence", "repeat_segment", "audio_speed"])
def test_temporal_ops_refuse_a_too_short_clip(name):
    short = noise(int(0.2 * RATE_HZ), seed=1)
    with pytest.raises(MissingInput):
        draw(name, make_ctx(short, sources=None))
