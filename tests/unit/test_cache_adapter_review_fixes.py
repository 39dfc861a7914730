"""Cache adapters: regressions found by a review of the LangChain and LlamaIndex wrappers.

1. An invoke langchain-core streams itself (``streaming=True``, LangGraph's
   ``stream_mode="messages"``) reached ``CachedChatModel._stream`` with no run:
   the tenant in the run's metadata was lost, and tenants shared a partition.
2. The global ``SemanticCache`` read a chat prompt that does not load back (a
   pydantic object in a history message, a tool's artifact) as a completion
   prompt: the run's tenant was skipped, and the prompt keyed as one user turn.
3. ``cached(model)`` served the stored message with its id (LangGraph then
   overwrote the first answer) and costopt's note of the call that made it, and
   keyed message inputs by their ids (the same question never hit).
4. ``CachedLLM`` scoped on a fixed list of LLM fields: two LLMs configured
   apart (``json_mode``, ``instructions``) served each other's answers.
5. A LlamaIndex stream replay the caller stopped was never recorded, where
   LangChain records it as the hit it was.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.globals import set_llm_cache
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from pydantic import BaseModel, Field

from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from costopt_core.types import Usage
from langchain_costopt import CachedChatModel, SemanticCache, cached
from langchain_costopt import track_costs as lc_track_costs
from langchain_costopt.cache import _messages_of
from langchain_costopt.router import RouterChatModel
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt import CachedLLM
from llamaindex_costopt import track_costs as li_track_costs
from llamaindex_costopt.testing import ScriptedLLM

Q = "What is my account balance?"
ACME = {"metadata": {"costopt_tenant": "acme"}}
GLOBEX = {"metadata": {"costopt_tenant": "globex"}}
ANSWERS = ["ACME PRIVATE: balance $1,234", "GLOBEX: balance $99"]


def _tenants_model() -> ScriptedChatModel:
    return ScriptedChatModel(script=Script(ANSWERS, cycle=False))


@pytest.fixture
def global_cache() -> Iterator[None]:
    set_llm_cache(SemanticCache(CacheEngine(embedder=FakeEmbedder())))
    try:
        yield
    finally:
        set_llm_cache(None)


# -- 1. an invoke streamed by langchain-core keeps its run's tenant -----------------
@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
async def test_an_invoke_streamed_by_langchain_keeps_each_tenants_partition(how: str) -> None:
    inner = _tenants_model()
    model = CachedChatModel(
        model=inner, semantic_cache=CacheEngine(embedder=FakeEmbedder()), streaming=True
    )
    with lc_track_costs() as costs:
        if how == "invoke":
            a, b = model.invoke(Q, config=ACME), model.invoke(Q, config=GLOBEX)
        else:
            a, b = await model.ainvoke(Q, config=ACME), await model.ainvoke(Q, config=GLOBEX)
        again = model.invoke(Q, config=ACME)
    assert (a.content, b.content, again.content) == (ANSWERS[0], ANSWERS[1], ANSWERS[0])
    assert inner.script.calls == 2
    records = [(r.outcome, r.tenant) for r in costs.ledger.records()]
    assert records == [("model", "acme"), ("model", "globex"), ("cache_exact", "acme")]


def test_langgraph_messages_mode_keeps_each_tenants_partition() -> None:
    from langgraph.graph import START, MessagesState, StateGraph

    inner = _tenants_model()
    model = CachedChatModel(model=inner, semantic_cache=CacheEngine(embedder=FakeEmbedder()))
    graph = StateGraph(MessagesState)
    graph.add_node("llm", lambda s: {"messages": [model.invoke(s["messages"])]})
    graph.add_edge(START, "llm")
    app = graph.compile()

    def run(config: Any) -> str:
        parts = app.stream({"messages": [("user", Q)]}, config=config, stream_mode="messages")
        return "".join(str(m.content) for m, _ in parts)

    assert (run(ACME), run(GLOBEX)) == (ANSWERS[0], ANSWERS[1])
    assert inner.script.calls == 2


def test_a_router_inside_a_streaming_cache_gets_the_runs_tenant() -> None:
    # The run the cache hands the router it wraps is the one langchain-core's
    # implicit stream left out; the router itself never takes that path.
    cheap = _tenants_model()
    router = RouterChatModel(tiers={"small": cheap, "big": _tenants_model()})
    model = CachedChatModel(
        model=router, semantic_cache=CacheEngine(embedder=FakeEmbedder()), streaming=True
    )
    got = [model.invoke(Q, config=c).content for c in (ACME, GLOBEX)]
    assert got == ANSWERS and cheap.script.calls == 2


# -- 2. a chat prompt that does not load back is still a chat prompt ----------------
class Order(BaseModel):
    id: str


class Rows:  # a tool's artifact LangChain cannot serialise (a DataFrame, a cursor)
    pass


ROWS = Rows()  # one object: its stub (its repr, an address) the same in every prompt


def _parsed_history() -> list[Any]:
    return [
        HumanMessage("Find my last order"),
        AIMessage('{"id": "A-1"}', additional_kwargs={"parsed": Order(id="A-1")}),
        HumanMessage(Q),
    ]


def _artifact_history(
    result: str = "balance: see artifact", question: str = Q, tool: str = "balance"
) -> list[Any]:
    return [
        HumanMessage(question),
        AIMessage("", tool_calls=[{"name": tool, "args": {}, "id": "c1"}]),
        ToolMessage(result, tool_call_id="c1", artifact=ROWS),
    ]


@pytest.mark.parametrize("history", [_parsed_history, _artifact_history])
@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
async def test_an_unloadable_chat_prompt_keeps_each_tenants_partition(
    global_cache: None, history: Any, how: str
) -> None:
    model = _tenants_model()
    if how == "invoke":
        a = model.invoke(history(), config=ACME)
        b = model.invoke(history(), config=GLOBEX)
    else:
        a = await model.ainvoke(history(), config=ACME)
        b = await model.ainvoke(history(), config=GLOBEX)
    assert (a.content, b.content) == (ANSWERS[0], ANSWERS[1])
    assert model.script.calls == 2
    assert model.invoke(history(), config=ACME).content == ANSWERS[0]  # still cached
    assert model.script.calls == 2


def test_an_unloadable_chat_prompt_is_keyed_by_its_messages() -> None:
    from langchain_core.load import dumps

    messages, chat = _messages_of(dumps(_artifact_history()))
    assert chat
    assert [type(m).__name__ for m in messages] == ["HumanMessage", "AIMessage", "ToolMessage"]
    assert messages[2].content == "balance: see artifact"
    assert messages[1].tool_calls[0]["id"] == "c1"


def test_an_agent_step_after_an_unloadable_tool_result_is_not_matched_semantically(
    global_cache: None,
) -> None:
    # Read as one user turn of JSON, it was embedded: another tool result got
    # the answer written for the first one.
    model = ScriptedChatModel(
        script=Script(["Your shipment was delivered.", "It is delayed at customs."], cycle=False)
    )
    ask = "What is the status of my shipment?"
    a = model.invoke(_artifact_history("status delivered to the customer doorstep", ask, "track"))
    b = model.invoke(_artifact_history("status delayed awaiting customs clearance", ask, "track"))
    assert (a.content, b.content) == ("Your shipment was delivered.", "It is delayed at customs.")


# -- 3. cached(model): a hit is a new message; message ids are no key ---------------
def _priced_model() -> ScriptedChatModel:
    return ScriptedChatModel(script=Script([ScriptedResponse("It is 4.", Usage(1000, 500))]))


async def test_a_component_hit_is_a_new_message_without_the_calls_note() -> None:
    inner = _priced_model()
    model = cached(inner)
    with lc_track_costs():
        first = model.invoke("What is 2+2?")
        again = model.invoke("What is 2+2?")
        again_async = await model.ainvoke("What is 2+2?")
        chunks = list(model.stream("What is 2+2?"))
    assert inner.script.calls == 1
    # The miss is the model's own answer, id and costopt note included.
    assert first.id is not None and "costopt" in first.response_metadata
    for hit in (again, again_async, chunks[-1]):
        assert hit.content == "It is 4." and hit.id is None
        assert "costopt" not in hit.response_metadata
        assert hit.usage_metadata == first.usage_metadata


def test_a_component_hit_is_added_to_a_langgraph_thread() -> None:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import START, MessagesState, StateGraph

    model = cached(ScriptedChatModel(script=Script(["It is 4."])))
    graph = StateGraph(MessagesState)
    graph.add_node("llm", lambda s: {"messages": [model.invoke(s["messages"][-1].content)]})
    graph.add_edge(START, "llm")
    app = graph.compile(checkpointer=InMemorySaver())
    cfg: Any = {"configurable": {"thread_id": "t1"}}
    app.invoke({"messages": [("user", "What is 2+2?")]}, cfg)
    out = app.invoke({"messages": [("user", "What is 2+2?")]}, cfg)
    assert [m.type for m in out["messages"]] == ["human", "ai", "human", "ai"]
    assert out["messages"][1].id != out["messages"][3].id


def test_message_ids_are_not_part_of_a_components_key() -> None:
    from langchain_core.prompt_values import ChatPromptValue

    inner = ScriptedChatModel(script=Script(["It is 4.", "Also 4.", "other"]))
    model = cached(inner)
    outs = [
        model.invoke([HumanMessage("What is 2+2?", id="run-1")]).content,
        model.invoke([HumanMessage("What is 2+2?", id="run-2")]).content,
        model.invoke([HumanMessage("What is 2+2?")]).content,
    ]
    assert outs == ["It is 4."] * 3 and inner.script.calls == 1
    # Messages nested in another LangChain object (a prompt's output) too.
    prompts = [ChatPromptValue(messages=[HumanMessage("What is 2+2?", id=i)]) for i in "ab"]
    assert [model.invoke(p).content for p in prompts] == ["Also 4."] * 2
    assert inner.script.calls == 2
    model.invoke([HumanMessage("What is 3+3?", id="run-1")])
    assert inner.script.calls == 3  # what a message says still keys it


# -- 4. CachedLLM scopes on every answer-changing field of the LLM -------------------
class OllamaLike(ScriptedLLM):
    json_mode: bool = False  # as llama_index.llms.ollama.Ollama
    instructions: str | None = None  # as llama_index.llms.openai.OpenAIResponses
    api_key: str | None = None
    calls: int = 0  # a counter field, as custom LLMs keep: no setting

    def chat(self, messages: Sequence[ChatMessage], **kw: Any) -> ChatResponse:
        self.calls += 1
        r = self.script.next()
        text = '{"city": "Paris"}' if self.json_mode else r.text
        if self.instructions:
            text = f"[{self.instructions}] {text}"
        return ChatResponse(message=ChatMessage(role="assistant", content=text), raw=self._raw(r))


def test_llms_configured_apart_do_not_share_answers_on_one_engine() -> None:
    engine = CacheEngine(embedder=FakeEmbedder())
    msgs = [ChatMessage(role="user", content="What is the capital of France?")]

    def ask(**settings: Any) -> str:
        llm = CachedLLM(
            llm=OllamaLike(script=Script(["Paris."]), **settings), semantic_cache=engine
        )
        return str(llm.chat(msgs).message.content)

    assert ask(json_mode=True) == '{"city": "Paris"}'
    assert ask(json_mode=False) == "Paris."
    assert ask(instructions="Answer in French") == "[Answer in French] Paris."


def test_credentials_and_counters_do_not_split_the_scope_nor_reach_it() -> None:
    engine = CacheEngine(embedder=FakeEmbedder())
    msgs = [ChatMessage(role="user", content="What is the capital of France?")]
    inner = OllamaLike(script=Script(["Paris.", "other"]), api_key="sk-SECRET-1")
    llm = CachedLLM(llm=inner, semantic_cache=engine)
    assert [llm.chat(msgs).message.content for _ in range(3)] == ["Paris."] * 3
    assert inner.calls == 1  # the counter field it bumped did not split the scope
    rotated = CachedLLM(
        llm=OllamaLike(script=Script(["other"]), api_key="sk-SECRET-2"), semantic_cache=engine
    )
    assert rotated.chat(msgs).message.content == "Paris."
    model = llm._chat_request(msgs, {}).model or ""
    assert "SECRET" not in model and "json_mode" in model


def test_kwargs_named_like_credentials_and_odd_fields_key_the_scope_as_settings() -> None:
    import threading

    class HFLike(ScriptedLLM):
        generate_kwargs: dict[str, Any] = Field(default_factory=dict)
        lock: Any = None
        stops: set[str] = Field(default_factory=set)

    engine = CacheEngine(embedder=FakeEmbedder())
    msgs = [ChatMessage(role="user", content="Extract the pair from: colour=red")]

    def ask(answer: str, **fields: Any) -> tuple[str, str]:
        llm = CachedLLM(llm=HFLike(script=Script([answer]), **fields), semantic_cache=engine)
        return llm.chat(msgs).message.content or "", llm._chat_request(msgs, {}).model or ""

    # Token ids (not credentials) split the scope.
    a, _ = ask("A", generate_kwargs={"eos_token_id": 2, "pad_token_id": 0})
    b, model = ask("B", generate_kwargs={"eos_token_id": 128009, "pad_token_id": 128001})
    assert (a, b) == ("A", "B") and "eos_token_id" in model
    # A lock's repr holds its address, a set's order the hash seed's: neither splits it.
    _, first = ask("C", lock=threading.Lock(), stops={"b", "a", "c"})
    _, again = ask("D", lock=threading.Lock(), stops={"c", "b", "a"})
    assert first == again and "0x" not in first and '["a","b","c"]' in first


# -- 5. a LlamaIndex replay the caller stops is recorded as its hit -------------------
def _li_records(how: str) -> list[tuple[str, Decimal | None]]:
    inner = ScriptedLLM(script=Script([ScriptedResponse("Paris is nice", Usage(1000, 500))]))
    llm = CachedLLM(llm=inner, semantic_cache=CacheEngine(embedder=FakeEmbedder()))
    msgs = [ChatMessage(role="user", content="capital of France?")]
    llm.chat(msgs)
    with li_track_costs() as costs:
        if how == "stream":
            gen = llm.stream_chat(msgs)
            next(gen)
            gen.close()
            del gen
            gc.collect()
        else:

            async def stop() -> None:
                agen = await llm.astream_chat(msgs)
                await agen.__anext__()
                await agen.aclose()

            asyncio.run(stop())
    assert inner.script.calls == 1
    return [(r.outcome, r.cost_usd) for r in costs.ledger.records()]


def _lc_records() -> list[tuple[str, Decimal | None]]:
    inner = ScriptedChatModel(script=Script([ScriptedResponse("Paris is nice", Usage(1000, 500))]))
    model = CachedChatModel(model=inner, semantic_cache=CacheEngine(embedder=FakeEmbedder()))
    model.invoke("capital of France?")
    with lc_track_costs() as costs:
        gen = model.stream("capital of France?")
        next(gen)
        gen.close()
    return [(r.outcome, r.cost_usd) for r in costs.ledger.records()]


@pytest.mark.parametrize("how", ["stream", "astream"])
def test_a_stopped_llamaindex_replay_is_recorded_as_langchain_records_it(how: str) -> None:
    assert _li_records(how) == [("cache_exact", Decimal(0))] == _lc_records()
