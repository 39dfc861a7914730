"""LangChain cache adapters: standard suites, chat results, tenants, streaming replay."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from langchain_core.caches import BaseCache
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.globals import set_llm_cache
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_tests.integration_tests.cache import AsyncCacheTestSuite, SyncCacheTestSuite

from costopt_core import CostEngine, Usage
from costopt_core.cache import CacheConfig
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.cache.defaults import GUARDS_OFF
from costopt_core.served import SERVED
from costopt_core.tenancy import tenant_scope
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from langchain_costopt import CostCallbackHandler
from langchain_costopt.cache import SemanticCache
from langchain_costopt.cached_model import CachedChatModel
from langchain_costopt.testing import ScriptedChatModel

LOOSE = CacheConfig(
    similarity_threshold=0.75,
    guards=GUARDS_OFF,
)
USAGE = Usage(1000, 200, cache_read_tokens=0, cache_write_5m_tokens=0, cache_write_1h_tokens=0)


def engine_cache(config: CacheConfig | None = None) -> CacheEngine:
    return CacheEngine(embedder=FakeEmbedder(dim=256), config=config or LOOSE)


class TestSemanticCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self) -> BaseCache:
        return SemanticCache(engine_cache())


class TestSemanticCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self) -> BaseCache:
        return SemanticCache(engine_cache())


@pytest.fixture
def model() -> ScriptedChatModel:
    call = {"name": "lookup", "args": {"q": "pw"}, "id": "call_9", "type": "tool_call"}
    return ScriptedChatModel(
        script=Script(
            [
                ScriptedResponse("Use the reset link.", USAGE, model="gpt-4o-mini"),
                ScriptedResponse("", USAGE, model="gpt-4o-mini", tool_calls=(call,)),
            ]
        )
    )


def test_set_llm_cache_serves_paraphrases_and_records_them(model: ScriptedChatModel) -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    handler = CostCallbackHandler(engine)
    set_llm_cache(SemanticCache(engine_cache()))
    try:
        cfg = {"callbacks": [handler]}
        first = model.invoke("How do I reset my password?", config=cfg)
        again = model.invoke("How do I reset my password?", config=cfg)
        para = model.invoke("how do i reset my password", config=cfg)
    finally:
        set_llm_cache(None)
    assert model.script.calls == 1
    assert first.content == again.content == para.content == "Use the reset link."
    # the caller is not told the answers came from the cache; the ledger is
    assert "costopt" not in again.response_metadata
    assert "cache" not in para.response_metadata.get("costopt", {})
    assert [r.outcome for r in engine.ledger.records()] == [
        "model",
        "cache_exact",
        "cache_semantic",
    ]
    # each hit saved what the call it replaced would have cost on gpt-4o-mini... and more
    hit = engine.ledger.records()[2]
    assert hit.cost_usd == 0
    assert sum(hit.savings_usd.values()) == hit.baseline_cost_usd == Decimal("0.0045")


def test_the_hit_flag_is_shown_only_when_asked_for(model: ScriptedChatModel) -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    handler = CostCallbackHandler(engine)
    set_llm_cache(SemanticCache(engine_cache(), expose_cache_info=True))
    try:
        cfg = {"callbacks": [handler]}
        model.invoke("How do I reset my password?", config=cfg)
        again = model.invoke("How do I reset my password?", config=cfg)
    finally:
        set_llm_cache(None)
    assert again.response_metadata["costopt"]["cache"] == "exact"
    assert [r.outcome for r in engine.ledger.records()] == ["model", "cache_exact"]
    cached = CachedChatModel(model=model, semantic_cache=engine_cache())
    cached.invoke("How do I reset my password?")
    assert "costopt" not in cached.invoke("How do I reset my password?").response_metadata
    shown = CachedChatModel(
        model=model, semantic_cache=cached.semantic_cache, expose_cache_info=True
    )
    assert (
        shown.invoke("How do I reset my password?").response_metadata["costopt"]["cache"] == "exact"
    )
    chunks = list(cached.stream("How do I reset my password?"))
    assert all("cache" not in c.response_metadata.get("costopt", {}) for c in chunks)


def test_tenants_never_share_answers(model: ScriptedChatModel) -> None:
    set_llm_cache(SemanticCache(engine_cache()))
    try:
        with tenant_scope("acme"):
            model.invoke("How do I reset my password?")
        with tenant_scope("globex"):
            out = model.invoke("How do I reset my password?")
        with tenant_scope("acme"):
            model.invoke("How do I reset my password?")
    finally:
        set_llm_cache(None)
    assert model.script.calls == 2  # globex missed; acme's second call hit
    assert out.tool_calls  # globex got its own (second scripted) answer


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_chains_metadata_tenant_partitions_the_global_cache(
    model: ScriptedChatModel, mode: str
) -> None:
    from langchain_core.prompts import ChatPromptTemplate

    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | model
    set_llm_cache(SemanticCache(engine_cache()))
    try:
        outs = []
        for tenant in ("acme", "globex", "acme"):
            config: Any = {"metadata": {"costopt_tenant": tenant}}
            q = {"q": "How do I reset my password?"}
            sync = mode == "sync"
            outs.append(chain.invoke(q, config) if sync else await chain.ainvoke(q, config))
    finally:
        set_llm_cache(None)
    assert model.script.calls == 2  # globex missed; acme's second call hit
    assert outs[1].tool_calls and outs[2].content == "Use the reset link."


def test_tool_call_answers_round_trip(model: ScriptedChatModel) -> None:
    model.script.responses.reverse()  # first answer is the tool call
    set_llm_cache(SemanticCache(engine_cache()))
    try:
        first = model.invoke([SystemMessage("be brief"), HumanMessage("find my order")])
        second = model.invoke([SystemMessage("be brief"), HumanMessage("find my order")])
    finally:
        set_llm_cache(None)
    assert second.tool_calls == first.tool_calls
    assert second.usage_metadata["input_tokens"] == 1000
    assert second.response_metadata["model_name"] == "gpt-4o-mini"


def test_cached_chat_model_streams_a_hit_as_chunks(model: ScriptedChatModel) -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    handler = CostCallbackHandler(engine)
    cached = CachedChatModel(model=model, semantic_cache=engine_cache())
    cfg = {"callbacks": [handler]}
    first = "".join(
        str(c.content) for c in cached.stream("How do I reset my password?", config=cfg)
    )
    chunks = list(cached.stream("how do i reset my password", config=cfg))
    assert model.script.calls == 1
    assert first == "".join(str(c.content) for c in chunks) == "Use the reset link."
    assert len(chunks) > 2  # replayed as a stream, not one blob
    assert chunks[-1].usage_metadata["input_tokens"] == 1000
    assert [r.outcome for r in engine.ledger.records()] == ["model", "cache_semantic"]


async def test_cached_chat_model_async_and_dedupe(model: ScriptedChatModel) -> None:
    import asyncio

    cached = CachedChatModel(model=model, semantic_cache=engine_cache())
    outs = await asyncio.gather(*(cached.ainvoke("same question here") for _ in range(10)))
    assert model.script.calls == 1
    assert {o.content for o in outs} == {"Use the reset link."}
    streamed = [c async for c in cached.astream("same question here")]
    assert "".join(str(c.content) for c in streamed) == "Use the reset link."
    assert model.script.calls == 1


def test_cached_chat_model_binds_tools_into_the_scope(model: ScriptedChatModel) -> None:
    cached = CachedChatModel(model=model, semantic_cache=engine_cache())

    def search(q: str) -> str:
        """Search the help centre."""
        return q

    plain = cached.invoke("How do I reset my password?")
    with_tools = cached.bind_tools([search]).invoke("How do I reset my password?")
    assert model.script.calls == 2  # a different tool set is a different scope
    assert isinstance(plain, AIMessage) and isinstance(with_tools, AIMessage)


def _picture(url: str) -> list[HumanMessage]:
    return [
        HumanMessage(
            content=[
                {"type": "text", "text": "What animal is in this picture?"},
                {"type": "image_url", "image_url": {"url": url}},
            ]
        )
    ]


def test_requests_that_differ_only_in_an_image_never_share_an_answer() -> None:
    from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel

    # The wrapper and LangChain's global cache path both see the image.
    inner = ScriptedChatModel.from_texts(["A cat.", "A dog.", "A cat again."])
    cached = CachedChatModel(model=inner, semantic_cache=engine_cache())
    assert cached.invoke(_picture("https://example.com/cat.png")).content == "A cat."
    assert cached.invoke(_picture("https://example.com/dog.png")).content == "A dog."
    assert cached.invoke(_picture("https://example.com/cat.png")).content == "A cat."
    assert inner.script.calls == 2

    set_llm_cache(SemanticCache(engine_cache()))
    try:
        bare = FakeMessagesListChatModel(responses=[AIMessage("A cat."), AIMessage("A dog.")])
        assert bare.invoke(_picture("https://example.com/cat.png")).content == "A cat."
        assert bare.invoke(_picture("https://example.com/dog.png")).content == "A dog."
    finally:
        set_llm_cache(None)


def test_a_hit_with_content_blocks_streams_its_text() -> None:
    from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel

    blocks = [{"type": "text", "text": "Paris is the capital"}, {"type": "text", "text": "."}]
    inner = FakeMessagesListChatModel(responses=[AIMessage(content=blocks)])
    cached = CachedChatModel(model=inner, semantic_cache=engine_cache())
    assert cached.invoke("Capital of France?").content == blocks
    chunks = list(cached.stream("Capital of France?"))
    # Its text reads as the invoke hit's; the chunks add up to the same blocks.
    assert "".join(c.text for c in chunks) == "Paris is the capital."
    summed = chunks[0]
    for c in chunks[1:]:
        summed = summed + c
    assert summed.content == blocks


def test_a_model_that_cannot_stream_is_streamed_as_one_chunk() -> None:
    import asyncio

    from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
    from langchain_core.rate_limiters import InMemoryRateLimiter

    class Counting(InMemoryRateLimiter):
        taken = 0

        def acquire(self, *, blocking: bool = True) -> bool:
            Counting.taken += 1
            return True

        async def aacquire(self, *, blocking: bool = True) -> bool:
            Counting.taken += 1
            return True

    replies = [AIMessage("Paris."), AIMessage("Rome.")]
    inner = FakeMessagesListChatModel(responses=replies, rate_limiter=Counting())
    cached = CachedChatModel(model=inner, semantic_cache=engine_cache())
    assert [c.content for c in cached.stream("Capital of France?")] == ["Paris."]

    async def astream() -> list[str]:
        return [str(c.content) async for c in cached.astream("Capital of Italy?")]

    assert asyncio.run(astream()) == ["Rome."]
    # Each model call went through the model's own rate limiter; hits do not.
    assert Counting.taken == 2
    assert "".join(str(c.content) for c in cached.stream("Capital of France?")) == "Paris."
    assert Counting.taken == 2


def test_an_answer_with_unreadable_usage_is_returned_and_kept() -> None:
    from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel

    # Input reported net of cache reads: impossible counts for the cost code.
    odd = {
        "input_tokens": 20,
        "output_tokens": 3,
        "total_tokens": 23,
        "input_token_details": {"cache_read": 1000},
    }
    inner = FakeMessagesListChatModel(responses=[AIMessage("Paris.", usage_metadata=odd)])
    cache = engine_cache()
    cached = CachedChatModel(model=inner, semantic_cache=cache)
    assert cached.invoke("Capital of France?").content == "Paris."
    hit = cache.lookup(cached._request([HumanMessage("Capital of France?")], None, {}))
    assert hit is not None and hit.response.usage.input_tokens is None


@pytest.mark.parametrize("method", ["invoke", "ainvoke", "stream", "astream"])
async def test_the_tenant_field_reaches_the_ledger(method: str) -> None:
    # The cache partitions by CachedChatModel.tenant: the ledger must book the
    # miss and the hit under it too, over a caller's other tenant.
    engine = CostEngine()
    inner = ScriptedChatModel(
        script=Script([ScriptedResponse("ok", USAGE, model="gpt-4o-mini")], cycle=False)
    )
    cached = CachedChatModel(model=inner, semantic_cache=engine_cache(), tenant="acme")
    cfg: Any = {
        "callbacks": [CostCallbackHandler(engine)],
        "metadata": {"costopt_tenant": "globex", "trace": "t1"},
    }
    for _ in range(2):
        if method == "invoke":
            cached.invoke("hi there", config=cfg)
        elif method == "ainvoke":
            await cached.ainvoke("hi there", config=cfg)
        elif method == "stream":
            list(cached.stream("hi there", config=cfg))
        else:
            [c async for c in cached.astream("hi there", config=cfg)]
    assert inner.script.calls == 1
    assert [(r.outcome, r.tenant) for r in engine.ledger.records()] == [
        ("model", "acme"),
        ("cache_exact", "acme"),
    ]
    assert cached.metadata is not None and cached.metadata["costopt_tenant"] == "acme"


def test_no_tenant_field_leaves_the_callers_tenant() -> None:
    engine = CostEngine()
    inner = ScriptedChatModel(script=Script([ScriptedResponse("ok", USAGE, model="gpt-4o-mini")]))
    cached = CachedChatModel(model=inner, semantic_cache=engine_cache())
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)], "metadata": {"tenant_id": "globex"}}
    cached.invoke("hi there", config=cfg)
    with tenant_scope("initech"):
        cached.invoke("hi there", config={"callbacks": [CostCallbackHandler(engine)]})
    assert [r.tenant for r in engine.ledger.records()] == ["globex", "initech"]


@pytest.mark.parametrize("method", ["invoke", "ainvoke", "stream", "astream"])
async def test_the_run_metadata_tenant_partitions_the_cache(method: str) -> None:
    # The tenant the cost handler books a run under (its metadata's
    # costopt_tenant) is the cache partition: one tenant's answer is never
    # served to another, however the model is called.
    engine = CostEngine()
    inner = ScriptedChatModel(
        script=Script(
            [
                ScriptedResponse("ACME balance: $1,234", USAGE, model="gpt-4o"),
                ScriptedResponse("GLOBEX balance: $99", USAGE, model="gpt-4o"),
            ],
            cycle=False,
        )
    )
    cached = CachedChatModel(model=inner, semantic_cache=engine_cache())

    async def ask(tenant: str) -> str:
        cfg: Any = {
            "callbacks": [CostCallbackHandler(engine)],
            "metadata": {"costopt_tenant": tenant},
        }
        q = "What is my account balance?"
        if method == "invoke":
            return str(cached.invoke(q, config=cfg).content)
        if method == "ainvoke":
            return str((await cached.ainvoke(q, config=cfg)).content)
        if method == "stream":
            return "".join(str(c.content) for c in cached.stream(q, config=cfg))
        return "".join([str(c.content) async for c in cached.astream(q, config=cfg)])

    assert await ask("acme") == "ACME balance: $1,234"
    assert await ask("globex") == "GLOBEX balance: $99"
    assert await ask("acme") == "ACME balance: $1,234"  # acme's own entry still serves acme
    assert inner.script.calls == 2
    assert [(r.outcome, r.tenant) for r in engine.ledger.records()] == [
        ("model", "acme"),
        ("model", "globex"),
        ("cache_exact", "acme"),
    ]


def _refusing_router() -> Any:
    from costopt_core.routing.router import RouterConfig
    from langchain_costopt.router import RouterChatModel

    small = ScriptedChatModel(
        script=Script([ScriptedResponse("I'm sorry, I cannot help with that.", USAGE)]),
        model_name="gpt-4o-mini",
    )
    big = ScriptedChatModel(
        script=Script([ScriptedResponse("Refunds within 30 days.", USAGE, model="gpt-4o")]),
        model_name="gpt-4o",
    )
    return RouterChatModel(
        tiers={"small": small, "frontier": big}, router_config=RouterConfig(thresholds=(0.0,))
    )


@pytest.mark.parametrize("method", ["invoke", "ainvoke", "stream", "astream"])
async def test_a_cached_router_records_its_escalation_in_the_handlers_ledger(method: str) -> None:
    # The router inside the cache sees the run's cost handler: the paid,
    # discarded cheap attempt is in the handler's ledger, next to the answer.
    engine = CostEngine()
    cached = CachedChatModel(model=_refusing_router(), semantic_cache=engine_cache())
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)], "metadata": {"costopt_tenant": "acme"}}
    q = "What is our refund window?"
    if method == "invoke":
        text = str(cached.invoke(q, config=cfg).content)
    elif method == "ainvoke":
        text = str((await cached.ainvoke(q, config=cfg)).content)
    elif method == "stream":
        text = "".join(str(c.content) for c in cached.stream(q, config=cfg))
    else:
        text = "".join([str(c.content) async for c in cached.astream(q, config=cfg)])
    assert text == "Refunds within 30 days."
    records = engine.ledger.records()
    assert sorted((r.outcome, r.model, r.tenant) for r in records) == [
        ("escalated", "gpt-4o-mini", "acme"),
        ("model", "gpt-4o", "acme"),
    ]


@pytest.mark.parametrize("method", ["invoke", "ainvoke", "stream", "astream"])
async def test_cache_false_bypasses_the_cache(method: str) -> None:
    # langchain-core's cache=False ("will not use a cache"): no lookup, no store.
    inner = ScriptedChatModel.from_texts(["fresh answer 1", "fresh answer 2"], model="gpt-4o")
    cache = engine_cache()
    cached = CachedChatModel(model=inner, semantic_cache=cache, cache=False)
    q = "What is new today?"
    answers = []
    for _ in range(2):
        if method == "invoke":
            answers.append(str(cached.invoke(q).content))
        elif method == "ainvoke":
            answers.append(str((await cached.ainvoke(q)).content))
        elif method == "stream":
            answers.append("".join(str(c.content) for c in cached.stream(q)))
        else:
            answers.append("".join([str(c.content) async for c in cached.astream(q)]))
    assert answers == ["fresh answer 1", "fresh answer 2"]
    assert inner.script.calls == 2
    assert cache.lookup(cached._request([HumanMessage(q)], None, {})) is None  # nothing stored


def test_wrong_types_are_configuration_errors_naming_the_value(tmp_path: Any) -> None:
    from costopt_core.cache import SQLiteCacheBackend
    from costopt_core.errors import ConfigurationError

    backend = SQLiteCacheBackend(str(tmp_path / "c.sqlite"))
    with pytest.raises(ConfigurationError, match=r"got 'memory'.*SemanticCache\(\)"):
        SemanticCache("memory")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"got SQLiteCacheBackend.*CacheEngine\("):
        SemanticCache(backend)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"got langchain_costopt.*SemanticCache"):
        SemanticCache(SemanticCache())  # type: ignore[arg-type]
    inner = ScriptedChatModel.from_texts(["ok"])
    with pytest.raises(ConfigurationError, match=r"model must be a LangChain chat model.*'gpt-4o'"):
        CachedChatModel(model="gpt-4o")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"semantic_cache.*got 'memory'"):
        CachedChatModel(model=inner, semantic_cache="memory")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"semantic_cache.*got SQLiteCacheBackend"):
        CachedChatModel(model=inner, semantic_cache=backend)  # type: ignore[arg-type]


def _v2_token_handler() -> Any:
    """A handler that makes invoke stream through the model's own _stream/_astream
    with its run manager (langchain-core's v2 event path), recording the tokens."""
    streaming = pytest.importorskip("langchain_core.tracers._streaming")
    v2 = getattr(streaming, "_V2StreamingCallbackHandler", None)
    if v2 is None:
        pytest.skip("this langchain-core has no v2 streaming handlers")

    class Tokens(BaseCallbackHandler, v2):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.seen: list[tuple[str, bool]] = []

        def on_llm_new_token(self, token: str, *, chunk: Any = None, **kwargs: Any) -> None:
            self.seen.append((token, chunk is not None and SERVED.noted(chunk)))

    return Tokens()


@pytest.mark.parametrize("outer", ["hit", "not_caching"])
async def test_token_callbacks_are_the_same_sync_and_async(outer: str) -> None:
    # A cache replays a hit, or passes a wrapped cache's replay through: the
    # noted empty last chunk (it says how the run is recorded) reaches
    # on_llm_new_token on both twins (async passed on chunks with text only).
    seen = {}
    for twin in ("sync", "async"):
        model = ScriptedChatModel(
            script=Script([ScriptedResponse("Use the reset link.", USAGE, model="gpt-4o-mini")])
        )
        cached: Any = CachedChatModel(model=model, semantic_cache=engine_cache())
        cached.invoke("How do I reset my password?")
        if outer == "not_caching":
            cached = CachedChatModel(model=cached, semantic_cache=engine_cache(), cache=False)
        tokens = _v2_token_handler()
        cfg: Any = {"callbacks": [tokens]}
        if twin == "sync":
            out = cached.invoke("How do I reset my password?", config=cfg)
        else:
            out = await cached.ainvoke("How do I reset my password?", config=cfg)
        assert out.text == "Use the reset link."
        seen[twin] = tokens.seen
    assert seen["sync"] == seen["async"]
    assert "".join(t for t, _ in seen["async"]) == "Use the reset link."
    assert seen["async"][-1] == ("", True)
