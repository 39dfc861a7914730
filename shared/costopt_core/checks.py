"""Type checks of the adapters' settings, failing with a message that says the fix.

Pydantic's own message for a wrong type ("Input should be an instance of
CostEngine") names neither what was meant nor how to build it. The adapters
run these as ``mode="before"`` field validators, so
:func:`costopt_core.errors.config_error` reports the field, the value given
and the message below; both frameworks' components share them.
"""

from __future__ import annotations

from typing import Any

from costopt_core.errors import ConfigurationError

__all__ = [
    "check_component_cache",
    "check_engine",
    "check_summarizer_config",
    "check_type",
]


def check_type(value: Any, expected: type, what: str, fix: str) -> Any:
    """``value`` if it is ``None`` or an ``expected``; else a ``ConfigurationError``.

    Args:
        value: the setting as given.
        expected: the class it must be an instance of.
        what: the setting and its type as the user knows them,
            e.g. ``"engine must be a costopt_core.CostEngine"``.
        fix: what to pass instead.

    Example:
        >>> check_type(3, int, "n must be an int", "pass a whole number")
        3
        >>> check_type("3", int, "n must be an int", "pass a whole number")
        Traceback (most recent call last):
        ...
        costopt_core.errors.ConfigurationError: n must be an int, got str; pass a whole number
    """
    if value is None or isinstance(value, expected):
        return value
    raise ConfigurationError(f"{what}, got {type(value).__name__}; {fix}")


def check_engine(value: Any) -> Any:
    """A ``CostEngine`` or ``None`` (the current engine)."""
    from costopt_core.engine import CostEngine  # the engine imports this package's errors

    return check_type(
        value,
        CostEngine,
        "engine must be a costopt_core.CostEngine",
        "pass CostEngine(...) or leave engine out to use the current one",
    )


def check_component_cache(value: Any) -> Any:
    """A ``ComponentCache`` or ``None`` (summaries are not cached)."""
    from costopt_core.cache.component import ComponentCache

    return check_type(
        value,
        ComponentCache,
        "cache must be a costopt_core.cache.component.ComponentCache",
        "build one, e.g. ComponentCache(SemanticCache(), 'summaries'), or leave it out",
    )


def check_summarizer_config(value: Any, expected: Any) -> Any:
    """A summarizer's own config class (``expected``), a dict of its fields, or ``None``."""
    if value is None or isinstance(value, dict) or not isinstance(expected, type):
        return value
    name = expected.__name__
    return check_type(
        value,
        expected,
        f"config must be a costopt_core.context.summarize.{name}",
        f"build one, e.g. {name}(...), or leave config out for the defaults",
    )
