"""``ComponentCache`` (engine) and ``cached()`` (LangChain): non-LLM components from the cache."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import BaseTool, StructuredTool, Tool, ToolException, tool
from langchain_core.utils.function_calling import convert_to_openai_tool

from costopt_core.cache import CacheConfig
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.cache.component import PAYLOAD_FORMAT, ComponentCache
from costopt_core.cache.defaults import GUARDS_OFF
from costopt_core.errors import ConfigurationError
from costopt_core.tenancy import tenant_scope
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from costopt_core.types import Usage
from langchain_costopt.components import CachedRunnable, cached
from langchain_costopt.testing import ScriptedChatModel

LOOSE = CacheConfig(
    similarity_threshold=0.75,
    guards=GUARDS_OFF,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def engine_cache(config: CacheConfig | None = None, **kwargs: Any) -> CacheEngine:
    return CacheEngine(embedder=FakeEmbedder(dim=256), config=config or LOOSE, **kwargs)


class Counter:
    """A component that counts its calls and answers from its input."""

    def __init__(self, make: Any = None) -> None:
        self.calls = 0
        self.make = make or (lambda x: {"answer": x, "items": [1, 2.5, None, True]})

    def __call__(self, x: Any) -> Any:
        self.calls += 1
        return self.make(x)

    async def acall(self, x: Any) -> Any:
        await asyncio.sleep(0.02)
        return self(x)


def must_not_call() -> Any:
    raise AssertionError("the component was called on a hit")


# -- ComponentCache ----------------------------------------------------------------
def test_exact_hit_serves_an_equal_output_without_calling() -> None:
    cache = engine_cache()
    comp = ComponentCache(cache, "geo")
    fn = Counter()
    first = comp.get_or_call({"city": "Paris", "k": 3}, lambda: fn({"city": "Paris"}))
    again = comp.get_or_call({"k": 3, "city": "Paris"}, must_not_call)  # key order is irrelevant
    assert again == first and again is not first
    assert fn.calls == 1
    s = comp.stats()
    assert (s.exact_hits, s.semantic_hits, s.misses) == (1, 0, 1)
    assert s.hit_rate == 0.5


def test_exact_means_exact_and_never_embeds() -> None:
    embedder = FakeEmbedder(dim=256)
    comp = ComponentCache(CacheEngine(embedder=embedder, config=LOOSE), "fmt")
    fn = Counter(lambda x: x.upper())
    assert comp.get_or_call("a  b", lambda: fn("a  b")) == "A  B"
    assert comp.get_or_call("a b", lambda: fn("a b")) == "A B"  # whitespace is significant
    assert comp.get_or_call("a b ", lambda: fn("a b ")) == "A B "
    assert comp.get_or_call(["a b"], lambda: fn("list")) == "LIST"  # a list is not its string
    assert fn.calls == 4
    assert embedder.calls == 0  # exact-only: nothing to embed, no semantic search


def test_semantic_serves_paraphrased_text_inputs() -> None:
    comp = ComponentCache(engine_cache(), "kb", semantic=True)
    fn = Counter()
    first = comp.get_or_call("refund policy for orders", lambda: fn("refund"))
    para = comp.get_or_call("the refund policy for orders", must_not_call)
    assert para == first
    assert comp.stats().semantic_hits == 1


def test_semantic_is_off_by_default_and_for_non_text_inputs() -> None:
    exact = ComponentCache(engine_cache(), "kb")
    fn = Counter()
    exact.get_or_call("refund policy for orders", lambda: fn(1))
    exact.get_or_call("the refund policy for orders", lambda: fn(2))
    sem = ComponentCache(engine_cache(), "kb", semantic=True)
    sem.get_or_call({"q": "refund policy for orders"}, lambda: fn(3))
    sem.get_or_call({"q": "the refund policy for orders"}, lambda: fn(4))
    assert fn.calls == 4


def test_an_output_the_codec_cannot_encode_is_returned_not_stored() -> None:
    cache = engine_cache()
    comp = ComponentCache(cache, "objs")
    marker = object()
    fn = Counter(lambda x: {"handle": marker})
    out = comp.get_or_call("x", lambda: fn("x"))
    assert out["handle"] is marker
    out2 = comp.get_or_call("x", lambda: fn("x"))
    assert out2["handle"] is marker
    assert fn.calls == 2
    assert comp.stats().encode_failures == 2
    assert cache.stats().stores == 0


def test_waiters_on_an_output_that_cannot_be_stored_call_at_once_not_in_turn() -> None:
    # The leader answered; its answer just cannot be kept. That is not a failed
    # call, after which the waiters would retry one after another.
    import threading
    import time

    comp = ComponentCache(engine_cache(), "objs")
    lock = threading.Lock()
    active = most = calls = 0

    def unstorable() -> dict[str, Any]:
        nonlocal active, most, calls
        with lock:
            calls += 1
            active += 1
            most = max(most, active)
        time.sleep(0.2)
        with lock:
            active -= 1
        return {"handle": object()}

    threads = [
        threading.Thread(target=comp.get_or_call, args=("same", unstorable)) for _ in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == 5
    assert most == 4  # the four waiters together, after the leader


def test_a_custom_codec_that_raises_is_not_an_error() -> None:
    def encode(v: Any) -> str:
        raise RuntimeError("nope")

    comp = ComponentCache(engine_cache(), "c", encode=encode, decode=json.loads)
    assert comp.get_or_call(1, lambda: 2) == 2
    assert comp.stats().encode_failures == 1


def test_an_unreadable_entry_calls_the_component_and_replaces_it() -> None:
    cache = engine_cache()
    state = {"fail": True}

    def decode(s: str) -> Any:
        if state["fail"]:
            raise ValueError("corrupt")
        return json.loads(s)

    comp = ComponentCache(cache, "c", encode=json.dumps, decode=decode, codec="json2")
    fn = Counter()
    comp.get_or_call("q", lambda: fn("q"))
    assert comp.get_or_call("q", lambda: fn("q")) == fn.make("q")
    assert fn.calls == 2 and comp.stats().decode_failures == 1
    state["fail"] = False
    assert comp.get_or_call("q", must_not_call) == fn.make("q")
    # another codec never decodes this codec's entries
    other = ComponentCache(cache, "c")
    assert other.get_or_call("q", lambda: "fresh") == "fresh"


def test_entries_carry_the_component_payload_format() -> None:
    cache = engine_cache()
    comp = ComponentCache(cache, "geo")
    comp.get_or_call([1, 2], lambda: {"ok": True})
    request = comp.request([1, 2])
    assert request is not None
    hit = cache.lookup(request)
    assert hit is not None
    assert hit.response.payload_format == PAYLOAD_FORMAT == "component/json/v1"
    assert json.loads(hit.response.payload or "") == {"ok": True}


def test_tenants_never_share() -> None:
    comp = ComponentCache(engine_cache(), "kb", semantic=True)
    fn = Counter(lambda x: x)
    assert comp.get_or_call("q", lambda: fn("acme"), tenant="acme") == "acme"
    assert comp.get_or_call("q", lambda: fn("globex"), tenant="globex") == "globex"
    with tenant_scope("initech"):
        assert comp.get_or_call("q", lambda: fn("initech")) == "initech"
        assert comp.get_or_call("q", must_not_call) == "initech"
    assert comp.get_or_call("q", lambda: fn("nobody")) == "nobody"
    assert comp.get_or_call("q", must_not_call, tenant="acme") == "acme"
    assert fn.calls == 4


def test_names_and_variants_split_the_cache() -> None:
    cache = engine_cache()
    fn = Counter(lambda x: x)
    a, b = ComponentCache(cache, "a"), ComponentCache(cache, "b")
    assert a.get_or_call("q", lambda: fn("a")) == "a"
    assert b.get_or_call("q", lambda: fn("b")) == "b"
    assert a.get_or_call("q", lambda: fn("k5"), variant={"k": 5}) == "k5"
    assert a.get_or_call("q", must_not_call, variant={"k": 5}) == "k5"
    assert a.get_or_call("q", must_not_call) == "a"
    assert fn.calls == 3


def test_unserialisable_inputs_bypass_the_cache() -> None:
    comp = ComponentCache(engine_cache(), "c")
    fn = Counter(lambda x: "out")
    key = {"obj": object()}
    comp.get_or_call(key, lambda: fn(key))
    comp.get_or_call(key, lambda: fn(key))
    assert fn.calls == 2 and comp.stats().bypassed == 2


def test_ttl_tags_and_invalidation() -> None:
    clock = Clock()
    cache = engine_cache(clock=clock)
    comp = ComponentCache(cache, "docs", ttl_s=60, tags=("kb-v1",))
    fn = Counter(lambda x: x)
    comp.get_or_call("q", lambda: fn("q"))
    clock.now += 61
    comp.get_or_call("q", lambda: fn("q"))  # expired
    assert fn.calls == 2
    assert cache.invalidate(tag="kb-v1") == 1
    comp.get_or_call("q", lambda: fn("q"))
    assert comp.invalidate("q") == 1
    comp.get_or_call("q", lambda: fn("q"))
    comp.get_or_call("r", lambda: fn("r"))
    assert comp.clear() == 2
    assert fn.calls == 5


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        ComponentCache(engine_cache(), "")
    with pytest.raises(ConfigurationError):
        ComponentCache(engine_cache(), "x", encode=json.dumps)


async def test_async_get_or_call_and_in_flight_dedupe() -> None:
    comp = ComponentCache(engine_cache(), "slow")
    fn = Counter()
    outs = await asyncio.gather(
        *(comp.aget_or_call("same", lambda: fn.acall("same")) for _ in range(20))
    )
    assert fn.calls == 1
    assert all(o == fn.make("same") for o in outs)
    assert await comp.aget_or_call("same", must_not_call_async) == fn.make("same")


async def must_not_call_async() -> Any:
    raise AssertionError("the component was called on a hit")


async def test_async_codec_failure_is_returned_not_stored() -> None:
    cache = engine_cache()
    comp = ComponentCache(cache, "objs")
    marker = object()

    async def call() -> Any:
        return marker

    assert await comp.aget_or_call("x", call) is marker
    assert comp.stats().encode_failures == 1 and cache.stats().stores == 0


# -- cached(): LangChain Runnables -------------------------------------------------
class KB(BaseRetriever):
    """A retriever that counts its calls."""

    calls: int = 0

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        self.calls += 1
        return [
            Document(
                page_content=f"About {query}", metadata={"source": "kb", "score": 0.9}, id="d1"
            ),
            Document(page_content="Refunds take 5 days.", metadata={"source": "faq"}),
        ]


class Events(BaseCallbackHandler):
    def __init__(self) -> None:
        self.retriever_starts = 0
        self.tool_starts = 0
        self.chain_starts = 0

    def on_retriever_start(
        self, serialized: Any, query: str, *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.retriever_starts += 1

    def on_tool_start(
        self, serialized: Any, input_str: str, *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.tool_starts += 1

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.chain_starts += 1


def test_cached_retriever_serves_repeats_as_documents() -> None:
    kb = KB()
    docs = cached(kb)
    events = Events()
    first = docs.invoke("refund policy", config={"callbacks": [events]})
    again = docs.invoke("refund policy", config={"callbacks": [events]})
    assert kb.calls == 1
    assert again == first
    assert all(isinstance(d, Document) for d in again)
    assert events.retriever_starts == 1  # callbacks reached the retriever on the miss only
    assert isinstance(docs, CachedRunnable)
    assert docs.InputType is kb.InputType and docs.OutputType is kb.OutputType
    assert docs.get_input_schema().model_json_schema() == kb.get_input_schema().model_json_schema()


async def test_cached_retriever_async_and_semantic() -> None:
    kb = KB()
    docs = cached(kb, cache=engine_cache(), name="kb", semantic=True)
    first = await docs.ainvoke("refund policy for orders")
    para = await docs.ainvoke("the refund policy for orders")
    sync = docs.invoke("refund policy for orders")
    assert kb.calls == 1
    assert para == first == sync


def test_cached_tool() -> None:
    calls = {"n": 0}

    @tool
    def shipping_quote(weight_kg: float, country: str) -> dict[str, Any]:
        """Quote shipping for a parcel."""
        calls["n"] += 1
        return {"usd": round(4.5 + weight_kg * 2, 2), "country": country}

    quote = cached(shipping_quote)
    events = Events()
    first = quote.invoke({"weight_kg": 2.0, "country": "FR"}, config={"callbacks": [events]})
    again = quote.invoke({"country": "FR", "weight_kg": 2.0}, config={"callbacks": [events]})
    other = quote.invoke({"weight_kg": 3.0, "country": "FR"})
    assert calls["n"] == 2
    assert again == first == {"usd": 8.5, "country": "FR"}
    assert other["usd"] == 10.5
    # The cached tool is the tool: one tool run per call, hit or miss, and
    # the tool's code ran for the first call only.
    assert events.tool_starts == 2
    assert asyncio.run(quote.ainvoke({"weight_kg": 2.0, "country": "FR"})) == first
    assert calls["n"] == 2


def test_cached_lcel_chain_returning_a_message_round_trips_it() -> None:
    usage = Usage(100, 20, cache_read_tokens=0, cache_write_5m_tokens=0, cache_write_1h_tokens=0)
    model = ScriptedChatModel(script=Script([ScriptedResponse("Paris.", usage)], cycle=False))
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{q}")])
    chain = cached(prompt | model)
    first = chain.invoke({"q": "Capital of France?"})
    again = chain.invoke({"q": "Capital of France?"})
    assert model.script.calls == 1
    assert isinstance(again, AIMessage)
    # A hit is a new message: the stored one's id and costopt note stay behind.
    assert first.id is not None and again.id is None
    assert again == first.model_copy(update={"id": None})
    assert again.usage_metadata == first.usage_metadata


async def test_cached_lcel_chain_to_text_async() -> None:
    model = ScriptedChatModel(script=Script(["Paris.", "Lyon."]))
    chain = cached(ChatPromptTemplate.from_messages([("human", "{q}")]) | model | StrOutputParser())
    assert await chain.ainvoke({"q": "Capital of France?"}) == "Paris."
    assert await chain.ainvoke({"q": "Capital of France?"}) == "Paris."
    assert await chain.ainvoke({"q": "Second city of France?"}) == "Lyon."
    assert model.script.calls == 2


def test_cached_runnable_tenants_from_metadata_and_scope() -> None:
    kb = KB()
    docs = cached(kb)
    docs.invoke("q", config={"metadata": {"costopt_tenant": "acme"}})
    docs.invoke("q", config={"metadata": {"costopt_tenant": "globex"}})
    with tenant_scope("initech"):
        docs.invoke("q")
    docs.invoke("q", config={"metadata": {"tenant_id": "acme"}})
    assert kb.calls == 3


def test_outputs_that_cannot_be_restored_are_not_cached() -> None:
    calls = {"n": 0}
    handle = object()

    def opaque(x: str) -> dict[str, Any]:
        calls["n"] += 1
        return {"x": x, "handle": handle}

    step = cached(RunnableLambda(opaque))
    assert step.invoke("a")["handle"] is handle
    assert step.invoke("a")["handle"] is handle
    assert calls["n"] == 2


def test_default_names_never_share_but_explicit_names_do() -> None:
    shared = engine_cache()
    a, b = KB(), KB()
    cached(a, cache=shared).invoke("q")
    cached(b, cache=shared).invoke("q")
    assert (a.calls, b.calls) == (1, 1)
    cached(a, cache=shared, name="kb").invoke("q")
    cached(b, cache=shared, name="kb").invoke("q")
    assert (a.calls, b.calls) == (2, 1)


def test_an_output_the_codec_would_change_is_returned_not_stored() -> None:
    comp = ComponentCache(engine_cache(), "prices")
    prices = Counter(lambda _: {101: ("apple", 1.5), 202: ("pear", 2.0)})
    # JSON would give back {"101": ["apple", 1.5], ...}: a hit must return what
    # the call did, so it is not kept.
    for _ in range(2):
        assert comp.get_or_call("skus", lambda: prices("skus"))[101] == ("apple", 1.5)
    assert prices.calls == 2 and comp.stats().encode_failures == 2
    # Tuples coming back as lists is the one change allowed (JSON has no tuples).
    pairs = Counter(lambda _: [("a", 1), ("b", 2)])
    comp.get_or_call("pairs", lambda: pairs("pairs"))
    assert comp.get_or_call("pairs", must_not_call) == [["a", 1], ["b", 2]]
    # LangChain's codec alike.
    runnable = Counter(lambda _: {1: "one"})
    wrapped = cached(RunnableLambda(runnable), cache=engine_cache())
    assert wrapped.invoke("x") == wrapped.invoke("x") == {1: "one"}
    assert runnable.calls == 2


# -- keys: dict keys keep their type ---------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({1: "a"}, {"1": "a"}),
        ({None: "a"}, {"null": "a"}),
        ({True: "a"}, {"true": "a"}),
        ({1.5: "a"}, {"1.5": "a"}),
        ({"q": {2: "x"}}, {"q": {"2": "x"}}),
        # An input's own dict that looks like the typed form is kept apart too.
        ({1: "a"}, {"\x00pairs": [[1, "a"]]}),
    ],
)
def test_dict_keys_of_other_types_never_share_an_entry(a: Any, b: Any) -> None:
    comp = ComponentCache(engine_cache(), "keys")
    assert comp.get_or_call(a, lambda: "first") == "first"
    assert comp.get_or_call(b, lambda: "second") == "second"
    assert comp.get_or_call(a, must_not_call) == "first"
    assert comp.get_or_call(b, must_not_call) == "second"
    assert comp.stats().misses == 2
    wrapped = cached(RunnableLambda(repr), cache=engine_cache())
    assert (wrapped.invoke(a), wrapped.invoke(b)) == (repr(a), repr(b))


def test_typed_keys_are_served_and_string_keys_keep_their_entries() -> None:
    comp = ComponentCache(engine_cache(), "keys")
    mixed = {1: "a", "b": [{None: 2}]}  # JSON could not even sort these keys before
    assert comp.get_or_call(mixed, lambda: "m") == "m"
    assert comp.get_or_call({"b": [{None: 2}], 1: "a"}, must_not_call) == "m"
    # Inputs with string keys only are keyed as they always were (entries
    # stored before stay reachable).
    plain = {"city": "Paris", "k": [1, {"x": None}]}
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    request = comp.request(plain)
    assert request is not None
    assert request.messages[0].name == "input:" + hashlib.sha256(text.encode()).hexdigest()


# -- cached(): streams ----------------------------------------------------------------
class Talker:
    """A streaming fake chat model that counts how often it was called."""

    def __init__(self, text: str = "hello there my friend") -> None:
        self.text = text
        self.calls = 0
        self.model = GenericFakeChatModel(messages=self._replies())

    def _replies(self) -> Iterator[str]:
        while True:
            self.calls += 1
            yield self.text


def talk_chain(talker: Talker) -> Any:
    return ChatPromptTemplate.from_messages([("human", "{q}")]) | talker.model | StrOutputParser()


def test_stream_passes_chunks_through_on_a_miss_and_stores_the_whole() -> None:
    talker = Talker()
    bare = list(talk_chain(Talker()).stream({"q": "x"}))
    assert len(bare) > 1
    chain = cached(talk_chain(talker))
    assert list(chain.stream({"q": "x"})) == bare
    assert talker.calls == 1
    assert chain.invoke({"q": "x"}) == "hello there my friend"
    assert list(chain.stream({"q": "x"})) == ["hello there my friend"]
    assert talker.calls == 1
    assert chain.batch([{"q": "x"}, {"q": "y"}]) == ["hello there my friend"] * 2
    assert talker.calls == 2


async def test_astream_passes_chunks_through_on_a_miss_and_stores_the_whole() -> None:
    talker = Talker()
    chain = cached(talk_chain(talker))
    chunks = [c async for c in chain.astream({"q": "x"})]
    assert len(chunks) > 1 and "".join(chunks) == "hello there my friend"
    assert [c async for c in chain.astream({"q": "x"})] == ["hello there my friend"]
    assert await chain.ainvoke({"q": "x"}) == "hello there my friend"
    assert talker.calls == 1
    assert await chain.abatch([{"q": "x"}]) == ["hello there my friend"]
    assert talker.calls == 1


def test_a_stream_not_read_to_its_end_stores_nothing() -> None:
    talker = Talker()
    chain = cached(talk_chain(talker))
    stream = chain.stream({"q": "x"})
    assert next(stream) == "hello"
    stream.close()
    assert chain.invoke({"q": "x"}) == "hello there my friend"
    assert talker.calls == 2


async def test_an_async_stream_not_read_to_its_end_stores_nothing() -> None:
    talker = Talker()
    chain = cached(talk_chain(talker))
    stream = chain.astream({"q": "x"})
    assert await stream.__anext__() == "hello"
    await stream.aclose()
    assert await chain.ainvoke({"q": "x"}) == "hello there my friend"
    assert talker.calls == 2


def test_a_failed_stream_stores_nothing() -> None:
    calls = {"n": 0}

    def gen(chunks: Iterator[str]) -> Iterator[str]:
        calls["n"] += 1
        for c in chunks:
            yield c + "1"
            if calls["n"] == 1:
                raise RuntimeError("boom")
            yield c + "2"

    step = cached(RunnableLambda(gen))
    with pytest.raises(RuntimeError):
        list(step.stream("a"))
    assert list(step.stream("a")) == ["a1", "a2"]
    assert list(step.stream("a")) == ["a1a2"]
    assert calls["n"] == 2


def test_a_streamed_chat_model_is_stored_as_the_message_invoke_gives() -> None:
    talker = Talker("Paris.")
    chain = cached(ChatPromptTemplate.from_messages([("human", "{q}")]) | talker.model)
    chunks = list(chain.stream({"q": "Capital?"}))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    again = chain.invoke({"q": "Capital?"})
    assert type(again) is AIMessage and again.content == "Paris."
    assert talker.calls == 1


# -- cached(): tools for agents ---------------------------------------------------------
class FakeToolModel(GenericFakeChatModel):
    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


def weather_tool(calls: list[str]) -> BaseTool:
    @tool
    def weather(city: str) -> str:
        """Weather for a city."""
        calls.append(city)
        return f"sunny in {city}"

    return weather


def test_a_cached_tool_is_the_tool_for_bind_tools() -> None:
    calls: list[str] = []
    weather = weather_tool(calls)
    wrapped = cached(weather, name="weather")
    assert isinstance(wrapped, BaseTool)
    assert (wrapped.name, wrapped.description) == ("weather", "Weather for a city.")
    assert wrapped.args == weather.args
    assert convert_to_openai_tool(wrapped) == convert_to_openai_tool(weather)
    bound = FakeToolModel(messages=iter([])).bind_tools([wrapped])
    assert bound.kwargs["tools"] == [convert_to_openai_tool(weather)]  # type: ignore[attr-defined]
    # A one-string Tool keeps the single ``__arg1`` string LangChain shows for it.
    echo = Tool(name="echo", description="Echo.", func=lambda s: calls.append(s) or s.upper())
    wrapped_echo = cached(echo)
    schema = convert_to_openai_tool(wrapped_echo)["function"]
    assert schema["parameters"]["properties"].keys() == {"__arg1"}
    assert schema["parameters"]["required"] == ["__arg1"]
    call = {"name": "echo", "args": {"__arg1": "hi"}, "id": "e1", "type": "tool_call"}
    assert wrapped_echo.invoke(call).content == wrapped_echo.invoke("hi") == "HI"
    assert calls == ["hi"]


def test_tool_calls_are_keyed_on_their_arguments_and_answered_for_their_own_id() -> None:
    calls: list[str] = []
    wrapped = cached(weather_tool(calls))
    call = {"name": "weather", "args": {"city": "Paris"}, "type": "tool_call"}
    first = wrapped.invoke({**call, "id": "call_1"})
    again = wrapped.invoke({**call, "id": "call_2"})
    assert isinstance(first, ToolMessage) and isinstance(again, ToolMessage)
    assert (first.tool_call_id, again.tool_call_id) == ("call_1", "call_2")
    assert first.content == again.content == "sunny in Paris"
    assert again.name == "weather"
    assert wrapped.invoke({"city": "Paris"}) == "sunny in Paris"
    late = asyncio.run(wrapped.ainvoke({**call, "id": "call_3"}))
    assert isinstance(late, ToolMessage) and late.tool_call_id == "call_3"
    assert calls == ["Paris"]
    other = wrapped.invoke({**call, "args": {"city": "Oslo"}, "id": "call_4"})
    assert other.content == "sunny in Oslo" and calls == ["Paris", "Oslo"]


def test_a_cached_tool_keeps_its_artifact_and_never_stores_its_errors() -> None:
    calls: list[str] = []

    @tool(response_format="content_and_artifact")
    def search(q: str) -> tuple[str, dict[str, Any]]:
        """Search."""
        calls.append(q)
        return f"found {q}", {"ids": [1, 2]}

    wrapped = cached(search)
    for call_id in ("a", "b"):
        msg = wrapped.invoke(
            {"name": "search", "args": {"q": "x"}, "id": call_id, "type": "tool_call"}
        )
        assert (msg.tool_call_id, msg.content, msg.artifact) == (
            call_id,
            "found x",
            {"ids": [1, 2]},
        )
    assert calls == ["x"]

    def flaky(city: str) -> str:
        calls.append(city)
        raise ToolException("down")

    broken = cached(StructuredTool.from_function(flaky, description="d", handle_tool_error=True))
    for call_id in ("c", "d"):
        msg = broken.invoke(
            {"name": "flaky", "args": {"city": "Rome"}, "id": call_id, "type": "tool_call"}
        )
        assert (msg.status, msg.content, msg.tool_call_id) == ("error", "down", call_id)
    assert calls == ["x", "Rome", "Rome"]


def test_tool_node_runs_a_cached_tool() -> None:
    prebuilt = pytest.importorskip("langgraph.prebuilt")
    from langgraph.graph import END, START, MessagesState, StateGraph

    calls: list[str] = []
    graph = StateGraph(MessagesState)
    graph.add_node("tools", prebuilt.ToolNode([cached(weather_tool(calls))]))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    app = graph.compile()
    for call_id in ("c1", "c2"):
        ask = {"name": "weather", "args": {"city": "Paris"}, "id": call_id}
        out = app.invoke({"messages": [AIMessage("", tool_calls=[ask])]})["messages"]
        assert [(m.tool_call_id, m.content) for m in out[1:]] == [(call_id, "sunny in Paris")]
    assert calls == ["Paris"]


def test_an_agent_calls_a_cached_tool() -> None:
    agents = pytest.importorskip("langchain.agents")
    calls: list[str] = []
    ask = {"name": "weather", "args": {"city": "Paris"}}
    replies = iter(
        [
            AIMessage("", tool_calls=[{**ask, "id": "c1"}]),
            AIMessage("", tool_calls=[{**ask, "id": "c2"}]),
            AIMessage("done"),
        ]
    )
    agent = agents.create_agent(
        FakeToolModel(messages=replies), tools=[cached(weather_tool(calls))]
    )
    out = agent.invoke({"messages": [HumanMessage("hi")]})["messages"]
    answers = [(m.tool_call_id, m.content) for m in out if isinstance(m, ToolMessage)]
    assert answers == [("c1", "sunny in Paris"), ("c2", "sunny in Paris")]
    assert out[-1].content == "done" and calls == ["Paris"]
