"""Type checks of the adapters' settings, failing with a message that says the fix.

Pydantic's own message for a wrong type ("Input should be an instance of
CostEngine") names neither what was meant nor how to build it; these checks
run as ``mode="before"`` field validators, so :func:`costopt_core.errors.config_error`
reports the field, the value given and the message below.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.llms import LLM

from costopt_core.cache import SemanticCache
from costopt_core.engine import CostEngine
from costopt_core.errors import ConfigurationError

__all__ = ["check_cache", "check_engine", "check_llm", "check_type"]


def check_type(value: Any, expected: type, what: str, fix: str) -> Any:
    """``value`` if it is ``None`` or an ``expected``; else a ``ConfigurationError``.

    Args:
        value: the setting as given.
        expected: the class it must be an instance of.
        what: the setting and its type as the user knows them,
            e.g. ``"engine must be a costopt_core.CostEngine"``.
        fix: what to pass instead.
    """
    if value is None or isinstance(value, expected):
        return value
    raise ConfigurationError(f"{what}, got {type(value).__name__}; {fix}")


def check_engine(value: Any) -> Any:
    """A ``CostEngine`` or ``None`` (the current engine)."""
    return check_type(
        value,
        CostEngine,
        "engine must be a costopt_core.CostEngine",
        "pass CostEngine(...) or leave engine out to use the current one",
    )


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
