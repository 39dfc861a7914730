"""Prefix-cache layout: breakpoints, minimum lengths, volatile text, OpenAI cache keys."""

from __future__ import annotations

import pytest

from costopt_core.context.prefix import (
    ANTHROPIC_MAX_BREAKPOINTS,
    find_volatile,
    message_tokens,
    min_cacheable_tokens,
    openai_cached_tokens,
    plan_prefix_cache,
    prompt_cache_key,
    provider_for,
    tool_tokens,
)
from costopt_core.errors import ConfigurationError
from costopt_core.tokens import default_counter
from costopt_core.types import Message

COUNTER = default_counter()
# " hello" is one cl100k token, so a system prompt of n of them is n + 4 tokens
# with its framing (3 per message + 1 for the role).
LONG = " hello" * 1100  # 1104 tokens: above 1,024, below 2,048
VERY_LONG = " hello" * 4200  # above 4,096
TOOL = {"name": "lookup", "description": "Look up an order", "input_schema": {"type": "object"}}


def conversation(system: str = LONG) -> list[Message]:
    return [
        Message("system", system),
        Message("user", "Where is my order?"),
        Message("assistant", "It shipped yesterday."),
        Message("user", "When will it arrive?"),
    ]


def test_message_tokens_match_the_counter() -> None:
    msgs = conversation()
    assert message_tokens(COUNTER, msgs[0], "gpt-4o") == 1100 + 3 + 1
    framed = sum(message_tokens(COUNTER, m, "gpt-4o") for m in msgs)
    assert framed + 3 == COUNTER.count_messages(msgs, "gpt-4o").tokens


@pytest.mark.parametrize(
    ("model", "provider", "minimum"),
    [
        ("claude-sonnet-4-5-20250929", "anthropic", 1024),
        ("claude-opus-4-20250514", "anthropic", 1024),
        ("claude-opus-4-1", "anthropic", 1024),
        ("claude-3-7-sonnet-latest", "anthropic", 1024),
        ("claude-opus-4-5", "anthropic", 4096),
        ("claude-haiku-4-5-20251001", "anthropic", 4096),
        ("us.anthropic.claude-haiku-4-5-20251001-v1:0", "anthropic", 4096),
        ("claude-3-5-haiku-latest", "anthropic", 2048),
        ("claude-3-haiku-20240307", "anthropic", 2048),
        ("claude-sonnet-4-6", "anthropic", 2048),
        ("claude-future-9", "anthropic", 1024),
        ("gpt-4o-mini", "openai", 1024),
        ("o3", "openai", 1024),
    ],
)
def test_provider_and_minimum_per_model_family(model: str, provider: str, minimum: int) -> None:
    assert provider_for(model) == provider
    assert min_cacheable_tokens(model) == minimum


def test_unknown_model_has_no_provider() -> None:
    assert provider_for("mistral-7b-instruct") is None
    plan = plan_prefix_cache(conversation(), model="mistral-7b-instruct")
    assert plan.provider is None
    assert plan.breakpoints == () and plan.prompt_cache_key is None
    assert any("no known prefix cache" in n for n in plan.notes)


def test_openai_caches_in_128_token_steps_from_1024() -> None:
    assert openai_cached_tokens(1023) == 0
    assert openai_cached_tokens(1024) == 1024
    assert openai_cached_tokens(1151) == 1024
    assert openai_cached_tokens(1152) == 1152


# -- Anthropic breakpoints -----------------------------------------------------
def test_breakpoints_at_tools_system_and_stable_history() -> None:
    tools = [{**TOOL, "description": "Look up an order." + " x" * 1100}]
    plan = plan_prefix_cache(conversation(), tools, model="claude-sonnet-4-5")
    assert [b.kind for b in plan.breakpoints] == ["tools", "system", "history"]
    tools_tok = tool_tokens(COUNTER, tools, "claude-sonnet-4-5")
    assert plan.breakpoints[0].message_index is None
    assert plan.breakpoints[0].prefix_tokens == tools_tok
    # the system breakpoint marks the system message, history the turn before the newest
    assert plan.breakpoint_messages == (0, 2)
    assert plan.breakpoints[1].prefix_tokens == tools_tok + 1104
    history = sum(message_tokens(COUNTER, m, None) for m in conversation()[1:3])
    assert plan.breakpoints[2].prefix_tokens == tools_tok + 1104 + history
    assert plan.cache_tools
    assert plan.cacheable_tokens == plan.breakpoints[2].prefix_tokens
    assert plan.prompt_cache_key is None
    assert plan.estimated  # Claude counted with cl100k


def test_no_breakpoint_when_the_prefix_is_too_short() -> None:
    plan = plan_prefix_cache(conversation("Be brief."), [TOOL], model="claude-sonnet-4-5")
    assert plan.breakpoints == ()
    assert plan.cacheable_tokens == 0
    assert any("below the 1024-token minimum" in n for n in plan.notes)


def test_minimum_follows_the_model_family() -> None:
    # ~1,100 tokens: enough for Sonnet 4.5 (1,024), not for Haiku 3.5 (2,048) or Opus 4.5 (4,096)
    assert plan_prefix_cache(conversation(), model="claude-sonnet-4-5").breakpoints
    assert plan_prefix_cache(conversation(), model="claude-3-5-haiku").breakpoints == ()
    assert plan_prefix_cache(conversation(), model="claude-opus-4-5").breakpoints == ()
    long_plan = plan_prefix_cache(conversation(VERY_LONG), model="claude-opus-4-5")
    assert [b.kind for b in long_plan.breakpoints] == ["system", "history"]


def test_history_breakpoint_only_once_the_prefix_reaches_the_minimum() -> None:
    msgs = [
        Message("system", " hello" * 900),  # 904 tokens: too short alone
        Message("user", " hello" * 300),
        Message("assistant", "ok"),
        Message("user", "next question"),
    ]
    plan = plan_prefix_cache(msgs, model="claude-sonnet-4-5")
    assert [(b.kind, b.message_index) for b in plan.breakpoints] == [("history", 2)]


def test_at_most_max_breakpoints_keeping_system_then_history() -> None:
    tools = [{**TOOL, "description": " x" * 1100}]
    for limit, kinds in [(2, ["system", "history"]), (1, ["system"]), (0, [])]:
        plan = plan_prefix_cache(
            conversation(), tools, model="claude-sonnet-4-5", max_breakpoints=limit
        )
        assert [b.kind for b in plan.breakpoints] == kinds
    plan = plan_prefix_cache(conversation(), tools, model="claude-sonnet-4-5")
    assert len(plan.breakpoints) <= ANTHROPIC_MAX_BREAKPOINTS


def test_single_turn_has_no_history_breakpoint() -> None:
    msgs = [Message("system", LONG), Message("user", "hi")]
    plan = plan_prefix_cache(msgs, model="claude-sonnet-4-5")
    assert [b.kind for b in plan.breakpoints] == ["system"]


@pytest.mark.parametrize("bad", [5, -1, 1.5, True])
def test_max_breakpoints_is_validated(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="max_breakpoints"):
        plan_prefix_cache(conversation(), model="claude-sonnet-4-5", max_breakpoints=bad)  # type: ignore[arg-type]


def test_provider_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="provider"):
        plan_prefix_cache(conversation(), model="x", provider="gemini")  # type: ignore[arg-type]


def test_explicit_provider_overrides_the_name() -> None:
    plan = plan_prefix_cache(conversation(), model="my-proxy-model", provider="anthropic")
    assert plan.provider == "anthropic" and plan.min_cacheable_tokens == 1024
    assert [b.kind for b in plan.breakpoints] == ["system", "history"]


# -- order ------------------------------------------------------------------------
def test_late_system_message_is_hoisted_but_turns_keep_their_order() -> None:
    msgs = [
        Message("user", "a"),
        Message("assistant", "b"),
        Message("system", LONG),
        Message("user", "c"),
    ]
    plan = plan_prefix_cache(msgs, model="claude-sonnet-4-5")
    assert plan.order == (2, 0, 1, 3)
    assert [m.content for m in plan.apply(msgs)] == [LONG, "a", "b", "c"]
    assert plan.breakpoint_messages == (0, 2)
    kept = plan_prefix_cache(msgs, model="claude-sonnet-4-5", hoist_system=False)
    assert kept.order == (0, 1, 2, 3)
    assert kept.system_tokens == 0  # not a leading system prompt: no static prefix


def test_apply_leaves_content_byte_identical() -> None:
    msgs = conversation(LONG + "\nToday is 2026-01-05.")
    plan = plan_prefix_cache(msgs, model="claude-sonnet-4-5")
    assert plan.apply(msgs) == msgs


# -- volatile text ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "kind", "span"),
    [
        ("Today is 2026-01-05.", "iso_datetime", "2026-01-05"),
        ("Now: 2026-01-05T10:32:00Z", "iso_datetime", "2026-01-05T10:32:00Z"),
        ("Request 8f14e45f-ceea-467a-9af0-5c3b2f1e8d11 started", "uuid", None),
        ("The time is 10:32 pm", "time", "10:32 pm"),
        ("Session 1736071920 open", "long_number", "1736071920"),
        ("Date: January 5, 2026", "date", "January 5, 2026"),
        ("Date: 05/01/2026", "date", "05/01/2026"),
        ("trace 9f86d081884c7d659a2feaa0c55ad015", "hex_id", None),
    ],
)
def test_volatile_patterns(text: str, kind: str, span: str | None) -> None:
    found = find_volatile(text)
    assert [k for k, _, _ in found] == [kind]
    if span is not None:
        _, start, end = found[0]
        assert text[start:end] == span


@pytest.mark.parametrize(
    "text",
    ["You are helpful.", "Version 1.2.3, top 5 results", "Call 555-1234", "pi is 3.14159265"],
)
def test_static_text_is_not_volatile(text: str) -> None:
    assert find_volatile(text) == []


def test_volatile_system_text_is_reported_and_blocks_the_cache() -> None:
    msgs = conversation(LONG + "\nCurrent time: 2026-01-05T10:32:00Z\nrequest id 123456789")
    plan = plan_prefix_cache(msgs, model="claude-sonnet-4-5")
    assert [(v.kind, v.text, v.message_index) for v in plan.volatile] == [
        ("iso_datetime", "2026-01-05T10:32:00Z", 0),
        ("long_number", "123456789", 0),
    ]
    assert plan.cacheable_tokens == 0  # the system prompt differs on every call
    assert any("volatile" in n for n in plan.notes)


def test_move_volatile_moves_lines_to_a_trailing_message() -> None:
    system = f"{LONG}\nCurrent time: 2026-01-05T10:32:00Z\nBe polite."
    msgs = conversation(system)
    plan = plan_prefix_cache(msgs, model="claude-sonnet-4-5", move_volatile=True)
    sent = plan.apply(msgs)
    assert sent[0].content == f"{LONG}\nBe polite."
    assert sent[-1] == Message("user", "Current time: 2026-01-05T10:32:00Z")
    assert sent[1:-1] == msgs[1:]
    # the breakpoints still sit on the system prompt and the turn before the question
    assert plan.breakpoint_messages == (0, 2)
    assert plan.cacheable_tokens > 0
    # the system prompt is now the same whatever the time
    later = conversation(system.replace("10:32:00Z", "11:00:00Z"))
    assert (
        plan_prefix_cache(later, model="claude-sonnet-4-5", move_volatile=True).apply(later)[0]
        == sent[0]
    )


def test_volatile_text_in_tools_is_reported() -> None:
    tools = [{**TOOL, "description": "Orders since 2026-01-01"}]
    plan = plan_prefix_cache(conversation(), tools, model="gpt-4o")
    assert [(v.kind, v.tool_index) for v in plan.volatile] == [("iso_datetime", 0)]


# -- OpenAI ------------------------------------------------------------------------
def test_openai_plan_sets_a_key_and_no_breakpoints() -> None:
    plan = plan_prefix_cache(conversation(), [TOOL], model="gpt-4o")
    assert plan.provider == "openai" and plan.breakpoints == ()
    assert plan.prompt_cache_key is not None and plan.prompt_cache_key.startswith("costopt-")
    assert len(plan.prompt_cache_key) <= 64
    stable = plan.tools_tokens + plan.system_tokens + plan.history_tokens
    assert plan.cacheable_tokens == openai_cached_tokens(stable) > 0


def test_prompt_cache_key_is_stable_and_changes_with_the_prefix() -> None:
    first = plan_prefix_cache(conversation(), [TOOL], model="gpt-4o").prompt_cache_key
    # another conversation, same static prefix: same key
    other = [Message("system", LONG), Message("user", "Something else entirely")]
    assert plan_prefix_cache(other, [TOOL], model="gpt-4o-mini").prompt_cache_key == first
    assert plan_prefix_cache(conversation(), [TOOL], model="gpt-4o").prompt_cache_key == first
    changed = plan_prefix_cache(conversation(LONG + " Be brief."), [TOOL], model="gpt-4o")
    assert changed.prompt_cache_key != first
    assert plan_prefix_cache(conversation(), [], model="gpt-4o").prompt_cache_key != first
    tenant = plan_prefix_cache(conversation(), [TOOL], model="gpt-4o", namespace="acme")
    assert tenant.prompt_cache_key != first


def test_prompt_cache_key_ignores_volatile_values_and_tool_key_order() -> None:
    a = prompt_cache_key(["Today is 2026-01-05. Help."], [{"a": 1, "b": 2}])
    b = prompt_cache_key(["Today is 2026-02-17. Help."], [{"b": 2, "a": 1}])
    assert a == b
    assert a != prompt_cache_key(["Today is 2026-01-05. Help!"], [{"a": 1, "b": 2}])


def test_openai_short_prefix_caches_nothing() -> None:
    plan = plan_prefix_cache(conversation("Be brief."), model="gpt-4o")
    assert plan.cacheable_tokens == 0
    assert plan.prompt_cache_key is not None  # still routes same-prefix requests together
    assert any("1024-token minimum" in n for n in plan.notes)


def test_openai_volatile_system_caches_only_the_part_before_it() -> None:
    msgs = conversation(LONG + " Today is 2026-01-05." + LONG)
    plan = plan_prefix_cache(msgs, model="gpt-4o")
    before = COUNTER.count(LONG + " Today is ", "gpt-4o")
    assert plan.cacheable_tokens == openai_cached_tokens(before)


def test_plan_to_dict_is_json_ready() -> None:
    import json

    plan = plan_prefix_cache(conversation(), [TOOL], model="claude-sonnet-4-5")
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["provider"] == "anthropic"
    assert [b["kind"] for b in data["breakpoints"]] == ["system", "history"]


def test_breakpoints_already_placed_use_no_new_slot() -> None:
    plan = plan_prefix_cache(
        conversation(), model="claude-sonnet-4-5", max_breakpoints=1, marked_messages=[0]
    )
    # the system prompt is marked already: the one free slot goes to the history
    assert [(b.kind, b.message_index) for b in plan.breakpoints] == [("history", 2)]
    assert plan.cacheable_tokens == plan.breakpoints[0].prefix_tokens
    none_free = plan_prefix_cache(
        conversation(), model="claude-sonnet-4-5", max_breakpoints=0, marked_messages=[0]
    )
    assert none_free.breakpoints == ()
    assert none_free.cacheable_tokens == none_free.tools_tokens + none_free.system_tokens
