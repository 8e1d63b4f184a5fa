import numpy as np
import pytest

from pipeline import ids
from schemas import Col, Kind
from stages.analysis import Piece
from stages.decode import DecodedClip
from stages.scene_cut import ClipLength, ClipLengthConfig, SceneCut, SceneCutConfig, clip_row, detect_scenes


def test_clip_rows_inherit_source_metadata_and_get_deterministic_ids():
    source = {Col.ID: "sabc", Col.INPUT: "in.mp4", Col.SRC_TITLE: "t", Col.PROBE_FPS: 25.0}
    piece = Piece(1, 1, 100, 1600, 4.0, 64.0, DecodedClip(60.0, {}, {}, None))
    row = clip_row(source, piece, {Col.INPUT: "in.mp4", Col.SRC_TITLE: "t"})
    assert (row[Col.CLIP_SCENE_INDEX], row[Col.CLIP_PIECE_INDEX], row[Col.CLIP_DURATION_S]) == (1, 1, 60.0)
    assert row[Col.ID] == ids.clip_id("sabc", 100, 1600)
    assert row[Col.KIND] == Kind.CLIP and row[Col.SOURCE_ID] == "sabc" and row[Col.SRC_TITLE] == "t"
    assert DecodedClip.from_bytes(row[Col.DECODED]).duration_s == 60.0
    assert clip_row(source, Piece(0, 0, 0, 10, 0.0, 0.4, None), {})[Col.DECODED] is None


def test_detects_the_generated_hard_cuts(samples):
    scenes = detect_scenes(str(samples / "three_scenes.mp4"), SceneCutConfig())
    assert [(s.start_frame, s.end_frame) for s in scenes] == [(0, 100), (100, 175), (175, 250)]
    assert [s.start_s for s in scenes] == pytest.approx([0.0, 4.0, 7.0])
    content = detect_scenes(str(samples / "three_scenes.mp4"), SceneCutConfig(detector="content", downscale=2))
    assert [s.start_frame for s in content] == [0, 100, 175]


def _source(path) -> dict:
    return {Col.ID: "s1", Col.INPUT: "x", Col.SRC_PATH: str(path), Col.PROBE_FPS: 25.0, Col.PROBE_ROTATION_DEG: 0}


def test_scene_cut_stage_emits_candidates(samples):
    row = _source(samples / "short_tail.mp4")
    outcome = SceneCut(SceneCutConfig()).process(row)
    assert outcome.rejection is None
    assert outcome.columns[Col.SCENE_NUM_SCENES] == 2 and outcome.columns[Col.SCENE_NUM_CLIPS] == 2
    assert [c[Col.CLIP_DURATION_S] for c in outcome.children] == pytest.approx([3.0, 1.0])
    split = SceneCut(SceneCutConfig(max_clip_s=2.0)).process(row)
    # 75 frames in two pieces on frame boundaries: 38 + 37 frames
    assert [round(c[Col.CLIP_DURATION_S], 2) for c in split.children] == [1.52, 1.48, 1.0]
    assert [(c[Col.CLIP_SCENE_INDEX], c[Col.CLIP_PIECE_INDEX]) for c in split.children] == [(0, 0), (0, 1), (1, 0)]


def test_clips_leave_while_the_source_is_still_being_decoded(samples):
    stream = SceneCut(SceneCutConfig()).stream(_source(samples / "three_scenes.mp4"))
    first = next(stream)  # the first scene's clip, with its pack, before the decoder reached the end
    assert (first[Col.CLIP_START_FRAME], first[Col.CLIP_END_FRAME]) == (0, 100)
    pack = DecodedClip.from_bytes(first[Col.DECODED])
    assert pack.duration_s == pytest.approx(4.0) and pack.loudness.num_samples == pytest.approx(4 * 44100, abs=2)
    rest = []
    with pytest.raises(StopIteration) as done:
        while True:
            rest.append(next(stream))
    assert len(rest) == 2 and done.value.value.columns[Col.SCENE_NUM_CLIPS] == 3


def test_clip_length_rejects_short_clips():
    stage = ClipLength(ClipLengthConfig(min_clip_s=2.0))
    short = stage.process({Col.CLIP_DURATION_S: 1.96})
    assert (short.rejection.reason, short.rejection.value, short.rejection.threshold) == ("too_short", 1.96, 2.0)
    assert stage.process({Col.CLIP_DURATION_S: 2.0}).rejection is None


@pytest.mark.parametrize(
    "bad",
    [
        {"detector": "magic"},
        {"max_clip_s": 0},
        {"downscale": 0},
        {"thumb_height": 161},
        {"thumbs_dir": "../x"},
        {"boundary_search_s": -0.1},
    ],
)
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        SceneCutConfig(**bad)


# PySceneDetect's own expectations (shared/media/README.md): first frame of each scene after the first
@pytest.mark.media
@pytest.mark.parametrize(
    "name, detector, cuts",
    [
        ("psd_testvideo.mp4", "adaptive", [30, 180, 394, 691]),
        ("psd_testvideo.mp4", "content", [30, 180, 394]),
        ("psd_fades.mp4", "adaptive", []),
        ("psd_fades.mp4", "content", []),
    ],
)
def test_pyscenedetect_reference_cuts(media_dir, name, detector, cuts):
    scenes = detect_scenes(str(media_dir / name), SceneCutConfig(detector=detector))
    assert [s.start_frame for s in scenes[1:]] == cuts
    if name == "psd_testvideo.mp4":  # 29.97 fps: times come from timestamps
        assert scenes[1].start_s == pytest.approx(30 * 1001 / 30000, abs=1e-6)
        assert scenes[-1].end_frame == 720


def _jpeg(path):
    import cv2

    data = path.read_bytes()
    assert data[:3] == b"\xff\xd8\xff"  # a JPEG
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def test_every_candidate_gets_a_thumbnail_strip_of_three_upright_frames(samples, tmp_path):
    stage = SceneCut(SceneCutConfig(), output_dir=str(tmp_path))
    children = stage.process(_source(samples / "short_tail.mp4")).children
    assert [c[Col.CLIP_DURATION_S] for c in children] == pytest.approx([3.0, 1.0])  # the 1 s one is rejected next
    for child in children:
        assert child[Col.THUMB_PATH] == f"media/thumbs/s1/{child[Col.ID]}.jpg"
        strip = _jpeg(tmp_path / child[Col.THUMB_PATH])
        assert strip.shape == (160, 3 * 214, 3)  # 320x240 -> 214x160 (even width), three side by side
    rotated = SceneCut(SceneCutConfig(), output_dir=str(tmp_path)).process(
        {**_source(samples / "rotated.mp4"), Col.PROBE_ROTATION_DEG: 90}
    )
    (child,) = rotated.children
    assert _jpeg(tmp_path / child[Col.THUMB_PATH]).shape == (160, 3 * 120, 3)  # upright 240x320, as the clip
    assert not list(tmp_path.rglob("*.tmp"))


def test_thumbnail_frames_are_the_packs_frames(samples, tmp_path):
    from stages.analysis import PackPlan
    from stages.decode import FrameNeed

    need = FrameNeed("aesthetic", positions=(0.1, 0.5, 0.9), max_side=214)
    stage = SceneCut(SceneCutConfig(), PackPlan(needs=(need,)), output_dir=str(tmp_path))
    for child in stage.process(_source(samples / "three_scenes.mp4")).children:
        strip = _jpeg(tmp_path / child[Col.THUMB_PATH])[..., ::-1].astype(np.float32)  # BGR -> RGB
        frames = DecodedClip.from_bytes(child[Col.DECODED]).frames["aesthetic"].astype(np.float32)
        for i, frame in enumerate(frames):  # the same stills (JPEG and scaling apart)
            assert np.abs(strip[:, i * 214 : (i + 1) * 214] - frame).mean() < 8


def test_no_thumbnails_when_off_or_without_an_output(samples, tmp_path):
    off = SceneCut(SceneCutConfig(thumbnails=False), output_dir=str(tmp_path)).process(_source(samples / "black.mp4"))
    assert all(c.get(Col.THUMB_PATH) is None for c in off.children) and not list(tmp_path.rglob("*.jpg"))
    assert SceneCut(SceneCutConfig()).plan.thumb_height is None


def test_a_source_that_fails_midway_removes_the_thumbnails_it_wrote(samples, tmp_path):
    from tests.stages.test_analysis import _break_after

    broken = tmp_path / "broken.mp4"
    _break_after(samples / "three_scenes.mp4", broken, 0.8)
    stream = SceneCut(SceneCutConfig(), output_dir=str(tmp_path / "out")).stream(_source(broken))
    first = next(stream)  # the first scene's clip left with its thumbnail
    assert (tmp_path / "out" / first[Col.THUMB_PATH]).is_file()
    with pytest.raises(ValueError, match="undecodable packets"):
        list(stream)
    assert not list((tmp_path / "out").rglob("*.jpg"))


@pytest.fixture(scope="module")
def burst_at_cut(tmp_path_factory):
    """A hard cut at 2.0 s (frame 50) and a 1 kHz burst from 1.8 s to 2.3 s, digital silence elsewhere."""
    from pipeline.samples import _scenes

    path = tmp_path_factory.mktemp("burst") / "burst_at_cut.mp4"
    burst = ["-f", "lavfi", "-i", r"aevalsrc=0.5*sin(2*PI*1000*t)*between(t\,1.8\,2.3):s=44100:d=4.5"]
    _scenes(path, [("testsrc2", 2), ("smptehdbars", 2.5)], burst)
    return path


def test_clip_bounds_move_out_of_a_sound_that_straddles_a_cut(burst_at_cut, tmp_path):
    from stages.cut import Cut, CutConfig

    clips = SceneCut(SceneCutConfig(boundary_search_s=0.5)).process(_source(burst_at_cut)).children
    assert [(c[Col.CLIP_VISUAL_START_S], round(c[Col.CLIP_VISUAL_END_S], 2)) for c in clips] == [(0, 2), (2, 4.52)]
    first, second = clips
    assert 1.5 <= first[Col.CLIP_END_S] <= 1.8 and 2.3 <= second[Col.CLIP_START_S] <= 2.5  # outside the burst
    for clip in clips:
        assert clip[Col.CLIP_BOUNDARY_FLAG] is None and clip[Col.CLIP_START_DBFS] <= -60 >= clip[Col.CLIP_END_DBFS]
        for frame, s in ((Col.CLIP_START_FRAME, Col.CLIP_START_S), (Col.CLIP_END_FRAME, Col.CLIP_END_S)):
            assert clip[s] == pytest.approx(clip[frame] / 25)  # on the frame grid
        pack = DecodedClip.from_bytes(clip[Col.DECODED])
        assert pack.duration_s == pytest.approx(clip[Col.CLIP_DURATION_S])
        assert clip[Col.CLIP_DURATION_S] == pytest.approx(clip[Col.CLIP_END_S] - clip[Col.CLIP_START_S])
        assert clip[Col.ID] == ids.clip_id("s1", clip[Col.CLIP_START_FRAME], clip[Col.CLIP_END_FRAME])
        encoded = Cut(CutConfig(x264_preset="ultrafast"), str(tmp_path)).process(clip)
        assert encoded.rejection is None  # the A/V duration check holds
        assert encoded.columns[Col.CUT_VIDEO_DURATION_S] == pytest.approx(clip[Col.CLIP_DURATION_S], abs=1e-3)


def test_no_boundary_search_leaves_the_visual_bounds(burst_at_cut):
    clips = SceneCut(SceneCutConfig(boundary_search_s=0)).process(_source(burst_at_cut)).children
    assert [(c[Col.CLIP_START_FRAME], c[Col.CLIP_END_FRAME]) for c in clips] == [(0, 50), (50, 113)]
    for clip in clips:
        assert (clip[Col.CLIP_START_S], clip[Col.CLIP_END_S]) == (
            clip[Col.CLIP_VISUAL_START_S],
            clip[Col.CLIP_VISUAL_END_S],
        )
        assert clip[Col.CLIP_START_DBFS] is None and clip[Col.CLIP_BOUNDARY_FLAG] is None


def test_a_steady_tone_keeps_its_cuts_and_is_flagged(samples):
    clips = SceneCut(SceneCutConfig()).process(_source(samples / "three_scenes.mp4")).children
    assert [(c[Col.CLIP_START_FRAME], c[Col.CLIP_END_FRAME]) for c in clips] == [(0, 100), (100, 175), (175, 250)]
    assert {c[Col.CLIP_BOUNDARY_FLAG] for c in clips} == {"both"}
