"""LlamaIndex ``SummarizingMemory``: bounded views through chat engines and a FunctionAgent.

The LLM is LlamaIndex's ``MockFunctionCallingLLM`` with a scripted response
generator that records what each call receives, so the tests measure the
tokens the model is actually sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.chat_engine import ContextChatEngine, SimpleChatEngine
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.storage.chat_store import SimpleChatStore

from costopt_core.engine import CostEngine
from costopt_core.errors import ConfigurationError
from costopt_core.memory import MemoryConfig, MemoryState
from costopt_core.tenancy import tenant_scope
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from llamaindex_costopt.handler import CostEventHandler
from llamaindex_costopt.memory import (
    STATE_KEY_SUFFIX,
    SummarizingMemory,
    from_llamaindex_message,
)
from llamaindex_costopt.testing import ScriptedLLM

MODEL = "gpt-4o"
SYSTEM = "You are a travel assistant. Answer in one sentence."
CONFIG = MemoryConfig(
    window_tokens=160,
    flush_min_tokens=96,
    flush_max_tokens=256,
    summary_tokens=192,
    facts_tokens=64,
    recall_tokens=96,
)
TURNS = 36


def answer(i: int) -> str:
    return (
        f"City {i} is best in spring; the Museum of Art number {i} opens at nine and "
        f"the old bridge of city {i} is lit at night."
    )


def question(i: int) -> str:
    return f"Tell me about city {i}: what should I see there on day {i} of my trip?"


def make_engine() -> CostEngine:
    return CostEngine(embedder=FakeEmbedder())


def tokens(engine: CostEngine, messages: Sequence[ChatMessage]) -> int:
    return engine.tokens.count_messages(
        [from_llamaindex_message(m) for m in messages], MODEL
    ).tokens


class Recorder:
    """A response generator for ``MockFunctionCallingLLM``: scripted answers, inputs recorded."""

    def __init__(self, tool_calls: bool = False) -> None:
        self.calls: list[list[ChatMessage]] = []
        self.tool_calls = tool_calls
        self.turn = 0

    def __call__(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        self.calls.append(list(messages))
        last = messages[-1]
        if self.tool_calls and last.role == MessageRole.USER:
            i = self.turn
            call = ToolCallBlock(tool_call_id=f"c{i}", tool_name="weather", tool_kwargs={"city": i})
            return ChatMessage(role="assistant", blocks=[TextBlock(text=""), call])
        i, self.turn = self.turn, self.turn + 1
        return ChatMessage(role="assistant", content=answer(i))


def make_memory(engine: CostEngine, **kwargs: Any) -> SummarizingMemory:
    kwargs.setdefault("config", CONFIG)
    return SummarizingMemory.from_defaults(engine=engine, model=MODEL, **kwargs)


def assert_bounded(engine: CostEngine, calls: list[list[ChatMessage]]) -> list[int]:
    sent = [tokens(engine, c) for c in calls]
    bound = CONFIG.max_context_tokens + 80  # the system prompt and the new message on top
    assert max(sent) <= bound
    third = len(sent) // 3
    assert max(sent[2 * third :]) <= max(sent[third : 2 * third]) * 1.25
    return sent


def removed_records(engine: CostEngine) -> list[Any]:
    return [r for r in engine.ledger.records() if r.outcome == "removed"]


# -- chat engines ---------------------------------------------------------------
def test_simple_chat_engine_tokens_stay_bounded_and_the_store_keeps_everything() -> None:
    engine, rec = make_engine(), Recorder()
    memory = make_memory(engine)
    expected = 0

    def recording(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        nonlocal expected
        expected += memory.view().removed_tokens  # what the view this call got kept out
        return rec(messages, **kwargs)

    llm = MockFunctionCallingLLM(response_generator=recording, is_chat_model=True)
    chat = SimpleChatEngine.from_defaults(llm=llm, memory=memory, system_prompt=SYSTEM)
    with tenant_scope("acme"):
        for i in range(TURNS):
            chat.chat(question(i))

    sent = assert_bounded(engine, rec.calls)
    stored = memory.get_all()
    assert len(stored) == 2 * TURNS
    assert [m.content for m in stored[0::2]] == [question(i) for i in range(TURNS)]
    assert sent[-1] * 3 < tokens(engine, [ChatMessage(role="system", content=SYSTEM), *stored])
    last = rec.calls[-1]
    assert last[0].role == MessageRole.SYSTEM and last[0].content == SYSTEM
    assert last[1].content.startswith(CONFIG.summary_header)
    assert last[-1].content == question(TURNS - 1)
    # one record per answered view, carrying exactly the tokens each view kept out
    removed = removed_records(engine)
    assert expected > 0
    assert sum(r.usage.input_tokens for r in removed) == expected
    assert {(r.tenant, r.framework) for r in removed} == {("acme", "llamaindex")}
    assert engine.ledger.savings_by_lever()["memory"] > 0


async def test_simple_chat_engine_async_matches_sync() -> None:
    runs = []
    for use_async in (False, True):
        engine, rec = make_engine(), Recorder()
        memory = make_memory(engine)
        llm = MockFunctionCallingLLM(response_generator=rec, is_chat_model=True)
        chat = SimpleChatEngine.from_defaults(llm=llm, memory=memory, system_prompt=SYSTEM)
        for i in range(TURNS):
            if use_async:
                await chat.achat(question(i))
            else:
                chat.chat(question(i))
        runs.append((rec, engine, memory))
    (rec_s, eng_s, mem_s), (rec_a, eng_a, mem_a) = runs
    assert [[m.content for m in c] for c in rec_a.calls] == [
        [m.content for m in c] for c in rec_s.calls
    ]
    assert mem_a.state == mem_s.state and mem_s.state.flushes > 0
    assert eng_a.ledger.savings_by_lever() == eng_s.ledger.savings_by_lever()


class FixedRetriever(BaseRetriever):
    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [NodeWithScore(node=TextNode(text="Museums open at nine."), score=1.0)]


def test_context_chat_engine_recalls_for_the_new_message() -> None:
    engine, rec = make_engine(), Recorder()
    memory = make_memory(engine)
    llm = MockFunctionCallingLLM(response_generator=rec, is_chat_model=True)
    chat = ContextChatEngine.from_defaults(
        retriever=FixedRetriever(), llm=llm, memory=memory, system_prompt=SYSTEM
    )
    for i in range(TURNS):
        chat.chat(question(i))
    chat.chat("Remind me what you said about city 2 and its old bridge?")
    assert_bounded(engine, rec.calls)
    last = rec.calls[-1]
    recall = [m for m in last if (m.content or "").startswith(CONFIG.recall_header)]
    assert len(recall) == 1 and "city 2" in recall[0].content
    assert len(memory.get_all()) == 2 * (TURNS + 1)


# -- the agent ---------------------------------------------------------------------
def weather(city: int) -> str:
    """The weather of a city."""
    return f"It is sunny in city {city}, 21 degrees, with a light breeze from the north."


def assert_tool_pairs_intact(view: Sequence[ChatMessage], stored: Sequence[ChatMessage]) -> None:
    engine_view = [from_llamaindex_message(m) for m in view]
    answered = {m.tool_call_id for m in map(from_llamaindex_message, stored) if m.role == "tool"}
    for k, m in enumerate(engine_view):
        if m.role == "tool":
            assert any(
                c.get("id") == m.tool_call_id
                for v in engine_view[:k]
                if v.role == "assistant"
                for c in v.tool_calls
            ), f"tool result {m.tool_call_id} sent without its call"
        if m.role == "assistant" and m.tool_calls:
            later = {v.tool_call_id for v in engine_view[k + 1 :] if v.role == "tool"}
            assert {c["id"] for c in m.tool_calls} & answered <= later, "call sent without result"


async def run_agent(n: int) -> tuple[Recorder, CostEngine, SummarizingMemory, int]:
    from llama_index.core.agent.workflow import FunctionAgent

    engine, rec = make_engine(), Recorder(tool_calls=True)
    memory = make_memory(engine)
    expected = 0

    def recording(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        nonlocal expected
        # The view this call got is the one the stored history gives now.
        expected += memory.view().removed_tokens > 0
        return rec(messages, **kwargs)

    llm = MockFunctionCallingLLM(response_generator=recording, is_chat_model=True)
    agent = FunctionAgent(tools=[weather], llm=llm, system_prompt=SYSTEM)
    for i in range(n):
        await agent.run(question(i), memory=memory)
    return rec, engine, memory, expected


async def test_function_agent_gets_bounded_views_and_tool_pairs_stay_whole() -> None:
    n = 20
    rec, engine, memory, expected = await run_agent(n)
    stored = memory.get_all()
    # user, tool call, tool result, answer: every message of every run is stored
    assert [m.role.value for m in stored] == ["user", "assistant", "tool", "assistant"] * n
    assert len(rec.calls) == 2 * n
    assert_bounded(engine, rec.calls)
    for call in rec.calls:
        assert call[0].content == SYSTEM
        assert_tool_pairs_intact(call, stored)
    assert memory.state.flushes > 0
    # each model call over a shortened history is recorded once; the agent's
    # final read after each run (never sent) is not
    assert expected > 0
    assert len(removed_records(engine)) == expected


# -- reads, writes, tool pairs -------------------------------------------------------
def fill(memory: SummarizingMemory, n: int, system: bool = True) -> None:
    if system:
        memory.put(ChatMessage(role="system", content=SYSTEM))
    for i in range(n):
        memory.put(ChatMessage(role="user", content=question(i)))
        memory.put(ChatMessage(role="assistant", content=answer(i)))


def test_reads_do_not_mutate_and_are_recorded_only_once_answered() -> None:
    engine = make_engine()
    memory = make_memory(engine)
    fill(memory, 24)
    stored = [m.model_copy() for m in memory.get_all()]
    state_key = memory.memory_state_key
    saved = list(memory.chat_store.get_messages(state_key))
    first = memory.get(input="city 3?")
    second = memory.get(input="city 3?")
    assert [m.content for m in first] == [m.content for m in second]
    assert memory.get_all() == stored
    assert memory.chat_store.get_messages(state_key) == saved
    assert len(first) < len(stored)
    assert removed_records(engine) == []  # nothing answered these views yet
    memory.put(ChatMessage(role="user", content="city 3?"))
    assert removed_records(engine) == []
    memory.put(ChatMessage(role="assistant", content="It is lovely."))
    assert len(removed_records(engine)) == 2  # both reads were answered


def test_system_message_first_and_untouched() -> None:
    engine = make_engine()
    memory = make_memory(engine)
    system = ChatMessage(role="system", content=SYSTEM, additional_kwargs={"cache": "yes"})
    memory.put(system)
    fill(memory, 30, system=False)
    view = memory.get()
    assert view[0] is system
    assert sum(1 for m in view if m is system) == 1
    assert memory.state.flushes > 0
    assert all(SYSTEM not in e.text for e in memory.state.entries)


def tool_turn(i: int) -> list[ChatMessage]:
    calls = [
        ToolCallBlock(tool_call_id=f"w{i}", tool_name="weather", tool_kwargs={"city": i}),
        ToolCallBlock(tool_call_id=f"m{i}", tool_name="museum", tool_kwargs={"city": i}),
    ]
    return [
        ChatMessage(role="user", content=question(i)),
        ChatMessage(role="assistant", blocks=calls),
        ChatMessage(
            role="tool",
            content=f"Sunny in city {i}, 21 degrees.",
            additional_kwargs={"tool_call_id": f"w{i}"},
        ),
        ChatMessage(
            role="tool",
            content=f"The museum of city {i} opens at 9.",
            additional_kwargs={"tool_call_id": f"m{i}"},
        ),
        ChatMessage(role="assistant", content=f"City {i}: sunny; museum from 9."),
    ]


@pytest.mark.parametrize("window", [24, 40, 64, 100, 160])
def test_tool_calls_are_never_split_from_their_results(window: int) -> None:
    engine = make_engine()
    config = MemoryConfig(
        window_tokens=window, flush_min_tokens=48, flush_max_tokens=96, recall_tokens=0
    )
    memory = make_memory(engine, config=config)
    memory.put(ChatMessage(role="system", content=SYSTEM))
    for i in range(12):
        for m in tool_turn(i):
            memory.put(m)
            view = memory.get()
            assert view[0].content == SYSTEM
            assert_tool_pairs_intact(view, memory.get_all())
    assert len(memory.get_all()) == 1 + 12 * 5
    assert memory.state.flushes > 0


def test_tool_calls_in_additional_kwargs_are_translated() -> None:
    m = ChatMessage(
        role="assistant",
        content="",
        additional_kwargs={"tool_calls": [{"id": "x", "function": {"name": "f"}}]},
    )
    assert from_llamaindex_message(m).tool_calls == ({"id": "x", "function": {"name": "f"}},)
    t = ChatMessage(role="tool", content="ok", additional_kwargs={"tool_call_id": "x"})
    assert from_llamaindex_message(t).tool_call_id == "x"


# -- persistence, reset, settings ------------------------------------------------------
def test_state_persists_in_the_chat_store() -> None:
    engine = make_engine()
    store = SimpleChatStore()
    memory = make_memory(engine, chat_store=store, chat_store_key="ana")
    fill(memory, 40)
    assert memory.state.flushes > 0
    assert set(store.get_keys()) == {"ana", "ana" + STATE_KEY_SUFFIX}
    # Another process: every stored message through JSON into a new store, a new memory.
    # (SimpleChatStore.persist itself fails under llama-index-core 0.14.25 + pydantic 2.14.)
    reloaded = SimpleChatStore()
    for key in store.get_keys():
        reloaded.set_messages(
            key,
            [ChatMessage.model_validate_json(m.model_dump_json()) for m in store.get_messages(key)],
        )
    again = make_memory(engine, chat_store=reloaded, chat_store_key="ana")
    assert [m.content for m in again.get()] == [m.content for m in memory.get()]
    assert again.state == memory.state


def test_a_state_for_another_history_is_ignored() -> None:
    engine = make_engine()
    store = SimpleChatStore()
    fill(make_memory(engine, chat_store=store, chat_store_key="a"), 30)
    memory = make_memory(
        engine, chat_store=store, chat_store_key="b", state_key="a::costopt_memory"
    )
    memory.put(ChatMessage(role="user", content="hi"))
    assert [m.content for m in memory.get()] == ["hi"]


def test_set_and_reset() -> None:
    engine = make_engine()
    memory = make_memory(engine)
    fill(memory, 30)
    assert memory.state.flushes > 0
    memory.set([ChatMessage(role="user", content="fresh start")])
    assert [m.content for m in memory.get()] == ["fresh start"]
    fill(memory, 30)
    memory.reset()
    assert memory.get_all() == [] and memory.get() == []
    assert memory.chat_store.get_messages(memory.memory_state_key) == []
    assert memory.state == MemoryState()


async def test_async_methods_match_sync() -> None:
    e1, e2 = make_engine(), make_engine()
    m1, m2 = make_memory(e1), make_memory(e2)
    fill(m1, 30)
    await m2.aput(ChatMessage(role="system", content=SYSTEM))
    for i in range(30):
        await m2.aput(ChatMessage(role="user", content=question(i)))
        await m2.aput(ChatMessage(role="assistant", content=answer(i)))
    assert m1.get_all() == await m2.aget_all()
    assert m1.state == m2.state
    assert [m.content for m in m1.get(input="city 4")] == [
        m.content for m in await m2.aget(input="city 4")
    ]
    await m2.areset()
    assert await m2.aget_all() == [] and m2.state == MemoryState()


def test_from_defaults_takes_the_model_from_the_llm_and_chat_history() -> None:
    llm = ScriptedLLM.from_texts(["ok"], model="gpt-4o-mini")
    history = [ChatMessage(role="user", content="hi"), ChatMessage(role="assistant", content="yo")]
    memory = SummarizingMemory.from_defaults(history, llm=llm, engine=make_engine())
    assert memory.model == "gpt-4o-mini"
    assert memory.get_all() == history


def test_record_savings_off_records_nothing() -> None:
    engine = make_engine()
    memory = make_memory(engine, record_savings=False)
    fill(memory, 20)
    memory.get()
    memory.put(ChatMessage(role="assistant", content="ok"))
    assert len(memory.get()) < len(memory.get_all())
    assert engine.ledger.records() == []


def summarizer_llm() -> ScriptedLLM:
    text = "Ana is planning a trip through many cities and asked about museums."
    return ScriptedLLM(script=Script([ScriptedResponse(text, model="gpt-4o-mini")]))


def test_summarizer_llm_writes_the_summary_and_its_calls_are_priced_once() -> None:
    engine = make_engine()
    memory = make_memory(engine, summarizer=summarizer_llm())
    with tenant_scope("acme"):
        fill(memory, 24)
    calls = [r for r in engine.ledger.records() if r.outcome == "overhead"]
    assert memory.state.summarizer_calls == len(calls) > 0
    assert {(r.model, r.tenant) for r in calls} == {("gpt-4o-mini", "acme")}
    # The summaries are memory's own cost: no baseline, no routing "saving".
    assert all(r.baseline_cost_usd == 0 and r.savings_usd == {"memory": -r.cost_usd} for r in calls)
    assert all(r.cost_usd for r in calls) and engine.ledger.totals().requests == 0
    assert "Ana is planning a trip" in (memory.get()[1].content or "")

    # With a cost handler on the same engine attached, it prices them (and we do not).
    other = make_engine()
    handler = CostEventHandler(other).attach()
    try:
        memory = make_memory(other, summarizer=summarizer_llm())
        fill(memory, 24)
    finally:
        handler.detach()
    priced = [r for r in other.ledger.records() if r.outcome == "overhead"]
    assert len(priced) == memory.state.summarizer_calls > 0
    assert other.ledger.totals().calls == len(priced)


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_own_pricing_records_a_routed_summarizer_as_a_handler_would(sync: bool) -> None:
    """No handler attached: the memory prices a RouterLLM summarizer's calls under the
    tier models that answered (an escalated attempt included), as memory's overhead."""
    from costopt_core import Usage
    from llamaindex_costopt.router import RouterLLM
    from tests.conftest import CheapFirst

    engine = make_engine()
    usage = Usage(input_tokens=1000, output_tokens=100)
    script = Script([ScriptedResponse("I'm not sure, sorry.", usage)])
    small = ScriptedLLM(script=script, model="gpt-4o-mini")
    reply = ScriptedResponse("Ana plans a trip.", usage, model="gpt-4o")
    big = ScriptedLLM(script=Script([reply]), model="gpt-4o")
    router = RouterLLM(
        tiers={"small": small, "frontier": big},
        classifier=CheapFirst(),
        engine=engine,
    )
    memory = make_memory(engine, summarizer=router)
    if sync:
        fill(memory, 24)
    else:
        await memory.aput(ChatMessage(role="system", content=SYSTEM))
        for i in range(24):
            await memory.aput(ChatMessage(role="user", content=question(i)))
            await memory.aput(ChatMessage(role="assistant", content=answer(i)))
    calls = [r for r in engine.ledger.records() if r.outcome != "removed"]
    n = memory.state.summarizer_calls
    assert n > 0 and len(calls) == 2 * n  # each summary: the weak attempt and the re-ask
    assert sorted({(r.model, r.tier) for r in calls}) == [
        ("gpt-4o", "frontier"),
        ("gpt-4o-mini", "small"),
    ]
    assert all(r.outcome == "overhead" and r.cost_usd and r.baseline_cost_usd == 0 for r in calls)
    assert engine.ledger.savings_by_lever()["routing"] == 0
    assert engine.ledger.totals().requests == 0


def test_own_pricing_bills_nothing_for_summaries_a_cache_served() -> None:
    from costopt_core import Usage
    from costopt_core.cache import SemanticCache
    from llamaindex_costopt import CachedLLM

    engine = make_engine()
    cache = SemanticCache(embedder=FakeEmbedder())
    inner_calls = 0
    for session in ("a", "b"):  # the same history twice: b's summaries come from the cache
        inner = ScriptedLLM(
            script=Script([ScriptedResponse("Ana plans a trip.", Usage(1000, 100))]),
            model="gpt-4o-mini",
        )
        memory = make_memory(
            engine, summarizer=CachedLLM(llm=inner, semantic_cache=cache), chat_store_key=session
        )
        fill(memory, 12)
        inner_calls += inner.script.calls
    calls = [r for r in engine.ledger.records() if r.outcome == "overhead"]
    billed = [r for r in calls if r.cost_usd]
    assert inner_calls > 0 and len(billed) == inner_calls and len(calls) == 2 * inner_calls
    assert engine.ledger.totals().cost_usd == sum(r.cost_usd for r in billed)
    assert engine.ledger.totals().cache_hits_exact == 0 == engine.ledger.totals().requests


def test_a_summary_is_recorded_by_the_memory_and_an_enclosing_block_of_another_engine() -> None:
    """The memory's own pricing does not hide the call from a track_costs block around it."""
    from llamaindex_costopt import track_costs

    engine, outer = make_engine(), make_engine()
    memory = make_memory(engine, summarizer=summarizer_llm())
    with track_costs(outer):
        fill(memory, 24)
    mine = [r.call_id for r in engine.ledger.records() if r.outcome == "overhead"]
    theirs = [r.call_id for r in outer.ledger.records() if r.outcome == "overhead"]
    assert len(mine) == memory.state.summarizer_calls > 0 and mine == theirs


def test_the_memorys_tenant_does_not_change_the_tenant_other_ledgers_book_under() -> None:
    """Its own block is see-through: an enclosing block books the summaries as its own."""
    from llamaindex_costopt import track_costs

    engine, outer = make_engine(), make_engine()
    memory = make_memory(engine, summarizer=summarizer_llm(), tenant="memory-tenant")
    with track_costs(outer, tenant="block-tenant"):
        fill(memory, 24)
    assert {r.tenant for r in engine.ledger.records() if r.outcome == "overhead"} == {
        "memory-tenant"
    }
    assert {r.tenant for r in outer.ledger.records() if r.outcome == "overhead"} == {"block-tenant"}


@pytest.mark.parametrize("where", ["none", "track_costs", "attached"])
def test_summarizer_model_names_calls_that_name_no_model(where: str) -> None:
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
    from llama_index.core.llms.callbacks import llm_completion_callback

    from llamaindex_costopt import track_costs

    class NoName(CustomLLM):
        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="")

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
            usage = {"prompt_tokens": 1000, "completion_tokens": 100}
            return CompletionResponse(text="Ana plans a trip.", raw={"usage": usage})

        def stream_complete(self, *a: Any, **k: Any) -> Any:
            raise NotImplementedError

    engine = make_engine()
    memory = make_memory(engine, summarizer=NoName(), summarizer_model="gpt-4o-mini")
    if where == "track_costs":
        with track_costs(engine):
            fill(memory, 24)
    elif where == "attached":
        handler = CostEventHandler(engine).attach()
        try:
            fill(memory, 24)
        finally:
            handler.detach()
    else:
        fill(memory, 24)
    calls = [r for r in engine.ledger.records() if r.outcome == "overhead"]
    assert calls and {r.model for r in calls} == {"gpt-4o-mini"}
    assert all(r.cost_usd for r in calls)


@pytest.mark.parametrize("where", ["none", "track_costs", "attached"])
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_a_summarizer_that_sends_no_events_is_priced_from_its_answer(
    sync: bool, where: str
) -> None:
    """A custom LLM whose chat() lacks LlamaIndex's callback decorator sends no events
    for a handler to record: the memory prices it from the answer's usage."""
    from llama_index.core.base.llms.types import ChatResponse
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata

    class Plain(CustomLLM):
        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="gpt-4o-mini")

        def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
            raise NotImplementedError

        def stream_complete(self, *a: Any, **k: Any) -> Any:
            raise NotImplementedError

        def chat(self, messages: Any, **kw: Any) -> ChatResponse:
            usage = {"prompt_tokens": 1000, "completion_tokens": 100}
            reply = ChatMessage(role="assistant", content="Ana plans a trip.")
            return ChatResponse(message=reply, raw={"usage": usage})

        async def achat(self, messages: Any, **kw: Any) -> ChatResponse:
            return self.chat(messages)

    from llamaindex_costopt import track_costs

    engine = make_engine()
    memory = make_memory(engine, summarizer=Plain())

    async def run() -> None:
        if sync:
            fill(memory, 24)
            return
        for i in range(24):
            await memory.aput(ChatMessage(role="user", content=question(i)))
            await memory.aput(ChatMessage(role="assistant", content=answer(i)))

    if where == "track_costs":
        with track_costs(engine):
            await run()
    elif where == "attached":
        handler = CostEventHandler(engine).attach()
        try:
            await run()
        finally:
            handler.detach()
    else:
        await run()
    calls = [r for r in engine.ledger.records() if r.outcome == "overhead"]
    assert len(calls) == memory.state.summarizer_calls > 0
    assert {r.model for r in calls} == {"gpt-4o-mini"} and all(r.cost_usd for r in calls)


def test_bad_config_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="config must be"):
        SummarizingMemory(config={"window_tokens": 5})


async def test_batch_writes_async_match_sync() -> None:
    def turns(i: int) -> list[ChatMessage]:
        return [
            ChatMessage(role="user", content=question(i)),
            ChatMessage(role="assistant", content=answer(i)),
        ]

    m1, m2 = make_memory(make_engine()), make_memory(make_engine())
    m1.set([ChatMessage(role="system", content=SYSTEM)])
    await m2.aset([ChatMessage(role="system", content=SYSTEM)])
    for i in range(30):
        m1.put_messages(turns(i))
        await m2.aput_messages(turns(i))
    assert m1.state == m2.state and m1.state.flushes > 0
    assert m1.get_all() == await m2.aget_all()
    assert [m.content for m in m1.get()] == [m.content for m in await m2.aget()]


def test_savings_are_booked_under_the_track_costs_tenant() -> None:
    from llamaindex_costopt import track_costs

    engine = make_engine()
    memory = make_memory(engine)
    with track_costs(engine, tenant="acme"):
        fill(memory, 20)
        memory.get()
        memory.put(ChatMessage(role="assistant", content="ok"))
    removed = removed_records(engine)
    assert removed and {r.tenant for r in removed} == {"acme"}
