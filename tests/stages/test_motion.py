import math
import sys

import numpy as np
import pytest

from schemas import Col
from stages.base import Rejection
from stages.decode import DecodedClip, decode_clip
from stages.motion import (
    UNIMATCH_INFERENCE_KWARGS,
    UNIMATCH_MODEL_KWARGS,
    DISFlow,
    FarnebackFlow,
    Motion,
    MotionConfig,
    UniMatchFlow,
    decide,
    distinct_pairs,
    load_unimatch,
    motion_scores,
)

H, W = 144, 256  # the default decode size of a 16:9 clip
DIAG = math.hypot(W, H)
CPU_BACKENDS = [DISFlow("medium"), FarnebackFlow()]


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Grey uint8 texture with structure at several scales, like a natural image."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.zeros((height, width), np.float32)
    for sigma in (1.5, 4.0, 12.0):
        out += sigma * cv2.GaussianBlur(rng.uniform(0, 1, (height, width)).astype(np.float32), (0, 0), sigma)
    return ((out - out.min()) / (out.max() - out.min()) * 255).astype(np.uint8)


def pan(positions_px, height: int = H, width: int = W, seed: int = 0) -> np.ndarray:
    """Windows of a wide texture at integer x offsets: a camera panning right."""
    big = texture(height, width + int(max(positions_px)) + 1, seed)
    return np.stack([big[:, x : x + width] for x in positions_px])


def row_of(frames: np.ndarray, times_s: np.ndarray) -> dict:
    clip = DecodedClip(float(times_s[-1]) if len(times_s) else 0.0, {"motion": frames}, {"motion": times_s}, None)
    return {Col.DECODED: clip.to_bytes()}


# --- known answers on generated frames ---------------------------------------------------------


def test_static_frames_score_zero_and_are_rejected_static():
    frames = np.repeat(texture(H, W)[None], 12, axis=0)
    config = MotionConfig()
    outcome = Motion(config).process(row_of(frames, np.arange(12) * 0.25))
    assert outcome.columns[Col.MOTION_FLOW_MEAN] < 1e-4
    assert outcome.columns[Col.MOTION_MOVING_FRACTION] == 0.0
    assert outcome.columns[Col.MOTION_BACKEND].startswith("opencv-dis-medium/")
    assert outcome.rejection.reason == "static"
    assert outcome.rejection.metric == Col.MOTION_FLOW_MEAN and outcome.rejection.threshold == config.min_flow


@pytest.mark.parametrize("backend", CPU_BACKENDS, ids=lambda b: b.backend_id)
@pytest.mark.parametrize("k", [1, 3, 6])
def test_translation_by_k_px_per_frame_scores_k_over_diagonal_times_fps(backend, k):
    frames, times_s = pan([k * i for i in range(10)]), np.arange(10) * 0.25  # 4 fps
    assert backend.flow_magnitudes(frames[:2], frames[1:3]).mean() == pytest.approx(k, rel=0.05)
    scores = motion_scores(backend, frames, times_s, moving_min_flow=0.01)
    assert scores.flow_mean == pytest.approx(k / DIAG * 4.0, rel=0.05)
    assert scores.moving_fraction > 0.97  # global motion: every pixel moves
    assert scores.num_pairs == 9


def test_moving_square_moves_about_its_share_of_the_frame():
    background, square = texture(H, W, seed=1), texture(48, 48, seed=2)
    frames = np.repeat(background[None], 10, axis=0)
    for i in range(10):
        frames[i, 48:96, 20 + 8 * i : 68 + 8 * i] = square
    scores = motion_scores(DISFlow("medium"), frames, np.arange(10) * 0.25, moving_min_flow=0.01)
    area = 48 * 48 / (H * W)
    assert 0.8 * area < scores.moving_fraction < 1.8 * area
    assert scores.flow_mean == pytest.approx(area * 8 / DIAG * 4.0, rel=0.5)


def test_same_motion_at_two_resolutions_scores_the_same():
    import cv2

    large = pan([8 * i for i in range(8)], height=2 * H, width=2 * W)
    small = np.stack([cv2.resize(f, (W, H), interpolation=cv2.INTER_AREA) for f in large])
    times_s = np.arange(8) * 0.25
    for backend in CPU_BACKENDS:
        score_large = motion_scores(backend, large, times_s, 0.01).flow_mean
        score_small = motion_scores(backend, small, times_s, 0.01).flow_mean
        assert score_large == pytest.approx(score_small, rel=0.05)
        assert score_small == pytest.approx(4 / DIAG * 4.0, rel=0.05)


def test_same_motion_at_two_sampling_rates_scores_the_same():
    source, source_times = pan(list(range(48))), np.arange(48) / 24.0  # 1 px per frame at 24 fps
    every_3rd = motion_scores(DISFlow("medium"), source[::3], source_times[::3], 0.01)  # 8 fps, 3 px
    every_6th = motion_scores(DISFlow("medium"), source[::6], source_times[::6], 0.01)  # 4 fps, 6 px
    assert every_3rd.flow_mean == pytest.approx(every_6th.flow_mean, rel=0.05)
    assert every_6th.flow_mean == pytest.approx(24 / DIAG, rel=0.05)


def test_variable_frame_rate_uses_the_real_time_between_frames():
    times_s = np.cumsum([0.0, 0.1, 0.2, 0.3, 0.15, 0.25, 0.1, 0.3])  # 20 px/s -> integer offsets
    frames = pan([round(20 * t) for t in times_s])
    assert motion_scores(DISFlow("medium"), frames, times_s, 0.01).flow_mean == pytest.approx(20 / DIAG, rel=0.05)


def test_a_frame_picked_twice_is_not_a_pair():
    assert list(distinct_pairs(np.array([0.0, 0.0, 0.5, 0.5, 1.0]))) == [1, 3]
    frames, times_s = pan([0, 0, 10, 10, 20]), np.array([0.0, 0.0, 0.5, 0.5, 1.0])  # a 2-fps source at 4 fps
    scores = motion_scores(DISFlow("medium"), frames, times_s, 0.01)
    assert scores.num_pairs == 2
    assert scores.flow_mean == pytest.approx(20 / DIAG, rel=0.05)


@pytest.mark.parametrize("num_frames", [0, 1])
def test_fewer_than_two_frames_score_zero_with_a_detail(num_frames):
    frames = np.repeat(texture(H, W)[None], num_frames, axis=0)
    outcome = Motion(MotionConfig()).process(row_of(frames, np.arange(num_frames) * 0.25))
    assert outcome.columns[Col.MOTION_FLOW_MEAN] == 0.0 and outcome.columns[Col.MOTION_MOVING_FRACTION] == 0.0
    assert outcome.rejection.reason == "static"
    assert "fewer than 2 distinct sampled frames" in outcome.rejection.detail


def test_moving_clip_passes_and_keeps_its_scores():
    outcome = Motion(MotionConfig(backend="opencv_farneback")).process(
        row_of(pan([3 * i for i in range(8)]), np.arange(8) * 0.25)
    )
    assert outcome.rejection is None
    assert outcome.columns[Col.MOTION_FLOW_MEAN] == pytest.approx(3 / DIAG * 4.0, rel=0.05)
    assert outcome.columns[Col.MOTION_BACKEND].startswith("opencv-farneback/")


def test_a_row_without_motion_frames_is_an_error():
    clip = DecodedClip(2.0, {}, {}, None)
    with pytest.raises(ValueError, match="no 'motion' frames"):
        Motion(MotionConfig()).process({Col.DECODED: clip.to_bytes()})


# --- decide() and config ------------------------------------------------------------------------


def test_decide_rethresholds_stored_scores():
    config = MotionConfig(min_flow=0.01)
    assert decide(config, {Col.MOTION_FLOW_MEAN: 0.02, Col.MOTION_MOVING_FRACTION: 0.5}) is None
    assert decide(config, {Col.MOTION_FLOW_MEAN: 0.01}) is None  # at the threshold: kept
    rejection = decide(config, {Col.MOTION_FLOW_MEAN: 0.005})
    assert isinstance(rejection, Rejection)
    assert (rejection.reason, rejection.metric, rejection.value, rejection.threshold) == (
        "static",
        Col.MOTION_FLOW_MEAN,
        0.005,
        0.01,
    )
    assert decide(MotionConfig(min_flow=0.001), {Col.MOTION_FLOW_MEAN: 0.005}) is None
    with pytest.raises(ValueError, match=Col.MOTION_FLOW_MEAN):
        decide(config, {Col.MOTION_FLOW_MEAN: None})


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"backend": "raft"}, "motion.backend"),
        ({"dis_preset": "slow"}, "motion.dis_preset"),
        ({"sample_fps": 0.0}, "motion.sample_fps"),
        ({"max_side": 8}, "motion.max_side"),
        ({"min_flow": -0.1}, "motion.min_flow"),
        ({"moving_min_flow": -1.0}, "motion.moving_min_flow"),
        ({"unimatch_batch_pairs": 0}, "motion.unimatch_batch_pairs"),
        ({"backend": "unimatch", "unimatch_weights": "w.pth"}, "motion.unimatch_repo"),
        ({"backend": "unimatch", "unimatch_repo": "repo"}, "motion.unimatch_weights"),
    ],
)
def test_config_rejects_bad_values(kwargs, key):
    with pytest.raises(ValueError, match=key):
        MotionConfig(**kwargs)


def test_frame_need_follows_the_backend():
    need = Motion.frame_need(MotionConfig(sample_fps=5.0, max_side=200))
    assert (need.name, need.fps, need.max_side, need.gray) == ("motion", 5.0, 200, True)
    production = MotionConfig(backend="unimatch", unimatch_repo="r", unimatch_weights="w")
    assert Motion.frame_need(production).gray is False  # UniMatch wants RGB
    assert Motion.frame_need(production).max_side == production.unimatch_max_side
    assert Motion.frame_need(MotionConfig(enabled=False)) is None
    assert Motion.needs_audio(MotionConfig()) is False


# --- the UniMatch backend, on CPU with tiny random modules --------------------------------------

_FAKE_UNIMATCH = '''
import torch


class UniMatch(torch.nn.Module):
    """A tiny random stand-in with UniMatch's constructor and forward signatures."""

    def __init__(self, num_scales=1, feature_channels=128, upsample_factor=8, num_head=1, ffn_dim_expansion=4,
                 num_transformer_layers=6, reg_refine=False, task="flow"):
        super().__init__()
        self.init_kwargs = dict(num_scales=num_scales, feature_channels=feature_channels,
                                upsample_factor=upsample_factor, num_head=num_head,
                                ffn_dim_expansion=ffn_dim_expansion, num_transformer_layers=num_transformer_layers,
                                reg_refine=reg_refine, task=task)
        self.conv = torch.nn.Conv2d(6, 2, 3, padding=1)

    def forward(self, img0, img1, attn_type, attn_splits_list, corr_radius_list, prop_radius_list,
                num_reg_refine=1, pred_bidir_flow=False, task="flow"):
        return {"flow_preds": [self.conv(torch.cat((img0, img1), dim=1) / 255.0)]}
'''


def _tiny_models():
    torch = pytest.importorskip("torch")

    class ConstantFlow(torch.nn.Module):
        """Returns flow (3, 4) px everywhere and records what it was called with."""

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))
            self.calls = []

        def forward(self, img0, img1, attn_type, attn_splits_list, corr_radius_list, prop_radius_list, **kwargs):
            self.calls.append((img0.shape, float(img0.max()), attn_type, attn_splits_list, kwargs))
            flow = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1).expand(img0.shape[0], 2, *img0.shape[-2:])
            return {"flow_preds": [flow * self.scale]}

    return torch, ConstantFlow


def test_unimatch_flow_feeds_rgb_0_255_in_multiples_of_32_and_rescales_the_flow():
    _, ConstantFlow = _tiny_models()
    model = ConstantFlow()
    flow = UniMatchFlow(model, device="cpu")
    rgb = np.stack([np.full((H, W, 3), 200, np.uint8)] * 3)
    magnitudes = flow.flow_magnitudes(rgb[:2], rgb[1:])
    assert magnitudes.shape == (2, H, W)
    shape, max_value, attn_type, attn_splits, kwargs = model.calls[0]
    assert tuple(shape) == (2, 3, 160, 256) and max_value == pytest.approx(200.0)
    assert attn_type == "swin" and attn_splits == [2, 8] and kwargs["num_reg_refine"] == 6 and kwargs["task"] == "flow"
    # the model's flow is in 256x160 pixels: back in 256x144 pixels, v shrinks by 144/160
    assert magnitudes == pytest.approx(math.hypot(3.0, 4.0 * H / 160), rel=1e-4)
    portrait = flow.flow_magnitudes(rgb[:1].transpose(0, 2, 1, 3), rgb[1:2].transpose(0, 2, 1, 3))
    assert portrait.shape == (1, W, H)  # transposed for the model, then back
    assert tuple(model.calls[-1][0]) == (1, 3, 160, 256)
    grey = flow.flow_magnitudes(rgb[:1, ..., 0], rgb[1:2, ..., 0])
    assert grey.shape == (1, H, W)


def test_unimatch_flow_runs_through_the_stage_on_a_random_module():
    torch, _ = _tiny_models()
    torch.manual_seed(0)
    random_net = torch.nn.Conv2d(6, 2, 3, padding=1)

    class RandomUniMatch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = random_net

        def forward(self, img0, img1, attn_type, attn_splits_list, corr_radius_list, prop_radius_list, **kwargs):
            return {"flow_preds": [self.net(torch.cat((img0, img1), 1) / 255.0)]}

    config = MotionConfig(backend="unimatch", unimatch_repo="unused", unimatch_weights="unused", device="cpu")
    stage = Motion(config, backend=UniMatchFlow(RandomUniMatch(), "cpu", batch_pairs=3))
    frames = np.repeat(pan([2 * i for i in range(7)])[..., None], 3, axis=3)
    outcome = stage.process(row_of(frames, np.arange(7) * 0.25))
    assert outcome.columns[Col.MOTION_BACKEND] == "unimatch/unweighted"
    assert outcome.columns[Col.MOTION_FLOW_MEAN] > 0 and 0 <= outcome.columns[Col.MOTION_MOVING_FRACTION] <= 1


@pytest.fixture
def fake_checkout(tmp_path, monkeypatch):
    """A directory shaped like a UniMatch checkout, with a tiny random UniMatch, and its weights."""
    torch, _ = _tiny_models()
    package = tmp_path / "unimatch_repo" / "unimatch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "unimatch.py").write_text(_FAKE_UNIMATCH)
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(6, 2, 3, padding=1)
    weights = tmp_path / "gmflow-tiny.pth"
    torch.save({"model": {"conv.weight": conv.weight.detach(), "conv.bias": conv.bias.detach()}, "step": 1}, weights)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("unimatch", "unimatch.unimatch"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield package.parent, weights, conv
    for name in ("unimatch", "unimatch.unimatch"):
        sys.modules.pop(name, None)


def test_load_unimatch_builds_the_published_model_from_a_checkout(fake_checkout):
    repo, weights, conv = fake_checkout
    flow = load_unimatch(str(repo), str(weights), device="cpu")
    assert flow.model.init_kwargs == UNIMATCH_MODEL_KWARGS
    assert (flow.model.conv.weight == conv.weight).all()  # the saved weights, not a fresh init
    assert flow.backend_id.startswith("unimatch/sha256:") and len(flow.backend_id) == len("unimatch/sha256:") + 8
    rgb = np.stack([np.full((H, W, 3), 90, np.uint8)] * 2)
    assert flow.flow_magnitudes(rgb[:1], rgb[1:]).shape == (1, H, W)
    assert UNIMATCH_INFERENCE_KWARGS["corr_radius_list"] == [-1, 4]


def test_load_unimatch_fails_fast_naming_the_config_key(fake_checkout, tmp_path):
    repo, weights, _ = fake_checkout
    with pytest.raises(FileNotFoundError, match="motion.unimatch_repo"):
        load_unimatch(str(tmp_path / "nowhere"), str(weights), device="cpu")
    with pytest.raises(FileNotFoundError, match="motion.unimatch_weights"):
        load_unimatch(str(repo), str(tmp_path / "missing.pth"), device="cpu")
    with pytest.raises(FileNotFoundError, match="motion.unimatch_repo"):
        Motion(MotionConfig(backend="unimatch", unimatch_repo=str(tmp_path), unimatch_weights=str(weights)))
    torch = pytest.importorskip("torch")
    torch.save({"model": {"other.weight": torch.zeros(1)}}, tmp_path / "wrong.pth")
    with pytest.raises(RuntimeError, match="state_dict"):
        load_unimatch(str(repo), str(tmp_path / "wrong.pth"), device="cpu")


# --- media: generated with FFmpeg, and real ------------------------------------------------------


def _ffmpeg_pan(tmp_path, name: str, speed_px_s: float, scale: str | None) -> str:
    import cv2

    from stages.ffmpeg import run_ffmpeg

    still = tmp_path / "texture.png"
    if not still.exists():
        cv2.imwrite(str(still), texture(360, 1000, seed=3))
    out = tmp_path / name
    crop = f"crop=640:360:x='t*{speed_px_s}':y=0" + (f",scale={scale}" if scale else "")
    args = ["-loop", "1", "-framerate", "25", "-i", str(still), "-vf", crop, "-t", "2", "-pix_fmt", "yuv420p"]
    run_ffmpeg([*args, "-c:v", "libx264", "-crf", "20", str(out)])
    return str(out)


def test_encoded_pans_score_the_same_across_resolution_and_sampling_rate(tmp_path):
    truth = 100 / math.hypot(640, 360)  # 100 px/s in a 640x360 frame
    scores = {}
    for name, scale, fps in [("full", None, 4.0), ("half", "320:180", 4.0), ("full_8fps", None, 8.0)]:
        config = MotionConfig(sample_fps=fps)
        path = _ffmpeg_pan(tmp_path, f"{name}.mp4", 100, scale)
        decoded = decode_clip(path, [Motion.frame_need(config)], audio=False, duration_s=2.0)
        scores[name] = Motion(config).process({Col.DECODED: decoded.to_bytes()}).columns[Col.MOTION_FLOW_MEAN]
    assert scores["full"] == pytest.approx(truth, rel=0.05)
    assert scores["half"] == pytest.approx(scores["full"], rel=0.05)
    assert scores["full_8fps"] == pytest.approx(scores["full"], rel=0.05)
    still = _ffmpeg_pan(tmp_path, "still.mp4", 0, None)
    decoded = decode_clip(still, [Motion.frame_need(MotionConfig())], audio=False, duration_s=2.0)
    assert Motion(MotionConfig()).process({Col.DECODED: decoded.to_bytes()}).rejection.reason == "static"


def _decode_real(path, config: MotionConfig) -> DecodedClip:
    from stages.probe import ProbeConfig, probe_media

    duration_s = probe_media(str(path), ProbeConfig(require_audio=False))[Col.PROBE_DURATION_S]
    return decode_clip(str(path), [Motion.frame_need(config)], audio=False, duration_s=duration_s)


def _window(clip: DecodedClip, start_s: float, end_s: float) -> dict:
    times_s = clip.frame_times_s["motion"]
    keep = (times_s >= start_s) & (times_s < end_s)
    return row_of(clip.frames["motion"][keep], times_s[keep])


@pytest.mark.media
def test_real_media_photo_slideshow_is_static_and_animation_moves(media_dir):
    config = MotionConfig()
    stage = Motion(config)
    # psd_testvideo: still photographs joined by fades; its shots (README: cuts at frames 30, 180, 394, 691)
    slideshow = _decode_real(media_dir / "psd_testvideo.mp4", config)
    cuts_s = [frame * 1001 / 30000 for frame in (0, 30, 180, 394, 691, 720)]
    for start_s, end_s in zip(cuts_s, cuts_s[1:]):
        shot = stage.process(_window(slideshow, start_s, end_s))
        assert shot.rejection is not None and shot.rejection.reason == "static", (start_s, shot.columns)
    assert stage.process(_window(slideshow, 1.5, 6.0)).columns[Col.MOTION_FLOW_MEAN] < 1e-4  # one still photo
    # Big Buck Bunny: a camera move over a landscape, a bird, title cards over a living scene
    animation = _decode_real(media_dir / "mp_big_buck_bunny_0_30.webm", config)
    whole = stage.process({Col.DECODED: animation.to_bytes()})
    assert whole.rejection is None
    assert whole.columns[Col.MOTION_FLOW_MEAN] == pytest.approx(0.030, abs=0.006)
    landscape = stage.process(_window(animation, 2.0, 11.5))
    assert landscape.rejection is None and landscape.columns[Col.MOTION_MOVING_FRACTION] > 0.7
