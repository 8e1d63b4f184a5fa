import hashlib

import av
import numpy as np
import pytest

from schemas import Col
from stages.cut import Cut, CutConfig, measure_clip


def _frames(path, max_frames=None) -> list[np.ndarray]:
    out = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="gray").astype(np.float32))
            if max_frames and len(out) >= max_frames:
                break
    return out


def _row(samples, name, start_s, end_s, clip_id="c1"):
    return {
        Col.ID: clip_id,
        Col.SOURCE_ID: "s1",
        Col.SRC_PATH: str(samples / name),
        Col.CLIP_START_S: start_s,
        Col.CLIP_END_S: end_s,
        Col.PROBE_FPS: 25.0,
    }


def test_cut_is_frame_accurate_and_keeps_audio_in_step(samples, tmp_path):
    out = Cut(CutConfig(x264_preset="ultrafast", crf=10), str(tmp_path)).process(
        _row(samples, "three_scenes.mp4", 4.0, 7.0)
    )
    assert out.rejection is None
    path = tmp_path / out.columns[Col.MEDIA_PATH]
    clip = _frames(path)
    source = _frames(samples / "three_scenes.mp4")
    assert len(clip) == 75  # frames 100..174
    # the first and last frames are the source's frames 100 and 174, not their neighbours
    for clip_frame, index in ((clip[0], 100), (clip[-1], 174)):
        errors = {i: np.abs(clip_frame - source[i]).mean() for i in (index - 1, index, index + 1)}
        assert min(errors, key=errors.get) == index
    assert out.columns[Col.CUT_VIDEO_DURATION_S] == pytest.approx(3.0, abs=1e-6)
    assert out.columns[Col.CUT_AV_DIFF_S] <= 1 / 25
    assert out.columns[Col.MEDIA_SIZE_BYTES] == path.stat().st_size
    assert out.columns[Col.MEDIA_SHA256] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert out.columns[Col.MEDIA_PATH] == "media/clips/s1/c1.mp4"
    assert not list(tmp_path.rglob("*.part"))


def test_cut_honours_rotation(samples, tmp_path):
    out = Cut(CutConfig(x264_preset="ultrafast"), str(tmp_path)).process(_row(samples, "rotated.mp4", 0.0, 3.0))
    assert (out.columns[Col.CUT_WIDTH], out.columns[Col.CUT_HEIGHT]) == (240, 320)
    with av.open(str(tmp_path / out.columns[Col.MEDIA_PATH])) as c:
        frame = next(c.decode(video=0))
        assert (frame.width, frame.height) == (240, 320)
        assert (getattr(frame, "rotation", 0) or 0) % 360 == 0  # upright pixels, no rotation left to apply


def test_audio_that_ends_early_is_an_av_mismatch(samples, tmp_path):
    out = Cut(CutConfig(x264_preset="ultrafast"), str(tmp_path)).process(
        _row(samples, "audio_ends_early.mp4", 0.0, 6.0)
    )
    assert out.rejection.reason == "av_mismatch"
    assert out.rejection.value == pytest.approx(3.0, abs=0.05)
    assert out.rejection.threshold == pytest.approx(0.04)
    assert out.rejection.threshold == CutConfig().max_av_diff_frames * out.columns[Col.CUT_MAX_FRAME_S]  # stored


def test_embed_mode_stores_bytes_instead_of_a_file(samples, tmp_path):
    out = Cut(CutConfig(x264_preset="ultrafast", embed_media=True), str(tmp_path)).process(
        _row(samples, "three_scenes.mp4", 0.0, 4.0)
    )
    data = out.columns[Col.MEDIA_BYTES]
    assert Col.MEDIA_PATH not in out.columns and not list(tmp_path.rglob("*.mp4"))
    assert hashlib.sha256(data).hexdigest() == out.columns[Col.MEDIA_SHA256]
    measured, _ = measure_clip(data)
    assert measured[Col.CUT_VIDEO_DURATION_S] == pytest.approx(4.0, abs=1e-6)


def test_ffmpeg_failure_raises(samples, tmp_path):
    from stages.ffmpeg import FFmpegError

    with pytest.raises(FFmpegError):
        Cut(CutConfig(), str(tmp_path)).process(_row(samples, "corrupt.mp4", 0.0, 2.0))


def test_a_video_stream_that_starts_after_the_audio_is_still_cut_on_the_right_frame(samples, tmp_path):
    from stages.cut import video_start_offset_s
    from stages.ffmpeg import run_ffmpeg

    # the video stream starts 30 ms (three quarters of a 25 fps frame) after the file's start:
    # clip times count from the video's first frame, FFmpeg's -ss from the file's start
    late = tmp_path / "late_video.mp4"
    src = str(samples / "three_scenes.mp4")
    run_ffmpeg(["-itsoffset", "0.03", "-i", src, "-i", src, "-map", "0:v", "-map", "1:a", "-c", "copy", str(late)])
    assert video_start_offset_s(str(late)) == pytest.approx(0.03, abs=0.002)
    row = {**_row(samples, "three_scenes.mp4", 4.0, 7.0), Col.SRC_PATH: str(late)}
    out = Cut(CutConfig(x264_preset="ultrafast", crf=10), str(tmp_path)).process(row)
    clip, source = _frames(tmp_path / out.columns[Col.MEDIA_PATH]), _frames(samples / "three_scenes.mp4")
    assert len(clip) == 75
    for clip_frame, index in ((clip[0], 100), (clip[-1], 174)):
        errors = {i: np.abs(clip_frame - source[i]).mean() for i in (index - 1, index, index + 1)}
        assert min(errors, key=errors.get) == index


def _pyav_facts(media) -> tuple[int, int, bool]:
    """Audio rate and channels as PyAV reads them, and VFR from the decoded frames' timestamps."""
    import io

    with av.open(io.BytesIO(media) if isinstance(media, bytes) else str(media)) as c:
        audio = c.streams.audio[0].codec_context
        pts = [f.pts for f in c.decode(video=0)]
    gaps = np.diff(pts)
    return audio.sample_rate, audio.channels, bool(np.abs(gaps - np.median(gaps)).max() / np.median(gaps) > 0.05)


@pytest.fixture(scope="module")
def stereo_48k(samples, tmp_path_factory):
    """three_scenes.mp4 with its sound as 48 kHz stereo (the samples are 44.1 kHz mono)."""
    from stages.ffmpeg import run_ffmpeg

    folder = tmp_path_factory.mktemp("stereo")
    src = str(samples / "three_scenes.mp4")
    run_ffmpeg(["-i", src, "-c:v", "copy", "-c:a", "aac", "-ar", "48000", "-ac", "2", str(folder / "stereo_48k.mp4")])
    return folder


@pytest.mark.parametrize(
    "name, end_s, vfr, audio",
    [
        ("three_scenes.mp4", 4.0, False, (44100, 1)),
        ("vfr.mp4", 3.9, True, (44100, 1)),
        ("stereo_48k.mp4", 4.0, False, (48000, 2)),
    ],
)
def test_trainer_columns_match_the_encoded_clip(samples, stereo_48k, tmp_path, name, end_s, vfr, audio):
    samples = stereo_48k if name == "stereo_48k.mp4" else samples
    out = Cut(CutConfig(x264_preset="ultrafast"), str(tmp_path)).process(_row(samples, name, 0.0, end_s))
    cols = out.columns
    path = tmp_path / cols[Col.MEDIA_PATH]
    assert (cols[Col.CUT_AUDIO_SAMPLE_RATE_HZ], cols[Col.CUT_AUDIO_CHANNELS], cols[Col.CUT_IS_VFR]) == (
        *_pyav_facts(path)[:2],
        vfr,
    )
    assert _pyav_facts(path)[2] == vfr and (cols[Col.CUT_AUDIO_SAMPLE_RATE_HZ], cols[Col.CUT_AUDIO_CHANNELS]) == audio
    with av.open(str(path)) as c:  # cut_fps: the stream's average rate (frames / duration for VFR)
        assert cols[Col.CUT_FPS] == pytest.approx(float(c.streams.video[0].average_rate))
    embedded = Cut(CutConfig(x264_preset="ultrafast", embed_media=True), str(tmp_path)).process(
        _row(samples, name, 0.0, end_s, clip_id="c2")
    )
    facts = _pyav_facts(embedded.columns[Col.MEDIA_BYTES])
    got = [embedded.columns[c] for c in (Col.CUT_AUDIO_SAMPLE_RATE_HZ, Col.CUT_AUDIO_CHANNELS, Col.CUT_IS_VFR)]
    assert got == list(facts)
