"""``SummarizingMemory``: a LlamaIndex memory whose reads are a bounded, summarized view.

For chat engines (``SimpleChatEngine``, ``ContextChatEngine``, ...) and
agents (``FunctionAgent.run(..., memory=...)``). Every message is stored in
the user's ``BaseChatStore`` unchanged; ``get`` returns the view of the
engine of ``costopt_core.memory``: the system prompts untouched and first,
one summary message that changes only at a flush (so the provider's prefix
cache survives between flushes), older sentences recalled for the input,
and the recent turns verbatim (a tool call is never split from its
results). This module only translates ``ChatMessage`` objects and keeps
the engine's state in the same chat store, under a second key.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, field_validator
from llama_index.core.llms.llm import LLM
from llama_index.core.memory.types import DEFAULT_CHAT_STORE_KEY, BaseChatStoreMemory
from llama_index.core.storage.chat_store import BaseChatStore, SimpleChatStore
from pydantic import ValidationError

from costopt_core.checks import check_engine
from costopt_core.engine import CostEngine
from costopt_core.errors import ConfigurationError, check_arguments, config_error
from costopt_core.memory import (
    ConversationMemory,
    FlushResult,
    MemoryConfig,
    MemoryState,
    MemoryView,
    message_fingerprint,
)
from costopt_core.memory.conversation import FlushLock, flush_failed_on_read
from costopt_core.types import Message, Role
from llamaindex_costopt.handler import (
    PricingBlock,
    engine_for,
    pricing_scope,
    resolve_tenant,
    usage_of,
)

__all__ = [
    "STATE_KEY_SUFFIX",
    "SummarizingMemory",
    "from_llamaindex_message",
    "to_llamaindex_message",
]

#: The memory state is kept in the chat store under ``chat_store_key + STATE_KEY_SUFFIX``.
STATE_KEY_SUFFIX = "::costopt_memory"
#: ``additional_kwargs`` marker of the chat-store message that holds the memory state.
_STATE_MARKER = "costopt_memory_state"

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


# -- translation --------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump") and callable(value.model_dump):
        value = value.model_dump(mode="json")
    return json.loads(json.dumps(value, default=str))


def from_llamaindex_message(m: ChatMessage) -> Message:
    """A LlamaIndex message as the engine's ``Message`` (tool calls from
    ``additional_kwargs["tool_calls"]`` and ``ToolCallBlock`` blocks alike)."""
    kwargs = m.additional_kwargs or {}
    role = m.role.value if isinstance(m.role, MessageRole) else str(m.role)
    calls = [_jsonable(c) for c in kwargs.get("tool_calls") or ()]
    calls += [
        {"id": b.tool_call_id, "name": b.tool_name, "args": _jsonable(b.tool_kwargs)}
        for b in m.blocks
        if isinstance(b, ToolCallBlock)
    ]
    name = kwargs.get("name")
    call_id = kwargs.get("tool_call_id")
    return Message(
        role=_ROLES.get(role, "user"),
        content=m.content or "",
        name=name if isinstance(name, str) else None,
        tool_calls=tuple(calls),
        tool_call_id=str(call_id) if call_id is not None else None,
    )


def to_llamaindex_message(message: Message) -> ChatMessage:
    """A message the memory wrote (summary, recall, summarizer prompt) as a ``ChatMessage``."""
    return ChatMessage(role=MessageRole(message.role), content=message.content)


def _assemble(view: MemoryView, originals: Sequence[ChatMessage]) -> list[ChatMessage]:
    # History turns go out as the stored objects (blocks, ids and kwargs intact).
    return [originals[p] if isinstance(p, int) else to_llamaindex_message(p) for p in view.parts]


def _history_key(history: Sequence[Message]) -> tuple[int, str | None]:
    return len(history), message_fingerprint(history[-1]) if history else None


def _state_of(messages: Sequence[ChatMessage]) -> MemoryState:
    for m in reversed(messages):
        if not (m.additional_kwargs or {}).get(_STATE_MARKER):
            continue
        try:
            data = json.loads(m.content or "")
        except ValueError:
            continue
        if isinstance(data, dict):
            return MemoryState.from_dict(data)
    # Nothing (readable) saved yet: the next flush rebuilds the summary from the history.
    return MemoryState()


def _state_entry(state: MemoryState) -> ChatMessage:
    return ChatMessage(
        role=MessageRole.SYSTEM,
        content=state.to_json(),
        additional_kwargs={_STATE_MARKER: True},
    )


class SummarizingMemory(BaseChatStoreMemory):
    """Chat memory with a flat token cost per turn: summary + recall + recent turns.

    Writes (``put``, ``put_messages``, ``set``) store the messages in
    ``chat_store`` under ``chat_store_key`` unchanged, then fold old turns
    into the summary when a flush is due (in large batches, not every turn).
    ``get(input=...)`` returns the view to send; it writes nothing but, when
    it must, the memory state: a read that would leave out turns no summary
    covers (the first read of a long stored conversation with no saved state)
    applies the flush that is due first and saves it, as the next write would.
    ``get_all`` returns the full stored history.

    The memory state (summaries, key facts) is stored in the same chat store
    under ``state_key`` (``chat_store_key + "::costopt_memory"`` by default)
    as one message, so it persists wherever the history does (Redis,
    Postgres, a persisted ``SimpleChatStore``). If it is missing or belongs
    to another history it is ignored, and the next flush rebuilds it.

    Savings: each view that the model answered is recorded as ``memory``
    savings once it has: a ``get`` is recorded when an assistant message is
    stored after it (chat engines store the answer, agents their steps), so
    a read that is not sent (an agent's final read) is not counted, and an
    agent's several model calls over one history are each counted.

    Args:
        chat_store: where the messages live (``SimpleChatStore()`` by default).
        chat_store_key: the conversation's key in ``chat_store``.
        state_key: the key of the memory state (see above).
        config: budgets and policy (``MemoryConfig()`` by default).
        engine: token counter, prices and ledger; if None, the engine of the
            ``CostEventHandler`` that records the calls made here (a
            ``track_costs`` block's, else an attached one's), else the
            current engine (see :func:`~llamaindex_costopt.handler.engine_for`). The savings and the
            summarizer's calls are recorded in that one ledger.
        model: the conversation model: picks the tokenizer, prices the
            flush-or-keep-the-cached-prefix trade-off, labels the records.
        summarizer: a cheap LlamaIndex LLM that writes the summaries;
            extractive summaries (no model call) if None.
        summarizer_model: the summarizer's model name where its answers name
            none (its metadata's if omitted).
        tenant: tenant of the ledger records; otherwise
            the one :func:`~llamaindex_costopt.handler.resolve_tenant` finds (instrument tags,
            ``track_costs``, ``tenant_scope``, the recording handler's).
        record_savings: record the tokens each view keeps out of a call.
        record_summarizer_costs: price the summarizer's calls into the ledger,
            as the memory's ``overhead`` (a ``CostEventHandler`` on the same
            engine records them once; other handlers record them too).

    Example:
        >>> memory = SummarizingMemory.from_defaults(model="gpt-4o-mini")  # doctest: +SKIP
        >>> engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory)  # doctest: +SKIP
        >>> await agent.run("Hi, I'm Ana", memory=memory)  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    state_key: str | None = None
    config: MemoryConfig = Field(default_factory=MemoryConfig)
    engine: CostEngine | None = Field(default=None, exclude=True)
    model: str | None = None
    summarizer: LLM | None = Field(default=None, exclude=True)
    summarizer_model: str | None = None
    tenant: str | None = None
    record_savings: bool = True
    record_summarizer_costs: bool = True

    _state: MemoryState = PrivateAttr(default_factory=MemoryState)
    _pending: list[MemoryView] = PrivateAttr(default_factory=list)
    _pending_key: tuple[int, str | None] | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    # Held from loading the state to saving it, by update() and aupdate() alike,
    # so concurrent writers of one conversation flush once.
    _flush_lock: FlushLock = PrivateAttr(default_factory=FlushLock)

    def __init__(self, **kwargs: Any) -> None:
        check_arguments("SummarizingMemory", kwargs, type(self))
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise config_error("SummarizingMemory", exc) from None

    _check_engine = field_validator("engine", mode="before")(check_engine)

    @field_validator("config", mode="before")
    @classmethod
    def _check_config(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, MemoryConfig):
            raise ConfigurationError(
                f"config must be a costopt_core.memory.MemoryConfig, got {type(value).__name__}; "
                "build one with MemoryConfig(window_tokens=..., ...)"
            )
        return value if value is not None else MemoryConfig()

    @classmethod
    def class_name(cls) -> str:
        return "costopt_SummarizingMemory"

    @classmethod
    def from_defaults(
        cls,
        chat_history: list[ChatMessage] | None = None,
        llm: LLM | None = None,
        *,
        chat_store: BaseChatStore | None = None,
        chat_store_key: str = DEFAULT_CHAT_STORE_KEY,
        token_limit: int | None = None,
        tokenizer_fn: Any = None,
        **kwargs: Any,
    ) -> SummarizingMemory:
        """A memory over ``chat_store`` (a new ``SimpleChatStore`` if None).

        Args:
            chat_history: messages to start with (replace what the store holds).
            llm: the conversation LLM; its model name is ``model`` unless given.
            chat_store, chat_store_key: where the messages live.
            token_limit, tokenizer_fn: taken as ``ChatMemoryBuffer.from_defaults``
                takes them, for LlamaIndex's chat engines (``memory_cls=``), which
                pass the model's context window; this memory's view is bounded
                by its own budgets (``config``) and tokenizer (``model``) instead.
            **kwargs: the other fields (``config``, ``engine``, ``summarizer``, ...).
        """
        if llm is not None and kwargs.get("model") is None:
            kwargs["model"] = llm.metadata.model_name or None
        memory = cls(
            chat_store=chat_store or SimpleChatStore(), chat_store_key=chat_store_key, **kwargs
        )
        if chat_history is not None:
            memory.set(chat_history)
        return memory

    # -- wiring ----------------------------------------------------------------
    @property
    def memory_state_key(self) -> str:
        """The chat-store key of the memory state."""
        return self.state_key or f"{self.chat_store_key}{STATE_KEY_SUFFIX}"

    @property
    def state(self) -> MemoryState:
        """The memory state as last loaded or written by this object."""
        return self._state

    def _engine(self) -> CostEngine:
        # Where the summarizer's calls are recorded too (pricing_scope adds no
        # second record there), so the memory lever nets out in that ledger.
        return engine_for(self.engine)

    def _summarizer_functions(
        self, tenant: str | None
    ) -> tuple[Callable[[list[Message]], str], Callable[[list[Message]], Awaitable[str]]] | None:
        llm = self.summarizer
        if llm is None:
            return None
        engine = self._engine()
        hint = self.summarizer_model or llm.metadata.model_name

        def priced() -> AbstractContextManager[PricingBlock | None]:
            # Recorded as any handler records a call (a router's tier, a cache's
            # hit), into this engine even with no handler attached.
            if not self.record_summarizer_costs:
                return nullcontext()
            return pricing_scope(engine, tenant=tenant, model_hint=hint)

        def unseen(block: PricingBlock | None, response: Any) -> None:
            # An LLM that sends no instrumentation events (a custom chat()
            # without LlamaIndex's callback decorator): priced from its answer.
            if block is not None and not block.recorded():
                engine.record_call(
                    model=hint or "unknown",
                    usage=usage_of(response),
                    tenant=tenant,
                    framework="llamaindex",
                )

        def chat(messages: list[Message]) -> str:
            with priced() as block:
                response = llm.chat([to_llamaindex_message(m) for m in messages])
                unseen(block, response)
            return response.message.content or ""

        async def achat(messages: list[Message]) -> str:
            with priced() as block:
                response = await llm.achat([to_llamaindex_message(m) for m in messages])
                unseen(block, response)
            return response.message.content or ""

        return chat, achat

    def _memory(self, state: MemoryState) -> ConversationMemory:
        tenant = resolve_tenant(self.tenant)
        fns = self._summarizer_functions(tenant)
        return ConversationMemory(
            self.config,
            state=state,
            engine=self._engine(),
            model=self.model,
            summarizer=fns[0] if fns else None,
            asummarizer=fns[1] if fns else None,
            summarizer_model=self.summarizer_model
            or (self.summarizer.metadata.model_name if self.summarizer else None),
            record_savings=self.record_savings,
            tenant=tenant,
            framework="llamaindex",
        )

    def _load_state(self) -> MemoryState:
        self._state = _state_of(self.chat_store.get_messages(self.memory_state_key))
        return self._state

    async def _aload_state(self) -> MemoryState:
        self._state = _state_of(await self.chat_store.aget_messages(self.memory_state_key))
        return self._state

    # -- savings: a view counts once the model has answered it -------------------
    def _hold(self, history: Sequence[Message], view: MemoryView) -> None:
        if not self.record_savings:
            return
        key = _history_key(history)
        with self._lock:
            if key != self._pending_key:
                # A read of an older history that nothing answered was never sent.
                self._pending = []
                self._pending_key = key
            self._pending.append(view)

    def _answered(self, messages: Sequence[ChatMessage]) -> None:
        if not any(from_llamaindex_message(m).role == "assistant" for m in messages):
            return
        with self._lock:
            views, self._pending, self._pending_key = self._pending, [], None
        if not views:
            return
        memory = self._memory(self._state)
        for view in views:
            memory.record(view)

    # -- reads -------------------------------------------------------------------
    def _read(self) -> tuple[list[ChatMessage], list[Message], ConversationMemory]:
        """The stored history and a memory whose view of it loses no turn.

        The engine says when the view would leave out turns no summary covers
        (``read_needs_flush``); the due flush then runs first, through
        :meth:`update` (locked, saved: a concurrent writer's flush is not
        repeated, and the next write does not pay for it again).
        """
        originals = self.chat_store.get_messages(self.chat_store_key)
        full = [from_llamaindex_message(m) for m in originals]
        memory = self._memory(self._load_state())
        if not memory.read_needs_flush(full):
            return originals, full, memory
        try:
            self.update()
        except Exception as exc:  # the summarizer down must not fail the user's call
            flush_failed_on_read(exc)
            return originals, full, memory
        originals = self.chat_store.get_messages(self.chat_store_key)
        full = [from_llamaindex_message(m) for m in originals]
        return originals, full, self._memory(self._load_state())

    async def _aread(self) -> tuple[list[ChatMessage], list[Message], ConversationMemory]:
        """Async twin of :meth:`_read`."""
        originals = await self.chat_store.aget_messages(self.chat_store_key)
        full = [from_llamaindex_message(m) for m in originals]
        memory = self._memory(await self._aload_state())
        if not memory.read_needs_flush(full):
            return originals, full, memory
        try:
            await self.aupdate()
        except Exception as exc:
            flush_failed_on_read(exc)
            return originals, full, memory
        originals = await self.chat_store.aget_messages(self.chat_store_key)
        full = [from_llamaindex_message(m) for m in originals]
        return originals, full, self._memory(await self._aload_state())

    def get(self, input: str | None = None, **kwargs: Any) -> list[ChatMessage]:
        """The bounded view to send; ``input`` (the new message) drives recall.

        Keyword arguments of other memories (``initial_token_count``) are
        accepted and ignored: the view's bound is the config's.
        """
        originals, full, memory = self._read()
        view = memory.view(full, query=input or None)
        self._hold(full, view)
        return _assemble(view, originals)

    async def aget(self, input: str | None = None, **kwargs: Any) -> list[ChatMessage]:
        """Async twin of :meth:`get`."""
        originals, full, memory = await self._aread()
        view = await memory.aview(full, query=input or None)
        self._hold(full, view)
        return _assemble(view, originals)

    def view(self, input: str | None = None) -> MemoryView:
        """The engine's view of the stored history (token counts, summary, flush state).

        Nothing is recorded; the state is written only by the flush a read
        must apply first (see the class docstring), so it is what :meth:`get`
        sends.
        """
        _, full, memory = self._read()
        return memory.view(full, query=input or None)

    # -- writes ------------------------------------------------------------------
    def update(self, *, force: bool = False) -> FlushResult:
        """Flush if one is due (or ``force``) and save the state; the history is untouched."""
        # Two writers that both loaded the state before either saved it flushed
        # the same turns twice (the summarizer paid twice).
        with self._flush_lock:
            full = [from_llamaindex_message(m) for m in self.get_all()]
            result = self._memory(self._load_state()).update(full, force=force)
            self._state = result.state
            if result.flushed:
                self.chat_store.set_messages(self.memory_state_key, [_state_entry(result.state)])
            return result

    async def aupdate(self, *, force: bool = False) -> FlushResult:
        """Async twin of :meth:`update`."""
        async with self._flush_lock.async_lock():
            full = [from_llamaindex_message(m) for m in await self.aget_all()]
            result = await self._memory(await self._aload_state()).aupdate(full, force=force)
            self._state = result.state
            if result.flushed:
                state = [_state_entry(result.state)]
                await self.chat_store.aset_messages(self.memory_state_key, state)
            return result

    def put(self, message: ChatMessage) -> None:
        """Store ``message`` unchanged, then flush old turns if one is due."""
        self.chat_store.add_message(self.chat_store_key, message)
        self._answered([message])
        self.update()

    async def aput(self, message: ChatMessage) -> None:
        """Async twin of :meth:`put`."""
        await self.chat_store.async_add_message(self.chat_store_key, message)
        self._answered([message])
        await self.aupdate()

    def put_messages(self, messages: list[ChatMessage]) -> None:
        """Store ``messages`` unchanged, then flush once if one is due."""
        for m in messages:
            self.chat_store.add_message(self.chat_store_key, m)
        self._answered(messages)
        self.update()

    async def aput_messages(self, messages: list[ChatMessage]) -> None:
        """Async twin of :meth:`put_messages`."""
        for m in messages:
            await self.chat_store.async_add_message(self.chat_store_key, m)
        self._answered(messages)
        await self.aupdate()

    def set(self, messages: list[ChatMessage]) -> None:
        """Replace the stored history (a state for the old one is then ignored)."""
        self.chat_store.set_messages(self.chat_store_key, messages)
        self.update()

    async def aset(self, messages: list[ChatMessage]) -> None:
        """Async twin of :meth:`set`."""
        await self.chat_store.aset_messages(self.chat_store_key, messages)
        await self.aupdate()

    def reset(self) -> None:
        """Delete the stored history and the memory state."""
        self.chat_store.delete_messages(self.chat_store_key)
        self.chat_store.delete_messages(self.memory_state_key)
        with self._lock:
            self._state, self._pending, self._pending_key = MemoryState(), [], None

    async def areset(self) -> None:
        """Async twin of :meth:`reset`."""
        await self.chat_store.adelete_messages(self.chat_store_key)
        await self.chat_store.adelete_messages(self.memory_state_key)
        with self._lock:
            self._state, self._pending, self._pending_key = MemoryState(), [], None
