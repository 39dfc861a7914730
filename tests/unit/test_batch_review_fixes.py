"""Batch front-ends, review fixes: interruptions propagate and cancel the job, non-text
content is refused, LlamaIndex tool calls reach the wire, one retry budget."""

from __future__ import annotations

import _thread
import asyncio
import json
import threading
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from llama_index.core.base.llms.types import (
    ChatMessage,
    ImageBlock,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)

from costopt_core import Budget, ConfigurationError, CostEngine
from costopt_core.batch import BatchJob, BatchRequest, LocalBatchProvider
from costopt_core.batch._wire import openai_jsonl_line
from costopt_core.batch.budget import HOLDS
from costopt_core.errors import BatchRequestError
from costopt_core.testing import FakeEmbedder
from costopt_core.types import Message
from langchain_costopt.batch import BatchRunnable
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt.batch import BatchRunner, to_chat_message, to_message
from llamaindex_costopt.testing import ScriptedLLM
from tests.conftest import eventually

pytestmark = pytest.mark.filterwarnings("ignore::Warning")

USAGE = {"input_tokens": 1000, "output_tokens": 500, "total_tokens": 1500}


def budget_engine() -> CostEngine:
    # A budget makes every flush take a hold, released only when its requests are collected.
    return CostEngine(
        embedder=FakeEmbedder(),
        budgets=[Budget(limit_usd=Decimal(100), period="day", policy="block")],
    )


def holds_of(job: str) -> list[Any]:
    return [h for key, hs in HOLDS._open.items() if key[1] == job for h in hs]


class Gated(BaseChatModel):
    """Answers ``fast...`` at once; ``slow...`` waits for ``release`` (counted in ``calls``)."""

    model_name: str = "gpt-4o-mini"
    started: Any = None
    release: Any = None
    calls: Any = None

    @property
    def _llm_type(self) -> str:
        return "gated"

    def _answer(self) -> ChatResult:
        msg = AIMessage(content="ok", usage_metadata=USAGE)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kw: Any) -> ChatResult:
        text = str(messages[-1].content)
        if text.startswith("slow"):
            self.started.set()
            self.release.wait(10)
        self.calls.append(text)
        return self._answer()

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, **kw: Any
    ) -> ChatResult:
        text = str(messages[-1].content)
        if text.startswith("slow"):
            self.started.set()
            await self.release.wait()
        self.calls.append(text)
        return self._answer()


# -- 1. interruptions are never answers ------------------------------------------------------
@pytest.mark.parametrize("call", ["batch", "invoke"])
def test_ctrl_c_propagates_cancels_the_job_and_records_what_was_answered(call: str) -> None:
    engine = budget_engine()
    model = Gated(started=threading.Event(), release=threading.Event(), calls=[])
    b = BatchRunnable(model, engine=engine, progress=False, max_concurrency=1)

    def press_ctrl_c() -> None:
        if model.started.wait(5):
            time.sleep(0.2)  # the job is waiting now (its submit call has returned)
            _thread.interrupt_main()

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        if call == "batch":
            b.batch(["slow 0", "fast 1"])
        else:
            b.invoke("slow 0")
    [job] = b.jobs()
    status = b.handle(job).status(poll=False)
    assert status.job_canceled
    model.release.set()  # the call running on a worker thread ends: it was paid, so recorded
    assert eventually(lambda: len(engine.ledger.records()) == 1)
    assert model.calls == ["slow 0"]  # the request not started never ran
    assert eventually(lambda: b.handle(job).status(poll=False).complete)
    assert eventually(lambda: not holds_of(job))


@pytest.mark.parametrize("return_exceptions", [False, True])
async def test_a_cancelled_abatch_raises_and_stops_the_local_requests(
    return_exceptions: bool,
) -> None:
    engine = budget_engine()
    model = Gated(started=asyncio.Event(), release=asyncio.Event(), calls=[])
    b = BatchRunnable(model, engine=engine, progress=False, max_concurrency=2)
    task = asyncio.ensure_future(
        b.abatch(["fast 0", "slow 1", "slow 2"], return_exceptions=return_exceptions)
    )
    await asyncio.wait_for(model.started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [job] = b.jobs()
    status = b.handle(job).status(poll=False)
    assert status.job_canceled and status.complete
    assert (status.done, status.canceled) == (1, 2)
    assert len(engine.ledger.records()) == 1  # the answer given before the cancel
    model.release.set()
    await asyncio.sleep(0.05)
    assert model.calls == ["fast 0"]  # the stopped requests made no further call
    assert not holds_of(job)


async def test_wait_for_an_abatch_raises_timeout() -> None:
    model = Gated(started=asyncio.Event(), release=asyncio.Event(), calls=[])
    b = BatchRunnable(model, engine=budget_engine(), progress=False)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(b.abatch(["slow 0", "slow 1"]), 0.2)
    [job] = b.jobs()
    assert b.handle(job).status(poll=False).job_canceled
    assert not holds_of(job)


async def test_a_cancelled_ainvoke_raises_cancelled() -> None:
    model = Gated(started=asyncio.Event(), release=asyncio.Event(), calls=[])
    b = BatchRunnable(model, engine=budget_engine(), progress=False)
    task = asyncio.ensure_future(b.ainvoke("slow 0"))
    await asyncio.wait_for(model.started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_acancel_of_a_local_batch_ends_it_even_before_its_tasks_started() -> None:
    gate = asyncio.Event()

    async def achat(request: BatchRequest) -> str:
        await gate.wait()
        return "late"

    provider = LocalBatchProvider(achat=achat, max_concurrency=1)
    requests = [
        BatchRequest(id=f"r{i}", model="m", messages=(Message("user", "x"),)) for i in range(3)
    ]
    batch_id = await provider.asubmit(requests)
    await provider.acancel(batch_id)  # no task has run a step yet
    assert (await provider.apoll(batch_id)).status == "ended"
    assert [r.status for r in await provider.aresults(batch_id)] == ["canceled"] * 3


# -- 2. LangChain: non-text content is refused, not dropped -----------------------------------
IMAGE = HumanMessage(
    content=[
        {"type": "text", "text": "what is in this image?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
)


@pytest.mark.parametrize("provider", ["openai", "local"])
def test_an_image_in_a_batch_input_raises_configuration_error(provider: str) -> None:
    model = ScriptedChatModel.from_texts(["x"])
    b = BatchRunnable(model, provider=provider, model="gpt-4o-mini", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"image_url.*through the chat model itself"):
        b.request_of("0", [IMAGE])
    with pytest.raises(ConfigurationError, match="image_url"):
        b.batch([[IMAGE]])


def test_text_blocks_and_an_answers_tool_use_blocks_still_batch() -> None:
    model = ScriptedChatModel.from_texts(["x"])
    b = BatchRunnable(model, provider="openai", model="gpt-4o-mini", progress=False)
    answer = AIMessage(
        content=[
            {"type": "text", "text": "let me look"},
            {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}},
        ],
        tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "t1"}],
    )
    text = HumanMessage(content=[{"type": "text", "text": "weather in Paris?"}])
    request = b.request_of("0", [text, answer])
    body = json.loads(openai_jsonl_line(request))["body"]
    assert body["messages"][0]["content"] == "weather in Paris?"
    assert body["messages"][1]["tool_calls"][0]["id"] == "t1"


# -- 3. LlamaIndex: tool calls of the history reach the wire, images are refused --------------
HISTORY = [
    ChatMessage(role=MessageRole.USER, content="weather in Paris?"),
    ChatMessage(
        role=MessageRole.ASSISTANT,
        content="",
        additional_kwargs={
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ]
        },
    ),
    ChatMessage(
        role=MessageRole.TOOL, content="18C sunny", additional_kwargs={"tool_call_id": "call_1"}
    ),
    ChatMessage(
        role=MessageRole.ASSISTANT,
        blocks=[
            ToolCallBlock(tool_call_id="call_2", tool_name="weather", tool_kwargs={"city": "Rome"})
        ],
    ),
    ChatMessage(role=MessageRole.TOOL, content="25C", additional_kwargs={"tool_call_id": "call_2"}),
]


def test_llamaindex_tool_calls_of_both_forms_reach_the_openai_batch_line() -> None:
    runner = BatchRunner(ScriptedLLM.from_texts(["x"]), provider="openai", progress=False)
    messages = json.loads(openai_jsonl_line(runner.chat_request("0", HISTORY)))["body"]["messages"]
    first, second = messages[1], messages[3]
    assert first["tool_calls"][0]["id"] == "call_1"
    assert first["tool_calls"][0]["function"]["name"] == "weather"
    assert second["tool_calls"][0]["id"] == "call_2"
    assert json.loads(second["tool_calls"][0]["function"]["arguments"]) == {"city": "Rome"}
    assert [m.get("tool_call_id") for m in messages if m["role"] == "tool"] == ["call_1", "call_2"]


def test_llamaindex_local_round_trip_keeps_the_tool_calls() -> None:
    back = [to_chat_message(to_message(m)) for m in HISTORY]
    assert back[1].additional_kwargs["tool_calls"][0]["id"] == "call_1"
    [block] = [b for b in back[3].blocks if isinstance(b, ToolCallBlock)]
    assert (block.tool_call_id, block.tool_name, block.tool_kwargs) == (
        "call_2",
        "weather",
        {"city": "Rome"},
    )
    assert back[4].additional_kwargs["tool_call_id"] == "call_2"


@pytest.mark.parametrize("provider", ["openai", "local"])
def test_llamaindex_image_raises_configuration_error(provider: str) -> None:
    runner = BatchRunner(ScriptedLLM.from_texts(["x"]), provider=provider, progress=False)  # type: ignore[arg-type]
    image = ChatMessage(
        role=MessageRole.USER,
        blocks=[TextBlock(text="what is this?"), ImageBlock(url="https://example.com/cat.png")],
    )
    with pytest.raises(ConfigurationError, match=r"ImageBlock.*through the LLM itself"):
        runner.chat_request("0", [image])


# -- 4. one retry budget: the job's max_attempts, transient errors only -----------------------
class Failing(BaseChatModel):
    model_name: str = "gpt-4o-mini"
    error: Any = None
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "failing"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kw: Any) -> ChatResult:
        self.calls += 1
        raise self.error


@pytest.mark.parametrize("attempts", [1, 3])
def test_a_non_transient_error_is_tried_once(attempts: int) -> None:
    model = Failing(error=ValueError("400 context_length_exceeded"))
    b = BatchRunnable(
        model, engine=budget_engine(), progress=False, max_attempts=attempts, poll_interval_s=0.01
    )
    [out] = b.batch(["too long"], return_exceptions=True)
    assert isinstance(out, BatchRequestError)
    assert model.calls == 1
    assert not out.result.retryable


@pytest.mark.parametrize("attempts", [1, 3])
def test_a_transient_error_is_tried_max_attempts_times(attempts: int) -> None:
    model = Failing(error=TimeoutError("read timed out"))
    b = BatchRunnable(
        model, engine=budget_engine(), progress=False, max_attempts=attempts, poll_interval_s=0.01
    )
    [out] = b.batch(["q"], return_exceptions=True)
    assert isinstance(out, BatchRequestError)
    assert model.calls == attempts


class _Status(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"HTTP {code}")
        self.status_code = code


class RateLimitError(Exception):
    pass


class _Response:
    status_code = 503


class _WithResponse(Exception):
    response = _Response()


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (_Status(429), True),
        (_Status(500), True),
        (_Status(408), True),
        (_WithResponse(), True),
        (RateLimitError(), True),
        (_Status(400), False),
        (_Status(404), False),
        (ValueError("bad"), False),
        (KeyError("x"), False),
    ],
)
def test_transient_error(exc: BaseException, transient: bool) -> None:
    from costopt_core.batch.local import transient_error

    assert transient_error(exc) is transient


def test_a_local_provider_built_directly_retries_transient_errors_only() -> None:
    calls: list[str] = []

    def chat(request: BatchRequest) -> str:
        calls.append(request.id)
        raise (TimeoutError("slow") if request.id == "t" else ValueError("bad"))

    provider = LocalBatchProvider(chat, max_retries=2)
    job = BatchJob(
        provider, ":memory:", engine=budget_engine(), poll_interval_s=0.01, max_attempts=1
    )
    requests: Sequence[BatchRequest] = [
        BatchRequest(id=i, model="gpt-4o-mini", messages=(Message("user", "x"),))
        for i in ("t", "v")
    ]
    t, v = job.run(requests)
    assert (t.retryable, v.retryable) == (True, False)
    assert sorted(calls) == ["t", "t", "t", "v"]
