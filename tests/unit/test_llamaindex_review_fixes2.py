"""Review fixes: CachedLLM formats a prompt as its wrapped LLM does; a streamed
answer of a RouterLLM behind a CachedLLM is recorded once; a RouterLLM's
held-back stream that breaks part way is recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator, Iterator, Sequence
from typing import Any

import pytest
from llama_index.core.llms import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.prompts import PromptTemplate
from llama_index.core.types import BaseOutputParser
from pydantic import Field

from costopt_core import CostEngine, Usage
from costopt_core.cache import SemanticCache
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from llamaindex_costopt import CachedLLM, CostEventHandler, track_costs
from llamaindex_costopt.router import RouterLLM
from llamaindex_costopt.testing import ScriptedLLM
from tests.conftest import CheapFirst

U = Usage(1000, 100)
MSGS = [ChatMessage(role="user", content="What is 2+2?")]
HOWS = ["stream_chat", "astream_chat", "stream_complete", "astream_complete"]


def cache() -> SemanticCache:
    return SemanticCache(embedder=FakeEmbedder())


async def _agen(items: Iterator[Any]) -> AsyncGenerator[Any, None]:
    for item in items:
        yield item


# -- 1. CachedLLM formats a prompt with the wrapped LLM's settings -----------------
class Recording(ScriptedLLM):
    """A scripted LLM that notes what reaches it: the messages, or the prompt as sent.

    As LlamaIndex integrations do, ``complete`` applies ``completion_to_prompt``
    unless the prompt comes ``formatted``; ``chat`` adds no system prompt itself.
    """

    chat_model: bool = True
    sent: list[Any] = Field(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model, is_chat_model=self.chat_model)

    def _got_messages(self, messages: Sequence[ChatMessage]) -> None:
        self.sent.append([(m.role.value, m.content) for m in messages])

    def _got_prompt(self, prompt: str, formatted: bool) -> None:
        self.sent.append(prompt if formatted else self.completion_to_prompt(prompt))

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self._got_messages(messages)
        return self._chat_response(self.script.next())

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        self._got_messages(messages)
        return self._chat_chunks(self.script.next())

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self._got_messages(messages)
        return self._chat_response(await self.script.anext())

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        self._got_messages(messages)
        return _agen(self._chat_chunks(await self.script.anext()))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._got_prompt(prompt, formatted)
        return self._completion_response(self.script.next())

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        self._got_prompt(prompt, formatted)
        return self._completion_chunks(self.script.next())

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        self._got_prompt(prompt, formatted)
        return self._completion_response(await self.script.anext())

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        self._got_prompt(prompt, formatted)
        return _agen(self._completion_chunks(await self.script.anext()))


class Shouting(BaseOutputParser):
    """Asks for a format in the prompt and upper-cases the answer."""

    def parse(self, output: str) -> Any:
        return output.upper()

    def format(self, query: str) -> str:
        return query + " (answer in one word)"


def recording(chat_model: bool, *, parser: bool) -> Recording:
    return Recording.from_texts(
        ["four"],
        chat_model=chat_model,
        system_prompt="You are terse.",
        query_wrapper_prompt=PromptTemplate("[INST] {query_str} [/INST]"),
        completion_to_prompt=lambda p: f"<s>{p}</s>",
        messages_to_prompt=lambda ms: " | ".join(m.content or "" for m in ms),
        output_parser=Shouting() if parser else None,
    )


async def predicted(llm: Any, how: str) -> str:
    prompt = PromptTemplate("What is {a}+{b}?")
    if how == "predict":
        return str(llm.predict(prompt, a=2, b=2))
    if how == "apredict":
        return str(await llm.apredict(prompt, a=2, b=2))
    if how == "stream":
        return "".join(llm.stream(prompt, a=2, b=2))
    return "".join([t async for t in await llm.astream(prompt, a=2, b=2)])


@pytest.mark.parametrize("chat_model", [True, False], ids=["chat", "completion"])
@pytest.mark.parametrize("how", ["predict", "apredict", "stream", "astream"])
async def test_cached_llm_sends_what_the_wrapped_llms_own_predict_sends(
    how: str, chat_model: bool
) -> None:
    # LlamaIndex refuses an output parser on stream / astream.
    parser = how.endswith("predict")
    direct = recording(chat_model, parser=parser)
    wrapped = recording(chat_model, parser=parser)
    want = await predicted(direct, how)
    got = await predicted(CachedLLM(llm=wrapped, semantic_cache=cache()), how)
    assert wrapped.sent == direct.sent
    assert "You are terse." in str(direct.sent)  # the settings did reach the model
    assert got == want == ("FOUR" if parser else "four")


def test_the_wrappers_own_prompt_settings_win_and_complete_is_formatted_once() -> None:
    llm = recording(False, parser=False)
    cached = CachedLLM(
        llm=llm,
        semantic_cache=cache(),
        system_prompt="Mine.",
        completion_to_prompt=lambda p: f"<<{p}>>",
    )
    assert cached.system_prompt == "Mine."
    assert cached.query_wrapper_prompt is llm.query_wrapper_prompt  # not set: taken over
    cached.predict(PromptTemplate("Hi"))
    # complete() leaves the template to the wrapped LLM, as before: not applied twice.
    cached.complete("Hello")
    assert llm.sent == ["[INST] Mine.\n\n<<Hi>> [/INST]", "<s>Hello</s>"]


# -- 2. a cached router's streamed answer is recorded once ---------------------------
def scripted(text: str, model: str) -> ScriptedLLM:
    return ScriptedLLM(script=Script([ScriptedResponse(text, U, model=model)], cycle=True))


async def read_all(llm: Any, how: str) -> list[Any]:
    if how == "stream_chat":
        return list(llm.stream_chat(MSGS))
    if how == "stream_complete":
        return list(llm.stream_complete("What is 2+2?"))
    if how == "astream_chat":
        return [c async for c in await llm.astream_chat(MSGS)]
    return [c async for c in await llm.astream_complete("What is 2+2?")]


def text_of(chunk: Any) -> str:
    return chunk.text if isinstance(chunk, CompletionResponse) else chunk.message.content


@pytest.mark.parametrize("validate_streams", [True, False], ids=["held", "live"])
@pytest.mark.parametrize("how", HOWS)
async def test_a_streamed_answer_of_a_cached_router_is_recorded_once(
    how: str, validate_streams: bool
) -> None:
    small = scripted("four is the answer", "gpt-4o-mini")
    router = RouterLLM(
        tiers={"small": small, "frontier": scripted("4", "gpt-4o")},
        classifier=CheapFirst(),
        validate_streams=validate_streams,
    )
    cached = CachedLLM(llm=router, semantic_cache=cache())
    engine = CostEngine()
    handler = CostEventHandler(engine).attach()
    try:
        first = await read_all(cached, how)
        rows = [(r.outcome, r.model, r.tier) for r in engine.ledger.records()]
        assert rows == [("model", "gpt-4o-mini", "small")]
        # The caller's last chunk is the router's answer: it names the route.
        assert first[-1].raw["costopt"]["route"]["tier"] == "small"
        again = await read_all(cached, how)
    finally:
        handler.detach()
    assert text_of(again[-1]) == text_of(first[-1]) == "four is the answer"
    assert small.script.calls == 1
    assert [r.outcome for r in engine.ledger.records()] == ["model", "cache_exact"]
    assert engine.ledger.records()[1].usage.input_tokens == 1000
    assert handler.pending == 0


# -- 3. a held-back stream that breaks part way is recorded --------------------------
class Breaking(ScriptedLLM):
    """Streams ``after`` items, then the connection drops (a provider error)."""

    after: int = 2
    usage_first: bool = False

    def _completion_chunks(self, r: ScriptedResponse) -> Generator[CompletionResponse, None, None]:
        if self.usage_first:  # some providers report the prompt's usage up front
            yield CompletionResponse(text="", delta="", raw=self._raw(r))
        for i, chunk in enumerate(super()._completion_chunks(r)):
            if i == self.after:
                raise ConnectionError("connection reset mid-stream")
            yield chunk


@pytest.mark.filterwarnings("ignore::costopt_core.pricing.UnknownCostWarning")
@pytest.mark.parametrize("usage_first", [False, True], ids=["no-usage", "usage"])
@pytest.mark.parametrize("how", HOWS)
async def test_a_held_back_stream_that_breaks_part_way_is_recorded_then_falls_back(
    how: str, usage_first: bool
) -> None:
    small = Breaking(
        script=Script([ScriptedResponse("four is the answer", U, model="gpt-4o-mini")], cycle=True),
        usage_first=usage_first,
    )
    big = scripted("It is 4", "gpt-4o")
    router = RouterLLM(tiers={"small": small, "frontier": big}, classifier=CheapFirst())
    engine = CostEngine()
    with track_costs(engine):
        chunks = await read_all(router, how)
    assert text_of(chunks[-1]) == "It is 4"
    # The small model is retried once (the default), then the frontier answers.
    route = chunks[-1].raw["costopt"]["route"]
    assert [a["outcome"] for a in route["attempts"]] == ["error: ConnectionError"] * 2 + ["kept"]
    *broken, kept = engine.ledger.records()
    assert len(broken) == 2  # each billed attempt, once
    for b in broken:
        assert (b.model, b.outcome, b.tier) == ("gpt-4o-mini", "escalated", "small")
        if usage_first:
            assert b.usage.input_tokens == 1000 and b.cost_usd is not None
        else:  # billed, but for what is unknown: unpriced, never $0
            assert b.usage.input_tokens is None and b.cost_usd is None
    assert (kept.model, kept.outcome, kept.tier) == ("gpt-4o", "model", "frontier")


class Hanging(ScriptedLLM):
    """Async streams send one item, then wait for ever (until cancelled)."""

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        r = await self.script.anext()

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            yield next(self._chat_chunks(r))
            await asyncio.Event().wait()

        return gen()


@pytest.mark.filterwarnings("ignore::costopt_core.pricing.UnknownCostWarning")
async def test_a_held_back_stream_cancelled_part_way_is_recorded_once() -> None:
    small = Hanging(script=Script([ScriptedResponse("four", U, model="gpt-4o-mini")]))
    router = RouterLLM(
        tiers={"small": small, "frontier": scripted("4", "gpt-4o")}, classifier=CheapFirst()
    )
    engine = CostEngine()
    with track_costs(engine) as costs:
        task = asyncio.ensure_future(read_all(router, "astream_chat"))
        for _ in range(20):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    rows = [(r.model, r.outcome, r.tier, r.usage.input_tokens) for r in engine.ledger.records()]
    assert rows == [("gpt-4o-mini", "model", "small", None)]
    assert costs.pending == 0
