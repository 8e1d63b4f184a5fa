import numpy as np
import pytest

from schemas import Col
from stages.decode import AUDIO_RATE_HZ, DecodedClip, FrameNeed, Loudness, decode_clip, scaled_size


def test_frame_need_times():
    assert FrameNeed("a", positions=(0.0, 0.5, 1.0)).times_s(10.0) == pytest.approx([0.0, 5.0, 9.999])
    assert FrameNeed("m", fps=4).times_s(1.0) == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert FrameNeed("a", positions=(0.9, 0.1)).positions == (0.1, 0.9)  # decoded in time order
    with pytest.raises(ValueError):
        FrameNeed("x")
    with pytest.raises(ValueError):
        FrameNeed("x", positions=(0.5,), fps=2)
    with pytest.raises(ValueError):
        FrameNeed("x", positions=(1.5,))


def test_scaled_size_keeps_aspect_and_never_upscales():
    assert scaled_size(1920, 1080, 256) == (256, 144)
    assert scaled_size(320, 240, 512) == (320, 240)
    assert scaled_size(1080, 1920, 960) == (540, 960)


def test_one_pass_serves_every_need(samples):
    needs = [
        FrameNeed("a", positions=(0.1, 0.5, 0.9), max_side=160),
        FrameNeed("m", fps=2, max_side=64, gray=True),
    ]
    decoded = decode_clip(str(samples / "three_scenes.mp4"), needs, audio=True, duration_s=10.0)
    assert decoded.frames["a"].shape == (3, 120, 160, 3) and decoded.frames["a"].dtype == np.uint8
    assert decoded.frames["m"].shape == (20, 48, 64)
    assert decoded.frame_times_s["a"] == pytest.approx([1.0, 5.0, 9.0])
    # the frame on screen at k * 0.5 s (25 fps: frames every 40 ms)
    assert decoded.frame_times_s["m"] == pytest.approx(np.floor(np.arange(20) * 0.5 / 0.04 + 1e-9) * 0.04)
    # the three scenes are different test patterns: frames from different scenes differ
    a = decoded.frames["a"].astype(np.float32)
    assert np.abs(a[0] - a[1]).mean() > 10 and np.abs(a[1] - a[2]).mean() > 10
    assert len(decoded.audio) == pytest.approx(10 * AUDIO_RATE_HZ, rel=0.01)
    assert decoded.audio.dtype == np.float32 and 0.02 < np.abs(decoded.audio).max() < 0.05  # -30 dBFS tone
    again = DecodedClip.from_bytes(decoded.to_bytes())
    assert np.array_equal(again.frames["m"], decoded.frames["m"]) and again.duration_s == 10.0


def test_variable_frame_rate_uses_timestamps(samples):
    import av

    with av.open(str(samples / "vfr.mp4")) as c:
        pts = sorted(float(f.pts * f.time_base) for f in c.decode(video=0))
    assert max(np.diff(pts)) > 1.5 * min(np.diff(pts))  # the sample really is VFR
    decoded = decode_clip(str(samples / "vfr.mp4"), [FrameNeed("m", fps=10, max_side=32, gray=True)], False, 3.96)
    targets = np.arange(40) * 0.1
    on_screen = [max(p for p in pts if p <= t + 1e-9) - pts[0] for t in targets]  # a frame "at t"
    assert decoded.frame_times_s["m"] == pytest.approx(on_screen)
    assert decoded.audio is None


def test_pack_round_trip_keeps_every_array_exactly_and_writable():
    rng = np.random.default_rng(0)
    pack = DecodedClip(
        3.5,
        {"rgb": rng.integers(0, 256, (3, 6, 8, 3), dtype=np.uint8), "grey": np.zeros((2, 5, 7), np.uint8),
         "none": np.zeros((0, 0, 0), np.uint8)},
        {"rgb": np.array([0.0, 1.0, 2.0]), "grey": np.array([0.25, 0.5]), "none": np.zeros(0)},
        rng.standard_normal(1001).astype(np.float32),
    )  # fmt: skip
    again = DecodedClip.from_bytes(pack.to_bytes())
    assert again.duration_s == 3.5 and again.loudness is None
    for name in pack.frames:
        assert again.frames[name].dtype == np.uint8 and np.array_equal(again.frames[name], pack.frames[name])
        assert np.array_equal(again.frame_times_s[name], pack.frame_times_s[name])
    assert again.audio.dtype == np.float32 and np.array_equal(again.audio, pack.audio)
    again.frames["rgb"][0, 0, 0, 0] = 7  # consumers may work in place
    with pytest.raises(ValueError, match="not an analysis pack"):
        DecodedClip.from_bytes(b"PK\x03\x04 a zip")


def test_pack_round_trip_keeps_loudness():
    loudness = Loudness(12.5, 1000, 0.75, 500, 0.01, 1.99)
    pack = DecodedClip(2.0, {}, {}, np.zeros(3, np.float32), loudness)
    again = DecodedClip.from_bytes(pack.to_bytes())
    assert again.loudness == loudness and np.array_equal(again.audio, pack.audio)
    assert DecodedClip.from_bytes(DecodedClip(2.0, {}, {}, None).to_bytes()).loudness is None
    with pytest.raises(ValueError, match="analysis pack"):
        DecodedClip.from_row({Col.DECODED: None})


def test_frames_from_audio_only_media_is_a_clear_error(tmp_path):
    from stages.ffmpeg import run_ffmpeg

    tone = tmp_path / "tone.m4a"
    run_ffmpeg(["-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(tone)])
    with pytest.raises(ValueError, match="without a video stream"):
        decode_clip(str(tone), [FrameNeed("a", positions=(0.5,))], audio=True, duration_s=1.0)
    assert decode_clip(str(tone), [], audio=True, duration_s=1.0).audio.size > 15000
