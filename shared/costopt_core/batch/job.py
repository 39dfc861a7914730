"""``BatchJob``: the queue and a provider, from enqueue to priced results.

A job is a named set of requests in a :class:`BatchQueue` file. It submits
queued requests split by the provider's limits (``flush``), polls the
remote batches and stores their results (``poll``), puts failed and expired
requests back in the queue while attempts remain, and records each result
in the engine's ledger once, at the provider's rates (``mode = "batch"`` for
provider batch APIs, ``"sync"`` for the local executor). Decisions are the
pure functions of ``split.py``; this module is the thin shell around them,
with sync and async twins.

Everything a job knows is in the queue file, so a new process that opens
the same file and job name finds the submitted batches and collects them.
Each submit call is recorded before it is made, under a fresh token the
provider attaches to the batch, and resolved after: a process killed inside
the call leaves that record, and the next job to flush or poll asks the
provider for the token's batch (a :class:`RecoverableBatchProvider`) and
collects it, or queues the requests again when the provider never got them.
A provider that cannot look batches up gets them again, and runs (and
bills) them twice; each is still recorded once. The async twins share the
SQLite calls of the sync ones (short, local writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from costopt_core.batch._wire import job_custom_id
from costopt_core.batch.budget import BATCH_HOLD_TTL_S, HOLDS
from costopt_core.batch.provider import (
    CLOCK_SKEW_S,
    BatchProvider,
    BatchRequest,
    BatchResult,
    ProviderUnavailableError,
    RecoverableBatchProvider,
    RemoteBatch,
    Submission,
    SubmitRefusedError,
    retryable_status,
)
from costopt_core.batch.queue import (
    BatchQueue,
    OpenBatch,
    PendingSubmission,
    RequestState,
    StoredResult,
)
from costopt_core.batch.split import (
    decide_outcome,
    plan_batches,
    recovered_batch_is_ours,
    requeue_after_failed_submit,
    should_flush,
    submission_abandoned,
)
from costopt_core.engine import CostEngine, current_engine
from costopt_core.errors import (
    BatchError,
    BatchFailedError,
    BatchNotFoundError,
    BatchRequestError,
    ConfigurationError,
    config_error,
)
from costopt_core.ledger import MAX_HOLD_TTL_S
from costopt_core.types import CallMode, CallRecord, Usage

__all__ = ["BatchJob", "BatchJobConfig", "BatchNotFoundError", "BatchStatus"]

log = logging.getLogger(__name__)

#: Submission tokens this process is sending now (another job object must not resolve them).
_IN_FLIGHT: set[str] = set()
_IN_FLIGHT_LOCK = threading.Lock()


def _retry_later(exc: BatchError) -> bool:
    """Whether ``wait`` tries again after ``exc`` (see ``BatchJob._turn``).

    Only a provider that cannot answer now: a ``ProviderUnavailableError``
    (a timeout, a rate limit, a server error, no connection), or a refused
    submit call whose HTTP status says the same (408, 429, 5xx). Any other
    refusal (a wrong key, a project without access, a bad request: 400,
    401, 403, 404, 422...) would be refused again: it is raised at once.
    """
    if isinstance(exc, ProviderUnavailableError):
        return True
    if isinstance(exc, SubmitRefusedError):
        status = getattr(exc, "status_code", None)
        if status is None:
            status = getattr(exc.__cause__, "status_code", None)
        return isinstance(status, int) and retryable_status(status)
    return False


def _errored(request: BatchRequest, error: str) -> BatchResult:
    """The final result of a request that is never sent (it never could be)."""
    return BatchResult(id=request.id, status="errored", model=request.model, error=error)


def check_timeout(timeout_s: float | None) -> None:
    """``timeout_s`` of a wait: ``None`` (for good) or a finite number of seconds above 0.

    Raises:
        ConfigurationError: anything else (NaN or infinity would wait for good
            without saying so, a negative one would give up at once).
    """
    if timeout_s is None:
        return
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not math.isfinite(timeout_s)
        or timeout_s <= 0
    ):
        raise ConfigurationError(
            f"timeout_s must be a finite number of seconds above 0, or None to wait until "
            f"the batch ends; got {timeout_s!r}"
        )


class BatchJobConfig(BaseModel):
    """How a :class:`BatchJob` flushes, retries and polls. Bad values raise ``ConfigurationError``.

    Attributes:
        max_attempts: submissions of one request in all; a retryable failure
            (error, expiry, lost batch) is queued again until this is reached.
        max_pending: flush when this many requests are queued (``None``: no size trigger).
        max_wait_s: flush when the oldest queued request waited this long,
            checked on ``enqueue`` and ``poll`` (``None``: no age trigger).
        poll_interval_s: wait between polls in ``wait``; ``None`` uses the
            provider's ``poll_interval_s`` if it has one, else 10 s (0.05 s
            for a provider whose ``mode`` is ``sync``).
        submit_lease_s: how long a submit call made by a process on another
            host may take before this one treats it as abandoned and resolves
            it (a dead process on this host is noticed at once).
        budget_hold_ttl_s: how long a flush's budget hold counts at most
            (it is released when the results are collected). It must outlive
            the batch, or a later flush passes a budget on spend the running
            batch has committed: by default 25 h (:data:`BATCH_HOLD_TTL_S`,
            the providers' 24 h completion window plus an hour to submit and
            collect); poll within it. The hold of a process that died with a
            batch open lapses only then: with a shared budget store
            (``RedisLedger``) it counts, next to the batch's recorded spend,
            until this has passed.
        max_unavailable: polls or submits in a row that ``wait`` lets fail
            because the provider cannot answer now (a timeout, a rate limit,
            a server error, no connection) before it raises; each is tried
            again after the poll interval. Any other refusal (a wrong key, a
            bad request) is raised at once.
    """

    # Seconds are finite: an infinite wait or TTL overflows the timers that use it.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_attempts: int = Field(3, ge=1, le=100)
    max_pending: int | None = Field(None, ge=1)
    max_wait_s: float | None = Field(None, ge=0.0)
    poll_interval_s: float | None = Field(None, gt=0.0)
    submit_lease_s: float = Field(900.0, gt=0.0)
    budget_hold_ttl_s: float = Field(BATCH_HOLD_TTL_S, gt=0.0, le=MAX_HOLD_TTL_S)
    max_unavailable: int = Field(5, ge=0, le=1000)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error("BatchJobConfig", exc) from None


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """Requests of a job per state, and the remote batches it waits for.

    ``remote`` holds the provider's report of each open batch from the last
    poll (empty before any poll).
    """

    job: str
    queued: int
    submitted: int
    done: int
    failed: int
    canceled: int
    open_batches: int
    job_canceled: bool = False
    remote: tuple[RemoteBatch, ...] = field(default=())

    @property
    def total(self) -> int:
        return self.queued + self.submitted + self.done + self.failed + self.canceled

    @property
    def finished(self) -> int:
        """Requests with a final outcome (done, failed or canceled)."""
        return self.done + self.failed + self.canceled

    @property
    def complete(self) -> bool:
        """Nothing left to submit or collect."""
        return self.queued == 0 and self.submitted == 0 and self.open_batches == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "queued": self.queued,
            "submitted": self.submitted,
            "done": self.done,
            "failed": self.failed,
            "canceled": self.canceled,
            "open_batches": self.open_batches,
            "job_canceled": self.job_canceled,
            "total": self.total,
            "complete": self.complete,
        }


@dataclass(frozen=True, slots=True)
class _Collected:
    """What collecting one ended batch decided, before it is stored."""

    outcomes: dict[str, tuple[RequestState, BatchResult]]
    done: list[tuple[BatchRequest, BatchResult]]


class BatchJob:
    """Requests queued under one name, run through one provider, priced once each.

    Args:
        provider: where batches run (OpenAI, Anthropic, :class:`LocalBatchProvider`).
            Its optional ``mode`` attribute (``"batch"`` by default) is the
            billing mode results are recorded with.
        queue: the queue, or the path of its SQLite file.
        name: the job's name in the queue; request ids are unique within it.
        engine: prices and records results; :func:`default_engine` if omitted.
        config: flush, retry and poll settings (or pass them as keywords).
        framework: ``langchain`` / ``llamaindex`` label for the ledger.
        record: record succeeded results in the engine's ledger.
        clock: seconds since the epoch; ``sleep`` / ``asleep``: how ``wait``
            pauses (all injectable for tests).
        **settings: fields of :class:`BatchJobConfig` when ``config`` is omitted.

    Example:
        >>> job = BatchJob(LocalBatchProvider(chat), "jobs.db", name="nightly")  # doctest: +SKIP
        >>> request = BatchRequest(id="q1", model="gpt-4o-mini", messages=msgs)  # doctest: +SKIP
        >>> job.enqueue([request])  # doctest: +SKIP
        >>> job.wait(progress=True)  # doctest: +SKIP
        >>> job.results()["q1"].text  # doctest: +SKIP
    """

    def __init__(
        self,
        provider: BatchProvider,
        queue: BatchQueue | str | Path,
        *,
        name: str = "default",
        engine: CostEngine | None = None,
        config: BatchJobConfig | None = None,
        framework: str | None = None,
        record: bool = True,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        **settings: Any,
    ) -> None:
        if config is not None and settings:
            raise BatchError(f"pass config= or settings {sorted(settings)}, not both")
        self.config = config if config is not None else BatchJobConfig(**settings)
        self.provider = provider
        self.queue = queue if isinstance(queue, BatchQueue) else BatchQueue(queue)
        self.name = name
        self._engine = engine
        self.framework = framework
        self.record = record
        self.clock = clock
        self.sleep = sleep
        self.asleep = asleep
        self._remote: dict[str, RemoteBatch] = {}
        self._key: str | None = None

    def __repr__(self) -> str:
        return (
            f"BatchJob(name={self.name!r}, provider={self.provider.name!r}, queue={self.queue!r})"
        )

    @property
    def engine(self) -> CostEngine:
        return self._engine if self._engine is not None else current_engine()

    @property
    def mode(self) -> CallMode:
        """How results are billed: ``batch`` unless the provider says ``sync``."""
        mode = getattr(self.provider, "mode", "batch")
        return "sync" if mode == "sync" else "batch"

    @property
    def poll_interval_s(self) -> float:
        if self.config.poll_interval_s is not None:
            return self.config.poll_interval_s
        own = getattr(self.provider, "poll_interval_s", None)
        if isinstance(own, int | float) and own > 0:
            return float(own)
        return 0.05 if self.mode == "sync" else 10.0

    # -- status -------------------------------------------------------------
    def status(self) -> BatchStatus:
        """Requests per state, from the queue file (no provider call)."""
        counts = self.queue.counts(self.name)
        open_batches = self.queue.open_batches(self.name)
        return BatchStatus(
            job=self.name,
            queued=counts["queued"],
            submitted=counts["submitting"] + counts["submitted"],
            done=counts["done"],
            failed=counts["failed"],
            canceled=counts["canceled"],
            open_batches=len(open_batches),
            job_canceled=self.queue.is_canceled(self.name),
            remote=tuple(
                self._remote[b.remote_id] for b in open_batches if b.remote_id in self._remote
            ),
        )

    def results(self) -> dict[str, BatchResult]:
        """Final results per request id, in enqueue order (unfinished requests left out).

        ``done`` requests carry the provider's answer; ``failed`` ones the last
        error; a request canceled before it was submitted gets a ``canceled``
        result.
        """
        out: dict[str, BatchResult] = {}
        for s in self.queue.stored(self.name):
            if s.state in ("queued", "submitting", "submitted"):
                continue
            out[s.id] = s.result if s.result is not None else _never_sent(s)
        return out

    # -- enqueue ------------------------------------------------------------
    def enqueue(self, requests: Iterable[BatchRequest]) -> list[str]:
        """Queue requests durably (committed when this returns); may flush.

        Returns:
            The ids queued, in order.

        Raises:
            BatchError: an id is already in this job, or the job was canceled
                (nothing queued: a canceled job runs nothing again, use another
                name), the file cannot be written, or a triggered flush failed
                to submit.
        """
        reqs = list(requests)
        self.queue.enqueue(self.name, reqs, now=self.clock(), refuse_canceled=True)
        if self._flush_due():
            self.flush()
        return [r.id for r in reqs]

    async def aenqueue(self, requests: Iterable[BatchRequest]) -> list[str]:
        reqs = list(requests)
        self.queue.enqueue(self.name, reqs, now=self.clock(), refuse_canceled=True)
        if self._flush_due():
            await self.aflush()
        return [r.id for r in reqs]

    def _flush_due(self) -> bool:
        cfg = self.config
        if cfg.max_pending is None and cfg.max_wait_s is None:
            return False
        counts = self.queue.counts(self.name)
        oldest = self.queue.oldest_queued_at(self.name) if cfg.max_wait_s is not None else None
        age = None if oldest is None else self.clock() - oldest
        return should_flush(
            counts["queued"], age, max_pending=cfg.max_pending, max_wait_s=cfg.max_wait_s
        )

    # -- request ids on the wire ---------------------------------------------
    def _wire_key(self) -> str | None:
        """The job's key put in front of its request ids at the provider; ``None``: ids as given.

        A provider asks for keyed ids with a true ``job_keyed_ids`` (the
        OpenAI and Anthropic ones do): a batch its lookup finds then answers
        this job's ids only, though two jobs (in this file or another) may
        use the same ones (``"0"``, ``"1"``...), and no id the caller picked
        breaks the API's ``custom_id`` rule.
        """
        if not getattr(self.provider, "job_keyed_ids", False):
            return None
        if self._key is None:
            self._key = self.queue.job_key(self.name, now=self.clock())
        return self._key

    def _wire_ids(self, ids: Iterable[str]) -> dict[str, str]:
        """Each request id by the id it has at the provider."""
        key = self._wire_key()
        return {(i if key is None else job_custom_id(key, i)): i for i in ids}

    # -- flush --------------------------------------------------------------
    def _plan_flush(self) -> list[list[tuple[int, BatchRequest, str]]]:
        """Queued requests (seq, with its id at the provider, own id), grouped into batches.

        Oversized ones, and ones the provider cannot put on the wire (a tool
        call whose ``arguments`` are not JSON...), are failed on the spot: a
        request that can never be sent must not hold back the others.
        """
        if self.queue.is_canceled(self.name):
            return []
        queued = self.queue.queued(self.name)
        if not queued:
            return []
        wire_ids = list(self._wire_ids(q.request.id for q in queued))
        wire = [dataclasses.replace(q.request, id=w) for q, w in zip(queued, wire_ids, strict=True)]
        failed: dict[str, tuple[RequestState, BatchResult]] = {}
        sendable: list[int] = []  # index in ``queued`` of each request sized
        sizes: list[int] = []
        for i, w in enumerate(wire):
            r = queued[i].request
            try:
                size = self.provider.request_size(w)
            except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
                error = (
                    f"request cannot be sent to the {self.provider.name} batch API: "
                    f"{type(exc).__name__}: {exc}. Fix the request (a tool call's 'arguments' "
                    'must be JSON text, e.g. \'{"city": "Paris"}\') and enqueue it again under '
                    "a new id"
                )
                failed[r.id] = ("failed", _errored(r, error))
                log.warning("batch job %r: request %r failed: %s", self.name, r.id, error)
                continue
            sendable.append(i)
            sizes.append(size)
        plan = plan_batches(sizes, self.provider.limits)
        limit = self.provider.limits.max_bytes
        for j in plan.too_large:
            r = queued[sendable[j]].request
            error = (
                f"request of {sizes[j]} bytes exceeds the {self.provider.name} batch limit of "
                f"{limit} bytes; shorten it or send it in real time"
            )
            failed[r.id] = ("failed", _errored(r, error))
        if failed:
            self.queue.finish_requests(self.name, failed, now=self.clock())
        return [
            [(queued[i].seq, wire[i], queued[i].request.id) for i in (sendable[j] for j in batch)]
            for batch in plan.batches
        ]

    def flush(self) -> list[str]:
        """Submit every queued request, split by the provider's limits.

        Submit calls a dead process left unresolved are resolved first.

        Returns:
            The remote batch ids submitted.

        The engine's budgets are checked first, for every request of the
        flush at the job's billing rates, and the estimate held until the
        results are collected.

        Raises:
            BudgetExceededError: a budget refuses the flush; nothing was
                submitted and the requests stay queued (a later flush or
                ``wait`` checks again).
            BatchError: the provider refused a batch, or could not be reached;
                its requests (and those of later batches) stay in the queue
                (after a lookup by token, for a provider that has one: the
                next flush or poll makes it).
        """
        self.recover()
        ids: list[str] = []
        plan = self._plan_flush()
        with self._budget_held(plan) as sent:
            for batch in plan:
                token = self._begin([s for s, _, _ in batch])
                if token is None:
                    continue
                with self._submitting(token, sent, [own for _, _, own in batch]):
                    remote_id = self.provider.submit([r for _, r, _ in batch], **self._tag(token))
                sent.extend(own for _, _, own in batch)
                ids.append(self._sent(token, remote_id))
        return ids

    async def aflush(self) -> list[str]:
        await self.arecover()
        ids: list[str] = []
        plan = self._plan_flush()
        with self._budget_held(plan) as sent:
            for batch in plan:
                token = self._begin([s for s, _, _ in batch])
                if token is None:
                    continue
                with self._submitting(token, sent, [own for _, _, own in batch]):
                    remote_id = await self.provider.asubmit(
                        [r for _, r, _ in batch], **self._tag(token)
                    )
                sent.extend(own for _, _, own in batch)
                ids.append(self._sent(token, remote_id))
        return ids

    # -- budgets ------------------------------------------------------------
    def _hold_key(self) -> tuple[str, str]:
        """This job among the jobs of the process: its queue file and name."""
        path = self.queue.path
        where = f"memory:{id(self.queue)}" if path == ":memory:" else str(path)
        return where, self.name

    @contextlib.contextmanager
    def _budget_held(
        self, plan: Sequence[Sequence[tuple[int, BatchRequest, str]]]
    ) -> Iterator[list[str]]:
        """Check the budgets for the whole flush before any of it is submitted, and
        hold the estimate; the body adds the own ids of the requests it sent.

        What the body did not send (a failed submit, requests another flush
        took) leaves the hold; the rest stays held until collected (``_store``).

        Raises:
            BudgetExceededError: a budget refuses the flush (nothing is held then).
        """
        requests = [(own, r) for batch in plan for _, r, own in batch]
        hold = HOLDS.take(
            self.engine,
            self._hold_key(),
            requests,
            self.mode,
            hold_ttl_s=self.config.budget_hold_ttl_s,
        )
        sent: list[str] = []
        try:
            yield sent
        finally:
            HOLDS.opened(self._hold_key(), hold, sent)

    def _tag(self, token: str) -> dict[str, str]:
        """The submit call's keywords: the token, for a provider that can find batches by it."""
        recoverable = isinstance(self.provider, RecoverableBatchProvider)
        return {"submission": token} if recoverable else {}

    @contextlib.contextmanager
    def _submitting(self, token: str, held: list[str], own: Sequence[str]) -> Iterator[None]:
        """Settle a submit call that raises; ``own``, its requests, stay ``held`` when
        the call may have reached the provider (a batch may be running on them until
        the lookup by token says otherwise)."""
        try:
            yield
        except BaseException as exc:
            err, requeued = self._submit_failed(token, exc)
            if not requeued:
                held.extend(own)
            if err is exc:
                raise
            raise err from exc

    def _begin(self, seqs: Sequence[int]) -> str | None:
        """Record the submit call about to be made; ``None`` if another flush took a request."""
        token = f"costopt-{uuid.uuid4().hex}"
        with _IN_FLIGHT_LOCK:
            _IN_FLIGHT.add(token)
        try:
            moved = self.queue.begin_submission(
                self.name,
                self.provider.name,
                token,
                seqs,
                now=self.clock(),
                owner=(socket.gethostname(), os.getpid()),
                keyed=self._wire_key() is not None,
            )
            if moved != len(seqs):  # a concurrent flush submits them: do not send twice
                self.queue.abort_submission(token, now=self.clock())
                _done_in_flight(token)
                return None
        except BaseException:
            _done_in_flight(token)
            raise
        return token

    def _sent(self, token: str, remote_id: str) -> str:
        try:
            carried = self.queue.mark_submitted(
                self.name, self.provider.name, remote_id, now=self.clock(), submission=token
            )
        finally:
            _done_in_flight(token)
        if carried == 0:
            log.warning(
                "batch job %r: batch %s was accepted after another process had resolved its "
                "submission; it is not collected here",
                self.name,
                remote_id,
            )
        return remote_id

    def _submit_failed(self, token: str, exc: BaseException) -> tuple[BaseException, bool]:
        """Settle a submit call that raised; the error to raise for it, and whether
        its requests were queued again.

        A refusal (``SubmitRefusedError``, or a ``ConfigurationError`` from a
        check made before anything was sent) puts the requests back in the
        queue, as does any error of a provider that cannot find batches by
        token (its ``BatchError`` means it left nothing running). Otherwise
        the record stays: a timeout may have reached the provider, so the
        next flush or poll asks it (:meth:`recover`) before sending the
        requests again. An interruption (``KeyboardInterrupt``, a cancelled
        task) also leaves the record for :meth:`recover`.
        """
        requeued = False
        try:
            if requeue_after_failed_submit(
                interrupted=not isinstance(exc, Exception),
                refused=isinstance(exc, SubmitRefusedError | ConfigurationError),
                recoverable=isinstance(self.provider, RecoverableBatchProvider),
            ):
                self.queue.abort_submission(token, now=self.clock())
                requeued = True
        finally:
            _done_in_flight(token)
        if not isinstance(exc, Exception) or isinstance(exc, BatchError):
            return exc, requeued
        # a provider should raise BatchError; be safe
        return BatchError(f"{self.provider.name} batch submit failed: {exc}"), requeued

    # -- recovery of interrupted submissions -------------------------------------------
    def _abandoned(self) -> list[PendingSubmission]:
        now, host = self.clock(), socket.gethostname()
        with _IN_FLIGHT_LOCK:
            in_flight = set(_IN_FLIGHT)
        return [
            p
            for p in self.queue.pending_submissions(self.name)
            if submission_abandoned(
                owner_host=p.owner_host,
                owner_pid=p.owner_pid,
                started_at=p.started_at,
                now=now,
                lease_s=self.config.submit_lease_s,
                host=host,
                pid=os.getpid(),
                owner_alive=p.owner_host == host and _pid_alive(p.owner_pid),
                in_flight_here=p.token in in_flight,
            )
        ]

    def _lookup(self, pending: PendingSubmission) -> Submission | None:
        """What to ask the provider about ``pending``; ``None``: requeue it unasked."""
        if pending.provider != self.provider.name:
            raise BatchError(
                f"batch job {self.name!r} has a submission to {pending.provider!r} that was "
                f"interrupted; open the job with that provider, not {self.provider.name!r}"
            )
        if not pending.request_ids:
            return None
        if not isinstance(self.provider, RecoverableBatchProvider):
            log.warning(
                "batch job %r: a process died while submitting %d requests to %s, which "
                "cannot look batches up; they are queued again and may be billed twice",
                self.name,
                len(pending.request_ids),
                self.provider.name,
            )
            return None
        return Submission(
            token=pending.token,
            started_at=pending.started_at,
            request_ids=pending.request_ids,
            known=self.queue.batch_ids(self.provider.name, since=pending.started_at - CLOCK_SKEW_S),
        )

    def _resolve(self, pending: PendingSubmission, remote_id: str | None) -> None:
        if remote_id is None:
            self.queue.abort_submission(pending.token, now=self.clock())
            # Nothing ran: a hold kept while that was unknown covers nothing now.
            HOLDS.settle(self._hold_key(), pending.request_ids)
            return
        self.queue.mark_submitted(
            self.name,
            self.provider.name,
            remote_id,
            now=self.clock(),
            submission=pending.token,
            recovered=True,
        )

    def recover(self) -> int:
        """Resolve submit calls a dead process left unfinished; returns how many.

        Each one's batch is looked up at the provider by its token and
        collected like any other, or its requests are queued again when the
        provider never got them. ``flush`` and ``poll`` call this first.
        """
        asks = self._questions()
        for pending, question in asks:
            found = None if question is None else self._finder().find_submission(question)
            self._resolve(pending, found)
        return len(asks)

    async def arecover(self) -> int:
        """Async twin of :meth:`recover`."""
        asks = self._questions()
        for pending, question in asks:
            found = None
            if question is not None:
                found = await self._finder().afind_submission(question)
            self._resolve(pending, found)
        return len(asks)

    def _questions(self) -> list[tuple[PendingSubmission, Submission | None]]:
        return [(p, self._lookup(p)) for p in self._abandoned()]

    def _finder(self) -> RecoverableBatchProvider:
        assert isinstance(self.provider, RecoverableBatchProvider)  # _lookup asked only then
        return self.provider

    # -- poll and collect -----------------------------------------------------
    def _open(self) -> list[OpenBatch]:
        batches = self.queue.open_batches(self.name)
        foreign = sorted({b.provider for b in batches if b.provider != self.provider.name})
        if foreign:
            raise BatchError(
                f"batch job {self.name!r} has open batches on provider(s) {foreign}, not "
                f"{self.provider.name!r}; open the job with the provider that submitted them"
            )
        return batches

    def _decide(self, batch: OpenBatch, results: Sequence[BatchResult] | None) -> _Collected:
        """Outcome of each request of an ended (or, with ``None``, lost) batch."""
        carried = self.queue.batch_requests(batch.provider, batch.remote_id)
        wire_ids = self._wire_ids(s.id for s in carried)
        # A batch submitted before ids carried the job's key answers with plain ids
        # (one pending at an upgrade): it is this job's if those match. Only such a
        # submission (an older version's, which did not record ``keyed``) may: a
        # batch found for a keyed one that answers plain ids ("0", "1"... as many
        # programs number their requests) is another program's.
        plain_ok = batch.keyed is not True
        plain = False
        foreign = False
        if batch.recovered and results is not None:
            answered = [r.id for r in results]
            if not recovered_batch_is_ours(answered, list(wire_ids)):
                plain = plain_ok and recovered_batch_is_ours(answered, [s.id for s in carried])
                foreign = not plain
        if foreign:
            log.warning(
                "batch job %r: batch %s found after a restart answers other requests; "
                "its requests are queued again",
                self.name,
                batch.remote_id,
            )
            results = ()
        by_id = {}
        for r in results or ():
            own = wire_ids.get(r.id)
            if own is None and plain_ok and (plain or not batch.recovered):
                own = r.id  # a batch submitted before ids carried the job's key
            if own is not None:
                by_id[own] = dataclasses.replace(r, id=own)
        canceled = self.queue.is_canceled(self.name)
        max_attempts = self.config.max_attempts
        outcomes: dict[str, tuple[RequestState, BatchResult]] = {}
        done: list[tuple[BatchRequest, BatchResult]] = []
        for s in carried:
            result = by_id.get(s.id)
            state = decide_outcome(
                result, attempts=s.attempts, max_attempts=max_attempts, job_canceled=canceled
            )
            if result is None:
                reason = (
                    f"batch {batch.remote_id} is gone from {batch.provider}"
                    if results is None
                    else f"{batch.provider} returned no result for this request"
                )
                result = BatchResult(
                    id=s.id, status="errored", model=s.request.model, error=reason, retryable=True
                )
            outcomes[s.id] = (state, result)
            if state == "done":
                done.append((s.request, result))
        return _Collected(outcomes, done)

    def _store(self, batch: OpenBatch, collected: _Collected) -> list[CallRecord]:
        claimed = self.queue.finish_requests(
            self.name,
            collected.outcomes,
            now=self.clock(),
            batch=(batch.provider, batch.remote_id),
        )
        self._remote.pop(batch.remote_id, None)
        forget = getattr(self.provider, "forget", None)
        if callable(forget):
            forget(batch.remote_id)
        if not claimed:  # another process (or job object) collected it first
            records: list[CallRecord] = []
        else:
            records = self._record(batch, collected.done)
        # After the records: the hold never stops counting before the spend does.
        HOLDS.settle(self._hold_key(), collected.outcomes)
        return records

    def _record(
        self, batch: OpenBatch, done: Sequence[tuple[BatchRequest, BatchResult]]
    ) -> list[CallRecord]:
        if not self.record:
            return []
        engine = self.engine
        mode = self.mode
        records = []
        for request, result in done:
            records.append(
                engine.record_call(
                    model=result.model or request.model,
                    usage=result.usage if result.usage is not None else Usage(),
                    mode=mode,
                    tenant=request.tenant,
                    framework=self.framework,
                    call_id=f"batch:{self.name}:{request.id}",
                    tags={"batch_job": self.name, "batch_id": batch.remote_id},
                )
            )
        return records

    def _not_found(self, batch: OpenBatch, exc: BatchNotFoundError) -> BatchNotFoundError | None:
        """The provider answered "no such batch" for ``batch``; the error to raise, if any.

        A provider whose batches can vanish (``batches_can_vanish``, true
        unless it says otherwise: the local provider's live in one process's
        memory) lost it: its requests are collected as lost (queued again
        while attempts remain). The OpenAI and Anthropic APIs keep a batch
        for weeks and answer 404 for one the client cannot see (an API key of
        another project, workspace or organization, another ``base_url``):
        sending the requests again would run and bill them twice, so the
        batch stays open and the error returned says so.
        """
        if getattr(self.provider, "batches_can_vanish", True):
            self._store(batch, self._decide(batch, None))
            return None
        err = BatchNotFoundError(
            f"batch job {self.name!r}: {self.provider.name} batch {batch.remote_id} was not "
            f"found with this client, though {self.provider.name} keeps its batches: this "
            "client cannot see it (an API key of another project, workspace or organization, "
            "or another base_url than the one that submitted it). The batch stays open in the "
            "queue file and nothing was submitted again: poll with a client of the account "
            f"that submitted it ({exc})"
        )
        err.__cause__ = exc
        return err

    def _collect(self) -> None:
        """Poll each open batch once and collect the ended ones."""
        for batch in self._open():
            try:
                remote = self.provider.poll(batch.remote_id)
            except BatchNotFoundError as exc:
                if (err := self._not_found(batch, exc)) is not None:
                    raise err from exc
                continue
            self._remote[batch.remote_id] = remote
            if remote.status == "ended":
                self._store(batch, self._decide(batch, self.provider.results(batch.remote_id)))

    async def _acollect(self) -> None:
        """Async twin of :meth:`_collect`."""
        for batch in self._open():
            try:
                remote = await self.provider.apoll(batch.remote_id)
            except BatchNotFoundError as exc:
                if (err := self._not_found(batch, exc)) is not None:
                    raise err from exc
                continue
            self._remote[batch.remote_id] = remote
            if remote.status == "ended":
                results = await self.provider.aresults(batch.remote_id)
                self._store(batch, self._decide(batch, results))

    def poll(self) -> BatchStatus:
        """Poll each open batch once, collect the ended ones, flush if a policy says so.

        Raises:
            BatchNotFoundError: a provider that keeps its batches (OpenAI,
                Anthropic) does not know one: the client is not the one that
                submitted it (the batch stays open; nothing is sent again).
        """
        self.recover()
        self._collect()
        if self._flush_due():
            self.flush()
        return self.status()

    async def apoll(self) -> BatchStatus:
        """Async twin of :meth:`poll`."""
        await self.arecover()
        await self._acollect()
        if self._flush_due():
            await self.aflush()
        return self.status()

    # -- wait ---------------------------------------------------------------
    def wait(self, *, timeout_s: float | None = None, progress: bool = False) -> BatchStatus:
        """Submit what is queued and poll until every request has an outcome.

        Retries (failed or expired requests with attempts left) are submitted
        again as they come back.

        Args:
            timeout_s: give up after this long (the job keeps running remotely;
                call ``wait`` again, from this or another process).
            progress: show a tqdm progress bar of finished requests.

        Raises:
            BatchError: ``timeout_s`` passed first, or the provider failed.
        """
        check_timeout(timeout_s)
        start = self.clock()
        failures = 0
        with _Progress(progress, self.name) as bar, self.named_errors():
            while True:
                polled: BatchStatus | BatchError
                try:
                    self.flush()
                    polled = self.poll()
                except BatchError as exc:
                    if not _retry_later(exc):
                        raise
                    polled = exc
                ended, failures = self._turn(polled, failures, start, timeout_s, bar)
                if ended is not None:
                    return ended
                self.sleep(self.poll_interval_s)

    async def await_(
        self, *, timeout_s: float | None = None, progress: bool = False
    ) -> BatchStatus:
        """Async twin of :meth:`wait` (``await`` is a keyword)."""
        check_timeout(timeout_s)
        start = self.clock()
        failures = 0
        with _Progress(progress, self.name) as bar, self.named_errors():
            while True:
                polled: BatchStatus | BatchError
                try:
                    await self.aflush()
                    polled = await self.apoll()
                except BatchError as exc:
                    if not _retry_later(exc):
                        raise
                    polled = exc
                ended, failures = self._turn(polled, failures, start, timeout_s, bar)
                if ended is not None:
                    return ended
                await self.asleep(self.poll_interval_s)

    def _turn(
        self,
        polled: BatchStatus | BatchError,
        failures: int,
        start: float,
        timeout_s: float | None,
        bar: _Progress,
    ) -> tuple[BatchStatus | None, int]:
        """One turn of :meth:`wait` / :meth:`await_` after its flush and poll.

        ``polled`` is the poll's status, or the error of a provider that cannot
        answer now (a rate limit, a server error, no connection): that is tried
        again after the poll interval, up to ``max_unavailable`` times in a row,
        the job and its requests staying as they were.

        Returns:
            The status to return (the job ended), or ``None`` to poll again;
            and the failures in a row so far.

        Raises:
            BatchError: ``polled`` once too many failures ran in a row, or
                ``timeout_s`` passed.
        """
        if isinstance(polled, BatchError):
            failures += 1
            if failures > self.config.max_unavailable:
                raise polled
            log.warning(
                "batch job %r: %s; trying again in %ss (%d of %d)",
                self.name,
                polled,
                self.poll_interval_s,
                failures,
                self.config.max_unavailable,
            )
            status = self.status()
        else:
            failures, status = 0, polled
            bar.show(status)
            if status.complete or (status.job_canceled and not status.open_batches):
                return status, failures
        self._check_timeout(start, timeout_s, status)
        return None, failures

    @contextlib.contextmanager
    def named_errors(self) -> Iterator[None]:
        """A provider's error, raised while waiting or submitting, names this job.

        The job and its requests stay in the queue file: the message says how
        to come back to them (the caller may hold no handle).
        """
        try:
            yield
        except BatchError as exc:
            if isinstance(exc, BatchRequestError | BatchFailedError) or self.name in str(exc):
                raise
            try:
                named = type(exc)(
                    f"batch job {self.name!r}: {exc}. The job stays in the queue file: "
                    f"reattach with handle({self.name!r}) and wait() again"
                )
            except TypeError:  # an error class that takes other arguments: as it is
                raise exc from None
            raise named from exc

    def _check_timeout(self, start: float, timeout_s: float | None, status: BatchStatus) -> None:
        if timeout_s is not None and self.clock() - start >= timeout_s:
            raise BatchError(
                f"batch job {self.name!r} not finished after {timeout_s}s ({status.finished} of "
                f"{status.total} requests done); it keeps running: call wait() again later"
            )

    def run(
        self,
        requests: Iterable[BatchRequest],
        *,
        progress: bool = False,
        timeout_s: float | None = None,
    ) -> list[BatchResult]:
        """Enqueue, wait, and return the results of ``requests`` in their order."""
        check_timeout(timeout_s)  # before anything is queued
        ids = self.enqueue(requests)
        self.wait(progress=progress, timeout_s=timeout_s)
        return self._results_of(ids)

    async def arun(
        self,
        requests: Iterable[BatchRequest],
        *,
        progress: bool = False,
        timeout_s: float | None = None,
    ) -> list[BatchResult]:
        check_timeout(timeout_s)
        ids = await self.aenqueue(requests)
        await self.await_(progress=progress, timeout_s=timeout_s)
        return self._results_of(ids)

    def _results_of(self, ids: Sequence[str]) -> list[BatchResult]:
        """The results of ``ids`` in order, once :meth:`wait` returned.

        Raises:
            BatchError: some have none (the job was canceled, here or by
                another process, while they were still being submitted).
        """
        results = self.results()
        missing = [i for i in ids if i not in results]
        if missing:
            status = self.status()
            shown = ", ".join(repr(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
            why = " (the job was canceled)" if status.job_canceled else ""
            raise BatchError(
                f"batch job {self.name!r} ended without a result for {len(missing)} of its "
                f"requests{why}: {shown}; see job.status() ({status.finished} of "
                f"{status.total} requests finished)"
            )
        return [results[i] for i in ids]

    # -- cancel -------------------------------------------------------------
    def cancel(self) -> BatchStatus:
        """Cancel the job: queued requests are dropped, open batches canceled remotely.

        Submit calls left unresolved (one that failed, a dead process's) are
        resolved first: a batch the provider got is canceled like the others,
        requests it never got end ``canceled``. Requests already answered when
        a batch stops are still collected (and recorded: they were billed);
        the rest end ``canceled``, never retried. When the engine has budgets
        (a flush holds its estimate until its results are collected), the
        stopped batches are polled once at the end, so those that ended are
        collected and their hold released now, not at the next poll; without
        budgets that collection is left to ``wait`` / ``poll``. The hold of
        requests that were never sent is released in any case.

        A canceled job takes no new requests: use another name for new work.

        Raises:
            BatchError: the provider could not be reached (the job stays
                canceled in the queue; call ``cancel`` again).
        """
        self.queue.cancel(self.name, now=self.clock())
        errors: list[BatchError] = []
        try:
            self.recover()
        finally:  # the open batches are stopped even when a lookup failed
            for batch in self._open():
                try:
                    self.provider.cancel(batch.remote_id)
                except BatchError as exc:  # the others are stopped first
                    self._cancel_failed(batch, exc, errors)
            self._release_unsent()
        if errors:
            raise errors[0]
        if self._holds_budget():
            try:
                self._collect()
            except BatchError as exc:
                self._collect_failed(exc)
        return self.status()

    async def acancel(self) -> BatchStatus:
        """Async twin of :meth:`cancel`."""
        self.queue.cancel(self.name, now=self.clock())
        errors: list[BatchError] = []
        try:
            await self.arecover()
        finally:
            for batch in self._open():
                try:
                    await self.provider.acancel(batch.remote_id)
                except BatchError as exc:
                    self._cancel_failed(batch, exc, errors)
            self._release_unsent()
        if errors:
            raise errors[0]
        if self._holds_budget():
            try:
                await self._acollect()
            except BatchError as exc:
                self._collect_failed(exc)
        return self.status()

    def _cancel_failed(self, batch: OpenBatch, exc: BatchError, errors: list[BatchError]) -> None:
        """Note why canceling ``batch`` failed; a batch the provider lost is collected."""
        err = self._not_found(batch, exc) if isinstance(exc, BatchNotFoundError) else exc
        if err is not None:
            errors.append(err)

    def _holds_budget(self) -> bool:
        """Whether flushes of this job hold budget estimates (the engine has budgets)."""
        return self.engine.ledger.has_budgets

    def _collect_failed(self, exc: BatchError) -> None:
        log.warning(
            "batch job %r is canceled, but collecting its stopped batches failed (%s); "
            "poll() collects them later and releases their budget hold",
            self.name,
            exc,
        )

    def _release_unsent(self) -> None:
        """Release the budget hold of requests that will never be sent (or are collected)."""
        if not self._holds_budget():  # no hold was taken
            return
        HOLDS.settle(
            self._hold_key(),
            [s.id for s in self.queue.stored(self.name) if s.state not in _AT_PROVIDER],
        )


#: States of a request the provider may be running (its hold stays until collected).
_AT_PROVIDER = frozenset({"submitting", "submitted"})


def _done_in_flight(token: str) -> None:
    with _IN_FLIGHT_LOCK:
        _IN_FLIGHT.discard(token)


def _pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` runs on this host."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else (or cannot tell: assume alive)
    return True


def _never_sent(s: StoredResult) -> BatchResult:
    return BatchResult(
        id=s.id,
        status="canceled",
        model=s.request.model,
        error="job canceled before this request was submitted",
    )


class _Progress:
    """A tqdm bar of finished requests (a no-op when disabled)."""

    def __init__(self, enabled: bool, name: str) -> None:
        self.enabled = enabled
        self.name = name
        self._bar: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=0, desc=f"batch {self.name}", unit="req")
        return self

    def show(self, status: BatchStatus) -> None:
        bar = self._bar
        if bar is None:
            return
        bar.total = status.total
        bar.n = status.finished
        bar.set_postfix({k: v for k, v in _postfix(status).items() if v}, refresh=False)
        bar.refresh()

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


def _postfix(status: BatchStatus) -> Mapping[str, int]:
    return {
        "queued": status.queued,
        "running": status.submitted,
        "failed": status.failed,
        "canceled": status.canceled,
    }
