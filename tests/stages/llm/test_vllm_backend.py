"""The vLLM backend's code path against a fake ``vllm`` module (vllm cannot be installed in CI): the
engine arguments, the rendered prompts, the media and the sampling parameters it builds, and how it
reads RequestOutput-shaped answers. The real engine runs in the GPU test at the end."""

import os
import sys
import types
from dataclasses import dataclass, field

import numpy as np
import pytest

from stages.llm import BackendError, LLMConfig, Request, build_backend
from stages.llm.vllm_backend import VLLMBackend


@dataclass
class CompletionOutput:  # the fields of vllm.outputs.CompletionOutput the backend reads
    text: str
    token_ids: list[int]
    finish_reason: str | None


@dataclass
class RequestOutput:  # ... and of vllm.outputs.RequestOutput
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


class FakeEngine:
    """Answers each prompt with its own index and media summary; replies stop after 3 tokens."""

    instances: list["FakeEngine"] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = []
        self.finish_override: str | None = None
        FakeEngine.instances.append(self)

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((prompts, sampling_params))
        outputs = []
        for index, (prompt, params) in enumerate(zip(prompts, sampling_params)):
            length = min(3, params.kwargs["max_tokens"])
            reason = self.finish_override or ("stop" if length == 3 else "length")
            media = sorted(prompt.get("multi_modal_data", {}))
            outputs.append(RequestOutput(str(index), list(range(len(prompt["prompt"]))),
                                         [CompletionOutput(f"reply {index} {media}", list(range(length)), reason)]))
        return outputs


class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class StructuredOutputsParams:
    def __init__(self, json=None):
        self.json = json


@pytest.fixture(params=["structured_outputs", "guided_decoding"])
def fake_vllm(request, monkeypatch):
    """A ``vllm`` module with the new (>= 0.11) or the old name of the guided-decoding parameters."""
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = FakeEngine, SamplingParams
    sampling = types.ModuleType("vllm.sampling_params")
    if request.param == "structured_outputs":
        sampling.StructuredOutputsParams = StructuredOutputsParams
    else:
        sampling.GuidedDecodingParams = StructuredOutputsParams
    module.sampling_params = sampling
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    FakeEngine.instances.clear()
    return request.param


def test_engine_arguments_and_video_prompt(fake_vllm, tiny_vl_dir, clip_frames):
    config = LLMConfig(backend="vllm", model_path=str(tiny_vl_dir), gpu_memory_utilization=0.5, max_model_len=8192,
                       tensor_parallel_size=2, video_max_pixels=360 * 420)
    backend = build_backend(config, "video")
    assert isinstance(backend, VLLMBackend) and backend.backend_id == f"vllm:{tiny_vl_dir.name}"
    (engine,) = FakeEngine.instances
    assert engine.kwargs == {"model": str(tiny_vl_dir), "dtype": "auto", "gpu_memory_utilization": 0.5,
                             "tensor_parallel_size": 2, "seed": 0, "max_model_len": 8192,
                             "limit_mm_per_prompt": {"video": 1, "image": 0}}
    completions = backend.generate([
        Request(text="Describe the video.", system="You caption.", frames=clip_frames, fps=4.0, max_tokens=64),
        Request(text="And this one?", frames=clip_frames[:2], max_tokens=2),
    ])
    assert [c.text for c in completions] == ["reply 0 ['video']", "reply 1 ['video']"]
    assert [(c.finish_reason, c.completion_tokens) for c in completions] == [("stop", 3), ("length", 2)]
    (prompts, params), = engine.calls
    first = prompts[0]
    assert first["prompt"].count("<|vision_start|><|video_pad|><|vision_end|>") == 1
    assert "You caption." in first["prompt"] and first["prompt"].endswith("<|im_start|>assistant\n")
    frames, metadata = first["multi_modal_data"]["video"]
    assert np.array_equal(frames, clip_frames) and frames.dtype == np.uint8
    assert metadata["fps"] == 4.0 and metadata["total_num_frames"] == 6 and metadata["duration"] == 1.5
    assert metadata["frames_indices"] == list(range(6)) and metadata["do_sample_frames"] is False
    assert first["mm_processor_kwargs"] == {"size": {"longest_edge": 360 * 420}}
    assert prompts[1]["multi_modal_data"]["video"][1]["fps"] == 2.0  # Qwen2-VL's rate when the request says none
    assert completions[0].prompt_tokens == len(first["prompt"])
    assert [p.kwargs for p in params] == [{"max_tokens": 64, "temperature": 0.0, "seed": 0},
                                          {"max_tokens": 2, "temperature": 0.0, "seed": 0}]


def test_audio_and_text_prompts_and_guided_json(fake_vllm, tiny_audio_dir, tiny_text_dir, clip_audio):
    audio = build_backend(LLMConfig(backend="vllm", model_path=str(tiny_audio_dir)), "audio")
    audio.generate([Request(text="What do you hear?", audio=clip_audio, audio_rate_hz=16_000)])
    (prompts, _), = FakeEngine.instances[-1].calls
    assert FakeEngine.instances[-1].kwargs["limit_mm_per_prompt"] == {"audio": 1}
    assert prompts[0]["prompt"].count("<|audio_bos|><|AUDIO|><|audio_eos|>") == 1
    array, rate = prompts[0]["multi_modal_data"]["audio"]
    assert rate == 16_000 and np.array_equal(array, clip_audio)

    schema = {"type": "object", "properties": {"keywords": {"type": "array"}}, "required": ["keywords"]}
    text = build_backend(LLMConfig(backend="vllm", model_path=str(tiny_text_dir)), "text")
    text.generate([Request(text="Keywords?", json_schema=schema, temperature=0.7), Request(text="Plain.")])
    engine = FakeEngine.instances[-1]
    assert "limit_mm_per_prompt" not in engine.kwargs
    (prompts, params), = engine.calls
    assert "multi_modal_data" not in prompts[0] and "Keywords?" in prompts[0]["prompt"]
    guided = params[0].kwargs[fake_vllm]
    assert guided.json == schema and params[0].kwargs["temperature"] == 0.7
    assert set(params[1].kwargs) == {"max_tokens", "temperature", "seed"}


def test_engine_failures_raise_backend_error(fake_vllm, tiny_text_dir):
    backend = build_backend(LLMConfig(backend="vllm", model_path=str(tiny_text_dir)), "text")
    backend.engine.finish_override = "abort"
    with pytest.raises(BackendError, match="abort"):
        backend.generate([Request(text="x")])

    def crash(*args, **kwargs):
        raise RuntimeError("CUDA error: out of memory")

    backend.engine.generate = crash
    with pytest.raises(BackendError, match="out of memory"):
        backend.generate([Request(text="x")])
    assert backend.generate([]) == []


@pytest.mark.gpu
@pytest.mark.parametrize("env, modality", [("JAVIS_QWEN_VL", "video"), ("JAVIS_QWEN_TEXT", "text")])
def test_real_engine(env, modality, clip_frames):
    """A real vLLM engine over production weights: a caption, and schema-constrained JSON."""
    import json

    path = os.environ.get(env)
    if not path:
        pytest.skip(f"{env} is not set to a local checkpoint")
    pytest.importorskip("vllm")
    backend = build_backend(LLMConfig(backend="vllm", model_path=path, max_model_len=8192,
                                      gpu_memory_utilization=0.6), modality)
    frames = np.repeat(clip_frames, 2, axis=0) if modality == "video" else None
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    caption, structured = backend.generate([
        Request(text="Describe what you see in one sentence.", frames=frames, fps=2.0, max_tokens=64),
        Request(text="Name one colour as JSON.", frames=frames, fps=2.0, json_schema=schema, max_tokens=64),
    ])
    assert caption.text.strip() and caption.completion_tokens > 0
    assert "colour" in json.loads(structured.text)
