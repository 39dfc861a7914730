"""``CostCallbackHandler``: prices every LangChain LLM call into the engine's ledger.

It only translates: LangChain's ``LLMResult`` / run metadata into the engine's
``Usage`` and call fields. Pricing, savings and budgets are the engine's.

Tenant and tier come from run metadata (inherited by nested runs), e.g.
``chain.invoke(x, config={"metadata": {"costopt_tenant": "acme"}})``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import add_usage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.tracers.context import register_configure_hook

from costopt_core import CostEngine, CostLedger, current_engine, default_engine, engine_scope
from costopt_core.engine import split_usage
from costopt_core.errors import BudgetExceededError, ConfigurationError
from costopt_core.served import SERVED, served_outcome
from costopt_core.tenancy import current_tenant
from costopt_core.types import CallOutcome, Usage, money_str
from costopt_core.usage import normalize_usage, usage_from_langchain
from langchain_costopt._convert import from_langchain_messages, usage_or_unknown

__all__ = ["CostCallbackHandler", "cost_handlers", "run_tenant", "track_costs"]

log = logging.getLogger("costopt.langchain")

TENANT_KEYS = ("costopt_tenant", "tenant_id", "tenant")
TIER_KEY = "costopt_tier"
METADATA_KEY = "costopt"
# The tenant keys as a set: most runs name none, which one isdisjoint() tells.
_TENANT_KEY_SET = frozenset(TENANT_KEYS)


def _first(metadata: Mapping[str, Any] | None, keys: tuple[str, ...]) -> str | None:
    if not metadata:
        return None
    for k in keys:
        v = metadata.get(k)
        if v is not None:
            return str(v)
    return None


def run_tenant(metadata: Mapping[str, Any] | None, own: str | None = None) -> str | None:
    """The tenant a run is for, the one way every LangChain adapter reads it.

    The cost handler books a call under this tenant, so a cache partition, a
    savings record or a budget check that asks here agrees with the ledger.

    Args:
        metadata: the run's metadata (a run manager's ``metadata``, a config's
            ``"metadata"``); its first of ``TENANT_KEYS`` that is set wins.
        own: a tenant the component itself was configured with; it wins over
            the run's, as it does in the component's own records.

    Returns:
        ``own``, else the run's metadata tenant, else ``tenant_scope``'s (None
        outside any scope).
    """
    if own is not None:
        return own
    if metadata and not _TENANT_KEY_SET.isdisjoint(metadata):  # usually none is set
        tenant = _first(metadata, TENANT_KEYS)
        if tenant is not None:
            return tenant
    # ``tenant_scope`` (a contextvar): callbacks start in the caller's context.
    return current_tenant()


def cost_handlers(*callbacks: Any, block: bool = True) -> list[CostCallbackHandler]:
    """The cost handlers a run made with these callbacks would have, each once.

    Args:
        *callbacks: a config's ``"callbacks"`` and a model's own ``callbacks``
            (each a list of handlers, a callback manager or None).
        block: include the enclosing ``track_costs`` block's handler (with
            ``False`` it is left out even where LangChain put it among the
            run's handlers).

    Returns:
        The ``CostCallbackHandler`` instances among them, plus the enclosing
        ``track_costs`` block's (LangChain adds it to every run), in order.
    """
    found: list[CostCallbackHandler] = []
    tracking = _tracking.get()
    for source in callbacks:
        handlers = source.handlers if isinstance(source, BaseCallbackManager) else source or ()
        for h in handlers:
            if (
                isinstance(h, CostCallbackHandler)
                and (block or h is not tracking)
                and not any(h is f for f in found)
            ):
                found.append(h)
    if block and tracking is not None and not any(tracking is f for f in found):
        found.append(tracking)
    return found


def engine_for(own: CostEngine | None, callbacks: Any = None) -> CostEngine:
    """The engine a component records its savings in: the same ledger as the run's calls.

    Args:
        own: the component's ``engine=``, which wins when set.
        callbacks: the run's handlers (a list or a callback manager); their
            first ``CostCallbackHandler``'s engine (a ``track_costs`` block's
            included), else :func:`~costopt_core.current_engine`.
    """
    if own is not None:
        return own
    found = cost_handlers(callbacks)
    return found[0].engine if found else current_engine()


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


def _described(value: Any) -> str:
    """``value`` for an error message: a string or number as written, else its type."""
    if isinstance(value, str | int | float | bool) or value is None:
        return repr(value)
    return type(value).__name__


#: A run between its start and end: (model, tenant, tier, time.perf_counter() at
#: the start, whether it is a RouterChatModel's run, the runs its asyncio task
#: still has open (None outside a task), the ``invocation_params`` of its
#: call when that call has several runs (None when it has one: see _join_call)).
#: A plain tuple: a NamedTuple's constructor is a Python call, and one is built
#: inside every call.
_Run = tuple[str | None, str | None, str | None, float, bool, dict[Any, Any] | None, Any]

#: ``RouterChatModel._llm_type``, which LangChain puts in the run's invocation
#: params as ``_type``: the router records its own unfinished streams.
_ROUTER_TYPE = "costopt-router"

#: What LangChain passes to on_llm_error when the caller stops reading a stream:
#: a closed generator (``break``, ``close()``, garbage collection) or a cancelled
#: ``astream``. LangChain reports these only from its stream paths (a cancelled
#: ``ainvoke`` never reaches on_llm_error). The provider billed the prompt.
_STOPPED = (GeneratorExit, asyncio.CancelledError)


def _max_output_tokens(params: Mapping[str, Any]) -> int:
    """The output cap a provider request names (0 when it names none)."""
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = params.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def _bound_tools(params: Mapping[str, Any]) -> list[Any] | None:
    """The tool (and legacy function) schemas a request sends, or None if none."""
    tools: list[Any] = []
    for key in ("tools", "functions"):
        value = params.get(key)
        if isinstance(value, (list, tuple)):
            tools.extend(value)
        elif isinstance(value, Mapping):
            tools.append(value)
    return tools or None


#: Refused calls remembered for their late runs (see _refuse_call).
_REFUSED_KEPT = 64

# Which cost handlers started the runs of a model call, across handlers. A
# budget refusal raised from one handler's start event ends the call: LangChain
# sends no end or error event for the runs started before it (by the handlers
# before the refusing one, and for the earlier prompts of a many-prompt
# ``generate``), so the refusing handler ends them in every handler (their
# budget holds released, the runs dropped). Entries live from a run's start to
# the first end of a run of its call (every run of a call has started by then).
#: run key -> the handlers that started that run (a call with one run).
_RUN_HANDLERS: dict[Any, list[CostCallbackHandler]] = {}
#: id(invocation_params) -> (invocation_params, [(handler, run key, run id)]):
#: a call with several runs (LangChain starts them all with the same params dict).
_CALL_RUNS: dict[int, tuple[Any, list[tuple[CostCallbackHandler, Any, Any]]]] = {}
#: id(invocation_params) -> invocation_params of calls a budget refused, newest
#: last (bounded): runs of theirs that start later (``asyncio.gather``) are
#: dropped at once, by every handler.
_REFUSED_CALLS: dict[int, Any] = {}
_refused_lock = threading.Lock()


def _join_call(handler: CostCallbackHandler, key: Any, run_id: Any, call: Any) -> None:
    """Note that ``handler`` started run ``key`` of a call (``call``: its params
    when it has several runs, else None)."""
    if call is None:
        handlers = _RUN_HANDLERS.get(key)
        if handlers is None:
            _RUN_HANDLERS[key] = [handler]
        else:
            handlers.append(handler)
        return
    entry = _CALL_RUNS.get(id(call))
    if entry is None or entry[0] is not call:
        entry = _CALL_RUNS[id(call)] = (call, [])
    entry[1].append((handler, key, run_id))


def _leave_call(key: Any, call: Any) -> list[tuple[CostCallbackHandler, Any, Any]]:
    """Forget the call of run ``key`` (its start is over); returns the runs it had started."""
    if call is None:
        handlers = _RUN_HANDLERS.pop(key, None)
        return [] if handlers is None else [(h, key, None) for h in handlers]
    entry = _CALL_RUNS.get(id(call))
    if entry is None or entry[0] is not call:
        return []
    _CALL_RUNS.pop(id(call), None)
    return entry[1]


def _refused_call(call: Any) -> bool:
    """Whether a run starting now belongs to a call a budget already refused."""
    return bool(_REFUSED_CALLS) and _REFUSED_CALLS.get(id(call)) is call


class _Batch:
    """The runs of one completion-style batch (``BaseLLM.generate`` with many prompts).

    Such a model answers all prompts in one request and may report their usage
    summed, which LangChain's ``LLMResult.flatten()`` hands whole to the first
    prompt's run and empties for the others. The runs are held until the last
    one ends, then each is priced from its own usage where its generation
    carries one, else from its share of the summed usage (see
    :func:`~costopt_core.engine.split_usage`).

    LangChain starts every run of one ``generate`` call with the same
    ``invocation_params`` dict (and a new dict per call): that object is the
    batch's identity, kept here so its id cannot be reused while the batch is open.
    """

    __slots__ = ("ended", "open", "params", "prompt_tokens", "size", "started")

    def __init__(self, params: Any, size: int) -> None:
        self.params = params
        self.size = size
        self.started = 0
        #: Runs started and not ended yet.
        self.open = 0
        #: run key -> counted tokens of its prompt (its share of the input).
        self.prompt_tokens: dict[Any, int] = {}
        #: (run key, response, run, run id, perf_counter at its end), in end order.
        self.ended: list[tuple[Any, LLMResult, _Run, UUID, float]] = []


def _reports_usage(response: LLMResult | None) -> bool:
    """Whether a run's (merged) answer carries the usage of its message."""
    if response is None:
        return False
    try:
        message = getattr(response.generations[0][0], "message", None)
    except IndexError:
        return False
    return bool(getattr(message, "usage_metadata", None))


def _generation_usage(response: LLMResult) -> Any:
    """The usage a completion run's own generation reports (``generation_info``), if any."""
    try:
        info = response.generations[0][0].generation_info or {}
    except IndexError:
        return None
    return info.get("token_usage") or info.get("usage") or None


def _output_usage(response: LLMResult) -> Any:
    """The usage in a run's ``llm_output`` (a batch's sum on its first run), if any."""
    llm_output = response.llm_output or {}
    return llm_output.get("token_usage") or llm_output.get("usage") or None


def _less(total: Usage, parts: list[Usage]) -> Usage:
    """``total`` less the usage ``parts`` report of their own (each kind at least 0).

    What a batch's summed usage leaves for its prompts whose generations
    reported none. A kind unknown in ``total`` stays unknown.
    """
    if not parts:
        return total

    def left(name: str) -> int | None:
        value: int | None = getattr(total, name)
        if value is None:
            return None
        return max(value - sum(getattr(p, name) or 0 for p in parts), 0)

    read, w5m, w1h = (
        left("cache_read_tokens"),
        left("cache_write_5m_tokens"),
        left("cache_write_1h_tokens"),
    )
    inputs = left("input_tokens")
    if inputs is not None:
        inputs = max(inputs, (read or 0) + (w5m or 0) + (w1h or 0))
    return Usage(
        input_tokens=inputs,
        output_tokens=left("output_tokens"),
        cache_read_tokens=read,
        cache_write_5m_tokens=w5m,
        cache_write_1h_tokens=w1h,
        reasoning_tokens=left("reasoning_tokens"),
    )


class CostCallbackHandler(BaseCallbackHandler):
    """Records the cost of every LLM call it sees, exactly once per run.

    Works with ``invoke``/``ainvoke``/``batch``/``stream``/``astream``, nested
    chains and agents, and concurrent calls from threads and asyncio. The
    call's price is put on the message as ``response_metadata["costopt"]``
    (only values fixed by the answer itself, so a message replayed as history
    keeps the same cache key). Only model events are dispatched to it
    (``ignore_chain``, ``ignore_agent``, ``ignore_retriever``, ``ignore_retry``
    and ``ignore_custom_event`` are True): a subclass that wants chain events
    sets ``ignore_chain = False``.

    Args:
        engine: the engine to record into; the process default if omitted.
        check_budgets: estimate each call's cost before it is sent and raise
            ``BudgetExceededError`` when a ``block`` budget would be exceeded.

    Example:
        >>> handler = CostCallbackHandler()
        >>> chain.invoke(question, config={"callbacks": [handler]})  # doctest: +SKIP
        >>> print(handler.ledger.summary_table())  # doctest: +SKIP
    """

    # Our code is fast and thread-safe: run it inline rather than in an executor.
    run_inline = True
    # Only BudgetExceededError escapes on purpose; everything else is caught below.
    raise_error = True
    # LangChain reads one of these before each event it would send here: plain
    # class attributes, not the base class's properties. Only model events are
    # wanted; chain, tool, retriever and custom events are not sent at all.
    ignore_llm = False
    ignore_chat_model = False
    ignore_chain = True
    ignore_agent = True
    ignore_retriever = True
    ignore_retry = True
    ignore_custom_event = True

    def __init__(self, engine: CostEngine | None = None, *, check_budgets: bool = True) -> None:
        super().__init__()
        # Checked here: a wrong type would otherwise fail inside every call's
        # callback, far from the line that made the mistake.
        if engine is not None and not isinstance(engine, CostEngine):
            hint = (
                "CostEngine(ledger=...)"
                if isinstance(engine, CostLedger)
                else "CostEngine() or None for the process default"
            )
            raise ConfigurationError(
                "CostCallbackHandler's engine must be a costopt_core.CostEngine, got "
                f"{_described(engine)}; pass {hint}"
            )
        if not isinstance(check_budgets, bool):
            raise ConfigurationError(f"check_budgets must be True or False, got {check_budgets!r}")
        self.engine = engine or default_engine()
        self.check_budgets = check_budgets
        # Runs between their start and end, by ``getattr(run_id, "int", run_id)``:
        # a UUID hashes in Python code, its int in C (and a caller's str id still
        # works). Only ever touched by single dict operations (set, pop), which
        # are atomic: no lock needed.
        self._runs: dict[Any, _Run] = {}
        # Streamed runs a costopt cache served (see on_llm_new_token).
        self._served: dict[Any, dict[str, Any]] = {}
        # Runs that have passed on a token (streams, or a streaming model's invoke).
        self._streamed: set[Any] = set()
        # What the chunks of a streamed run reported so far: (their usage_metadata
        # summed, the first model name one gave). A streamed run that stops
        # without its end event (a cancelled task, a failed stream) is priced
        # from it where the error event's answer has no usage (see _unended).
        self._seen: dict[Any, tuple[Any, str | None]] = {}
        # The asyncio task each run started in -> its runs not ended yet (key ->
        # run id). LangChain's agenerate sends no end event when its task is
        # cancelled (asyncio.wait_for, task.cancel()): when the task ends, those
        # runs' budget holds are released and the runs dropped (see _task_done).
        self._tasks: weakref.WeakKeyDictionary[asyncio.Task[Any], dict[Any, Any]] = (
            weakref.WeakKeyDictionary()
        )
        # Open completion batches by id(invocation_params), and the batch of each
        # of their runs (see _Batch). Only batch runs touch them, under the lock.
        self._batches: dict[int, _Batch] = {}
        self._batch_of: dict[Any, _Batch] = {}
        self._batch_lock = threading.Lock()
        # Completion-model runs (prompts) open now: see on_llm_error.
        self._completions: set[Any] = set()
        self.errors = 0

    @property
    def ledger(self) -> CostLedger:
        return self.engine.ledger

    # -- start --------------------------------------------------------------
    def _start(
        self,
        run_id: UUID,
        metadata: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
        messages: list[BaseMessage] | None = None,
        prompts: list[str] | None = None,
        batch_size: int | None = None,
    ) -> None:
        model = metadata.get("ls_model_name") if metadata else None
        if not model and params:
            model = params.get("model") or params.get("model_name") or params.get("model_id")
        tenant = run_tenant(metadata)
        tier = _first(metadata, (TIER_KEY,)) if metadata and TIER_KEY in metadata else None
        model = str(model) if model else None
        # A router wrapped in a cache reports "costopt-cached-costopt-router".
        router = str(params.get("_type") or "").endswith(_ROUTER_TYPE) if params else False
        key = getattr(run_id, "int", run_id)
        # A completion model's runs (prompts) are not tied to the task: LangChain's
        # agenerate starts each in a task of its own (asyncio.gather) that ends
        # before the call does, which would drop the run unrecorded; and its calls
        # report their end or error (a cancellation included) themselves.
        # A call with several runs (prompts): LangChain starts them all with the
        # same invocation_params dict, the call's identity (see _join_call).
        call = params if isinstance(batch_size, int) and batch_size > 1 else None
        if call is not None and _refused_call(call):
            return  # its call already failed: nothing will end this run
        batched = prompts is not None and call is not None
        pending = self._task_runs() if prompts is None else None
        if pending is not None:
            pending[key] = run_id
        self._runs[key] = (model, tenant, tier, time.perf_counter(), router, pending, call)
        _join_call(self, key, run_id, call)
        if prompts is not None:
            self._completions.add(key)
        prompt_tokens: int | None = None
        if self.check_budgets and model and self.engine.ledger.has_budgets:
            # The request's output cap bounds its cost: held against the budget, it
            # keeps a shared budget from being overspent by concurrent calls.
            out_cap = _max_output_tokens(params or {})
            # Bound tool schemas are sent, and billed, as input.
            tools = _bound_tools(params or {})
            try:
                if messages is not None:
                    estimate = self.engine.estimate(
                        model,
                        from_langchain_messages(messages),
                        max_output_tokens=out_cap,
                        tools=tools,
                    )
                else:
                    prompt_tokens = sum(self.engine.tokens.count(p, model) for p in prompts or [])
                    estimate = self.engine.estimate(
                        model,
                        input_tokens=prompt_tokens,
                        max_output_tokens=out_cap,
                        tools=tools,
                        input_tokens_approximate=self.engine.tokens.may_undercount(model),
                    )
            except Exception:
                log.exception("costopt could not estimate the cost of run %s", run_id)
                return
            try:
                if estimate is None and not router:
                    # No price, so no estimate: held as $0 and recorded as unknown,
                    # the call would never count against a budget. A block budget
                    # refuses it; a warn one warns (a router's own run has no
                    # price by design: the router checks its tiers' prices itself).
                    self.engine.check_unpriced(tenant, model)
                self.engine.check_budget(tenant, estimate, call_id=str(run_id))
            except BudgetExceededError:
                self._refuse_call(key, run_id, call)
                raise
        if batched:
            if prompt_tokens is None:
                prompt_tokens = sum(self.engine.tokens.count(p, model) for p in prompts or [])
            self._join_batch(key, params, batch_size, prompt_tokens)

    def _join_batch(self, key: Any, params: Any, size: Any, prompt_tokens: int) -> None:
        """Add a started run to its completion batch (see :class:`_Batch`)."""
        with self._batch_lock:
            batch = self._batches.get(id(params))
            if batch is None or batch.params is not params or batch.started >= batch.size:
                batch = self._batches[id(params)] = _Batch(params, size)
            batch.started += 1
            batch.open += 1
            batch.prompt_tokens[key] = prompt_tokens
            self._batch_of[key] = batch

    def _refuse_call(self, key: Any, run_id: UUID, call: Any) -> None:
        """A budget refused run ``key`` (of ``call``, if it has several runs): the call fails.

        LangChain raises the refusal from the start event: the call ends with
        no end or error event for the runs started before it, by this handler
        or the handlers before it (for its earlier prompts too), nor, under a
        completion model's ``agenerate``, for those started concurrently after
        it. Every handler's runs of the call are dropped here and their budget
        holds released; its later runs are dropped as they start (see
        :func:`_refused_call`).
        """
        if call is not None:
            with _refused_lock:
                _REFUSED_CALLS[id(call)] = call
                while len(_REFUSED_CALLS) > _REFUSED_KEPT:
                    del _REFUSED_CALLS[next(iter(_REFUSED_CALLS))]
        for handler, k, rid in _leave_call(key, call):
            handler._abandon(k, run_id if rid is None else rid)
        self._abandon(key, run_id)

    def _abandon(self, key: Any, run_id: Any) -> None:
        """Drop an open run that will never end (its call was refused), releasing its hold."""
        run = self._runs.pop(key, None)
        if run is None:
            return
        self._end(key, run)
        self._served.pop(key, None)
        self._seen.pop(key, None)
        if self._batch_of:
            self._leave_batch(key, None)  # the call failed: its batch is never recorded
        self._release(run, run_id)

    def _leave_batch(
        self, key: Any, ended: tuple[Any, LLMResult, _Run, UUID, float] | None
    ) -> _Batch | None:
        """A batch run ended (``ended``) or failed (None): its batch once all its runs are done.

        Returns:
            The batch when this was its last open run (it is then closed), else None;
            None too for a run of no batch.
        """
        with self._batch_lock:
            batch = self._batch_of.pop(key, None)
            if batch is None:
                return None
            batch.open -= 1
            if ended is not None:
                batch.ended.append(ended)
            else:
                batch.prompt_tokens.pop(key, None)  # no answer, no share
            if batch.open > 0:
                return None
            if self._batches.get(id(batch.params)) is batch:
                del self._batches[id(batch.params)]
            return batch

    def _task_runs(self) -> dict[Any, Any] | None:
        """The open runs of the asyncio task running now (None outside a task)."""
        loop = asyncio._get_running_loop()  # None without raising, unlike get_running_loop
        if loop is None:
            return None
        task = asyncio.current_task(loop)
        if task is None:
            return None
        pending = self._tasks.get(task)
        if pending is None:
            # One done-callback per task, however many calls it makes.
            pending = self._tasks[task] = {}
            task.add_done_callback(self._task_done)
        return pending

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """Settle the runs a finished task left open: they will never end.

        A cancelled ``ainvoke`` (LangChain sends no event for it), or a call
        whose task swallowed the cancellation. One that had streamed tokens
        (a streaming model's ``ainvoke``, as LangGraph's ``stream_mode="messages"``
        or ``astream_events`` runs it) was billed: it is recorded as a stopped
        stream is (see :meth:`_unended`). The others spent nothing: their
        holds are released and the runs dropped. Except a stream in a task that
        was not cancelled: its generator may go on in another task (a task that
        only awaited its first chunk), and reports its own end when it is closed.
        """
        pending = self._tasks.pop(task, None)
        if not pending:
            return
        cancelled = task.cancelled()
        for key, run_id in list(pending.items()):
            streamed = key in self._streamed
            if not cancelled and streamed:
                continue
            pending.pop(key, None)
            run = self._runs.pop(key, None)
            if run is None:
                self._served.pop(key, None)
                self._streamed.discard(key)
                self._seen.pop(key, None)
                continue
            seen = self._seen.pop(key, None)
            self._end(key, run)
            if streamed and self._unended(run, run_id, key, None, seen, "cancelled stream"):
                continue
            self._served.pop(key, None)
            self._release(run, run_id)

    def _release(self, run: _Run, run_id: Any) -> None:
        """Drop the budget hold of a run that spent nothing (cheap when none is held)."""
        if not self.check_budgets:
            return  # this handler held nothing
        try:
            self.engine.release_budget(run[1], str(run_id))
        except Exception:  # never fail the user's call over accounting
            self.errors += 1
            log.exception("costopt could not release the budget hold of run %s", run_id)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        name: str | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        # (LangChain's arguments are named: no dict is built for them on each call.)
        self._start(
            run_id,
            metadata,
            invocation_params,
            messages[0] if messages else [],
            batch_size=batch_size,
        )

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(run_id, metadata, invocation_params, prompts=prompts, batch_size=batch_size)

    # -- end ----------------------------------------------------------------
    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: Any = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        # A stream replayed from a costopt cache: its chunks carry the note (the
        # merged answer on_llm_end sees is a new object). A later note replaces
        # an earlier one: a stream shared from another request's call whose
        # opener stopped reading is, in the end, the one that paid for it.
        key = getattr(run_id, "int", run_id)
        if key in self._runs:
            self._streamed.add(key)
            if chunk is not None:
                info = SERVED.take(chunk, run=key)
                if info is not None:
                    self._served[key] = info
                message = getattr(chunk, "message", None)
                if message is not None:
                    self._note_chunk(key, message)

    def _note_chunk(self, key: Any, message: Any) -> None:
        """Keep what a streamed chunk reports for pricing: its usage, the model it names."""
        usage = getattr(message, "usage_metadata", None)
        meta = getattr(message, "response_metadata", None)
        name = (meta.get("model_name") or meta.get("model")) if meta else None
        if not usage and not name:
            return  # most chunks: text only
        name = name if isinstance(name, str) else None
        try:
            seen = self._seen.get(key)
            if seen is None:
                self._seen[key] = (usage or None, name)
                return
            total, first = seen
            if usage:
                # As LangChain merges the chunks' usage into the answer's.
                total = usage if total is None else add_usage(total, usage)
            self._seen[key] = (total, first or name)
        except Exception:  # never fail the user's call over accounting
            self.errors += 1
            log.exception("costopt could not read the usage of a chunk of run %s", key)

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        key = getattr(run_id, "int", run_id)
        run = self._runs.pop(key, None)
        if run is None:
            return  # not started through us, or already counted
        self._end(key, run)
        if self._seen:
            self._seen.pop(key, None)
        if self._batch_of and key in self._batch_of:
            # One run of a completion batch: priced with the others once all ended.
            batch = self._leave_batch(key, (key, response, run, run_id, time.perf_counter()))
            if batch is not None:
                self._record_batch(batch)
            return
        self._record_safely(response, run, run_id)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        response: LLMResult | None = None,
        **kwargs: Any,
    ) -> None:
        key = getattr(run_id, "int", run_id)
        run = self._runs.pop(key, None)
        if run is None:
            self._served.pop(key, None)
            return
        streamed = key in self._streamed
        # A completion call reports its own cancellation (a chat call does not):
        # only a stream the caller stopped reading was billed, not a cancelled call.
        cancelled_call = key in self._completions and not streamed
        seen = self._seen.pop(key, None) if self._seen else None
        self._end(key, run)
        if self._batch_of and key in self._batch_of:
            # The batch's other runs may have ended (they are priced without this one).
            batch = self._leave_batch(key, None)
            if batch is not None and batch.ended:
                self._record_batch(batch)
        # Billed: a stream the caller stopped reading (the prompt at least), and
        # a call that failed after it began to answer (a stream cut off part
        # way, an error after its usage chunk). Not a call refused before it
        # answered, which spent nothing.
        billed = isinstance(error, _STOPPED) or streamed or _reports_usage(response)
        if billed and not cancelled_call:
            what = "stopped stream" if isinstance(error, _STOPPED) else "failed stream"
            if self._unended(run, run_id, key, response, seen, what):
                return
        self._served.pop(key, None)
        # The call spent nothing: drop its hold on the budgets.
        self._release(run, run_id)

    def _end(self, key: Any, run: _Run) -> None:
        """Forget a run that ended: it is no longer its task's to clean up."""
        self._streamed.discard(key)
        self._completions.discard(key)
        pending = run[5]
        if pending is not None:
            pending.pop(key, None)
        if run[6] is not None or _RUN_HANDLERS:
            _leave_call(key, run[6])

    def _unended(
        self,
        run: _Run,
        run_id: Any,
        key: Any,
        response: LLMResult | None,
        seen: tuple[Any, str | None] | None,
        what: str,
    ) -> bool:
        """Record a run that was billed but will not end (True if recorded).

        A stream the caller stopped reading, one that failed after it began to
        answer, a streaming call whose task was cancelled: recorded with the
        usage of what was read, if a chunk gave it, else unknown (unpriced),
        never $0. ``response`` is the error event's answer (the chunks merged,
        on a stream's own path); where it reports no usage the chunks' usage
        (``seen``) prices it. A router's run is left out: the router records
        its own unfinished streams (RouterChatModel._unread).
        """
        if run[4]:
            return False
        stopped = response or LLMResult(generations=[])
        if seen is not None and seen[0] and not _reports_usage(stopped):
            usage, name = seen
            try:
                message = AIMessage(
                    content="",
                    usage_metadata=usage,
                    response_metadata={"model_name": name} if name else {},
                )
                stopped = LLMResult(generations=[[ChatGeneration(message=message)]])
            except Exception:  # recorded unpriced rather than not at all
                self.errors += 1
                log.exception("costopt could not read the usage of the chunks of run %s", run_id)
        recorded = self._record_safely(stopped, run, run_id, what=what)
        if recorded:
            self._served.pop(key, None)
        return recorded

    def _model_name(self, answered: Any, named: str | None) -> Any:
        """The model to price: the one the answer names, else the one the run named.

        A stream whose every chunk names the model gets the names concatenated
        when LangChain merges the chunks ("gpt-4o-minigpt-4o-mini", langchain
        issue #38366): such a name is read as the name it repeats, and an
        unpriced name that holds the run's priced one (chunks naming the model
        differently) as the run's. Any other name the catalog does not price is
        kept, unpriced: a proxy or fine-tune that answers under another name is
        not priced as the model asked for.
        """
        if not answered or not isinstance(answered, str):
            return answered or named
        if named is None or answered == named:
            return answered
        # The shortest prefix the whole name repeats (the name itself when none):
        # found by where the name recurs in itself doubled.
        period = (answered + answered).find(answered, 1)
        catalog = self.engine.catalog
        if period < len(answered):
            piece = answered[:period]
            if piece == named or piece in catalog:
                return piece
        if named in answered and named in catalog and answered not in catalog:
            return named
        return answered

    def _record_batch(self, batch: _Batch) -> None:
        """Price the runs of a completion batch whose runs have all ended.

        A run whose generation reports its own usage is priced from it. The
        usage the model reported for the whole request (on one run's
        ``llm_output``, the others' emptied by ``LLMResult.flatten``), less
        those, is split over the other runs in proportion to their counted
        prompt tokens (input) and answer tokens (output), and each share is
        recorded as an estimate: the shares add up to what the provider
        reported, so the totals are the provider's. With no summed usage, each
        run keeps what it reported (unknown: cost None, never $0).
        """
        try:
            ended = batch.ended
            own = [_generation_usage(response) for _, response, _, _, _ in ended]
            totals = [_output_usage(response) for _, response, _, _, _ in ended]
            # flatten() empties "token_usage" on all runs but the first; a model that
            # names it "usage" has the same sum copied onto every run: one sum either way.
            summed: list[Any] = []
            for t in totals:
                if t is not None and t not in summed:
                    summed.append(t)
            shares: list[Usage | None] = [
                None if u is None else usage_or_unknown(normalize_usage, u) for u in own
            ]
            rest = [i for i, u in enumerate(shares) if u is None]
            if rest and len(summed) == 1 and (len(ended) > 1 or batch.size > 1):
                total = usage_or_unknown(normalize_usage, summed[0])
                total = _less(total, [u for u in shares if u is not None])
                model = ended[0][2][0]
                count = self.engine.tokens.count
                in_w = [batch.prompt_tokens.get(ended[i][0], 0) for i in rest]
                out_w = [
                    sum(count(g.text, model) for g in ended[i][1].generations[0])
                    if ended[i][1].generations
                    else 0
                    for i in rest
                ]
                # Prompts of the batch this handler saw no run of (it was given to
                # some elements only) had their share of the sum too: as much
                # each as the mean of those seen, left out of the records.
                unseen = max(batch.size - batch.started, 0)
                if unseen and in_w:
                    in_w += [round(sum(in_w) / len(in_w))] * unseen
                    out_w += [round(sum(out_w) / len(out_w))] * unseen
                split = split_usage(total, in_w, out_w)[: len(rest)]
                for i, share in zip(rest, split, strict=True):
                    shares[i] = share
                estimated = set(rest)
            else:
                estimated = set()
        except Exception:  # never fail the user's call over accounting
            self.errors += 1
            log.exception("costopt could not split the usage of a completion batch")
            shares, estimated = [None] * len(batch.ended), set()
        for i, (_, response, run, run_id, end) in enumerate(batch.ended):
            usage, estimate = shares[i], i in estimated
            self._record_safely(response, run, run_id, usage=usage, estimated=estimate, end=end)

    def _record_safely(
        self,
        response: LLMResult,
        run: _Run,
        run_id: UUID,
        *,
        what: str = "run",
        usage: Usage | None = None,
        estimated: bool = False,
        end: float | None = None,
    ) -> bool:
        """:meth:`_record`, never failing the user's call over accounting; True if recorded."""
        try:
            self._record(response, run, run_id, usage=usage, estimated=estimated, end=end)
        except Exception:
            self.errors += 1
            log.exception("costopt could not record %s %s", what, run_id)
            return False
        return True

    def _record(
        self,
        response: LLMResult,
        run: _Run,
        run_id: UUID,
        *,
        usage: Usage | None = None,
        estimated: bool = False,
        end: float | None = None,
    ) -> None:
        """Price and record one ended run.

        Args:
            response: the run's result.
            run: the run as it started.
            run_id: its LangChain run id (the record's call id).
            usage: the run's usage when its batch worked it out (its own, or
                its share of the batch's); read from ``response`` when None.
            estimated: ``usage`` is a share of a batch's summed usage.
            end: ``time.perf_counter()`` when the run ended (now if None).
        """
        given = usage
        message: AIMessage | None = None
        gen: Any = None
        try:
            gen = response.generations[0][0]
            if isinstance(gen, ChatGeneration) and isinstance(gen.message, AIMessage):
                message = gen.message
        except IndexError:
            pass
        outcome: CallOutcome = "model"
        model, tenant, tier, start = run[0], run[1], run[2], run[3]
        named = model
        prior: Mapping[str, Any] | None = None
        if message is not None:
            meta = message.response_metadata or {}
            model = self._model_name(meta.get("model_name") or meta.get("model"), named)
            um = message.usage_metadata
            if um is not None:
                usage = usage_or_unknown(usage_from_langchain, um)
            else:
                # Some integrations report usage only in the provider's own shape
                # (OpenAI's token_usage, with its cached prompt tokens), on the
                # message or in the result's llm_output.
                llm_output = response.llm_output or {}
                usage = usage_or_unknown(
                    normalize_usage,
                    meta.get("token_usage")
                    or meta.get("usage")
                    or llm_output.get("token_usage")
                    or llm_output.get("usage"),
                )
            # langchain-core marks answers served from its LLM cache this way.
            if um is not None and um.get("total_cost") == 0:
                outcome = "cache_exact"
            prior = _mapping(meta.get(METADATA_KEY))
            # A costopt cache notes the answers it serves (a replayed stream: its
            # run) without telling the caller; with expose_cache_info it also marks
            # the message. A router says which tier answered.
            served: Mapping[str, Any] | None = SERVED.take(gen, run=getattr(run_id, "int", run_id))
            if served is None and self._served:
                served = self._served.pop(getattr(run_id, "int", run_id), None)
            if served is None and prior is not None:
                served = prior
            if served is not None:
                outcome = served_outcome(served) or outcome
            if prior is not None:
                tier = tier or prior.get("tier")
        else:
            llm_output = response.llm_output or {}
            if given is not None:
                usage = given
            else:
                # The request's usage, else what the generation reports of its own.
                usage = usage_or_unknown(
                    normalize_usage, _output_usage(response) or _generation_usage(response)
                )
            model = self._model_name(llm_output.get("model_name") or llm_output.get("model"), named)
        model = str(model or "unknown")
        latency_ms = ((time.perf_counter() if end is None else end) - start) * 1000.0
        if estimated:
            # A share of a batch's summed usage: the record says it is an estimate.
            record = self.engine.record_call(
                model=model,
                usage=usage,
                call_id=str(run_id),
                tier=tier,
                tenant=tenant,
                outcome=outcome,
                framework="langchain",
                latency_ms=latency_ms,
                estimated=True,
            )
            log.debug("costopt priced run %s at %s from a batch share", run_id, record.cost_usd)
            return
        priced = self.engine.record_call_deferred(
            model=model,
            usage=usage,
            call_id=run_id,
            tier=tier,
            tenant=tenant,
            outcome=outcome,
            framework="langchain",
            latency_ms=latency_ms,
        )
        if message is not None and outcome == "model":
            # In place (no pydantic re-validation). Only freshly generated answers
            # are written; copies served from a cache are left as they are. What a
            # router put there (its route) is kept.
            fresh = {
                "model": model,
                "tier": tier,
                "mode": "sync",
                "served_by": outcome,
                "cost_usd": money_str(priced.cost_usd),
                "baseline_cost_usd": money_str(priced.baseline_cost_usd),
            }
            message.response_metadata[METADATA_KEY] = fresh if prior is None else {**prior, **fresh}


_tracking: ContextVar[CostCallbackHandler | None] = ContextVar("costopt_track_costs", default=None)
register_configure_hook(_tracking, inheritable=True)


@contextmanager
def track_costs(
    engine: CostEngine | None = None, *, check_budgets: bool = True
) -> Generator[CostCallbackHandler, None, None]:
    """Price every LangChain call made inside the ``with`` block.

    Like ``get_usage_metadata_callback``, no callback needs to be passed. By
    default the block records into a child of the engine in effect (the
    enclosing block's, else the default engine): a fresh ledger, so the
    block's figures are its own, with that engine's prices, baseline, embedder
    and token counter. Its budgets still apply to every call in the block, and
    the block's calls are recorded in its ledger too (once, even when a
    handler of that engine sees them as well), so a process-wide budget cannot
    be bypassed by opening a block, and an outer block's figures include its
    inner blocks' calls. Budgets added to ``costs.engine`` apply to the block
    alone.

    Example:
        >>> with track_costs() as costs:  # doctest: +SKIP
        ...     chain.invoke("...")
        >>> costs.ledger.totals().cost_usd  # doctest: +SKIP
    """
    if engine is None:
        engine = current_engine().child()
    handler = CostCallbackHandler(engine, check_budgets=check_budgets)
    token = _tracking.set(handler)
    try:
        # Retrievers, summarizers, memories and batch jobs in the block book their
        # savings into the block's ledger too.
        with engine_scope(engine):
            yield handler
    finally:
        _tracking.reset(token)
