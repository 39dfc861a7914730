"""The ``local`` batch provider: runs a batch through any chat function, concurrently.

For models without a batch API (local models, providers that only bill real
time) and for tests: the queue, splitting, retries and accounting are the
same as with a provider batch API, but the requests run here, at most
``max_concurrency`` at a time, each retried on transient errors (timeouts,
rate limits, lost connections, server errors; see :func:`transient_error`).
Its calls are billed at real-time prices, so its ``mode`` is ``"sync"`` and
the job records them as such (no ``batch`` saving).

Results live in this object's memory, keyed by batch id: a batch that has
not been collected when the process ends is lost, and the job that finds it
gone (``BatchNotFoundError`` on poll) queues its requests again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from costopt_core.batch._sdk import Steps, arun_steps, run_steps
from costopt_core.batch.provider import (
    BatchLimits,
    BatchRequest,
    BatchResult,
    RemoteBatch,
    RemoteStatus,
    retryable_status,
)
from costopt_core.batch.queue import request_to_json
from costopt_core.errors import BatchError, BatchNotFoundError, ConfigurationError
from costopt_core.types import CallMode

__all__ = ["AsyncChatFn", "ChatFn", "LocalBatchProvider", "transient_error"]

#: Answers one request: a ``BatchResult`` (its ``id`` is set by the provider),
#: or just the text (succeeded, usage unknown).
ChatFn = Callable[[BatchRequest], "BatchResult | str"]
AsyncChatFn = Callable[[BatchRequest], Awaitable["BatchResult | str"]]

#: Local batches have no provider limits; these keep one batch's memory bounded.
DEFAULT_LOCAL_LIMITS = BatchLimits(max_requests=50_000, max_bytes=200 * 1024 * 1024)
#: How long ``acancel`` waits for the stopped tasks (a model call that ignores
#: cancellation should not hold the caller).
_CANCEL_WAIT_S = 5.0

# The SDK error classes (openai, anthropic, httpx, google...) of a failure that
# may pass if the same request is sent again; matched by name, no SDK imported.
_TRANSIENT_NAMES = frozenset(
    {
        "APIConnectionError",
        "APITimeoutError",
        "ConnectError",
        "ConnectTimeout",
        "DeadlineExceeded",
        "InternalServerError",
        "OverloadedError",
        "PoolTimeout",
        "RateLimitError",
        "ReadError",
        "ReadTimeout",
        "RemoteProtocolError",
        "ResourceExhausted",
        "ServiceUnavailable",
        "ServiceUnavailableError",
        # Bedrock (botocore ClientError subclasses named after the error code).
        "ThrottlingException",
        "ServiceUnavailableException",
        "InternalServerException",
        "ModelTimeoutException",
        "ModelNotReadyException",
        "TooManyRequests",
        "WriteTimeout",
    }
)


def _status_code(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        # botocore's ClientError keeps the HTTP status in a dict (Bedrock).
        meta = response.get("ResponseMetadata")
        code = meta.get("HTTPStatusCode") if isinstance(meta, Mapping) else None
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    for owner in (exc, response):
        # "code": google-genai's APIError.
        for attr in ("status_code", "status", "code"):
            code = getattr(owner, attr, None)
            if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
                return code
    return None


def transient_error(exc: BaseException) -> bool:
    """Whether sending the same request again may succeed: a timeout, a lost
    connection, a rate limit or a server error (HTTP 408, 429, 5xx).

    The same rule as a provider batch's own per-request errors
    (:func:`retryable_status`); anything else (a bad request, a context overflow, a bug) fails the
    same way every time.
    """
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    code = _status_code(exc)
    if code is not None:
        return retryable_status(code)
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)


class _LocalBatch:
    __slots__ = ("canceled", "created_at", "requests", "results", "tasks")

    def __init__(self, requests: Sequence[BatchRequest], created_at: float) -> None:
        self.requests = list(requests)
        self.results: dict[str, BatchResult] = {}
        self.canceled = False
        self.created_at = created_at
        # The requests' tasks of an ``asubmit`` (stopped by a cancel).
        self.tasks: list[asyncio.Task[None]] = []


class LocalBatchProvider:
    """A ``BatchProvider`` that answers each request with a chat function.

    Args:
        chat: answers one request (run on a thread pool). Needed for the sync
            methods unless ``achat`` is given (then it runs in a fresh event loop
            per request on the pool).
        achat: async twin of ``chat``, used by ``asubmit`` (bounded by a
            semaphore on the running loop); without it ``asubmit`` runs ``chat``
            in threads.
        max_concurrency: requests running at once.
        max_retries: further tries of a request whose error is worth retrying
            (``retry_on``); after the last one it is reported ``errored`` and
            ``retryable``, so the job may submit it again. Other exceptions fail
            at once, not retryable. ``BatchFront`` passes 0: the job's
            ``max_attempts`` is then the one retry budget.
        retry_backoff_s: wait before retry ``n`` is ``retry_backoff_s * 2**n``.
        retry_on: exception types worth retrying; ``None`` (the default): the
            transient ones (:func:`transient_error`).
        limits: per-batch limits the job splits by.
        name: stored with each batch; give two local providers sharing a queue
            file different names.
        clock: seconds since the epoch (injectable for tests).

    Raises:
        ConfigurationError: neither ``chat`` nor ``achat``, or a bound out of range.
    """

    mode: CallMode = "sync"

    def __init__(
        self,
        chat: ChatFn | None = None,
        *,
        achat: AsyncChatFn | None = None,
        max_concurrency: int = 8,
        max_retries: int = 2,
        retry_backoff_s: float = 0.0,
        retry_on: tuple[type[BaseException], ...] | None = None,
        limits: BatchLimits = DEFAULT_LOCAL_LIMITS,
        name: str = "local",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if chat is None and achat is None:
            raise ConfigurationError(
                "LocalBatchProvider needs chat= (a function BatchRequest -> BatchResult | str) "
                "or achat= (its async twin)"
            )
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {max_retries}")
        if retry_backoff_s < 0:
            raise ConfigurationError(f"retry_backoff_s must be >= 0, got {retry_backoff_s}")
        if limits.max_requests < 1 or limits.max_bytes < 1:
            raise ConfigurationError(f"limits must be positive, got {limits}")
        self.chat = chat
        self.achat = achat
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.retry_on = retry_on
        self.limits = limits
        self.name = name
        self.clock = clock
        self._batches: dict[str, _LocalBatch] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"LocalBatchProvider(name={self.name!r}, max_concurrency={self.max_concurrency})"

    # -- running one request ------------------------------------------------
    def _finish(self, batch: _LocalBatch, request: BatchRequest, out: BatchResult | str) -> None:
        if isinstance(out, str):
            result = BatchResult(id=request.id, status="succeeded", text=out, model=request.model)
        elif isinstance(out, BatchResult):
            result = dataclasses.replace(out, id=request.id, model=out.model or request.model)
        else:
            raise TypeError(
                f"the chat function returned {type(out).__name__}, not a BatchResult or str"
            )
        self._record(batch, result)

    def _error(self, request: BatchRequest, exc: BaseException, retryable: bool) -> BatchResult:
        return BatchResult(
            id=request.id,
            status="errored",
            model=request.model,
            error=f"{type(exc).__name__}: {exc}",
            retryable=retryable,
        )

    def _canceled(self, request: BatchRequest) -> BatchResult:
        return BatchResult(
            id=request.id, status="canceled", model=request.model, error="batch canceled"
        )

    def _interrupted(self, request: BatchRequest) -> BatchResult:
        return BatchResult(
            id=request.id,
            status="expired",
            model=request.model,
            retryable=True,
            error=(
                "the event loop running it stopped before it finished (an asyncio.run that "
                "returned after asubmit); it is run again on the next wait"
            ),
        )

    def _record(self, batch: _LocalBatch, result: BatchResult) -> None:
        with self._lock:
            batch.results[result.id] = result

    def _record_if_none(self, batch: _LocalBatch, result: BatchResult) -> None:
        """Record ``result`` unless its request already has one (a run that ended
        without recording one: see :meth:`_run_one` and :meth:`_task_done`)."""
        with self._lock:
            batch.results.setdefault(result.id, result)

    def _tries(
        self,
        batch: _LocalBatch,
        request: BatchRequest,
        call: Callable[[BatchRequest], Any],
        sleep: Callable[[float], Any],
    ) -> Steps[None]:
        """One request's tries, for both paths: ``call`` and ``sleep`` answer or are awaited."""
        for attempt in range(self.max_retries + 1):
            if batch.canceled:
                self._record(batch, self._canceled(request))
                return
            try:
                out = yield call(request)
            except Exception as exc:
                if not self._retryable(exc):
                    self._record(batch, self._error(request, exc, False))
                    return
                if attempt < self.max_retries:
                    if self.retry_backoff_s:
                        yield sleep(self.retry_backoff_s * 2**attempt)
                    continue
                self._record(batch, self._error(request, exc, True))
                return
            self._finish(batch, request, out)
            return

    def _retryable(self, exc: BaseException) -> bool:
        if self.retry_on is None:
            return transient_error(exc)
        return isinstance(exc, self.retry_on)

    def _call(self, request: BatchRequest) -> BatchResult | str:
        if self.chat is not None:
            return self.chat(request)
        assert self.achat is not None
        return asyncio.run(_call_async(self.achat, request))

    def _acall(self, request: BatchRequest) -> Awaitable[BatchResult | str]:
        if self.achat is not None:
            return self.achat(request)
        assert self.chat is not None
        return asyncio.to_thread(self.chat, request)

    def _run_one(self, batch: _LocalBatch, request: BatchRequest) -> None:
        """One request on a worker thread. An exception ``_tries`` does not turn into a
        result (a bad answer from ``chat``...) would die in the pool's future and
        leave the batch unfinished for good: it ends the request ``errored``, as a
        failed task does on the async path (:meth:`_task_done`)."""
        try:
            run_steps(self._tries(batch, request, self._call, time.sleep))
        except BaseException as exc:
            self._record_if_none(batch, self._error(request, exc, False))
            if not isinstance(exc, Exception):
                raise

    async def _arun_one(
        self, batch: _LocalBatch, request: BatchRequest, sem: asyncio.Semaphore
    ) -> None:
        async with sem:
            await arun_steps(self._tries(batch, request, self._acall, asyncio.sleep))

    def _task_done(
        self, batch: _LocalBatch, request: BatchRequest, task: asyncio.Task[None]
    ) -> None:
        """A request's task ended without a result: stopped by a cancel (even before it
        started), this request is canceled; stopped by its event loop closing (an
        ``asyncio.run`` that returned), it expired, so the job runs it again."""
        if task.cancelled():
            result = self._canceled(request) if batch.canceled else self._interrupted(request)
        elif (exc := task.exception()) is not None:
            result = self._error(request, exc, False)
        else:
            return
        self._record_if_none(batch, result)

    # -- the seam -----------------------------------------------------------
    def request_size(self, request: BatchRequest) -> int:
        return len(request_to_json(request).encode())

    def _new(self, requests: Sequence[BatchRequest]) -> tuple[str, _LocalBatch]:
        if not requests:
            raise BatchError("cannot submit an empty batch")
        if len(requests) > self.limits.max_requests:
            raise BatchError(
                f"{len(requests)} requests exceed this provider's limit of "
                f"{self.limits.max_requests} per batch; split them (BatchJob does)"
            )
        batch_id = f"local_{uuid.uuid4().hex}"
        batch = _LocalBatch(requests, self.clock())
        with self._lock:
            self._batches[batch_id] = batch
        return batch_id, batch

    def submit(self, requests: Sequence[BatchRequest]) -> str:
        batch_id, batch = self._new(requests)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.max_concurrency, thread_name_prefix="costopt-batch"
                )
            pool = self._pool
        for request in batch.requests:
            pool.submit(self._run_one, batch, request)
        return batch_id

    async def asubmit(self, requests: Sequence[BatchRequest]) -> str:
        batch_id, batch = self._new(requests)
        sem = asyncio.Semaphore(self.max_concurrency)
        for request in batch.requests:
            task = asyncio.ensure_future(self._arun_one(batch, request, sem))
            # The loop keeps only weak references to tasks.
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(functools.partial(self._task_done, batch, request))
            batch.tasks.append(task)
        return batch_id

    def _get(self, batch_id: str) -> _LocalBatch:
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None:
            raise BatchNotFoundError(
                f"local batch {batch_id!r} is unknown to this provider: local results live in "
                "memory and were lost with the process that ran them; the job queues its "
                "requests again"
            )
        return batch

    def poll(self, batch_id: str) -> RemoteBatch:
        batch = self._get(batch_id)
        with self._lock:
            counts: dict[str, int] = {}
            for r in batch.results.values():
                counts[r.status] = counts.get(r.status, 0) + 1
            pending = len(batch.requests) - len(batch.results)
        counts["processing"] = pending
        status: RemoteStatus = "in_progress"
        if pending == 0:
            status = "ended"
        elif batch.canceled:
            status = "canceling"
        return RemoteBatch(id=batch_id, status=status, counts=counts)

    def results(self, batch_id: str) -> list[BatchResult]:
        batch = self._get(batch_id)
        with self._lock:
            if len(batch.results) < len(batch.requests):
                raise BatchError(
                    f"local batch {batch_id!r} has not ended ({len(batch.results)} of "
                    f"{len(batch.requests)} requests answered); poll until it has"
                )
            return [batch.results[r.id] for r in batch.requests]

    def cancel(self, batch_id: str) -> None:
        """Stop the batch: requests not started end ``canceled``; with ``asubmit`` the
        running ones are stopped too (a sync ``chat`` call on a thread runs to its end)."""
        self._stop(self._get(batch_id))

    def _stop(
        self, batch: _LocalBatch, loop: asyncio.AbstractEventLoop | None = None
    ) -> list[asyncio.Task[None]]:
        """Mark ``batch`` canceled and cancel its running tasks; those of ``loop`` returned."""
        batch.canceled = True
        here: list[asyncio.Task[None]] = []
        for task in batch.tasks:
            if task.done():
                continue
            owner = task.get_loop()
            if owner is loop:
                task.cancel()
                here.append(task)
            elif not owner.is_closed():
                owner.call_soon_threadsafe(task.cancel)
        return here

    def forget(self, batch_id: str) -> None:
        """Drop a collected batch's results from memory (``BatchJob`` does after collecting)."""
        with self._lock:
            self._batches.pop(batch_id, None)

    async def apoll(self, batch_id: str) -> RemoteBatch:
        return self.poll(batch_id)

    async def aresults(self, batch_id: str) -> list[BatchResult]:
        return self.results(batch_id)

    async def acancel(self, batch_id: str) -> None:
        """:meth:`cancel`, then wait (briefly) until the stopped tasks on this loop have
        ended, so a poll right after collects the batch."""
        here = self._stop(self._get(batch_id), asyncio.get_running_loop())
        if here:
            await asyncio.wait(here, timeout=_CANCEL_WAIT_S)

    def close(self) -> None:
        """Stop the worker threads once the running requests finish."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


async def _call_async(fn: AsyncChatFn, request: BatchRequest) -> BatchResult | str:
    return await fn(request)
