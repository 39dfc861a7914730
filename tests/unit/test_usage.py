"""Usage normalization: every provider's token counts into one ``Usage``.

The invariant checked throughout: the kinds partition the prompt
(uncached + cache read + 5-min write + 1-h write == input_tokens), output
includes reasoning, and input + output equals the provider's own total. So a
token is neither dropped nor counted twice.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costopt_core.errors import UsageFormatError
from costopt_core.pricing import PriceCatalog, cost_of
from costopt_core.testing import (
    usage_to_anthropic,
    usage_to_gemini,
    usage_to_langchain,
    usage_to_openai,
)
from costopt_core.types import Usage
from costopt_core.usage import (
    detect_usage_format,
    normalize_usage,
    usage_from_anthropic,
    usage_from_gemini,
    usage_from_langchain,
    usage_from_openai,
)

FORMATS = ("langchain", "openai", "anthropic", "gemini")


def parts(u: Usage) -> tuple[int, int, int, int]:
    """The prompt split into the four kinds billed at different rates."""
    assert u.uncached_input_tokens is not None
    return (
        u.uncached_input_tokens,
        u.cache_read_tokens or 0,
        u.cache_write_5m_tokens or 0,
        u.cache_write_1h_tokens or 0,
    )


def assert_partition(u: Usage) -> None:
    """No kind is negative and the kinds add up to the whole prompt."""
    p = parts(u)
    assert all(x >= 0 for x in p), p
    assert sum(p) == u.input_tokens


# --------------------------------------------------------------------------- LangChain


def test_langchain_plain_counts() -> None:
    u = normalize_usage(
        {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120}, fmt="langchain"
    )
    assert u == Usage(
        input_tokens=100,
        output_tokens=20,
        cache_read_tokens=0,
        cache_write_5m_tokens=0,
        cache_write_1h_tokens=0,
    )
    assert u.uncached_input_tokens == 100
    assert u.total_tokens == 120


def test_langchain_input_includes_cache_read_and_creation() -> None:
    payload = {
        "input_tokens": 1000,
        "output_tokens": 50,
        "total_tokens": 1050,
        "input_token_details": {"audio": 0, "cache_read": 600, "cache_creation": 300},
        "output_token_details": {"audio": 0, "reasoning": 20},
    }
    u = usage_from_langchain(payload)
    assert u.input_tokens == 1000  # not 1000 + 600 + 300
    assert u.cache_read_tokens == 600
    assert u.cache_write_5m_tokens == 300  # a write without a TTL is the default 5-min one
    assert (u.cache_write_1h_tokens or 0) == 0
    assert u.uncached_input_tokens == 100
    assert u.output_tokens == 50  # reasoning is inside output, not added to it
    assert u.reasoning_tokens == 20
    assert u.total_tokens == payload["total_tokens"]
    assert_partition(u)


def _lc_anthropic(uncached: int, read: int, w5: int, w1h: int, generic: int | None) -> dict:
    """usage_metadata as langchain-anthropic builds it (input = all prompt tokens)."""
    details: dict[str, int] = {
        "cache_read": read,
        "ephemeral_5m_input_tokens": w5,
        "ephemeral_1h_input_tokens": w1h,
    }
    if generic is not None:
        details["cache_creation"] = generic
    total_in = uncached + read + w5 + w1h
    return {
        "input_tokens": total_in,
        "output_tokens": 40,
        "total_tokens": total_in + 40,
        "input_token_details": details,
    }


@pytest.mark.parametrize(
    "generic",
    [0, 500, None],
    ids=["cache_creation-zeroed", "cache_creation-repeats-split-total", "cache_creation-absent"],
)
def test_langchain_ephemeral_split_is_not_double_counted(generic: int | None) -> None:
    payload = _lc_anthropic(uncached=100, read=1000, w5=200, w1h=300, generic=generic)
    u = usage_from_langchain(payload)
    assert u.input_tokens == 1600
    assert u.cache_read_tokens == 1000
    assert u.cache_write_5m_tokens == 200
    assert u.cache_write_1h_tokens == 300
    assert u.uncached_input_tokens == 100
    assert u.total_tokens == payload["total_tokens"]
    assert_partition(u)


def test_langchain_generic_creation_larger_than_split_goes_to_default_ttl() -> None:
    # 600 written, the split accounts for 500: the other 100 were written at 5 min.
    payload = _lc_anthropic(uncached=50, read=0, w5=200, w1h=300, generic=600)
    payload["input_tokens"] += 100
    payload["total_tokens"] += 100
    u = usage_from_langchain(payload)
    assert (u.cache_write_5m_tokens, u.cache_write_1h_tokens) == (300, 300)
    assert u.uncached_input_tokens == 50
    assert_partition(u)


def test_langchain_only_1h_split_with_repeated_generic() -> None:
    payload = {
        "input_tokens": 1000,
        "output_tokens": 1,
        "total_tokens": 1001,
        "input_token_details": {"cache_creation": 400, "ephemeral_1h_input_tokens": 400},
    }
    u = usage_from_langchain(payload)
    assert (u.cache_write_5m_tokens or 0) == 0
    assert u.cache_write_1h_tokens == 400
    assert u.uncached_input_tokens == 600
    assert_partition(u)


def test_langchain_no_details_means_no_cached_tokens() -> None:
    # LangChain integrations omit zero details; with a known input they are 0.
    u = usage_from_langchain({"input_tokens": 10, "output_tokens": 2})
    assert u.cache_read_tokens == 0
    assert u.cache_write_5m_tokens == 0
    assert u.reasoning_tokens is None  # reasoning is only known when reported
    assert u.uncached_input_tokens == 10
    unknown = usage_from_langchain({"output_tokens": 2})
    assert unknown.input_tokens is None and unknown.cache_read_tokens is None


# --------------------------------------------------------------------------- OpenAI


OPENAI_CHAT = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 192,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}

OPENAI_RESPONSES = {
    "input_tokens": 2006,
    "input_tokens_details": {"cached_tokens": 1920},
    "output_tokens": 300,
    "output_tokens_details": {"reasoning_tokens": 192},
    "total_tokens": 2306,
}

EXPECTED_OPENAI = Usage(
    input_tokens=2006,
    output_tokens=300,
    cache_read_tokens=1920,
    cache_write_5m_tokens=0,
    cache_write_1h_tokens=0,
    reasoning_tokens=192,
)


def test_openai_chat_prompt_includes_cached_and_completion_includes_reasoning() -> None:
    u = normalize_usage(OPENAI_CHAT, fmt="openai")
    assert u == EXPECTED_OPENAI
    assert u.uncached_input_tokens == 86
    assert u.total_tokens == OPENAI_CHAT["total_tokens"]
    assert_partition(u)


def test_openai_responses_api_with_explicit_format() -> None:
    u = normalize_usage(OPENAI_RESPONSES, fmt="openai")
    assert u == EXPECTED_OPENAI
    assert u.total_tokens == OPENAI_RESPONSES["total_tokens"]


def test_openai_without_details_means_no_cache_hit() -> None:
    u = usage_from_openai({"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57})
    assert u.cache_read_tokens == 0
    assert u.cache_write_5m_tokens == 0
    assert u.cache_write_1h_tokens == 0
    assert u.reasoning_tokens is None
    assert u.uncached_input_tokens == 50
    assert u.total_tokens == 57


def test_openai_sdk_object_with_none_details() -> None:
    # openai's CompletionUsage: details are None when the API did not send them.
    obj = SimpleNamespace(
        prompt_tokens=12,
        completion_tokens=3,
        total_tokens=15,
        prompt_tokens_details=None,
        completion_tokens_details=None,
    )
    assert normalize_usage(obj) == Usage(
        input_tokens=12,
        output_tokens=3,
        cache_read_tokens=0,
        cache_write_5m_tokens=0,
        cache_write_1h_tokens=0,
    )


def test_openai_sdk_objects_chat_and_responses() -> None:
    chat = SimpleNamespace(
        prompt_tokens=2006,
        completion_tokens=300,
        total_tokens=2306,
        prompt_tokens_details=SimpleNamespace(cached_tokens=1920, audio_tokens=0),
        completion_tokens_details=SimpleNamespace(reasoning_tokens=192),
    )
    responses = SimpleNamespace(
        input_tokens=2006,
        output_tokens=300,
        total_tokens=2306,
        input_tokens_details=SimpleNamespace(cached_tokens=1920),
        output_tokens_details=SimpleNamespace(reasoning_tokens=192),
    )
    assert normalize_usage(chat) == EXPECTED_OPENAI
    assert normalize_usage(responses, fmt="openai") == EXPECTED_OPENAI


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_input_excludes_cache_read_and_creation() -> None:
    payload = {
        "input_tokens": 50,
        "cache_read_input_tokens": 10_000,
        "cache_creation_input_tokens": 2_000,
        "output_tokens": 400,
    }
    u = normalize_usage(payload, fmt="anthropic")
    assert u == Usage(
        input_tokens=12_050,
        output_tokens=400,
        cache_read_tokens=10_000,
        cache_write_5m_tokens=2_000,
        cache_write_1h_tokens=0,
    )
    assert u.uncached_input_tokens == 50
    provider_total = sum(payload.values())
    assert u.total_tokens == provider_total
    assert_partition(u)


def test_anthropic_ttl_split() -> None:
    payload = {
        "input_tokens": 50,
        "cache_read_input_tokens": 10_000,
        "cache_creation_input_tokens": 2_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1_500},
        "output_tokens": 400,
    }
    u = usage_from_anthropic(payload)
    assert (u.cache_write_5m_tokens, u.cache_write_1h_tokens) == (500, 1_500)
    assert u.input_tokens == 12_050  # the split is not added on top of the total
    assert u.uncached_input_tokens == 50
    assert_partition(u)


def test_anthropic_split_short_of_total_puts_rest_at_default_ttl() -> None:
    payload = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 2_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 1_500},
        "output_tokens": 1,
    }
    u = usage_from_anthropic(payload)
    assert (u.cache_write_5m_tokens, u.cache_write_1h_tokens) == (500, 1_500)
    assert u.input_tokens == 2_010
    assert_partition(u)


def test_anthropic_without_caching() -> None:
    u = normalize_usage({"input_tokens": 10, "output_tokens": 5}, fmt="anthropic")
    assert u == Usage(
        input_tokens=10,
        output_tokens=5,
        cache_read_tokens=0,
        cache_write_5m_tokens=0,
        cache_write_1h_tokens=0,
    )
    assert u.reasoning_tokens is None  # Anthropic does not report thinking separately


def test_anthropic_sdk_objects() -> None:
    plain = SimpleNamespace(
        input_tokens=10,
        output_tokens=5,
        cache_read_input_tokens=None,
        cache_creation_input_tokens=None,
        cache_creation=None,
        server_tool_use=None,
        service_tier="standard",
    )
    assert normalize_usage(plain, fmt="anthropic") == Usage(
        input_tokens=10,
        output_tokens=5,
        cache_read_tokens=0,
        cache_write_5m_tokens=0,
        cache_write_1h_tokens=0,
    )
    cached = SimpleNamespace(
        input_tokens=7,
        output_tokens=100,
        cache_read_input_tokens=3_000,
        cache_creation_input_tokens=900,
        cache_creation=SimpleNamespace(
            ephemeral_5m_input_tokens=400, ephemeral_1h_input_tokens=500
        ),
    )
    u = normalize_usage(cached)
    assert u == Usage(
        input_tokens=3_907,
        output_tokens=100,
        cache_read_tokens=3_000,
        cache_write_5m_tokens=400,
        cache_write_1h_tokens=500,
    )
    assert_partition(u)


# --------------------------------------------------------------------------- Gemini

EXPECTED_GEMINI = Usage(
    input_tokens=1200,
    output_tokens=380,
    cache_read_tokens=1000,
    cache_write_5m_tokens=0,
    cache_write_1h_tokens=0,
    reasoning_tokens=300,
)


def test_gemini_prompt_includes_cached_and_thoughts_are_outside_candidates() -> None:
    payload = {
        "prompt_token_count": 1200,
        "cached_content_token_count": 1000,
        "candidates_token_count": 80,
        "thoughts_token_count": 300,
        "total_token_count": 1580,
    }
    u = usage_from_gemini(payload)
    assert u == EXPECTED_GEMINI
    assert normalize_usage(payload) == u
    assert u.uncached_input_tokens == 200
    assert u.total_tokens == payload["total_token_count"]
    assert_partition(u)


def test_gemini_camel_case_rest_json() -> None:
    payload = {
        "promptTokenCount": 1200,
        "cachedContentTokenCount": 1000,
        "candidatesTokenCount": 80,
        "thoughtsTokenCount": 300,
        "totalTokenCount": 1580,
    }
    u = normalize_usage(payload)
    assert u == EXPECTED_GEMINI
    assert u.total_tokens == payload["totalTokenCount"]


def test_gemini_sdk_object_with_unset_fields() -> None:
    obj = SimpleNamespace(
        prompt_token_count=40,
        cached_content_token_count=None,
        candidates_token_count=12,
        thoughts_token_count=None,
        tool_use_prompt_token_count=None,
        total_token_count=52,
    )
    u = normalize_usage(obj)
    assert u == Usage(
        input_tokens=40,
        output_tokens=12,
        cache_read_tokens=0,
        cache_write_5m_tokens=0,
        cache_write_1h_tokens=0,
    )
    assert u.total_tokens == obj.total_token_count


def test_gemini_tool_use_prompt_tokens_are_not_dropped() -> None:
    # A real gemini-2.5-flash response using Google Search + code execution:
    # 22 + 212 + 114 + 303 == 651.
    payload = {
        "prompt_token_count": 22,
        "cached_content_token_count": 16,
        "candidates_token_count": 212,
        "thoughts_token_count": 114,
        "tool_use_prompt_token_count": 303,
        "total_token_count": 651,
    }
    u = normalize_usage(payload, fmt="gemini")
    assert u.total_tokens == 651


def test_gemini_omitted_zero_candidates_count() -> None:
    payload = {"promptTokenCount": 8, "totalTokenCount": 8}
    u = normalize_usage(payload)
    assert u.input_tokens == 8
    assert u.total_tokens == 8


# --------------------------------------------------------------------------- cross-format


def test_one_call_in_every_format_normalizes_to_the_same_tokens_and_cost() -> None:
    """1000-token prompt, 600 of them read from the provider cache, 50 out."""
    payloads = {
        "langchain": {
            "input_tokens": 1000,
            "output_tokens": 50,
            "total_tokens": 1050,
            "input_token_details": {"cache_read": 600},
        },
        "openai": {
            "prompt_tokens": 1000,
            "completion_tokens": 50,
            "total_tokens": 1050,
            "prompt_tokens_details": {"cached_tokens": 600},
        },
        "anthropic": {
            "input_tokens": 400,
            "cache_read_input_tokens": 600,
            "cache_creation_input_tokens": 0,
            "output_tokens": 50,
        },
        "gemini": {
            "promptTokenCount": 1000,
            "cachedContentTokenCount": 600,
            "candidatesTokenCount": 50,
            "totalTokenCount": 1050,
        },
    }
    price = PriceCatalog.default().get("gpt-4o")
    for fmt, payload in payloads.items():
        for u in (normalize_usage(payload, fmt=fmt), normalize_usage(payload)):  # type: ignore[arg-type]
            assert (u.input_tokens, u.output_tokens, u.cache_read_tokens) == (1000, 50, 600), fmt
            assert parts(u) == (400, 600, 0, 0), fmt
            # 400 x $2.50 + 600 x $1.25 + 50 x $10 per million
            assert cost_of(price, u) == Decimal("0.00225"), fmt


# --------------------------------------------------------------------------- detection

DETECT_CASES: list[tuple[str, Any, str | None]] = [
    (
        "langchain-details",
        {"input_tokens": 1, "output_tokens": 1, "input_token_details": {}},
        "langchain",
    ),
    ("langchain-total", {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}, "langchain"),
    ("bare-input-output", {"input_tokens": 1, "output_tokens": 1}, "langchain"),
    ("openai-chat", OPENAI_CHAT, "openai"),
    ("openai-chat-obj", SimpleNamespace(prompt_tokens=3, completion_tokens=1), "openai"),
    (
        "anthropic",
        {"input_tokens": 1, "output_tokens": 1, "cache_read_input_tokens": 0},
        "anthropic",
    ),
    (
        "anthropic-creation-only",
        {"input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": 5},
        "anthropic",
    ),
    ("gemini-snake", {"prompt_token_count": 1, "candidates_token_count": 1}, "gemini"),
    ("gemini-camel", {"promptTokenCount": 1, "candidatesTokenCount": 1}, "gemini"),
    ("gemini-obj", SimpleNamespace(prompt_token_count=1, candidates_token_count=1), "gemini"),
    ("empty", {}, None),
    ("unrelated", {"foo": 1, "bar": "x"}, None),
    ("all-none", {"prompt_tokens": None, "input_tokens": None}, None),
    ("string", "12 tokens", None),
]


@pytest.mark.parametrize(
    ("payload", "expected"), [c[1:] for c in DETECT_CASES], ids=[c[0] for c in DETECT_CASES]
)
def test_detect_usage_format(payload: Any, expected: str | None) -> None:
    assert detect_usage_format(payload) == expected


def test_detect_openai_responses_api() -> None:
    assert detect_usage_format(OPENAI_RESPONSES) == "openai"
    assert normalize_usage(OPENAI_RESPONSES) == EXPECTED_OPENAI


def test_detect_responses_api_without_total() -> None:
    payload = {k: v for k, v in OPENAI_RESPONSES.items() if k != "total_tokens"}
    assert detect_usage_format(payload) == "openai"
    assert normalize_usage(payload) == EXPECTED_OPENAI


def test_bare_input_output_reads_the_same_as_langchain_or_anthropic() -> None:
    bare = {"input_tokens": 30, "output_tokens": 4}
    auto = normalize_usage(bare)
    anthropic = normalize_usage(bare, fmt="anthropic")
    assert (auto.input_tokens, auto.output_tokens) == (30, 4)
    assert (anthropic.input_tokens, anthropic.output_tokens) == (30, 4)
    assert auto.uncached_input_tokens == anthropic.uncached_input_tokens == 30


# --------------------------------------------------------------------------- missing / bad


@pytest.mark.parametrize("fmt", [None, *FORMATS])
@pytest.mark.parametrize("payload", [None, {}], ids=["None", "empty"])
def test_missing_payload_gives_unknown_usage(payload: Any, fmt: Any) -> None:
    u = normalize_usage(payload, fmt=fmt)
    assert u == Usage()
    assert all(v is None for v in u.to_dict().values())
    assert not u.is_known
    assert u.total_tokens is None


def test_unknown_format_name_is_an_error() -> None:
    with pytest.raises(UsageFormatError, match="cohere"):
        normalize_usage({"input_tokens": 1}, fmt="cohere")  # type: ignore[arg-type]


# (id, fmt, valid payload, path of each count, and the name the payload gives it)
_BAD_CASES: list[tuple[str, str, dict[str, Any], list[tuple[str, ...]]]] = [
    (
        "langchain",
        "langchain",
        {
            "input_tokens": 100,
            "output_tokens": 10,
            "total_tokens": 110,
            "input_token_details": {
                "cache_read": 10,
                "cache_creation": 5,
                "ephemeral_5m_input_tokens": 5,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_token_details": {"reasoning": 3},
        },
        [
            ("input_tokens",),
            ("output_tokens",),
            ("input_token_details", "cache_read"),
            ("input_token_details", "cache_creation"),
            ("input_token_details", "ephemeral_5m_input_tokens"),
            ("input_token_details", "ephemeral_1h_input_tokens"),
            ("output_token_details", "reasoning"),
        ],
    ),
    (
        "openai-chat",
        "openai",
        copy.deepcopy(OPENAI_CHAT),
        [
            ("prompt_tokens",),
            ("completion_tokens",),
            ("prompt_tokens_details", "cached_tokens"),
            ("completion_tokens_details", "reasoning_tokens"),
        ],
    ),
    (
        "openai-responses",
        "openai",
        copy.deepcopy(OPENAI_RESPONSES),
        [
            ("input_tokens",),
            ("output_tokens",),
            ("input_tokens_details", "cached_tokens"),
            ("output_tokens_details", "reasoning_tokens"),
        ],
    ),
    (
        "anthropic",
        "anthropic",
        {
            "input_tokens": 100,
            "output_tokens": 10,
            "cache_read_input_tokens": 20,
            "cache_creation_input_tokens": 30,
            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
        },
        [
            ("input_tokens",),
            ("output_tokens",),
            ("cache_read_input_tokens",),
            ("cache_creation_input_tokens",),
            ("cache_creation", "ephemeral_5m_input_tokens"),
            ("cache_creation", "ephemeral_1h_input_tokens"),
        ],
    ),
    (
        "gemini-snake",
        "gemini",
        {
            "prompt_token_count": 100,
            "cached_content_token_count": 20,
            "candidates_token_count": 10,
            "thoughts_token_count": 5,
        },
        [
            ("prompt_token_count",),
            ("cached_content_token_count",),
            ("candidates_token_count",),
            ("thoughts_token_count",),
        ],
    ),
    (
        "gemini-camel",
        "gemini",
        {
            "promptTokenCount": 100,
            "cachedContentTokenCount": 20,
            "candidatesTokenCount": 10,
            "thoughtsTokenCount": 5,
        },
        [
            ("promptTokenCount",),
            ("cachedContentTokenCount",),
            ("candidatesTokenCount",),
            ("thoughtsTokenCount",),
        ],
    ),
]

BAD_VALUES: list[Any] = [-1, -1000, "lots", "12.5", "", True, False, 2.5, float("nan"), [3]]


def _with(payload: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(payload)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


def _bad_params() -> list[Any]:
    return [
        pytest.param(fmt, payload, path, id=f"{cid}-{'.'.join(path)}")
        for cid, fmt, payload, paths in _BAD_CASES
        for path in paths
    ]


@pytest.mark.parametrize(("fmt", "payload", "path"), _bad_params())
def test_valid_base_payloads_parse(
    fmt: str, payload: dict[str, Any], path: tuple[str, ...]
) -> None:
    # Guard for the test below: the error comes from the one bad value.
    u = normalize_usage(payload, fmt=fmt)  # type: ignore[arg-type]
    assert u.is_known
    assert_partition(u)


@pytest.mark.parametrize(("fmt", "payload", "path"), _bad_params())
def test_bad_counts_raise_usage_format_error(
    fmt: str, payload: dict[str, Any], path: tuple[str, ...]
) -> None:
    for bad in BAD_VALUES:
        with pytest.raises(UsageFormatError) as info:
            normalize_usage(_with(payload, path, bad), fmt=fmt)  # type: ignore[arg-type]
        assert "must be" in str(info.value), bad


@pytest.mark.parametrize(
    ("fmt", "payload", "paths"),
    [pytest.param(fmt, payload, paths, id=cid) for cid, fmt, payload, paths in _BAD_CASES],
)
def test_error_message_names_the_payload_field(
    fmt: str, payload: dict[str, Any], paths: list[tuple[str, ...]]
) -> None:
    for path in paths:
        for bad in (-3, "lots", True):
            with pytest.raises(UsageFormatError) as info:
                normalize_usage(_with(payload, path, bad), fmt=fmt)  # type: ignore[arg-type]
            msg = str(info.value)
            assert path[-1] in msg, (path, msg)
            assert repr(bad) in msg or str(bad) in msg, (bad, msg)


@pytest.mark.parametrize(
    ("value", "expected"), [("12", 12), (" 7 ", 7), (7.0, 7), (0, 0), (10**12, 10**12)]
)
def test_integral_values_are_accepted(value: Any, expected: int) -> None:
    u = normalize_usage({"prompt_tokens": value, "completion_tokens": 1}, fmt="openai")
    assert u.input_tokens == expected
    assert isinstance(u.input_tokens, int)
    assert not isinstance(u.input_tokens, bool)


def test_cache_larger_than_prompt_is_rejected() -> None:
    with pytest.raises(UsageFormatError, match="exceed input_tokens"):
        normalize_usage(
            {
                "prompt_tokens": 10,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 11},
            },
            fmt="openai",
        )
    with pytest.raises(UsageFormatError, match="exceed input_tokens"):
        normalize_usage({"prompt_token_count": 5, "cached_content_token_count": 6}, fmt="gemini")


# --------------------------------------------------------------------------- Usage itself


@pytest.mark.parametrize("field", list(Usage().to_dict()))
@pytest.mark.parametrize("bad", [-1, True, "3", 1.0])
def test_usage_rejects_bad_counts_naming_the_field(field: str, bad: Any) -> None:
    with pytest.raises(UsageFormatError, match=field):
        Usage(**{field: bad})


def test_usage_helpers() -> None:
    u = Usage(
        input_tokens=1000,
        output_tokens=200,
        cache_read_tokens=300,
        cache_write_5m_tokens=100,
        cache_write_1h_tokens=50,
        reasoning_tokens=80,
    )
    assert u.uncached_input_tokens == 550
    assert u.total_tokens == 1200
    assert u.is_known
    plain = u.without_provider_cache()
    assert plain == Usage(
        input_tokens=1000,
        output_tokens=200,
        cache_read_tokens=0,
        cache_write_5m_tokens=0,
        cache_write_1h_tokens=0,
        reasoning_tokens=80,
    )
    assert plain.uncached_input_tokens == 1000
    bigger = u.with_extra_input(500)
    assert bigger.input_tokens == 1500
    assert bigger.uncached_input_tokens == 1050
    assert bigger.cache_read_tokens == 300
    assert Usage().with_extra_input(5) == Usage()
    assert Usage(output_tokens=3).total_tokens is None
    assert (u + u).to_dict() == {k: 2 * v for k, v in u.to_dict().items()}
    assert Usage.from_dict(u.to_dict()) == u
    with pytest.raises(UsageFormatError, match="unknown usage fields"):
        Usage.from_dict({"prompt_tokens": 3})


# --------------------------------------------------------------------------- round trips

_N = st.integers(min_value=0, max_value=10**8)
_POS_OR_NONE = st.none() | st.integers(min_value=1, max_value=10**8)


@st.composite
def _usages(draw: st.DrawFn, fmt: str) -> Usage:
    """A Usage the format can express, built from a partition of the prompt."""
    output = draw(_N)
    if fmt == "langchain":
        # With a known input, a cache kind LangChain does not list is 0, not unknown.
        read, w5, w1h = draw(_N), draw(_N), draw(_N)
        reasoning = draw(st.none() | st.integers(min_value=1, max_value=max(output, 1)))
        if reasoning is not None and reasoning > output:
            reasoning = None
    else:
        read = draw(_N)
        w5, w1h = (draw(_N), draw(_N)) if fmt == "anthropic" else (0, 0)
        reasoning = None if fmt == "anthropic" else draw(st.integers(0, output))
    uncached = draw(_N)
    return Usage(
        input_tokens=uncached + (read or 0) + (w5 or 0) + (w1h or 0),
        output_tokens=output,
        cache_read_tokens=read,
        cache_write_5m_tokens=w5,
        cache_write_1h_tokens=w1h,
        reasoning_tokens=reasoning,
    )


_WRITERS = {
    "langchain": usage_to_langchain,
    "openai": usage_to_openai,
    "anthropic": usage_to_anthropic,
    "gemini": usage_to_gemini,
}


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_round_trip_through_each_wire_format(fmt: str, data: st.DataObject) -> None:
    u = data.draw(_usages(fmt))
    wire = _WRITERS[fmt](u)
    assert normalize_usage(wire, fmt=fmt) == u  # type: ignore[arg-type]
    assert normalize_usage(wire) == u  # and the format is recognised
    assert_partition(u)


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_wire_formats_carry_the_provider_total(fmt: str, data: st.DataObject) -> None:
    u = data.draw(_usages(fmt))
    wire = _WRITERS[fmt](u)
    if fmt == "anthropic":
        provider_total = (
            wire["input_tokens"]
            + wire["cache_read_input_tokens"]
            + wire["cache_creation_input_tokens"]
            + wire["output_tokens"]
        )
    elif fmt == "gemini":
        provider_total = (
            wire["prompt_token_count"]
            + wire["candidates_token_count"]
            + wire["thoughts_token_count"]
        )
    else:
        provider_total = wire["total_tokens"]
    assert normalize_usage(wire, fmt=fmt).total_tokens == provider_total  # type: ignore[arg-type]


def test_langchain_round_trip_keeps_known_zeros() -> None:
    u = Usage(
        input_tokens=10,
        output_tokens=5,
        cache_read_tokens=0,
        cache_write_5m_tokens=0,
        cache_write_1h_tokens=0,
        reasoning_tokens=0,
    )
    assert normalize_usage(usage_to_langchain(u), fmt="langchain") == u


# --------------------------------------------------------------------------- dict fast paths

_LANGCHAIN_DETAILS = [
    "cache_read",
    "cache_creation",
    "ephemeral_5m_input_tokens",
    "ephemeral_1h_input_tokens",
]
_ODD_COUNT = st.one_of(
    st.none(),
    st.integers(-3, 3_000),
    st.sampled_from([True, 2.0, 2.5, "7", "x", -1.0]),
)


def _read_or_error(reader: Any, payload: Any) -> Usage | str:
    try:
        return reader(payload)
    except UsageFormatError as e:
        return f"error: {e}"


@settings(max_examples=400, deadline=None)
@given(
    counts=st.dictionaries(
        st.sampled_from(["input_tokens", "output_tokens", "total_tokens"]), _ODD_COUNT
    ),
    details=st.none()
    | st.dictionaries(
        st.sampled_from(
            [
                "cache_read",
                "cache_creation",
                "ephemeral_5m_input_tokens",
                "ephemeral_1h_input_tokens",
            ]
        ),
        _ODD_COUNT,
    ),
    out_details=st.none() | st.dictionaries(st.just("reasoning"), _ODD_COUNT),
)
def test_langchain_dict_fast_path_reads_like_the_general_reader(
    counts: dict[str, Any], details: dict[str, Any] | None, out_details: dict[str, Any] | None
) -> None:
    payload: dict[str, Any] = dict(counts)
    if details is not None:
        payload["input_token_details"] = details
    if out_details is not None:
        payload["output_token_details"] = out_details
    # The same payload as an SDK-style object goes through _get/_int.
    general = SimpleNamespace(
        **counts,
        input_token_details=SimpleNamespace(**(details or {})),
        output_token_details=SimpleNamespace(**(out_details or {})),
    )
    assert _read_or_error(usage_from_langchain, payload) == _read_or_error(
        usage_from_langchain, general
    )


@settings(max_examples=400, deadline=None)
@given(
    counts=st.dictionaries(
        st.sampled_from(["prompt_tokens", "completion_tokens", "total_tokens"]), _ODD_COUNT
    ),
    cached=st.none() | _ODD_COUNT,
    reasoning=st.none() | _ODD_COUNT,
)
def test_openai_dict_fast_path_reads_like_the_general_reader(
    counts: dict[str, Any], cached: Any, reasoning: Any
) -> None:
    payload: dict[str, Any] = dict(counts)
    if cached is not None:
        payload["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning is not None:
        payload["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    general = SimpleNamespace(
        **counts,
        prompt_tokens_details=SimpleNamespace(cached_tokens=cached),
        completion_tokens_details=SimpleNamespace(reasoning_tokens=reasoning),
    )
    assert _read_or_error(usage_from_openai, payload) == _read_or_error(usage_from_openai, general)


def test_usage_init_takes_the_dataclass_fields_in_order() -> None:
    import dataclasses
    import inspect

    names = [f.name for f in dataclasses.fields(Usage)]
    assert list(inspect.signature(Usage).parameters) == names
    assert Usage(1, 2, 0, 0, 1, 0) == Usage(**dict(zip(names, (1, 2, 0, 0, 1, 0), strict=True)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        Usage(1, 1).input_tokens = 2  # type: ignore[misc]


def test_usage_wire_round_trips_through_normalize_usage() -> None:
    from costopt_core.usage import usage_wire

    full = Usage(
        input_tokens=1500,
        output_tokens=70,
        cache_read_tokens=1024,
        cache_write_5m_tokens=200,
        cache_write_1h_tokens=100,
        reasoning_tokens=30,
    )
    assert normalize_usage(usage_wire(full)) == full
    # Unknown details are left out of the wire (LangChain reads an absent detail as none).
    wire = usage_wire(Usage(input_tokens=10, output_tokens=2))
    assert wire == {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12}
