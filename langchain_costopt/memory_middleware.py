"""``SummarizingMemoryMiddleware``: the summarizing memory as a LangChain v1 agent middleware.

LangChain's own ``SummarizationMiddleware`` rewrites the agent's message
state (the summarized turns are removed for good) and does it in
``before_model``. This one never touches the messages: it wraps the model
call, sends the engine's bounded view instead of the full list, and keeps
the memory state (summaries, key facts) in a private key of the agent state,
so the checkpointer the agent already has persists it with the thread.

Needs the ``langchain`` package (``langchain>=1.0``); it is imported here
only, so ``langchain_costopt.memory`` works without it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NotRequired

from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
    PrivateStateAttr,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langgraph.types import Command

from costopt_core.engine import CostEngine
from costopt_core.memory import MemoryConfig, MemoryState
from langchain_costopt.memory import MemoryResult, abounded_view, bounded_view, memory_options

__all__ = ["STATE_KEY", "SummarizingMemoryMiddleware", "SummarizingMemoryState"]

#: Key of the agent state that holds the memory state (``MemoryState.to_dict()``).
STATE_KEY = "costopt_memory"


def _any(messages: list[BaseMessage]) -> list[Any]:
    # ModelRequest types its messages as the AnyMessage union; these are the same objects.
    return messages


class SummarizingMemoryState(AgentState[Any]):
    """The agent state plus the memory state, private to this middleware."""

    costopt_memory: NotRequired[Annotated[dict[str, Any] | None, PrivateStateAttr]]


class SummarizingMemoryMiddleware(AgentMiddleware[SummarizingMemoryState, Any]):
    """Sends each agent model call a bounded, summarized view of the conversation.

    Before every model call the turns that left the window are folded into
    the summary when a flush is due, then the call gets: the agent's system
    prompt (untouched), one summary message (changes only at a flush, so the
    provider's prefix cache survives), recalled older sentences, and the
    recent turns verbatim (a tool call is never split from its results). The
    agent's ``messages`` state keeps every message; the memory state is saved
    under the private state key ``costopt_memory`` when a flush changes it.
    Each model call records the tokens its view kept out as ``memory`` savings.

    Args:
        config: budgets and policy (``MemoryConfig()`` by default).
        engine: token counter, prices and ledger; the process default if None.
        model: the conversation model: picks the tokenizer, prices the
            flush-or-keep-the-cached-prefix trade-off, labels the records.
        summarizer: a cheap chat model that writes the summaries; extractive
            summaries (no model call) if None.
        summarizer_model: the summarizer's model name (read from the model if omitted).
        tenant: tenant of the ledger records; otherwise the run's (its
            metadata's ``costopt_tenant``, as the cost handler reads it), else
            ``tenant_scope``'s.
        record_savings: record the tokens each view keeps out of a call.
        record_summarizer_costs: price the summarizer's calls into the ledger.

    Example:
        >>> from langchain.agents import create_agent  # doctest: +SKIP
        >>> agent = create_agent(model, tools, middleware=[SummarizingMemoryMiddleware()],
        ...                      checkpointer=InMemorySaver())  # doctest: +SKIP
    """

    state_schema = SummarizingMemoryState

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        engine: CostEngine | None = None,
        model: str | None = None,
        summarizer: BaseChatModel | None = None,
        summarizer_model: str | None = None,
        tenant: str | None = None,
        record_savings: bool = True,
        record_summarizer_costs: bool = True,
    ) -> None:
        super().__init__()
        self._options = memory_options(
            config,
            engine,
            model,
            summarizer,
            summarizer_model,
            record_savings,
            record_summarizer_costs,
            tenant,
            owner=type(self).__name__,
        )

    @property
    def config(self) -> MemoryConfig:
        return self._options.config

    @staticmethod
    def _inputs(request: ModelRequest[Any]) -> tuple[list[BaseMessage], MemoryState]:
        saved: Any = (request.state or {}).get(STATE_KEY)
        return list(request.messages), MemoryState.from_dict(saved)

    @staticmethod
    def _request(request: ModelRequest[Any], result: MemoryResult) -> ModelRequest[Any]:
        return request.override(messages=_any(result.messages))

    @staticmethod
    def _result(
        response: ModelResponse[Any], result: MemoryResult
    ) -> ModelResponse[Any] | ExtendedModelResponse[Any]:
        if not result.flushed:
            return response
        command: Command[Any] = Command(update={STATE_KEY: result.state.to_dict()})
        return ExtendedModelResponse(model_response=response, command=command)

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any] | ExtendedModelResponse[Any]:
        """Fold old turns if due, then call the model with the bounded view."""
        result = bounded_view(self._options, *self._inputs(request))
        return self._result(handler(self._request(request, result)), result)

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any] | ExtendedModelResponse[Any]:
        """Async twin of :meth:`wrap_model_call`."""
        result = await abounded_view(self._options, *self._inputs(request))
        return self._result(await handler(self._request(request, result)), result)
