"""Component cache: tuples keyed apart from lists, and streams whose chunks cannot be added.

Engine (``ComponentCache``) and LangChain (``cached()``) sides of each.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, NamedTuple

import pytest
from langchain_core.load import dumpd
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableLambda

from costopt_core.cache import CacheConfig
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.cache.component import ComponentCache
from costopt_core.cache.defaults import GUARDS_OFF
from costopt_core.testing import FakeEmbedder
from langchain_costopt.components import cached

LOOSE = CacheConfig(similarity_threshold=0.75, guards=GUARDS_OFF)


def engine_cache() -> CacheEngine:
    return CacheEngine(embedder=FakeEmbedder(dim=256), config=LOOSE)


def must_not_call() -> Any:
    raise AssertionError("the component was called on a hit")


def old_name(value: Any) -> str:
    """The key name an input had before tuples were keyed apart (JSON of it)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "input:" + hashlib.sha256(text.encode()).hexdigest()


class Point(NamedTuple):
    x: int
    y: int


# -- keys: tuples are not lists -----------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((1, 2), [1, 2]),
        ({"q": (1, 2)}, {"q": [1, 2]}),
        ([(1, 2), 3], [[1, 2], 3]),
        ((), []),
        ({1: (1,)}, {1: [1]}),  # inside a dict with a typed key too
        (Point(1, 2), [1, 2]),
        # An input's own dict that looks like the typed form is kept apart too.
        ((1, 2), {"\x00tuple": [1, 2]}),
    ],
)
def test_tuple_and_list_inputs_never_share_an_entry(a: Any, b: Any) -> None:
    comp = ComponentCache(engine_cache(), "seq")
    assert comp.get_or_call(a, lambda: "first") == "first"
    assert comp.get_or_call(b, lambda: "second") == "second"
    assert comp.get_or_call(a, must_not_call) == "first"
    assert comp.get_or_call(b, must_not_call) == "second"
    assert comp.stats().misses == 2 and comp.stats().exact_hits == 2


def test_tuple_and_list_variants_split_the_cache() -> None:
    comp = ComponentCache(engine_cache(), "seq")
    assert comp.get_or_call("x", lambda: "t", variant={"stop": ("a",)}) == "t"
    assert comp.get_or_call("x", lambda: "l", variant={"stop": ["a"]}) == "l"
    assert comp.get_or_call("x", must_not_call, variant={"stop": ("a",)}) == "t"


def test_list_inputs_keep_the_keys_stored_before() -> None:
    comp = ComponentCache(engine_cache(), "seq")
    for value in ([1, 2], {"q": [1, [2, None]], "k": "v"}, [{"a": [1]}], "text"):
        request = comp.request(value)
        assert request is not None
        assert request.messages[0].name == old_name(value)
    # A tuple input gets a key of its own: what a tuple stored before is not
    # read back for it (that entry may as well have come from the list).
    request = comp.request((1, 2))
    assert request is not None and request.messages[0].name != old_name([1, 2])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((1, 2), [1, 2]),
        ({"q": (1, 2)}, {"q": [1, 2]}),
        ((HumanMessage("hi"),), [HumanMessage("hi")]),
        ({"lc": 1, "v": (1,)}, {"lc": 1, "v": [1]}),  # a dict dumpd escapes
    ],
)
def test_cached_runnable_answers_tuples_and_lists_for_themselves(a: Any, b: Any) -> None:
    calls: list[Any] = []

    def kind(x: Any) -> str:
        calls.append(x)
        inner = x.get("q", x.get("v")) if isinstance(x, dict) else x
        return type(inner).__name__

    wrapped = cached(RunnableLambda(kind), cache=engine_cache())
    assert (wrapped.invoke(a), wrapped.invoke(b)) == ("tuple", "list")
    assert (wrapped.invoke(a), wrapped.invoke(b)) == ("tuple", "list")
    assert len(calls) == 2


def test_cached_runnable_list_inputs_keep_their_keys() -> None:
    seen: list[Any] = []
    engine = engine_cache()
    wrapped = cached(RunnableLambda(lambda x: seen.append(x) or "out"), cache=engine, name="n")
    value = {"messages": [HumanMessage("hi")], "k": [1, 2]}
    wrapped.invoke(value)
    # The entry sits where it always did: under dumpd's JSON of the input.
    comp = ComponentCache(engine, "n")
    request = comp.request(dumpd(value))
    assert request is not None
    hit = engine.lookup(request)
    assert hit is not None and json.loads(hit.response.payload or "null") == "out"


# -- streams whose chunks cannot be added ----------------------------------------------------
class Steps:
    """A generator Runnable streaming plain dicts (no ``+``), like a graph's updates."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, q: str) -> Iterator[dict[str, Any]]:
        self.calls += 1
        yield {"node": "search", "q": q}
        yield {"node": "answer", "text": f"about {q}"}

    async def arun(self, q: str) -> AsyncIterator[dict[str, Any]]:
        self.calls += 1
        yield {"node": "search", "q": q}
        yield {"node": "answer", "text": f"about {q}"}


EXPECTED = [{"node": "search", "q": "x"}, {"node": "answer", "text": "about x"}]


def test_a_stream_whose_chunks_cannot_be_added_is_replayed_chunk_by_chunk() -> None:
    steps = Steps()
    wrapped = cached(RunnableLambda(steps.run), cache=engine_cache())
    assert list(wrapped.stream("x")) == EXPECTED
    assert list(wrapped.stream("x")) == EXPECTED
    assert steps.calls == 1
    assert list(wrapped.stream("y")) == [
        {"node": "search", "q": "y"},
        {"node": "answer", "text": "about y"},
    ]
    assert steps.calls == 2
    # The chunks are no output invoke would give: invoke runs the Runnable and
    # returns what the bare one returns.
    assert wrapped.invoke("x") == RunnableLambda(Steps().run).invoke("x") == EXPECTED[-1]
    assert steps.calls == 3


async def test_an_async_stream_whose_chunks_cannot_be_added_is_replayed_chunk_by_chunk() -> None:
    steps = Steps()
    wrapped = cached(RunnableLambda(steps.run, afunc=steps.arun), cache=engine_cache())
    assert [c async for c in wrapped.astream("x")] == EXPECTED
    assert [c async for c in wrapped.astream("x")] == EXPECTED
    assert list(wrapped.stream("x")) == EXPECTED  # sync and async share the entry
    assert steps.calls == 1
    assert await wrapped.ainvoke("x") == EXPECTED[-1]
    assert steps.calls == 2


def test_a_stored_output_is_what_a_stream_replays_first() -> None:
    steps = Steps()
    wrapped = cached(RunnableLambda(steps.run), cache=engine_cache())
    assert list(wrapped.stream("x")) == EXPECTED
    assert wrapped.invoke("x") == EXPECTED[-1]
    # One read serves most streams (their output is the one entry they have):
    # once invoke stored an output, a stream replays it as one chunk.
    assert list(wrapped.stream("x")) == [EXPECTED[-1]]
    assert steps.calls == 2


def test_semantic_lookups_of_calls_never_reach_stream_chunks() -> None:
    steps = Steps()
    wrapped = cached(RunnableLambda(steps.run), cache=engine_cache(), semantic=True)
    q, para = "refund policy for orders", "the refund policy for orders"
    chunks = list(wrapped.stream(q))
    assert len(chunks) == 2
    # A paraphrased stream is served the stored chunks...
    assert list(wrapped.stream(para)) == chunks
    assert steps.calls == 1
    # ...but a call never is: they are not its output.
    assert wrapped.invoke(para) == {"node": "answer", "text": f"about {para}"}
    assert steps.calls == 2


# -- the engine's side ----------------------------------------------------------------------
class NoAdd:
    """A chunk whose ``+`` fails with something other than TypeError."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __add__(self, other: Any) -> Any:
        raise ValueError("cannot add these")


def test_store_stream_keeps_a_sum_for_calls_and_a_sequence_for_streams_only() -> None:
    comp = ComponentCache(engine_cache(), "s")
    assert comp.store_stream("a", ["he", "llo"], as_output=str.upper) is True
    assert comp.get_or_call("a", must_not_call) == "HELLO"
    assert comp.lookup_stream("a") == (True, ["HELLO"])
    assert comp.store_stream("b", [{"n": 1}, {"n": 2}]) is True
    assert comp.lookup_stream("b") == (True, [{"n": 1}, {"n": 2}])
    assert comp.lookup("b") == (False, None)
    assert comp.get_or_call("b", lambda: "called") == "called"
    stats = comp.stats()
    assert (stats.exact_hits, stats.misses) == (3, 2)


def test_store_stream_stores_nothing_it_cannot_keep() -> None:
    comp = ComponentCache(engine_cache(), "s")
    assert comp.store_stream("a", []) is False
    assert comp.store_stream("b", [NoAdd(1), NoAdd(2)]) is False  # not JSON either
    assert comp.lookup_stream("b") == (False, [])
    assert comp.store_stream(object(), ["x"]) is False
    stats = comp.stats()
    assert (stats.encode_failures, stats.misses) == (1, 1)


def test_a_sum_that_raises_is_stored_as_the_sequence() -> None:
    comp = ComponentCache(
        engine_cache(),
        "s",
        encode=lambda v: json.dumps([c.n for c in v]),
        decode=lambda t: [NoAdd(n) for n in json.loads(t)],
    )
    assert comp.store_stream("a", [NoAdd(1), NoAdd(2)]) is True
    found, chunks = comp.lookup_stream("a")
    assert found and [c.n for c in chunks] == [1, 2]


async def test_async_stream_lookup_and_store() -> None:
    comp = ComponentCache(engine_cache(), "s")
    assert await comp.alookup_stream("k") == (False, [])
    assert await comp.astore_stream("k", [[1], [2]]) is True  # lists add up
    assert await comp.alookup_stream("k") == (True, [[1, 2]])
    assert await comp.astore_stream("d", [{"a": 1}, {"b": 2}]) is True
    assert await comp.alookup_stream("d") == (True, [{"a": 1}, {"b": 2}])


def test_invalidate_and_clear_forget_stream_chunks() -> None:
    comp = ComponentCache(engine_cache(), "s")
    comp.store_stream("a", [{"n": 1}, {"n": 2}])
    comp.get_or_call("a", lambda: "out")
    assert comp.invalidate("a") == 2
    assert comp.lookup_stream("a") == (False, [])
    comp.store_stream("b", [{"n": 1}, {"n": 2}])
    comp.store_stream("c", ["x", "y"])
    assert comp.clear() == 2
    assert comp.lookup_stream("b") == (False, []) and comp.lookup_stream("c") == (False, [])


def test_an_entry_that_is_no_sequence_of_chunks_is_a_miss() -> None:
    engine = engine_cache()
    comp = ComponentCache(engine, "s")
    request = comp.request("a")
    assert request is not None
    # Written under the chunks format, but not a list: never replayed.
    engine.store(comp._chunks_request(request), comp._response({"n": 1}, chunks=True))
    assert comp.lookup_stream("a") == (False, [])
    assert comp.stats().decode_failures == 1
