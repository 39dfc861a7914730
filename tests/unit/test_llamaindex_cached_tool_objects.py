"""``CachedLLM``: served tool calls of integrations that keep the SDK's tool-call objects.

Several llama-index-llms-* integrations put the provider SDK's tool-call
objects (OpenAI's ``ChatCompletionMessageToolCall``, Cohere's ``ToolCall``,
Mistral's ...) in ``message.additional_kwargs["tool_calls"]`` and read them
back with an ``isinstance`` check. A served answer went through JSON: those
objects come back as dicts, which such a reader refuses (or skips). The
wrapper then reads the tool calls of a served answer from their neutral form;
a fresh answer is still the wrapped LLM's to read.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.tools import FunctionTool
from openai.types.chat import ChatCompletionMessageToolCall
from openai.types.chat.chat_completion_message_tool_call import Function
from pydantic import BaseModel

from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.testing import FakeEmbedder
from llamaindex_costopt.cached_llm import CachedLLM
from tests.fakes.llamaindex_tools import ToolLLM

ARGS = {"a": 3, "b": 4}


class CohereLikeToolCall(BaseModel):
    """An SDK tool call without an id, its arguments as ``parameters`` (Cohere's shape)."""

    name: str
    parameters: dict[str, Any]


class SdkToolLLM(ToolLLM):
    """A function-calling LLM whose answers hold SDK tool-call objects in ``additional_kwargs``.

    ``sdk``: ``"openai"`` (``ChatCompletionMessageToolCall``, arguments as JSON
    text) or ``"cohere"`` (:class:`CohereLikeToolCall`). ``reader``:
    ``"strict"`` raises on a tool call of another class, as those integrations
    do; ``"lenient"`` skips it. ``n_calls`` tool calls per answer, cut to the
    first when parallel calls are not allowed (as OpenAI's integration does).
    """

    sdk: str = "openai"
    reader: str = "strict"
    n_calls: int = 1

    def _respond(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        self._calls += 1
        self.seen_tools.append(kwargs.get("tools"))
        if messages[-1].role != MessageRole.USER:
            return ChatMessage(role=MessageRole.ASSISTANT, content=self.answer)
        calls: list[Any] = []
        for i in range(self.n_calls):
            args = {"a": self.args["a"] + i, "b": self.args["b"]}
            if self.sdk == "openai":
                fn = Function(name="multiply", arguments=json.dumps(args))
                call_id = f"call_{self._calls}_{i}"
                calls.append(
                    ChatCompletionMessageToolCall(id=call_id, type="function", function=fn)
                )
            else:
                calls.append(CohereLikeToolCall(name="multiply", parameters=args))
        return ChatMessage(
            role=MessageRole.ASSISTANT, content="", additional_kwargs={"tool_calls": calls}
        )

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[Any],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        calls = response.message.additional_kwargs.get("tool_calls", [])
        if not allow_parallel_tool_calls and len(calls) > 1:
            response.message.additional_kwargs["tool_calls"] = [calls[0]]
        return response

    def get_tool_calls_from_response(
        self, response: Any, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        tool_calls = response.message.additional_kwargs.get("tool_calls", [])
        if len(tool_calls) < 1:
            if error_on_no_tool_call:
                raise ValueError("Expected at least one tool call")
            return []
        cls = ChatCompletionMessageToolCall if self.sdk == "openai" else CohereLikeToolCall
        out = []
        for tool_call in tool_calls:
            if not isinstance(tool_call, cls):
                if self.reader == "lenient":
                    continue
                raise ValueError("Invalid tool_call object")
            if isinstance(tool_call, ChatCompletionMessageToolCall):
                selection = ToolSelection(
                    tool_id=tool_call.id,
                    tool_name=tool_call.function.name,
                    tool_kwargs=json.loads(tool_call.function.arguments),
                )
            else:
                selection = ToolSelection(
                    tool_id=uuid.uuid4().hex,
                    tool_name=tool_call.name,
                    tool_kwargs=tool_call.parameters,
                )
            out.append(selection)
        return out


def wrap(inner: SdkToolLLM) -> CachedLLM:
    return CachedLLM(llm=inner, semantic_cache=CacheEngine(embedder=FakeEmbedder(dim=256)))


def tool_and_calls() -> tuple[FunctionTool, list[tuple[int, int]]]:
    calls: list[tuple[int, int]] = []

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        calls.append((a, b))
        return a * b

    return FunctionTool.from_defaults(multiply), calls


@pytest.mark.parametrize("sdk", ["openai", "cohere"])
@pytest.mark.parametrize("reader", ["strict", "lenient"])
def test_predict_and_call_runs_a_served_answers_sdk_tool_call(sdk: str, reader: str) -> None:
    inner = SdkToolLLM(sdk=sdk, reader=reader)
    llm = wrap(inner)
    tool, calls = tool_and_calls()
    outs = [str(llm.predict_and_call([tool], user_msg="What is 3 times 4?")) for _ in range(2)]
    assert outs == ["12", "12"]
    assert inner.calls == 1  # the second was served
    assert calls == [(3, 4), (3, 4)]  # and its tool call read and run


@pytest.mark.parametrize("sdk", ["openai", "cohere"])
async def test_apredict_and_call_runs_a_served_answers_sdk_tool_call(sdk: str) -> None:
    inner = SdkToolLLM(sdk=sdk)
    llm = wrap(inner)
    tool, calls = tool_and_calls()
    outs = [str(await llm.apredict_and_call([tool], user_msg="What is 3 times 4?")) for _ in "ab"]
    assert outs == ["12", "12"]
    assert inner.calls == 1
    assert calls == [(3, 4), (3, 4)]


def test_a_served_tool_call_keeps_its_id_and_arguments() -> None:
    inner = SdkToolLLM()
    llm = wrap(inner)
    tool, _ = tool_and_calls()
    fresh = llm.chat_with_tools([tool], user_msg="What is 3 times 4?")
    served = llm.chat_with_tools([tool], user_msg="What is 3 times 4?")
    assert inner.calls == 1
    expected = [ToolSelection(tool_id="call_1_0", tool_name="multiply", tool_kwargs=ARGS)]
    assert llm.get_tool_calls_from_response(fresh) == expected
    assert llm.get_tool_calls_from_response(served) == expected


@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize("sdk", ["openai", "cohere"])
async def test_a_function_agent_runs_a_served_sdk_tool_call(streaming: bool, sdk: str) -> None:
    from llama_index.core.agent.workflow import FunctionAgent

    inner = SdkToolLLM(sdk=sdk)
    llm = wrap(inner)
    calls: list[tuple[int, int]] = []
    answers = []
    for _ in range(2):
        tool, run = tool_and_calls()
        agent = FunctionAgent(tools=[tool], llm=llm, streaming=streaming)
        answers.append(str(await agent.run("What is 3 times 4?")))
        calls += run
    assert answers == ["The product is 12."] * 2
    # The second run was served: tool call, then answer. A tool call without an
    # id gets a new one each time it is read, so the tool result that follows
    # is a new message and the answer to it is asked again.
    assert inner.calls == (2 if sdk == "openai" else 3)
    assert calls == [(3, 4), (3, 4)]


async def test_a_replayed_stream_ends_with_readable_tool_calls() -> None:
    inner = SdkToolLLM()
    llm = wrap(inner)
    tool, _ = tool_and_calls()
    llm.chat_with_tools([tool], user_msg="What is 3 times 4?")
    chunks = list(llm.stream_chat_with_tools([tool], user_msg="What is 3 times 4?"))
    achunks = [
        c async for c in await llm.astream_chat_with_tools([tool], user_msg="What is 3 times 4?")
    ]
    assert inner.calls == 1
    for last in (chunks[-1], achunks[-1]):
        selections = llm.get_tool_calls_from_response(last, error_on_no_tool_call=False)
        assert [(s.tool_name, s.tool_kwargs) for s in selections] == [("multiply", ARGS)]


def test_a_served_answer_cut_to_one_tool_call_gives_one() -> None:
    inner = SdkToolLLM(n_calls=2)
    llm = wrap(inner)
    tool, calls = tool_and_calls()
    for _ in range(2):
        assert str(llm.predict_and_call([tool], user_msg="What is 3 times 4?")) == "12"
    assert inner.calls == 1
    assert calls == [(3, 4), (3, 4)]
    parallel = llm.predict_and_call(
        [tool], user_msg="What is 3 times 4?", allow_parallel_tool_calls=True
    )
    assert str(parallel) == "12\n\n16"  # both calls, when parallel calls are allowed


def test_a_served_answer_without_tool_calls_still_has_none() -> None:
    inner = SdkToolLLM()
    llm = wrap(inner)
    history = [
        ChatMessage(role=MessageRole.USER, content="What is 3 times 4?"),
        ChatMessage(role=MessageRole.TOOL, content="12"),
    ]
    llm.chat(history)
    served = llm.chat(history)
    assert inner.calls == 1 and served.message.content == "The product is 12."
    assert llm.get_tool_calls_from_response(served, error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="Expected at least one tool call"):
        llm.get_tool_calls_from_response(served)


def test_an_answer_the_cache_did_not_serve_is_the_wrapped_llms_to_read() -> None:
    llm = wrap(SdkToolLLM())
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "multiply", "arguments": json.dumps(ARGS)},
    }
    message = ChatMessage(
        role=MessageRole.ASSISTANT, content="", additional_kwargs={"tool_calls": [call]}
    )
    with pytest.raises(ValueError, match="Invalid tool_call object"):
        llm.get_tool_calls_from_response(ChatResponse(message=message))
