"""Annotation in the real pipeline: tiny random Qwen models (built here, never downloaded)
behind the transformers backend, on local Ray.

The models are nonsense by construction: each reply is a few copies of one token. So the
captions are non-empty text ("!!!"), the merge step cannot find JSON in its reply, and every
clip that reaches it must be rejected as ``unparsable`` with its captions kept, while the run
completes and accounts for every input.
"""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from pipeline.audit import explain
from pipeline.config import load_config
from pipeline.dag import annotation_summary
from pipeline.outputs import read_ledger
from pipeline.runner import run
from schemas import Col
from tests.llm_tiny import build_tiny_audio_model, build_tiny_text_model, build_tiny_vl_model

pytestmark = pytest.mark.slow

INPUTS = ("three_scenes.mp4", "rotated.mp4", "silent.mp4", "no_audio.mp4")


@pytest.fixture(scope="module")
def annotated_run(samples, ray_local, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    vl = build_tiny_vl_model(models / "vl", reply_tokens=3)
    audio = build_tiny_audio_model(models / "audio", reply_tokens=3)
    text = build_tiny_text_model(models / "text", reply_tokens=3)
    folder = tmp_path_factory.mktemp("annotate_in")
    for name in INPUTS:
        shutil.copy(samples / name, folder / name)
    overrides = ["ray.progress_bars=false", "aesthetic.enabled=false", "motion.enabled=false", "ocr.enabled=false"]
    for step, path in (("caption_video", vl), ("caption_audio", audio), ("caption_merge", text), ("taxonomy", text)):
        overrides += [f"{step}.llm.backend=transformers", f"{step}.llm.model_path={path}", f"{step}.max_tokens=16"]
    config = load_config("annotate", overrides=overrides)
    out = tmp_path_factory.mktemp("annotated")
    result = run([str(folder)], out, config, show_progress=False)
    return out, result, config


def test_nonsense_merge_replies_are_rejected_as_unparsable_and_the_run_completes(annotated_run):
    out, result, _ = annotated_run
    clips = [r for r in read_ledger(out).to_pylist() if r[Col.KIND] == "clip"]
    reached = [c for c in clips if c[Col.STAGE] not in ("clip_length", "cut", "sound", "speech")]
    assert len(reached) == 4  # three_scenes (3) + rotated (1); silent is rejected by the sound check
    for clip in reached:
        assert (clip[Col.STATE], clip[Col.STAGE], clip[Col.REASON]) == ("rejected", "caption_merge", "unparsable")
        assert clip[Col.CAPTION_VIDEO_TEXT] == "!!!" and clip[Col.CAPTION_AUDIO_TEXT] == "!!!"
        assert clip[Col.CAPTION_VIDEO_PROMPT] == "caption_video@1"
        assert clip[Col.CAPTION_MERGE_BACKEND].startswith("transformers:")
        assert clip[Col.TAXONOMY_EVENT_SCENARIO] is None  # never reached
    assert not any(c[Col.STATE] == "accepted" for c in clips)
    assert not any(c[Col.STATE] == "failed" for c in clips)
    rejections = pq.read_table(out / "rejections" / "caption_merge").to_pylist()
    assert {r[Col.REASON] for r in rejections} == {"unparsable"} and len(rejections) == 4


def test_funnel_and_manifest_show_each_annotation_step(annotated_run):
    out, _, config = annotated_run
    manifest = json.loads((out / "manifest.json").read_text())
    funnel = {f["stage"]: f for f in manifest["funnel"]}
    for f in manifest["funnel"]:
        assert f["in"] == f["passed"] + f["rejected"] + f["failed"]
    assert (funnel["caption_video"]["in"], funnel["caption_video"]["passed"]) == (4, 4)
    assert funnel["caption_merge"]["reasons"] == {"unparsable": 4}
    assert (funnel["taxonomy"]["in"], funnel["content"]["in"]) == (0, 0)
    steps = manifest["annotation"]["steps"]
    assert steps["caption_audio"]["prompt"] == "caption_audio@1" and steps["caption_audio"]["backend"] == "transformers"
    assert manifest["annotation"] == annotation_summary(config)


def test_audit_explains_an_unparsable_clip(annotated_run):
    out, _, _ = annotated_run
    clip = next(r for r in read_ledger(out).to_pylist() if r[Col.STAGE] == "caption_merge")
    text = explain(out, clip[Col.ID])
    assert "unparsable" in text and "caption_merge" in text


def test_demo_config_says_annotation_is_off():
    summary = annotation_summary(load_config("demo"))
    assert not any(step["enabled"] for step in summary["steps"].values())
    assert "disabled" in summary["note"]
