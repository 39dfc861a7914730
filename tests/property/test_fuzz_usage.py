"""Usage payloads of every provider shape under junk: a consistent Usage or UsageFormatError.

Payloads come from SDK objects, JSON clients and framework metadata; any of
them can hold negatives, floats, strings, ``None``, nested junk or miss keys.
``normalize_usage`` must answer with a ``Usage`` that never double counts
(total input >= cache reads + writes) or raise ``UsageFormatError``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from costopt_core.errors import UsageFormatError
from costopt_core.types import Usage
from costopt_core.usage import normalize_usage, usage_wire

from ._strategies import FUZZ, Attrs, json_like

count = st.one_of(
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["12", "-3", "1e3", "abc", "", " 7 ", "0x10", "1_000", "٣"]),
    st.none(),
    st.booleans(),
    json_like,
)

SHAPES: dict[str, dict[str, Any]] = {
    "openai": {
        "prompt_tokens": None,
        "completion_tokens": None,
        "total_tokens": None,
        "prompt_tokens_details": {"cached_tokens": None},
        "completion_tokens_details": {"reasoning_tokens": None},
    },
    "openai_responses": {
        "input_tokens": None,
        "output_tokens": None,
        "input_tokens_details": {"cached_tokens": None},
        "output_tokens_details": {"reasoning_tokens": None},
    },
    "anthropic": {
        "input_tokens": None,
        "output_tokens": None,
        "cache_read_input_tokens": None,
        "cache_creation_input_tokens": None,
        "cache_creation": {"ephemeral_5m_input_tokens": None, "ephemeral_1h_input_tokens": None},
    },
    "gemini": {
        "prompt_token_count": None,
        "promptTokenCount": None,
        "candidates_token_count": None,
        "cached_content_token_count": None,
        "thoughts_token_count": None,
        "tool_use_prompt_token_count": None,
    },
    "langchain": {
        "input_tokens": None,
        "output_tokens": None,
        "total_tokens": None,
        "input_token_details": {
            "cache_read": None,
            "cache_creation": None,
            "ephemeral_5m_input_tokens": None,
            "ephemeral_1h_input_tokens": None,
        },
        "output_token_details": {"reasoning": None},
    },
}


@st.composite
def payloads(draw: st.DrawFn, shape: dict[str, Any]) -> Any:
    """``shape`` with each leaf drawn, dropped, or a nested part replaced by junk."""
    out: dict[str, Any] = {}
    for key, leaf in shape.items():
        choice = draw(st.integers(0, 9))
        if choice == 0:
            continue  # missing key
        if isinstance(leaf, dict):
            out[key] = draw(payloads(leaf)) if choice > 1 else draw(json_like)
        else:
            out[key] = draw(count)
    as_object = draw(st.integers(0, 3)) == 0
    return _objectify(out) if as_object else out


def _objectify(value: Any) -> Any:
    if isinstance(value, dict):
        return Attrs(**{k: _objectify(v) for k, v in value.items()})
    return value


def _check(usage: Usage) -> None:
    assert isinstance(usage, Usage)
    for name, value in usage.to_dict().items():
        assert value is None or (type(value) is int and value >= 0), (name, value)
    if usage.input_tokens is not None:
        cached = (
            (usage.cache_read_tokens or 0)
            + (usage.cache_write_5m_tokens or 0)
            + (usage.cache_write_1h_tokens or 0)
        )
        assert usage.input_tokens >= cached
        assert usage.uncached_input_tokens is not None and usage.uncached_input_tokens >= 0
    # What the engine writes back is read back to the same counts.
    assert normalize_usage(usage_wire(usage), "langchain") == usage or not usage.is_known


@pytest.mark.parametrize("shape", sorted(SHAPES))
@FUZZ
@given(data=st.data(), fmt=st.sampled_from([None, "openai", "anthropic", "gemini", "langchain"]))
def test_normalize_usage_is_consistent_or_a_usage_format_error(
    shape: str, data: st.DataObject, fmt: Any
) -> None:
    payload = data.draw(payloads(SHAPES[shape]))
    try:
        usage = normalize_usage(payload, fmt)
    except UsageFormatError:
        return
    _check(usage)


@FUZZ
@given(payload=json_like, fmt=st.sampled_from([None, "openai", "anthropic", "gemini", "langchain"]))
def test_normalize_usage_of_any_json_value(payload: Any, fmt: Any) -> None:
    try:
        usage = normalize_usage(payload, fmt)
    except UsageFormatError:
        return
    _check(usage)


@FUZZ
@given(
    fmt=st.text(max_size=10).filter(
        lambda f: f not in {"openai", "anthropic", "gemini", "langchain"}
    )
)
def test_unknown_format_is_a_usage_format_error(fmt: str) -> None:
    with pytest.raises(UsageFormatError, match="unknown usage format"):
        normalize_usage({"input_tokens": 1}, fmt)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("payload", "fmt", "field"),
    [
        ({"prompt_tokens": -1, "completion_tokens": 2}, "openai", "prompt_tokens"),
        ({"prompt_tokens": 1.5, "completion_tokens": 2}, "openai", "prompt_tokens"),
        ({"input_tokens": "many", "output_tokens": 1}, "anthropic", "input_tokens"),
        ({"prompt_token_count": True}, "gemini", "prompt_token_count"),
        ({"input_tokens": float("nan"), "output_tokens": 1}, "langchain", "input_tokens"),
        ({"input_tokens": float("inf"), "output_tokens": 1}, "langchain", "input_tokens"),
    ],
)
def test_bad_counts_name_their_field(payload: dict[str, Any], fmt: Any, field: str) -> None:
    with pytest.raises(UsageFormatError, match=field):
        normalize_usage(payload, fmt)


def test_anthropic_cache_is_added_not_double_counted() -> None:
    usage = normalize_usage(
        {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
        },
        "anthropic",
    )
    assert usage == Usage(130, 5, 100, 20, 0)
    cached_more_than_prompt = {
        "prompt_tokens": 10,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 11},
    }
    with pytest.raises(UsageFormatError, match="exceed input_tokens"):
        normalize_usage(cached_more_than_prompt, "openai")
