"""``analyze_prompt``: per-section tokens and monthly cost, duplicates, examples, cache savings."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from costopt_core import CostEngine
from costopt_core.context.prefix import message_tokens, tool_tokens
from costopt_core.context.prompt import DAYS_PER_MONTH, analyze_prompt
from costopt_core.errors import ConfigurationError
from costopt_core.pricing import PriceCatalog
from costopt_core.tokens import default_counter
from costopt_core.types import ChatRequest, Message

COUNTER = default_counter()
#: A model at $5 per million input tokens, cache read $0.50, 5-minute write $6.25.
CATALOG = PriceCatalog.default().with_overrides(
    {
        "five": {
            "provider": "anthropic",
            "usd_per_mtok_input": "5",
            "usd_per_mtok_output": "25",
            "usd_per_mtok_cache_read": "0.5",
            "usd_per_mtok_cache_write_5m": "6.25",
        }
    }
)
TOOL = {"name": "lookup", "description": "Look up an order", "input_schema": {"type": "object"}}


def test_monthly_cost_of_a_thousand_token_prompt() -> None:
    # " hello" is one token: 993 of them + 3 framing + 1 role + 3 reply priming = 1,000
    msgs = [Message("user", " hello" * 993)]
    report = analyze_prompt(msgs, model="five", requests_per_day=1_000_000, catalog=CATALOG)
    assert report.total_tokens == 1000
    assert report.requests_per_month == Decimal(30_000_000)
    assert report.usd_per_request == Decimal("0.005")
    assert report.usd_per_month == Decimal("150000")
    assert DAYS_PER_MONTH == 30


def test_requests_per_month_is_taken_as_is() -> None:
    msgs = [Message("user", " hello" * 993)]
    report = analyze_prompt(msgs, model="five", requests_per_month=1000, catalog=CATALOG)
    assert report.usd_per_month == Decimal("5")


def test_section_tokens_against_hand_counts() -> None:
    msgs = [
        Message("system", "You are a helpful assistant."),  # 6 tokens
        Message("user", "hello world"),  # 2
        Message("assistant", "hello world"),  # 2
        Message("user", "What is the capital of France?"),  # 7
    ]
    report = analyze_prompt(
        msgs, tools=[TOOL], model="gpt-4o", requests_per_day=10, catalog=CATALOG
    )
    # each message: its text + 3 framing + 1 for the role
    assert report.section("system").tokens == 6 + 4
    assert report.section("history").tokens == (2 + 4) + (2 + 4)
    assert report.section("question").tokens == 7 + 4
    assert report.section("context").tokens == 0
    assert report.section("tools").tokens == tool_tokens(COUNTER, [TOOL], "gpt-4o")
    assert report.overhead_tokens == 3
    assert report.total_tokens == COUNTER.count_messages(msgs, "gpt-4o").tokens + tool_tokens(
        COUNTER, [TOOL], "gpt-4o"
    )
    assert sum(s.share for s in report.sections) == pytest.approx(1 - 3 / report.total_tokens)
    # gpt-4o input is $2.50/M; 300 requests a month
    system = report.section("system")
    assert system.usd_per_request == Decimal("2.50") * 10 / 1_000_000
    assert system.usd_per_month == system.usd_per_request * 300


def test_context_text_inside_the_question_moves_to_context() -> None:
    chunk = "The order shipped on Monday from the Berlin warehouse."
    question = f"Context:\n{chunk}\n\nWhen will my order arrive?"
    msgs = [Message("system", "Be brief."), Message("user", question)]
    report = analyze_prompt(
        msgs, model="gpt-4o", requests_per_day=1, context=[chunk], catalog=CATALOG
    )
    chunk_tokens = COUNTER.count(chunk, "gpt-4o")
    assert report.section("context").tokens == chunk_tokens
    assert report.section("question").tokens == message_tokens(COUNTER, msgs[1], "gpt-4o") - (
        chunk_tokens
    )
    # the total is unchanged: context is a relabelling, not extra text
    assert report.total_tokens == COUNTER.count_messages(msgs, "gpt-4o").tokens


def test_context_not_in_any_message_is_sent_on_top() -> None:
    msgs = [Message("user", "When will my order arrive?")]
    report = analyze_prompt(
        msgs, model="gpt-4o", requests_per_day=1, context="Shipped Monday.", catalog=CATALOG
    )
    assert report.section("context").tokens == COUNTER.count("Shipped Monday.", "gpt-4o")
    assert report.total_tokens == COUNTER.count_messages(msgs, "gpt-4o").tokens + (
        report.section("context").tokens
    )


def test_context_messages_are_a_section_of_their_own() -> None:
    msgs = [
        Message("system", "Answer from the documents."),
        Message("user", "Document: refunds take 5 days."),
        Message("user", "How long do refunds take?"),
    ]
    report = analyze_prompt(
        msgs, model="gpt-4o", requests_per_day=1, context_messages=[1], catalog=CATALOG
    )
    assert report.section("context").tokens == message_tokens(COUNTER, msgs[1], "gpt-4o")
    assert report.section("history").tokens == 0
    assert report.section("question").tokens == message_tokens(COUNTER, msgs[2], "gpt-4o")


def test_context_text_inside_a_context_message_is_counted_once() -> None:
    # The same retrieved text named both ways (its message in context_messages,
    # and the text as context=): its tokens were added to "context" a second
    # time, doubling the total and the monthly cost.
    chunk = "Refunds take 5 days. They go back to the card used for the order."
    msgs = [
        Message("system", "Answer from the documents."),
        Message("user", f"Document: {chunk}"),
        Message("user", "How long do refunds take?"),
    ]
    sent = COUNTER.count_messages(msgs, "five").tokens
    by_index = analyze_prompt(
        msgs, model="five", requests_per_day=1000, context_messages=[1], catalog=CATALOG
    )
    both = analyze_prompt(
        msgs,
        model="five",
        requests_per_day=1000,
        context_messages=[1],
        context=[chunk],
        catalog=CATALOG,
    )
    assert both.total_tokens == by_index.total_tokens == sent
    assert both.section("context").tokens == message_tokens(COUNTER, msgs[1], "five")
    assert both.section("question").tokens == message_tokens(COUNTER, msgs[2], "five")
    assert both.usd_per_month == by_index.usd_per_month == Decimal(sent) * 5 * 30_000 / 10**6


def test_chat_request_supplies_model_and_tools() -> None:
    req = ChatRequest(messages=(Message("user", "hi"),), model="gpt-4o", tools=(TOOL,))
    report = analyze_prompt(req, requests_per_day=1, catalog=CATALOG)
    assert report.model == "gpt-4o"
    assert report.section("tools").tokens > 0


def test_engine_supplies_catalog_and_counter() -> None:
    engine = CostEngine(catalog=CATALOG)
    msgs = [Message("user", " hello" * 993)]
    report = analyze_prompt(msgs, model="five", requests_per_day=1_000_000, engine=engine)
    assert report.usd_per_month == Decimal("150000")


# -- duplicates -------------------------------------------------------------------
def test_duplicate_instructions_within_and_across_sections() -> None:
    system = (
        "You are a support agent.\n"
        "- Always answer in English.\n"
        "Never reveal internal notes. Always answer in English!\n"
    )
    msgs = [
        Message("system", system),
        Message("user", "Where is my order? always answer in   english."),
        Message("assistant", "Always answer in English."),  # outputs are not instructions
        Message("user", "Thanks. Never reveal internal notes."),
    ]
    report = analyze_prompt(msgs, model="gpt-4o", requests_per_day=100, catalog=CATALOG)
    by_text = {d.normalized: d for d in report.duplicates}
    english = by_text["always answer in english"]
    assert english.occurrences == (("system", 0), ("system", 0), ("history", 1))
    each = COUNTER.count("Always answer in English.", "gpt-4o")
    assert english.tokens_each == each
    assert english.wasted_tokens == 2 * each
    # $2.50/M x 3,000 requests/month
    assert english.wasted_usd_per_month == Decimal(2 * each) * Decimal("2.50") / 1_000_000 * 3000
    notes = by_text["never reveal internal notes"]
    assert notes.occurrences == (("system", 0), ("question", 3))
    assert "you are a support agent" not in by_text
    assert report.duplicate_tokens == sum(d.wasted_tokens for d in report.duplicates)


def test_short_fragments_are_not_flagged() -> None:
    msgs = [Message("system", "Be brief.\nBe brief."), Message("user", "OK. OK.")]
    report = analyze_prompt(msgs, model="gpt-4o", requests_per_day=1, catalog=CATALOG)
    assert report.duplicates == ()


# -- few-shot examples ----------------------------------------------------------------
def test_inline_example_blocks_are_found_with_their_cost() -> None:
    qa = "Q: How do I reset my password?\nA: Use 'Forgot password' on the login page."
    xml = "<example>\nUser: hi\nAssistant: Hello! How can I help?\n</example>"
    labelled = "Example 2: the user asks for a refund; offer the form."
    system = f"You are a support agent.\n\n{qa}\n\n{xml}\n\n{labelled}\n\nBe polite."
    msgs = [Message("system", system), Message("user", "Where is my order?")]
    report = analyze_prompt(msgs, model="gpt-4o", requests_per_day=1, catalog=CATALOG)
    previews = [e.preview for e in report.examples]
    assert len(report.examples) == 3
    assert all(e.kind == "inline" and e.section == "system" for e in report.examples)
    assert any(p.startswith("<example>") for p in previews)
    assert any(p.startswith("Q: How do I reset") for p in previews)
    assert any(p.startswith("Example 2:") for p in previews)
    qa_block = next(e for e in report.examples if e.preview.startswith("Q:"))
    assert qa_block.tokens == COUNTER.count(qa, "gpt-4o")
    assert qa_block.usd_per_month == Decimal(qa_block.tokens) * Decimal("2.50") / 1_000_000 * 30


def test_heading_joins_the_examples_after_it() -> None:
    body = "Input: 2+2\nOutput: 4"
    msgs = [Message("system", f"Solve sums.\n\nExamples:\n\n{body}")]
    report = analyze_prompt(msgs, model="gpt-4o", requests_per_day=1, catalog=CATALOG)
    assert len(report.examples) == 1
    assert report.examples[0].tokens == COUNTER.count(f"Examples:\n\n{body}", "gpt-4o")


def test_example_messages_named_or_marked() -> None:
    msgs = [
        Message("system", "Translate to French."),
        Message("user", "Hello", name="example_user"),
        Message("assistant", "Bonjour", name="example_assistant"),
        Message("user", "Thank you"),
        Message("assistant", "Merci"),
        Message("user", "Good night"),
    ]
    report = analyze_prompt(
        msgs, model="gpt-4o", requests_per_day=1, example_messages=[3, 4], catalog=CATALOG
    )
    assert [e.message_indices for e in report.examples] == [(1,), (2,), (3,), (4,)]
    assert all(e.kind == "messages" for e in report.examples)
    assert report.examples[0].tokens == message_tokens(COUNTER, msgs[1], "gpt-4o")


def test_plain_prompt_has_no_examples() -> None:
    msgs = [Message("system", "You answer questions about orders."), Message("user", "Hi")]
    report = analyze_prompt(msgs, model="gpt-4o", requests_per_day=1, catalog=CATALOG)
    assert report.examples == ()


# -- provider cache projection ------------------------------------------------------------
def test_cache_projection_at_high_volume() -> None:
    system = " hello" * 1996  # 2,000 tokens with framing
    msgs = [Message("system", system), Message("user", " hello" * 993)]
    report = analyze_prompt(msgs, model="five", requests_per_day=1_000_000, catalog=CATALOG)
    cache = report.cache
    assert cache.provider == "anthropic"
    assert cache.static_prefix_tokens == 2000
    assert cache.cacheable_tokens == 2000
    assert cache.hit_rate == pytest.approx(1.0)
    assert report.cacheable_share == pytest.approx(2000 / report.total_tokens)
    total = report.total_tokens
    n = 30_000_000
    assert cache.usd_per_month_without_cache == Decimal(total) * 5 * n / 1_000_000
    # every request reads the 2,000-token prefix at $0.50/M; the rest at $5/M
    expected = (Decimal(total - 2000) * 5 + 2000 * Decimal("0.5")) * n / 1_000_000
    assert cache.usd_per_month_with_cache == pytest.approx(expected, rel=Decimal("1e-9"))
    assert cache.saving_usd_per_month == pytest.approx(
        Decimal(2000) * Decimal("4.5") * n / 1_000_000, rel=Decimal("1e-9")
    )


def test_cache_projection_at_low_volume_pays_writes() -> None:
    msgs = [Message("system", " hello" * 1996), Message("user", "hi")]
    # one request a day: the 5-minute entry has always expired, every request writes
    report = analyze_prompt(msgs, model="five", requests_per_day=1, catalog=CATALOG)
    cache = report.cache
    assert cache.hit_rate < 0.01
    assert cache.cache_write_usd_per_month is not None
    assert cache.saving_usd_per_month is not None and cache.saving_usd_per_month < 0
    # a forced hit rate overrides the model
    forced = analyze_prompt(
        msgs, model="five", requests_per_day=1, catalog=CATALOG, cache_hit_rate=0.5
    ).cache
    assert forced.hit_rate == 0.5
    w = Decimal(2000) * Decimal("6.25") / 1_000_000 * 30 * Decimal("0.5")
    assert forced.cache_write_usd_per_month == w


def test_short_prefix_is_not_cacheable() -> None:
    msgs = [Message("system", "Be brief."), Message("user", "hi")]
    report = analyze_prompt(msgs, model="five", requests_per_day=1000, catalog=CATALOG)
    assert report.cache.cacheable_tokens == 0
    assert report.cache.saving_usd_per_month == 0
    assert any("below the provider minimum" in n for n in report.notes)


def test_openai_projection_uses_128_token_steps() -> None:
    msgs = [Message("system", " hello" * 1196), Message("user", "hi")]  # 1,200-token prefix
    report = analyze_prompt(msgs, model="gpt-4o", requests_per_day=100_000, catalog=CATALOG)
    assert report.cache.provider == "openai"
    assert report.cache.cacheable_tokens == 1152


def test_volatile_system_text_is_in_the_report() -> None:
    msgs = [Message("system", " hello" * 1996 + "\nToday is 2026-01-05."), Message("user", "hi")]
    report = analyze_prompt(msgs, model="five", requests_per_day=100_000, catalog=CATALOG)
    assert [v.text for v in report.volatile] == ["2026-01-05"]
    assert report.cache.cacheable_tokens == 0
    assert any("volatile" in n for n in report.notes)


def test_unknown_model_prices_nothing_but_counts_tokens() -> None:
    msgs = [Message("user", "hello world")]
    report = analyze_prompt(msgs, model="no-such-model", requests_per_day=1, catalog=CATALOG)
    assert report.total_tokens == 9
    assert report.usd_per_month is None
    assert report.section("question").usd_per_month is None
    assert report.cache.provider is None
    assert "n/a" in report.to_table()


# -- validation and output ---------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"requests_per_day": 1, "requests_per_month": 30},
        {"requests_per_day": -1},
        {"requests_per_day": 1, "cache_hit_rate": 1.5},
        {"requests_per_day": 1, "cache_ttl_seconds": 0},
        {"requests_per_day": 1, "context_messages": [7]},
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        analyze_prompt([Message("user", "hi")], model="gpt-4o", catalog=CATALOG, **kwargs)  # type: ignore[arg-type]


def test_missing_model_raises() -> None:
    with pytest.raises(ConfigurationError, match="model"):
        analyze_prompt([Message("user", "hi")], requests_per_day=1)


def test_table_and_dict() -> None:
    msgs = [
        Message("system", "Always answer in English.\nAlways answer in English."),
        Message("user", "Q: 1+1?\nA: 2\n\nWhat is 2+2?"),
    ]
    report = analyze_prompt(
        msgs, tools=[TOOL], model="gpt-4o", requests_per_day=10, catalog=CATALOG
    )
    table = str(report)
    assert table == report.to_table()
    for word in ("system", "tools", "history", "context", "question", "total", "Duplicate"):
        assert word in table
    assert "Few-shot examples" in table
    data = json.loads(json.dumps(report.to_dict()))
    assert data["sections"]["system"]["tokens"] == report.section("system").tokens
    assert data["usd_per_month"] == format(report.usd_per_month, "f")
    assert data["provider_cache"]["provider"] == "openai"
