"""Summarizing conversation memory for LangChain: a bounded view instead of the whole history.

Three entry points over the one engine of ``costopt_core.memory``:

* :class:`SummarizingChatMessageHistory` wraps any ``BaseChatMessageHistory``
  (in memory, Redis, SQL, ...) for ``RunnableWithMessageHistory``: writes go
  to the wrapped store unchanged, reads return the engine's view (system
  prompts, one stable summary message, recalled sentences, the recent turns).
* :func:`summarize_messages` / :func:`asummarize_messages`: the same view of
  a plain message list, with the state passed in and returned.
* :class:`SummarizingMemoryTransform`: that function as an LCEL step
  (``prompt | transform | model``), one state per session.

The agent middleware lives in ``langchain_costopt.memory_middleware`` (it
needs the ``langchain`` package). Decisions are the engine's; this module
only turns LangChain messages into engine messages and back, and keeps the
engine's :class:`~costopt_core.memory.MemoryState` next to the history.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    BaseCallbackManager,
    CallbackManagerForChainRun,
)
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    BaseMessage,
    HumanMessage,
    SystemMessage,
    convert_to_messages,
)
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config, merge_configs

from costopt_core.checks import check_engine
from costopt_core.engine import CostEngine
from costopt_core.errors import ConfigurationError
from costopt_core.memory import (
    ConversationMemory,
    FlushResult,
    MemoryConfig,
    MemoryState,
    MemoryView,
    message_fingerprint,
)
from costopt_core.memory.conversation import FlushLock, flush_failed_on_read
from costopt_core.types import Message
from langchain_costopt._convert import from_langchain_messages, to_langchain_message
from langchain_costopt.callbacks import CostCallbackHandler, _tracking, engine_for, run_tenant

__all__ = [
    "STATE_MESSAGE_NAME",
    "MemoryResult",
    "SummarizingChatMessageHistory",
    "SummarizingMemoryTransform",
    "asummarize_messages",
    "summarize_messages",
]

#: ``name`` of the sidecar messages that hold the serialised memory state.
STATE_MESSAGE_NAME = "costopt_memory_state"
#: Tag of the summarizer's own model calls (so traces and cost reports can tell them apart).
SUMMARIZER_TAG = "costopt:memory-summarizer"
# The sidecar is append-only (a crash mid-write never loses the last good
# state); it is compacted to its last entry once it holds this many.
_SIDECAR_MAX_ENTRIES = 8


# -- translation --------------------------------------------------------------


def assemble(view: MemoryView, originals: Sequence[BaseMessage]) -> list[BaseMessage]:
    """The messages to send: the user's own stored objects for history turns, new ones for
    what the memory wrote (so ids, metadata and multimodal content of turns survive)."""
    return [originals[p] if isinstance(p, int) else to_langchain_message(p) for p in view.parts]


def _model_name(model: BaseChatModel | None) -> str | None:
    if model is None:
        return None
    for attr in ("model_name", "model"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return None


def _prices_calls(callbacks: Any, engine: CostEngine) -> bool:
    """Whether ``callbacks`` (a list or a manager) already price calls into ``engine``."""
    if isinstance(callbacks, BaseCallbackManager):
        handlers = [*callbacks.handlers, *callbacks.inheritable_handlers]
    else:
        handlers = list(callbacks or ())
    tracking = _tracking.get()
    if tracking is not None:
        handlers.append(tracking)
    return any(isinstance(h, CostCallbackHandler) and h.engine is engine for h in handlers)


def _summarizer_config(
    engine: CostEngine | None, tenant: str | None, record_costs: bool
) -> RunnableConfig:
    # Inside a chain or an agent the summarizer's call is a child of the
    # current run: it keeps the caller's callbacks (tracing, their cost
    # handler), and is priced here only when none of them prices it already.
    inherited = ensure_config()
    extra: RunnableConfig = {"tags": [SUMMARIZER_TAG], "run_name": "costopt_memory_summarizer"}
    if tenant is not None:
        extra["metadata"] = {"costopt_tenant": tenant}
    # The ledger the memory books its savings in (MemoryOptions.memory).
    target = engine_for(engine, inherited.get("callbacks"))
    if record_costs and not _prices_calls(inherited.get("callbacks"), target):
        extra["callbacks"] = [CostCallbackHandler(target, check_budgets=False)]
    return merge_configs(inherited, extra)


def summarizer_functions(
    model: BaseChatModel,
    *,
    engine: CostEngine | None = None,
    tenant: str | None = None,
    record_costs: bool = True,
) -> tuple[Callable[[list[Message]], str], Callable[[list[Message]], Awaitable[str]]]:
    """The engine's ``summarizer`` / ``asummarizer`` callables over a LangChain chat model.

    With ``record_costs`` each summarizer call is priced into ``engine``'s
    ledger by a ``CostCallbackHandler``, unless the callbacks of the current
    run (or a ``track_costs`` block) already price into that engine. Turn it
    off when the model itself carries such a handler, or it is counted twice.
    """

    def prompt(messages: list[Message]) -> tuple[list[BaseMessage], RunnableConfig]:
        config = _summarizer_config(engine, tenant, record_costs)
        return [to_langchain_message(m) for m in messages], config

    def chat(messages: list[Message]) -> str:
        lc_messages, config = prompt(messages)
        return model.invoke(lc_messages, config=config).text

    async def achat(messages: list[Message]) -> str:
        lc_messages, config = prompt(messages)
        return (await model.ainvoke(lc_messages, config=config)).text

    return chat, achat


def _history_key(history: Sequence[Message]) -> tuple[int, str | None]:
    """Identifies a stored history (its length and last message) for once-per-view records."""
    return len(history), message_fingerprint(history[-1]) if history else None


@dataclass
class MemoryOptions:
    """What every entry point needs to build the engine's ``ConversationMemory``."""

    config: MemoryConfig
    engine: CostEngine | None
    model: str | None
    summarizer: BaseChatModel | None
    summarizer_model: str | None
    record_savings: bool
    record_summarizer_costs: bool
    tenant: str | None

    def memory(self, state: MemoryState | None) -> ConversationMemory:
        # The run's tenant and ledger, as the cost handler books the run's model
        # calls: every entry point runs inside the caller's runnable (the LCEL
        # transform, the history RunnableWithMessageHistory reads and writes, the
        # agent's model node), whose config ensure_config() returns, a handler
        # passed only in a call's config included.
        run = ensure_config()
        tenant = run_tenant(run.get("metadata"), own=self.tenant)
        # One engine for the savings and the summarizer's calls: the summarizer
        # is priced there (by the run's handler, or one added for it), so the
        # memory lever (savings minus that overhead) nets out in one ledger.
        engine = engine_for(self.engine, run.get("callbacks"))
        chat = achat = None
        if self.summarizer is not None:
            chat, achat = summarizer_functions(
                self.summarizer,
                engine=engine,
                tenant=tenant,
                record_costs=self.record_summarizer_costs,
            )
        return ConversationMemory(
            self.config,
            state=state,
            engine=engine,
            model=self.model,
            summarizer=chat,
            asummarizer=achat,
            summarizer_model=self.summarizer_model or _model_name(self.summarizer),
            record_savings=self.record_savings,
            tenant=tenant,
            framework="langchain",
        )


def memory_options(
    config: MemoryConfig | None,
    engine: CostEngine | None,
    model: str | None,
    summarizer: BaseChatModel | None,
    summarizer_model: str | None,
    record_savings: bool,
    record_summarizer_costs: bool,
    tenant: str | None,
    *,
    owner: str = "summarizing memory",
) -> MemoryOptions:
    """The checked settings of a memory entry point (``owner`` names it in errors).

    Raises:
        ConfigurationError: ``config``, ``engine`` or ``summarizer`` is of the
            wrong kind (refused here, not at the first message).
    """
    try:
        check_engine(engine)
    except ConfigurationError as exc:
        raise ConfigurationError(f"invalid {owner}: engine={engine!r}: {exc}") from None
    if config is not None and not isinstance(config, MemoryConfig):
        raise ConfigurationError(
            f"config must be a costopt_core.memory.MemoryConfig, got {type(config).__name__}; "
            "build one with MemoryConfig(window_tokens=..., ...)"
        )
    if summarizer is not None and not isinstance(summarizer, BaseChatModel):
        raise ConfigurationError(
            f"summarizer must be a LangChain chat model (BaseChatModel), got "
            f"{type(summarizer).__name__}; pass e.g. ChatOpenAI(model='gpt-4o-mini') or None "
            "for extractive summaries"
        )
    return MemoryOptions(
        config=config or MemoryConfig(),
        engine=engine,
        model=model,
        summarizer=summarizer,
        summarizer_model=summarizer_model,
        record_savings=record_savings,
        record_summarizer_costs=record_summarizer_costs,
        tenant=tenant,
    )


# -- one call's steps around the engine -------------------------------------------
@dataclass(frozen=True)
class MemoryResult:
    """What :func:`summarize_messages` returns.

    Attributes:
        messages: the messages to send.
        state: the memory state to pass to the next call (persist it with
            ``state.to_dict()`` / ``MemoryState.from_dict``).
        view: the engine's view (token counts, summary, recall, flush decision).
        flushed: whether this call folded turns into the summary.
    """

    messages: list[BaseMessage]
    state: MemoryState
    view: MemoryView
    flushed: bool


@dataclass(frozen=True)
class _Call:
    """One call's inputs: the caller's messages, the same as engine messages, and the memory."""

    originals: Sequence[BaseMessage]
    full: list[Message]
    memory: ConversationMemory


def _prepare(
    options: MemoryOptions, originals: Sequence[BaseMessage], state: MemoryState | None
) -> _Call:
    return _Call(originals, from_langchain_messages(originals), options.memory(state))


def _finish(call: _Call, flush: FlushResult, view: MemoryView) -> MemoryResult:
    return MemoryResult(assemble(view, call.originals), call.memory.state, view, flush.flushed)


def bounded_view(
    options: MemoryOptions, originals: Sequence[BaseMessage], state: MemoryState | None
) -> MemoryResult:
    """Folds old turns if a flush is due, then the view to send (recorded as sent).

    The one sequence behind :func:`summarize_messages`, the LCEL transform and
    the agent middleware.
    """
    call = _prepare(options, originals, state)
    flush = call.memory.update(call.full)
    return _finish(call, flush, call.memory.view(call.full, record=True))


async def abounded_view(
    options: MemoryOptions, originals: Sequence[BaseMessage], state: MemoryState | None
) -> MemoryResult:
    """Async twin of :func:`bounded_view`."""
    call = _prepare(options, originals, state)
    flush = await call.memory.aupdate(call.full)
    return _finish(call, flush, await call.memory.aview(call.full, record=True))


# -- the sidecar ----------------------------------------------------------------
def _state_from_sidecar(messages: Sequence[BaseMessage]) -> MemoryState:
    for m in reversed(messages):
        if m.name != STATE_MESSAGE_NAME or not isinstance(m.content, str):
            continue
        try:
            data = json.loads(m.content)
        except ValueError:
            continue
        if isinstance(data, dict):
            return MemoryState.from_dict(data)
    # Nothing (readable) saved yet: the next flush rebuilds the summary from the history.
    return MemoryState()


def _sidecar_entry(state: MemoryState) -> SystemMessage:
    return SystemMessage(content=state.to_json(), name=STATE_MESSAGE_NAME)


# -- the chat history wrapper ---------------------------------------------------
class SummarizingChatMessageHistory(BaseChatMessageHistory):
    """Any ``BaseChatMessageHistory`` whose reads are a bounded, summarized view of it.

    For ``RunnableWithMessageHistory`` (whose ``get_session_history`` returns
    one of these around the user's store). ``add_messages`` appends to the
    wrapped store unchanged, so the full history is never lost, then folds
    old turns into the summary when a flush is due (in large batches, not
    every turn). ``messages`` returns what the model should see: the system
    prompts untouched and first, one summary message that changes only at a
    flush (so the provider's prefix cache survives between flushes), recalled
    older sentences, and the recent turns verbatim (a tool call is never
    split from its results). Reading writes nothing but, when it must, the
    memory state: a read that would leave out turns no summary covers (the
    first read of a long stored conversation with no saved state) applies the
    flush that is due first and saves it, as the next write would have.

    The memory state (summaries, key facts) persists through ``state_store``:
    a second ``BaseChatMessageHistory`` of the user's own backend (e.g. the
    same Redis/SQL class under the session id ``f"{session_id}:memory"``).
    It receives one small message per flush (JSON of the state, ``name`` =
    :data:`STATE_MESSAGE_NAME`) and is compacted to the last one now and
    then; the latest entry wins. Without a ``state_store`` the state lives on
    this object (keep one wrapper per session) and a new wrapper rebuilds it
    from the full history at its first flush. A state that no longer matches
    the history (history edited or cleared elsewhere) is ignored, never trusted.

    Each distinct stored history read is recorded once as ``memory`` savings
    (``RunnableWithMessageHistory`` reads ``messages`` twice per call when
    it has no ``history_messages_key``; the second read is the same view).

    Recall looks for the latest *stored* user message: the history cannot see
    the message being sent. Use :class:`SummarizingMemoryTransform` to recall
    for the new message itself.

    Args:
        history: the store that keeps every message.
        config: budgets and policy (``MemoryConfig()`` by default).
        state_store: where the memory state is kept (see above).
        engine: token counter, prices and ledger; if None, the engine of the
            run's ``CostCallbackHandler`` (one passed in the call's config, or
            the enclosing ``track_costs`` block's), else the current engine.
            The savings and the summarizer's calls are recorded in that one
            ledger, so the memory lever is net of the summarizer's cost there.
        model: the conversation model: picks the tokenizer, prices the
            flush-or-keep-the-cached-prefix trade-off, labels the records.
        summarizer: a cheap chat model that writes the summaries; extractive
            summaries (no model call) if None.
        summarizer_model: the summarizer's model name for the trade-off (read
            from the model if omitted).
        tenant: tenant of the ledger records; otherwise the run's (its
            metadata's ``costopt_tenant``, as the cost handler reads it), else
            ``tenant_scope``'s.
        record_savings: record the tokens each view keeps out of a call.
        record_summarizer_costs: price the summarizer's calls into the ledger
            (off if that model already has a ``CostCallbackHandler`` on this engine).

    Raises:
        ConfigurationError: ``history`` or ``state_store`` is not a chat
            history, or ``engine``, ``config`` or ``summarizer`` is of the
            wrong kind (e.g. ``engine='my-engine'``).

    Example:
        >>> from langchain_core.chat_history import InMemoryChatMessageHistory
        >>> from langchain_core.runnables.history import RunnableWithMessageHistory
        >>> stores = {}
        >>> def session(session_id: str) -> SummarizingChatMessageHistory:
        ...     return SummarizingChatMessageHistory(
        ...         stores.setdefault(session_id, InMemoryChatMessageHistory()),
        ...         state_store=stores.setdefault(session_id + ":memory",
        ...                                       InMemoryChatMessageHistory()),
        ...     )
        >>> chain = RunnableWithMessageHistory(model, session)  # doctest: +SKIP
    """

    def __init__(
        self,
        history: BaseChatMessageHistory,
        *,
        config: MemoryConfig | None = None,
        state_store: BaseChatMessageHistory | None = None,
        engine: CostEngine | None = None,
        model: str | None = None,
        summarizer: BaseChatModel | None = None,
        summarizer_model: str | None = None,
        tenant: str | None = None,
        record_savings: bool = True,
        record_summarizer_costs: bool = True,
    ) -> None:
        if not isinstance(history, BaseChatMessageHistory):
            raise ConfigurationError(
                f"history must be a BaseChatMessageHistory, got {type(history).__name__}; "
                "wrap your store, e.g. SummarizingChatMessageHistory(InMemoryChatMessageHistory())"
            )
        if state_store is not None and not isinstance(state_store, BaseChatMessageHistory):
            raise ConfigurationError(
                f"state_store must be a BaseChatMessageHistory or None, got "
                f"{type(state_store).__name__}; pass a second store of your backend"
            )
        if state_store is history:
            raise ConfigurationError(
                "state_store must not be the wrapped history itself; pass a second store "
                "(e.g. the same backend under the session id f'{session_id}:memory')"
            )
        self.history = history
        self.state_store = state_store
        self._options = memory_options(
            config,
            engine,
            model,
            summarizer,
            summarizer_model,
            record_savings,
            record_summarizer_costs,
            tenant,
            owner="SummarizingChatMessageHistory",
        )
        self._state = MemoryState()
        self._recorded: tuple[int, str | None] | None = None
        self._lock = threading.Lock()
        # Held from loading the state to saving it, by update() and aupdate()
        # alike, so concurrent writers of one session flush once.
        self._flush_lock = FlushLock()

    @property
    def config(self) -> MemoryConfig:
        return self._options.config

    @property
    def state(self) -> MemoryState:
        """The memory state as last loaded or written by this object."""
        return self._state

    # -- reads ---------------------------------------------------------------
    def _load_state(self) -> MemoryState:
        if self.state_store is not None:
            self._state = _state_from_sidecar(self.state_store.messages)
        return self._state

    async def _aload_state(self) -> MemoryState:
        if self.state_store is not None:
            self._state = _state_from_sidecar(await self.state_store.aget_messages())
        return self._state

    def _should_record(self, history: Sequence[Message]) -> bool:
        key = _history_key(history)
        with self._lock:
            if key == self._recorded:
                return False
            self._recorded = key
            return True

    def _read(self) -> _Call:
        """The stored history and a memory whose view of it loses no turn.

        The engine says when the view would leave out turns no summary covers
        (``read_needs_flush``); the due flush then runs first, through
        :meth:`update` (locked, saved: a concurrent writer's flush is not
        repeated, and the next write does not pay for it again).
        """
        call = _prepare(self._options, self.history.messages, self._load_state())
        if not call.memory.read_needs_flush(call.full):
            return call
        try:
            self.update()
        except Exception as exc:  # the summarizer down must not fail the user's call
            flush_failed_on_read(exc)
            return call
        return _prepare(self._options, self.history.messages, self._load_state())

    async def _aread(self) -> _Call:
        """Async twin of :meth:`_read`."""
        originals = await self.history.aget_messages()
        call = _prepare(self._options, originals, await self._aload_state())
        if not call.memory.read_needs_flush(call.full):
            return call
        try:
            await self.aupdate()
        except Exception as exc:
            flush_failed_on_read(exc)
            return call
        originals = await self.history.aget_messages()
        return _prepare(self._options, originals, await self._aload_state())

    def view(self) -> MemoryView:
        """The engine's view of the stored history (token counts, summary, flush state).

        Nothing is recorded; the state is written only by the flush a read
        must apply first (see the class docstring), so it is what
        :attr:`messages` sends.
        """
        call = self._read()
        return call.memory.view(call.full)

    def _sent(self, call: _Call, view: MemoryView) -> list[BaseMessage]:
        if self._should_record(call.full):
            call.memory.record(view)
        return assemble(view, call.originals)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The bounded view to send: system, summary, recalled sentences, recent turns."""
        call = self._read()
        return self._sent(call, call.memory.view(call.full))

    async def aget_messages(self) -> list[BaseMessage]:
        """Async twin of :attr:`messages`."""
        call = await self._aread()
        return self._sent(call, await call.memory.aview(call.full))

    @property
    def full_messages(self) -> list[BaseMessage]:
        """Every stored message, as the wrapped store holds them."""
        return self.history.messages

    # -- writes --------------------------------------------------------------
    def _keep_state(self, result: FlushResult) -> BaseChatMessageHistory | None:
        """Keeps ``result``'s state here; the sidecar to append it to, if a flush changed it."""
        self._state = result.state
        return self.state_store if result.flushed else None

    def _save(self, result: FlushResult) -> None:
        store = self._keep_state(result)
        if store is None:
            return
        if len(store.messages) >= _SIDECAR_MAX_ENTRIES:
            store.clear()
        store.add_messages([_sidecar_entry(result.state)])

    async def _asave(self, result: FlushResult) -> None:
        store = self._keep_state(result)
        if store is None:
            return
        if len(await store.aget_messages()) >= _SIDECAR_MAX_ENTRIES:
            await store.aclear()
        await store.aadd_messages([_sidecar_entry(result.state)])

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` to the wrapped store, then flush old turns if one is due."""
        self.history.add_messages(messages)
        self.update()

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Async twin of :meth:`add_messages`."""
        await self.history.aadd_messages(messages)
        await self.aupdate()

    def update(self, *, force: bool = False) -> FlushResult:
        """Flush if one is due (or ``force``) and save the state; the history is untouched."""
        with self._flush_lock:
            call = _prepare(self._options, self.history.messages, self._load_state())
            result = call.memory.update(call.full, force=force)
            self._save(result)
            return result

    async def aupdate(self, *, force: bool = False) -> FlushResult:
        """Async twin of :meth:`update`."""
        # Serialized as update() is (per event loop): two tasks that both loaded
        # the state before either saved it flushed the same turns twice (the
        # summarizer paid twice, two sidecar entries).
        async with self._flush_lock.async_lock():
            originals = await self.history.aget_messages()
            call = _prepare(self._options, originals, await self._aload_state())
            result = await call.memory.aupdate(call.full, force=force)
            await self._asave(result)
            return result

    def clear(self) -> None:
        """Clear the wrapped store and the memory state."""
        self.history.clear()
        if self.state_store is not None:
            self.state_store.clear()
        self._forget()

    async def aclear(self) -> None:
        """Async twin of :meth:`clear`."""
        await self.history.aclear()
        if self.state_store is not None:
            await self.state_store.aclear()
        self._forget()

    def _forget(self) -> None:
        with self._lock:
            self._state = MemoryState()
            self._recorded = None


# -- the message-list transform ---------------------------------------------------
def _as_messages(value: LanguageModelInput) -> list[BaseMessage]:
    if isinstance(value, PromptValue):
        return value.to_messages()
    if isinstance(value, str):
        return [HumanMessage(content=value)]
    return convert_to_messages(value)


def summarize_messages(
    messages: LanguageModelInput,
    *,
    state: MemoryState | None = None,
    config: MemoryConfig | None = None,
    engine: CostEngine | None = None,
    model: str | None = None,
    summarizer: BaseChatModel | None = None,
    summarizer_model: str | None = None,
    tenant: str | None = None,
    record_savings: bool = True,
    record_summarizer_costs: bool = True,
) -> MemoryResult:
    """The bounded view of a full message list, for the call about to be made.

    Folds old turns into the summary when a flush is due (given ``state``,
    the previous call's state), then lays the call out: system prompts,
    summary, recalled sentences, recent turns. ``messages`` is not modified.
    One ``memory`` savings record per call (the view is assumed to be sent).

    Args:
        messages: the whole conversation (messages, a prompt value or a string).
        state: the previous call's ``MemoryResult.state`` (None: nothing yet).
        config, engine, model, summarizer, summarizer_model, tenant,
        record_savings, record_summarizer_costs: as for
            :class:`SummarizingChatMessageHistory`.

    Example:
        >>> result = summarize_messages(conversation, state=saved)  # doctest: +SKIP
        >>> model.invoke(result.messages); saved = result.state  # doctest: +SKIP
    """
    options = memory_options(
        config,
        engine,
        model,
        summarizer,
        summarizer_model,
        record_savings,
        record_summarizer_costs,
        tenant,
        owner="summarize_messages",
    )
    return bounded_view(options, _as_messages(messages), state)


async def asummarize_messages(
    messages: LanguageModelInput,
    *,
    state: MemoryState | None = None,
    config: MemoryConfig | None = None,
    engine: CostEngine | None = None,
    model: str | None = None,
    summarizer: BaseChatModel | None = None,
    summarizer_model: str | None = None,
    tenant: str | None = None,
    record_savings: bool = True,
    record_summarizer_costs: bool = True,
) -> MemoryResult:
    """Async twin of :func:`summarize_messages`."""
    options = memory_options(
        config,
        engine,
        model,
        summarizer,
        summarizer_model,
        record_savings,
        record_summarizer_costs,
        tenant,
        owner="asummarize_messages",
    )
    return await abounded_view(options, _as_messages(messages), state)


class SummarizingMemoryTransform(Runnable[LanguageModelInput, list[BaseMessage]]):
    """:func:`summarize_messages` as an LCEL step: ``prompt | transform | model``.

    The input is the full conversation (a prompt value or messages); the
    output is the bounded view. The memory state of each conversation is kept
    here, keyed by ``config["configurable"][session_key]`` (one shared state
    when absent), for up to ``max_sessions`` conversations (least recently
    used dropped first; a dropped state is rebuilt at the next flush). For
    state that outlives the process, use :func:`summarize_messages` with your
    own storage or :class:`SummarizingChatMessageHistory`.

    Args:
        config: budgets and policy (``MemoryConfig()`` by default).
        session_key: the ``configurable`` key that names the conversation.
        max_sessions: how many conversation states to keep.
        engine, model, summarizer, summarizer_model, tenant, record_savings,
        record_summarizer_costs: as for :class:`SummarizingChatMessageHistory`.

    Example:
        >>> chain = prompt | SummarizingMemoryTransform(model="gpt-4o-mini") | llm  # doctest: +SKIP
        >>> config = {"configurable": {"session_id": "u1"}}
        >>> chain.invoke({"history": msgs}, config)  # doctest: +SKIP
    """

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        session_key: str = "session_id",
        max_sessions: int = 1024,
        engine: CostEngine | None = None,
        model: str | None = None,
        summarizer: BaseChatModel | None = None,
        summarizer_model: str | None = None,
        tenant: str | None = None,
        record_savings: bool = True,
        record_summarizer_costs: bool = True,
    ) -> None:
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ConfigurationError(f"max_sessions must be an int >= 1, got {max_sessions!r}")
        if not session_key:
            raise ConfigurationError("session_key must be a non-empty configurable key")
        self.session_key = session_key
        self.max_sessions = max_sessions
        self._options = memory_options(
            config,
            engine,
            model,
            summarizer,
            summarizer_model,
            record_savings,
            record_summarizer_costs,
            tenant,
            owner="SummarizingMemoryTransform",
        )
        self._states: OrderedDict[Hashable, MemoryState] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def InputType(self) -> Any:
        return LanguageModelInput

    @property
    def OutputType(self) -> Any:
        return list[BaseMessage]

    def _session(self, config: RunnableConfig | None) -> Hashable:
        value = ((config or {}).get("configurable") or {}).get(self.session_key)
        return value if isinstance(value, Hashable) else repr(value)

    def state_for(self, session: Hashable = None) -> MemoryState:
        """The memory state of ``session`` (the empty state if none is kept)."""
        with self._lock:
            return self._states.get(session, MemoryState())

    def _keep(self, session: Hashable, state: MemoryState) -> None:
        with self._lock:
            self._states[session] = state
            self._states.move_to_end(session)
            while len(self._states) > self.max_sessions:
                self._states.popitem(last=False)

    def _run(
        self,
        value: LanguageModelInput,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> list[BaseMessage]:
        session = self._session(config)
        result = bounded_view(self._options, _as_messages(value), self.state_for(session))
        self._keep(session, result.state)
        return result.messages

    async def _arun(
        self,
        value: LanguageModelInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> list[BaseMessage]:
        session = self._session(config)
        result = await abounded_view(self._options, _as_messages(value), self.state_for(session))
        self._keep(session, result.state)
        return result.messages

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[BaseMessage]:
        return self._call_with_config(self._run, input, config, run_type="chain")

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[BaseMessage]:
        return await self._acall_with_config(self._arun, input, config, run_type="chain")
