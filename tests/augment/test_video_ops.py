"""video_ops: each operation's effect measured on synthetic clips with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from augment.context import FAMILIES, ClipContext, MissingInput, Trajectory
from augment.video_ops import (
    OPS,
    apply_freeze_frame,
    apply_grid_mask,
    apply_speed_change,
    apply_temporal_shift,
    apply_trajectory_overlay,
    draw_freeze_frame,
    draw_grid_mask,
    draw_speed_change,
    draw_temporal_shift,
    draw_trajectory_overlay,
    fit_index_map,
    grid_geometry,
    speed_change_index_map,
    trajectory_frame_map,
)

FPS = 24.0
NUM_FRAMES, HEIGHT, WIDTH = 40, 50, 64  # 50 // 6 = 8 px cells: 7 rows (last one 2 px) x 8 columns
OPS_BY_NAME = {op.name: op for op in OPS}


def noise_frames(num_frames: int = NUM_FRAMES, height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    """Random pixels in 1..254: no cell is uniformly one colour, no frame equals another."""
    return np.random.default_rng(seed).integers(1, 255, size=(num_frames, height, width, 3), dtype=np.uint8)


def moving_object(num_frames: int = 10, size: int = 9, step_px: int = 2, fps: float = FPS) -> Trajectory:
    """A disc whose colour changes per frame, moving right by ``step_px`` per frame."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size // 2) ** 2 + (xx - size // 2) ** 2 <= (size // 2) ** 2
    pixels = np.zeros((num_frames, size, size, 3), dtype=np.uint8)
    pixels[..., 0] = 200 + np.arange(num_frames)[:, None, None]  # never the background's 100
    pixels[..., 2] = 30
    boxes = np.array([[20 + step_px * i, 5, 20 + step_px * i + size, 5 + size] for i in range(num_frames)])
    return Trajectory(pixels, np.repeat(disc[None], num_frames, axis=0), boxes, 3.0 + np.arange(num_frames) / fps)


def make_ctx(frames: np.ndarray | None = None, trajectories: list[Trajectory] | None = None) -> ClipContext:
    frames = noise_frames() if frames is None else frames
    frames.flags.writeable = False  # an in-place edit of the input raises
    num_samples = int(round(frames.shape[0] / FPS * 16000))
    audio = np.zeros((1, num_samples), dtype=np.float32)
    pool = [moving_object()] if trajectories is None else trajectories
    return ClipContext("clip0", frames, FPS, audio, 16000, trajectories=pool)


# --- contract, every operation ---


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_params_json_and_deterministic(op):
    ctx = make_ctx()
    params = op.draw(ctx, np.random.default_rng(7))
    assert op.family in FAMILIES
    assert json.loads(json.dumps(params)) == params  # plain ints/floats/strs/lists only
    assert op.draw(ctx, np.random.default_rng(7)) == params
    assert op.apply(ctx, params).tobytes() == op.apply(ctx, params).tobytes()
    assert op.draw(ctx, np.random.default_rng(8)) != params


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_shape_dtype_kept_input_untouched(op):
    ctx = make_ctx()
    before = ctx.frames.copy()
    out = op.apply(ctx, op.draw(ctx, np.random.default_rng(3)))
    assert out.shape == ctx.frames.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, ctx.frames)
    assert np.array_equal(ctx.frames, before)
    assert not np.array_equal(out, before)


@pytest.mark.parametrize("name", ["temporal_shift", "freeze_frame", "speed_change"])
def test_temporal_ops_need_enough_frames(name):
    with pytest.raises(MissingInput):
        OPS_BY_NAME[name].draw(make_ctx(noise_frames(num_frames=1)), np.random.default_rng(0))
    if name != "temporal_shift":
        with pytest.raises(MissingInput):
            OPS_BY_NAME[name].draw(make_ctx(noise_frames(num_frames=3)), np.random.default_rng(0))


# --- grid_mask ---


def masked_cells(frames: np.ndarray, out: np.ndarray, fill_rgb: list[int]) -> tuple[int, np.ndarray]:
    """Count cells filled with ``fill_rgb`` in every frame; return them and the pixel mask."""
    cell_px, num_rows, num_cols = grid_geometry(*frames.shape[1:3])
    pixel_mask = np.zeros(frames.shape[1:3], dtype=bool)
    num_masked = 0
    for row in range(num_rows):
        for col in range(num_cols):
            cell = out[:, row * cell_px : (row + 1) * cell_px, col * cell_px : (col + 1) * cell_px]
            if np.all(cell == np.asarray(fill_rgb, dtype=np.uint8)):
                num_masked += 1
                pixel_mask[row * cell_px : (row + 1) * cell_px, col * cell_px : (col + 1) * cell_px] = True
    return num_masked, pixel_mask


@pytest.mark.parametrize("seed", range(6))
def test_grid_mask_fraction_exact_and_rest_untouched(seed):
    ctx = make_ctx()
    params = draw_grid_mask(ctx, np.random.default_rng(seed))
    out = apply_grid_mask(ctx, params)
    num_masked, pixel_mask = masked_cells(ctx.frames, out, params["fill_rgb"])
    num_cells = 7 * 8  # partial bottom row counts
    assert 0.2 <= params["ratio"] <= 0.8
    assert num_masked / num_cells == round(params["ratio"] * num_cells) / num_cells
    assert np.array_equal(out[:, ~pixel_mask], ctx.frames[:, ~pixel_mask])


def test_grid_mask_fills_black_or_clip_mean():
    ctx = make_ctx()
    fills = {}
    for seed in range(20):
        params = draw_grid_mask(ctx, np.random.default_rng(seed))
        fills[params["fill"]] = params["fill_rgb"]
    assert fills["black"] == [0, 0, 0]
    assert fills["clip_mean"] == [int(round(v)) for v in ctx.frames.reshape(-1, 3).mean(axis=0)]


def test_grid_mask_needs_six_pixels():
    with pytest.raises(MissingInput):
        draw_grid_mask(make_ctx(noise_frames(height=5)), np.random.default_rng(0))


# --- trajectory_overlay ---


def test_overlay_changes_exactly_the_mask_footprint():
    frames = np.full((NUM_FRAMES, HEIGHT, WIDTH, 3), 100, dtype=np.uint8)
    trajectory = moving_object(num_frames=10, size=9, step_px=2)
    ctx = make_ctx(frames, [trajectory])
    params = {"trajectory_index": 0, "start_frame": 12, "top_px": 30, "left_px": 4, "scale": 1.0}
    out = apply_trajectory_overlay(ctx, params)
    changed = np.any(out != frames, axis=-1)
    for t in range(NUM_FRAMES):
        footprint = np.zeros((HEIGHT, WIDTH), dtype=bool)
        if 12 <= t < 22:
            k = t - 12
            footprint[30:39, 4 + 2 * k : 13 + 2 * k] = trajectory.masks[k]
            assert np.array_equal(out[t][footprint], trajectory.frames[k][trajectory.masks[k]])
        assert np.array_equal(changed[t], footprint), t


def test_overlay_cuts_what_leaves_the_frame_and_shrinks_big_objects():
    frames = np.full((NUM_FRAMES, HEIGHT, WIDTH, 3), 100, dtype=np.uint8)
    ctx = make_ctx(frames, [moving_object(num_frames=10, size=9, step_px=4)])
    out = apply_trajectory_overlay(
        ctx, {"trajectory_index": 0, "start_frame": 0, "top_px": 0, "left_px": 40, "scale": 1.0}
    )
    changed = np.any(out[5] != 100, axis=-1)  # frame 5: the crop spans columns 60..68 of a 64-wide frame
    assert changed[:, 60:].any() and not changed[:, :60].any()
    big = moving_object(num_frames=4, size=80)
    ctx = make_ctx(frames, [big])
    params = draw_trajectory_overlay(ctx, np.random.default_rng(0))
    assert params["scale"] == pytest.approx(0.5 * HEIGHT / 80)
    first = apply_trajectory_overlay(ctx, params)[params["start_frame"]]
    rows, cols = np.nonzero(np.any(first != 100, axis=-1))
    assert rows.max() - rows.min() < HEIGHT / 2 and cols.max() - cols.min() < HEIGHT / 2


def test_trajectory_keeps_its_own_speed():
    times_s = np.arange(5) / 6.0  # SA-V's 6 fps, pasted into a 24 fps clip
    frame_map = trajectory_frame_map(times_s, 24.0)
    assert len(frame_map) == 4 * 4 + 1
    assert np.all(np.diff(frame_map) >= 0)
    assert np.all(np.abs(frame_map / 6.0 - np.arange(len(frame_map)) / 24.0) <= 1 / 12 + 1e-9)
    assert np.array_equal(trajectory_frame_map(np.arange(5) / 24.0, 24.0), np.arange(5))


def test_overlay_draw_fits_the_clip():
    ctx = make_ctx()
    for seed in range(10):
        params = draw_trajectory_overlay(ctx, np.random.default_rng(seed))
        assert 0 <= params["start_frame"] <= NUM_FRAMES - 10  # the whole 10-frame trajectory fits
        assert 0 <= params["top_px"] <= HEIGHT - 9 and 0 <= params["left_px"] <= WIDTH - 9


@pytest.mark.parametrize("pool", [None, []], ids=["none", "empty"])
def test_overlay_needs_a_trajectory(pool):
    ctx = make_ctx()
    ctx.trajectories = pool
    with pytest.raises(MissingInput):
        draw_trajectory_overlay(ctx, np.random.default_rng(0))


def test_overlay_skips_empty_masks():
    empty = moving_object()
    empty.masks[:] = False
    with pytest.raises(MissingInput):
        draw_trajectory_overlay(make_ctx(trajectories=[empty]), np.random.default_rng(0))
    params = draw_trajectory_overlay(make_ctx(trajectories=[empty, moving_object()]), np.random.default_rng(0))
    assert params["trajectory_index"] == 1


# --- temporal_shift ---


@pytest.mark.parametrize("seed", range(5))
def test_temporal_shift_recovered_by_cross_correlation(seed):
    levels = np.random.default_rng(100).integers(0, 256, NUM_FRAMES).astype(np.uint8)  # a distinctive pattern
    frames = np.broadcast_to(levels[:, None, None, None], (NUM_FRAMES, 8, 8, 3)).copy()
    ctx = make_ctx(frames)
    params = draw_temporal_shift(ctx, np.random.default_rng(seed))
    shift = params["shift_frames"]
    assert 4 <= abs(shift) <= 20  # ceil(40 / 10) .. 40 // 2
    signature = ctx.frames.mean(axis=(1, 2, 3)) - ctx.frames.mean()
    shifted = apply_temporal_shift(ctx, params).mean(axis=(1, 2, 3)) - ctx.frames.mean()
    correlation = [np.dot(np.roll(signature, lag), shifted) for lag in range(NUM_FRAMES)]
    assert int(np.argmax(correlation)) == shift % NUM_FRAMES


def test_temporal_shift_draws_both_directions():
    signs = {np.sign(draw_temporal_shift(make_ctx(), np.random.default_rng(s))["shift_frames"]) for s in range(20)}
    assert signs == {-1, 1}


# --- freeze_frame ---


@pytest.mark.parametrize("seed", range(5))
def test_freeze_frame_holds_exactly_the_stretch(seed):
    ctx = make_ctx()
    params = draw_freeze_frame(ctx, np.random.default_rng(seed))
    start, length = params["start_frame"], params["num_frames"]
    assert 8 <= length <= 20  # ceil(40 / 5) .. 40 // 2
    out = apply_freeze_frame(ctx, params)
    equals_frozen = np.all(out == ctx.frames[start], axis=(1, 2, 3))
    assert np.array_equal(np.nonzero(equals_frozen)[0], np.arange(start, start + length))
    outside = np.ones(NUM_FRAMES, dtype=bool)
    outside[start : start + length] = False
    assert np.array_equal(out[outside], ctx.frames[outside])


# --- speed_change ---


@pytest.mark.parametrize("factor", [0.5, 2.0])
@pytest.mark.parametrize("interval", [(5, 17), (3, 10)], ids=["even", "odd"])
def test_speed_change_scales_the_interval_duration(factor, interval):
    start, end = interval
    index_map = speed_change_index_map(NUM_FRAMES, start, end, factor)
    inside = index_map[start : len(index_map) - (NUM_FRAMES - end)]
    assert len(inside) == int(np.ceil((end - start) / factor))  # exactly (end - start) / factor when it divides
    assert inside[0] == start and inside[-1] <= end - 1
    assert np.array_equal(index_map[:start], np.arange(start))
    assert np.array_equal(index_map[start + len(inside) :], np.arange(end, NUM_FRAMES))
    assert len(fit_index_map(index_map, NUM_FRAMES)) == NUM_FRAMES


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_speed_change_measured_playback_speed(factor):
    """Frame t is painted with value t; reading values back gives the played frame sequence."""
    frames = np.broadcast_to(np.arange(NUM_FRAMES, dtype=np.uint8)[:, None, None, None], (NUM_FRAMES, 4, 4, 3)).copy()
    ctx = make_ctx(frames)
    out = apply_speed_change(ctx, {"start_frame": 10, "end_frame": 20, "factor": factor})
    assert out.shape == frames.shape
    played = out[:, 0, 0, 0].astype(int)
    num_inside = int(10 / factor)
    speed_inside = (played[10 + num_inside - 1] - played[10] + 1) / num_inside
    assert speed_inside == pytest.approx(factor, rel=0.1)
    assert np.array_equal(played[:10], np.arange(10))
    after = played[10 + num_inside :]
    if factor == 2.0:  # 5 frames saved: the rest comes earlier, then the last frame is held
        assert np.array_equal(after, np.r_[np.arange(20, NUM_FRAMES), np.full(5, NUM_FRAMES - 1)])
    else:  # 10 frames more: the rest comes later and the end is cut
        assert np.array_equal(after, np.arange(20, 30))


def test_speed_change_draw_in_range():
    for seed in range(20):
        params = draw_speed_change(make_ctx(), np.random.default_rng(seed))
        assert params["factor"] in (0.5, 2.0)
        assert 8 <= params["end_frame"] - params["start_frame"] <= 20
        assert 0 <= params["start_frame"] and params["end_frame"] <= NUM_FRAMES


def test_bad_params_are_user_mistakes():
    ctx = make_ctx()
    with pytest.raises(ValueError):
        apply_temporal_shift(ctx, {"shift_frames": 0})
    with pytest.raises(ValueError):
        apply_freeze_frame(ctx, {"start_frame": 35, "num_frames": 10})
    with pytest.raises(ValueError):
        apply_speed_change(ctx, {"start_frame": 20, "end_frame": 10, "factor": 2.0})
    with pytest.raises(ValueError):
        apply_grid_mask(ctx, {"cell_px": 8, "cells": [56], "fill_rgb": [0, 0, 0]})
