"""CostCallbackHandler: every LangChain call priced exactly once, however it is made."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import set_llm_cache
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

from costopt_core import Budget, BudgetExceededError, CostEngine, Usage
from costopt_core.testing import Script, ScriptedResponse
from langchain_costopt import CostCallbackHandler, track_costs
from langchain_costopt.testing import ScriptedChatModel

# gpt-4o-mini: $0.15 in, $0.075 cached read, $0.60 out per Mtok
USAGE = Usage(1000, 200, cache_read_tokens=400, cache_write_5m_tokens=0, cache_write_1h_tokens=0)
COST = (Decimal(600) * Decimal("0.15") + 400 * Decimal("0.075") + 200 * Decimal("0.60")) / 10**6


def model(latency: float = 0.0, **kw) -> ScriptedChatModel:
    r = ScriptedResponse("Paris is the capital.", USAGE, model="gpt-4o-mini-2024-07-18")
    return ScriptedChatModel(script=Script([r], latency_s=latency), **kw)


def test_invoke_records_cost_and_puts_it_on_the_message(engine: CostEngine) -> None:
    h = CostCallbackHandler(engine)
    msg = model().invoke("hi", config={"callbacks": [h], "metadata": {"costopt_tenant": "acme"}})
    [rec] = engine.ledger.records()
    assert rec.cost_usd == COST
    assert rec.model == "gpt-4o-mini-2024-07-18"
    assert rec.tenant == "acme"
    assert rec.framework == "langchain"
    assert rec.usage == USAGE
    meta = msg.response_metadata["costopt"]
    assert Decimal(meta["cost_usd"]) == COST
    assert meta["served_by"] == "model"
    assert "call_id" not in meta and "latency_ms" not in meta  # nothing per-call-random


@pytest.mark.parametrize("how", ["stream", "batch"])
def test_stream_and_batch(engine: CostEngine, how: str) -> None:
    h = CostCallbackHandler(engine)
    m = model()
    if how == "stream":
        text = "".join(str(c.content) for c in m.stream("hi", config={"callbacks": [h]}))
        assert text == "Paris is the capital."
        n = 1
    else:
        m.batch(["a", "b", "c"], config={"callbacks": [h]})
        n = 3
    t = engine.ledger.totals()
    assert t.calls == n
    assert t.cost_usd == COST * n
    assert t.tokens["cache_read_tokens"] == 400 * n


async def test_ainvoke_and_astream(engine: CostEngine) -> None:
    h = CostCallbackHandler(engine)
    m = model()
    await m.ainvoke("hi", config={"callbacks": [h]})
    chunks = [c async for c in m.astream("hi", config={"callbacks": [h]})]
    assert chunks[-1].usage_metadata is not None  # usage rides on the last chunk
    assert engine.ledger.totals().calls == 2
    assert engine.ledger.totals().cost_usd == COST * 2


def test_nested_chain_counts_each_llm_call_once(engine: CostEngine) -> None:
    h = CostCallbackHandler(engine)
    m = model()
    inner = ChatPromptTemplate.from_template("Q: {q}") | m | StrOutputParser()

    def two_step(q: str) -> str:
        first = inner.invoke({"q": q})
        return inner.invoke({"q": first})

    chain = RunnableLambda(two_step) | (lambda s: s.upper())
    chain.invoke("capital?", config={"callbacks": [h], "metadata": {"costopt_tenant": "t1"}})
    assert engine.ledger.totals().calls == 2
    assert m.script.calls == 2
    assert {r.tenant for r in engine.ledger.records()} == {"t1"}  # inherited by nested runs


def test_agent_style_tool_loop(engine: CostEngine) -> None:
    call = {"name": "lookup", "args": {"q": "x"}, "id": "call_1", "type": "tool_call"}
    script = Script(
        [
            ScriptedResponse("", USAGE, model="gpt-4o-mini", tool_calls=(call,)),
            ScriptedResponse("done", USAGE, model="gpt-4o-mini"),
        ]
    )
    m = ScriptedChatModel(script=script)
    h = CostCallbackHandler(engine)

    def agent(q: str) -> str:
        msgs = [HumanMessage(q)]
        while True:
            out = m.invoke(msgs)
            msgs.append(out)
            if not out.tool_calls:
                return str(out.content)
            msgs.append(RunnableLambda(lambda _: "tool says hi").invoke(out.tool_calls[0]))

    assert RunnableLambda(agent).invoke("go", config={"callbacks": [h]}) == "done"
    assert engine.ledger.totals().calls == 2


def test_concurrent_threads_and_tasks_totals_exact(engine: CostEngine) -> None:
    h = CostCallbackHandler(engine)
    m = model(latency=0.001)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: m.invoke(f"q{i}", config={"callbacks": [h]}), range(160)))

    async def many() -> None:
        await asyncio.gather(*(m.ainvoke(f"q{i}", config={"callbacks": [h]}) for i in range(300)))

    asyncio.run(many())
    t = engine.ledger.totals()
    assert t.calls == 460
    assert t.cost_usd == COST * 460
    assert len({r.call_id for r in engine.ledger.records()}) == 460


def test_track_costs_without_passing_callbacks() -> None:
    m = model()
    with track_costs() as costs:
        m.invoke("a")
        (ChatPromptTemplate.from_template("{x}") | m).invoke({"x": "b"})
    m.invoke("outside")  # not tracked
    assert costs.ledger.totals().calls == 2
    assert costs.ledger.totals().cost_usd == COST * 2


def test_nested_track_costs_blocks_roll_up_into_the_outer_one() -> None:
    m = model()
    with track_costs() as outer:
        m.invoke("a")
        with track_costs() as inner:
            m.invoke("b")
            m.invoke("c")
        outer.engine.ledger.add_budget(Budget(limit_usd=COST * 4, policy="block"))
        with track_costs() as second:
            m.invoke("d")
            # The outer block's budget holds inside an inner block too.
            with pytest.raises(BudgetExceededError):
                m.invoke("e")
    assert inner.ledger.totals().calls == 2
    assert second.ledger.totals().calls == 1
    assert outer.ledger.totals().calls == 4
    assert outer.ledger.totals().cost_usd == COST * 4
    assert m.script.calls == 4


def test_handler_given_twice_counts_once(engine: CostEngine) -> None:
    h = CostCallbackHandler(engine)
    with track_costs(engine) as tracked:
        # two handlers on one engine see the same run: still one record
        model().invoke("a", config={"callbacks": [h]})
    assert tracked.engine is engine
    model().invoke("b", config={"callbacks": [h, h]})
    assert engine.ledger.totals().calls == 2


def test_langchain_cache_hit_is_recorded_as_cache_exact(engine: CostEngine) -> None:
    set_llm_cache(InMemoryCache())
    try:
        h = CostCallbackHandler(engine)
        m = model()
        first = m.invoke("same question", config={"callbacks": [h]})
        second = m.invoke("same question", config={"callbacks": [h]})
        assert m.script.calls == 1  # the handler did not break LangChain's cache key
        assert second.content == first.content
        # A follow-up turn that replays the answer as history hits the cache too.
        history = [HumanMessage("same question"), first, HumanMessage("and then?")]
        m.invoke(history, config={"callbacks": [h]})
        m.invoke(history, config={"callbacks": [h]})
        assert m.script.calls == 2
    finally:
        set_llm_cache(None)
    outcomes = [r.outcome for r in engine.ledger.records()]
    assert outcomes == ["model", "cache_exact", "model", "cache_exact"]
    hit = engine.ledger.records()[1]
    assert hit.cost_usd == 0
    assert hit.savings_usd["cache_exact"] == COST


def test_message_metadata_is_the_same_in_every_run() -> None:
    """Replayed as history, a priced answer must give the same cache key in a new process."""

    def key_of_first_answer() -> str:
        eng = CostEngine()
        msg = model().invoke("q", config={"callbacks": [CostCallbackHandler(eng)]})
        return dumps(msg.model_copy(update={"id": None}))

    assert key_of_first_answer() == key_of_first_answer()


def test_block_budget_stops_the_call_before_it_is_made(engine: CostEngine) -> None:
    engine.ledger.add_budget(Budget(limit_usd=Decimal("0.0002"), tenant="acme", policy="block"))
    h = CostCallbackHandler(engine)
    m = model()
    cfg = {"callbacks": [h], "metadata": {"costopt_tenant": "acme"}}
    m.invoke("hi", config=cfg)
    with pytest.raises(BudgetExceededError, match="tenant 'acme'"):
        m.invoke("hi", config=cfg)
    assert m.script.calls == 1
    m.invoke("hi", config={"callbacks": [h], "metadata": {"costopt_tenant": "other"}})
    assert m.script.calls == 2


def test_accounting_errors_never_fail_the_call(engine: CostEngine, monkeypatch) -> None:
    h = CostCallbackHandler(engine)

    def boom(**_: object) -> None:
        raise RuntimeError("ledger down")

    monkeypatch.setattr(engine, "record_call_deferred", boom)
    out = model().invoke("hi", config={"callbacks": [h]})
    assert isinstance(out, AIMessage)
    assert h.errors == 1


def test_unknown_model_records_none_not_zero(engine: CostEngine) -> None:
    h = CostCallbackHandler(engine)
    m = ScriptedChatModel(script=Script([ScriptedResponse("x", USAGE, model="acme-llm-7b")]))
    with pytest.warns(UserWarning, match="acme-llm-7b"):
        m.invoke("hi", config={"callbacks": [h]})
    assert engine.ledger.records()[0].cost_usd is None


def test_tiny_costs_go_on_the_message_in_plain_notation(engine: CostEngine) -> None:
    one_token = Usage(1, 0, cache_read_tokens=0, cache_write_5m_tokens=0, cache_write_1h_tokens=0)
    m = ScriptedChatModel(script=Script([ScriptedResponse("x", one_token, model="gpt-4o-mini")]))
    msg = m.invoke("hi", config={"callbacks": [CostCallbackHandler(engine)]})
    meta = msg.response_metadata["costopt"]
    [rec] = engine.ledger.records()
    assert rec.cost_usd == Decimal("0.00000015")
    assert "E" in str(rec.cost_usd)  # what str() would have put there
    assert meta["cost_usd"] == format(rec.cost_usd, "f")
    assert meta["baseline_cost_usd"] == format(rec.baseline_cost_usd, "f")


def test_run_metadata_without_costopt_keys_and_budget_estimates(engine: CostEngine) -> None:
    h = CostCallbackHandler(engine)
    m = model()
    m.invoke("hi", config={"callbacks": [h], "metadata": {"unrelated": 1}})
    m.invoke("hi", config={"callbacks": [h], "metadata": {"tenant_id": 7, "costopt_tier": "s"}})
    first, second = engine.ledger.records()
    assert (first.tenant, first.tier) == (None, None)
    assert (second.tenant, second.tier) == ("7", "s")
    assert not h._runs  # every started run was ended


async def test_tenant_scope_reaches_the_record_and_the_budget() -> None:
    from costopt_core import tenant_scope

    engine = CostEngine()
    # one call costs $0.00024: two fit, the third would go over
    engine.ledger.add_budget(Budget(limit_usd=Decimal("0.00045"), tenant="acme", policy="block"))
    h = CostCallbackHandler(engine)
    with tenant_scope("acme"):
        model().invoke("hi", config={"callbacks": [h]})
        await model().ainvoke("hi", config={"callbacks": [h]})
        with pytest.raises(BudgetExceededError, match="tenant 'acme'"):
            model().invoke("hi", config={"callbacks": [h]})
    with tenant_scope("other"):
        model().invoke("hi", config={"callbacks": [h]})
    # metadata still wins over the scope
    with tenant_scope("acme"):
        model().invoke("hi", config={"callbacks": [h], "metadata": {"costopt_tenant": "x"}})
    assert [r.tenant for r in engine.ledger.records()] == ["acme", "acme", "other", "x"]


def test_the_budget_check_counts_the_requests_output_cap() -> None:
    engine = CostEngine()
    # far above what the prompt costs, far below what a 100k-token answer could cost
    engine.ledger.add_budget(Budget(limit_usd=Decimal("0.01"), policy="block"))
    h = CostCallbackHandler(engine)
    model().invoke("hi", config={"callbacks": [h]})
    with pytest.raises(BudgetExceededError, match="next call estimated"):
        model().invoke("hi", config={"callbacks": [h]}, max_tokens=100_000)


def test_only_model_events_reach_the_handler(engine: CostEngine) -> None:
    """Chain, tool and retriever events are not dispatched to it; its model calls still count."""
    chain_events: list[str] = []

    class Watching(CostCallbackHandler):
        def on_chain_start(self, *args: object, **kwargs: object) -> None:
            chain_events.append("start")

        def on_chain_end(self, *args: object, **kwargs: object) -> None:
            chain_events.append("end")

    h = Watching(engine)
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model() | StrOutputParser()
    chain = chain | RunnableLambda(lambda s: s.upper())
    chain.invoke({"q": "hi"}, config={"callbacks": [h]})
    assert chain_events == []
    assert len(engine.ledger) == 1 and h.errors == 0


def test_a_run_id_that_is_not_a_uuid_is_still_recorded(engine: CostEngine) -> None:
    from langchain_core.outputs import ChatGeneration, LLMResult

    h = CostCallbackHandler(engine)
    h.on_llm_start({}, ["hi"], run_id="run-1")  # type: ignore[arg-type]
    msg = AIMessage(
        "x", usage_metadata={"input_tokens": 10, "output_tokens": 2, "total_tokens": 12}
    )
    msg.response_metadata["model_name"] = "gpt-4o-mini"
    h.on_llm_end(LLMResult(generations=[[ChatGeneration(message=msg)]]), run_id="run-1")  # type: ignore[arg-type]
    [rec] = engine.ledger.records()
    assert rec.call_id == "run-1" and rec.model == "gpt-4o-mini" and h.errors == 0


def test_an_engine_of_the_wrong_type_is_refused_at_construction() -> None:
    from costopt_core.errors import ConfigurationError

    with pytest.raises(
        ConfigurationError, match=r"engine must be a costopt_core.CostEngine.*'default'"
    ):
        CostCallbackHandler("default")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"got CostLedger.*CostEngine\(ledger=\.\.\.\)"):
        CostCallbackHandler(CostEngine().ledger)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"check_budgets must be True or False, got 'no'"):
        CostCallbackHandler(check_budgets="no")  # type: ignore[arg-type]
