"""Review fixes of the batch adapters (LangChain ``BatchRunnable``, LlamaIndex ``BatchRunner``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from pydantic import Field

import langchain_costopt.batch as lc_batch
from costopt_core import CostEngine
from costopt_core.batch import BatchRequest, BatchResult
from costopt_core.cache import SemanticCache
from costopt_core.errors import BatchFailedError, BatchRequestError, ConfigurationError
from costopt_core.testing import FakeEmbedder, Script
from langchain_costopt import CostCallbackHandler, RouterChatModel, track_costs
from langchain_costopt.batch import BatchRunnable, message_of
from langchain_costopt.cached_model import CachedChatModel
from llamaindex_costopt import CachedLLM, RouterLLM
from llamaindex_costopt.batch import BatchRunner
from llamaindex_costopt.testing import ScriptedLLM
from tests.unit.test_langchain_batch import BATCH_COST, USAGE, FakeBatchAPI, chat_model
from tests.unit.test_langchain_cache import LOOSE


def _lc_runnable(provider: Any, engine: CostEngine | None = None, **kw: Any) -> BatchRunnable:
    return BatchRunnable(
        chat_model(), provider=provider, engine=engine, poll_interval_s=0.001, progress=False, **kw
    )


# -- 1. tool arguments that are JSON but not an object -------------------------------
class _ArgsAPI(FakeBatchAPI):
    """Answers with a tool call whose ``arguments`` are the question's word after ``args=``."""

    def _result(self, r: BatchRequest) -> BatchResult:
        res = super()._result(r)
        question = r.messages[-1].content
        if "args=" in question and res.raw is not None:
            args = question.split("args=", 1)[1]
            res.raw["choices"][0]["message"]["tool_calls"] = [  # type: ignore[index]
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": args}}
            ]
        return res


def _openai_body(arguments: str) -> dict[str, Any]:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    message = {"role": "assistant", "content": "", "tool_calls": [call]}
    return {"id": "x", "choices": [{"message": message, "finish_reason": "tool_calls"}]}


def test_null_tool_arguments_are_no_arguments_as_langchain_openai_reads_them() -> None:
    engine = CostEngine()
    result = BatchResult("0", "succeeded", "", USAGE, "gpt-4o-mini", raw=_openai_body("null"))
    msg = message_of(result, engine=engine, model="gpt-4o-mini", mode="batch", job="j")
    assert [(c["name"], c["args"], c["id"]) for c in msg.tool_calls] == [("f", {}, "c1")]
    assert msg.invalid_tool_calls == []


@pytest.mark.parametrize("arguments", ["[1, 2]", "3", '"text"', "true"])
def test_non_object_tool_arguments_are_an_invalid_tool_call(arguments: str) -> None:
    engine = CostEngine()
    result = BatchResult("0", "succeeded", "", USAGE, "gpt-4o-mini", raw=_openai_body(arguments))
    msg = message_of(result, engine=engine, model="gpt-4o-mini", mode="batch", job="j")
    assert msg.tool_calls == []
    [bad] = msg.invalid_tool_calls
    assert (bad["name"], bad["args"], bad["id"]) == ("f", arguments, "c1")
    assert "not an object" in (bad["error"] or "")


def test_a_list_of_tool_arguments_fails_no_answer_of_the_batch() -> None:
    engine = CostEngine()
    out = _lc_runnable(_ArgsAPI(), engine).batch(
        ["fine 1", "weird args=[1]", "fine 3"], return_exceptions=True
    )
    assert [type(o) for o in out] == [AIMessage, AIMessage, AIMessage]
    assert [o.content for o in out] == ["A: fine 1", "A: weird args=[1]", "A: fine 3"]
    assert out[1].tool_calls == [] and out[1].invalid_tool_calls[0]["args"] == "[1]"
    assert len(engine.ledger.records()) == 3


def test_an_answer_that_cannot_be_converted_fails_its_request_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def convert(result: BatchResult, **kw: Any) -> AIMessage:
        if "boom" in (result.text or ""):
            raise ValueError("cannot build the answer")
        return message_of(result, **kw)

    monkeypatch.setattr(lc_batch, "message_of", convert)
    engine = CostEngine()
    r = _lc_runnable(FakeBatchAPI(), engine)
    out = r.batch(["fine 1", "boom 2", "fine 3"], return_exceptions=True)
    assert [o.content for o in (out[0], out[2])] == ["A: fine 1", "A: fine 3"]
    assert isinstance(out[1], BatchRequestError)
    assert out[1].request_id == "1" and out[1].status == "errored"
    assert isinstance(out[1].__cause__, ValueError)
    assert "cannot build the answer" in str(out[1])
    with pytest.raises(BatchFailedError) as info:
        r.batch(["boom a", "fine b"])
    assert info.value.failed_ids == ["0"]
    assert info.value.outputs[1].content == "A: fine b"
    # A reattached handle gives the same answers, not the conversion error for all.
    handle = r.submit(["fine x", "boom y"])
    again = r.handle(handle.name).results(return_exceptions=True)
    assert again[0].content == "A: fine x"
    assert isinstance(again[1], BatchRequestError) and again[1].request_id == "1"


# -- 2. the LLM's system prompt on the local provider --------------------------------
class _RecordingLLM(ScriptedLLM):
    """Notes what its own chat / complete (and async twins) were called with."""

    seen: list[Any] = Field(default_factory=list)

    def chat(self, messages: Sequence[ChatMessage], **kw: Any) -> ChatResponse:
        self.seen.append([(m.role.value, m.content) for m in messages])
        return super().chat(messages, **kw)

    async def achat(self, messages: Sequence[ChatMessage], **kw: Any) -> ChatResponse:
        self.seen.append([(m.role.value, m.content) for m in messages])
        return await super().achat(messages, **kw)

    def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
        self.seen.append(prompt)
        return super().complete(prompt, formatted, **kw)

    async def acomplete(
        self, prompt: str, formatted: bool = False, **kw: Any
    ) -> CompletionResponse:
        self.seen.append(prompt)
        return await super().acomplete(prompt, formatted, **kw)


def _li_runner(llm: Any, **kw: Any) -> BatchRunner:
    return BatchRunner(llm, engine=CostEngine(), poll_interval_s=0.001, progress=False, **kw)


def _user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=text)]


def test_local_chat_sends_the_llm_system_prompt_as_a_remote_batch_does() -> None:
    llm = _RecordingLLM(
        script=Script(["ok"], model="gpt-4o-mini", cycle=True), system_prompt="Answer in French."
    )
    r = _li_runner(llm)
    assert r.provider_name == "local"
    r.chat_batch([_user("hi")])
    asyncio.run(r.achat_batch([_user("ho")]))
    assert llm.seen == [
        [("system", "Answer in French."), ("user", "hi")],
        [("system", "Answer in French."), ("user", "ho")],
    ]
    remote = _li_runner(llm, provider="openai").chat_request("0", _user("hi"))
    assert [(m.role, m.content) for m in remote.messages] == [
        ("system", "Answer in French."),
        ("user", "hi"),
    ]


def test_local_complete_puts_the_system_prompt_before_the_prompt() -> None:
    llm = _RecordingLLM(
        script=Script(["ok"], model="gpt-4o-mini", cycle=True), system_prompt="Answer in French."
    )
    r = _li_runner(llm)
    r.complete_batch(["hello"])
    asyncio.run(r.acomplete_batch(["bye"]))
    assert llm.seen == ["Answer in French.\n\nhello", "Answer in French.\n\nbye"]
    plain = _RecordingLLM(script=Script(["ok"], model="gpt-4o-mini", cycle=True))
    _li_runner(plain).complete_batch(["hello"])
    assert plain.seen == ["hello"]


# -- 3. the local LLM's tool calls and raw payload -----------------------------------
class _ToolLLM(ScriptedLLM):
    """Answers with a tool call (a ``ToolCallBlock`` and OpenAI-style additional_kwargs)."""

    def _tool_answer(self, r: ChatResponse) -> ChatResponse:
        wire = [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"q": "x"}'},
            }
        ]
        blocks = [
            TextBlock(text="let me look"),
            ToolCallBlock(tool_call_id="c1", tool_name="lookup", tool_kwargs={"q": "x"}),
        ]
        msg = ChatMessage(
            role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs={"tool_calls": wire}
        )
        raw = dict(r.raw or {})
        raw["id"] = "resp-1"
        raw["choices"] = [{"message": {"role": "assistant"}, "finish_reason": "tool_calls"}]
        return ChatResponse(message=msg, raw=raw)

    def chat(self, messages: Sequence[ChatMessage], **kw: Any) -> ChatResponse:
        return self._tool_answer(super().chat(messages, **kw))

    async def achat(self, messages: Sequence[ChatMessage], **kw: Any) -> ChatResponse:
        return self._tool_answer(await super().achat(messages, **kw))


def _check_tool_answer(resp: Any) -> None:
    assert isinstance(resp, ChatResponse)
    calls = [b for b in resp.message.blocks if isinstance(b, ToolCallBlock)]
    assert [(b.tool_call_id, b.tool_name, b.tool_kwargs) for b in calls] == [
        ("c1", "lookup", {"q": "x"})
    ]
    assert resp.message.content == "let me look"
    assert resp.message.additional_kwargs["tool_calls"][0]["function"]["name"] == "lookup"
    assert resp.raw["id"] == "resp-1"
    assert resp.raw["choices"][0]["finish_reason"] == "tool_calls"
    assert resp.raw["costopt"]["call_id"].startswith("batch:")
    assert "costopt_local_message" not in resp.raw


def test_local_chat_keeps_the_llm_tool_calls_and_raw() -> None:
    llm = _ToolLLM(script=Script(["ok"], model="gpt-4o-mini", cycle=True))
    r = _li_runner(llm)
    [resp] = r.chat_batch([_user("hi")])
    _check_tool_answer(resp)
    [aresp] = asyncio.run(r.achat_batch([_user("hi")]))
    _check_tool_answer(aresp)
    # The answer round-trips through the queue: a reattached handle gives it back too.
    handle = r.submit_chat([_user("hi")])
    [again] = r.handle(handle.name).results()
    _check_tool_answer(again)


# -- 4. a track_costs block and a config's cost handler ------------------------------
def test_a_batch_is_recorded_by_the_block_and_the_config_handler_as_a_model_call() -> None:
    app = CostEngine()
    r = _lc_runnable(FakeBatchAPI())
    with track_costs() as block:
        out = r.batch(["a", "b"], config={"callbacks": [CostCallbackHandler(app)]})
    ids = sorted(m.response_metadata["costopt"]["call_id"] for m in out)
    assert sorted(rec.call_id for rec in app.ledger.records()) == ids
    assert sorted(rec.call_id for rec in block.ledger.records()) == ids
    assert {rec.mode for rec in block.ledger.records()} == {"batch"}
    assert block.ledger.totals().cost_usd == app.ledger.totals().cost_usd == 2 * BATCH_COST


def test_async_batch_and_submitted_results_reach_the_block_too() -> None:
    app = CostEngine()
    r = _lc_runnable(FakeBatchAPI())
    config: Any = {"callbacks": [CostCallbackHandler(app)]}

    async def go() -> list[Any]:
        with track_costs() as block:
            out = await r.abatch(["a"], config=config)
            handle = await r.asubmit(["b"], config)
            out += await handle.aresults()
            h2 = r.submit(["c"], config)
            out += h2.results()
            out += h2.results()  # a second read records nothing again
        return [out, block]

    out, block = asyncio.run(go())
    ids = sorted(m.response_metadata["costopt"]["call_id"] for m in out[:3])
    assert sorted(rec.call_id for rec in app.ledger.records()) == ids
    assert sorted(rec.call_id for rec in block.ledger.records()) == ids


def test_one_engine_in_block_and_handler_records_once() -> None:
    r = _lc_runnable(FakeBatchAPI())
    with track_costs() as block:
        r.batch(["a", "b"], config={"callbacks": [CostCallbackHandler(block.engine)]})
    assert len(block.ledger.records()) == 2


# -- 5. costopt's cache and router wrappers are not batched ---------------------------
def test_batch_runnable_refuses_costopt_cache_and_router_models(tmp_path: Path) -> None:
    inner = chat_model()
    wrappers = [
        CachedChatModel(
            model=inner, semantic_cache=SemanticCache(embedder=FakeEmbedder(dim=32), config=LOOSE)
        ),
        RouterChatModel(tiers={"small": inner, "frontier": chat_model()}),
    ]
    for wrapper in wrappers:
        for value in (wrapper, wrapper.bind(stop=["x"])):
            queue = tmp_path / f"{type(wrapper).__name__}.db"
            with pytest.raises(ConfigurationError) as info:
                BatchRunnable(value, model="gpt-4o-mini", queue_path=queue)
            message = str(info.value)
            assert f"cannot batch a {type(wrapper).__name__}" in message
            assert "Batch the underlying provider chat model" in message
            assert not queue.exists()
    assert BatchRunnable(inner, progress=False).model_name == "gpt-4o-mini"


def test_batch_runner_refuses_costopt_cache_and_router_llms(tmp_path: Path) -> None:
    inner = ScriptedLLM.from_texts(["x"], model="gpt-4o-mini")
    wrappers = [
        CachedLLM(
            llm=inner, semantic_cache=SemanticCache(embedder=FakeEmbedder(dim=32), config=LOOSE)
        ),
        RouterLLM(
            tiers={"small": inner, "frontier": ScriptedLLM.from_texts(["y"], model="gpt-4o")}
        ),
    ]
    for wrapper in wrappers:
        queue = tmp_path / f"{type(wrapper).__name__}.db"
        with pytest.raises(ConfigurationError) as info:
            BatchRunner(wrapper, model="gpt-4o-mini", queue_path=queue)
        message = str(info.value)
        assert f"cannot batch a {type(wrapper).__name__}" in message
        assert "Batch the underlying provider LLM" in message
        assert not queue.exists()
    assert BatchRunner(inner, progress=False).model_name == "gpt-4o-mini"
