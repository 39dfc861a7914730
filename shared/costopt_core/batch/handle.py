"""``JobHandle``: a submitted batch job seen as one answer per input.

Every framework front-end hands its caller the same thing after a submit:
the job's status, a wait, the answers in input order (failed requests as
:class:`~costopt_core.errors.BatchRequestError`, or a
:class:`~costopt_core.errors.BatchFailedError` naming them), and a cancel,
each with an async twin. Only the shape of a succeeded answer differs
(an ``AIMessage``, a ``ChatResponse``...), so the handle is generic over it
and takes a converter from ``BatchResult``; the adapters subclass it to fix
the converter and their own defaults.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

from costopt_core.batch.job import BatchJob, BatchStatus
from costopt_core.batch.local import LocalBatchProvider
from costopt_core.batch.provider import BatchRequest, BatchResult
from costopt_core.engine import CostEngine
from costopt_core.errors import BatchError, BatchFailedError, BatchRequestError
from costopt_core.pricing import attribute_savings
from costopt_core.types import CallMode, Usage, money_str

__all__ = ["JobHandle", "ResultConverter", "batch_metadata"]

log = logging.getLogger(__name__)

#: How long a canceled local job's running calls are waited for, to record them.
_COLLECT_TIMEOUT_S = 3600.0
_STOP_FAILED = "batch job %r: cancel after an interruption failed"

T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")


class ResultConverter(Protocol[T_co]):
    """Turns a succeeded ``BatchResult`` into a framework's answer.

    ``model`` is the model the request asked for, ``mode`` the billing mode
    the job records with, ``job`` the job's name.
    """

    def __call__(
        self, result: BatchResult, *, engine: CostEngine, model: str, mode: CallMode, job: str
    ) -> T_co: ...


def batch_metadata(
    engine: CostEngine, result: BatchResult, model: str, mode: CallMode, job: str
) -> dict[str, Any]:
    """The ``costopt`` metadata of a batched answer: what it cost, and where it ran.

    Priced as the job records it (same model, usage and mode), so the figures
    match the ledger's record ``call_id``.

    Args:
        engine: the engine whose catalog and baseline price the answer.
        result: the provider's result (its usage; no usage prices as zero).
        model: the model that answered.
        mode: the billing mode (``batch`` for provider batch APIs).
        job: the job's name.
    """
    usage = result.usage if result.usage is not None else Usage()
    priced = attribute_savings(
        engine.catalog, model=model, usage=usage, baseline_model=engine.baseline_model, mode=mode
    )
    return {
        "model": model,
        "tier": None,
        "mode": mode,
        "served_by": "model",
        "cost_usd": money_str(priced.cost_usd),
        "baseline_cost_usd": money_str(priced.baseline_cost_usd),
        "savings_usd": {k: format(v, "f") for k, v in priced.savings_usd.items()},
        "batch_job": job,
        "request_id": result.id,
        "call_id": f"batch:{job}:{result.id}",
    }


class JobHandle(Generic[T]):
    """A submitted batch: its status now, and its answers once it has ended.

    Everything it knows is in the queue file, so after a restart a handle
    built over a ``BatchJob`` of the same name and file gives it back.

    Args:
        job: the engine's job.
        ids: the request ids, one per input, in input order.
        models: the model each request asked for (priced when the provider names none).
        convert: turns a succeeded result into the framework's answer.
        timeout_s: how long :meth:`wait` / :meth:`results` wait by default (``None``: for good).
        progress: whether :meth:`wait` shows a tqdm bar by default.

    Attributes:
        job: the engine's ``BatchJob`` (for what this handle does not offer).
        ids: the request ids, in input order.
    """

    def __init__(
        self,
        job: BatchJob,
        ids: Sequence[str],
        models: Sequence[str],
        convert: ResultConverter[T],
        *,
        timeout_s: float | None = None,
        progress: bool = False,
    ) -> None:
        self.job = job
        self.ids = list(ids)
        self._models = list(models)
        self._convert = convert
        self._timeout_s = timeout_s
        self._progress = progress

    def __repr__(self) -> str:
        return f"{type(self).__name__}(job={self.name!r}, requests={len(self.ids)})"

    @property
    def name(self) -> str:
        """The job's name in the queue file (what a front-end's ``handle()`` takes)."""
        return self.job.name

    # -- starting -----------------------------------------------------------
    def submit(self, requests: Sequence[BatchRequest]) -> None:
        """Queue ``requests`` (this handle's ids) durably and submit them; returns at once.

        Raises:
            BatchError: the provider refused the batch (the requests stay
                queued: :meth:`wait` submits them again).
        """
        self.job.enqueue(requests)
        with self.job.named_errors():
            self.job.flush()

    async def asubmit(self, requests: Sequence[BatchRequest]) -> None:
        """Async twin of :meth:`submit`."""
        await self.job.aenqueue(requests)
        with self.job.named_errors():
            await self.job.aflush()

    def run(self, requests: Sequence[BatchRequest], *, return_exceptions: bool) -> list[Any]:
        """Queue, submit and wait for ``requests``; the answers in input order.

        An interruption (``KeyboardInterrupt``, ``SystemExit``...) cancels the
        job and propagates; what had already been answered is collected
        (recorded, its budget hold released), at once or, for requests still
        running on the local provider's threads, when they end.
        """
        try:
            self.job.run(requests, progress=self._progress, timeout_s=self._timeout_s)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                self._stop()
            raise
        return self.outputs(return_exceptions)

    async def arun(self, requests: Sequence[BatchRequest], *, return_exceptions: bool) -> list[Any]:
        """Async twin of :meth:`run` (a cancelled task cancels the job the same way)."""
        try:
            await self.job.arun(requests, progress=self._progress, timeout_s=self._timeout_s)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                await self._astop()
            raise
        return self.outputs(return_exceptions)

    def _stop(self) -> None:
        """Cancel an interrupted run's job and collect what has ended (best effort)."""
        try:
            self.job.cancel()
            status = self.job.poll()
        except Exception:
            log.warning(_STOP_FAILED, self.name, exc_info=True)
            return
        self._collect_later(status)

    async def _astop(self) -> None:
        """Async twin of :meth:`_stop` (the local provider's tasks are stopped and awaited)."""
        try:
            await self.job.acancel()
            status = await self.job.apoll()
        except Exception:
            log.warning(_STOP_FAILED, self.name, exc_info=True)
            return
        self._collect_later(status)

    def _collect_later(self, status: BatchStatus) -> None:
        if status.open_batches and isinstance(self.job.provider, LocalBatchProvider):
            # Calls running on worker threads cannot be stopped: collect them as they end.
            threading.Thread(
                target=self._collect, name=f"costopt-batch-collect-{self.name}", daemon=True
            ).start()

    def _collect(self) -> None:
        try:
            self.job.wait(timeout_s=_COLLECT_TIMEOUT_S)
        except Exception:
            log.warning("batch job %r: canceled requests not collected", self.name, exc_info=True)

    # -- status -------------------------------------------------------------
    def status(self, *, poll: bool = True) -> BatchStatus:
        """Requests per state (``queued``, ``submitted``, ``done``, ``failed``...).

        Args:
            poll: ask the provider once first (collecting batches that ended);
                ``False`` reads the queue file only.
        """
        return self.job.poll() if poll else self.job.status()

    async def astatus(self, *, poll: bool = True) -> BatchStatus:
        """Async twin of :meth:`status`."""
        return await self.job.apoll() if poll else self.job.status()

    def done(self) -> bool:
        """True once every request has an outcome (no provider call)."""
        return self.job.status().complete

    # -- waiting ------------------------------------------------------------
    def wait(self, *, timeout_s: float | None = None, progress: bool | None = None) -> BatchStatus:
        """Poll until every request has an outcome (a tqdm bar if ``progress``).

        Raises:
            BatchError: ``timeout_s`` passed first (the batch keeps running).
        """
        return self.job.wait(
            timeout_s=timeout_s if timeout_s is not None else self._timeout_s,
            progress=self._progress if progress is None else progress,
        )

    async def await_(
        self, *, timeout_s: float | None = None, progress: bool | None = None
    ) -> BatchStatus:
        """Async twin of :meth:`wait` (``await`` is a keyword)."""
        return await self.job.await_(
            timeout_s=timeout_s if timeout_s is not None else self._timeout_s,
            progress=self._progress if progress is None else progress,
        )

    # -- results ------------------------------------------------------------
    def results(
        self,
        *,
        wait: bool = True,
        return_exceptions: bool = False,
        timeout_s: float | None = None,
    ) -> list[Any]:
        """The answers, one per input, in input order.

        Args:
            wait: block (polling) until the batch has ended; with ``False``
                a batch still running raises ``BatchError`` at once.
            return_exceptions: put a ``BatchRequestError`` in place of each
                failed answer instead of raising.
            timeout_s: give up waiting after this long.

        Raises:
            BatchFailedError: some requests failed and ``return_exceptions`` is off.
            BatchError: the batch has not ended (``wait=False``) or ``timeout_s`` passed.
        """
        if wait:
            self.wait(timeout_s=timeout_s)
        return self.outputs(return_exceptions)

    async def aresults(
        self,
        *,
        wait: bool = True,
        return_exceptions: bool = False,
        timeout_s: float | None = None,
    ) -> list[Any]:
        """Async twin of :meth:`results`."""
        if wait:
            await self.await_(timeout_s=timeout_s)
        return self.outputs(return_exceptions)

    def raw_results(self) -> list[BatchResult | None]:
        """The engine's results in input order (``None`` while a request is unfinished)."""
        stored = self.job.results()
        return [stored.get(i) for i in self.ids]

    def outputs(self, return_exceptions: bool) -> list[Any]:
        """The answers of an ended job, without waiting (see :meth:`results`).

        Raises:
            BatchFailedError: some requests failed and ``return_exceptions`` is off.
            BatchError: some request has no outcome yet.
        """
        stored = self.job.results()
        if any(i not in stored for i in self.ids):
            status = self.job.status()
            raise BatchError(
                f"batch job {self.name!r} has not ended ({status.finished} of {status.total} "
                "requests finished); call wait() or results(wait=True)"
            )
        engine, mode = self.job.engine, self.job.mode
        outputs: list[Any] = []
        for rid, model in zip(self.ids, self._models, strict=True):
            result = stored[rid]
            if result.status == "succeeded":
                outputs.append(self._converted(result, engine, model, mode))
            else:
                outputs.append(BatchRequestError(result, self.name))
        if not return_exceptions and any(isinstance(o, Exception) for o in outputs):
            raise BatchFailedError(self.name, outputs)
        return outputs

    def _converted(
        self, result: BatchResult, engine: CostEngine, model: str, mode: CallMode
    ) -> Any:
        """One succeeded result as the framework's answer, or its request's error.

        An answer the framework cannot represent (e.g. a malformed provider
        payload) fails that request only: raising here would lose every other
        answer of the job, and each reattach would fail the same way.
        """
        try:
            return self._convert(result, engine=engine, model=model, mode=mode, job=self.name)
        except Exception as exc:
            log.warning(
                "batch job %r: answer %r not converted", self.name, result.id, exc_info=True
            )
            failed = dataclasses.replace(
                result,
                status="errored",
                error=f"the answer could not be converted ({type(exc).__name__}: {exc})",
            )
            error = BatchRequestError(failed, self.name)
            error.__cause__ = exc
            return error

    # -- cancel -------------------------------------------------------------
    def cancel(self) -> BatchStatus:
        """Stop the batch: unsent requests are dropped, running ones canceled remotely.

        Answers given before the stop are still collected by :meth:`wait`.
        """
        return self.job.cancel()

    async def acancel(self) -> BatchStatus:
        """Async twin of :meth:`cancel`."""
        return await self.job.acancel()
