"""Cost-accounting fixes from a review (money).

1. A ``block`` budget's pre-call estimate is an upper bound with an output
   cap: the prompt at the dearest input rate (cache writes, long context),
   bound tool schemas counted, approximate token counts padded.
3. Bedrock Converse usage (camelCase) is read, through LlamaIndex too.
4. Claude 3 Haiku's cache prices are Anthropic's published figures.
5. A projection's per-lever savings add up to the combined savings.
6. A budget check takes an int/float estimate; NaN, inf, negatives and
   non-numbers are refused with ConfigurationError.
"""

from __future__ import annotations

import json
import math
import random
from decimal import Decimal as D
from typing import Any

import pytest
from pydantic import BaseModel, Field

from costopt_core import CostEngine
from costopt_core.budgets import Budget
from costopt_core.errors import BudgetExceededError, ConfigurationError
from costopt_core.pricing import PriceCatalog, cost_of, estimate_cost
from costopt_core.projection import MeasuredRequest, project
from costopt_core.testing import Script, ScriptedResponse
from costopt_core.tokens import default_counter
from costopt_core.types import Message, Usage
from costopt_core.usage import detect_usage_format, normalize_usage
from langchain_costopt.callbacks import CostCallbackHandler
from langchain_costopt.testing import ScriptedChatModel

CATALOG = PriceCatalog.default()
MTOK = D(1_000_000)
SONNET = "claude-sonnet-4-5"


def _usage(inp: int, out: int, read: int = 0, w5: int = 0, w1h: int = 0) -> Usage:
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=read,
        cache_write_5m_tokens=w5,
        cache_write_1h_tokens=w1h,
    )


# --------------------------------------------------------------------------- 1. estimates


def test_upper_bound_estimate_prices_the_prompt_at_the_dearest_input_rate() -> None:
    # Sonnet 4.5: input $3, 5-minute writes $3.75, 1-hour writes $6 per MTok.
    price = CATALOG.get(SONNET)
    got = estimate_cost(price, 1000, 100, upper_bound=True)
    assert got == (1000 * D(6) + 100 * D(15)) / MTOK
    # The expected cost (what routers compare tiers by) is still the list input rate.
    assert estimate_cost(price, 1000, 100) == (1000 * D(3) + 100 * D(15)) / MTOK


def test_upper_bound_estimate_takes_the_long_context_tier_when_it_could_be_crossed() -> None:
    price = CATALOG.get(SONNET)
    # 190k prompt + 20k output could cross the 200k threshold: long-context
    # rates ($12 for 1-hour writes, $22.50 output).
    got = estimate_cost(price, 190_000, 20_000, upper_bound=True)
    assert got == (190_000 * D(12) + 20_000 * D("22.5")) / MTOK
    # Far from it: base tier.
    assert (
        estimate_cost(price, 10_000, 1_000, upper_bound=True)
        == (10_000 * D(6) + 1_000 * D(15)) / MTOK
    )


def test_upper_bound_estimate_bounds_every_billing_of_the_prompt() -> None:
    rng = random.Random(7)
    for model in (SONNET, "claude-3-haiku", "gemini-2.5-pro", "gpt-4o", "claude-opus-4-1"):
        price = CATALOG.get(model)
        for _ in range(300):
            inp = rng.choice([0, 1, 999, 150_000, 199_999, 200_001, 400_000])
            out = rng.choice([0, 10, 8_000, 64_000])
            read = rng.randint(0, inp)
            w5 = rng.randint(0, inp - read)
            w1h = rng.randint(0, inp - read - w5)
            bound = estimate_cost(price, inp, out, upper_bound=True)
            actual = cost_of(price, _usage(inp, out, read, w5, w1h))
            assert bound is not None and actual is not None
            assert actual <= bound, (model, inp, out, read, w5, w1h)


def _capped_claude_call(limit: D) -> tuple[CostEngine, ScriptedChatModel, str, Usage]:
    engine = CostEngine(budgets=[Budget(limit_usd=limit, period="month", policy="block")])
    prompt = "word " * 5000
    n = engine.tokens.count_messages([Message("user", prompt)], SONNET).tokens
    # The provider wrote the whole prompt to the 1-hour cache; output at the cap.
    usage = _usage(n, 100, w1h=n)
    model = ScriptedChatModel(
        script=Script([ScriptedResponse("ok", usage=usage, model=SONNET)]), model_name=SONNET
    )
    return engine, model, prompt, usage


def test_block_budget_refuses_a_capped_call_that_could_be_billed_as_cache_writes() -> None:
    # Before: estimated at the plain input rate ($0.0165), the call passed a $0.02
    # limit and was billed $0.0315 (1-hour cache writes at 2x): overspent.
    engine, model, prompt, _ = _capped_claude_call(D("0.02"))
    with pytest.raises(BudgetExceededError):
        model.invoke(prompt, config={"callbacks": [CostCallbackHandler(engine)]}, max_tokens=100)
    assert engine.ledger.spent(None, "month") == 0


def test_recorded_cost_is_still_what_the_provider_billed() -> None:
    engine, model, prompt, usage = _capped_claude_call(D("10"))
    model.invoke(prompt, config={"callbacks": [CostCallbackHandler(engine)]}, max_tokens=100)
    (record,) = engine.ledger.records()
    assert record.cost_usd == engine.cost(SONNET, usage)
    assert not record.estimated


def test_estimate_pads_counts_of_an_approximate_tokenizer() -> None:
    engine = CostEngine()
    msgs = [Message("system", "You are terse."), Message("user", "Summarize: " + "lorem " * 300)]
    n = engine.tokens.count_messages(msgs, SONNET).tokens
    padded = math.ceil(n * 5 / 4)  # APPROXIMATE_COUNT_MARGIN
    assert padded > n
    got = engine.estimate(SONNET, msgs, max_output_tokens=50)
    assert got == (padded * D(6) + 50 * D(15)) / MTOK
    # A caller's own count is taken as exact unless it says otherwise.
    assert (
        engine.estimate(SONNET, input_tokens=n, max_output_tokens=50)
        == (n * D(6) + 50 * D(15)) / MTOK
    )
    assert (
        engine.estimate(SONNET, input_tokens=n, max_output_tokens=50, input_tokens_approximate=True)
        == (padded * D(6) + 50 * D(15)) / MTOK
    )


def test_openai_estimates_are_not_padded() -> None:
    engine = CostEngine()
    msgs = [Message("user", "What is 2+2? " * 40)]
    for model, rate_in, rate_out in (("gpt-4", D(30), D(60)), ("gpt-4o", D("2.50"), D(10))):
        n = engine.tokens.count_messages(msgs, model).tokens
        assert (
            engine.estimate(model, msgs, max_output_tokens=10)
            == (n * rate_in + 10 * rate_out) / MTOK
        )


def test_which_counts_are_padded() -> None:
    from costopt_core.tokens import APPROXIMATE_COUNT_MARGIN, upper_bound_tokens

    assert D("1.25") == APPROXIMATE_COUNT_MARGIN
    assert upper_bound_tokens(100, False) == 100
    assert upper_bound_tokens(101, True) == 127  # rounded up
    assert upper_bound_tokens(0, True) == 0
    assert not default_counter().may_undercount("gpt-4o-2024-08-06")
    assert default_counter().may_undercount("claude-3-haiku-20240307")
    assert default_counter().may_undercount("gemini-2.5-pro")


class _Search(BaseModel):
    """Search the corporate knowledge base."""

    query: str = Field(description="the query " * 300)


def test_handler_estimate_counts_bound_tool_schemas() -> None:
    engine = CostEngine(budgets=[Budget(limit_usd=D("100"), policy="block")])
    seen: list[Any] = []
    check = engine.check_budget

    def spy(tenant: str | None = None, estimate_usd: Any = None, **kw: Any) -> Any:
        seen.append(estimate_usd)
        return check(tenant, estimate_usd, **kw)

    engine.check_budget = spy  # type: ignore[method-assign]
    base = ScriptedChatModel(
        script=Script([ScriptedResponse("ok", usage=Usage(10, 5), model="gpt-4")]),
        model_name="gpt-4",
    )
    handler = CostCallbackHandler(engine)
    base.invoke("hi", config={"callbacks": [handler]}, max_tokens=5)
    bound = base.bind_tools([_Search])
    bound.invoke("hi", config={"callbacks": [handler]}, max_tokens=5)
    tools = bound.kwargs["tools"]  # type: ignore[attr-defined]
    tool_tokens = engine.tokens.count(json.dumps(tools), "gpt-4")
    assert tool_tokens > 500
    # Before: both estimates were the same; the schema is billed as input ($30/MTok).
    assert seen[1] - seen[0] == tool_tokens * D(30) / MTOK


def test_engine_estimate_counts_tools() -> None:
    engine = CostEngine()
    tools = [{"type": "function", "function": {"name": "f", "description": "x " * 200}}]
    without = engine.estimate("gpt-4", [Message("user", "hi")])
    with_tools = engine.estimate("gpt-4", [Message("user", "hi")], tools=tools)
    assert without is not None and with_tools is not None
    assert with_tools - without == engine.tool_tokens(tools, "gpt-4") * D(30) / MTOK > 0


# --------------------------------------------------------------------------- 3. Bedrock


def test_bedrock_converse_usage_is_read() -> None:
    payload = {
        "inputTokens": 100,
        "outputTokens": 20,
        "totalTokens": 180,
        "cacheReadInputTokens": 50,
        "cacheWriteInputTokens": 10,
    }
    assert detect_usage_format(payload) == "bedrock"
    # inputTokens excludes the cache reads and writes.
    assert normalize_usage(payload) == _usage(160, 20, read=50, w5=10)
    assert normalize_usage({"inputTokens": 7, "outputTokens": 3}) == _usage(7, 3)


def test_bedrock_converse_usage_through_llamaindex_usage_of() -> None:
    from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole

    from llamaindex_costopt.handler import usage_of

    bedrock_usage = {
        "inputTokens": 1200,
        "outputTokens": 300,
        "totalTokens": 9500,
        "cacheReadInputTokens": 8000,
        "cacheWriteInputTokens": 0,
    }
    raw = {
        "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
        "stopReason": "end_turn",
        "usage": bedrock_usage,
        "metrics": {"latencyMs": 300},
    }
    resp = ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content="hi"), raw=raw)
    usage = usage_of(resp)
    # Before: Usage() (unknown), so the call was unpriced.
    assert usage == _usage(9200, 300, read=8000)
    engine = CostEngine()
    assert (
        engine.cost("us.anthropic.claude-sonnet-4-20250514-v1:0", usage)
        == (1200 * D(3) + 8000 * D("0.3") + 300 * D(15)) / MTOK
    )


# --------------------------------------------------------------------------- 4. prices


def test_claude_3_haiku_cache_prices_are_the_published_ones() -> None:
    p = CATALOG.get("claude-3-haiku-20240307")
    assert p is not None
    assert p.usd_per_mtok_cache_read == D("0.03")
    assert p.usd_per_mtok_cache_write_5m == D("0.30")
    assert p.usd_per_mtok_cache_write_1h == D("0.50")
    got = cost_of(p, _usage(3_000, 100, read=1_000, w5=1_000))
    assert (
        got == (1_000 * D("0.25") + 1_000 * D("0.03") + 1_000 * D("0.30") + 100 * D("1.25")) / MTOK
    )


# --------------------------------------------------------------------------- 5. projection


def test_projection_levers_add_up_to_the_combined_savings() -> None:
    reqs = [
        MeasuredRequest(
            "gpt-4o-mini",
            _usage(1003, 17, read=501),
            removed_input_tokens={"compression": 333, "memory": 77},
            batch=True,
        ),
        MeasuredRequest(
            "gpt-4o", Usage(input_tokens=777, output_tokens=31), cache="cache_semantic"
        ),
        MeasuredRequest("gpt-4.1-mini", _usage(1234, 55, read=1000), escalated=("gpt-4o-mini",)),
    ]
    p = project(reqs, requests_per_day=7, baseline_model="gpt-4o", days_per_month=30)
    combined = p.scenario("combined").savings_usd_per_month
    # Before: 0.62 against 0.63.
    assert sum(p.savings_by_lever.values(), D(0)) == combined


def test_projection_levers_add_up_on_random_workloads() -> None:
    rng = random.Random(3)
    models = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "claude-haiku-4-5", "gpt-5"]
    for _ in range(40):
        reqs = []
        for _ in range(rng.randint(1, 6)):
            inp = rng.randint(1, 5000)
            reqs.append(
                MeasuredRequest(
                    rng.choice(models),
                    _usage(inp, rng.randint(0, 900), read=rng.randint(0, inp)),
                    removed_input_tokens={"compression": rng.randint(0, 900)},
                    batch=rng.random() < 0.3,
                    cache=rng.choice([None, "cache_exact", "cache_semantic"]),
                )
            )
        p = project(reqs, requests_per_day=rng.randint(1, 10_000), baseline_model="gpt-4o")
        assert (
            sum(p.savings_by_lever.values(), D(0)) == p.scenario("combined").savings_usd_per_month
        )
        assert all(v == v.quantize(D("0.01")) for v in p.savings_by_lever.values())


def test_round_to_total_is_largest_remainder() -> None:
    from costopt_core.projection import _round_to_total

    assert _round_to_total([], D("0.00")) == []
    # Floors 37 + 16 + 9 = 62 cents; the missing cent goes to the largest remainder.
    assert _round_to_total([D("0.374"), D("0.163"), D("0.093")], D("0.63")) == [
        D("0.38"),
        D("0.16"),
        D("0.09"),
    ]
    # Negative levers (escalation losses) and a total below the floors' sum.
    got = _round_to_total([D("-0.015"), D("1.004"), D("0.006")], D("0.99"))
    assert sum(got, D(0)) == D("0.99")
    exact = [D("-0.015"), D("1.004"), D("0.006")]
    assert all(abs(g - a) < D("0.01") for g, a in zip(got, exact, strict=True))


# --------------------------------------------------------------------------- 6. estimates as floats


def test_check_budget_takes_a_float_estimate() -> None:
    engine = CostEngine(budgets=[Budget(limit_usd=D("1"), policy="block")])
    (decision,) = engine.check_budget("acme", 0.05, call_id="c1")
    assert decision.estimate_usd == D("0.05")
    assert isinstance(decision.estimate_usd, D)
    (decision,) = engine.check_budget("acme", 0, call_id="c2")
    assert decision.estimate_usd == D(0)
    with pytest.raises(BudgetExceededError):  # 0.05 held + 0.96 > 1
        engine.check_budget("acme", 0.96, call_id="c3")
    from costopt_core.budgets import estimate_usd_of

    assert estimate_usd_of(None) is None
    assert estimate_usd_of(0.1) == D("0.1")  # not 0.1000000000000000055511151231257827


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), -0.01, D("-1"), D("NaN"), "0.05", True, [1]]
)
def test_check_budget_refuses_a_bad_estimate_naming_it(bad: Any) -> None:
    engine = CostEngine(budgets=[Budget(limit_usd=D("1"), policy="block")])
    with pytest.raises(ConfigurationError, match="estimate_usd") as info:
        engine.check_budget("acme", bad, call_id="c1")
    assert repr(bad) in str(info.value)
