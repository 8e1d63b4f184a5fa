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

__all__ = ["BackendError", "BackendTimeout", "Completion", "LLMBackend", "LLMConfig", "MissingWeights", "Request"]
