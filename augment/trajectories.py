"""Trajectory pool: moving objects tracked over a clip, as cropped pixels and masks over time.
Precomputed once per clip; video operations overlay other clips' trajectories
(``ClipContext.trajectories``) to add a moving object that makes no sound.

**CPU backends** (``opencv_mog2`` default, ``opencv_knn``), on frames downscaled so the longer
side is at most ``max_side``:

1. Background subtraction. The subtractor (OpenCV MOG2: ``varThreshold`` 16, or KNN:
   ``dist2Threshold`` 400, both OpenCV's defaults, shadows off) is first seeded with the clip's
   per-pixel temporal median, fed ``seed_repeats`` times at OpenCV's automatic rate: wherever an
   object moves, the median is the background, so tracks can start at the first frame instead
   of after the model has learnt the scene. Frames are then classified at ``learning_rate``
   (0: the background stays the median, so a slow object is never absorbed into it).
2. An opening (``open_px``) removes speckle, a closing (``close_px``) fills small holes;
   8-connected components smaller than a quarter of ``min_area_fraction`` are noise.
3. Linking: components in consecutive frames are matched greedily, best box IoU first, then
   nearest centroid; a pair links when IoU >= ``min_iou`` or the centroids are closer than
   ``max_jump`` frame diagonals. Each component continues at most one track, and a track ends
   at the first frame where nothing matches it (trajectories are consecutive frames).
4. A track is kept when it spans at least ``min_frames`` frames and its median area lies in
   [``min_area_fraction``, ``max_area_fraction``] of the frame (a tiny blob is noise, a huge one a
   camera move or a light change).

Each kept track becomes a :class:`~augment.context.Trajectory` at the clip's own resolution: a
crop box of one size per track (the largest box of the track) centred on the object in each
frame and shifted to stay inside it, the crop's pixels, the object's mask in the crop, and the
frame times.

**Production backend** ``sam2``: the CPU tracks are proposals; each one's first mask prompts the
SAM2 video predictor (``add_new_mask``), which segments and propagates every object through the
clip (``propagate_in_video``); the same size and length rules then apply to SAM2's masks.

**Storage.** :func:`encode_trajectory` packs a trajectory into bytes (a JSON header with the
boxes and times, then one PNG per crop and per mask); :func:`decode_trajectory` is its exact
inverse (with ``frame_format=".jpg"`` the crops are lossy, the masks stay exact).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import struct
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from augment.context import Trajectory

BACKENDS = ("opencv_mog2", "opencv_knn", "sam2")
FRAME_FORMATS = (".png", ".jpg")
MAGIC = b"JTRJ1"  # format tag and version of encode_trajectory's bytes


@dataclasses.dataclass(frozen=True)
class TrajectoryConfig:
    """Trajectory extraction (module docstring)."""

    backend: str = "opencv_mog2"  # one of BACKENDS; "sam2" is the production (GPU) backend
    max_side: int = 320  # detection resolution; crops are cut from the clip's own frames
    mog2_var_threshold: float = 16.0  # MOG2: squared Mahalanobis distance to count as foreground (OpenCV default)
    knn_dist2_threshold: float = 400.0  # KNN: squared distance to count as foreground (OpenCV default)
    seed_repeats: int = 5  # times the median frame is fed before the clip (the automatic rate averages them)
    learning_rate: float = 0.0  # while classifying the clip; 0: background frozen at the median, -1: OpenCV's auto
    open_px: int = 3  # opening kernel side: removes speckle
    close_px: int = 5  # closing kernel side: fills small holes
    min_iou: float = 0.1  # link boxes of consecutive frames that overlap at least this much...
    max_jump: float = 0.1  # ...or whose centroids are closer than this many frame diagonals
    min_frames: int = 8  # shorter tracks are dropped
    min_area_fraction: float = 0.002  # of the frame: smaller objects (median over the track) are dropped
    max_area_fraction: float = 0.25  # larger "objects" are camera moves or light changes
    sam2_config: str | None = None  # SAM2's Hydra config name, e.g. "configs/sam2.1/sam2.1_hiera_l.yaml"
    sam2_checkpoint: str | None = None  # e.g. sam2.1_hiera_large.pt
    device: str = "cuda"  # sam2: torch device

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"trajectories.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.max_side < 32:
            raise ValueError("trajectories.max_side must be >= 32")
        if self.seed_repeats < 1 or self.min_frames < 2:
            raise ValueError("trajectories.seed_repeats must be >= 1 and trajectories.min_frames >= 2")
        if not (self.learning_rate == -1 or 0 <= self.learning_rate <= 1):
            raise ValueError("trajectories.learning_rate must be -1 (automatic) or in [0, 1]")
        if self.open_px < 1 or self.close_px < 1:
            raise ValueError("trajectories.open_px and trajectories.close_px must be >= 1")
        if not 0 < self.min_iou <= 1 or not 0 <= self.max_jump <= 1:
            raise ValueError("trajectories.min_iou must be in (0, 1] and trajectories.max_jump in [0, 1]")
        if not 0 <= self.min_area_fraction < self.max_area_fraction <= 1:
            raise ValueError("trajectories needs 0 <= min_area_fraction < max_area_fraction <= 1")


@dataclasses.dataclass(frozen=True)
class Detection:
    """One connected foreground component in one frame (detection resolution)."""

    frame: int
    label: int  # its label in that frame's label image
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)
    centroid: tuple[float, float]  # x, y
    area_px: int


# --- detection: background subtraction -> components ---------------------------------------------


def downscale(frames: np.ndarray, max_side: int) -> np.ndarray:
    """(T, H, W, 3) -> the same frames with the longer side at most ``max_side`` (area filter)."""
    import cv2

    height, width = frames.shape[1:3]
    scale = max_side / max(height, width)
    if scale >= 1:
        return frames
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def foreground_masks(frames: np.ndarray, config: TrajectoryConfig) -> np.ndarray:
    """(T, h, w, 3) uint8 RGB -> (T, h, w) bool foreground, background seeded with the median."""
    import cv2

    if config.backend == "opencv_knn":
        subtractor = cv2.createBackgroundSubtractorKNN(dist2Threshold=config.knn_dist2_threshold, detectShadows=False)
    else:  # sam2 uses these masks as proposals too
        subtractor = cv2.createBackgroundSubtractorMOG2(varThreshold=config.mog2_var_threshold, detectShadows=False)
    median = np.median(frames, axis=0).astype(np.uint8)
    for _ in range(config.seed_repeats):
        subtractor.apply(median, learningRate=-1)
    opening = np.ones((config.open_px, config.open_px), np.uint8)
    closing = np.ones((config.close_px, config.close_px), np.uint8)
    masks = []
    for frame in frames:
        foreground = subtractor.apply(frame, learningRate=config.learning_rate)
        foreground = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, opening)
        masks.append(cv2.morphologyEx(foreground, cv2.MORPH_CLOSE, closing) > 0)
    return np.stack(masks)


def components(mask: np.ndarray, frame: int, min_area_px: int) -> tuple[np.ndarray, list[Detection]]:
    """(h, w) bool -> (label image, its 8-connected components of at least ``min_area_px``)."""
    import cv2

    _, labels, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    detections = []
    for label in range(1, len(stats)):  # 0 is the background
        x, y, w, h, area = (int(v) for v in stats[label])
        if area >= min_area_px:
            centre = (float(centroids[label][0]), float(centroids[label][1]))
            detections.append(Detection(frame, label, (x, y, x + w, y + h), centre, area))
    return labels, detections


# --- linking and filtering -----------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (M, N) of (M, 4) and (N, 4) x0, y0, x1, y1 boxes with exclusive ends."""
    a, b = np.asarray(a, dtype=np.float64)[:, None], np.asarray(b, dtype=np.float64)[None]
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def link_detections(
    per_frame: Sequence[Sequence[Detection]], min_iou: float, max_jump_px: float
) -> list[list[Detection]]:
    """Greedy frame-to-frame linking (module docstring, step 3) -> tracks of consecutive frames."""
    finished: list[list[Detection]] = []
    open_tracks: list[list[Detection]] = []
    for detections in per_frame:
        used_tracks: set[int] = set()
        used_dets: set[int] = set()
        if open_tracks and detections:
            last = [t[-1] for t in open_tracks]
            iou = box_iou(np.array([d.box for d in last]), np.array([d.box for d in detections]))
            jump = np.linalg.norm(
                np.array([d.centroid for d in last])[:, None] - np.array([d.centroid for d in detections])[None],
                axis=-1,
            )
            rows, cols = np.nonzero((iou >= min_iou) | (jump <= max_jump_px))
            for k in np.lexsort((jump[rows, cols], -iou[rows, cols])):  # best IoU first, then nearest
                i, j = int(rows[k]), int(cols[k])
                if i not in used_tracks and j not in used_dets:
                    used_tracks.add(i)
                    used_dets.add(j)
                    open_tracks[i].append(detections[j])
        finished += [t for i, t in enumerate(open_tracks) if i not in used_tracks]
        open_tracks = [t for i, t in enumerate(open_tracks) if i in used_tracks]
        open_tracks += [[d] for j, d in enumerate(detections) if j not in used_dets]
    return sorted(finished + open_tracks, key=lambda t: (t[0].frame, t[0].box))


def keep_track(areas_px: Sequence[int], frame_area_px: int, config: TrajectoryConfig) -> bool:
    """Long enough, and of usable median size (module docstring, step 4)."""
    if len(areas_px) < config.min_frames:
        return False
    fraction = float(np.median(areas_px)) / frame_area_px
    return config.min_area_fraction <= fraction <= config.max_area_fraction


# --- masks -> a Trajectory -----------------------------------------------------------------------


def trajectory_from_masks(frames: np.ndarray, masks: np.ndarray, first_frame: int, fps: float) -> Trajectory:
    """The object in ``masks`` (N, H, W) bool over ``frames`` (N, H, W, 3), the clip's frames
    ``first_frame ..``: one crop size (the largest box) centred on the object in each frame."""
    ys, xs = [np.flatnonzero(m.any(axis=1)) for m in masks], [np.flatnonzero(m.any(axis=0)) for m in masks]
    if any(len(y) == 0 for y in ys):
        raise ValueError("every mask of a trajectory must be non-empty")
    height, width = frames.shape[1:3]
    crop_h = max(int(y[-1] - y[0] + 1) for y in ys)
    crop_w = max(int(x[-1] - x[0] + 1) for x in xs)
    boxes, crops, crop_masks = [], [], []
    for frame, mask, y, x in zip(frames, masks, ys, xs):
        x0 = min(max(0, (int(x[0]) + int(x[-1]) + 1 - crop_w) // 2), width - crop_w)
        y0 = min(max(0, (int(y[0]) + int(y[-1]) + 1 - crop_h) // 2), height - crop_h)
        boxes.append([x0, y0, x0 + crop_w, y0 + crop_h])
        crops.append(frame[y0 : y0 + crop_h, x0 : x0 + crop_w])
        crop_masks.append(mask[y0 : y0 + crop_h, x0 : x0 + crop_w])
    times_s = (first_frame + np.arange(len(masks))) / fps
    return Trajectory(np.stack(crops), np.stack(crop_masks), np.asarray(boxes, dtype=np.int64), times_s)


def _full_mask(labels: np.ndarray, label: int, height: int, width: int) -> np.ndarray:
    import cv2

    mask = (labels == label).astype(np.uint8)
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return mask > 0


def motion_tracks(frames: np.ndarray, config: TrajectoryConfig) -> list[tuple[int, np.ndarray]]:
    """CPU steps 1-4 -> kept tracks as (first frame, (N, H, W) bool masks at the clip's size)."""
    small = downscale(frames, config.max_side)
    height_px, width_px = small.shape[1:3]
    frame_area_px = height_px * width_px
    min_area_px = max(1, int(config.min_area_fraction * frame_area_px / 4))
    labelled = [components(mask, t, min_area_px) for t, mask in enumerate(foreground_masks(small, config))]
    tracks = link_detections([d for _, d in labelled], config.min_iou, config.max_jump * np.hypot(height_px, width_px))
    height, width = frames.shape[1:3]
    kept = []
    for track in tracks:
        if keep_track([d.area_px for d in track], frame_area_px, config):
            masks = np.stack([_full_mask(labelled[d.frame][0], d.label, height, width) for d in track])
            kept.append((track[0].frame, masks))
    return kept


# --- production backend: SAM2 --------------------------------------------------------------------


class Sam2Tracker:
    """SAM2's video predictor (``sam2.sam2_video_predictor.SAM2VideoPredictor``, as
    ``sam2.build_sam.build_sam2_video_predictor`` returns it). We use, as its notebook does::

        state = predictor.init_state(video_path=<folder of 00000.jpg, 00001.jpg, ...>)
        predictor.add_new_mask(state, frame_idx=f, obj_id=i, mask=(H, W) bool)
        for frame_idx, obj_ids, mask_logits in predictor.propagate_in_video(state): ...  # (O, 1, H, W)

    On CUDA it runs under bfloat16 autocast (as in the notebook). Input: the clip's
    frames and one (first frame, mask) prompt per object; output: (O, T, H, W) bool masks
    (logits > 0), empty before an object's prompt frame."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    def track(self, frames: np.ndarray, prompts: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
        import cv2
        import torch

        masks = np.zeros((len(prompts), *frames.shape[:3]), dtype=bool)
        if not prompts:
            return masks
        on_cuda = torch.device(getattr(self.predictor, "device", "cpu")).type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext()
        with tempfile.TemporaryDirectory(prefix="sam2_frames_") as folder, torch.inference_mode(), autocast:
            for t, frame in enumerate(frames):  # SAM2 reads a folder of JPEGs named by frame index
                cv2.imwrite(os.path.join(folder, f"{t:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            state = self.predictor.init_state(video_path=folder)
            for obj_id, (frame_idx, mask) in enumerate(prompts):
                self.predictor.add_new_mask(state, frame_idx=frame_idx, obj_id=obj_id, mask=mask)
            for frame_idx, obj_ids, mask_logits in self.predictor.propagate_in_video(state):
                logits = mask_logits.detach().float().cpu().numpy()[:, 0]  # (O, H, W)
                for obj_id, obj_logits in zip(obj_ids, logits):
                    masks[int(obj_id), int(frame_idx)] = obj_logits > 0
        return masks


def load_sam2(config: TrajectoryConfig) -> Sam2Tracker:
    """SAM2's video predictor from a local checkpoint. sam2 (and the torchvision it needs) is
    imported only here: it is a GPU-only extra, absent on CPU machines."""
    if not config.sam2_checkpoint or not os.path.isfile(config.sam2_checkpoint):
        raise FileNotFoundError(f"trajectories.sam2_checkpoint={config.sam2_checkpoint!r} is not a file")
    if not config.sam2_config:  # a Hydra name resolved inside the sam2 package, not a path we can check
        raise FileNotFoundError("trajectories.sam2_config is not set (e.g. 'configs/sam2.1/sam2.1_hiera_l.yaml')")
    try:
        from sam2.build_sam import build_sam2_video_predictor
    except ImportError as error:
        raise ImportError(
            f"trajectories.backend='sam2' needs the sam2 package (the 'gpu' extra, with torchvision): {error}"
        ) from error
    return Sam2Tracker(build_sam2_video_predictor(config.sam2_config, config.sam2_checkpoint, device=config.device))


def sam2_tracks(frames: np.ndarray, config: TrajectoryConfig, tracker: Sam2Tracker) -> list[tuple[int, np.ndarray]]:
    """CPU tracks prompt SAM2; each object's longest run of non-empty masks, if kept (step 4)."""
    proposals = motion_tracks(frames, config)
    masks = tracker.track(frames, [(first, track_masks[0]) for first, track_masks in proposals])
    frame_area_px = frames.shape[1] * frames.shape[2]
    kept = []
    for object_masks in masks:
        present = np.concatenate([[False], object_masks.any(axis=(1, 2)), [False]])
        edges = np.flatnonzero(np.diff(present.astype(np.int8)))
        if len(edges) == 0:
            continue
        start, end = max(zip(edges[::2], edges[1::2]), key=lambda run: run[1] - run[0])
        run = object_masks[start:end]
        if keep_track(run.sum(axis=(1, 2)).tolist(), frame_area_px, config):
            kept.append((int(start), run))
    return kept


def extract_trajectories(
    frames: np.ndarray, fps: float, config: TrajectoryConfig, tracker: Sam2Tracker | None = None
) -> list[Trajectory]:
    """A clip's frames (T, H, W, 3) uint8 RGB at ``fps`` -> its moving objects, in order of first
    appearance. ``tracker``: a ready SAM2 (backend ``sam2``; built from the config when None)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if config.backend == "sam2":
        tracks = sam2_tracks(frames, config, tracker if tracker is not None else load_sam2(config))
    else:
        tracks = motion_tracks(frames, config)
    return [trajectory_from_masks(frames[first : first + len(m)], m, first, fps) for first, m in tracks]


# --- compact storage -----------------------------------------------------------------------------


def _png_or_jpg(image: np.ndarray, ext: str) -> bytes:
    import cv2

    ok, buffer = cv2.imencode(ext, image, [cv2.IMWRITE_PNG_COMPRESSION, 6] if ext == ".png" else [])
    if not ok:
        raise ValueError(f"cv2.imencode failed for a {image.shape} image as {ext}")
    return buffer.tobytes()


def encode_trajectory(trajectory: Trajectory, frame_format: str = ".png") -> bytes:
    """Trajectory -> bytes: ``MAGIC``, the header length (uint32 LE), a JSON header (shape,
    boxes, times, the byte sizes of the images), then one image per crop and one PNG per mask."""
    import cv2

    if frame_format not in FRAME_FORMATS:
        raise ValueError(f"frame_format must be one of {FRAME_FORMATS}, got {frame_format!r}")
    frames, masks = trajectory.frames, trajectory.masks
    num = len(frames)
    if num == 0 or frames.shape[-1] != 3 or masks.shape != frames.shape[:3]:
        raise ValueError(
            f"trajectory needs N >= 1 crops (N, h, w, 3) and masks (N, h, w): {frames.shape} {masks.shape}"
        )
    crop_blobs = [_png_or_jpg(cv2.cvtColor(f, cv2.COLOR_RGB2BGR), frame_format) for f in frames]
    mask_blobs = [_png_or_jpg(m.astype(np.uint8), ".png") for m in masks]
    header = {
        "shape": [int(s) for s in masks.shape],
        "boxes": np.asarray(trajectory.boxes).astype(int).tolist(),
        "times_s": [float(t) for t in trajectory.times_s],  # JSON keeps float64 exactly (repr round trip)
        "frame_format": frame_format,
        "frame_sizes": [len(b) for b in crop_blobs],
        "mask_sizes": [len(b) for b in mask_blobs],
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([MAGIC, struct.pack("<I", len(header_bytes)), header_bytes, *crop_blobs, *mask_blobs])


def decode_trajectory(data: bytes) -> Trajectory:
    """The inverse of :func:`encode_trajectory`."""
    import cv2

    if not data.startswith(MAGIC):
        raise ValueError("not an encoded trajectory (bad magic bytes)")
    (header_len,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    header = json.loads(data[start : start + header_len])
    offset = start + header_len
    images = []
    for size in header["frame_sizes"] + header["mask_sizes"]:
        buffer = np.frombuffer(data, dtype=np.uint8, count=size, offset=offset)
        images.append(cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED))
        offset += size
    num = header["shape"][0]
    frames = np.stack([cv2.cvtColor(image, cv2.COLOR_BGR2RGB) for image in images[:num]])
    masks = np.stack(images[num:]) > 0
    return Trajectory(frames, masks, np.asarray(header["boxes"], dtype=np.int64), np.asarray(header["times_s"]))
