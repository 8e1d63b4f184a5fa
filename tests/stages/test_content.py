import pytest

from schemas import Col, State
from stages.content import Content, ContentConfig, content_scores, decide
from tests.stages.test_annotation import clip_row, run_stage


def _row(clip_id: str, sound: list[str] | None, spatial: list[str] | None = None, **columns) -> dict:
    return clip_row(
        clip_id,
        taxonomy_sound_type=sound,
        taxonomy_spatial_composition=spatial if spatial is not None else ["off_screen"],
        **columns,
    )


def _decide(sound, spatial=("off_screen",), config: ContentConfig | None = None, **columns):
    config = config or ContentConfig()
    row = {Col.TAXONOMY_SOUND_TYPE: list(sound), Col.TAXONOMY_SPATIAL_COMPOSITION: list(spatial), **columns}
    return decide(config, {**row, **content_scores(row)})


def test_one_line_per_reason_through_the_stage():
    rows = [
        _row("music", ["musical"]),
        _row("speech", ["speech"], ["single_subject"]),
        _row("both", ["speech", "musical"]),
        _row("mixed", ["musical", "biological"]),
        _row("ambient", ["ambient"]),
        _row("performance", ["musical"], ["single_subject"]),
        _row("unclassified", None),
    ]
    out = run_stage(Content(ContentConfig()), rows)
    reasons = {k: (v[Col.STATE], v[Col.REASON]) for k, v in out.items()}
    assert reasons == {
        "music": (State.REJECTED, "music_only"),
        "speech": (State.REJECTED, "speech_only"),
        "both": (State.REJECTED, "music_and_speech"),
        "mixed": (State.PENDING, None),
        "ambient": (State.PENDING, None),
        "performance": (State.PENDING, None),  # music whose source is on screen is not background music
        "unclassified": (State.FAILED, None),
    }
    assert out["mixed"][Col.CONTENT_NUM_OTHER_SOUND_TYPES] == 1 and out["music"][Col.CONTENT_NUM_OTHER_SOUND_TYPES] == 0
    music = out["music"]
    assert (music[Col.METRIC], music[Col.VALUE], music[Col.THRESHOLD]) == (Col.CONTENT_NUM_OTHER_SOUND_TYPES, 0.0, 1.0)
    assert "musical" in music[Col.DETAIL]


def test_visible_music_rules():
    assert _decide(["musical"], ["multiple_subjects"]) is None
    assert _decide(["musical"], ["single_subject", "off_screen"]).reason == "music_only"  # could be background
    assert _decide(["musical"], ["single_subject"], ContentConfig(keep_visible_music=False)).reason == "music_only"


def test_each_reason_can_be_switched_off():
    assert _decide(["musical"], config=ContentConfig(reject_music_only=False)) is None
    assert _decide(["speech"], config=ContentConfig(reject_speech_only=False)) is None
    assert _decide(["speech", "musical"], config=ContentConfig(reject_music_and_speech=False)) is None


def test_detector_ratios_veto_only_when_configured():
    veto = ContentConfig(min_music_ratio=0.5, min_speech_ratio=0.05)
    # the language model says music only, the detector heard little music: kept
    assert _decide(["musical"], config=veto, speech_music_ratio=0.1) is None
    assert _decide(["musical"], config=veto, speech_music_ratio=0.9).reason == "music_only"
    assert _decide(["musical"], config=veto).reason == "music_only"  # no detector column: the labels decide
    assert _decide(["speech"], config=veto, speech_ratio=0.01) is None
    # music vetoed, speech confirmed: the clip is speech only
    assert _decide(["speech", "musical"], config=veto, speech_music_ratio=0.1, speech_ratio=0.2).reason == "speech_only"
    # off by default, and the ratios are reported
    rejection = _decide(["musical"], speech_music_ratio=0.1, speech_ratio=0.0)
    assert rejection.reason == "music_only" and "music 0.10" in rejection.detail and "speech 0.00" in rejection.detail


def test_config_checks():
    with pytest.raises(ValueError):
        ContentConfig(min_music_ratio=1.5)
