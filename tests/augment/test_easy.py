"""Easy negatives: caption-only audio from a tiny random AudioLDM2 pipeline, with the clip's frames."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from augment.build import AugmentConfig, clip_negatives
from augment.context import ClipContext, MissingInput
from augment.easy import EASY, EasyConfig, caption_prompt, easy_negative, fit_audio, load_text_to_audio
from augment.media import load_clip, write_clip
from augment.negatives import family_seed
from schemas import Col, NegCol
from stages.cut import measure_clip
from stages.storage import Storage
from tests.audioldm2_tiny import VOCODER_RATE_HZ, build_tiny_audioldm2

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return build_tiny_audioldm2(tmp_path_factory.mktemp("audioldm2"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 2 s clip: moving colour bars and a 440 Hz tone, 64x48, 10 fps, 16 kHz stereo."""
    fps, rate = 10.0, 16000
    t = np.arange(20)[:, None, None, None]
    frames = np.broadcast_to((t * 12 + np.arange(64)[None, None, :, None] * 4) % 256, (20, 48, 64, 3))
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate)
    data = write_clip(frames.astype(np.uint8), fps, np.stack([tone, tone]).astype(np.float32), rate)
    return load_clip(data, max_side=64)


def _ctx(clip) -> ClipContext:
    frames, fps, audio, rate = clip
    return ClipContext(clip_id="c1", frames=frames, fps=fps, audio=audio, rate_hz=rate)


ROW = {Col.ID: "c1", Col.SOURCE_ID: "s1", Col.CAPTION_MERGE_TEXT: "a dog barks in the rain", Col.SRC_TITLE: "video"}


def test_enabled_without_a_model_path_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"augment\.easy\.enabled needs augment\.easy\.model_path") as e:
        AugmentConfig(easy=EasyConfig(enabled=True))
    assert "\n" not in str(e.value)


def test_prompt_is_the_merged_caption_else_the_audio_caption_else_the_title():
    assert caption_prompt(ROW) == ("a dog barks in the rain", Col.CAPTION_MERGE_TEXT)
    row = {Col.CAPTION_MERGE_TEXT: " ", Col.CAPTION_AUDIO_TEXT: "rain", Col.SRC_TITLE: "video"}
    assert caption_prompt(row) == ("rain", Col.CAPTION_AUDIO_TEXT)
    assert caption_prompt({Col.CAPTION_MERGE_TEXT: None, Col.SRC_TITLE: "video"}) == ("video", Col.SRC_TITLE)
    with pytest.raises(MissingInput):
        caption_prompt({Col.SRC_TITLE: ""})


def test_generated_audio_takes_the_clips_rate_channels_length_and_loudness(clip):
    ctx = _ctx(clip)
    generated = np.random.default_rng(0).normal(0, 0.01, 8000).astype(np.float32)  # 1 s at 8 kHz: too short
    audio, gain = fit_audio(generated, 8000, ctx, match_loudness=True)
    assert audio.shape == ctx.audio.shape and audio.dtype == np.float32
    rms = lambda x: float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))  # noqa: E731
    assert rms(audio) == pytest.approx(rms(ctx.audio), rel=0.05) and gain > 1  # over the whole clip
    assert np.all(audio[:, ctx.rate_hz + 100 :] == 0)  # padded with silence, not looped


def test_easy_negative_keeps_the_clips_video_and_replaces_its_audio(clip, model_path, tmp_path):
    ctx = _ctx(clip)
    config = AugmentConfig(families=("video_spatial",), easy=EasyConfig(True, str(model_path), num_inference_steps=2))
    rows, skipped = clip_negatives(ctx, ROW, Storage(str(tmp_path)), config)
    assert skipped == {}
    (easy,) = [r for r in rows if r[NegCol.FAMILY] == EASY]
    params = json.loads(easy[NegCol.PARAMS_JSON])
    assert params["prompt"] == ROW[Col.CAPTION_MERGE_TEXT] and params["prompt_source"] == Col.CAPTION_MERGE_TEXT
    assert params["num_inference_steps"] == 2 and params["seed"] == easy[NegCol.SEED]
    assert params["model_sha256"] == load_text_to_audio(config.easy).model_sha256
    assert params["generated_rate_hz"] == VOCODER_RATE_HZ
    data = (tmp_path / easy[NegCol.MEDIA_PATH]).read_bytes()
    frames, fps, audio, rate = load_clip(data, max_side=64)
    assert frames.shape == ctx.frames.shape and fps == ctx.fps and rate == ctx.rate_hz
    assert np.abs(frames.astype(int) - ctx.frames).mean() < 3  # the clip's frames, through one more encode
    measured, max_frame_s = measure_clip(data)
    assert abs(measured[Col.CUT_VIDEO_DURATION_S] - ctx.num_frames / ctx.fps) <= 1 / ctx.fps + 1e-6
    assert measured[Col.CUT_AV_DIFF_S] <= max_frame_s + 1e-6
    n = min(audio.shape[1], ctx.audio.shape[1])
    assert np.corrcoef(audio[0, :n], ctx.audio[0, :n])[0, 1] < 0.5  # not the clip's tone


def test_same_seed_same_bytes_other_seed_other_audio(clip, model_path, tmp_path):
    ctx = _ctx(clip)
    easy = EasyConfig(True, str(model_path), num_inference_steps=2)

    def build(seed, folder):
        rows, _ = clip_negatives(
            ctx, ROW, Storage(str(tmp_path / folder)), AugmentConfig(seed=seed, families=("video_spatial",), easy=easy)
        )
        return next(r for r in rows if r[NegCol.FAMILY] == EASY)

    first, again = build(5, "a"), build(5, "b")
    assert first[NegCol.MEDIA_SHA256] == again[NegCol.MEDIA_SHA256]
    assert (tmp_path / "a" / first[NegCol.MEDIA_PATH]).read_bytes() == (
        tmp_path / "b" / again[NegCol.MEDIA_PATH]
    ).read_bytes()
    other_seed = family_seed(6, ctx.clip_id, EASY)
    assert other_seed != first[NegCol.SEED]
    a, _ = easy_negative(ctx, ROW, easy, first[NegCol.SEED])
    b, params = easy_negative(ctx, ROW, easy, other_seed)
    assert params["seed"] == other_seed and not np.allclose(a, b)
    data = write_clip(ctx.frames, ctx.fps, b, ctx.rate_hz)  # as _encode_negative writes it
    assert hashlib.sha256(data).hexdigest() != first[NegCol.MEDIA_SHA256]


def test_a_clip_with_no_text_skips_the_family_with_the_reason(clip, model_path, tmp_path):
    config = AugmentConfig(families=("video_spatial",), easy=EasyConfig(True, str(model_path), num_inference_steps=2))
    rows, skipped = clip_negatives(_ctx(clip), {Col.ID: "c1", Col.SOURCE_ID: "s1"}, Storage(str(tmp_path)), config)
    assert [r[NegCol.FAMILY] for r in rows] == ["video_spatial"] and "no text to prompt from" in skipped[EASY]
