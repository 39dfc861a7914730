"""A cached answer is served whole: structured output, extras, usage, streamed misses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import date
from enum import Enum
from typing import Any

import pytest
from langchain_core.globals import set_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.load import Serializable
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableLambda
from pydantic import BaseModel, ConfigDict

from costopt_core import CostEngine
from costopt_core.cache import CachedResponse
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.testing import FakeEmbedder
from langchain_costopt import CostCallbackHandler
from langchain_costopt import cache as cache_module
from langchain_costopt.cache import SemanticCache, response_of
from langchain_costopt.cached_model import CachedChatModel

USAGE: UsageMetadata = {"input_tokens": 50, "output_tokens": 10, "total_tokens": 60}
META = {"model_name": "gpt-4o-mini", "finish_reason": "stop"}
QUESTION = "Extract: Ann is 31 years old."


class Tier(Enum):
    GOLD = "gold"


class Person(BaseModel):
    name: str
    age: int
    since: date = date(2020, 1, 2)
    tier: Tier = Tier.GOLD


def oai_parser(msg: AIMessage) -> Person | None:
    """langchain-openai's ``_oai_structured_outputs_parser`` (not installed here)."""
    if (parsed := msg.additional_kwargs.get("parsed")) is not None:
        return Person(**parsed) if isinstance(parsed, dict) else parsed
    if msg.additional_kwargs.get("refusal"):
        raise RuntimeError("refusal")
    if msg.tool_calls:
        return None
    raise ValueError("Structured Output response does not have a 'parsed' field")


def structured_answer() -> AIMessage:
    # ChatOpenAI.with_structured_output(Person) (json_schema) puts the object here.
    return AIMessage(
        content='{"name":"Ann","age":31}',
        additional_kwargs={"parsed": Person(name="Ann", age=31), "refusal": None},
        response_metadata={**META, "system_fingerprint": "fp_1"},
        usage_metadata=USAGE,
    )


class Answers(BaseChatModel):
    """Answers with ``make()`` each call (a fresh message), counting the calls."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    make: Callable[[], AIMessage]
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "answers-fake"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: Any = None,
        run_manager: Any = None,
        **kw: Any,
    ) -> ChatResult:
        self.calls += 1
        return ChatResult(generations=[ChatGeneration(message=self.make())])


class Streams(Answers):
    """Streams ``chunks()``: reasoning first (DeepSeek / Qwen style), then the text."""

    chunks: Callable[[], list[AIMessageChunk]]

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: Any = None,
        run_manager: Any = None,
        **kw: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self.calls += 1
        for c in self.chunks():
            yield ChatGenerationChunk(message=c)


def reasoning_chunks() -> list[AIMessageChunk]:
    return [
        AIMessageChunk(content="", additional_kwargs={"reasoning_content": "User asks; "}),
        AIMessageChunk(content="", additional_kwargs={"reasoning_content": "say Paris."}),
        AIMessageChunk(
            content="Paris is the capital.",
            response_metadata=META,
            usage_metadata=USAGE,
        ),
        AIMessageChunk(
            content="",
            tool_call_chunks=[{"name": "lookup", "args": "oops(", "id": "c1", "index": 0}],
            chunk_position="last",
        ),
    ]


def engine() -> CacheEngine:
    return CacheEngine(embedder=FakeEmbedder())


def merged(chunks: Iterator[AIMessageChunk]) -> AIMessageChunk:
    total: AIMessageChunk | None = None
    for c in chunks:
        total = c if total is None else total + c
    assert total is not None
    return total


@pytest.mark.parametrize("wiring", ["set_llm_cache", "CachedChatModel"])
def test_a_structured_output_hit_parses_and_records_its_savings(wiring: str) -> None:
    inner = Answers(make=structured_answer)
    model: BaseChatModel = inner
    if wiring == "set_llm_cache":
        set_llm_cache(SemanticCache(engine()))
    else:
        model = CachedChatModel(model=inner, semantic_cache=engine())
    costs = CostEngine()
    cfg: Any = {"callbacks": [CostCallbackHandler(costs)]}
    bound = model.bind(response_format={"type": "json_schema"})
    chain = bound | RunnableLambda(oai_parser)
    try:
        first = chain.invoke(QUESTION, config=cfg)
        again = chain.invoke(QUESTION, config=cfg)
        raw = bound.invoke(QUESTION, config=cfg)
    finally:
        set_llm_cache(None)
    assert inner.calls == 1
    assert again == first == Person(name="Ann", age=31)
    assert raw.usage_metadata is not None and raw.usage_metadata["input_tokens"] == 50
    assert raw.response_metadata["system_fingerprint"] == "fp_1"
    assert raw.additional_kwargs["refusal"] is None
    hits = [r for r in costs.ledger.records() if r.outcome != "model"]
    assert len(hits) == 2
    assert all(r.baseline_cost_usd is not None and r.baseline_cost_usd > 0 for r in hits)


def test_a_structured_output_stream_hit_parses() -> None:
    inner = Answers(make=structured_answer)
    model = CachedChatModel(model=inner, semantic_cache=engine())
    model.invoke(QUESTION)
    streamed = merged(model.stream(QUESTION))
    assert inner.calls == 1
    assert oai_parser(streamed) == Person(name="Ann", age=31)
    assert streamed.usage_metadata is not None and streamed.usage_metadata["total_tokens"] == 60


def test_the_stored_payload_loads_back_dropping_only_what_has_no_json_form() -> None:
    from langchain_core.load import loads

    msg = structured_answer()
    msg.additional_kwargs["handle"] = object()  # nothing to keep of it
    msg.response_metadata["seen"] = {date(2024, 5, 6), 3}
    response = response_of([ChatGeneration(message=msg)])
    assert response.payload is not None and "not_implemented" not in response.payload
    gen = loads(response.payload, allowed_objects="core")[0]
    assert gen.message.additional_kwargs == {
        "parsed": {"name": "Ann", "age": 31, "since": "2020-01-02", "tier": "gold"},
        "refusal": None,
    }
    assert sorted(map(str, gen.message.response_metadata["seen"])) == ["2024-05-06", "3"]
    assert gen.message.usage_metadata == USAGE


class _Foreign(Serializable):
    """Serialisable, but not a langchain-core object: ``loads(..., "core")`` refuses it."""

    note: str = "x"

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["some_partner", "objects"]


def test_an_answer_that_does_not_load_whole_is_kept_as_its_parts() -> None:
    call = {"name": "lookup", "args": {"q": "Ann"}, "id": "c1", "type": "tool_call"}

    def answer() -> AIMessage:
        msg = structured_answer()
        msg.additional_kwargs["foreign"] = _Foreign()
        msg.tool_calls = [call]  # type: ignore[list-item]
        return msg

    inner = Answers(make=answer)
    model = CachedChatModel(model=inner, semantic_cache=engine())
    model.invoke(QUESTION)
    hit = model.invoke(QUESTION)
    assert inner.calls == 1
    assert hit.content == '{"name":"Ann","age":31}'
    assert hit.tool_calls == [call]
    assert hit.usage_metadata == USAGE
    assert hit.response_metadata["system_fingerprint"] == "fp_1"
    assert hit.additional_kwargs["parsed"]["age"] == 31
    assert hit.additional_kwargs["foreign"] == {"note": "x"}


def test_an_answer_that_cannot_be_restored_is_not_stored(monkeypatch: Any) -> None:
    # Nothing the cache could load back: the answer is returned, and the next
    # request asks the model rather than get a reduced answer.
    monkeypatch.setattr(cache_module, "_loadable", lambda gens: None, raising=False)
    inner = Answers(make=structured_answer)
    model = CachedChatModel(model=inner, semantic_cache=engine())
    assert oai_parser(model.invoke(QUESTION)) == Person(name="Ann", age=31)
    assert oai_parser(model.invoke(QUESTION)) == Person(name="Ann", age=31)
    assert inner.calls == 2


def test_a_hit_without_a_payload_keeps_its_usage() -> None:
    # An entry whose payload does not load (an older format, a foreign writer):
    # the hit is still priced on the usage the answer was paid for.
    cache = SemanticCache(engine())
    prompt, llm_string = "What is the capital of France?", "fake-llm"
    stored = response_of([ChatGeneration(message=AIMessage("Paris.", usage_metadata=USAGE))])
    broken = CachedResponse(
        text=stored.text, usage=stored.usage, payload="[{]", payload_format=stored.payload_format
    )
    cache.engine.store(cache._request(prompt, llm_string), broken)
    served = cache.lookup(prompt, llm_string)
    assert served is not None
    msg = served[0].message  # type: ignore[attr-defined]
    assert msg.content == "Paris."
    assert msg.usage_metadata == USAGE


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_streamed_miss_is_stored_whole(asynchronous: bool) -> None:
    inner = Streams(make=lambda: AIMessage("unused"), chunks=reasoning_chunks)
    model = CachedChatModel(model=inner, semantic_cache=engine())
    q = "What is the capital of France?"

    async def astream() -> AIMessageChunk:
        total: Any = None
        async for c in model.astream(q):
            total = c if total is None else total + c
        assert isinstance(total, AIMessageChunk)
        return total

    miss = asyncio.run(astream()) if asynchronous else merged(model.stream(q))
    hit = model.invoke(q)
    replay = merged(model.stream(q))
    assert inner.calls == 1
    assert miss.additional_kwargs == {"reasoning_content": "User asks; say Paris."}
    for served in (hit, replay):
        assert served.additional_kwargs == miss.additional_kwargs
        assert served.content == "Paris is the capital."
        assert [c["args"] for c in served.invalid_tool_calls] == ["oops("]
        assert served.tool_calls == []
        assert served.usage_metadata == USAGE


def test_a_model_that_cannot_stream_streams_its_extras() -> None:
    def answer() -> AIMessage:
        return AIMessage(
            "Paris.",
            additional_kwargs={"reasoning_content": "Easy."},
            response_metadata=META,
        )

    inner = Answers(make=answer)
    model = CachedChatModel(model=inner, semantic_cache=engine())
    miss = merged(model.stream("Capital of France?"))
    replay = merged(model.stream("Capital of France?"))
    assert inner.calls == 1
    assert miss.additional_kwargs == replay.additional_kwargs == {"reasoning_content": "Easy."}


def test_a_replayed_failed_call_is_not_made_with_cut_arguments() -> None:
    # A provider's malformed call (truncated JSON) is invalid; replayed as a
    # chunk, partial parsing would make it a call with cut arguments.
    def answer() -> AIMessage:
        return AIMessage(
            "Let me check.",
            invalid_tool_calls=[
                {"name": "lookup", "args": '{"q": "Par', "id": "c1", "error": "bad json"},
                {"name": "lookup", "args": "[1]", "id": "c2", "error": "not an object"},
            ],
            response_metadata=META,
        )

    inner = Answers(make=answer)
    model = CachedChatModel(model=inner, semantic_cache=engine())
    model.invoke("Weather in Paris?")
    replay = merged(model.stream("Weather in Paris?"))
    assert inner.calls == 1
    assert replay.tool_calls == []
    assert [c["id"] for c in replay.invalid_tool_calls] == ["c2"]


def test_a_stream_hit_does_not_repeat_its_extras() -> None:
    def answer() -> AIMessage:
        return AIMessage(
            "Paris is the capital.",
            additional_kwargs={"reasoning_content": "Easy.", "refusal": None},
            response_metadata=META,
        )

    inner = Answers(make=answer)
    model = CachedChatModel(model=inner, semantic_cache=engine())
    model.invoke("Capital of France?")
    chunks = list(model.stream("Capital of France?"))
    assert len(chunks) > 2
    assert chunks[0].additional_kwargs == {"reasoning_content": "Easy.", "refusal": None}
    assert all(not c.additional_kwargs for c in chunks[1:])
    assert merged(iter(chunks)).additional_kwargs == chunks[0].additional_kwargs


def test_a_plain_generation_keeps_its_info() -> None:
    from langchain_core.outputs import Generation

    gens = [
        Generation(text="Paris.", generation_info={"finish_reason": "stop", "when": date.today()})
    ]
    response = response_of(gens)
    served = cache_module.generations_of(_hit(response))
    assert served[0].text == "Paris."
    assert served[0].generation_info == {"finish_reason": "stop", "when": date.today().isoformat()}


def _hit(response: CachedResponse) -> Any:
    cache = SemanticCache(engine())
    cache.engine.store(cache._request("q", "llm"), response)
    hit = cache.engine.lookup(cache._request("q", "llm"))
    assert hit is not None
    return hit
