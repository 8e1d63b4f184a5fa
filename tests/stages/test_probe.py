import pytest

from schemas import Col
from stages.probe import Probe, ProbeConfig, ProbeError, frame_durations_vary, probe_media, stream_timing


def test_constant_and_variable_frame_durations():
    assert not frame_durations_vary([0, 40, 80, 120, 160], 0.05)
    assert not frame_durations_vary([160, 0, 80, 40, 120], 0.05)  # B-frame order
    assert frame_durations_vary([0, 40, 80, 160, 240], 0.05)


def test_probe_reads_streams(samples):
    facts = probe_media(str(samples / "three_scenes.mp4"), ProbeConfig())
    assert facts[Col.PROBE_DURATION_S] == pytest.approx(10.0, abs=0.05)
    assert (facts[Col.PROBE_WIDTH], facts[Col.PROBE_HEIGHT]) == (320, 240)
    assert facts[Col.PROBE_FPS] == pytest.approx(25.0)
    assert facts[Col.PROBE_VIDEO_CODEC] == "h264"
    assert facts[Col.PROBE_AUDIO_CODEC] == "aac"
    assert facts[Col.PROBE_AUDIO_SAMPLE_RATE_HZ] == 44100
    assert facts[Col.PROBE_ROTATION_DEG] == 0
    assert facts[Col.PROBE_IS_VFR] is False
    assert facts[Col.PROBE_SAR] == "1:1"


def test_probe_reads_display_rotation(samples):
    facts = probe_media(str(samples / "rotated.mp4"), ProbeConfig())
    assert facts[Col.PROBE_ROTATION_DEG] in (90, 270)
    assert (facts[Col.PROBE_WIDTH], facts[Col.PROBE_HEIGHT]) == (320, 240)  # coded size, before rotation


def test_probe_detects_variable_frame_rate_from_timestamps(samples):
    facts = probe_media(str(samples / "vfr.mp4"), ProbeConfig())
    assert facts[Col.PROBE_IS_VFR] is True
    # 50 frames of 40 ms + 25 frames of 80 ms: the duration comes from timestamps, not 75 / fps
    # (the muxer stores the last frame as 40 or 80 ms long), never 75 frames / 25 fps = 3 s
    assert 3.95 <= stream_timing(str(samples / "vfr.mp4")).duration_s["video"] <= 4.0


@pytest.mark.parametrize(
    "name, reason",
    [("corrupt.mp4", "unreadable"), ("empty.mp4", "unreadable")],
)
def test_unreadable_files_raise_with_a_reason(samples, name, reason):
    with pytest.raises(ProbeError) as err:
        probe_media(str(samples / name), ProbeConfig())
    assert err.value.reason == reason


def test_probe_stage_reason_codes(samples, tmp_path):
    stage = Probe(ProbeConfig())
    assert stage.process({Col.SRC_PATH: str(samples / "no_audio.mp4")}).rejection.reason == "no_audio"
    assert stage.process({Col.SRC_PATH: str(samples / "corrupt.mp4")}).rejection.reason == "unreadable"
    audio_only = tmp_path / "tone.m4a"
    from stages.ffmpeg import run_ffmpeg

    run_ffmpeg(["-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(audio_only)])
    assert stage.process({Col.SRC_PATH: str(audio_only)}).rejection.reason == "no_video"
    allowed = Probe(ProbeConfig(require_audio=False)).process({Col.SRC_PATH: str(samples / "no_audio.mp4")})
    assert allowed.rejection is None and allowed.columns[Col.PROBE_HAS_AUDIO] is False


@pytest.mark.parametrize("ext, codec", [("mp3", "libmp3lame"), ("m4a", "aac")])
def test_cover_art_is_not_a_video(tmp_path, ext, codec):
    from stages.ffmpeg import run_ffmpeg

    song = tmp_path / f"song.{ext}"
    cover = ["-f", "lavfi", "-i", "testsrc2=s=64x64:d=1", "-frames:v", "1", "-map", "0:a", "-map", "1:v"]
    run_ffmpeg(["-f", "lavfi", "-i", "sine=d=1", *cover, "-disposition:v", "attached_pic", "-c:a", codec,
                "-c:v", "mjpeg", str(song)])  # fmt: skip
    outcome = Probe(ProbeConfig()).process({Col.SRC_PATH: str(song)})
    assert outcome.rejection.reason == "no_video" and "cover art" in outcome.rejection.detail
