import pytest

from pipeline import ids
from schemas import Col, Kind
from stages.scene_cut import (
    ClipLength,
    ClipLengthConfig,
    Scene,
    SceneCut,
    SceneCutConfig,
    clip_rows,
    detect_scenes,
    split_scene,
)


def test_split_scene_makes_equal_pieces_no_longer_than_the_maximum():
    scene = Scene(0, 3000, 0.0, 120.0)  # 120 s at 25 fps
    pieces = split_scene(scene, 60.0)
    assert [(p.start_frame, p.end_frame) for p in pieces] == [(0, 1500), (1500, 3000)]
    pieces = split_scene(Scene(100, 3350, 4.0, 134.0), 60.0)  # 130 s -> 3 pieces, no short tail
    assert len(pieces) == 3
    assert all(p.duration_s <= 60.0 for p in pieces)
    assert pieces[0].start_frame == 100 and pieces[-1].end_frame == 3350
    assert all(a.end_frame == b.start_frame and a.end_s == b.start_s for a, b in zip(pieces, pieces[1:]))
    assert split_scene(Scene(0, 250, 0.0, 10.0), 60.0) == [Scene(0, 250, 0.0, 10.0)]


def test_clip_rows_inherit_source_metadata_and_get_deterministic_ids():
    source = {Col.ID: "sabc", Col.INPUT: "in.mp4", Col.SRC_TITLE: "t", Col.PROBE_FPS: 25.0}
    rows = clip_rows(source, [Scene(0, 100, 0.0, 4.0), Scene(100, 3100, 4.0, 124.0)], 60.0)
    assert [r[Col.CLIP_SCENE_INDEX] for r in rows] == [0, 1, 1]
    assert [r[Col.CLIP_PIECE_INDEX] for r in rows] == [0, 0, 1]
    assert rows[1][Col.ID] == ids.clip_id("sabc", 100, 1600)
    assert all(r[Col.KIND] == Kind.CLIP and r[Col.SOURCE_ID] == "sabc" and r[Col.SRC_TITLE] == "t" for r in rows)


def test_detects_the_generated_hard_cuts(samples):
    scenes = detect_scenes(str(samples / "three_scenes.mp4"), SceneCutConfig())
    assert [(s.start_frame, s.end_frame) for s in scenes] == [(0, 100), (100, 175), (175, 250)]
    assert [s.start_s for s in scenes] == pytest.approx([0.0, 4.0, 7.0])
    content = detect_scenes(str(samples / "three_scenes.mp4"), SceneCutConfig(detector="content", downscale=2))
    assert [s.start_frame for s in content] == [0, 100, 175]


def test_scene_cut_stage_emits_candidates(samples):
    row = {Col.ID: "s1", Col.INPUT: "x", Col.SRC_PATH: str(samples / "short_tail.mp4"), Col.PROBE_FPS: 25.0}
    outcome = SceneCut(SceneCutConfig()).process(row)
    assert outcome.rejection is None
    assert outcome.columns[Col.SCENE_NUM_SCENES] == 2 and outcome.columns[Col.SCENE_NUM_CLIPS] == 2
    assert [c[Col.CLIP_DURATION_S] for c in outcome.children] == pytest.approx([3.0, 1.0])
    split = SceneCut(SceneCutConfig(max_clip_s=2.0)).process(row)
    # 75 frames in two pieces on frame boundaries: 38 + 37 frames
    assert [round(c[Col.CLIP_DURATION_S], 2) for c in split.children] == [1.52, 1.48, 1.0]


def test_clip_length_rejects_short_clips():
    stage = ClipLength(ClipLengthConfig(min_clip_s=2.0))
    short = stage.process({Col.CLIP_DURATION_S: 1.96})
    assert (short.rejection.reason, short.rejection.value, short.rejection.threshold) == ("too_short", 1.96, 2.0)
    assert stage.process({Col.CLIP_DURATION_S: 2.0}).rejection is None


@pytest.mark.parametrize("bad", [{"detector": "magic"}, {"max_clip_s": 0}, {"downscale": 0}])
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
