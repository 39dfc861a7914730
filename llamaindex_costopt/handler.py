"""``CostEventHandler``: prices every LlamaIndex LLM call into the engine's ledger.

LlamaIndex reports LLM calls as instrumentation events (``LLMChatStartEvent``
... ``LLMChatEndEvent``), not callbacks, so the handler listens on a
dispatcher. It only translates: the end event's response (``raw`` usage or
``additional_kwargs`` token counts) into the engine's ``Usage`` and call
fields. Pricing, savings and budgets are the engine's.

Tenant and tier come from instrument tags (``costopt_tenant`` / ``tenant_id``
/ ``tenant`` and ``costopt_tier``), e.g.
``with instrument_tags({"costopt_tenant": "acme"}): llm.chat(...)``, or from
``track_costs(tenant=...)``, or from the handler's own ``tenant``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.exception import ExceptionEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionInProgressEvent,
    LLMCompletionStartEvent,
)
from llama_index_instrumentation import get_dispatcher
from llama_index_instrumentation.dispatcher import Dispatcher, active_instrument_tags
from llama_index_instrumentation.events.span import SpanDropEvent
from pydantic import PrivateAttr, ValidationError, field_validator

from costopt_core import (
    CostEngine,
    CostLedger,
    current_engine,
    current_tenant,
    default_engine,
    engine_scope,
)
from costopt_core.errors import ConfigurationError, UsageFormatError, config_error
from costopt_core.served import SERVED, served_outcome
from costopt_core.types import CallOutcome, Usage
from costopt_core.usage import first_field, normalize_usage

__all__ = [
    "BATCH_TAG",
    "REPLAY_NOTE",
    "TENANT_KEYS",
    "TIER_KEY",
    "CostEventHandler",
    "resolve_tenant",
    "track_costs",
    "usage_of",
]

log = logging.getLogger("costopt.llamaindex")

TENANT_KEYS = ("costopt_tenant", "tenant_id", "tenant")
#: Set in the note a costopt cache puts on the items of its replay of a stored
#: answer (not on those of a stream it shares): a stopped replay is recorded.
REPLAY_NOTE = "replay"
TIER_KEY = "costopt_tier"
METADATA_KEY = "costopt"
#: Instrument tag on the LLM calls a batch job makes itself (the local batch
#: provider of ``BatchRunner``): the job records those calls, so handlers skip them.
BATCH_TAG = "costopt_batch"


def resolve_tenant(explicit: str | None = None) -> str | None:
    """The tenant a component acts for, here and now.

    Its own setting if it has one; otherwise the tenant a ``CostEventHandler``
    books an LLM call started here under (:func:`record_tenant`): the current
    call's instrument tags, the ``track_costs`` block, ``tenant_scope``, then
    the recording handler's own. One order for the cache's partition, the
    router's escalations, the postprocessors' and the memory's savings and the
    handler's records: a component that read the tenant another way would
    share one tenant's cached answers with another, or book its savings
    under a tenant the calls around it are not booked under.

    Args:
        explicit: the component's own ``tenant`` setting, if any.
    """
    if explicit is not None:
        return explicit
    return record_tenant(recording_handler())


#: ``class_name()`` of ``llamaindex_costopt.router.RouterLLM``.
ROUTER_CLASS_NAME = "costopt_RouterLLM"
#: ``class_name()`` of ``llamaindex_costopt.cached_llm.CachedLLM``.
CACHED_LLM_CLASS_NAME = "costopt_cached_llm"

_START_EVENTS = (LLMChatStartEvent, LLMCompletionStartEvent)
_END_EVENTS = (LLMChatEndEvent, LLMCompletionEndEvent)
# One per item of a stream, as the caller reads it.
_PROGRESS_EVENTS = (LLMChatInProgressEvent, LLMCompletionInProgressEvent)
_DROP_EVENTS = (ExceptionEvent, SpanDropEvent)

# Dispatchers' handler lists are swapped whole (never mutated in place) under
# this lock, so an event being dispatched in another thread never sees a list
# that shrinks under it.
_attach_lock = threading.Lock()

# The LLM spans open in this context, innermost last, shared by every handler.
# A CustomLLM's ``chat`` calls its own ``complete`` (and ``astream_chat`` its
# ``stream_chat``), so one provider call emits nested start/end pairs; and the
# outer span of a stream has already exited when the inner one starts, so the
# span tree cannot tell us they are one call. Open-in-this-context can.
_open_llm_spans: ContextVar[tuple[str, ...]] = ContextVar(
    "costopt_llamaindex_open_llm_spans", default=()
)


@dataclass(frozen=True)
class _Scope:
    handler: CostEventHandler
    tenant: str | None
    #: The enclosing block a see-through one (``pricing_scope``) lets record too.
    outer: _Scope | None = None
    #: A component's own block: every other handler books its calls as if it
    #: were not there (their own block's tenant, not this one's).
    see_through: bool = False


def _scope_of(handler: CostEventHandler | None, scope: _Scope | None) -> _Scope | None:
    """The block ``handler`` books a call under: its own, else the innermost one
    that is not a component's see-through block."""
    for s in _chain(scope):
        if s.handler is handler:
            return s
    while scope is not None and scope.see_through:
        scope = scope.outer
    return scope


#: The model name of the calls started here whose events and answers name none
#: (``pricing_scope``'s ``model_hint``).
_model_hint: ContextVar[str | None] = ContextVar("costopt_llamaindex_model_hint", default=None)


def _chain(scope: _Scope | None) -> Generator[_Scope, None, None]:
    """``scope``, then the blocks it lets see through (see ``pricing_scope``)."""
    while scope is not None:
        yield scope
        scope = scope.outer


# The innermost ``track_costs`` block of this context (tasks inherit it).
_scope: ContextVar[_Scope | None] = ContextVar("costopt_llamaindex_scope", default=None)


def _first(tags: Mapping[str, Any] | None, keys: tuple[str, ...]) -> str | None:
    if not tags:
        return None
    for k in keys:
        v = tags.get(k)
        if v is not None:
            return str(v)
    return None


def _mapping(value: Any) -> Mapping[str, Any] | None:
    """``value`` if it is a mapping, else ``None``.

    Usually ``None`` or a dict, both told apart without ``isinstance(value, Mapping)``,
    an ABC check that costs more than the rest of this function.
    """
    if value is None:
        return None
    if type(value) is dict or isinstance(value, Mapping):
        return value
    return None


def _has_tokens(usage: Usage) -> bool:
    return usage.input_tokens is not None or usage.output_tokens is not None


def usage_of(response: Any) -> Usage:
    """The token usage a LlamaIndex ``ChatResponse`` / ``CompletionResponse`` reports.

    Looks at ``response.raw`` ``usage`` / ``usage_metadata`` (OpenAI, Anthropic
    or Gemini payloads, dicts or SDK objects), then at the token counts some
    integrations put in ``additional_kwargs``. The provider format is decided
    by ``costopt_core.usage.normalize_usage``.

    Returns:
        The usage, or ``Usage()`` (unknown) when the response carries none.
    """
    if response is None:
        return Usage()
    raw = getattr(response, "raw", None)
    for key in ("usage", "usage_metadata"):
        payload = first_field(raw, key)
        if payload is not None:
            usage = _readable(payload)
            if _has_tokens(usage):
                return usage
    message = getattr(response, "message", None)
    for kwargs in (
        getattr(response, "additional_kwargs", None),
        getattr(message, "additional_kwargs", None),
    ):
        if kwargs:
            usage = _readable(kwargs)
            if _has_tokens(usage):
                return usage
    return Usage()


def _readable(payload: Any) -> Usage:
    # Impossible counts (negative, not a number) make the cost unknown, never an error
    # in the user's call and never a dropped record.
    try:
        return normalize_usage(payload)
    except UsageFormatError as exc:
        log.warning("costopt: unreadable token usage (%s); the call's cost is unknown", exc)
        return Usage()


def _model_of(raw: Any) -> str | None:
    for key in ("model", "model_version", "modelVersion"):
        value = first_field(raw, key)
        if isinstance(value, str) and value:
            return value
    return None


# A stream none of whose items was read yet (None could be an item).
_EMPTY: Any = object()


class _Call:
    """One LLM span between its start and end events."""

    __slots__ = (
        "cache",
        "child_raws",
        "children",
        "delegated",
        "early",
        "kids",
        "last",
        "model",
        "parent",
        "recorded",
        "router",
        "start",
        "suppressed",
        "tenant",
        "tier",
    )

    def __init__(
        self,
        model: str | None,
        tenant: str | None,
        tier: str | None,
        parent: _Call | None,
        router: bool = False,
        cache: bool = False,
    ) -> None:
        self.model = model
        self.tenant = tenant
        self.tier = tier
        self.parent = parent
        self.router = router
        # A costopt CachedLLM: with no call nested in it, the cache served it.
        self.cache = cache
        # A router records its answer itself (and its discarded attempts as
        # "escalated"), so the tier calls it makes are not recorded again.
        self.suppressed: bool = parent is not None and (parent.router or parent.suppressed)
        # Started before its parent's first item (or in a parent that is no
        # stream): a call the parent delegates its answer to (a CustomLLM's chat
        # calling its complete, a wrapper's inner LLM). One started while the
        # caller reads the parent's stream (a per-item moderation call) nests
        # in it without being part of its answer.
        self.early: bool = parent is not None and parent.last is _EMPTY
        self.start = time.perf_counter()
        self.children = False
        # An early call nested in this one ended: this one's answer is its.
        self.delegated = False
        # Raw payloads recorded by calls nested in this one; held (not just
        # their ids) so an id cannot be reused while we compare against it.
        self.child_raws: list[Any] = []
        # A stream's last item read so far (_EMPTY: none), for an unfinished stream.
        self.last: Any = _EMPTY
        # The calls started inside this one (None: none), read when a stream stops.
        self.kids: list[_Call] | None = None
        # Recorded as an unfinished stream: the calls nested in it are the same answer.
        self.recorded = False

    def adopt(self, raw: Any, early: bool) -> None:
        """A call nested in this one ended with ``raw`` (``early``: see ``_Call.early``)."""
        self.children = True
        if early:
            self.delegated = True
        if raw is not None:
            self.child_raws.append(raw)

    def answered_by_child(self, raw: Any, usage: Usage | None) -> bool:
        """Whether a nested call already recorded this call's answer (``raw``, ``usage``).

        Its ``raw`` is one a nested call ended with (passed on by reference), or
        the call delegated its answer (:attr:`delegated`) and adds no usage of
        its own (``usage`` None: never mind its usage, a stream that stopped).
        A call nested only while the caller read this one's stream does not count.
        """
        if raw is not None and any(r is raw for r in self.child_raws):
            return True
        return self.delegated and (usage is None or raw is None or not _has_tokens(usage))


def _router_or_cache_hit(call: _Call) -> bool:
    """``call`` is a router's, a cache hit's, or has one nested in it (under the lock).

    The router records an unfinished stream of its own; a cache hit called
    no model. The calls nested in a stream have all started by the time it
    stops (they are opened before its first item), so the walk sees them.
    Below ``call`` it goes through wrappers only (routers, caches), and
    through the calls they delegate to only (``_Call.early``): a call started
    while a provider's stream is open nests in it without being part of its
    answer (a second identical stream read in turn, served from the first
    one's call), as does one started while the caller reads ``call``'s stream.
    """
    todo = [call]
    while todo:
        c = todo.pop()
        if c.router or (c.cache and not any(k.early for k in c.kids or ())):
            return True
        if c.kids and (c is call or c.cache):
            todo.extend(k for k in c.kids if k.early)
    return False


def _stopped_replay(call: _Call, raw: Any, span_id: str) -> bool:
    """``call`` is a costopt cache's own span, served (no model call nested in
    it), and its last item is of a replay of a stored answer: its ``raw`` is
    noted with the cache tier and :data:`REPLAY_NOTE` (``cached_llm._chunk_raw``).
    The note is taken for this span, so every handler of it reads it again."""
    if not call.cache or any(k.early for k in call.kids or ()) or raw is None:
        return False
    note = SERVED.take(raw, run=span_id)
    return note is not None and bool(note.get(REPLAY_NOTE)) and served_outcome(note) is not None


class _State:
    """A handler's mutable state: its open calls and bookkeeping."""

    __slots__ = ("calls", "dispatchers", "errors", "lock", "recorded", "scoped")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, _Call] = {}
        self.errors = 0
        self.recorded = 0
        self.dispatchers: list[Dispatcher] = []
        # Set by track_costs: record only calls started inside its block.
        self.scoped = False


def _state_of(handler: CostEventHandler) -> _State:
    """The handler's :class:`_State`, read where pydantic keeps private attributes.

    ``handler._state`` finds it too, but only after a failed attribute lookup
    and pydantic's ``__getattr__``, which both build an ``AttributeError`` on
    the way: that cost more than all the rest of an event, twice per call.
    """
    private = handler.__pydantic_private__
    assert private is not None  # set by BaseModel.__init__
    return cast(_State, private["_state"])


#: Where LlamaIndex dispatches LLM start / end events (llm_chat_callback's dispatcher).
_LLM_EVENTS = "llama_index.core.llms.callbacks"


def recording_handler() -> CostEventHandler | None:
    """The cost handler that will record an LLM call started here and now.

    The innermost live ``track_costs`` block records the calls started in it;
    outside one, a handler attached (not through ``track_costs``) to the
    dispatcher LLM events go through, or to one of its parents.
    """
    for block in _chain(_scope.get()):
        if block.handler.attached:
            return block.handler
    d: Any = get_dispatcher(_LLM_EVENTS)
    while d is not None:
        for h in d.event_handlers:
            if isinstance(h, CostEventHandler) and not _state_of(h).scoped:
                return h
        d = d.parent if d.propagate else None
    return None


def engine_for(own: CostEngine | None) -> CostEngine:
    """The engine a component books its savings in: the ledger its run's LLM calls go to.

    The component's own ``engine=`` when set; otherwise the engine of the
    :func:`recording_handler` (the innermost
    ``track_costs`` block's, else a ``CostEventHandler`` attached to the
    dispatcher); otherwise :func:`~costopt_core.current_engine`. The same
    handler :func:`resolve_tenant` reads, so a
    saving lands in the ledger, and under the tenant, of the calls around it:
    the postprocessors' ``compression`` next to the query's calls, the
    memory's ``memory`` next to its summarizer's ``overhead``. (LangChain's
    twin is :func:`langchain_costopt.callbacks.engine_for`.)

    Args:
        own: the component's ``engine=`` setting, which wins when set.
    """
    if own is not None:
        return own
    handler = recording_handler()
    return handler.engine if handler is not None else current_engine()


def recording_handlers() -> list[CostEventHandler]:
    """Every cost handler that will record an LLM call started here and now.

    :func:`recording_handler` first, then each other handler attached to the
    LLM events' dispatcher (or a parent) that records the call into another
    ledger: an application's permanent handler records the calls of a
    ``track_costs`` block on another engine too. A router reads the budgets
    of all of them, and records its escalations in all of them, since each
    of their ledgers will hold its answer.
    """
    scope = _scope.get()
    found = [s.handler for s in _chain(scope) if s.handler.attached]
    d: Any = get_dispatcher(_LLM_EVENTS)
    while d is not None:
        for h in d.event_handlers:
            if not isinstance(h, CostEventHandler) or any(h is f for f in found):
                continue
            st = _state_of(h)
            if not st.scoped and h._records_here(st, scope):
                found.append(h)
        d = d.parent if d.propagate else None
    return found


def records_span(handler: CostEventHandler, span_id: str | None) -> bool:
    """True when ``handler`` will book the LLM call of ``span_id`` under that id.

    Not when it never saw the call start, or when the call is one a router
    in front of it records (a tier of an outer router): a budget hold made
    under that id would then never be released by the call's record.
    """
    if span_id is None:
        return False
    st = _state_of(handler)
    with st.lock:
        call = st.calls.get(span_id)
    return call is not None and not call.suppressed


def _tenant_of(tags: Mapping[str, Any] | None, scope: _Scope | None, own: str | None) -> str | None:
    """The tenant a record is booked under: the call's instrument tags, the
    ``track_costs`` block, ``tenant_scope``, then the handler's own."""
    return (
        _first(tags, TENANT_KEYS)
        or (scope.tenant if scope else None)
        or current_tenant()  # tenant_scope: events start in the caller's context
        or own
    )


def record_tenant(handler: CostEventHandler | None) -> str | None:
    """The tenant ``handler`` books a call started here and now under (see _tenant_of)."""
    own = handler.tenant if handler is not None else None
    return _tenant_of(active_instrument_tags.get(), _scope_of(handler, _scope.get()), own)


class CostEventHandler(BaseEventHandler):
    """Records the cost of every LlamaIndex LLM call it sees, exactly once.

    Handles ``chat``/``complete``, their streaming and async twins, and
    concurrent calls from threads and asyncio tasks. A stream is recorded once,
    when it ends, with the usage of its last response (where providers put
    it). One that does not end (the caller stops reading it, cancels it, or
    it fails after it started streaming) was billed too: it is recorded once
    when it stops, with the usage of the last item read if that reports any,
    else with an unknown usage (unpriced, never $0). A call that delegates to
    another instrumented call of the same answer (a ``CustomLLM``'s ``chat``
    calling its ``complete``) is recorded once.

    Recording never fails the user's call: errors are logged and counted in
    :attr:`errors`. Budgets are not enforced here: LlamaIndex swallows what
    event handlers raise, so a handler cannot stop a call.

    Args:
        engine: the engine to record into; the process default if omitted.
        tenant: tenant of calls that name none in their instrument tags or
            ``track_costs`` block.

    Raises:
        ConfigurationError: ``engine`` is not a ``CostEngine`` or ``tenant``
            not a string.

    Example:
        >>> handler = CostEventHandler().attach()  # doctest: +SKIP
        >>> llm.chat(messages)  # doctest: +SKIP
        >>> print(handler.ledger.summary_table())  # doctest: +SKIP
    """

    engine: CostEngine
    tenant: str | None = None

    # Read through _state_of(self) on the hot path.
    _state: _State = PrivateAttr(default_factory=_State)

    def __init__(self, engine: CostEngine | None = None, *, tenant: str | None = None) -> None:
        try:
            super().__init__(engine=default_engine() if engine is None else engine, tenant=tenant)
        except ValidationError as exc:
            raise config_error("CostEventHandler", exc) from None

    @field_validator("engine", mode="before")
    @classmethod
    def _check_engine(cls, value: Any) -> Any:
        if not isinstance(value, CostEngine):
            raise ConfigurationError(
                f"engine must be a costopt_core.CostEngine, got {type(value).__name__}; "
                "pass CostEngine(...) or leave it out to use the default engine"
            )
        return value

    @classmethod
    def class_name(cls) -> str:
        return "CostEventHandler"

    @property
    def ledger(self) -> CostLedger:
        """The ledger of the handler's engine."""
        return self.engine.ledger

    @property
    def errors(self) -> int:
        """How many events could not be recorded (each was logged)."""
        return _state_of(self).errors

    @property
    def pending(self) -> int:
        """Calls started but not yet ended (a stream not yet consumed, say)."""
        st = _state_of(self)
        with st.lock:
            return len(st.calls)

    @property
    def attached(self) -> bool:
        """True while the handler is attached to at least one dispatcher."""
        return bool(_state_of(self).dispatchers)

    # -- attaching ----------------------------------------------------------
    def attach(self, dispatcher: Dispatcher | None = None) -> CostEventHandler:
        """Listen on ``dispatcher`` (the root dispatcher by default) until :meth:`detach`.

        Attaching twice, or to a dispatcher and its parent, still records each
        call once.

        Returns:
            The handler itself, so ``h = CostEventHandler(engine).attach()`` works.
        """
        d = dispatcher if dispatcher is not None else get_dispatcher()
        st = _state_of(self)
        with _attach_lock:
            if not any(h is self for h in d.event_handlers):
                d.event_handlers = [*d.event_handlers, self]
            if not any(x is d for x in st.dispatchers):
                st.dispatchers.append(d)
        return self

    def detach(self) -> None:
        """Stop listening on every dispatcher this handler was attached to."""
        st = _state_of(self)
        with _attach_lock:
            for d in st.dispatchers:
                d.event_handlers = [h for h in d.event_handlers if h is not self]
            st.dispatchers = []
        with st.lock:
            # Their end events will never reach us.
            st.calls.clear()

    # -- events -------------------------------------------------------------
    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        """Translate one instrumentation event; never raises."""
        st = _state_of(self)
        try:
            if isinstance(event, _PROGRESS_EVENTS):
                self._progress(st, event)
            elif isinstance(event, _START_EVENTS):
                self._start(st, event)
            elif isinstance(event, _END_EVENTS):
                self._end(st, event)
            elif isinstance(event, _DROP_EVENTS):
                self._drop(st, event)
        except Exception:  # never fail the user's call over accounting
            with st.lock:
                st.errors += 1
            log.exception("costopt could not handle %s", type(event).__name__)

    def _records_here(self, st: _State, scope: _Scope | None) -> bool:
        if st.scoped:
            # Only our own block's calls; an inner block shadows ours, unless
            # it is a see-through one.
            return any(s.handler is self for s in _chain(scope))
        # A live track_costs block on our engine records this call; twice
        # would count it twice in the same ledger.
        return not any(
            s.handler.engine is self.engine and s.handler.attached for s in _chain(scope)
        )

    def _start(self, st: _State, event: LLMChatStartEvent | LLMCompletionStartEvent) -> None:
        span_id = event.span_id
        if span_id is None:
            return  # nothing to pair the end event with
        stack = _open_llm_spans.get()
        if span_id in stack:  # another handler saw this event first
            enclosing = stack[: stack.index(span_id)]
        else:
            enclosing = stack
            _open_llm_spans.set((*stack, span_id))
        tags = event.tags
        if tags and BATCH_TAG in tags:
            return  # a batch job's own call: the job records it
        scope = _scope.get()
        if not self._records_here(st, scope):
            return
        model_dict = event.model_dict or {}
        model = model_dict.get("model") or model_dict.get("model_name")
        tenant = _tenant_of(tags, _scope_of(self, scope), self.tenant)
        tier = _first(tags, (TIER_KEY,))
        calls = st.calls
        with st.lock:
            if span_id in calls:
                return  # the same event through a second dispatcher
            parent = None
            for s in reversed(enclosing):  # empty for a call not nested in another
                parent = calls.get(s)
                if parent is not None:
                    break
            kind = model_dict.get("class_name")
            if not model:
                model = _model_hint.get()
            call = _Call(
                str(model) if model else None,
                tenant,
                tier,
                parent,
                router=kind == ROUTER_CLASS_NAME,
                cache=kind == CACHED_LLM_CLASS_NAME,
            )
            calls[span_id] = call
            if parent is not None:
                if parent.kids is None:
                    parent.kids = [call]
                else:
                    parent.kids.append(call)

    def _close_span(self, span_id: str | None) -> None:
        stack = _open_llm_spans.get()
        if stack and stack[-1] == span_id:  # the usual case: the innermost span ends
            _open_llm_spans.set(stack[:-1])
        elif span_id in stack:
            _open_llm_spans.set(tuple(s for s in stack if s != span_id))

    def _progress(
        self, st: _State, event: LLMChatInProgressEvent | LLMCompletionInProgressEvent
    ) -> None:
        # Kept for a stream that does not end: its last item is what it is
        # recorded with. One dict read and one store per item: no lock (the
        # item's own thread or task is the only one that writes it).
        call = st.calls.get(event.span_id) if event.span_id is not None else None
        if call is not None:
            call.last = event.response

    def _drop(self, st: _State, event: ExceptionEvent | SpanDropEvent) -> None:
        span_id = event.span_id
        self._close_span(span_id)
        if span_id is None:
            return
        with st.lock:
            call = st.calls.pop(span_id, None)
        # A call that fails before it answers (SpanDropEvent) cost nothing. A
        # stream sends an ExceptionEvent instead of its end event when the
        # caller stops reading it (break, close(), cancellation) or it fails part
        # way: the provider has billed the prompt, and what it streamed, so it is
        # recorded (see _unfinished).
        if call is not None and isinstance(event, ExceptionEvent):
            self._unfinished(st, call, event.exception, span_id)

    def _unfinished(self, st: _State, call: _Call, error: BaseException, span_id: str) -> None:
        """Record a stream that did not end, once, with its last item's usage (else unknown).

        Not a stream whose provider refused it before its first item (an error
        of its own, as a failed call, is not billed); the caller giving up on
        it (GeneratorExit, CancelledError) is recorded even then: the request
        was made. Nor the calls a costopt router records itself: its tier
        calls (suppressed), its own span and any call it is nested in (its
        ``_unread`` records an unfinished stream, and a held-back one with
        the usage of the whole stream, which it read). A costopt cache's
        replay of a stored answer called no model: it is recorded as the hit
        its items' note says (:func:`_stopped_replay`), as LangChain records a
        stopped replay, so both count the request and the hit rate alike. A
        stream the cache shares with an identical request in flight is not.
        """
        if call.suppressed:
            return
        last = call.last
        if last is _EMPTY and isinstance(error, Exception):
            return
        response = None if last is _EMPTY else last
        raw = getattr(response, "raw", None)
        with st.lock:
            if _router_or_cache_hit(call):
                if not _stopped_replay(call, raw, span_id):
                    return
            else:
                # A nested call already recorded this answer: a delegated stream
                # that ended (or stopped) before the one around it. Or the call
                # around this one did: the caller closes the outer stream first.
                # Not a call the caller made while reading this stream, nor the
                # stream such a call is nested in: their answers are their own.
                seen = call.children and call.answered_by_child(raw, None)
                inner = call
                while not seen and inner.early and inner.parent is not None:
                    inner = inner.parent
                    seen = inner.recorded
                if seen:
                    return
            call.recorded = True
            if call.parent is not None:
                call.parent.adopt(raw, call.early)
        # Unknown usage (no item reported any) is recorded unpriced, never as $0.
        self._record(call, raw, usage_of(response), span_id)

    def _end(self, st: _State, event: LLMChatEndEvent | LLMCompletionEndEvent) -> None:
        span_id = event.span_id
        self._close_span(span_id)
        if span_id is None:
            return
        with st.lock:
            call = st.calls.pop(span_id, None)
        if call is None:
            return  # not started through us, or already counted
        response = event.response
        raw = getattr(response, "raw", None)
        if call.suppressed:
            return
        usage = usage_of(response)
        if call.router:
            if call.parent is not None:
                with st.lock:
                    call.parent.adopt(raw, call.early)
            self._record(call, raw, usage, span_id)
            return
        if call.children or call.parent is not None:
            with st.lock:
                # The same answer seen again by the call that delegated to the
                # one that recorded it (raw is passed through by reference), or
                # a wrapper that adds no usage of its own. Not because of a call
                # made while its stream was read (see _Call.early).
                same_answer = call.children and call.answered_by_child(raw, usage)
                if call.parent is not None:
                    call.parent.adopt(raw, call.early)
            if same_answer:
                return
        self._record(call, raw, usage, span_id)

    def _record(self, call: _Call, raw: Any, usage: Usage, span_id: str) -> None:
        st = _state_of(self)
        with st.lock:
            st.recorded += 1
        raw_map = _mapping(raw)
        # A costopt cache notes the raw dicts of the answers it serves (the caller
        # sees a marker only with expose_cache_info).
        marker: Mapping[str, Any] | None = None if raw is None else SERVED.take(raw, run=span_id)
        if marker is None and raw_map is not None:
            marker = _mapping(raw_map.get(METADATA_KEY))
        outcome: CallOutcome = "model"
        tier = call.tier
        if marker is not None:
            # A costopt cache served this answer (it carries the replaced call's
            # usage); a router says which tier answered.
            outcome = served_outcome(marker) or outcome
            tier = tier or marker.get("tier")
        self.engine.record_call_deferred(
            model=_model_of(raw) or call.model or "unknown",
            usage=usage,
            tier=tier,
            outcome=outcome,
            tenant=call.tenant,
            framework="llamaindex",
            latency_ms=(time.perf_counter() - call.start) * 1000.0,
            call_id=span_id,
        )


class PricingBlock:
    """What a :func:`pricing_scope` block recorded: whether its call reached a handler."""

    def __init__(self, handlers: list[CostEventHandler]) -> None:
        self._handlers = handlers
        self._before = [_state_of(h).recorded for h in handlers]

    def recorded(self) -> bool:
        """True once a handler that records into the block's engine recorded a call.

        False for an LLM that sends no instrumentation events (its caller
        prices it from the answer).
        """
        return any(
            _state_of(h).recorded != n for h, n in zip(self._handlers, self._before, strict=True)
        )


@contextmanager
def pricing_scope(
    engine: CostEngine, tenant: str | None = None, model_hint: str | None = None
) -> Generator[PricingBlock, None, None]:
    """Price the LLM calls started inside into ``engine``, unless a handler already does.

    For a component's own model calls (a memory's summarizer): they are
    recorded as a cost handler records any call (a router's tiers, a cache's
    hits), into ``engine`` even when no handler on it is attached, while every
    other handler and ``track_costs`` block still records them too (the block
    is see-through, unlike a nested ``track_costs``).

    Args:
        engine: the ledger the calls must reach.
        tenant: their tenant, unless their instrument tags name one.
        model_hint: the model name of calls whose events and answers name none.

    Yields:
        A :class:`PricingBlock`, which says whether the call was recorded.
    """
    hint = _model_hint.set(model_hint) if model_hint else None
    try:
        already = [h for h in recording_handlers() if h.engine is engine]
        if already:
            yield PricingBlock(already)
            return
        handler = CostEventHandler(engine, tenant=tenant)
        _state_of(handler).scoped = True
        outer = _scope.get()
        visible = _scope_of(None, outer)  # as track_costs inherits a tenant
        inherited = tenant if tenant is not None else (visible.tenant if visible else None)
        token = _scope.set(_Scope(handler, inherited, outer=outer, see_through=True))
        try:
            handler.attach()
            yield PricingBlock([handler])
        finally:
            try:
                handler.detach()
            finally:
                _scope.reset(token)
    finally:
        if hint is not None:
            _model_hint.reset(hint)


@contextmanager
def track_costs(
    engine: CostEngine | None = None, tenant: str | None = None
) -> Generator[CostEventHandler, None, None]:
    """Price every LlamaIndex LLM call started inside the ``with`` block.

    A :class:`CostEventHandler` is attached to the root dispatcher for the
    block and removed afterwards, even on error. It records only calls started
    in the block's context (asyncio tasks created inside it included), so
    concurrent blocks in other threads or tasks keep their own figures, and in
    nested blocks the innermost one records the call. A handler attached
    permanently to the same engine does not record the block's calls again.
    By default the block records into a child of the engine in effect (the
    enclosing block's, else the default engine): a fresh ledger, so the
    block's figures are its own, with that engine's prices, baseline,
    embedder and token counter. Its budgets still apply to every call in the
    block, and the block's calls are recorded in its ledger too (once, even
    when a handler attached to that engine sees them as well), so a
    process-wide budget cannot be bypassed by opening a block, and an outer
    block's figures include its inner blocks' calls.

    Threads started inside the block do not inherit its context unless they
    are told to (``contextvars.copy_context().run``); a stream must be read to
    its end, or stopped, before the block ends to be recorded.

    Args:
        engine: the engine to record into; a child of the engine in effect
            if omitted.
        tenant: tenant of the block's calls, unless their instrument tags name
            one; an inner block without a tenant inherits the outer block's.

    Raises:
        ConfigurationError: ``engine`` is not a ``CostEngine`` or ``tenant``
            not a string (on entering the block).

    Example:
        >>> with track_costs(tenant="acme") as costs:  # doctest: +SKIP
        ...     query_engine.query("...")
        >>> costs.ledger.totals().cost_usd  # doctest: +SKIP
    """
    if engine is not None and not isinstance(engine, CostEngine):
        raise ConfigurationError(
            f"invalid track_costs: engine={engine!r}: engine must be a costopt_core.CostEngine, "
            f"got {type(engine).__name__}; pass CostEngine(...) or leave it out to record "
            "into a fresh ledger"
        )
    if engine is None:
        engine = current_engine().child()
    handler = CostEventHandler(engine, tenant=tenant)
    _state_of(handler).scoped = True
    outer = _scope_of(None, _scope.get())
    inherited = tenant if tenant is not None else (outer.tenant if outer else None)
    token = _scope.set(_Scope(handler, inherited))
    try:
        handler.attach()
        # Postprocessors, memories and batch runners in the block book their
        # savings into the block's ledger too.
        with engine_scope(engine):
            yield handler
    finally:
        try:
            handler.detach()
        finally:
            _scope.reset(token)
