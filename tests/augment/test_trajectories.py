"""augment/trajectories.py: moving objects found in synthetic clips with known paths, the size
and length rules, compact storage, and the SAM2 code path with a stand-in predictor."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from augment.context import Trajectory
from augment.trajectories import (
    Sam2Tracker,
    TrajectoryConfig,
    decode_trajectory,
    encode_trajectory,
    extract_trajectories,
    load_sam2,
)

FPS = 25.0
HEIGHT, WIDTH, NUM_FRAMES = 120, 160, 30
RED = (255, 40, 40)


def _background(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    import cv2

    noise = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 1.0)  # a static texture, not a flat colour


def _clip(squares, height: int = HEIGHT, width: int = WIDTH, num_frames: int = NUM_FRAMES):
    """Frames of a textured background with squares (size, colour, path(t) -> (x0, y0), frames)
    painted on, and each square's true (T, H, W) mask."""
    frames = np.repeat(_background(height, width)[None], num_frames, axis=0)
    truths = []
    for size, colour, path, frame_range in squares:
        truth = np.zeros((num_frames, height, width), bool)
        for t in frame_range:
            x0, y0 = path(t)
            frames[t, y0 : y0 + size, x0 : x0 + size] = colour
            truth[t, y0 : y0 + size, x0 : x0 + size] = True
        truths.append(truth)
    return frames, truths


def _diagonal(t: int) -> tuple[int, int]:
    return 10 + 4 * t, 20 + 2 * t


def _mask_iou(trajectory: Trajectory, truth: np.ndarray, first_frame: int) -> np.ndarray:
    """Per frame IoU of the trajectory's mask, put back in the frame, with the true mask."""
    ious = []
    for i, (mask, box) in enumerate(zip(trajectory.masks, trajectory.boxes)):
        placed = np.zeros(truth.shape[1:], bool)
        placed[box[1] : box[3], box[0] : box[2]] = mask
        true = truth[first_frame + i]
        ious.append((placed & true).sum() / (placed | true).sum())
    return np.asarray(ious)


def test_a_moving_square_becomes_one_trajectory_along_its_path():
    frames, (truth,) = _clip([(20, RED, _diagonal, range(NUM_FRAMES))])
    before = frames.copy()
    (trajectory,) = extract_trajectories(frames, FPS, TrajectoryConfig())
    assert np.array_equal(frames, before)
    assert trajectory.frames.shape == (NUM_FRAMES, 20, 20, 3) and trajectory.frames.dtype == np.uint8
    assert trajectory.masks.dtype == bool and trajectory.masks.shape == (NUM_FRAMES, 20, 20)
    np.testing.assert_allclose(trajectory.times_s, np.arange(NUM_FRAMES) / FPS)
    true_centres = np.array([[x + 10, y + 10] for x, y in map(_diagonal, range(NUM_FRAMES))])
    centres = (trajectory.boxes[:, :2] + trajectory.boxes[:, 2:]) / 2
    assert np.abs(centres - true_centres).max() <= 2
    assert _mask_iou(trajectory, truth, 0).min() > 0.7
    assert np.all(trajectory.frames[trajectory.masks] == RED)  # the crop holds the object's pixels


def test_detection_on_downscaled_frames_maps_back_to_the_clip():
    def path(t: int) -> tuple[int, int]:
        return 20 + 8 * t, 40 + 4 * t

    frames, (truth,) = _clip([(40, RED, path, range(NUM_FRAMES))], height=360, width=480)
    (trajectory,) = extract_trajectories(frames, FPS, TrajectoryConfig(max_side=160))  # detection at 1/3 scale
    centres = (trajectory.boxes[:, :2] + trajectory.boxes[:, 2:]) / 2
    true_centres = np.array([[x + 20, y + 20] for x, y in map(path, range(NUM_FRAMES))])
    assert np.abs(centres - true_centres).max() <= 4
    assert _mask_iou(trajectory, truth, 0).min() > 0.7


def test_two_objects_become_two_trajectories_in_order_of_appearance():
    squares = [
        (16, RED, lambda t: (5 + 3 * t, 10), range(NUM_FRAMES)),
        (16, (40, 40, 255), lambda t: (140 - 3 * (t - 10), 90), range(10, NUM_FRAMES)),
    ]
    frames, truths = _clip(squares)
    trajectories = extract_trajectories(frames, FPS, TrajectoryConfig())
    assert len(trajectories) == 2
    assert trajectories[0].times_s[0] == 0.0 and trajectories[1].times_s[0] == pytest.approx(10 / FPS)
    assert _mask_iou(trajectories[0], truths[0], 0).min() > 0.7
    assert _mask_iou(trajectories[1], truths[1], 10).min() > 0.7


def test_the_knn_subtractor_finds_the_square_too():
    frames, (truth,) = _clip([(20, RED, _diagonal, range(NUM_FRAMES))])
    (trajectory,) = extract_trajectories(frames, FPS, TrajectoryConfig(backend="opencv_knn"))
    assert len(trajectory.times_s) == NUM_FRAMES
    assert _mask_iou(trajectory, truth, 0).mean() > 0.7


def test_a_static_clip_has_no_trajectory():
    frames = np.repeat(_background()[None], NUM_FRAMES, axis=0)
    assert extract_trajectories(frames, FPS, TrajectoryConfig()) == []


def test_an_object_below_the_minimum_size_is_dropped():
    frames, _ = _clip([(3, RED, _diagonal, range(NUM_FRAMES))])  # 9 px: 0.05 % of the frame
    assert extract_trajectories(frames, FPS, TrajectoryConfig()) == []
    config = TrajectoryConfig(min_area_fraction=0.0002)  # the size rule, not detection, dropped it
    (trajectory,) = extract_trajectories(frames, FPS, config)
    assert trajectory.masks.sum(axis=(1, 2)).max() <= 9


def test_a_short_lived_object_is_dropped():
    frames, _ = _clip([(20, RED, _diagonal, range(5))])
    assert extract_trajectories(frames, FPS, TrajectoryConfig()) == []
    assert len(extract_trajectories(frames, FPS, TrajectoryConfig(min_frames=5))) == 1


def test_a_whole_frame_change_is_not_an_object():
    frames = np.repeat(_background()[None], NUM_FRAMES, axis=0)
    frames[10:] = np.clip(frames[10:].astype(int) + 80, 0, 255).astype(np.uint8)  # the light goes up
    assert extract_trajectories(frames, FPS, TrajectoryConfig()) == []
    (whole_frame,) = extract_trajectories(frames, FPS, TrajectoryConfig(max_area_fraction=1.0))  # the size rule
    assert whole_frame.masks.mean() > 0.9


def test_extraction_is_deterministic():
    frames, _ = _clip([(20, RED, _diagonal, range(NUM_FRAMES))])
    first = extract_trajectories(frames, FPS, TrajectoryConfig())
    second = extract_trajectories(frames, FPS, TrajectoryConfig())
    assert [encode_trajectory(t) for t in first] == [encode_trajectory(t) for t in second]


def _a_trajectory() -> Trajectory:
    frames, _ = _clip([(20, RED, _diagonal, range(NUM_FRAMES))])
    return extract_trajectories(frames, FPS, TrajectoryConfig())[0]


def test_encode_decode_round_trip_is_exact():
    trajectory = _a_trajectory()
    trajectory.masks[3, 0, 0] = True  # an irregular mask, not just the full square
    data = encode_trajectory(trajectory)
    decoded = decode_trajectory(data)
    assert decoded.frames.dtype == np.uint8 and decoded.masks.dtype == bool
    assert np.array_equal(decoded.frames, trajectory.frames)
    assert np.array_equal(decoded.masks, trajectory.masks)
    assert np.array_equal(decoded.boxes, trajectory.boxes)
    assert decoded.times_s.tobytes() == trajectory.times_s.astype(np.float64).tobytes()
    assert len(data) < (trajectory.frames.nbytes + trajectory.masks.nbytes) / 4  # compact


def test_jpeg_crops_are_lossy_but_masks_stay_exact():
    trajectory = _a_trajectory()
    decoded = decode_trajectory(encode_trajectory(trajectory, frame_format=".jpg"))
    assert np.array_equal(decoded.masks, trajectory.masks)
    assert np.abs(decoded.frames.astype(int) - trajectory.frames).mean() < 10


def test_decode_rejects_other_bytes():
    with pytest.raises(ValueError, match="magic"):
        decode_trajectory(b"\x89PNG\r\n")


@pytest.mark.parametrize(
    "overrides",
    [
        {"backend": "yolo"},
        {"min_frames": 1},
        {"learning_rate": 2.0},
        {"min_area_fraction": 0.3, "max_area_fraction": 0.2},
        {"max_side": 8},
    ],
)
def test_config_rejects_user_mistakes(overrides):
    with pytest.raises(ValueError):
        TrajectoryConfig(**overrides)


def test_frames_must_be_uint8_rgb():
    with pytest.raises(ValueError, match="uint8"):
        extract_trajectories(np.zeros((4, 8, 8, 3), np.float32), FPS, TrajectoryConfig())


# --- SAM2: the code path with a stand-in of SAM2VideoPredictor's interface ------------------------


class StandInPredictor:
    """SAM2VideoPredictor's init_state / add_new_mask / propagate_in_video, answering with known
    masks (as logits, torch tensors (O, 1, H, W)) instead of a network's."""

    def __init__(self, answers: np.ndarray) -> None:
        self.answers = answers  # (O, T, H, W) bool
        self.prompts: list[tuple[int, int, np.ndarray]] = []
        self.frame_files: list[str] = []

    def init_state(self, video_path):
        self.frame_files = sorted(os.listdir(video_path))
        return {"video_path": video_path}

    def add_new_mask(self, inference_state, frame_idx, obj_id, mask):
        self.prompts.append((frame_idx, obj_id, np.asarray(mask)))

    def propagate_in_video(self, inference_state):
        import torch

        obj_ids = [obj_id for _, obj_id, _ in self.prompts]
        for t in range(self.answers.shape[1]):
            logits = np.where(self.answers[obj_ids, t], 10.0, -10.0)[:, None]
            yield t, obj_ids, torch.from_numpy(logits)


def test_sam2_refines_the_motion_proposals():
    pytest.importorskip("torch")
    frames, (truth,) = _clip([(20, RED, _diagonal, range(NUM_FRAMES))])
    answer = truth.copy()
    answer[:, 0:2, 0:2] = False  # SAM2's answer differs from the proposal: the result must be SAM2's
    answer[25:] = False  # and loses the object after frame 24
    predictor = StandInPredictor(answer[None])
    config = TrajectoryConfig(backend="sam2")
    (trajectory,) = extract_trajectories(frames, FPS, config, tracker=Sam2Tracker(predictor))
    assert predictor.frame_files == [f"{t:05d}.jpg" for t in range(NUM_FRAMES)]
    ((frame_idx, obj_id, prompt),) = predictor.prompts
    assert frame_idx == 0 and obj_id == 0 and prompt.shape == (HEIGHT, WIDTH)
    assert (prompt & truth[0]).sum() / (prompt | truth[0]).sum() > 0.7  # prompted with the CPU proposal
    assert len(trajectory.times_s) == 25
    assert _mask_iou(trajectory, answer, 0).min() == 1.0


def test_sam2_loader_names_the_missing_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="trajectories.sam2_checkpoint"):
        load_sam2(TrajectoryConfig(backend="sam2", sam2_config="configs/sam2.1/sam2.1_hiera_l.yaml"))
    checkpoint = tmp_path / "sam2.1_hiera_large.pt"
    checkpoint.write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="trajectories.sam2_config"):
        load_sam2(TrajectoryConfig(backend="sam2", sam2_checkpoint=str(checkpoint)))
    if importlib.util.find_spec("sam2") is None:
        config = TrajectoryConfig(backend="sam2", sam2_checkpoint=str(checkpoint), sam2_config="configs/x.yaml")
        with pytest.raises(ImportError, match="trajectories.backend='sam2'"):
            load_sam2(config)
        with pytest.raises(ImportError):
            extract_trajectories(np.zeros((4, 32, 32, 3), np.uint8), FPS, config)


@pytest.mark.media
def test_real_video_trajectories_are_well_formed(media_dir):
    from augment.media import load_clip

    frames, fps, _, _ = load_clip(str(media_dir / "mp_big_buck_bunny_0_30.webm"))
    trajectories = extract_trajectories(frames, fps, TrajectoryConfig())
    assert trajectories, "Big Buck Bunny has moving animals on still backgrounds"
    height, width = frames.shape[1:3]
    for trajectory in trajectories:
        num = len(trajectory.times_s)
        assert num >= 8 and trajectory.frames.shape[:3] == trajectory.masks.shape
        assert np.all(trajectory.boxes[:, :2] >= 0) and np.all(trajectory.boxes[:, 2] <= width)
        assert np.all(trajectory.boxes[:, 3] <= height) and trajectory.masks.any(axis=(1, 2)).all()
        assert np.allclose(np.diff(trajectory.times_s), 1 / fps)
        decoded = decode_trajectory(encode_trajectory(trajectory))
        assert np.array_equal(decoded.masks, trajectory.masks) and np.array_equal(decoded.frames, trajectory.frames)
