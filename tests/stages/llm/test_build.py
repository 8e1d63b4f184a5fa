import subprocess
import sys
from pathlib import Path

import pytest

from stages.llm import LLMConfig, MissingWeights, build_backend
from stages.llm.openai_backend import OpenAIBackend
from stages.llm.transformers_backend import TransformersBackend

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_missing_path_names_path_and_key(tmp_path, backend):
    missing = tmp_path / "Qwen2-VL-7B-Instruct"
    config = LLMConfig(backend=backend, model_path=str(missing))
    with pytest.raises(MissingWeights, match=r"caption_video\.llm\.model_path = .*Qwen2-VL-7B-Instruct.*does not exist"):
        build_backend(config, "video", where="caption_video.llm")


def test_directory_without_checkpoint_and_unset_path(tmp_path):
    with pytest.raises(MissingWeights, match="no config.json"):
        build_backend(LLMConfig(backend="transformers", model_path=str(tmp_path)), "text")
    with pytest.raises(MissingWeights, match=r"llm\.model_path is not set"):
        build_backend(LLMConfig(backend="vllm"), "text")


def test_missing_weights_fail_before_heavy_imports(tmp_path):
    code = (
        "import sys\n"
        "from stages.llm import LLMConfig, MissingWeights, build_backend\n"
        f"config = LLMConfig(backend='transformers', model_path={str(tmp_path / 'none')!r})\n"
        "try:\n    build_backend(config, 'audio')\nexcept MissingWeights:\n    pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_builds_the_configured_backend(tiny_text_dir):
    backend = build_backend(LLMConfig(backend="transformers", model_path=str(tiny_text_dir)), "text")
    assert isinstance(backend, TransformersBackend)
    assert backend.backend_id == f"transformers:{tiny_text_dir.name}" and backend.model_id == tiny_text_dir.name
    remote = build_backend(LLMConfig(backend="openai", endpoint="http://127.0.0.1:9/v1", model="qwen"), "text")
    assert isinstance(remote, OpenAIBackend) and remote.backend_id == "openai:qwen"
    with pytest.raises(ValueError, match="modality"):
        build_backend(LLMConfig(backend="transformers", model_path=str(tiny_text_dir)), "image")


def test_config_rejects_bad_video_budget():
    with pytest.raises(ValueError, match="video_min_pixels"):
        LLMConfig(video_min_pixels=1000, video_max_pixels=10)
    LLMConfig(video_min_pixels=1000)  # a lower bound alone is valid
