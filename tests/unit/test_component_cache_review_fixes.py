"""Component cache review fixes: configuration checked when built, stream hits yield chunks.

``cached(...)`` and ``ComponentCache`` refuse a cache that is not an engine
cache, a string of tags and a TTL that is not a finite number > 0 with a
``ConfigurationError`` at build time, and a stream hit of a chat model yields
the message chunk a stream yields, not the message ``invoke`` returns.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessageChunk
from langchain_core.runnables import RunnableLambda

from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.cache import SQLiteCacheBackend
from costopt_core.cache.component import ComponentCache
from costopt_core.errors import ConfigurationError
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from langchain_costopt import SemanticCache as LangChainSemanticCache
from langchain_costopt.components import cached
from langchain_costopt.testing import ScriptedChatModel

TOOL_CALL = {"name": "lookup", "args": {"id": 7}, "id": "c1", "type": "tool_call"}


def engine_cache(clock: Any = None) -> CacheEngine:
    if clock is None:
        return CacheEngine(embedder=FakeEmbedder())
    return CacheEngine(embedder=FakeEmbedder(), clock=clock)


def double() -> RunnableLambda[Any, Any]:
    return RunnableLambda(lambda x: x * 2)


# -- 1. cache: an engine cache, checked when built ---------------------------------------
@pytest.mark.parametrize(
    ("make", "named", "fix"),
    [
        (
            lambda tmp: SQLiteCacheBackend(str(tmp / "c.sqlite")),
            "got SQLiteCacheBackend",
            "CacheEngine(SQLiteCacheBackend(...))",
        ),
        (
            lambda tmp: LangChainSemanticCache(),
            "got langchain_costopt.SemanticCache",
            "(.engine)",
        ),
        (lambda tmp: "memory", "got 'memory'", "omit it for the in-memory cache"),
    ],
)
def test_cached_refuses_what_is_not_an_engine_cache_when_built(
    tmp_path: Path, make: Any, named: str, fix: str
) -> None:
    with pytest.raises(ConfigurationError) as err:
        cached(double(), cache=make(tmp_path), name="double")
    message = str(err.value)
    assert message.startswith("cached()'s cache must be a costopt_core.cache.SemanticCache")
    assert named in message and fix in message


def test_cached_takes_an_engine_cache_and_leaves_it_out() -> None:
    assert cached(double(), cache=engine_cache(), name="d").invoke(21) == 42
    assert cached(double()).invoke(4) == 8


def test_component_cache_refuses_a_backend_when_built(tmp_path: Path) -> None:
    backend = SQLiteCacheBackend(str(tmp_path / "c.sqlite"))
    with pytest.raises(ConfigurationError, match=r"got SQLiteCacheBackend; .*SemanticCache\("):
        ComponentCache(backend, "geo")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="needs an engine cache"):
        ComponentCache(None, "geo")  # type: ignore[arg-type]


# -- 2. tags: labels, never one string ---------------------------------------------------
def test_cached_refuses_a_string_of_tags() -> None:
    said = r"tags must be a tuple of labels; pass \('doc1',\)"
    with pytest.raises(ConfigurationError, match=said):
        cached(double(), cache=engine_cache(), tags="doc1")
    with pytest.raises(ConfigurationError, match=r"pass \('doc1',\)"):
        ComponentCache(engine_cache(), "kb", tags="doc1")


@pytest.mark.parametrize("tags", [("doc1", 7), [None], ("doc1", b"doc2")])
def test_a_tag_that_is_not_a_string_is_refused(tags: Any) -> None:
    with pytest.raises(ConfigurationError, match="tags must be strings, got"):
        cached(double(), cache=engine_cache(), tags=tags)


def test_a_tag_invalidates_what_it_was_stored_with() -> None:
    engine = engine_cache()
    calls: list[str] = []
    kb = cached(
        RunnableLambda(lambda q: calls.append(q) or f"answer v{len(calls)}"),
        cache=engine,
        name="kb",
        tags=["doc1"],
    )
    assert kb.component.tags == ("doc1",)  # type: ignore[attr-defined]
    assert kb.invoke("refund policy?") == "answer v1"
    assert engine.invalidate(tag="doc1") == 1
    assert kb.invoke("refund policy?") == "answer v2"


# -- 3. ttl_s: a finite number of seconds > 0 ----------------------------------------------
@pytest.mark.parametrize(
    ("ttl", "said"),
    [
        (math.nan, "finite number of seconds > 0, got nan"),
        (math.inf, "finite number of seconds > 0, got inf"),
        (-math.inf, "finite number of seconds > 0, got -inf"),
        (0, "finite number of seconds > 0, got 0"),
        (-5.0, "finite number of seconds > 0, got -5.0"),
        ("60", "must be a number of seconds, got str '60'"),
        (True, "must be a number of seconds, got bool True"),
    ],
)
def test_a_ttl_that_is_not_a_finite_positive_number_is_refused(ttl: Any, said: str) -> None:
    for build in (
        lambda: ComponentCache(engine_cache(), "geo", ttl_s=ttl),
        lambda: cached(double(), cache=engine_cache(), ttl_s=ttl),
    ):
        with pytest.raises(ConfigurationError) as err:
            build()
        assert said in str(err.value)
        assert "ttl_s=3600" in str(err.value)  # says what to pass


def test_a_finite_ttl_is_kept_and_expires() -> None:
    now = [1000.0]
    geo = ComponentCache(engine_cache(clock=lambda: now[0]), "geo", ttl_s=60)
    assert geo.ttl_s == 60.0
    calls: list[int] = []
    geo.get_or_call("paris", lambda: calls.append(1) or {"lat": 48.8})
    geo.get_or_call("paris", lambda: calls.append(1) or {"lat": 48.8})
    assert len(calls) == 1
    now[0] += 61
    geo.get_or_call("paris", lambda: calls.append(1) or {"lat": 48.8})
    assert len(calls) == 2


# -- 4. a stream hit yields what a stream yields -----------------------------------------
def chat_model() -> ScriptedChatModel:
    reply = ScriptedResponse(text="Let me check", tool_calls=(TOOL_CALL,))
    return ScriptedChatModel(script=Script([reply] * 4))


def test_a_stream_hit_of_a_chat_model_yields_a_message_chunk() -> None:
    model = cached(chat_model(), cache=engine_cache(), name="m")
    missed = list(model.stream("order status?"))
    assert all(isinstance(c, AIMessageChunk) for c in missed)
    hit = list(model.stream("order status?"))
    assert len(hit) == 1 and type(hit[0]) is AIMessageChunk
    chunk = hit[0]
    assert chunk.content == "Let me check"
    assert [t["name"] for t in chunk.tool_call_chunks] == ["lookup"]
    assert chunk.tool_calls == [TOOL_CALL]
    assert chunk.chunk_position == "last"
    # A consumer that adds the chunks up, as LangChain does, gets the message.
    assert (chunk + AIMessageChunk(content="")).content == "Let me check"
    # invoke shares the stored output and still gets the message.
    answer = model.invoke("order status?")
    assert type(answer) is AIMessage and answer.tool_calls == [TOOL_CALL]


def test_a_stream_hit_of_an_invoked_chat_model_yields_a_message_chunk() -> None:
    model = cached(chat_model(), cache=engine_cache(), name="m")
    answer = model.invoke("order status?")
    assert type(answer) is AIMessage
    hit = list(model.stream("order status?"))
    assert len(hit) == 1 and isinstance(hit[0], AIMessageChunk)
    assert hit[0].content == answer.content and hit[0].tool_calls == answer.tool_calls
    assert type(model.invoke("order status?")) is AIMessage


async def test_an_astream_hit_of_a_chat_model_yields_a_message_chunk() -> None:
    model = cached(chat_model(), cache=engine_cache(), name="m")
    missed = [c async for c in model.astream("order status?")]
    assert all(isinstance(c, AIMessageChunk) for c in missed)
    hit = [c async for c in model.astream("order status?")]
    assert len(hit) == 1 and type(hit[0]) is AIMessageChunk
    assert [t["name"] for t in hit[0].tool_call_chunks] == ["lookup"]
    assert type(await model.ainvoke("order status?")) is AIMessage


@pytest.mark.parametrize(
    "output",
    [
        "plain text",
        {"answer": "x", "n": 1},
        [Document(page_content="refunds within 30 days", metadata={"id": "doc1"})],
    ],
)
def test_other_outputs_replay_as_they_were(output: Any) -> None:
    model = cached(RunnableLambda(lambda _: output), cache=engine_cache(), name="o")
    assert list(model.stream("q")) == [output]
    hit = list(model.stream("q"))
    assert hit == [output]
    assert not any(isinstance(c, BaseMessageChunk) for c in hit)
    assert model.invoke("q") == output
