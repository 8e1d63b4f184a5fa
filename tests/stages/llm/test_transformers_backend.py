import numpy as np
import pytest

from stages.llm import BackendTimeout, LLMConfig, Request
from stages.llm.transformers_backend import TransformersBackend


def backend(path, modality, **overrides):
    return TransformersBackend(LLMConfig(backend="transformers", model_path=str(path), **overrides), modality)


@pytest.fixture(scope="module")
def text_backend(tiny_text_dir):
    return backend(tiny_text_dir, "text")


def check(completion, max_tokens):
    assert completion.finish_reason in ("stop", "length")
    assert completion.prompt_tokens > 0 and 1 <= completion.completion_tokens <= max_tokens
    assert isinstance(completion.text, str)


def test_text_batch_keeps_order_and_counts(text_backend):
    requests = [Request(text=f"Merge caption number {i}.", system="You merge captions.", max_tokens=3 + i)
                for i in range(5)]
    completions = text_backend.generate(requests)
    assert [c.completion_tokens for c in completions] == [3, 4, 5, 6, 7]  # random weights never stop early here
    assert all(c.finish_reason == "length" for c in completions)
    # the system turn and longer texts cost prompt tokens
    assert completions[0].prompt_tokens == text_backend.generate([requests[0]])[0].prompt_tokens
    bare = text_backend.generate([Request(text="Merge caption number 0.", max_tokens=3)])[0]
    assert bare.prompt_tokens != completions[0].prompt_tokens


def test_batched_equals_one_by_one(tiny_text_dir):
    requests = [Request(text=text, max_tokens=6) for text in ("A dog barks.", "Rain on a tin roof at night, thunder.")]
    batched = backend(tiny_text_dir, "text", max_batch=2).generate(requests)
    single = backend(tiny_text_dir, "text", max_batch=1).generate(requests)
    assert [c.text for c in batched] == [c.text for c in single]
    assert [c.prompt_tokens for c in batched] == [c.prompt_tokens for c in single]


def test_stop_is_reported_and_schema_does_not_break_decoding(tiny_text_stop_dir):
    schema = {"type": "object", "properties": {"category": {"type": "string"}}, "required": ["category"]}
    completion = backend(tiny_text_stop_dir, "text").generate([Request(text="Classify.", json_schema=schema)])[0]
    assert completion.finish_reason == "stop" and completion.text == "" and completion.completion_tokens == 1


def test_timeout_raises(tiny_text_dir):
    slow = backend(tiny_text_dir, "text", timeout_s=1e-4)
    with pytest.raises(BackendTimeout, match="timeout_s"):
        slow.generate([Request(text="Write a long story.", max_tokens=2000)])


def test_video_captions_from_frames(tiny_vl_dir, clip_frames):
    vl = backend(tiny_vl_dir, "video")
    requests = [
        Request(text="Describe the video.", system="You caption videos.", frames=clip_frames, fps=2.0, max_tokens=5),
        Request(text="Describe.", frames=clip_frames[:3], fps=1.0, max_tokens=4),  # odd frame count: padded
        Request(text="No video at all.", max_tokens=3),
    ]
    completions = vl.generate(requests)
    for completion, request in zip(completions, requests):
        check(completion, request.max_tokens)
    assert [c.completion_tokens for c in completions] == [5, 4, 3]
    # 6 frames cost more video tokens than 3 (padded to 4), and both more than none
    assert completions[0].prompt_tokens > completions[1].prompt_tokens > completions[2].prompt_tokens


def test_video_pixel_budget_changes_token_count(tiny_vl_dir, clip_frames):
    request = Request(text="Describe.", frames=clip_frames, fps=2.0, max_tokens=2)
    small = backend(tiny_vl_dir, "video", video_min_pixels=56 * 56, video_max_pixels=56 * 56).generate([request])
    large = backend(tiny_vl_dir, "video", video_min_pixels=28 * 28 * 8, video_max_pixels=28 * 28 * 16).generate([request])
    assert small[0].prompt_tokens < large[0].prompt_tokens
    with pytest.raises(ValueError, match="video_max_pixels"):
        backend(tiny_vl_dir, "video", video_max_pixels=28 * 28)


def test_audio_captions_any_rate(tiny_audio_dir, clip_audio):
    audio = backend(tiny_audio_dir, "audio", max_batch=2)
    at_44k = np.interp(np.arange(88_200) / 44_100, np.arange(clip_audio.size) / 16_000, clip_audio).astype(np.float32)
    requests = [
        Request(text="Describe the sound.", audio=clip_audio, max_tokens=4),
        Request(text="Describe the sound.", audio=at_44k, audio_rate_hz=44_100, max_tokens=4),
        Request(text="Describe the sound.", audio=clip_audio[:8000], max_tokens=6),
    ]
    completions = audio.generate(requests)
    for completion, request in zip(completions, requests):
        check(completion, request.max_tokens)
    # 2 s at either rate is the same number of audio tokens; 0.5 s is fewer
    assert completions[0].prompt_tokens == completions[1].prompt_tokens > completions[2].prompt_tokens
    assert completions[2].completion_tokens == 6


def test_qwen2_5_vl_gets_the_frame_rate(tmp_path, clip_frames):
    from tests.llm_tiny import build_tiny_vl_model

    vl = backend(build_tiny_vl_model(tmp_path / "tiny-qwen2.5-vl", family="qwen2_5_vl"), "video")
    requests = [Request(text="Describe.", frames=clip_frames, fps=4.0, max_tokens=3),
                Request(text="Describe.", frames=clip_frames, fps=1.0, max_tokens=3)]
    inputs = vl.model_inputs(requests)
    # Qwen2.5-VL's time positions: seconds per temporal patch of 2 frames, from the upstream sampling rate
    assert inputs["second_per_grid_ts"].tolist() == [0.5, 2.0]
    assert "mm_token_type_ids" in inputs
    assert [c.completion_tokens for c in vl.generate(requests)] == [3, 3]
