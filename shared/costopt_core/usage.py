"""Token-usage normalization: every provider's payload into one ``Usage``.

Providers disagree on what "input tokens" means, which is how cost reports end
up wrong by several times on cached traffic:

- LangChain ``usage_metadata``: ``input_tokens`` INCLUDES cache reads and cache
  writes (``input_token_details.cache_read`` / ``cache_creation``).
- OpenAI: ``prompt_tokens`` (Responses API: ``input_tokens``) INCLUDES
  ``prompt_tokens_details.cached_tokens``; reasoning tokens are inside
  ``completion_tokens``.
- Anthropic: ``input_tokens`` EXCLUDES ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens``.
- Gemini: ``prompt_token_count`` INCLUDES ``cached_content_token_count``;
  ``candidates_token_count`` EXCLUDES ``thoughts_token_count``, billed as output.
- Bedrock Converse (camelCase): ``inputTokens`` EXCLUDES ``cacheReadInputTokens``
  and ``cacheWriteInputTokens``.

All of that is decided here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from costopt_core.errors import UsageFormatError
from costopt_core.types import Usage

__all__ = [
    "UsageFormat",
    "detect_usage_format",
    "first_field",
    "normalize_usage",
    "usage_from_anthropic",
    "usage_from_bedrock",
    "usage_from_gemini",
    "usage_from_langchain",
    "usage_from_openai",
    "usage_wire",
]

UsageFormat = Literal["langchain", "openai", "anthropic", "gemini", "bedrock"]


def first_field(obj: Any, *keys: str) -> Any:
    """First present key of a mapping or attribute of an SDK object (None if none)."""
    if obj is None:
        return None
    if type(obj) is dict:  # the common case, without the slow ABC check
        for key in keys:
            value = obj.get(key)
            if value is not None:
                return value
        return None
    for key in keys:
        if isinstance(obj, Mapping):
            if key in obj and obj[key] is not None:
                return obj[key]
        else:
            value = getattr(obj, key, None)
            if value is not None:
                return value
    return None


def _int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, bool):
        raise UsageFormatError(f"usage field {name} must be an integer, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        try:
            value = int(str(value))
        except ValueError:
            raise UsageFormatError(
                f"usage field {name} must be an integer, got {value!r}"
            ) from None
    count = int(value)
    if count < 0:
        raise UsageFormatError(f"usage field {name} must be >= 0, got {count}")
    return count


def _sum(*values: int | None) -> int | None:
    if all(v is None for v in values):
        return None
    return sum(v or 0 for v in values)


def usage_from_langchain(usage_metadata: Any) -> Usage:
    """LangChain ``AIMessage.usage_metadata`` (input includes cache reads/writes)."""
    if type(usage_metadata) is dict:
        # LangChain's UsageMetadata is a TypedDict, so this is the common case,
        # and it runs on every recorded call: read it without first_field/_int.
        details = usage_metadata.get("input_token_details") or {}
        out_details = usage_metadata.get("output_token_details") or {}
        if type(details) is dict and type(out_details) is dict:
            writes = (
                details.get("cache_creation"),
                details.get("ephemeral_5m_input_tokens"),
                details.get("ephemeral_1h_input_tokens"),
            )
            # Only the writes take part in arithmetic; Usage checks the rest.
            for value in writes:
                if value is not None and (type(value) is not int or value < 0):
                    break
            else:
                try:
                    return _langchain_usage(
                        usage_metadata.get("input_tokens"),
                        usage_metadata.get("output_tokens"),
                        details.get("cache_read"),
                        *writes,
                        out_details.get("reasoning"),
                        usage_metadata.get("total_tokens"),
                    )
                except UsageFormatError:
                    pass  # a count to convert, or to reject naming its field: below
    details = first_field(usage_metadata, "input_token_details") or {}
    out_details = first_field(usage_metadata, "output_token_details") or {}
    return _langchain_usage(
        _int(first_field(usage_metadata, "input_tokens"), "input_tokens"),
        _int(first_field(usage_metadata, "output_tokens"), "output_tokens"),
        _int(first_field(details, "cache_read"), "cache_read"),
        _int(first_field(details, "cache_creation"), "cache_creation"),
        _int(first_field(details, "ephemeral_5m_input_tokens"), "ephemeral_5m_input_tokens"),
        _int(first_field(details, "ephemeral_1h_input_tokens"), "ephemeral_1h_input_tokens"),
        _int(first_field(out_details, "reasoning"), "reasoning"),
        first_field(usage_metadata, "total_tokens"),
    )


def _langchain_usage(
    input_tokens: int | None,
    output_tokens: int | None,
    read: int | None,
    generic_write: int | None,
    w5: int | None,
    w1h: int | None,
    reasoning: int | None,
    total: Any = None,
) -> Usage:
    split = (w5 or 0) + (w1h or 0)
    # Integrations that report the TTL split either zero the generic counter or
    # repeat the split's total in it; only an excess over the split is extra
    # (written at the default 5-minute TTL).
    if generic_write and generic_write > split:
        w5 = (w5 or 0) + generic_write - split
    counts = (input_tokens, output_tokens, read, w5, w1h)
    # Usage validates the counts; a bad one is left for it to name.
    valid = all(c is None or (type(c) is int and c >= 0) for c in counts)
    cached = (read or 0) + (w5 or 0) + (w1h or 0) if valid else 0
    if type(total) is not int:
        total = None
    if input_tokens is not None and cached:
        # LangChain's input_tokens include cache reads and writes; some
        # integrations pass a provider's non-cached count instead (Bedrock
        # Converse's inputTokens in langchain-aws). The total tells them apart
        # or, without one, a cache larger than the input does (a total that
        # says inclusive with such a cache is left for Usage to refuse).
        exclusive = (
            total == input_tokens + output_tokens + cached
            if total is not None and output_tokens is not None
            else cached > input_tokens
        )
        if exclusive:
            input_tokens += cached
    # LangChain omits zero details, so with a known input a missing kind is 0.
    zero = 0 if input_tokens is not None else None
    return Usage(
        input_tokens,
        output_tokens,
        read if read is not None else zero,
        w5 if w5 is not None else zero,
        w1h if w1h is not None else zero,
        reasoning,
    )


def usage_from_openai(usage: Any) -> Usage:
    """OpenAI Chat Completions or Responses ``usage`` (input includes cached)."""
    if type(usage) is dict:
        # A Chat Completions payload as a plain dict (what LlamaIndex's ``raw``
        # and JSON clients hold): read it without first_field/_int.
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        in_details = usage.get("prompt_tokens_details") or {}
        out_details = usage.get("completion_tokens_details") or {}
        if (prompt is not None or completion is not None) and (
            type(in_details) is dict and type(out_details) is dict
        ):
            try:  # no arithmetic on the counts: Usage checks them
                return _openai_usage(
                    prompt,
                    completion,
                    in_details.get("cached_tokens"),
                    out_details.get("reasoning_tokens"),
                )
            except UsageFormatError:
                pass  # a count to convert, or to reject naming its field: below
    responses_api = first_field(usage, "prompt_tokens", "completion_tokens") is None
    in_key, out_key = (
        ("input_tokens", "output_tokens")
        if responses_api
        else ("prompt_tokens", "completion_tokens")
    )
    prompt = _int(first_field(usage, in_key), in_key)
    completion = _int(first_field(usage, out_key), out_key)
    in_details = first_field(usage, f"{in_key}_details")
    out_details = first_field(usage, f"{out_key}_details")
    return _openai_usage(
        prompt,
        completion,
        _int(first_field(in_details, "cached_tokens"), "cached_tokens"),
        _int(first_field(out_details, "reasoning_tokens"), "reasoning_tokens"),
    )


def _openai_usage(
    prompt: int | None, completion: int | None, cached: int | None, reasoning: int | None
) -> Usage:
    if cached is None and prompt is not None:
        cached = 0  # OpenAI always reports cache hits; no details means none.
    zero = 0 if prompt is not None else None
    return Usage(prompt, completion, cached, zero, zero, reasoning)


def usage_from_anthropic(usage: Any) -> Usage:
    """Anthropic ``usage`` (``input_tokens`` EXCLUDES cache reads and writes)."""
    uncached = _int(first_field(usage, "input_tokens"), "input_tokens")
    read = _int(first_field(usage, "cache_read_input_tokens"), "cache_read_input_tokens")
    write_total = _int(
        first_field(usage, "cache_creation_input_tokens"), "cache_creation_input_tokens"
    )
    split = first_field(usage, "cache_creation")
    w5 = _int(first_field(split, "ephemeral_5m_input_tokens"), "ephemeral_5m_input_tokens")
    w1h = _int(first_field(split, "ephemeral_1h_input_tokens"), "ephemeral_1h_input_tokens")
    if w5 is None and w1h is None:
        w5, w1h = write_total, (0 if write_total is not None else None)
    elif write_total is not None and write_total > (w5 or 0) + (w1h or 0):
        # Tokens the split does not account for were written at the default TTL.
        w5 = write_total - (w1h or 0)
    total = None if uncached is None else uncached + (read or 0) + (w5 or 0) + (w1h or 0)
    return Usage(
        input_tokens=total,
        output_tokens=_int(first_field(usage, "output_tokens"), "output_tokens"),
        cache_read_tokens=read if read is not None else (0 if total is not None else None),
        cache_write_5m_tokens=w5 if w5 is not None else (0 if total is not None else None),
        cache_write_1h_tokens=w1h if w1h is not None else (0 if total is not None else None),
    )


def usage_from_gemini(usage_metadata: Any) -> Usage:
    """Gemini ``usage_metadata`` (snake_case SDK objects or camelCase REST JSON).

    Tool-use prompt tokens (search, code execution) are billed as input;
    thinking tokens as output. The REST API leaves zero counts out.
    """

    def count(snake: str) -> int | None:
        parts = snake.split("_")
        camel = parts[0] + "".join(p.title() for p in parts[1:])
        value = first_field(usage_metadata, snake)
        if value is not None:
            return _int(value, snake)
        return _int(first_field(usage_metadata, camel), camel)

    prompt = count("prompt_token_count")
    tool_prompt = count("tool_use_prompt_token_count")
    cached = count("cached_content_token_count")
    candidates = count("candidates_token_count")
    thoughts = count("thoughts_token_count")
    known = prompt is not None
    zero = 0 if known else None
    return Usage(
        input_tokens=_sum(prompt, tool_prompt),
        output_tokens=_sum(candidates, thoughts) if candidates or thoughts else zero,
        cache_read_tokens=cached if cached is not None else zero,
        cache_write_5m_tokens=zero,
        cache_write_1h_tokens=zero,
        reasoning_tokens=thoughts,
    )


def usage_from_bedrock(usage: Any) -> Usage:
    """Bedrock Converse ``usage`` (``inputTokens`` EXCLUDES the cache reads and writes).

    ``cacheWriteInputTokens`` carries no TTL: the writes are taken as 5-minute
    ones (Bedrock's default cache checkpoint).
    """
    uncached = _int(first_field(usage, "inputTokens"), "inputTokens")
    read = _int(first_field(usage, "cacheReadInputTokens"), "cacheReadInputTokens")
    write = _int(first_field(usage, "cacheWriteInputTokens"), "cacheWriteInputTokens")
    total = None if uncached is None else uncached + (read or 0) + (write or 0)
    zero = 0 if total is not None else None
    return Usage(
        input_tokens=total,
        output_tokens=_int(first_field(usage, "outputTokens"), "outputTokens"),
        cache_read_tokens=read if read is not None else zero,
        cache_write_5m_tokens=write if write is not None else zero,
        cache_write_1h_tokens=zero,
    )


def detect_usage_format(payload: Any) -> UsageFormat | None:
    """Guess the payload's provider from the keys only it uses."""
    if (
        first_field(payload, "prompt_token_count", "promptTokenCount", "candidates_token_count")
        is not None
    ):
        return "gemini"
    if (
        first_field(
            payload, "inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens"
        )
        is not None
    ):
        return "bedrock"
    if first_field(payload, "prompt_tokens", "completion_tokens") is not None:
        return "openai"
    if (
        first_field(
            payload, "cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation"
        )
        is not None
    ):
        return "anthropic"
    if first_field(payload, "input_tokens_details", "output_tokens_details") is not None:
        return "openai"  # Responses API (LangChain's keys say "token", not "tokens")
    if (
        first_field(payload, "input_token_details", "output_token_details", "total_tokens")
        is not None
    ):
        return "langchain"
    if first_field(payload, "input_tokens") is not None:
        # Bare {input_tokens, output_tokens}: LangChain and Anthropic agree when
        # there is no caching, so either reading is right.
        return "langchain"
    return None


_READERS = {
    "langchain": usage_from_langchain,
    "openai": usage_from_openai,
    "anthropic": usage_from_anthropic,
    "gemini": usage_from_gemini,
    "bedrock": usage_from_bedrock,
}


def normalize_usage(payload: Any, fmt: UsageFormat | None = None) -> Usage:
    """Read any supported usage payload; unknown or missing payloads give ``Usage()``.

    Args:
        payload: a mapping or SDK object holding token counts.
        fmt: the payload's format; detected from its keys when omitted.

    Raises:
        UsageFormatError: a count is negative or not an integer, or ``fmt`` is unknown.
    """
    if payload is None:
        return Usage()
    if fmt is None:
        fmt = detect_usage_format(payload)
        if fmt is None:
            return Usage()
    reader = _READERS.get(fmt)
    if reader is None:
        raise UsageFormatError(f"unknown usage format {fmt!r}; use one of {sorted(_READERS)}")
    return reader(payload)


def usage_wire(u: Usage) -> dict[str, Any]:
    """``u`` in LangChain's ``usage_metadata`` shape (input includes cache reads and
    writes), which :func:`normalize_usage` reads back to the same counts; unknown
    details are left out rather than written as zeros."""
    out: dict[str, Any] = {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens}
    if u.total_tokens is not None:
        out["total_tokens"] = u.total_tokens
    details = {
        k: v
        for k, v in (
            ("cache_read", u.cache_read_tokens),
            ("ephemeral_5m_input_tokens", u.cache_write_5m_tokens),
            ("ephemeral_1h_input_tokens", u.cache_write_1h_tokens),
        )
        if v is not None
    }
    if details:
        out["input_token_details"] = details
    if u.reasoning_tokens is not None:
        out["output_token_details"] = {"reasoning": u.reasoning_tokens}
    return out
