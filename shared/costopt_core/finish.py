"""Why a model's answer ended: one reader for every adapter, and what the reasons mean.

Providers name the finish reason differently and put it in different places:
OpenAI's ``choices[0].finish_reason`` (``"length"``, ``"content_filter"``),
Anthropic's ``stop_reason`` (``"max_tokens"``, ``"refusal"``), Bedrock
Converse's ``stopReason`` (``"max_tokens"``, ``"guardrail_intervened"``),
Gemini's ``candidates[0].finish_reason`` (``MAX_TOKENS``, ``SAFETY``; an enum
in its SDK), Ollama's ``done_reason``, OpenAI's Responses API's
``incomplete_details.reason``. An adapter that read only some of them would
take a cut-off or blocked answer for a whole one (and cache it, or not
escalate it), so every adapter reads them here, and the engines decide on the
normalised form (:func:`normalise_finish_reason`) against the sets below.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

from costopt_core.usage import first_field

__all__ = [
    "BLOCKED_FINISH_REASONS",
    "FAILED_FINISH_REASONS",
    "FINISH_REASON_KEYS",
    "TRUNCATED_FINISH_REASONS",
    "finish_reason_of",
    "normalise_finish_reason",
]

#: Where a response (or a choice / candidate of it) names its finish reason.
FINISH_REASON_KEYS = ("finish_reason", "stop_reason", "stopReason", "finishReason", "done_reason")

#: Cut by the output (or context) limit: the answer is not whole (normalised form).
TRUNCATED_FINISH_REASONS = frozenset(
    {
        "length",  # OpenAI, Mistral, Ollama, llama.cpp
        "max_tokens",  # Anthropic, Bedrock, Gemini (MAX_TOKENS), Cohere v2
        "max_output_tokens",  # OpenAI Responses API (incomplete_details.reason)
        "model_length",  # Mistral: the context window
        "model_context_window_exceeded",  # Anthropic, Bedrock
        "error_limit",  # Cohere v1: the context window
    }
)

#: Stopped, replaced or withheld by a safety system: what came back is not the
#: model's answer to the question (normalised form).
BLOCKED_FINISH_REASONS = frozenset(
    {
        "content_filter",  # OpenAI, Azure OpenAI, OpenAI Responses API
        "content_filtered",  # Bedrock Converse
        "guardrail_intervened",  # Bedrock Converse (Bedrock Guardrails)
        "refusal",  # Anthropic
        "safety",  # Gemini
        "recitation",  # Gemini: stopped to avoid reciting training data
        "blocklist",  # Gemini
        "prohibited_content",  # Gemini
        "spii",  # Gemini: sensitive personal information
        "image_safety",  # Gemini
        "error_toxic",  # Cohere v1
    }
)

#: The call failed or stopped before its answer (normalised form).
FAILED_FINISH_REASONS = frozenset(
    {
        "error",  # Cohere, Mistral, some gateways
        "malformed_function_call",  # Gemini: the tool call it made does not parse
        "unexpected_tool_call",  # Gemini: a tool call to a tool it was not given
        "pause_turn",  # Anthropic: a long turn paused, to be continued by a new call
    }
)


def _reason(value: Any) -> str | None:
    """A finish reason as its provider named it, or None if ``value`` is none."""
    if isinstance(value, Enum):  # Gemini's FinishReason: its name, MAX_TOKENS
        return str(value.name) or None
    if isinstance(value, str):
        return value or None
    return None


def _first(items: Any) -> Any:
    """The first item of a list (a response's first choice or candidate), else None."""
    if isinstance(items, Sequence) and not isinstance(items, str | bytes) and items:
        return items[0]
    return None


def _own_reason(source: Any) -> str | None:
    """The finish reason ``source`` itself names, under any provider's key."""
    for key in FINISH_REASON_KEYS:
        reason = _reason(first_field(source, key))
        if reason is not None:
            return reason
    return None


def finish_reason_of(*sources: Any) -> str | None:
    """Why an answer ended, as its provider named it, read from the first source naming it.

    Each source (a mapping or an SDK object: a raw response, a message's
    metadata, its ``additional_kwargs``) is read at its top level under every
    key of :data:`FINISH_REASON_KEYS`, then in its first ``choices`` entry
    (OpenAI), its first ``candidates`` entry (Gemini) and its
    ``incomplete_details.reason`` (OpenAI's Responses API). An enum value is
    read as its name (Gemini's ``FinishReason.MAX_TOKENS``: ``"MAX_TOKENS"``).

    Args:
        *sources: where the reason may be, the most authoritative first;
            None and non-containers are skipped.

    Returns:
        The reason as given (case kept: see :func:`normalise_finish_reason`),
        or None if no source names one.

    Example:
        >>> finish_reason_of({"stopReason": "guardrail_intervened"})
        'guardrail_intervened'
        >>> finish_reason_of({"candidates": [{"finish_reason": "MAX_TOKENS"}]})
        'MAX_TOKENS'
    """
    for source in sources:
        if source is None or isinstance(source, str | bytes | int | float):
            continue
        reason = (
            _own_reason(source)
            or _own_reason(_first(first_field(source, "choices")))
            or _own_reason(_first(first_field(source, "candidates")))
            or _reason(first_field(first_field(source, "incomplete_details"), "reason"))
        )
        if reason is not None:
            return reason
    return None


def normalise_finish_reason(reason: str | None) -> str:
    """``reason`` in the form the sets above hold: lower case, without an enum's class.

    ``"MAX_TOKENS"``, ``"FinishReason.MAX_TOKENS"`` (an enum written with
    ``str()``) and ``" max_tokens "`` all read ``"max_tokens"``; None reads ``""``.

    Example:
        >>> normalise_finish_reason("FinishReason.SAFETY")
        'safety'
    """
    return (reason or "").strip().rsplit(".", 1)[-1].lower()
