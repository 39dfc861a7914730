"""``ConversationMemory``: the thin stateful shell adapters wrap.

It holds the configuration, the current :class:`MemoryState` and the engine
(token counter, embedder, prices, ledger) and calls the pure functions:
:func:`plan_context` to read, :func:`flush` to write. Reads never change the
state (a reader flushes first when :meth:`ConversationMemory.read_needs_flush`
says the view would lose turns); the history itself is the caller's and is
never modified.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

from costopt_core.engine import CostEngine, current_engine
from costopt_core.memory.config import MemoryConfig
from costopt_core.memory.flush import FlushResult, aflush, flush
from costopt_core.memory.plan import MemoryView, aplan_context, plan_context, read_needs_flush
from costopt_core.memory.state import MemoryState
from costopt_core.memory.tradeoff import CachePrices, cache_prices
from costopt_core.types import CallRecord, Message

__all__ = ["ConversationMemory", "FlushLock", "flush_failed_on_read"]

Chat = Callable[[list[Message]], str]
AChat = Callable[[list[Message]], Awaitable[str]]


log = logging.getLogger(__name__)


def flush_failed_on_read(exc: Exception) -> None:
    """Log a flush a read needed that failed (the summarizer down): the read goes on.

    The view then leaves out its oldest turns, as it would with no memory;
    the next read or write tries the flush again.
    """
    log.warning(
        "memory: the flush this read needed failed (%s: %s); sending the view without "
        "its oldest turns, and trying again on the next read or write",
        type(exc).__name__,
        exc,
    )


class FlushLock:
    """Serializes the load-flush-save steps of one stored conversation, sync and async alike.

    Two writers that both load the state before either saves it both flush
    the same turns: the summarizer is paid twice and two states are saved.
    ``with lock:`` serializes threads; ``async with lock.async_lock():``
    serializes the tasks of the running event loop. An ``asyncio.Lock`` is
    bound to the loop that first waits on it, so there is one per loop,
    created at first use (a lock made in one loop would fail in another, e.g.
    across ``asyncio.run`` calls) and dropped with its loop. Holding the
    thread lock across awaits instead would block the loop, and deadlock a
    sync call made from it.
    """

    def __init__(self) -> None:
        self._thread = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def __enter__(self) -> None:
        self._thread.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._thread.release()

    def async_lock(self) -> asyncio.Lock:
        """The lock of the running event loop (call it inside a coroutine)."""
        loop = asyncio.get_running_loop()
        # The thread lock only guards the table: loops in other threads share it.
        with self._thread:
            lock = self._loops.get(loop)
            if lock is None:
                lock = self._loops[loop] = asyncio.Lock()
            return lock


class ConversationMemory:
    """Summarizing memory for one conversation: a bounded view over its full history.

    Typical loop: ``view = memory.view(history)``; send ``view.messages``;
    append the reply to the history; ``memory.update(history)`` (which
    flushes only when one is due). Persist ``memory.state.to_dict()`` next to
    the history to resume later with ``state=MemoryState.from_dict(...)``.
    When :meth:`read_needs_flush` says so (a long history and no state that
    covers it), ``update`` before the view, or it leaves the oldest turns out.

    Args:
        config: budgets and policy (``MemoryConfig()`` by default).
        state: a saved state to resume from.
        engine: token counter, embedder, prices and ledger; the current
            engine (a ``track_costs`` block's inside one), resolved at each use,
            if None. Give it the engine whose ledger records the summarizer's
            calls (the adapters pass their run's cost handler's): the savings
            go there too, so the ``memory`` lever is net of that overhead.
        model: the conversation model; with a price in the catalog, flushes
            between ``flush_min_tokens`` and ``flush_max_tokens`` happen only
            when cheaper than keeping the provider's cached prefix.
        summarizer: a cheap chat model (messages -> text) that writes the
            summaries; extractive summaries (no model call) when ``None``.
            Its calls are priced by whoever records that model's calls (a cost
            handler), as the memory's ``overhead``: into ``engine``'s ledger, so
            that the savings recorded here net out against them.
        asummarizer: async twin of ``summarizer`` (used by ``aupdate``).
        summarizer_model: the summarizer's model name, so the trade-off
            counts what its calls cost.
        record_savings: record the tokens each view keeps out of a call in
            the ledger as ``memory`` savings (when ``record=True``).
        tenant: tenant of the savings records.
        framework: ``langchain`` / ``llamaindex`` label of the savings records.

    Example:
        >>> from costopt_core import CostEngine
        >>> memory = ConversationMemory(MemoryConfig(window_tokens=64), engine=CostEngine())
        >>> history = [Message("user", "Hi, I'm Ana."), Message("assistant", "Hello Ana!")]
        >>> len(memory.view(history).messages)
        2
    """

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        state: MemoryState | None = None,
        engine: CostEngine | None = None,
        model: str | None = None,
        summarizer: Chat | None = None,
        asummarizer: AChat | None = None,
        summarizer_model: str | None = None,
        record_savings: bool = True,
        tenant: str | None = None,
        framework: str | None = None,
    ) -> None:
        self.config = config or MemoryConfig()
        self._state = state or MemoryState()
        self._engine = engine
        self.model = model
        self.summarizer = summarizer
        self.asummarizer = asummarizer
        self.summarizer_model = summarizer_model
        self.record_savings = record_savings
        self.tenant = tenant
        self.framework = framework
        self._lock = threading.Lock()

    @property
    def engine(self) -> CostEngine:
        # Resolved per use, not kept: inside a track_costs block it is the block's engine.
        return self._engine if self._engine is not None else current_engine()

    @property
    def state(self) -> MemoryState:
        """The current state (immutable; replaced by each flush)."""
        return self._state

    @state.setter
    def state(self, value: MemoryState) -> None:
        with self._lock:
            self._state = value

    def _count(self, text: str) -> int:
        return self.engine.tokens.count(text, self.model)

    def _prices(self) -> CachePrices | None:
        if self.model is None:
            return None
        return cache_prices(self.engine.catalog, self.model, self.summarizer_model)

    def view(
        self, history: Sequence[Message], query: str | None = None, *, record: bool = False
    ) -> MemoryView:
        """The messages to send for the next call (the state is not changed).

        Args:
            history: the full stored conversation.
            query: what recall looks for (the latest user message by default).
            record: the view is about to be sent: record its removed tokens as
                ``memory`` savings (one record per model call).
        """
        embed = self.engine.embedder.embed if self.config.recall_embeddings else None
        v = plan_context(
            history,
            self._state,
            self.config,
            count_tokens=self._count,
            query=query,
            embed=embed,
            prices=self._prices(),
        )
        if record:
            self.record(v)
        return v

    async def aview(
        self, history: Sequence[Message], query: str | None = None, *, record: bool = False
    ) -> MemoryView:
        """Async twin of :meth:`view`."""
        aembed = self.engine.embedder.aembed if self.config.recall_embeddings else None
        v = await aplan_context(
            history,
            self._state,
            self.config,
            count_tokens=self._count,
            query=query,
            aembed=aembed,
            prices=self._prices(),
        )
        if record:
            self.record(v)
        return v

    def record(self, view: MemoryView) -> CallRecord | None:
        """Record the tokens ``view`` keeps out of its call as ``memory`` savings."""
        if not self.record_savings:
            return None
        return self.engine.record_removed_tokens(
            view.removed_tokens,
            lever="memory",
            model=self.model,
            tenant=self.tenant,
            framework=self.framework,
        )

    def read_needs_flush(self, history: Sequence[Message]) -> bool:
        """Whether :meth:`view` would now leave out turns no summary covers.

        Then read through :meth:`update` first (the flush is due): e.g. the
        first read of a long stored conversation with no saved state. See
        :func:`~costopt_core.memory.plan.read_needs_flush`.
        """
        return read_needs_flush(history, self._state, self.config, count_tokens=self._count)

    def update(self, history: Sequence[Message], *, force: bool = False) -> FlushResult:
        """Flush if one is due (or ``force``) and keep the new state."""
        result = flush(
            history,
            self._state,
            self.config,
            count_tokens=self._count,
            chat=self.summarizer,
            prices=self._prices(),
            force=force,
        )
        self.state = result.state
        return result

    async def aupdate(self, history: Sequence[Message], *, force: bool = False) -> FlushResult:
        """Async twin of :meth:`update` (``asummarizer``, else ``summarizer`` called inline)."""
        achat = self.asummarizer
        if achat is None and self.summarizer is not None:
            sync_chat = self.summarizer

            async def achat_from_sync(messages: list[Message]) -> str:
                return sync_chat(messages)

            achat = achat_from_sync
        result = await aflush(
            history,
            self._state,
            self.config,
            count_tokens=self._count,
            achat=achat,
            prices=self._prices(),
            force=force,
        )
        self.state = result.state
        return result
