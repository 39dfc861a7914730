"""``CachedLLM``: every LlamaIndex entry point through the cache, hits never call the model."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from pydantic import PrivateAttr

from costopt_core import CostEngine, Usage
from costopt_core.cache import CacheConfig
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.cache.defaults import GUARDS_OFF
from costopt_core.tenancy import tenant_scope
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from llamaindex_costopt.cached_llm import CachedLLM
from llamaindex_costopt.handler import CostEventHandler, track_costs, usage_of
from llamaindex_costopt.testing import ScriptedLLM

LOOSE = CacheConfig(
    similarity_threshold=0.75,
    guards=GUARDS_OFF,
)
USAGE = Usage(1000, 200, cache_read_tokens=0, cache_write_5m_tokens=0, cache_write_1h_tokens=0)
ANSWER = "Use the reset link on the sign-in page."
QUESTION = "How do I reset my password?"
PARAPHRASE = "how can I reset my password"  # cosine 0.83 with FakeEmbedder(dim=256)
METHODS = [
    "chat",
    "complete",
    "stream_chat",
    "stream_complete",
    "achat",
    "acomplete",
    "astream_chat",
    "astream_complete",
]


def engine_cache(config: CacheConfig | None = None) -> CacheEngine:
    return CacheEngine(embedder=FakeEmbedder(dim=256), config=config or LOOSE)


def scripted(*texts: str, latency_s: float = 0.0, **kwargs: Any) -> ScriptedLLM:
    # cycle=False: a call the test did not expect fails loudly instead of answering.
    responses = [ScriptedResponse(t, USAGE, model="gpt-4o-mini") for t in texts or (ANSWER,)]
    return ScriptedLLM(script=Script(responses, latency_s=latency_s, cycle=False), **kwargs)


def wrap(inner: ScriptedLLM, cache: CacheEngine | None = None, **kwargs: Any) -> CachedLLM:
    # These tests read which tier served each answer from raw["costopt"].
    kwargs.setdefault("expose_cache_info", True)
    return CachedLLM(llm=inner, semantic_cache=cache or engine_cache(), **kwargs)


def test_callers_are_not_told_which_answers_the_cache_served() -> None:
    from llamaindex_costopt import CostEventHandler

    engine = CostEngine()
    msgs = [ChatMessage(role=MessageRole.USER, content=QUESTION)]
    handler = CostEventHandler(engine).attach()
    try:
        llm = wrap(scripted(), expose_cache_info=False)
        first = llm.chat(msgs)
        again = llm.chat(msgs)
        streamed = list(llm.stream_chat(msgs))
    finally:
        handler.detach()
    assert marker(again) is None and all(marker(r) is None for r in streamed)
    assert marker(first) is None
    # the cost handler still prices the hits as hits
    assert [r.outcome for r in engine.ledger.records()] == ["model", "cache_exact", "cache_exact"]


async def run(
    llm: CachedLLM, method: str, prompt: str, **kwargs: Any
) -> tuple[str, Any, list[Any]]:
    """Call ``method``; returns (text, final response, every response the caller saw)."""
    msgs = [ChatMessage(role=MessageRole.USER, content=prompt)]
    if method == "chat":
        out: list[Any] = [llm.chat(msgs, **kwargs)]
    elif method == "achat":
        out = [await llm.achat(msgs, **kwargs)]
    elif method == "complete":
        out = [llm.complete(prompt, **kwargs)]
    elif method == "acomplete":
        out = [await llm.acomplete(prompt, **kwargs)]
    elif method == "stream_chat":
        out = list(llm.stream_chat(msgs, **kwargs))
    elif method == "stream_complete":
        out = list(llm.stream_complete(prompt, **kwargs))
    elif method == "astream_chat":
        out = [c async for c in await llm.astream_chat(msgs, **kwargs)]
    elif method == "astream_complete":
        out = [c async for c in await llm.astream_complete(prompt, **kwargs)]
    else:  # pragma: no cover
        raise AssertionError(method)
    last = out[-1]
    text = last.message.content if isinstance(last, ChatResponse) else last.text
    return text, last, out


def marker(response: Any) -> dict[str, Any] | None:
    raw = response.raw
    return raw.get("costopt") if isinstance(raw, dict) else None


# -- every method: miss, exact hit, semantic hit ------------------------------------
@pytest.mark.parametrize("method", METHODS)
async def test_miss_calls_once_then_exact_hit_does_not_call(method: str) -> None:
    inner = scripted()
    llm = wrap(inner)
    text, first, _ = await run(llm, method, QUESTION)
    assert inner.script.calls == 1
    assert text == ANSWER
    assert marker(first) is None  # a miss is the wrapped LLM's own answer

    text2, again, _ = await run(llm, method, QUESTION)
    assert inner.script.calls == 1  # the script has no second answer: a call would raise
    assert text2 == ANSWER
    assert marker(again) == {"cache": "exact", "similarity": 1.0}
    assert again.raw["model"] == "gpt-4o-mini"
    assert usage_of(again) == usage_of(first) == USAGE


@pytest.mark.parametrize("method", METHODS)
async def test_paraphrase_is_a_semantic_hit(method: str) -> None:
    inner = scripted()
    llm = wrap(inner)
    await run(llm, method, QUESTION)
    text, para, _ = await run(llm, method, PARAPHRASE)
    assert inner.script.calls == 1
    assert text == ANSWER
    m = marker(para)
    assert m is not None and m["cache"] == "semantic"
    assert 0.75 <= m["similarity"] < 1.0
    assert usage_of(para) == USAGE


async def test_strict_default_guards_refuse_the_paraphrase() -> None:
    inner = scripted(ANSWER, "A second, fresh answer.")
    llm = wrap(inner, engine_cache(CacheConfig()))
    await run(llm, "chat", QUESTION)
    text, _, _ = await run(llm, "chat", PARAPHRASE)
    assert inner.script.calls == 2
    assert text == "A second, fresh answer."


@pytest.mark.parametrize("method", METHODS)
async def test_tenants_never_share(method: str) -> None:
    inner = scripted(ANSWER, "Globex answer.")
    llm = wrap(inner)
    with tenant_scope("acme"):
        await run(llm, method, QUESTION)
    with tenant_scope("globex"):
        globex, _, _ = await run(llm, method, QUESTION)
    with tenant_scope("acme"):
        acme, again, _ = await run(llm, method, QUESTION)
    assert inner.script.calls == 2  # globex missed; acme's second call hit
    assert globex == "Globex answer."
    assert acme == ANSWER and marker(again) is not None


async def test_tenant_field_and_instrument_tags_partition_too() -> None:
    from llama_index.core.instrumentation.dispatcher import instrument_tags

    cache = engine_cache()
    inner = scripted("a", "b", "c")
    await run(wrap(inner, cache, tenant="acme"), "chat", QUESTION)
    await run(wrap(inner, cache, tenant="globex"), "chat", QUESTION)
    with instrument_tags({"costopt_tenant": "initech"}):
        await run(wrap(inner, cache), "chat", QUESTION)
    assert inner.script.calls == 3
    text, _, _ = await run(wrap(inner, cache, tenant="globex"), "chat", QUESTION)
    assert text == "b"


# -- streams ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method", ["stream_chat", "stream_complete", "astream_chat", "astream_complete"]
)
async def test_a_hit_replays_as_word_chunks_with_usage_last(method: str) -> None:
    inner = scripted()
    llm = wrap(inner)
    await run(llm, "chat" if "chat" in method else "complete", QUESTION)  # stored by a plain call
    text, last, chunks = await run(llm, method, QUESTION)
    assert inner.script.calls == 1
    assert len(chunks) == len(ANSWER.split(" ")) + 1
    assert "".join(c.delta for c in chunks) == text == ANSWER
    assert all(marker(c) == {"cache": "exact", "similarity": 1.0} for c in chunks)
    assert all(usage_of(c) == Usage() for c in chunks[:-1])  # usage once, at the end
    assert usage_of(last) == USAGE


@pytest.mark.parametrize("method", ["stream_chat", "stream_complete"])
def test_a_stream_abandoned_early_is_not_stored(method: str) -> None:
    inner = scripted(ANSWER, "Second answer.")
    cache = engine_cache()
    llm = wrap(inner, cache)
    msgs = [ChatMessage(role=MessageRole.USER, content=QUESTION)]
    gen = llm.stream_chat(msgs) if method == "stream_chat" else llm.stream_complete(QUESTION)
    next(gen)
    gen.close()
    assert cache.stats().stores == 0
    again = list(
        llm.stream_chat(msgs) if method == "stream_chat" else llm.stream_complete(QUESTION)
    )
    assert inner.script.calls == 2
    assert marker(again[-1]) is None
    assert cache.stats().stores == 1  # the stream read to its end was stored


@pytest.mark.parametrize("method", ["astream_chat", "astream_complete"])
async def test_an_async_stream_abandoned_early_is_not_stored(method: str) -> None:
    inner = scripted(ANSWER, "Second answer.")
    cache = engine_cache()
    llm = wrap(inner, cache)
    msgs = [ChatMessage(role=MessageRole.USER, content=QUESTION)]
    gen = await (
        llm.astream_chat(msgs) if method == "astream_chat" else llm.astream_complete(QUESTION)
    )
    await gen.__anext__()
    await gen.aclose()
    # LlamaIndex's wrapper leaves the stream inside it to the loop to close; an
    # identical stream asked before then would replay it (one call for both).
    for _ in range(100):
        await asyncio.sleep(0)
    assert cache.stats().stores == 0
    text, _, _ = await run(llm, method, QUESTION)
    assert inner.script.calls == 2 and text == "Second answer."
    text, last, _ = await run(llm, method, QUESTION)
    assert text == "Second answer." and marker(last) is not None


async def test_a_streamed_answer_serves_plain_calls() -> None:
    inner = scripted()
    llm = wrap(inner)
    await run(llm, "stream_chat", QUESTION)
    text, hit, _ = await run(llm, "achat", QUESTION)
    assert inner.script.calls == 1
    assert text == ANSWER and hit.delta is None
    assert usage_of(hit) == USAGE


# -- concurrency -------------------------------------------------------------------
async def test_twenty_concurrent_acomplete_make_one_call() -> None:
    inner = scripted(latency_s=0.05)
    llm = wrap(inner)
    outs = await asyncio.gather(*(llm.acomplete(QUESTION) for _ in range(20)))
    assert inner.script.calls == 1
    assert {o.text for o in outs} == {ANSWER}
    assert sum(marker(o) is not None for o in outs) == 19


def test_concurrent_complete_in_threads_make_one_call() -> None:
    inner = scripted(latency_s=0.05)
    llm = wrap(inner)
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda _: llm.complete(QUESTION), range(8)))
    assert inner.script.calls == 1
    assert {o.text for o in outs} == {ANSWER}


# -- scope ---------------------------------------------------------------------------
async def test_answer_changing_parameters_split_the_scope() -> None:
    inner = scripted("cold", "hot", "long")
    llm = wrap(inner)
    assert (await run(llm, "chat", QUESTION))[0] == "cold"
    assert (await run(llm, "chat", QUESTION, temperature=1.5))[0] == "hot"
    assert (await run(llm, "chat", QUESTION, max_tokens=5))[0] == "long"
    assert (await run(llm, "chat", QUESTION, temperature=1.5))[0] == "hot"
    assert inner.script.calls == 3


async def test_models_and_call_kinds_do_not_share() -> None:
    cache = engine_cache()
    a = scripted("from mini", model="gpt-4o-mini")
    b = scripted("from 4o", model="gpt-4o")
    assert (await run(wrap(a, cache), "chat", QUESTION))[0] == "from mini"
    assert (await run(wrap(b, cache), "chat", QUESTION))[0] == "from 4o"
    c = scripted("completed")
    assert (await run(wrap(c, cache), "complete", QUESTION))[0] == "completed"


async def test_system_prompt_of_the_wrapped_llm_splits_the_scope() -> None:
    cache = engine_cache()
    assert (await run(wrap(scripted("terse"), cache), "chat", QUESTION))[0] == "terse"
    pirate = scripted("arr", system_prompt="Talk like a pirate.")
    assert (await run(wrap(pirate, cache), "chat", QUESTION))[0] == "arr"


def test_metadata_is_the_wrapped_llms() -> None:
    inner = scripted(model="gpt-4o")
    llm = wrap(inner)
    assert llm.metadata.model_name == "gpt-4o"
    assert llm.metadata.is_chat_model is True
    assert llm.metadata.is_function_calling_model is False  # no chat_with_tools here


# -- payloads ----------------------------------------------------------------------
class ToolCallingLLM(ScriptedLLM):
    """Answers with an OpenAI-style tool call in ``additional_kwargs`` and no text."""

    def _chat_response(self, r: ScriptedResponse) -> ChatResponse:
        base = super()._chat_response(r)
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "pw"}'},
        }
        message = ChatMessage(
            role=MessageRole.ASSISTANT, content="", additional_kwargs={"tool_calls": [call]}
        )
        return ChatResponse(
            message=message,
            raw={**base.raw, "finish_reason": "tool_calls"},
            additional_kwargs={"x": 1},
        )


async def test_tool_call_answers_are_stored_and_round_trip_exactly() -> None:
    inner = ToolCallingLLM(script=Script([ScriptedResponse("", USAGE)], cycle=False))
    cache = engine_cache()
    llm = wrap(inner, cache)
    msgs = [ChatMessage(role=MessageRole.USER, content="find my order")]
    first = llm.chat(msgs)
    hit = llm.chat(msgs)
    assert inner.script.calls == 1
    assert hit.message == first.message
    assert hit.additional_kwargs == first.additional_kwargs
    assert {k: v for k, v in hit.raw.items() if k != "costopt"} == first.raw
    stored = cache.lookup(llm._chat_request(msgs, {}))
    assert stored is not None
    r = stored.response
    assert r.tool_calls == (
        {"name": "lookup", "args": {"q": "pw"}, "id": "call_1", "type": "tool_call"},
    )
    assert r.finish_reason == "tool_calls"
    assert r.payload_format == "llamaindex/chat/v1"
    assert r.model == "gpt-4o-mini" and r.usage == USAGE


@pytest.mark.parametrize("usage_format", ["openai", "anthropic", "gemini"])
async def test_hits_carry_the_replaced_calls_usage_in_any_provider_format(
    usage_format: str,
) -> None:
    inner = scripted(usage_format=usage_format)
    llm = wrap(inner)
    _, first, _ = await run(llm, "chat", QUESTION)
    _, hit, _ = await run(llm, "chat", QUESTION)
    assert usage_of(hit) == usage_of(first) == USAGE


# -- instrumentation ----------------------------------------------------------------
class Recorder(BaseEventHandler):
    _events: list[BaseEvent] = PrivateAttr(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Recorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self._events.append(event)

    def count(self, *types: type) -> int:
        return sum(isinstance(e, types) for e in self._events)


@pytest.fixture
def recorder() -> Any:
    rec = Recorder()
    root = get_dispatcher()
    root.event_handlers = [*root.event_handlers, rec]
    yield rec
    root.event_handlers = [h for h in root.event_handlers if h is not rec]


@pytest.mark.parametrize("method", METHODS)
async def test_a_hit_emits_one_start_and_end_and_carries_the_marker(
    method: str, recorder: Recorder
) -> None:
    llm = wrap(scripted())
    await run(llm, method, QUESTION)
    starts = (LLMChatStartEvent, LLMCompletionStartEvent)
    ends = (LLMChatEndEvent, LLMCompletionEndEvent)
    assert recorder.count(*starts) == recorder.count(*ends) == 2  # the wrapper and the LLM
    recorder._events.clear()
    await run(llm, method, QUESTION)
    assert recorder.count(*starts) == recorder.count(*ends) == 1  # the wrapper only
    end = next(e for e in recorder._events if isinstance(e, ends))
    assert marker(end.response)["cache"] == "exact"
    assert usage_of(end.response) == USAGE


@pytest.mark.parametrize("method", METHODS)
async def test_a_miss_is_priced_once(method: str) -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    handler = CostEventHandler(engine).attach()
    try:
        await run(wrap(scripted()), method, QUESTION)
    finally:
        handler.detach()
    records = engine.ledger.records()
    assert len(records) == 1
    assert records[0].usage == USAGE and records[0].model == "gpt-4o-mini"


@pytest.mark.parametrize("method", METHODS)
async def test_the_tenant_field_reaches_the_ledger(method: str) -> None:
    # The cache partitions by CachedLLM.tenant: the ledger must book the miss
    # and the hit under it too, over a caller's other tenant tag.
    from llama_index_instrumentation.dispatcher import active_instrument_tags, instrument_tags

    from llamaindex_costopt import track_costs

    engine = CostEngine()
    inner = scripted()
    llm = wrap(inner, tenant="acme")
    with track_costs(engine), instrument_tags({"costopt_tenant": "globex", "trace": "t1"}):
        await run(llm, method, QUESTION)
        await run(llm, method, QUESTION)
        # the caller's tags are theirs again after the call
        assert active_instrument_tags.get() == {"costopt_tenant": "globex", "trace": "t1"}
    assert inner.script.calls == 1
    assert [(r.outcome, r.tenant) for r in engine.ledger.records()] == [
        ("model", "acme"),
        ("cache_exact", "acme"),
    ]


async def test_without_a_tenant_field_the_callers_tenant_is_booked() -> None:
    from llamaindex_costopt import track_costs

    engine = CostEngine()
    llm = wrap(scripted(ANSWER, ANSWER))
    with track_costs(engine, tenant="globex"):
        await run(llm, "chat", QUESTION)
    with track_costs(engine), tenant_scope("initech"):
        await run(llm, "achat", QUESTION)
    assert [r.tenant for r in engine.ledger.records()] == ["globex", "initech"]


def test_an_answer_pydantic_cannot_dump_is_still_returned_and_kept() -> None:
    import numpy as np
    from llama_index.core.base.llms.types import CompletionResponse, LLMMetadata
    from llama_index.core.llms import CustomLLM
    from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

    class Scored(CustomLLM):
        calls: int = 0

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="local", is_chat_model=True)

        @llm_chat_callback()
        def chat(self, messages: Any, **kw: Any) -> ChatResponse:
            self.calls += 1
            message = ChatMessage(
                role="assistant", content="42", additional_kwargs={"logprob": np.float32(-0.25)}
            )
            return ChatResponse(message=message, raw={"model": "local"})

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
            self.calls += 1
            return CompletionResponse(text="42", additional_kwargs={"p": np.array([0.1, 0.9])})

        def stream_complete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
            yield CompletionResponse(text="42", delta="42")

    inner = Scored()
    llm = CachedLLM(llm=inner, semantic_cache=engine_cache())
    ask = [ChatMessage(role="user", content="What is six times seven?")]
    assert llm.chat(ask).message.content == "42"
    assert llm.chat(ask).message.content == "42"
    assert llm.complete("What is six times seven?").text == "42"
    assert llm.complete("What is six times seven?").text == "42"
    assert inner.calls == 2  # each answer kept, served once


def test_an_image_file_is_keyed_by_its_bytes_not_only_its_path(tmp_path: Any) -> None:
    from llama_index.core.base.llms.types import ImageBlock, TextBlock

    image = tmp_path / "photo.png"
    inner = scripted("A cat.", "A dog.")
    llm = CachedLLM(llm=inner, semantic_cache=engine_cache())

    def ask() -> str:
        blocks = [TextBlock(text="What animal is this?"), ImageBlock(path=image)]
        return str(llm.chat([ChatMessage(role="user", blocks=blocks)]).message.content)

    image.write_bytes(b"\x89PNG cat pixels")
    assert ask() == "A cat."
    assert ask() == "A cat."  # the same file: a hit
    image.write_bytes(b"\x89PNG dog pixels")
    assert ask() == "A dog."
    assert inner.script.calls == 2


@pytest.mark.parametrize("method", METHODS)
async def test_track_costs_tenants_never_share_answers(method: str) -> None:
    # track_costs(tenant=...) names the tenant the handler books a call under: the
    # cache must partition by the same tenant, or globex is served acme's answer.
    from llamaindex_costopt import track_costs

    inner = scripted(ANSWER, "Globex answer.")
    llm = wrap(inner)
    with track_costs(tenant="acme"):
        await run(llm, method, QUESTION)
    with track_costs(tenant="globex") as globex_costs:
        globex, last, _ = await run(llm, method, QUESTION)
    assert inner.script.calls == 2
    assert globex == "Globex answer." and marker(last) is None
    assert [(r.outcome, r.tenant) for r in globex_costs.ledger.records()] == [("model", "globex")]


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("llm", "gpt-4o", "not its name"),
        ("ttl_s", -1, "positive number of seconds"),
        ("ttl_s", float("inf"), "positive number of seconds, and finite"),
        ("semantic_cache", "memory", r"SemanticCache\('memory'\)"),
        ("cache_tags", "kb", r"pass \('kb',\)"),
    ],
)
def test_wrong_settings_are_configuration_errors_naming_the_value(
    setting: str, value: Any, says: str
) -> None:
    from costopt_core.errors import ConfigurationError

    kwargs: dict[str, Any] = {"llm": scripted(), setting: value}
    with pytest.raises(
        ConfigurationError, match=rf"invalid CachedLLM: {setting}={value!r}.*{says}"
    ):
        CachedLLM(**kwargs)


# -- function calling: agents take the cache; served answers replay their tool calls ---
def test_the_cache_calls_functions_when_the_wrapped_llm_does() -> None:
    from tests.fakes.llamaindex_tools import ToolLLM

    assert wrap(ToolLLM()).metadata.is_function_calling_model is True
    assert wrap(scripted()).metadata.is_function_calling_model is False


@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize("fmt", ["kwargs", "blocks"])
async def test_a_function_agent_runs_on_the_cache_and_a_hit_replays_the_tool_calls(
    streaming: bool, fmt: str
) -> None:
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.tools import FunctionTool

    from tests.fakes.llamaindex_tools import ToolLLM

    calls: list[tuple[int, int]] = []

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        calls.append((a, b))
        return a * b

    inner = ToolLLM(fmt=fmt)
    llm = wrap(inner)
    engine = CostEngine()
    answers = []
    with track_costs(engine):
        for _ in range(2):
            # A new agent and a new tool object each time: the same tool all the same.
            tool = FunctionTool.from_defaults(multiply)
            agent = FunctionAgent(tools=[tool], llm=llm, streaming=streaming)
            answers.append(str(await agent.run("What is 3 times 4?")))
    assert answers == ["The product is 12."] * 2
    assert inner.calls == 2  # the second run was served: tool call, then answer
    assert calls == [(3, 4), (3, 4)]  # the served tool call was read and run again
    assert [r.outcome for r in engine.ledger.records()] == [
        "model",
        "model",
        "cache_exact",
        "cache_exact",
    ]


def test_a_tool_object_is_scoped_by_what_the_model_is_told() -> None:
    from llama_index.core.tools import FunctionTool

    from tests.fakes.llamaindex_tools import multiply

    llm = wrap(scripted())
    msgs = [ChatMessage(role=MessageRole.USER, content=QUESTION)]
    first = llm._chat_request(msgs, {"tools": [FunctionTool.from_defaults(multiply)]})
    again = llm._chat_request(msgs, {"tools": [FunctionTool.from_defaults(multiply)]})
    other = llm._chat_request(
        msgs, {"tools": [FunctionTool.from_defaults(multiply, description="Times.")]}
    )
    assert first.tools == again.tools != other.tools
    assert first.tools[0]["tool"]["name"] == "multiply"
