"""Translation between engine batch types and the OpenAI / Anthropic batch wire formats.

Pure functions, no server: request bodies, result lines to ``BatchResult``
(usage through the provider's normalizer), status and count mapping, limits,
and the providers' construction (no I/O, lazy SDK import, checked arguments).
"""

from __future__ import annotations

import json
import sys

import pytest

from costopt_core.batch._wire import (
    ANTHROPIC_DEFAULT_MAX_TOKENS,
    ANTHROPIC_LIMITS,
    OPENAI_LIMITS,
    anthropic_counts,
    anthropic_messages,
    anthropic_request,
    anthropic_request_size,
    anthropic_result,
    check_batch,
    check_custom_id,
    job_custom_id,
    openai_batch_counts,
    openai_batch_status,
    openai_jsonl_line,
    openai_line_result,
    openai_messages,
    openai_missing_result,
)
from costopt_core.batch.anthropic_provider import AnthropicBatchProvider
from costopt_core.batch.openai_provider import OpenAIBatchProvider, _Collector, _remote
from costopt_core.batch.provider import BatchLimits, BatchProvider, BatchRequest
from costopt_core.errors import ConfigurationError
from costopt_core.types import Message, Usage

TOOL_CALL = {"id": "call_1", "name": "get_weather", "args": {"city": "Paris"}, "type": "tool_call"}
CONVERSATION = (
    Message("system", "Be brief."),
    Message("user", "Weather in Paris?"),
    Message("assistant", "", tool_calls=(TOOL_CALL,)),
    Message("tool", "18C, sunny", tool_call_id="call_1"),
    Message("user", "And tomorrow?"),
)


def req(rid: str = "r1", content: str = "Hi", **params: object) -> BatchRequest:
    return BatchRequest(id=rid, model="m", messages=(Message("user", content),), params=params)


# -- OpenAI requests ----------------------------------------------------------------------


def test_openai_line_is_one_compact_json_line_and_its_size() -> None:
    request = req(max_tokens=20, temperature=0)
    line = openai_jsonl_line(request)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "custom_id": "r1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "max_tokens": 20,
            "temperature": 0,
            "model": "m",
            "messages": [{"role": "user", "content": "Hi"}],
        },
    }
    assert OpenAIBatchProvider().request_size(request) == len(line)
    wide = openai_jsonl_line(req(content="€"))  # 3 UTF-8 bytes, not an escape
    assert len(wide) == len(openai_jsonl_line(req(content="e"))) + 2


def test_openai_messages_carry_tool_calls_and_results() -> None:
    out = openai_messages(CONVERSATION)
    assert out[0] == {"role": "system", "content": "Be brief."}
    assert out[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    assert out[3] == {"role": "tool", "content": "18C, sunny", "tool_call_id": "call_1"}
    named = openai_messages([Message("user", "hi", name="ann")])
    assert named == [{"role": "user", "content": "hi", "name": "ann"}]


# -- OpenAI results -----------------------------------------------------------------------


def ok_line(cached: int = 0) -> dict[str, object]:
    return {
        "id": "batch_req_1",
        "custom_id": "r1",
        "response": {
            "status_code": 200,
            "request_id": "req_1",
            "body": {
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}}],
                "usage": {
                    "prompt_tokens": 1200,
                    "completion_tokens": 40,
                    "total_tokens": 1240,
                    "prompt_tokens_details": {"cached_tokens": cached},
                    "completion_tokens_details": {"reasoning_tokens": 10},
                },
            },
        },
        "error": None,
    }


def test_openai_success_line_reads_text_model_and_usage_with_cached_inside_input() -> None:
    result = openai_line_result(ok_line(cached=1024))
    assert result.status == "succeeded" and result.text == "Hello!"
    assert result.model == "gpt-4o-mini-2024-07-18"
    assert result.usage == Usage(1200, 40, 1024, 0, 0, 10)
    assert result.usage is not None and result.usage.uncached_input_tokens == 176
    assert result.raw is not None and result.raw["choices"][0]["message"]["content"] == "Hello!"
    assert not result.retryable and result.error is None


@pytest.mark.parametrize(
    ("status_code", "retryable"),
    [(400, False), (401, False), (404, False), (408, True), (429, True), (500, True), (503, True)],
)
def test_openai_http_errors_are_retryable_for_408_429_and_5xx(
    status_code: int, retryable: bool
) -> None:
    line = {
        "custom_id": "r1",
        "response": {
            "status_code": status_code,
            "request_id": "req",
            "body": {"error": {"message": "nope", "type": "t", "param": None, "code": "c"}},
        },
        "error": None,
    }
    result = openai_line_result(line)
    assert result.status == "errored" and result.retryable is retryable
    assert result.error == f"HTTP {status_code}: c: nope"
    assert result.usage is None and result.text is None


def test_openai_non_http_errors() -> None:
    def line(code: str) -> dict[str, object]:
        return {"custom_id": "r1", "response": None, "error": {"code": code, "message": "m"}}

    expired = openai_line_result(line("batch_expired"))
    assert (expired.status, expired.retryable) == ("expired", True)
    cancelled = openai_line_result(line("batch_cancelled"))
    assert (cancelled.status, cancelled.retryable) == ("canceled", False)
    timeout = openai_line_result(line("request_timeout"))
    assert (timeout.status, timeout.retryable) == ("errored", True)
    assert openai_missing_result("x", "expired").status == "expired"
    assert openai_missing_result("x", "expired").retryable
    assert openai_missing_result("x", "cancelled").status == "canceled"
    assert not openai_missing_result("x", "cancelled").retryable
    assert openai_missing_result("x", "completed").status == "errored"


@pytest.mark.parametrize(
    ("status", "remote"),
    [
        ("validating", "in_progress"),
        ("in_progress", "in_progress"),
        ("finalizing", "in_progress"),
        ("cancelling", "canceling"),
        ("completed", "ended"),
        ("failed", "ended"),
        ("expired", "ended"),
        ("cancelled", "ended"),
    ],
)
def test_openai_status_mapping(status: str, remote: str) -> None:
    assert openai_batch_status(status) == remote


def test_openai_counts_spread_over_the_common_keys() -> None:
    base = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    assert openai_batch_counts("in_progress", 10, 3, 1) == {
        **base,
        "processing": 6,
        "succeeded": 3,
        "errored": 1,
    }
    assert openai_batch_counts("completed", 10, 9, 1) == {**base, "succeeded": 9, "errored": 1}
    assert openai_batch_counts("expired", 10, 2, 1) == {
        **base,
        "succeeded": 2,
        "errored": 1,
        "expired": 7,
    }
    assert openai_batch_counts("cancelled", 10, 2, 0) == {**base, "succeeded": 2, "canceled": 8}
    assert openai_batch_counts("failed", 4, 0, 0) == {**base, "errored": 4}


def test_composite_ids_poll_as_one_batch() -> None:
    running = {
        "status": "in_progress",
        "request_counts": {"total": 3, "completed": 1, "failed": 0},
        "expires_at": 100,
    }
    done = {
        "status": "completed",
        "request_counts": {"total": 2, "completed": 2, "failed": 0},
        "expires_at": 200,
    }
    remote = _remote("a,b", [running, done])
    assert remote.status == "in_progress" and remote.expires_at == 200.0
    assert remote.counts["succeeded"] == 3 and remote.counts["processing"] == 2
    assert _remote("a,b", [done, {**done, "status": "cancelling"}]).status == "canceling"
    assert _remote("a,b", [done, done]).status == "ended"


def test_collector_reads_the_input_only_when_the_files_may_be_incomplete() -> None:
    complete = _Collector(
        {
            "status": "completed",
            "output_file_id": "out",
            "input_file_id": "in",
            "request_counts": {"total": 1},
        }
    )
    assert complete.next_file() == "out"
    complete.add("out", json.dumps(ok_line()) + "\n")
    assert complete.next_file() is None
    assert [r.id for r in complete.results()] == ["r1"]

    failed = _Collector(
        {
            "status": "failed",
            "input_file_id": "in",
            "request_counts": {"total": 0},
            "errors": {"data": [{"code": "invalid_method", "message": "POST only", "line": 2}]},
        }
    )
    assert failed.next_file() == "in"
    failed.add("in", "".join(json.dumps({"custom_id": f"r{i}"}) + "\n" for i in (1, 2, 3)))
    assert failed.next_file() is None
    results = {r.id: r for r in failed.results()}
    assert results["r2"].error == "invalid_method: POST only" and not results["r2"].retryable
    assert results["r1"].retryable and results["r3"].retryable
    assert all(r.status == "errored" for r in results.values())


# -- Anthropic requests -------------------------------------------------------------------


def test_anthropic_messages_move_system_up_and_tools_into_blocks() -> None:
    system, messages = anthropic_messages(CONVERSATION)
    assert system == "Be brief."
    assert messages == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, sunny"},
            ],
        },
        {"role": "user", "content": "And tomorrow?"},
    ]
    # Two tool results in a row share one user turn, right after the tool_use.
    two = anthropic_messages(
        [
            Message("tool", "a", tool_call_id="c1"),
            Message("tool", "b", tool_call_id="c2"),
        ]
    )[1]
    assert len(two) == 1 and [b["tool_use_id"] for b in two[0]["content"]] == ["c1", "c2"]


def test_anthropic_request_sets_max_tokens_and_merges_system() -> None:
    request = BatchRequest(
        id="r1", model="claude", messages=(Message("system", "S2"), Message("user", "hi"))
    )
    entry = anthropic_request(request)
    assert entry["custom_id"] == "r1"
    assert entry["params"]["max_tokens"] == ANTHROPIC_DEFAULT_MAX_TOKENS == 1024
    assert entry["params"]["system"] == "S2"
    own = BatchRequest(
        id="r1", model="c", messages=request.messages, params={"max_tokens": 5, "system": "S1"}
    )
    assert anthropic_request(own)["params"]["max_tokens"] == 5
    assert anthropic_request(own)["params"]["system"] == "S1\n\nS2"
    blocks = [{"type": "text", "text": "S1", "cache_control": {"type": "ephemeral"}}]
    with_blocks = BatchRequest(
        id="r1", model="c", messages=request.messages, params={"system": blocks}
    )
    assert anthropic_request(with_blocks)["params"]["system"] == [
        *blocks,
        {"type": "text", "text": "S2"},
    ]
    assert anthropic_request(req(), default_max_tokens=7)["params"]["max_tokens"] == 7
    size = anthropic_request_size(entry)
    assert size == len(json.dumps(entry).encode()) + 2
    assert AnthropicBatchProvider().request_size(request) == size


# -- Anthropic results --------------------------------------------------------------------


def test_anthropic_success_counts_cache_reads_and_writes_into_input() -> None:
    entry = {
        "custom_id": "r1",
        "result": {
            "type": "succeeded",
            "message": {
                "model": "claude-haiku-4-5",
                "content": [
                    {"type": "text", "text": "Hel"},
                    {"type": "tool_use", "id": "t"},
                    {"type": "text", "text": "lo"},
                ],
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 7,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 50,
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": 20,
                        "ephemeral_1h_input_tokens": 30,
                    },
                },
            },
        },
    }
    result = anthropic_result(entry)
    assert result.status == "succeeded" and result.text == "Hello"
    assert result.model == "claude-haiku-4-5"
    assert result.usage == Usage(160, 7, 100, 20, 30, None)


@pytest.mark.parametrize(
    ("etype", "retryable"),
    [
        ("overloaded_error", True),
        ("api_error", True),
        ("rate_limit_error", True),
        ("timeout_error", True),
        ("invalid_request_error", False),
        ("authentication_error", False),
        ("billing_error", False),
    ],
)
def test_anthropic_errors_are_retryable_for_provider_faults(etype: str, retryable: bool) -> None:
    entry = {
        "custom_id": "r1",
        "result": {
            "type": "errored",
            "error": {"type": "error", "error": {"type": etype, "message": "m"}},
        },
    }
    result = anthropic_result(entry)
    assert result.status == "errored" and result.retryable is retryable
    assert result.error == f"{etype}: m"


def test_anthropic_expired_and_canceled() -> None:
    expired = anthropic_result({"custom_id": "a", "result": {"type": "expired"}})
    canceled = anthropic_result({"custom_id": "b", "result": {"type": "canceled"}})
    assert (expired.id, expired.status, expired.retryable) == ("a", "expired", True)
    assert (canceled.id, canceled.status, canceled.retryable) == ("b", "canceled", False)
    assert anthropic_counts({"processing": 2, "succeeded": 1, "errored": None}) == {
        "processing": 2,
        "succeeded": 1,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }


# -- limits and checks --------------------------------------------------------------------


def test_documented_limits() -> None:
    assert BatchLimits(max_requests=50_000, max_bytes=200_000_000) == OPENAI_LIMITS
    assert ANTHROPIC_LIMITS.max_requests == 100_000
    assert 255_000_000 < ANTHROPIC_LIMITS.max_bytes < 256_000_000
    assert OpenAIBatchProvider.limits == OPENAI_LIMITS
    assert AnthropicBatchProvider.limits == ANTHROPIC_LIMITS


def test_check_batch_refuses_before_any_upload() -> None:
    limits = BatchLimits(max_requests=2, max_bytes=100)
    check_batch([req("a"), req("b")], limits, [50, 50], "p")
    for requests, sizes, match in [
        ([], [], "no requests"),
        ([req("a"), req("a")], [1, 1], "appears twice"),
        ([req("a b")], [1], "not a valid custom_id"),
        ([req("x" * 65)], [1], "not a valid custom_id"),
        ([req("a"), req("b"), req("c")], [1, 1, 1], "exceed the limit of 2"),
        ([req("a")], [101], "101 bytes exceed the limit of 100"),
    ]:
        with pytest.raises(ConfigurationError, match=match):
            check_batch(requests, limits, sizes, "p")


# -- construction -------------------------------------------------------------------------


def test_providers_build_no_client_in_the_constructor() -> None:
    for provider in (
        OpenAIBatchProvider(api_key="k", base_url="http://127.0.0.1:9/v1"),
        AnthropicBatchProvider(api_key="k", base_url="http://127.0.0.1:9"),
    ):
        assert isinstance(provider, BatchProvider)
        assert provider._client is None and provider._async_client is None
        assert provider.poll_interval_s == 30.0


@pytest.mark.parametrize(
    "kwargs",
    [{"max_retries": -1}, {"timeout_s": 0}, {"poll_interval_s": 0}],
)
def test_bad_arguments_are_configuration_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        OpenAIBatchProvider(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        AnthropicBatchProvider(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="default_max_tokens"):
        AnthropicBatchProvider(default_max_tokens=0)
    with pytest.raises(ConfigurationError, match="metadata"):
        OpenAIBatchProvider(metadata={str(i): "v" for i in range(16)})


def test_a_missing_sdk_is_a_configuration_error_naming_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    monkeypatch.setitem(sys.modules, "anthropic", None)
    with pytest.raises(ConfigurationError, match=r"pip install .*openai"):
        OpenAIBatchProvider(api_key="k").poll("batch_1")
    with pytest.raises(ConfigurationError, match=r"pip install .*anthropic"):
        AnthropicBatchProvider(api_key="k").poll("msgbatch_1")


def test_a_missing_api_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        OpenAIBatchProvider().poll("batch_1")


@pytest.mark.parametrize(
    ("request_id", "wire"),
    [
        ("0", "0123456789ab-0"),
        ("q-1_x", "0123456789ab-q-1_x"),
        ("x" * 51, "0123456789ab-" + "x" * 51),
    ],
)
def test_a_job_sends_a_valid_id_as_its_key_and_the_id(request_id: str, wire: str) -> None:
    assert job_custom_id("0123456789ab", request_id) == wire


@pytest.mark.parametrize("request_id", ["order 42", "ä", "x" * 52, "x" * 64, "a/b"])
def test_a_job_sends_any_other_id_as_its_key_and_a_hash(request_id: str) -> None:
    wire = job_custom_id("0123456789ab", request_id)
    check_custom_id(wire)  # always a custom_id the providers take
    assert wire.startswith("0123456789ab_") and len(wire) == 64
    assert wire != job_custom_id("0123456789ab", request_id + "!")
    assert wire != job_custom_id("ba9876543210", request_id)
