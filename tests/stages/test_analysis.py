"""The one decode of a source: segmentation, frame sampling, audio, the detector's fast score."""

import random
import struct

import av
import numpy as np
import pytest

from schemas import Col
from stages.analysis import (
    SPLIT_AT,
    DetectorConfig,
    PackPlan,
    Segmenter,
    SourceAnalysis,
    detection_size,
    make_detector,
)
from stages.decode import AUDIO_RATE_HZ, FrameNeed


def _feed(segmenter: Segmenter, times, cuts=()) -> tuple[list, int]:
    pieces, most_open = [], 0
    for t in times:
        pieces += segmenter.add(t, t in cuts)
        most_open = max(most_open, len(segmenter.times))
    return pieces, most_open


def test_segmenter_closes_a_scene_at_each_cut():
    times = [i / 25 for i in range(250)]  # 10 s at 25 fps
    segmenter = Segmenter(max_piece_s=60.0)
    pieces, _ = _feed(segmenter, times, cuts={times[100], times[175]})
    pieces += segmenter.finish(10.0)
    assert [(s, p, a, b) for s, p, a, b in pieces] == [(0, 0, 0.0, 4.0), (1, 0, 4.0, 7.0), (2, 0, 7.0, 10.0)]
    assert segmenter.num_scenes == 3


def test_a_long_scene_is_split_as_it_grows_and_never_buffered_past_one_and_a_half_pieces():
    fps, max_s = 10, 60.0
    times = [i / fps for i in range(200 * fps)]  # one 200 s shot
    segmenter = Segmenter(max_piece_s=max_s)
    pieces, most_open = _feed(segmenter, times)
    pieces += segmenter.finish(200.0)
    bounds = [(round(a, 3), round(b, 3)) for _, _, a, b in pieces]
    # 60 s closed when 90 s were open (twice), then the 80 s remainder in two equal halves
    assert bounds == [(0.0, 60.0), (60.0, 120.0), (120.0, 160.0), (160.0, 200.0)]
    assert [p for _, p, _, _ in pieces] == [0, 1, 2, 3]
    assert all(max_s / 2 <= b - a <= max_s for a, b in bounds)
    assert most_open <= SPLIT_AT * max_s * fps + 1  # memory is bounded by the open part, not the source
    assert segmenter.num_scenes == 1


def test_a_scene_just_over_the_maximum_becomes_two_equal_halves():
    segmenter = Segmenter(max_piece_s=2.0)
    pieces, _ = _feed(segmenter, [i / 25 for i in range(75)])  # 3 s, 75 frames
    pieces += segmenter.finish(3.0)
    assert [(round(a, 2), round(b, 2)) for _, _, a, b in pieces] == [(0.0, 1.52), (1.52, 3.0)]  # 38 + 37 frames


def test_detection_size_follows_pyscenedetect():
    assert detection_size(1280, 720, None) == (256, 144)
    assert detection_size(1920, 1080, None) == (256, 144)
    assert detection_size(320, 240, None) == (256, 192)
    assert detection_size(200, 100, None) == (200, 100)  # never upscaled
    assert detection_size(1280, 720, 2) == (640, 360)


def test_the_fast_frame_score_is_the_library_score():
    from scenedetect import AdaptiveDetector, ContentDetector
    from scenedetect.common import FrameTimecode

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (72, 128, 3), dtype=np.uint8) for _ in range(12)]
    frames += [np.clip(frames[-1].astype(int) + 3, 0, 255).astype(np.uint8)] * 3
    for ours, theirs in (
        (make_detector(DetectorConfig("adaptive")), AdaptiveDetector()),
        (make_detector(DetectorConfig("content")), ContentDetector()),
    ):
        for i, frame in enumerate(frames):
            timecode = FrameTimecode(i, fps=25.0)
            assert ours.process_frame(timecode, frame) == theirs.process_frame(timecode, frame)
            assert ours._frame_score == pytest.approx(theirs._frame_score, abs=1e-9)


def test_packs_hold_what_each_need_declared(samples):
    needs = (
        FrameNeed("still", positions=(0.1, 0.5, 0.9), max_side=160),
        FrameNeed("rate", fps=4, max_side=64, gray=True),
    )
    plan = PackPlan(needs=needs, audio=True, loudness=True)
    pieces = list(SourceAnalysis(str(samples / "three_scenes.mp4"), DetectorConfig(), plan))
    assert [(p.start_frame, p.end_frame) for p in pieces] == [(0, 100), (100, 175), (175, 250)]
    first = pieces[0].pack
    assert first.duration_s == pytest.approx(4.0)
    assert first.frames["still"].shape == (3, 120, 160, 3) and first.frames["rate"].shape == (16, 48, 64)
    # frames at 4 per second on the source's grid: the frame on screen at k / 4 s (25 fps)
    assert first.frame_times_s["rate"] == pytest.approx(np.floor(np.arange(16) * 0.25 / 0.04 + 1e-9) * 0.04)
    # stills every 0.5 s (the frame on screen then); per position the one nearest to 10, 50 and
    # 90 % of the clip (0.4, 2.0, 3.6 s): the stills of 0.5, 2.0 and 3.5 s, i.e. frames 12, 50 and 87
    assert first.frame_times_s["still"] == pytest.approx([0.48, 2.0, 3.48])
    assert len(first.audio) == pytest.approx(4 * AUDIO_RATE_HZ, abs=2) and first.audio.dtype == np.float32
    assert first.loudness.num_samples == pytest.approx(4 * 44100, abs=2)
    assert (first.loudness.start_s, first.loudness.end_s) == pytest.approx((0.0, 4.0), abs=1e-3)
    # the three scenes are different test patterns: their stills differ
    a, b = pieces[0].pack.frames["still"][1].astype(float), pieces[1].pack.frames["still"][1].astype(float)
    assert np.abs(a - b).mean() > 10


def test_pieces_shorter_than_the_minimum_get_no_pack(samples):
    plan = PackPlan(loudness=True, min_clip_s=2.0)
    pieces = list(SourceAnalysis(str(samples / "short_tail.mp4"), DetectorConfig(), plan))
    assert [p.duration_s for p in pieces] == pytest.approx([3.0, 1.0])
    assert pieces[0].pack is not None and pieces[1].pack is None


def test_every_piece_gets_a_thumbnail_strip_even_one_shorter_than_the_still_grid(samples):
    import cv2

    need = FrameNeed("ocr", positions=(0.5,), max_side=320)  # 320x240 stills: scaled down to 214x160
    plan = PackPlan(needs=(need,), loudness=True, min_clip_s=2.0, thumb_height=160)
    analysis = SourceAnalysis(str(samples / "short_tail.mp4"), DetectorConfig(), plan)
    pieces = iter(analysis)
    first = next(pieces)  # the 3 s scene; the decoder holds stills of the next one
    strip = cv2.imdecode(np.frombuffer(first.thumbnail, np.uint8), cv2.IMREAD_COLOR)
    assert strip.shape == (160, 3 * 214, 3) and analysis.thumb_source == "ocr"  # the filter's stills, reused
    tiny = analysis._thumbnail(3.05, 3.1)  # no still on the 0.5 s grid in it: the nearest one held
    assert cv2.imdecode(np.frombuffer(tiny, np.uint8), cv2.IMREAD_COLOR).shape == (160, 3 * 214, 3)
    short = next(pieces)  # the 1 s scene: no pack (clip_length rejects it next), a thumbnail all the same
    assert short.pack is None and short.thumbnail is not None
    assert list(SourceAnalysis(str(samples / "short_tail.mp4"), DetectorConfig(), PackPlan()))[0].thumbnail is None


def test_variable_frame_rate_uses_timestamps(samples):
    with av.open(str(samples / "vfr.mp4")) as c:
        pts = sorted(float(f.pts * f.time_base) for f in c.decode(video=0))
    plan = PackPlan(needs=(FrameNeed("m", fps=10, max_side=32, gray=True),))
    (piece,) = SourceAnalysis(str(samples / "vfr.mp4"), DetectorConfig(), plan)
    targets = np.arange(40) * 0.1
    on_screen = [max(p for p in pts if p <= t + 1e-9) - pts[0] for t in targets]
    assert piece.pack.frame_times_s["m"] == pytest.approx(on_screen)


def test_pack_frames_are_upright_like_the_encoded_clip(samples, tmp_path):
    from schemas import Col
    from stages.cut import Cut, CutConfig
    from stages.decode import decode_clip

    need = FrameNeed("a", positions=(0.5,), max_side=160)
    (piece,) = SourceAnalysis(str(samples / "rotated.mp4"), DetectorConfig(), PackPlan(needs=(need,)), 90)
    row = {Col.ID: "c", Col.SOURCE_ID: "s", Col.SRC_PATH: str(samples / "rotated.mp4"), Col.CLIP_START_S: 0.0,
           Col.CLIP_END_S: piece.end_s, Col.PROBE_FPS: 25.0}  # fmt: skip
    clip = tmp_path / Cut(CutConfig(crf=10), str(tmp_path)).process(row).columns[Col.MEDIA_PATH]
    encoded = decode_clip(str(clip), [need], False, piece.duration_s).frames["a"][0].astype(float)
    ours = piece.pack.frames["a"][0].astype(float)
    assert ours.shape == encoded.shape == (160, 120, 3)
    assert np.abs(ours - encoded).mean() < 12  # same picture, re-encoded and maybe a frame apart
    assert np.abs(np.rot90(ours, 2) - encoded).mean() > 3 * np.abs(ours - encoded).mean()


def _break_after(src, dst, fraction: float) -> None:
    """Random bytes over the media data after ``fraction`` of it: the decoder fails there."""
    data = bytearray(src.read_bytes())
    at = data.find(b"mdat")
    size = struct.unpack(">I", data[at - 4 : at])[0]
    rng = random.Random(1)
    for k in range(at + 4 + int(size * fraction), at - 4 + size):
        data[k] = rng.randrange(256)
    dst.write_bytes(bytes(data))


def test_a_source_whose_decode_breaks_down_raises(samples, tmp_path):
    broken = tmp_path / "broken.mp4"
    _break_after(samples / "three_scenes.mp4", broken, 0.5)
    analysis = SourceAnalysis(str(broken), DetectorConfig(), PackPlan(loudness=True))
    with pytest.raises(ValueError, match="undecodable packets in a row"):
        list(analysis)
    assert analysis.num_bad_packets >= 50


# how far a score may move between the source's frames (the pack) and the encoded clip's own
# frames (absolute, relative): the re-encode (x264, AAC), and stills picked on a 0.5 s grid
# instead of at the exact position. Measured on these clips: at most 0.40 (image quality, 0-10),
# 0.0009 or 7 % (flow), 0.006 (speech ratio) and 0 (text regions).
SCORE_NOISE = {
    "aesthetic": (Col.AESTHETIC_IQ_MEAN, 0.6, 0.0),
    "motion": (Col.MOTION_FLOW_MEAN, 0.0015, 0.15),
    "speech": (Col.SPEECH_RATIO, 0.02, 0.0),
    "ocr": (Col.OCR_NUM_REGIONS, 1, 0.0),
}


@pytest.fixture(scope="module")
def real_sources(media_dir, tmp_path_factory):
    import shutil

    from stages.ffmpeg import run_ffmpeg

    folder = tmp_path_factory.mktemp("real")
    for sound, name in (("mp_rain.mp3", "forest_rain.mp4"), ("sv_test.wav", "forest_speech.mp4")):
        run_ffmpeg(["-i", str(media_dir / "psd_testvideo.mp4"), "-i", str(media_dir / sound), "-map", "0:v",
                    "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", str(folder / name)])  # fmt: skip
    shutil.copy(media_dir / "mp_big_buck_bunny_0_30.webm", folder)
    return folder


@pytest.mark.media
def test_filter_scores_on_the_source_agree_with_scores_on_the_encoded_clip(real_sources):
    from pipeline.config import load_config
    from pipeline.dag import STAGE_NAMES, STAGES
    from stages.decode import decode_clip
    from stages.probe import probe_media

    config = load_config("default")
    out = str(real_sources)

    def build(name):
        return STAGES[STAGE_NAMES.index(name)].build(config, out)

    scene_cut, cut, filters = build("scene_cut"), build("cut"), {name: build(name) for name in SCORE_NOISE}
    compared = 0
    for name in ("forest_rain.mp4", "forest_speech.mp4", "mp_big_buck_bunny_0_30.webm"):
        path = str(real_sources / name)
        source = {Col.ID: name, Col.INPUT: path, Col.SRC_PATH: path, **probe_media(path, config.probe)}
        for clip in scene_cut.process(source).children:
            if clip[Col.CLIP_DURATION_S] < config.clip_length.min_clip_s:
                continue
            encoded = cut.process(dict(clip)).columns
            own = decode_clip(str(real_sources / encoded[Col.MEDIA_PATH]), scene_cut.plan.needs, True,
                              encoded[Col.CUT_VIDEO_DURATION_S])  # fmt: skip
            for stage_name, (column, noise_abs, noise_rel) in SCORE_NOISE.items():
                on_pack = filters[stage_name].process(dict(clip))
                on_clip = filters[stage_name].process({**clip, Col.DECODED: own.to_bytes()})
                a, b = on_pack.columns[column], on_clip.columns[column]
                noise = max(noise_abs, noise_rel * abs(b))
                assert abs(a - b) <= noise, (name, clip[Col.CLIP_START_S], stage_name, a, b)
                threshold = (on_pack.rejection or on_clip.rejection or type("R", (), {"threshold": None})).threshold
                if threshold is None or abs(b - threshold) > noise:  # the same decision, unless on the edge
                    assert (on_pack.rejection is None) == (on_clip.rejection is None), (name, stage_name, a, b)
            compared += 1
    assert compared == 11  # 3 + 3 forest shots, 5 bunny shots
