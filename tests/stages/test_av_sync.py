import math

import numpy as np
import pytest

from schemas import Col
from stages.av_sync import (
    AvAlign,
    AvSync,
    AvSyncConfig,
    JavisScore,
    audio_peak_times_s,
    av_align_iou,
    decide,
    javisscore_from_embeddings,
    load_clip_for_sync,
    make_scorer,
    num_low_frames,
    video_peak_times_s,
    window_frame_indices,
    window_score,
    window_starts_s,
)
from stages.decode import AUDIO_RATE_HZ, DecodedClip
from stages.imagebind import ImageBindEmbedder, audio_features, num_fbank_frames, vision_inputs

SR = AUDIO_RATE_HZ


def row_of(frames: np.ndarray, audio: np.ndarray | None, fps: float) -> dict:
    times = np.arange(len(frames)) / fps
    clip = DecodedClip(len(frames) / fps, {"av_sync": frames}, {"av_sync": times}, audio)
    return {Col.DECODED: clip.to_bytes()}


# --- JavisScore window maths against D.4.1 ---------------------------------------------------------


def test_windows_are_2s_with_1_5s_overlap_and_end_inside_the_clip():
    assert window_starts_s(2.0).tolist() == [0.0]
    assert window_starts_s(3.0).tolist() == [0.0, 0.5, 1.0]
    assert window_starts_s(3.4).tolist() == [0.0, 0.5, 1.0]  # a 1.5-3.5 s window would pass the end
    starts = window_starts_s(10.0)
    assert len(starts) == 17 and starts[-1] == 8.0 and np.allclose(np.diff(starts), 0.5)
    assert window_starts_s(1.2).tolist() == [0.0]  # shorter than a window: one window over all of it


def test_frames_per_window_and_the_40_percent_rule():
    # at 8 fps a 2 s window holds 16 frames: [start, start + 2 s)
    assert window_frame_indices(0.0, 80, 8.0).tolist() == list(range(16))
    assert window_frame_indices(0.5, 80, 8.0).tolist() == list(range(4, 20))
    assert len(window_frame_indices(8.0, 80, 8.0)) == 16
    # 40 % least similar, rounded up, at least one frame
    assert [num_low_frames(n) for n in (1, 2, 3, 5, 10, 16, 20)] == [1, 1, 2, 2, 4, 7, 8]
    assert window_score(np.array([0.9, 0.1, 0.5, 0.3, 0.7])) == pytest.approx((0.1 + 0.3) / 2)


def test_javisscore_is_the_mean_over_windows_of_the_low_frame_means():
    vision = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    audio = np.array([[1.0, 0.0], [0.0, 2.0]])  # cosine, so the length does not matter
    windows = [np.array([0, 1, 2]), np.array([1, 2, 3])]
    # window 0 sims [1, 0, .707] -> 2 lowest: (0 + .707) / 2 ; window 1 sims [1, .707, 0] -> same
    expected = (0 + math.sqrt(0.5)) / 2
    assert javisscore_from_embeddings(vision, audio, windows) == pytest.approx(expected)


# --- JavisScore known answer: an embedding built so matching content gives matching embeddings ---

PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.float64)
TONES_HZ = np.array([300.0, 600.0, 1200.0, 2400.0])  # code k sounds at TONES_HZ[k]


def content_clip(codes: list[int], fps: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """One second per code: frames in PALETTE[code], a tone at TONES_HZ[code]."""
    frames = np.concatenate([np.broadcast_to(PALETTE[c].astype(np.uint8), (int(fps), 16, 16, 3)) for c in codes])
    t = np.arange(SR) / SR
    audio = np.concatenate([0.5 * np.sin(2 * np.pi * TONES_HZ[c] * t) for c in codes]).astype(np.float32)
    return frames, audio


class ContentEmbedder:
    """Frame -> one-hot of its palette colour; audio window -> share of 0.25 s chunks per tone."""

    version = "content-oracle"

    def embed_vision(self, frames: np.ndarray) -> np.ndarray:
        mean = frames.reshape(len(frames), -1, 3).mean(axis=1)
        nearest = np.argmin(((mean[:, None] - PALETTE[None]) ** 2).sum(-1), axis=1)
        return np.eye(len(PALETTE))[nearest]

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(windows), len(TONES_HZ)))
        for w, wave in enumerate(windows):
            for chunk in wave.reshape(-1, SR // 4):
                peak_hz = np.argmax(np.abs(np.fft.rfft(chunk))) * 4.0  # 0.25 s chunks: 4 Hz bins
                out[w, np.argmin(np.abs(TONES_HZ - peak_hz))] += 1
        return out


def test_javisscore_ranks_a_clips_own_audio_above_another_clips():
    scorer = JavisScore(ContentEmbedder(), fps=8.0)
    frames_a, audio_a = content_clip([0, 0, 1, 2, 2, 3, 1, 0])
    _, audio_b = content_clip([3, 2, 0, 1, 3, 0, 2, 1])
    own, other = scorer.score_parts(frames_a, audio_a), scorer.score_parts(frames_a, audio_b)
    assert own.num_windows == 13 and other.num_windows == 13
    assert own.score > 0.5 and other.score < 0.2 and own.score > other.score + 0.4


# --- the production code path on a tiny random ImageBind-shaped model --------------------------------


class TinyImageBind:
    """ImageBind's forward interface (``{"vision": (N,3,224,224)}`` / ``{"audio": (W,1,128,204)}``
    -> normalised (N, 8) embeddings) with random weights."""

    def __new__(cls):
        import torch

        class Module(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                torch.manual_seed(0)
                self.vision = torch.nn.Sequential(
                    torch.nn.Conv2d(3, 4, 16, 16), torch.nn.Flatten(), torch.nn.LazyLinear(8)
                )
                self.audio = torch.nn.Sequential(
                    torch.nn.Conv2d(1, 4, 16, 10), torch.nn.Flatten(), torch.nn.LazyLinear(8)
                )

            def forward(self, inputs: dict) -> dict:
                return {k: torch.nn.functional.normalize(getattr(self, k)(v), dim=-1) for k, v in inputs.items()}

        return Module()


def test_imagebind_preprocessing_shapes_and_mel_bands():
    assert num_fbank_frames(2 * SR) == 198  # padded to ImageBind's 204
    t = np.arange(2 * SR) / SR
    feats = audio_features(np.stack([np.sin(2 * np.pi * 1000 * t), np.zeros(2 * SR)]).astype(np.float32))
    assert tuple(feats.shape) == (2, 1, 128, 204)
    band = int(feats[0, 0, :, 100].argmax())  # Kaldi mel of 1 kHz between 20 Hz and 8 kHz: band ~38
    mel = lambda f: 1127 * math.log(1 + f / 700)  # noqa: E731
    assert abs(band - ((mel(1000) - mel(20)) / ((mel(8000) - mel(20)) / 129) - 1)) <= 1.5
    assert tuple(vision_inputs(np.zeros((3, 90, 160, 3), np.uint8)).shape) == (3, 3, 224, 224)


def test_javisscore_stage_runs_on_a_tiny_random_model():
    embedder = ImageBindEmbedder(TinyImageBind(), "cpu", version="tiny-random")
    config = AvSyncConfig(enabled=True, backend="javisscore", imagebind_weights="unused.pth", device="cpu")
    frames, audio = content_clip([0, 1, 2, 3], fps=config.fps)
    stage = AvSync(config, scorer=JavisScore(embedder, config.fps, batch_frames=5))
    outcome = stage.process(row_of(frames, audio, config.fps))
    score = outcome.columns[Col.AV_SYNC_SCORE]
    assert -1.0 <= score <= 1.0 and outcome.columns[Col.AV_SYNC_NUM_WINDOWS] == 5
    assert outcome.columns[Col.AV_SYNC_BACKEND] == "javisscore/tiny-random"
    assert outcome.columns[Col.AV_SYNC_NUM_AUDIO_PEAKS] is None
    # the batch size does not change the score
    again = AvSync(config, scorer=JavisScore(embedder, config.fps, batch_frames=64)).process(row_of(frames, audio, 8.0))
    assert again.columns[Col.AV_SYNC_SCORE] == pytest.approx(score, abs=1e-6)


def test_javisscore_needs_local_weights():
    with pytest.raises(ValueError, match="imagebind_weights"):
        AvSyncConfig(backend="javisscore")
    with pytest.raises(FileNotFoundError, match="imagebind_weights"):
        make_scorer(AvSyncConfig(backend="javisscore", imagebind_weights="/nonexistent/imagebind_huge.pth"))
    with pytest.raises(ValueError, match="backend"):
        AvSyncConfig(backend="synchformer")


# --- AV-Align ----------------------------------------------------------------------------------------

EVENTS_S = [0.75, 2.0, 3.625, 4.75, 6.5, 8.0, 9.25]


def flash_and_click_clip(shift_s: float = 0.0, fps: float = 8.0, duration_s: float = 10.0):
    """A textured square that jumps across the frame at each event, and a 20 ms click at each
    event shifted by ``shift_s``."""
    rng = np.random.default_rng(0)
    patch = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
    frames = np.full((int(duration_s * fps), 96, 128, 3), 90, np.uint8)
    side = 0
    for i in range(len(frames)):
        side = sum(1 for e in EVENTS_S if e <= i / fps + 1e-9) % 2
        x = 16 if side == 0 else 88
        frames[i, 36:60, x : x + 24] = patch
    audio = 0.001 * rng.standard_normal(int(duration_s * SR)).astype(np.float32)
    for e in EVENTS_S:
        start = int((e + shift_s) * SR)
        if 0 <= start < len(audio):
            audio[start : start + SR // 50] += rng.uniform(-0.8, 0.8, len(audio[start : start + SR // 50]))
    return frames, audio


def test_audio_onsets_and_video_peaks_land_on_the_events():
    frames, audio = flash_and_click_clip()
    onsets = audio_peak_times_s(audio, SR)
    assert len(onsets) == len(EVENTS_S) and np.max(np.abs(onsets - EVENTS_S)) < 0.05
    video = video_peak_times_s(AvAlign(8.0).flow_trajectory(frames), 8.0)
    assert len(video) == len(EVENTS_S) and np.max(np.abs(video - EVENTS_S)) <= 0.125


def test_av_align_scores_aligned_clicks_above_clicks_shifted_by_half_a_second():
    scorer = AvAlign(8.0)
    frames, aligned_audio = flash_and_click_clip()
    _, shifted_audio = flash_and_click_clip(shift_s=0.5)
    aligned = scorer.score_parts(frames, aligned_audio)
    shifted = scorer.score_parts(frames, shifted_audio)
    assert aligned.score > 0.8 and shifted.score < 0.2
    assert scorer.score(frames, aligned_audio) == aligned.score


def test_av_align_iou_matches_within_one_frame():
    fps = 10.0  # match window: strictly within 0.1 s
    assert av_align_iou(np.array([1.0, 2.0]), np.array([1.05, 3.0]), fps) == pytest.approx(1 / 3)
    assert av_align_iou(np.array([1.0]), np.array([1.1]), fps) == 0.0  # exactly one frame away: no match
    assert av_align_iou(np.zeros(0), np.zeros(0), fps) == 0.0
    # matches count per audio peak, as in the original: two audio peaks near one video peak
    assert av_align_iou(np.array([1.0, 1.02]), np.array([1.0]), fps) == 2.0


# --- the stage and its decision ---------------------------------------------------------------------


def test_stage_columns_reason_and_pure_decision():
    frames, audio = flash_and_click_clip(shift_s=0.5)
    config = AvSyncConfig(enabled=True, min_score=0.3)
    outcome = AvSync(config).process(row_of(frames, audio, config.fps))
    assert outcome.rejection is not None and outcome.rejection.reason == "out_of_sync"
    assert outcome.rejection.metric == Col.AV_SYNC_SCORE and outcome.rejection.threshold == 0.3
    assert outcome.columns[Col.AV_SYNC_BACKEND].startswith("av_align/opencv-farneback")
    assert outcome.columns[Col.AV_SYNC_NUM_VIDEO_PEAKS] == len(EVENTS_S)
    assert decide(AvSyncConfig(min_score=-1.0), outcome.columns) is None
    frames, audio = flash_and_click_clip()
    assert AvSync(config).process(row_of(frames, audio, config.fps)).rejection is None
    with pytest.raises(ValueError, match="no decoded audio"):
        AvSync(config).process(row_of(frames, None, config.fps))
    with pytest.raises(ValueError, match="never scored"):
        decide(config, {})


def test_pack_needs_follow_the_config():
    assert AvSync.frame_need(AvSyncConfig()) is None and not AvSync.needs_audio(AvSyncConfig())
    need = AvSync.frame_need(AvSyncConfig(enabled=True, fps=4.0))
    assert need.fps == 4.0 and not need.gray and AvSync.needs_audio(AvSyncConfig(enabled=True))


def test_load_clip_for_sync_decodes_frames_and_audio_over_the_same_span(samples):
    frames, audio = load_clip_for_sync(samples / "three_scenes.mp4", fps=8.0, sample_rate=SR, max_side=64)
    assert frames.dtype == np.uint8 and max(frames.shape[1:3]) == 64 and frames.shape[3] == 3 and len(frames) == 80
    assert audio.dtype == np.float32 and abs(len(audio) / SR - 10.0) < 0.1
    assert 0.0 <= AvAlign(8.0).score(frames, audio) <= 1.0
