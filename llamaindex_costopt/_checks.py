"""Type checks of the adapters' settings, failing with a message that says the fix.

Pydantic's own message for a wrong type ("Input should be an instance of
CostEngine") names neither what was meant nor how to build it; these checks
run as ``mode="before"`` field validators, so :func:`costopt_core.errors.config_error`
reports the field, the value given and the message below. The checks both
frameworks share live in :mod:`costopt_core.checks`; these are LlamaIndex's own.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.llms import LLM

from costopt_core.cache import SemanticCache
from costopt_core.checks import check_engine, check_type

__all__ = ["check_cache", "check_engine", "check_llm", "check_type"]


def check_llm(value: Any) -> Any:
    """A LlamaIndex ``LLM`` instance (``None`` is left to the field's own check)."""
    return check_type(
        value,
        LLM,
        "llm must be a LlamaIndex LLM instance",
        "pass the model object, e.g. OpenAI(model='gpt-4o-mini'), not its name",
    )


def check_cache(value: Any) -> Any:
    """A ``costopt_core.cache.SemanticCache`` or ``None`` (the default)."""
    return check_type(
        value,
        SemanticCache,
        "semantic_cache must be a costopt_core.cache.SemanticCache",
        "build one, e.g. SemanticCache('memory') or SemanticCache(SQLiteCacheBackend(path)), "
        "or leave it out for an in-memory cache",
    )
