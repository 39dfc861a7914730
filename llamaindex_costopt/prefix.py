"""Provider prefix caching for LlamaIndex LLMs: cache markers, never new text.

The layout decisions are the engine's (:func:`costopt_core.context.prefix.plan_prefix_cache`);
this module writes them in LlamaIndex's conventions:

* Anthropic (``llama_index.llms.anthropic.Anthropic``): a breakpoint is a
  ``CachePoint`` content block (``llama_index.core.base.llms.types``)
  appended to the message; the Anthropic integration turns it into
  ``cache_control`` on the block before it, system messages included.
* OpenAI (``llama_index.llms.openai.OpenAI``): ``prompt_cache_key=...`` is
  passed as a call keyword, which the integration forwards to the API.

Text blocks are never altered and messages never reordered. Tools given to
``FunctionCallingLLM.chat_with_tools`` are outside this wrapper (it is a plain
``LLM``): the system breakpoint still caches them, since Anthropic places
tools before the system prompt. The saving is booked by the cost handler
from the ``cache_read`` tokens the provider reports (lever
``provider_cache``); nothing is recorded here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from llama_index.core.base.llms.types import (
    CacheControl,
    CachePoint,
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms import LLM
from pydantic import Field, ValidationError

from costopt_core.context.prefix import (
    ANTHROPIC_MAX_BREAKPOINTS,
    PrefixPlan,
    Provider,
    plan_prefix_cache,
    provider_for,
)
from costopt_core.engine import CostEngine, current_engine
from costopt_core.errors import check_arguments, config_error
from costopt_core.types import Message, Role
from llamaindex_costopt._structured import MarksStructured
from llamaindex_costopt.cached_llm import adopt_prompt_settings
from llamaindex_costopt.handler import resolve_tenant

__all__ = ["PrefixCachedLLM", "add_cache_points", "detect_provider", "prefix_cache_plan"]

CacheTTL = Literal["5m", "1h"]
_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "chatbot": "assistant",
    "model": "assistant",
    "tool": "tool",
    "function": "tool",
}


def detect_provider(llm: Any) -> Provider | None:
    """Whose prefix cache a LlamaIndex LLM uses: its class name, then its model name."""
    try:
        name = str(llm.class_name()).lower()
    except Exception:  # not every object is a LlamaIndex component
        name = type(llm).__name__.lower()
    if "anthropic" in name:
        return "anthropic"
    if "openai" in name:
        return "openai"
    return provider_for(_model_name(llm))


def _model_name(llm: Any) -> str | None:
    try:
        return str(llm.metadata.model_name)
    except Exception:
        value = getattr(llm, "model", None)
        return value if isinstance(value, str) else None


def _message(m: ChatMessage) -> Message:
    role = m.role.value if isinstance(m.role, MessageRole) else str(m.role)
    return Message(role=_ROLES.get(role, "user"), content=m.content or "")


def _marked(m: ChatMessage) -> bool:
    return bool(m.blocks) and isinstance(m.blocks[-1], CachePoint)


def prefix_cache_plan(
    messages: Sequence[ChatMessage],
    *,
    model: str | None,
    provider: Provider | Literal["auto"] = "auto",
    namespace: str | None = None,
    engine: CostEngine | None = None,
) -> PrefixPlan:
    """The engine's plan for ``messages`` as they stand (no reordering, no text moved).

    ``CachePoint`` blocks already in the messages count against Anthropic's
    limit of 4 and are not placed twice.
    """
    existing = sum(1 for m in messages for b in m.blocks if isinstance(b, CachePoint))
    return plan_prefix_cache(
        [_message(m) for m in messages],
        model=model,
        provider=provider,
        counter=(engine or current_engine()).tokens,
        namespace=namespace,
        hoist_system=False,
        max_breakpoints=max(0, ANTHROPIC_MAX_BREAKPOINTS - existing),
        marked_messages=[i for i, m in enumerate(messages) if _marked(m)],
    )


def add_cache_points(
    messages: Sequence[ChatMessage], plan: PrefixPlan, *, ttl: CacheTTL = "5m"
) -> list[ChatMessage]:
    """Copies of the planned messages with a ``CachePoint`` block appended; others as given."""
    out = list(messages)
    for i in plan.breakpoint_messages:
        m = out[i]
        if not m.blocks:
            continue  # a CachePoint needs a block before it
        point = CachePoint(cache_control=CacheControl(type="ephemeral", ttl=ttl))
        out[i] = m.model_copy(update={"blocks": [*m.blocks, point]})
    return out


class PrefixCachedLLM(MarksStructured, LLM):
    """Wraps a LlamaIndex LLM so the provider's prefix cache hits more often.

    Chat calls to Anthropic models get ``CachePoint`` breakpoints at the end
    of the system prompt and of the stable history (at most 4 in all, only
    above the model's minimum cacheable length); OpenAI models get a
    ``prompt_cache_key`` derived from the system prompt and the tenant.
    Completion calls and other models pass through unchanged. The wrapped
    LLM emits the instrumentation events, so a call is still one call.

    Args:
        llm: the LLM to call.
        provider: ``"anthropic"``, ``"openai"`` or ``"auto"`` (class, then model name).
        ttl: Anthropic cache lifetime, ``"5m"`` or ``"1h"``.
        namespace: mixed into OpenAI's key; the current tenant when omitted.
        engine: supplies the token counter; the default engine if omitted.

    Example:
        >>> llm = PrefixCachedLLM(llm=Anthropic(model="claude-sonnet-4-5"))  # doctest: +SKIP
        >>> llm.chat([ChatMessage(role="system", content=policy), question])  # doctest: +SKIP
    """

    llm: LLM = Field(description="The wrapped LLM.")
    provider: Provider | Literal["auto"] = "auto"
    ttl: CacheTTL = "5m"
    namespace: str | None = None
    engine: CostEngine | None = Field(default=None, exclude=True)

    def __init__(self, **kwargs: Any) -> None:
        check_arguments("PrefixCachedLLM", kwargs, type(self), wraps_models=True)
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise config_error("PrefixCachedLLM", exc) from None

    def model_post_init(self, context: Any) -> None:
        # What llm.predict would send to llm (see adopt_prompt_settings).
        super().model_post_init(context)
        adopt_prompt_settings(self, self.llm)

    @classmethod
    def class_name(cls) -> str:
        return "costopt_prefix_cached_llm"

    @property
    def metadata(self) -> LLMMetadata:
        """The wrapped LLM's metadata, except function calling (this is a plain ``LLM``)."""
        return self.llm.metadata.model_copy(update={"is_function_calling_model": False})

    @property
    def resolved_provider(self) -> Provider | None:
        """The provider whose cache this wrapper targets."""
        return detect_provider(self.llm) if self.provider == "auto" else self.provider

    def prepare(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> tuple[list[ChatMessage], dict[str, Any]]:
        """The messages and call keywords to send."""
        provider = self.resolved_provider
        if provider is None:
            return list(messages), kwargs
        # The tenant the cache and the ledger use (track_costs' included), so that
        # tenants never share a provider cache key.
        namespace = resolve_tenant(self.namespace)
        plan = prefix_cache_plan(
            messages,
            model=_model_name(self.llm),
            provider=provider,
            namespace=namespace,
            engine=self.engine,
        )
        if provider == "anthropic":
            return add_cache_points(messages, plan, ttl=self.ttl), kwargs
        out = dict(kwargs)
        if plan.prompt_cache_key is not None:
            out.setdefault("prompt_cache_key", plan.prompt_cache_key)
        return list(messages), out

    # -- chat ----------------------------------------------------------------------
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        sent, call_kwargs = self.prepare(messages, kwargs)
        return self.llm.chat(sent, **call_kwargs)

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        sent, call_kwargs = self.prepare(messages, kwargs)
        return await self.llm.achat(sent, **call_kwargs)

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        sent, call_kwargs = self.prepare(messages, kwargs)
        return self.llm.stream_chat(sent, **call_kwargs)

    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        sent, call_kwargs = self.prepare(messages, kwargs)
        return await self.llm.astream_chat(sent, **call_kwargs)

    # -- completion: one prompt string, nothing to mark ------------------------------
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self.llm.complete(prompt, formatted=formatted, **kwargs)

    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return await self.llm.acomplete(prompt, formatted=formatted, **kwargs)

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        return self.llm.stream_complete(prompt, formatted=formatted, **kwargs)

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        return await self.llm.astream_complete(prompt, formatted=formatted, **kwargs)
