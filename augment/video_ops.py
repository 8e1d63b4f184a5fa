"""video_ops: hard negatives that change the frames and keep the audio (paper appendix C.2.4).

Every operation returns new ``uint8`` ``(T, H, W, 3)`` frames of the clip's length and leaves
``ctx.frames`` untouched; the audio stays the positive's, so the pair becomes asynchronous.

video_spatial (what is visible no longer matches what is heard):

* ``grid_mask``: cells of side ``min(H, W) // 6`` (partial cells at the right and bottom edges
  count); a ratio r ~ U(0.2, 0.8) of them, ``round(r * num_cells)``, is filled with one colour
  (black or the clip's mean colour) in every frame. The paper divides the *video* into grids,
  so one set of cells is masked for the whole clip.
* ``trajectory_overlay``: a moving object from another clip (``ctx.trajectories``) is pasted
  where its mask is set, from a drawn start frame, at a drawn position; it keeps its own motion
  (box displacements from its first frame) and its own timing (nearest trajectory frame in
  time at the clip's fps). Crops larger than half the frame are shrunk to fit in half of it.
  After the trajectory ends the frames are unchanged (no loop); parts leaving the frame are cut.

video_temporal (what is seen happens at the wrong time):

* ``temporal_shift``: circular shift by k frames, |k| ~ U{ceil(T/10) .. T//2}, sign drawn.
* ``freeze_frame``: the first frame of a stretch of L ~ U{ceil(T/5) .. T//2} frames is held
  for the whole stretch; the video then jumps back on its own timeline.
* ``speed_change`` (ours: the paper's audio speed change, applied to the video): the interval
  [a, b), L ~ U{ceil(T/5) .. T//2} frames, plays at 0.5x or 2x; the frames after it follow at
  normal speed. Length fix: at 0.5x the clip's end is cut; at 2x the last frame is held.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from augment.context import VIDEO_SPATIAL, VIDEO_TEMPORAL, ClipContext, MissingInput, OpSpec, Trajectory

GRID_CELLS_PER_SHORT_SIDE = 6  # cell side = min(H, W) // 6 (DESIGN.md section 4)
MASK_RATIO_RANGE = (0.2, 0.8)  # fraction of cells masked, uniform (paper C.2.4)
GRID_FILLS = ("black", "clip_mean")  # a mean-colour fill is a less trivial cue than black
MAX_OBJECT_FRACTION = 0.5  # a pasted object covers at most half the frame's height and width
SHIFT_DIVISORS = (10, 2)  # circular shift of T/10 .. T/2 frames (DESIGN.md section 4)
STRETCH_DIVISORS = (5, 2)  # frozen / re-timed stretch of T/5 .. T/2 frames (as audio silence S/5 .. S/2)
SPEED_FACTORS = (0.5, 2.0)  # playback speeds inside the interval (paper C.2.4, audio speed)


# --- shared helpers ---


def _checked_frames(ctx: ClipContext) -> np.ndarray:
    frames = ctx.frames
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"clip {ctx.clip_id}: frames must be uint8 (T>0, H, W, 3), got {frames.dtype} {frames.shape}")
    return frames


def frame_count_range(num_frames: int, divisors: tuple[int, int], min_count: int) -> tuple[int, int]:
    """Inclusive range ceil(T / d_lo) .. T // d_hi, at least ``min_count``; integer arithmetic
    so that T/10 with T=30 is 3, not 3.0000000000000004 rounded up to 4."""
    low = max(min_count, -(-num_frames // divisors[0]))
    return low, num_frames // divisors[1]


def _draw_stretch(ctx: ClipContext, rng: np.random.Generator, op_name: str) -> tuple[int, int]:
    """A stretch [start, start + length) of T/5 .. T/2 frames, at least 2 (one frame cannot
    be frozen or re-timed visibly)."""
    num_frames = _checked_frames(ctx).shape[0]
    low, high = frame_count_range(num_frames, STRETCH_DIVISORS, min_count=2)
    if high < low:
        raise MissingInput(f"{op_name}: clip {ctx.clip_id} has {num_frames} frames, needs at least 4")
    length = int(rng.integers(low, high + 1))
    start = int(rng.integers(0, num_frames - length + 1))
    return start, length


# --- video spatial: grid mask ---


def grid_geometry(height: int, width: int) -> tuple[int, int, int]:
    """(cell_px, num_rows, num_cols): square cells of side min(H, W) // 6; partial edge cells count."""
    cell_px = min(height, width) // GRID_CELLS_PER_SHORT_SIDE
    if cell_px == 0:
        raise MissingInput(f"grid_mask: a {height}x{width} frame is too small for {GRID_CELLS_PER_SHORT_SIDE} cells")
    return cell_px, -(-height // cell_px), -(-width // cell_px)


def grid_cell_mask(height: int, width: int, cell_px: int, cells: list[int]) -> np.ndarray:
    """bool (H, W): True inside the listed cells (row-major indices over the grid)."""
    num_cols = -(-width // cell_px)
    rows = np.arange(height)[:, None] // cell_px
    cols = np.arange(width)[None, :] // cell_px
    return np.isin(rows * num_cols + cols, np.asarray(cells, dtype=np.int64))


def draw_grid_mask(ctx: ClipContext, rng: np.random.Generator) -> dict[str, Any]:
    frames = _checked_frames(ctx)
    cell_px, num_rows, num_cols = grid_geometry(frames.shape[1], frames.shape[2])
    num_cells = num_rows * num_cols
    ratio = float(rng.uniform(*MASK_RATIO_RANGE))
    cells = sorted(int(c) for c in rng.choice(num_cells, size=round(ratio * num_cells), replace=False))
    fill = GRID_FILLS[int(rng.integers(len(GRID_FILLS)))]
    fill_rgb = [0, 0, 0] if fill == "black" else [int(round(v)) for v in frames.mean(axis=(0, 1, 2))]
    return {"cell_px": cell_px, "ratio": ratio, "cells": cells, "fill": fill, "fill_rgb": fill_rgb}


def apply_grid_mask(ctx: ClipContext, params: dict[str, Any]) -> np.ndarray:
    frames = _checked_frames(ctx)
    height, width = frames.shape[1:3]
    cell_px = int(params["cell_px"])
    num_cells = -(-height // cell_px) * -(-width // cell_px)
    if any(not 0 <= c < num_cells for c in params["cells"]):
        raise ValueError(f"grid_mask: cells must lie in [0, {num_cells}) for a {height}x{width} frame")
    mask = grid_cell_mask(height, width, cell_px, params["cells"])
    out = frames.copy()
    out[:, mask] = np.asarray(params["fill_rgb"], dtype=np.uint8)
    return out


# --- video spatial: trajectory overlay ---


def trajectory_frame_map(times_s: np.ndarray, fps: float) -> np.ndarray:
    """For each clip frame from the paste start, the trajectory frame nearest in time: the
    object keeps its own speed whatever the two frame rates (the paper resamples SA-V's 6 fps
    trajectories to 24 fps). Covers the trajectory's span, floor(span * fps) + 1 frames."""
    rel_s = np.asarray(times_s, dtype=np.float64) - float(times_s[0])
    if np.any(np.diff(rel_s) <= 0):
        raise ValueError("trajectory times_s must be strictly increasing")
    clip_s = np.arange(int(math.floor(rel_s[-1] * fps + 1e-6)) + 1) / fps
    if len(rel_s) == 1:
        return np.zeros(len(clip_s), dtype=np.int64)
    after = np.clip(np.searchsorted(rel_s, clip_s), 1, len(rel_s) - 1)
    take_before = clip_s - rel_s[after - 1] <= rel_s[after] - clip_s
    return np.where(take_before, after - 1, after).astype(np.int64)


def object_scale(crop_hw: tuple[int, int], frame_hw: tuple[int, int]) -> float:
    """Shrink factor so the object's crop fits in half the frame; 1.0 (no resampling) if it does."""
    return min(1.0, MAX_OBJECT_FRACTION * frame_hw[0] / crop_hw[0], MAX_OBJECT_FRACTION * frame_hw[1] / crop_hw[1])


def _scaled_size(crop_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(crop_hw[0] * scale)), max(1, round(crop_hw[1] * scale))


def paste_object(frame: np.ndarray, pixels: np.ndarray, mask: np.ndarray, top: int, left: int) -> None:
    """Copy ``pixels`` onto ``frame`` (in place) where ``mask`` is set, with the crop's corner at
    (top, left); binary masks make this alpha blending with alpha 1 inside, 0 outside. Parts of
    the crop outside the frame are dropped."""
    height, width = frame.shape[:2]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + mask.shape[0], height), min(left + mask.shape[1], width)
    if y1 <= y0 or x1 <= x0:
        return
    crop_rows, crop_cols = slice(y0 - top, y1 - top), slice(x0 - left, x1 - left)
    inside = mask[crop_rows, crop_cols]
    frame[y0:y1, x0:x1][inside] = pixels[crop_rows, crop_cols][inside]


def _usable_trajectories(ctx: ClipContext) -> list[int]:
    if not ctx.trajectories:
        raise MissingInput(f"trajectory_overlay: clip {ctx.clip_id} has no trajectory pool")
    usable = [i for i, t in enumerate(ctx.trajectories) if t.masks.size and bool(t.masks.any())]
    if not usable:
        raise MissingInput(f"trajectory_overlay: every trajectory offered to clip {ctx.clip_id} has empty masks")
    return usable


def draw_trajectory_overlay(ctx: ClipContext, rng: np.random.Generator) -> dict[str, Any]:
    frames = _checked_frames(ctx)
    usable = _usable_trajectories(ctx)
    index = usable[int(rng.integers(len(usable)))]
    trajectory = ctx.trajectories[index]
    num_covered = len(trajectory_frame_map(trajectory.times_s, ctx.fps))
    start = int(rng.integers(0, max(0, frames.shape[0] - num_covered) + 1))  # whole trajectory when it fits
    scale = object_scale(trajectory.masks.shape[1:3], frames.shape[1:3])
    crop_h, crop_w = _scaled_size(trajectory.masks.shape[1:3], scale)
    top = int(rng.integers(0, frames.shape[1] - crop_h + 1))
    left = int(rng.integers(0, frames.shape[2] - crop_w + 1))
    return {"trajectory_index": index, "start_frame": start, "top_px": top, "left_px": left, "scale": float(scale)}


def _scaled_object(trajectory: Trajectory, index: int, size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    pixels, mask = trajectory.frames[index], trajectory.masks[index].astype(bool)
    if size_hw == mask.shape:
        return pixels, mask
    dsize = (size_hw[1], size_hw[0])  # cv2 wants (width, height)
    pixels = cv2.resize(pixels, dsize, interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask.astype(np.uint8), dsize, interpolation=cv2.INTER_NEAREST).astype(bool)
    return pixels, mask


def apply_trajectory_overlay(ctx: ClipContext, params: dict[str, Any]) -> np.ndarray:
    frames = _checked_frames(ctx)
    if not ctx.trajectories or not 0 <= int(params["trajectory_index"]) < len(ctx.trajectories):
        raise ValueError("trajectory_overlay: trajectory_index does not name a trajectory of this context")
    trajectory = ctx.trajectories[int(params["trajectory_index"])]
    start, scale = int(params["start_frame"]), float(params["scale"])
    if not 0 <= start < frames.shape[0] or not 0 < scale <= 1:
        raise ValueError("trajectory_overlay: start_frame must lie in the clip and scale in (0, 1]")
    frame_map = trajectory_frame_map(trajectory.times_s, ctx.fps)[: frames.shape[0] - start]
    size_hw = _scaled_size(trajectory.masks.shape[1:3], scale)
    corner0 = trajectory.boxes[frame_map[0], :2]
    out = frames.copy()
    for offset, index in enumerate(frame_map):
        pixels, mask = _scaled_object(trajectory, int(index), size_hw)
        dx, dy = np.round(scale * (trajectory.boxes[index, :2] - corner0)).astype(int)
        paste_object(out[start + offset], pixels, mask, int(params["top_px"]) + dy, int(params["left_px"]) + dx)
    return out


# --- video temporal ---


def draw_temporal_shift(ctx: ClipContext, rng: np.random.Generator) -> dict[str, Any]:
    num_frames = _checked_frames(ctx).shape[0]
    low, high = frame_count_range(num_frames, SHIFT_DIVISORS, min_count=1)
    if high < low:
        raise MissingInput(f"temporal_shift: clip {ctx.clip_id} has {num_frames} frame(s), needs at least 2")
    magnitude = int(rng.integers(low, high + 1))
    sign = 1 if rng.random() < 0.5 else -1  # later or earlier: both break sync
    return {"shift_frames": sign * magnitude}


def apply_temporal_shift(ctx: ClipContext, params: dict[str, Any]) -> np.ndarray:
    """out[t] = frames[(t - k) mod T]: the video runs k frames late (early for k < 0), wrapping."""
    frames = _checked_frames(ctx)
    shift = int(params["shift_frames"])
    if not 0 < abs(shift) < frames.shape[0]:
        raise ValueError(f"temporal_shift: shift_frames must be non-zero and shorter than the clip, got {shift}")
    return np.roll(frames, shift, axis=0)


def draw_freeze_frame(ctx: ClipContext, rng: np.random.Generator) -> dict[str, Any]:
    start, length = _draw_stretch(ctx, rng, "freeze_frame")
    return {"start_frame": start, "num_frames": length}


def apply_freeze_frame(ctx: ClipContext, params: dict[str, Any]) -> np.ndarray:
    """Hold frames[start] over [start, start + num_frames): motion stops while the sound goes on."""
    frames = _checked_frames(ctx)
    start, length = int(params["start_frame"]), int(params["num_frames"])
    if start < 0 or length < 1 or start + length > frames.shape[0]:
        raise ValueError(f"freeze_frame: stretch [{start}, {start + length}) is outside the clip")
    out = frames.copy()
    out[start : start + length] = frames[start]
    return out


def speed_change_index_map(num_frames: int, start: int, end: int, factor: float) -> np.ndarray:
    """Source frame of each output frame *before* the length fix: identity before ``start``,
    [start, end) played at ``factor`` (source start + floor(j * factor), ceil(n / factor) frames:
    2x keeps every other frame, 0.5x shows each twice), then the frames from ``end`` on."""
    if not 0 <= start < end <= num_frames or factor <= 0:
        raise ValueError(f"speed_change: need 0 <= start < end <= {num_frames} and factor > 0")
    num_inside = math.ceil((end - start) / factor)
    inside = start + np.floor(np.arange(num_inside) * factor).astype(np.int64)
    return np.concatenate([np.arange(start), inside, np.arange(end, num_frames)]).astype(np.int64)


def fit_index_map(index_map: np.ndarray, num_frames: int) -> np.ndarray:
    """Length fix: cut the end of a longer map; hold the last frame to fill a shorter one."""
    if len(index_map) >= num_frames:
        return index_map[:num_frames]
    return np.concatenate([index_map, np.full(num_frames - len(index_map), index_map[-1], dtype=index_map.dtype)])


def draw_speed_change(ctx: ClipContext, rng: np.random.Generator) -> dict[str, Any]:
    start, length = _draw_stretch(ctx, rng, "speed_change")
    factor = SPEED_FACTORS[int(rng.integers(len(SPEED_FACTORS)))]
    return {"start_frame": start, "end_frame": start + length, "factor": float(factor)}


def apply_speed_change(ctx: ClipContext, params: dict[str, Any]) -> np.ndarray:
    frames = _checked_frames(ctx)
    num_frames = frames.shape[0]
    index_map = speed_change_index_map(
        num_frames, int(params["start_frame"]), int(params["end_frame"]), float(params["factor"])
    )
    return frames[fit_index_map(index_map, num_frames)]  # fancy indexing: a new array


OPS: tuple[OpSpec, ...] = (
    OpSpec("grid_mask", VIDEO_SPATIAL, draw_grid_mask, apply_grid_mask),
    OpSpec("trajectory_overlay", VIDEO_SPATIAL, draw_trajectory_overlay, apply_trajectory_overlay),
    OpSpec("temporal_shift", VIDEO_TEMPORAL, draw_temporal_shift, apply_temporal_shift),
    OpSpec("freeze_frame", VIDEO_TEMPORAL, draw_freeze_frame, apply_freeze_frame),
    OpSpec("speed_change", VIDEO_TEMPORAL, draw_speed_change, apply_speed_change),
)
