"""Parity: the same calls priced through LangChain and through LlamaIndex give one ledger.

Both adapters only translate, so a scripted conversation (cache reads, cache
writes at both TTLs, reasoning tokens, each provider's wire format) must land
in the ledger identically whichever framework made the calls and however
(sync, async, streamed).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk
from llama_index.core.llms import ChatMessage

from costopt_core import CallRecord, CostEngine, CostLedger, Usage
from costopt_core.testing import Script, ScriptedResponse
from langchain_costopt import CostCallbackHandler
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt import CostEventHandler
from llamaindex_costopt.testing import ScriptedLLM, UsageWireFormat

R = ScriptedResponse
#: (response, cost computed by hand from prices.json, in micro-dollars)
CONVERSATIONS: dict[UsageWireFormat, list[tuple[ScriptedResponse, Decimal]]] = {
    "openai": [
        # gpt-4o-mini 0.15 / 0.075 cached / 0.60: 176 * 0.15 + 1024 * 0.075 + 300 * 0.60
        (R("Cached prefix answer.", Usage(1200, 300, 1024), "gpt-4o-mini"), Decimal("283.2")),
        # 50 * 0.15 + 10 * 0.60
        (R("Short.", Usage(50, 10), "gpt-4o-mini"), Decimal("13.5")),
        # o4-mini 1.10 / 0.275 / 4.40, reasoning billed as output:
        # 976 * 1.10 + 1024 * 0.275 + 1500 * 4.40
        (
            R("Thought hard.", Usage(2000, 1500, 1024, reasoning_tokens=1200), "o4-mini"),
            Decimal("7955.2"),
        ),
    ],
    "anthropic": [
        # claude-sonnet-4-5 3.00 in / 15.00 out / 0.30 read / 3.75 write 5m / 6.00 write 1h
        # write the prefix (5 min): 1000 * 3 + 4000 * 3.75 + 400 * 15
        (
            R(
                "Wrote the cache.",
                Usage(5000, 400, cache_write_5m_tokens=4000),
                "claude-sonnet-4-5",
            ),
            Decimal("24000"),
        ),
        # read it, extend it for an hour: 200 * 3 + 4000 * 0.30 + 1000 * 6 + 300 * 15
        (
            R(
                "Read the cache.",
                Usage(5200, 300, cache_read_tokens=4000, cache_write_1h_tokens=1000),
                "claude-sonnet-4-5",
            ),
            Decimal("12300"),
        ),
        # 100 * 3 + 20 * 15
        (R("No cache.", Usage(100, 20), "claude-sonnet-4-5"), Decimal("600")),
    ],
    "gemini": [
        # gemini-2.5-flash 0.30 / 0.03 cached / 2.50 out, thoughts billed as output:
        # 952 * 0.30 + 2048 * 0.03 + 800 * 2.50
        (
            R("Flash.", Usage(3000, 800, 2048, reasoning_tokens=500), "gemini-2.5-flash"),
            Decimal("2347.04"),
        ),
    ],
}
MICRO = Decimal("0.000001")
HOWS = ("sync", "stream", "async", "astream")


def _script(fmt: UsageWireFormat) -> Script:
    return Script([r for r, _ in CONVERSATIONS[fmt]], cycle=False)


def _through_langchain(fmt: UsageWireFormat, how: str) -> CostLedger:
    engine = CostEngine()
    handler = CostCallbackHandler(engine)
    model = ScriptedChatModel(script=_script(fmt))
    config: Any = {"callbacks": [handler]}

    async def run() -> None:
        for _ in CONVERSATIONS[fmt]:
            if how == "sync":
                model.invoke("question", config=config)
            elif how == "stream":
                chunks = list(model.stream("question", config=config))
                assert all(isinstance(c, AIMessageChunk) for c in chunks)
            elif how == "async":
                await model.ainvoke("question", config=config)
            else:
                async for _chunk in model.astream("question", config=config):
                    pass

    asyncio.run(run())
    assert handler.errors == 0
    return engine.ledger


def _through_llamaindex(fmt: UsageWireFormat, how: str) -> CostLedger:
    engine = CostEngine()
    handler = CostEventHandler(engine).attach()
    llm = ScriptedLLM(script=_script(fmt), usage_format=fmt)
    messages = [ChatMessage(role="user", content="question")]

    async def run() -> None:
        for _ in CONVERSATIONS[fmt]:
            if how == "sync":
                llm.chat(messages)
            elif how == "stream":
                list(llm.stream_chat(messages))
            elif how == "async":
                await llm.achat(messages)
            else:
                async for _chunk in await llm.astream_chat(messages):
                    pass

    try:
        asyncio.run(run())
    finally:
        handler.detach()
    assert handler.errors == 0
    return engine.ledger


def _counts(u: Usage) -> dict[str, int]:
    return {k: v or 0 for k, v in u.to_dict().items()}


def _comparable(rec: CallRecord) -> dict[str, Any]:
    d = rec.to_dict()
    for key in ("call_id", "timestamp", "latency_ms", "framework"):
        d.pop(key)
    return d


@pytest.fixture(params=HOWS)
def how(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_langchain_and_llamaindex_price_the_same_calls_identically(
    fmt: UsageWireFormat, how: str
) -> None:
    lc = _through_langchain(fmt, how)
    li = _through_llamaindex(fmt, how)
    expected_costs = [micro * MICRO for _, micro in CONVERSATIONS[fmt]]
    expected_counts = [_counts(r.usage) for r, _ in CONVERSATIONS[fmt]]

    assert [r.cost_usd for r in lc.records()] == expected_costs
    assert [r.cost_usd for r in li.records()] == expected_costs
    assert [_counts(r.usage) for r in lc.records()] == expected_counts
    assert [_counts(r.usage) for r in li.records()] == expected_counts
    assert [r.framework for r in lc.records()] == ["langchain"] * len(expected_costs)
    assert [r.framework for r in li.records()] == ["llamaindex"] * len(expected_costs)
    assert [_comparable(r) for r in li.records()] == [_comparable(r) for r in lc.records()]
    assert li.totals().to_dict() == lc.totals().to_dict()
    assert li.savings_by_lever() == lc.savings_by_lever()


def test_cache_writes_and_reads_priced_against_the_baseline() -> None:
    """One record by hand, so both adapters cannot be wrong the same way unnoticed."""
    for ledger in (
        _through_langchain("anthropic", "sync"),
        _through_llamaindex("anthropic", "sync"),
    ):
        wrote, read, _ = ledger.records()
        # gpt-4o baseline (2.50 in / 10.00 out), nothing cached: 5000 * 2.5 + 400 * 10
        assert wrote.baseline_cost_usd == Decimal("0.0165")
        # Writing the cache costs more than not caching: 4000 * (3.75 - 3.00) micro-dollars.
        assert wrote.savings_usd["provider_cache"] == Decimal("-0.003")
        # Nothing cached: 5200 * 3 + 300 * 15 = 20100 micro-dollars; 12300 billed.
        assert read.savings_usd["provider_cache"] == Decimal("0.0078")


def test_usage_objects_are_identical_through_both() -> None:
    for fmt in CONVERSATIONS:
        lc = _through_langchain(fmt, "sync")
        li = _through_llamaindex(fmt, "sync")
        assert [r.usage for r in li.records()] == [r.usage for r in lc.records()], fmt
