"""Provider prefix caching for LangChain chat models: cache markers, never new text.

The layout decisions are the engine's (:func:`costopt_core.context.prefix.plan_prefix_cache`);
this module only writes them in LangChain's conventions:

* Anthropic (``langchain_anthropic.ChatAnthropic``, recognised by class name
  or ``_llm_type`` so the package need not be installed): a breakpoint is
  ``{"cache_control": {"type": "ephemeral"}}`` on the message's last content
  block (a string content becomes one text block with the very same text),
  and on the last tool definition (``ChatAnthropic`` passes the key of an
  Anthropic-format tool dict through to the API).
* OpenAI (``ChatOpenAI``/``AzureChatOpenAI``): ``prompt_cache_key=...`` is
  passed as a call keyword, which ``ChatOpenAI`` forwards to the API.

Message text stays byte-identical and messages are never reordered here (a
late system message is a caller's choice in LangChain); markers the caller
already placed count against Anthropic's limit of 4. The saving itself is
booked by the cost handler from the ``cache_read`` tokens the provider
reports (lever ``provider_cache``); nothing is recorded here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.runnables.base import RunnableSerializable
from pydantic import ConfigDict, Field, ValidationError

from costopt_core.context.prefix import (
    ANTHROPIC_MAX_BREAKPOINTS,
    PrefixPlan,
    Provider,
    plan_prefix_cache,
    provider_for,
)
from costopt_core.engine import CostEngine, current_engine
from costopt_core.errors import check_arguments, config_error
from langchain_costopt import _calls
from langchain_costopt._convert import from_langchain_messages
from langchain_costopt.callbacks import run_tenant

__all__ = [
    "PrefixCacheOptimizer",
    "PrefixCachedChatModel",
    "add_cache_control",
    "detect_provider",
    "with_prefix_cache",
]

log = logging.getLogger("costopt.prefix")

CacheTTL = Literal["5m", "1h"]
_OPENAI_LLM_TYPES = ("openai-chat", "azure-openai-chat")


def detect_provider(model: Any) -> Provider | None:
    """Whose prefix cache a LangChain chat model uses, without importing provider packages."""
    cls = type(model).__name__
    llm_type = str(getattr(model, "_llm_type", "") or "")
    if "Anthropic" in cls or llm_type.startswith("anthropic"):
        return "anthropic"
    if "OpenAI" in cls or llm_type in _OPENAI_LLM_TYPES:
        return "openai"
    return provider_for(model_name_of(model))


def model_name_of(model: Any) -> str | None:
    """The model name a LangChain chat model sends (``model`` or ``model_name``)."""
    for attr in ("model", "model_name", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return None


def _marker(ttl: CacheTTL | None) -> dict[str, str]:
    return {"type": "ephemeral"} if ttl in (None, "5m") else {"type": "ephemeral", "ttl": ttl}


def _existing_markers(messages: Sequence[BaseMessage], tools: Sequence[Any]) -> int:
    count = sum(1 for t in tools if isinstance(t, Mapping) and "cache_control" in t)
    for m in messages:
        if isinstance(m.content, list):
            count += sum(1 for b in m.content if isinstance(b, dict) and "cache_control" in b)
    return count


def _last_block_marked(content: Any) -> bool:
    if not isinstance(content, list) or not content:
        return False
    last = content[-1]
    return isinstance(last, dict) and "cache_control" in last


def _mark_message(message: BaseMessage, marker: dict[str, str]) -> BaseMessage:
    """A copy of ``message`` with ``marker`` on its last content block; text unchanged."""
    content = message.content
    if isinstance(content, str):
        if not content:
            return message  # Anthropic drops empty text blocks: nothing to mark
        blocks: list[Any] = [{"type": "text", "text": content, "cache_control": marker}]
    else:
        blocks = list(content)
        for i in range(len(blocks) - 1, -1, -1):
            block = blocks[i]
            if isinstance(block, str):
                if not block:
                    continue
                blocks[i] = {"type": "text", "text": block, "cache_control": marker}
                break
            if isinstance(block, dict) and block.get("type") and block.get("text", None) != "":
                blocks[i] = {**block, "cache_control": marker}
                break
        else:
            return message
    return message.model_copy(update={"content": blocks})


def add_cache_control(
    messages: Sequence[BaseMessage],
    plan: PrefixPlan,
    *,
    tools: Sequence[Any] = (),
    ttl: CacheTTL | None = None,
) -> tuple[list[BaseMessage], list[Any]]:
    """Write ``plan``'s Anthropic breakpoints into LangChain messages and tool dicts.

    ``plan`` must have been made for these messages without reordering
    (``hoist_system=False``, ``move_volatile=False``), so its indices match.

    Returns:
        Copies of the messages and tools; marked ones are new objects, the
        rest are the originals.
    """
    marker = _marker(ttl)
    out = list(messages)
    for i in plan.breakpoint_messages:
        out[i] = _mark_message(out[i], marker)
    marked_tools = list(tools)
    if plan.cache_tools and marked_tools and isinstance(marked_tools[-1], Mapping):
        marked_tools[-1] = {**marked_tools[-1], "cache_control": marker}
    return out, marked_tools


def _plan(
    messages: Sequence[BaseMessage],
    tools: Sequence[Any],
    *,
    model: str | None,
    provider: Provider | None,
    namespace: str | None,
    engine: CostEngine,
) -> PrefixPlan:
    tool_dicts = [t for t in tools if isinstance(t, Mapping)]
    allowed = max(0, ANTHROPIC_MAX_BREAKPOINTS - _existing_markers(messages, tools))
    marked = [i for i, m in enumerate(messages) if _last_block_marked(m.content)]
    plan = plan_prefix_cache(
        from_langchain_messages(messages),
        tool_dicts,
        model=model,
        provider=provider or "auto",
        counter=engine.tokens,
        namespace=namespace,
        hoist_system=False,
        max_breakpoints=allowed,
        marked_messages=marked,
        tools_marked=bool(tools)
        and isinstance(tools[-1], Mapping)
        and "cache_control" in tools[-1],
    )
    if plan.volatile:
        log.debug("volatile text in the static prefix: %s", [v.text for v in plan.volatile])
    return plan


def _to_messages(value: LanguageModelInput) -> list[BaseMessage]:
    if isinstance(value, PromptValue):
        return value.to_messages()
    if isinstance(value, str):
        return convert_to_messages([value])
    return convert_to_messages(value)


class PrefixCacheOptimizer(RunnableSerializable[LanguageModelInput, list[BaseMessage]]):
    """An LCEL step that adds Anthropic ``cache_control`` breakpoints to messages.

    Put it between the prompt and the model; it places breakpoints at the end
    of the system prompt and of the stable history when those prefixes reach
    ``model``'s minimum cacheable length. For tools and for OpenAI's
    ``prompt_cache_key`` (a call parameter, not message content) wrap the
    model instead: :func:`with_prefix_cache`.

    Args:
        model: the model the messages go to (its minimum cacheable length).
        ttl: cache lifetime: ``"5m"`` (default) or ``"1h"``.
        engine: supplies the token counter; the default engine if omitted.

    Example:
        >>> chain = prompt | PrefixCacheOptimizer(model="claude-sonnet-4-5") | llm  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str
    ttl: CacheTTL = "5m"
    engine: CostEngine | None = Field(default=None, exclude=True)

    def __init__(self, **kwargs: Any) -> None:
        check_arguments("PrefixCacheOptimizer", kwargs, type(self))
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise config_error("PrefixCacheOptimizer", exc) from None

    def transform_messages(self, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
        """The messages with breakpoints added (non-Anthropic models: unchanged)."""
        if provider_for(self.model) != "anthropic":
            return list(messages)
        plan = _plan(
            messages,
            (),
            model=self.model,
            provider="anthropic",
            namespace=None,
            engine=self.engine or current_engine(),
        )
        return add_cache_control(messages, plan, ttl=self.ttl)[0]

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[BaseMessage]:
        return self._call_with_config(
            lambda value: self.transform_messages(_to_messages(value)), input, config
        )

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[BaseMessage]:
        return self.invoke(input, config, **kwargs)


class PrefixCachedChatModel(_calls.RunAwareChatModel):
    """Wraps a chat model so the provider's prefix cache hits more often.

    Anthropic models get ``cache_control`` breakpoints (end of tools, end of
    system prompt, end of stable history; at most 4, only above the model's
    minimum cacheable length); OpenAI models get a ``prompt_cache_key``
    derived from the static prefix and the tenant. Other models pass through
    unchanged. Message text is never altered.

    Args:
        model: the chat model to call.
        provider: ``"anthropic"``, ``"openai"`` or ``"auto"`` (class, then model name).
        ttl: Anthropic cache lifetime, ``"5m"`` or ``"1h"``.
        namespace: mixed into OpenAI's key; the current tenant
            (``costopt_core.tenant_scope``) when omitted.
        engine: supplies the token counter; the default engine if omitted.
        temperature, max_tokens, stop: defaults for every call of the wrapped
            model(s); a call's own values win (see ``RunAwareChatModel``).

    Example:
        >>> llm = with_prefix_cache(ChatAnthropic(model="claude-sonnet-4-5"))  # doctest: +SKIP
        >>> llm.invoke([("system", long_policy), ("human", "Where is my order?")])  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: BaseChatModel
    provider: Provider | Literal["auto"] = "auto"
    ttl: CacheTTL = "5m"
    namespace: str | None = None
    engine: CostEngine | None = Field(default=None, exclude=True)

    def __init__(self, **kwargs: Any) -> None:
        check_arguments("PrefixCachedChatModel", kwargs, type(self), wraps_models=True)
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise config_error("PrefixCachedChatModel", exc) from None

    @property
    def _llm_type(self) -> str:
        return f"costopt-prefix-{self.model._llm_type}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model._identifying_params}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        stop = self._fill_defaults(stop, kwargs)
        params = self.model._get_ls_params(stop=stop, **kwargs)
        if kwargs.get("model"):
            params["ls_model_name"] = kwargs["model"]
        return params

    @property
    def resolved_provider(self) -> Provider | None:
        """The provider whose cache this wrapper targets."""
        return detect_provider(self.model) if self.provider == "auto" else self.provider

    def bind_tools(
        self, tools: Sequence[Any], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools as the wrapped model would; the last one gets a breakpoint if it pays."""
        bound = self.model.bind_tools(tools, **kwargs)
        if not isinstance(bound, RunnableBinding):
            raise NotImplementedError(f"{type(self.model).__name__}.bind_tools is not a binding")
        return self.bind(**bound.kwargs)

    def prepare(
        self,
        messages: list[BaseMessage],
        kwargs: dict[str, Any],
        run: _calls.Run | None = None,
    ) -> tuple[list[BaseMessage], dict[str, Any], PrefixPlan | None]:
        """The messages and call keywords to send, and the plan behind them.

        Args:
            messages: the call's messages.
            kwargs: the call's keywords.
            run: the call's run; its metadata tenant namespaces OpenAI's key
                (as the cost handler books the call) unless ``namespace`` is set.
        """
        provider = self.resolved_provider
        if provider is None:
            return messages, kwargs, None
        tools = list(kwargs.get("tools") or ())
        namespace = run_tenant(getattr(run, "metadata", None), own=self.namespace)
        plan = _plan(
            messages,
            tools,
            model=model_name_of(self.model),
            provider=provider,
            namespace=namespace,
            engine=self.engine or current_engine(),
        )
        out = dict(kwargs)
        if provider == "anthropic":
            messages, marked = add_cache_control(messages, plan, tools=tools, ttl=self.ttl)
            if tools:
                out["tools"] = marked
        elif plan.prompt_cache_key is not None:
            out.setdefault("prompt_cache_key", plan.prompt_cache_key)
        return messages, out, plan

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        run, stop = self._call_of(run_manager, stop, kwargs)
        sent, call_kwargs, _ = self.prepare(messages, kwargs, run)
        return self.model._generate(sent, stop=stop, **call_kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        run, stop = self._call_of(run_manager, stop, kwargs)
        sent, call_kwargs, _ = self.prepare(messages, kwargs, run)
        return await self.model._agenerate(sent, stop=stop, **call_kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        run, stop = self._call_of(run_manager, stop, kwargs)
        sent, call_kwargs, _ = self.prepare(messages, kwargs, run)
        for chunk in self.model._stream(sent, stop=stop, **call_kwargs):
            if run_manager and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        run, stop = self._call_of(run_manager, stop, kwargs)
        sent, call_kwargs, _ = self.prepare(messages, kwargs, run)
        async for chunk in self.model._astream(sent, stop=stop, **call_kwargs):
            if run_manager and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


def with_prefix_cache(model: BaseChatModel, **kwargs: Any) -> PrefixCachedChatModel:
    """``model`` wrapped in :class:`PrefixCachedChatModel` (keywords as its fields)."""
    return PrefixCachedChatModel(model=model, **kwargs)
