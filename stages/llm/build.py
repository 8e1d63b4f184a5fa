"""Build the configured backend for one annotation step: ``build_backend(config.llm, "video")``.

Local weights are checked before anything heavy is imported, so a wrong path fails at once with
the path and the config key in the message, never with a download attempt.
"""

from __future__ import annotations

from pathlib import Path

from stages.llm.base import LLMBackend, LLMConfig, MissingWeights

MODALITIES = ("video", "audio", "text")  # video: Qwen2-VL family; audio: Qwen2-Audio; text: Qwen2.5 chat


def check_weights(config: LLMConfig, where: str = "llm") -> Path:
    """The local model directory of a ``vllm`` / ``transformers`` config, or MissingWeights."""
    if not config.model_path:
        raise MissingWeights(f"{where}.model_path is not set: backend {config.backend!r} needs a local model directory")
    path = Path(config.model_path).expanduser()
    if not path.is_dir():
        raise MissingWeights(f"{where}.model_path = {str(path)!r} does not exist or is not a directory "
                             "(weights are never downloaded: put the checkpoint there or fix the path)")
    if not (path / "config.json").is_file():
        raise MissingWeights(f"{where}.model_path = {str(path)!r} has no config.json: not a Hugging Face checkpoint")
    return path


def build_backend(config: LLMConfig, modality: str, where: str = "llm") -> LLMBackend:
    """The backend named by ``config.backend`` for ``modality`` ("video", "audio" or "text").

    ``where`` is the config key of ``config`` (e.g. ``"caption_video.llm"``), used in error messages.
    Raises MissingWeights for a missing local model, ValueError for an unknown modality."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if config.backend == "openai":
        from stages.llm.openai_backend import OpenAIBackend

        return OpenAIBackend(config, modality)
    check_weights(config, where)
    if config.backend == "vllm":
        from stages.llm.vllm_backend import VLLMBackend

        return VLLMBackend(config, modality)
    from stages.llm.transformers_backend import TransformersBackend

    return TransformersBackend(config, modality)
