"""LangChain summarizing memory: bounded views through RunnableWithMessageHistory, LCEL and agents.

The model is ``ScriptedChatModel`` with a callback that captures what each
call receives, so the tests measure the tokens the model is actually sent.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.chat_history import BaseChatMessageHistory, InMemoryChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

from costopt_core.engine import CostEngine
from costopt_core.errors import ConfigurationError
from costopt_core.memory import MemoryConfig, MemoryState
from costopt_core.tenancy import tenant_scope
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from langchain_costopt._convert import from_langchain_messages
from langchain_costopt.callbacks import CostCallbackHandler
from langchain_costopt.memory import (
    STATE_MESSAGE_NAME,
    SUMMARIZER_TAG,
    SummarizingChatMessageHistory,
    SummarizingMemoryTransform,
    asummarize_messages,
    summarize_messages,
)
from langchain_costopt.testing import ScriptedChatModel

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


@pytest.fixture(autouse=True)
def _quiet_deprecations() -> Iterator[None]:
    # RunnableWithMessageHistory and the in-memory history are deprecated in
    # langchain-core 1.6 but still shipped and used; their warnings are noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


class Capture(BaseCallbackHandler):
    """Records the messages of every chat-model call."""

    def __init__(self) -> None:
        self.calls: list[list[BaseMessage]] = []

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self.calls.append(list(messages[0]))


def answers(n: int = TURNS) -> list[str]:
    return [
        f"City {i} is best in spring; the Museum of Art number {i} opens at nine and "
        f"the old bridge of city {i} is lit at night."
        for i in range(n)
    ]


def question(i: int) -> str:
    return f"Tell me about city {i}: what should I see there on day {i} of my trip?"


def tokens(engine: CostEngine, messages: Sequence[BaseMessage]) -> int:
    return engine.tokens.count_messages(from_langchain_messages(messages), MODEL).tokens


def make_engine() -> CostEngine:
    return CostEngine(embedder=FakeEmbedder())


class Sessions:
    """``get_session_history`` that builds a new wrapper per call, as many apps do."""

    def __init__(self, engine: CostEngine, **kwargs: Any) -> None:
        self.engine = engine
        self.stores: dict[str, InMemoryChatMessageHistory] = {}
        self.kwargs = kwargs

    def store(self, key: str) -> InMemoryChatMessageHistory:
        return self.stores.setdefault(key, InMemoryChatMessageHistory())

    def __call__(self, session_id: str) -> SummarizingChatMessageHistory:
        return SummarizingChatMessageHistory(
            self.store(session_id),
            state_store=self.store(f"{session_id}:memory"),
            config=CONFIG,
            engine=self.engine,
            model=MODEL,
            **self.kwargs,
        )


def history_chain(
    engine: CostEngine, capture: Capture, **kwargs: Any
) -> tuple[RunnableWithMessageHistory, Sessions]:
    model = ScriptedChatModel.from_texts(answers(), callbacks=[capture])
    prompt = ChatPromptTemplate.from_messages(
        [("system", SYSTEM), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    sessions = Sessions(engine, **kwargs)
    chain = RunnableWithMessageHistory(
        prompt | model,
        sessions,
        input_messages_key="question",
        history_messages_key="history",
    )
    return chain, sessions


def assert_bounded(engine: CostEngine, calls: list[list[BaseMessage]]) -> list[int]:
    sent = [tokens(engine, c) for c in calls]
    # The memory's part never exceeds its bound; the system prompt and the new
    # question come on top (a generous 80 tokens for both).
    bound = CONFIG.max_context_tokens + 80
    assert max(sent) <= bound
    # Flat, not linear: the last third of the session costs no more than the middle third.
    third = len(sent) // 3
    assert max(sent[2 * third :]) <= max(sent[third : 2 * third]) * 1.25
    return sent


# -- RunnableWithMessageHistory ---------------------------------------------------
def test_tokens_per_turn_stay_bounded_while_the_store_keeps_everything() -> None:
    engine, capture = make_engine(), Capture()
    chain, sessions = history_chain(engine, capture)
    cfg = {"configurable": {"session_id": "ana"}}
    for i in range(TURNS):
        chain.invoke({"question": question(i)}, cfg)

    sent = assert_bounded(engine, capture.calls)
    stored = sessions.store("ana").messages
    assert len(stored) == 2 * TURNS
    assert [m.content for m in stored[0::2]] == [question(i) for i in range(TURNS)]
    naive = tokens(engine, [SystemMessage(SYSTEM), *stored])
    assert sent[-1] * 3 < naive  # the full history would cost over three times as much

    last = capture.calls[-1]
    assert last[0] == SystemMessage(SYSTEM)  # the system prompt first, as written
    assert last[1].type == "system" and last[1].text.startswith(CONFIG.summary_header)
    assert last[-1].content == question(TURNS - 1)
    # The newest stored turns are sent as the store holds them.
    assert last[-3:-1] == stored[-4:-2] or last[-2] == stored[-3]


def test_one_savings_record_per_call_and_tenant_from_scope() -> None:
    engine, capture = make_engine(), Capture()
    chain, sessions = history_chain(engine, capture)
    cfg = {"configurable": {"session_id": "ana"}}
    expected = 0
    with tenant_scope("acme"):
        for i in range(TURNS):
            view = sessions("ana").view()
            expected += view.removed_tokens
            chain.invoke({"question": question(i)}, cfg)

    removed = [r for r in engine.ledger.records() if r.outcome == "removed"]
    assert expected > 0
    assert sum(r.usage.input_tokens or 0 for r in removed) == expected
    assert {r.tenant for r in removed} == {"acme"}
    assert {r.framework for r in removed} == {"langchain"}
    assert engine.ledger.savings_by_lever()["memory"] > 0


def test_messages_input_without_history_key_is_recorded_once_and_stored_once() -> None:
    # Without history_messages_key RunnableWithMessageHistory reads `messages`
    # twice per call (and slices the input by the view's length): the view
    # must be the same both times, and be recorded once.
    engine, capture = make_engine(), Capture()
    model = ScriptedChatModel.from_texts(answers(), callbacks=[capture])
    sessions = Sessions(engine)
    chain = RunnableWithMessageHistory(model, sessions)
    cfg = {"configurable": {"session_id": "bo"}}
    expected_records = 0
    for i in range(TURNS):
        if sessions("bo").view().removed_tokens > 0:
            expected_records += 1
        chain.invoke([HumanMessage(question(i))], cfg)
    stored = sessions.store("bo").messages
    assert [m.type for m in stored] == ["human", "ai"] * TURNS
    removed = [r for r in engine.ledger.records() if r.outcome == "removed"]
    assert expected_records > 0
    assert len(removed) == expected_records
    assert_bounded(engine, capture.calls)


async def test_async_matches_sync() -> None:
    engine_s, cap_s = make_engine(), Capture()
    engine_a, cap_a = make_engine(), Capture()
    chain_s, sessions_s = history_chain(engine_s, cap_s)
    chain_a, sessions_a = history_chain(engine_a, cap_a)
    cfg = {"configurable": {"session_id": "ana"}}
    for i in range(TURNS):
        chain_s.invoke({"question": question(i)}, cfg)
        await chain_a.ainvoke({"question": question(i)}, cfg)
    assert [[m.content for m in c] for c in cap_a.calls] == [
        [m.content for m in c] for c in cap_s.calls
    ]
    assert sessions_a.store("ana:memory").messages[-1].content == (
        sessions_s.store("ana:memory").messages[-1].content
    )
    assert engine_a.ledger.savings_by_lever() == engine_s.ledger.savings_by_lever()


def test_sync_and_async_history_methods_agree() -> None:
    engine = make_engine()
    plain = InMemoryChatMessageHistory()
    wrapper = SummarizingChatMessageHistory(plain, config=CONFIG, engine=engine, model=MODEL)
    for i, a in enumerate(answers(20)):
        wrapper.add_messages([HumanMessage(question(i)), AIMessage(a)])

    async def read() -> list[BaseMessage]:
        return await wrapper.aget_messages()

    assert asyncio.run(read()) == wrapper.messages


# -- reads, writes and the stored history ------------------------------------------
def filled(
    engine: CostEngine, *, state_store: BaseChatMessageHistory | None = None, n: int = 24
) -> tuple[SummarizingChatMessageHistory, InMemoryChatMessageHistory]:
    plain = InMemoryChatMessageHistory(messages=[SystemMessage(SYSTEM)])
    wrapper = SummarizingChatMessageHistory(
        plain, state_store=state_store, config=CONFIG, engine=engine, model=MODEL
    )
    for i, a in enumerate(answers(n)):
        wrapper.add_messages([HumanMessage(question(i)), AIMessage(a)])
    return wrapper, plain


def test_reads_do_not_mutate() -> None:
    engine = make_engine()
    sidecar = InMemoryChatMessageHistory()
    wrapper, plain = filled(engine, state_store=sidecar)
    before = [m.model_copy() for m in plain.messages]
    side_before = list(sidecar.messages)
    first = wrapper.messages
    second = wrapper.messages
    assert first == second
    assert plain.messages == before
    assert sidecar.messages == side_before
    assert len(first) < len(plain.messages)
    # the view is recorded once for one stored history, however often it is read
    assert len([r for r in engine.ledger.records() if r.outcome == "removed"]) == 1


def test_add_messages_appends_unchanged_and_clear_clears_both() -> None:
    engine = make_engine()
    sidecar = InMemoryChatMessageHistory()
    wrapper, plain = filled(engine, state_store=sidecar)
    msg = HumanMessage("one more", id="m-1", additional_kwargs={"x": 1})
    wrapper.add_messages([msg])
    assert plain.messages[-1] is msg
    assert len(plain.messages) == 1 + 2 * 24 + 1
    assert wrapper.full_messages == plain.messages
    assert sidecar.messages and sidecar.messages[-1].name == STATE_MESSAGE_NAME
    assert wrapper.state.flushes > 0
    wrapper.clear()
    assert plain.messages == [] and sidecar.messages == []
    assert wrapper.state == MemoryState()
    assert wrapper.messages == []


def test_system_message_first_and_untouched() -> None:
    engine = make_engine()
    system = SystemMessage(SYSTEM, id="sys", additional_kwargs={"cache": "yes"})
    plain = InMemoryChatMessageHistory(messages=[system])
    wrapper = SummarizingChatMessageHistory(plain, config=CONFIG, engine=engine, model=MODEL)
    for i, a in enumerate(answers(30)):
        wrapper.add_messages([HumanMessage(question(i)), AIMessage(a)])
    view = wrapper.messages
    assert view[0] is system
    assert sum(1 for m in view if m is system) == 1
    assert wrapper.state.flushes > 0
    assert all(SYSTEM not in e.text for e in wrapper.state.entries)


def tool_turn(i: int) -> list[BaseMessage]:
    calls = [
        {"name": "weather", "args": {"city": f"City{i}"}, "id": f"w{i}", "type": "tool_call"},
        {"name": "museum", "args": {"city": f"City{i}"}, "id": f"m{i}", "type": "tool_call"},
    ]
    return [
        HumanMessage(question(i)),
        AIMessage("", tool_calls=calls),
        ToolMessage(f"Sunny in City{i}, 21 degrees, light wind.", tool_call_id=f"w{i}"),
        ToolMessage(f"The museum of City{i} opens at 9 and closes at 17.", tool_call_id=f"m{i}"),
        AIMessage(f"City{i}: sunny, 21 degrees; the museum is open 9 to 17."),
    ]


def assert_tool_pairs_intact(
    view: Sequence[BaseMessage], stored: Sequence[BaseMessage] | None = None
) -> None:
    """Every tool result comes after its call; every call with results has all of them."""
    answered = {m.tool_call_id for m in stored or view if isinstance(m, ToolMessage)}
    for k, m in enumerate(view):
        if isinstance(m, ToolMessage):
            owner = next(
                (
                    v
                    for v in reversed(view[:k])
                    if isinstance(v, AIMessage)
                    and any(c["id"] == m.tool_call_id for c in v.tool_calls)
                ),
                None,
            )
            assert owner is not None, f"tool result {m.tool_call_id} sent without its call"
        if isinstance(m, AIMessage) and m.tool_calls:
            results = {v.tool_call_id for v in view[k + 1 :] if isinstance(v, ToolMessage)}
            ids = {c["id"] for c in m.tool_calls} & answered
            assert ids <= results, "tool call sent without its results"


@pytest.mark.parametrize("window", [24, 40, 64, 100, 160])
def test_tool_calls_are_never_split_from_their_results(window: int) -> None:
    engine = make_engine()
    config = MemoryConfig(
        window_tokens=window, flush_min_tokens=48, flush_max_tokens=96, recall_tokens=0
    )
    plain = InMemoryChatMessageHistory(messages=[SystemMessage(SYSTEM)])
    wrapper = SummarizingChatMessageHistory(plain, config=config, engine=engine, model=MODEL)
    for i in range(12):
        for m in tool_turn(i):
            wrapper.add_messages([m])
            view = wrapper.messages
            assert view[0].content == SYSTEM
            assert_tool_pairs_intact(view, plain.messages)
    assert len(plain.messages) == 1 + 12 * 5
    assert wrapper.state.flushes > 0


# -- persistence -----------------------------------------------------------------
def test_state_persists_through_the_sidecar_store() -> None:
    engine = make_engine()
    sidecar = InMemoryChatMessageHistory()
    wrapper, plain = filled(engine, state_store=sidecar, n=40)
    assert wrapper.state.flushes > 0
    # A new process: new wrapper objects over the same two stores.
    again = SummarizingChatMessageHistory(
        plain, state_store=sidecar, config=CONFIG, engine=engine, model=MODEL
    )
    assert again.messages == wrapper.messages
    assert again.state == wrapper.state
    # The sidecar is compacted: it never grows past a few entries.
    assert 1 <= len(sidecar.messages) <= 8


def test_without_a_sidecar_a_new_wrapper_rebuilds_the_state_from_the_history() -> None:
    engine = make_engine()
    _, plain = filled(engine, n=40)
    fresh = SummarizingChatMessageHistory(plain, config=CONFIG, engine=engine, model=MODEL)
    assert fresh.state == MemoryState()
    fresh.add_messages([HumanMessage(question(99))])
    assert fresh.state.flushes >= 1 and fresh.state.folded > 0
    assert tokens(engine, fresh.messages) <= CONFIG.max_context_tokens + 80


def test_a_stale_sidecar_for_another_history_is_ignored() -> None:
    engine = make_engine()
    sidecar = InMemoryChatMessageHistory()
    filled(engine, state_store=sidecar, n=30)
    other = InMemoryChatMessageHistory(messages=[HumanMessage("hi"), AIMessage("hello")])
    wrapper = SummarizingChatMessageHistory(
        other, state_store=sidecar, config=CONFIG, engine=engine, model=MODEL
    )
    assert wrapper.messages == other.messages


def test_record_savings_off_records_nothing() -> None:
    engine = make_engine()
    plain = InMemoryChatMessageHistory()
    wrapper = SummarizingChatMessageHistory(
        plain, config=CONFIG, engine=engine, model=MODEL, record_savings=False
    )
    for i, a in enumerate(answers(20)):
        wrapper.add_messages([HumanMessage(question(i)), AIMessage(a)])
    assert len(wrapper.messages) < len(plain.messages)
    assert engine.ledger.records() == []


def test_summarizer_model_writes_the_summary_and_its_calls_are_priced() -> None:
    engine = make_engine()
    summary = ScriptedResponse(
        "Ana is planning a trip through many cities and asked about museums.",
        model="gpt-4o-mini",
    )
    cheap = ScriptedChatModel(script=Script([summary]), model_name="gpt-4o-mini")
    capture = Capture()
    cheap.callbacks = [capture]
    plain = InMemoryChatMessageHistory()
    wrapper = SummarizingChatMessageHistory(
        plain, config=CONFIG, engine=engine, model=MODEL, summarizer=cheap
    )
    with tenant_scope("acme"):
        for i, a in enumerate(answers(24)):
            wrapper.add_messages([HumanMessage(question(i)), AIMessage(a)])
    records = engine.ledger.records()
    calls = [r for r in records if r.outcome == "overhead"]
    assert wrapper.state.summarizer_calls == len(calls) == len(capture.calls) > 0
    assert {r.model for r in calls} == {"gpt-4o-mini"}
    assert {r.tenant for r in calls} == {"acme"}
    # The summaries are memory's own cost: no baseline, no routing "saving".
    assert all(r.baseline_cost_usd == 0 and r.cost_usd for r in calls)
    assert all(r.savings_usd == {"memory": -r.cost_usd} for r in calls)
    assert engine.ledger.totals().requests == 0 == engine.ledger.savings_by_lever()["routing"]
    assert "Ana is planning a trip" in wrapper.messages[0].text


def test_summarizer_calls_not_priced_twice_under_a_callers_handler() -> None:
    engine = make_engine()
    cheap = ScriptedChatModel.from_texts(["Ana plans a trip."], model="gpt-4o-mini")
    transform = SummarizingMemoryTransform(CONFIG, engine=engine, model=MODEL, summarizer=cheap)
    model = ScriptedChatModel.from_texts(answers())
    chain = transform | model
    history: list[BaseMessage] = [SystemMessage(SYSTEM)]
    handler = CostCallbackHandler(engine)
    for i, a in enumerate(answers(20)):
        history.append(HumanMessage(question(i)))
        chain.invoke(history, {"callbacks": [handler]})
        history.append(AIMessage(a))
    summarizer_calls = transform.state_for(None).summarizer_calls
    priced = [r for r in engine.ledger.records() if r.model == "gpt-4o-mini"]
    # 20 conversation calls (ScriptedChatModel reports gpt-4o-mini) plus the summarizer's, once each
    assert summarizer_calls > 0
    assert len(priced) == 20 + summarizer_calls


def test_bad_arguments_raise_configuration_errors() -> None:
    plain = InMemoryChatMessageHistory()
    with pytest.raises(ConfigurationError, match="history must be"):
        SummarizingChatMessageHistory([])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="state_store must not be"):
        SummarizingChatMessageHistory(plain, state_store=plain)
    with pytest.raises(ConfigurationError, match="config must be"):
        SummarizingChatMessageHistory(plain, config={"window_tokens": 5})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="summarizer must be"):
        SummarizingChatMessageHistory(plain, summarizer="gpt-4o-mini")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_sessions"):
        SummarizingMemoryTransform(max_sessions=0)


# -- the message-list transform ------------------------------------------------------
def conversation(n: int) -> list[BaseMessage]:
    out: list[BaseMessage] = [SystemMessage(SYSTEM)]
    for i, a in enumerate(answers(n)):
        out += [HumanMessage(question(i)), AIMessage(a)]
    out.append(HumanMessage("Which museum opens at nine in city 3?"))
    return out


def test_summarize_messages_returns_view_and_state_without_touching_the_input() -> None:
    engine = make_engine()
    msgs = conversation(30)
    copy = list(msgs)
    result = summarize_messages(msgs, config=CONFIG, engine=engine, model=MODEL)
    assert msgs == copy
    assert result.flushed and result.state.flushes == 1
    assert result.messages[0] is msgs[0]
    assert result.messages[-1] is msgs[-1]
    assert result.view.recall is not None and "city 3" in result.view.recall.content
    assert tokens(engine, result.messages) == result.view.tokens_sent
    again = summarize_messages(msgs, state=result.state, config=CONFIG, engine=engine, model=MODEL)
    assert not again.flushed and again.messages == result.messages
    removed = [r for r in engine.ledger.records() if r.outcome == "removed"]
    assert len(removed) == 2


async def test_asummarize_messages_matches_sync() -> None:
    engine = make_engine()
    msgs = conversation(30)
    sync = summarize_messages(msgs, config=CONFIG, engine=engine, model=MODEL)
    other = make_engine()
    async_ = await asummarize_messages(msgs, config=CONFIG, engine=other, model=MODEL)
    assert async_.messages == sync.messages
    assert async_.state == sync.state
    assert other.ledger.savings_by_lever() == engine.ledger.savings_by_lever()


def test_transform_in_lcel_keeps_one_state_per_session() -> None:
    engine, capture = make_engine(), Capture()
    transform = SummarizingMemoryTransform(CONFIG, engine=engine, model=MODEL)
    prompt = ChatPromptTemplate.from_messages(
        [("system", SYSTEM), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    chain = prompt | transform | ScriptedChatModel.from_texts(answers(), callbacks=[capture])
    histories: dict[str, list[BaseMessage]] = {"u1": [], "u2": []}
    for i in range(TURNS):
        for user, hist in histories.items():
            q = question(i) if user == "u1" else f"{user}: {question(i)}"
            out = chain.invoke(
                {"history": hist, "question": q}, {"configurable": {"session_id": user}}
            )
            hist += [HumanMessage(q), out]
    assert_bounded(engine, capture.calls[0::2])
    assert_bounded(engine, capture.calls[1::2])
    s1, s2 = transform.state_for("u1"), transform.state_for("u2")
    assert s1.flushes > 0 and s2.flushes > 0 and s1 != s2
    assert capture.calls[-1][-1].content == f"u2: {question(TURNS - 1)}"


async def test_transform_async_matches_sync() -> None:
    msgs = conversation(30)
    sync_t = SummarizingMemoryTransform(CONFIG, engine=make_engine(), model=MODEL)
    async_t = SummarizingMemoryTransform(CONFIG, engine=make_engine(), model=MODEL)
    assert await async_t.ainvoke(msgs) == sync_t.invoke(msgs)
    assert async_t.state_for(None) == sync_t.state_for(None)


def test_transform_forgets_least_recently_used_sessions() -> None:
    transform = SummarizingMemoryTransform(CONFIG, engine=make_engine(), max_sessions=2)
    msgs = conversation(30)
    for user in ("a", "b", "c"):
        transform.invoke(msgs, {"configurable": {"session_id": user}})
    assert transform.state_for("a") == MemoryState()
    assert transform.state_for("c").flushes == 1


# -- the agent middleware ------------------------------------------------------------
def agent_script(n: int) -> Script:
    out = []
    for i in range(n):
        call = {"name": "weather", "args": {"city": f"City{i}"}, "id": f"c{i}", "type": "tool_call"}
        out.append(ScriptedResponse("", tool_calls=(call,)))
        out.append(ScriptedResponse(f"City{i} is sunny with 21 degrees; trip day {i} looks good."))
    return Script(out)


def run_agent(n: int, *, use_async: bool = False) -> tuple[Any, Capture, CostEngine, Any]:
    pytest.importorskip("langchain.agents")
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from langgraph.checkpoint.memory import InMemorySaver

    from langchain_costopt.memory_middleware import STATE_KEY, SummarizingMemoryMiddleware

    @tool
    def weather(city: str) -> str:
        """The weather of a city."""
        return f"It is sunny in {city}, 21 degrees, with a light breeze from the north."

    engine, capture = make_engine(), Capture()
    model = ScriptedChatModel(script=agent_script(n), callbacks=[capture])
    middleware = SummarizingMemoryMiddleware(CONFIG, engine=engine, model=MODEL)
    agent = create_agent(
        model,
        [weather],
        system_prompt=SYSTEM,
        middleware=[middleware],
        checkpointer=InMemorySaver(),
    )
    cfg: Any = {"configurable": {"thread_id": "t1"}}
    for i in range(n):
        payload = {"messages": [{"role": "user", "content": question(i)}]}
        if use_async:
            asyncio.run(agent.ainvoke(payload, cfg))
        else:
            agent.invoke(payload, cfg)
    state = agent.get_state(cfg).values
    assert STATE_KEY in state
    return agent, capture, engine, state


def test_agent_middleware_sends_a_bounded_view_and_keeps_the_state_messages() -> None:
    n = 24
    _, capture, engine, state = run_agent(n)
    assert len(state["messages"]) == 4 * n  # user, tool call, tool result, answer: all kept
    assert len(capture.calls) == 2 * n
    assert_bounded(engine, capture.calls)
    for call in capture.calls:
        assert call[0] == SystemMessage(SYSTEM)
        assert_tool_pairs_intact(call)
    saved = MemoryState.from_dict(state["costopt_memory"])
    assert saved.flushes > 0 and saved.folded > 0
    assert engine.ledger.savings_by_lever()["memory"] > 0
    removed = [r for r in engine.ledger.records() if r.outcome == "removed"]
    assert 0 < len(removed) <= 2 * n


def test_agent_middleware_async_matches_sync() -> None:
    _, cap_s, engine_s, state_s = run_agent(12)
    _, cap_a, engine_a, state_a = run_agent(12, use_async=True)
    assert [[m.content for m in c] for c in cap_a.calls] == [
        [m.content for m in c] for c in cap_s.calls
    ]
    assert state_a["costopt_memory"] == state_s["costopt_memory"]
    assert engine_a.ledger.savings_by_lever() == engine_s.ledger.savings_by_lever()


def test_summarizer_tag_marks_the_summarizers_runs() -> None:
    seen: list[list[str]] = []

    class Tags(BaseCallbackHandler):
        def on_chat_model_start(
            self, serialized: dict[str, Any], messages: Any, *, tags: Any = None, **kw: Any
        ) -> None:
            seen.append(list(tags or []))

    cheap = ScriptedChatModel.from_texts(["Ana plans a trip."], callbacks=[Tags()])
    summarize_messages(conversation(30), config=CONFIG, engine=make_engine(), summarizer=cheap)
    assert seen and all(SUMMARIZER_TAG in t for t in seen)


@pytest.mark.parametrize("sync", [True, False])
async def test_savings_are_booked_to_the_runs_metadata_tenant(sync: bool) -> None:
    # The tenant a chain's run metadata names, as the cost handler books its
    # model calls: the transform, the history wrapper and the agent middleware
    # (all inside that run) book their savings to it too.
    engine = make_engine()
    transform = SummarizingMemoryTransform(CONFIG, engine=engine, model=MODEL)
    cfg: Any = {"metadata": {"costopt_tenant": "acme"}, "configurable": {"session_id": "u1"}}
    with tenant_scope("other"):
        if sync:
            transform.invoke(conversation(30), cfg)
        else:
            await transform.ainvoke(conversation(30), cfg)
    removed = [r for r in engine.ledger.records() if r.outcome == "removed"]
    assert removed and {r.tenant for r in removed} == {"acme"}

    history_engine, capture = make_engine(), Capture()
    chain, _ = history_chain(history_engine, capture)
    for i in range(TURNS):
        run_cfg: Any = {"configurable": {"session_id": "ana"}, "metadata": {"tenant_id": "globex"}}
        if sync:
            chain.invoke({"question": question(i)}, run_cfg)
        else:
            await chain.ainvoke({"question": question(i)}, run_cfg)
    removed = [r for r in history_engine.ledger.records() if r.outcome == "removed"]
    assert removed and {r.tenant for r in removed} == {"globex"}
