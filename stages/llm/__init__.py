"""LLM backends behind one small interface (see :mod:`stages.llm.base`)."""

from stages.llm.base import (
    BackendError,
    BackendTimeout,
    Completion,
    LLMBackend,
    LLMConfig,
    MissingWeights,
    Request,
)
from stages.llm.build import build_backend

__all__ = ["BackendError", "BackendTimeout", "Completion", "LLMBackend", "LLMConfig", "MissingWeights", "Request", "build_backend"]
