"""Budget holds of batch jobs: checked before a flush submits, settled by its results.

A flush is one decision: every request it is about to submit is estimated
at the job's billing rates (batch rates for a provider batch API), summed
per tenant, and checked against the engine's budgets before anything is
sent, holding the estimate under one call id per tenant. A refused flush
raises ``BudgetExceededError`` and leaves its requests queued, as a
provider's refusal does (a later ``wait`` checks again).

A provider batch runs for up to its 24 h completion window, far longer than
the ledger's default hold lifetime (``reservation_ttl_s``, 10 minutes): a
flush's hold is given a lifetime of its own, :data:`BATCH_HOLD_TTL_S` by
default (``BatchJobConfig.budget_hold_ttl_s``), so spend a running batch has
committed keeps counting until its results are recorded.

The results are recorded under their own call ids (``batch:<job>:<id>``),
never the hold's, so the ledger cannot settle the hold by itself: the hold
is released here once every request it covers has been collected (its
records appended first, so spend never reads low in between) or was not
sent after all (a failed or lost submit call). Holds are kept per process,
keyed by queue file and job name, so another job object of the same job
(a reattached handle) settles them too.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from costopt_core.batch.provider import BatchRequest
from costopt_core.engine import CostEngine
from costopt_core.errors import BudgetExceededError
from costopt_core.types import CallMode

__all__ = [
    "BATCH_HOLD_MARGIN_S",
    "BATCH_HOLD_TTL_S",
    "COMPLETION_WINDOW_S",
    "BatchHolds",
    "BudgetHold",
    "request_estimate",
    "tenant_estimates",
]

#: How long a provider batch may run: the OpenAI Batch API (``completion_window``
#: ``"24h"``, the only value it takes) and Anthropic Message Batches both end a
#: batch within 24 hours of its creation.
COMPLETION_WINDOW_S = 24 * 3600.0
#: What a flush's hold must outlive beyond the window: the flush's own submit
#: calls (the hold is taken before the first; each batch's window starts at
#: its own), the provider's finalizing, and the poll that collects the results.
BATCH_HOLD_MARGIN_S = 3600.0
#: The default lifetime of a flush's budget hold (25 h): released when the
#: results are collected, it lapses by itself only if they never are (the
#: process that flushed died), so a budget never stops counting a running batch.
BATCH_HOLD_TTL_S = COMPLETION_WINDOW_S + BATCH_HOLD_MARGIN_S

# Request parameters that cap the answer, as the providers' APIs name them.
_MAX_OUTPUT_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_ZERO = Decimal(0)


def _max_output_tokens(params: Mapping[str, object]) -> int:
    """The request's cap on output tokens; 0 when it sets none (as ``CostEngine.estimate``)."""
    for key in _MAX_OUTPUT_KEYS:
        value = params.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def request_estimate(engine: CostEngine, request: BatchRequest, mode: CallMode) -> Decimal | None:
    """Upper-bound cost of one request at ``mode`` rates; ``None`` for an unpriced model.

    :meth:`CostEngine.estimate`'s bound, as a synchronous call's budget check
    holds: the dearest input rate, the request's tools counted, approximate
    token counts padded.
    """
    tools = request.params.get("tools")
    return engine.estimate(
        request.model,
        request.messages,
        max_output_tokens=_max_output_tokens(request.params),
        tools=tools if isinstance(tools, Sequence) and not isinstance(tools, str) else None,
        mode=mode,
    )


def tenant_estimates(
    engine: CostEngine, requests: Iterable[BatchRequest], mode: CallMode
) -> dict[str | None, Decimal]:
    """The summed estimate of ``requests`` per tenant.

    A request of a model with no price has no estimate, so it adds nothing
    here: it is not $0, and the budgets are applied to it as to any call of
    an unpriced model (``CostEngine.check_unpriced``): a ``block`` or
    ``downshift`` budget covering its tenant refuses the flush, a ``warn``
    one lets it through with one warning per model.

    Raises:
        BudgetExceededError: a ``block`` or ``downshift`` budget covers a
            request of an unpriced model.
    """
    out: dict[str | None, Decimal] = {}
    unpriced: dict[tuple[str | None, str], None] = {}  # each (tenant, model) once, in order
    for request in requests:
        estimate = request_estimate(engine, request, mode)
        if estimate is None:
            unpriced[(request.tenant, request.model)] = None
        out[request.tenant] = out.get(request.tenant, _ZERO) + (estimate or _ZERO)
    for tenant, model in unpriced:
        engine.check_unpriced(tenant, model)
    return out


@dataclass
class BudgetHold:
    """One flush's holds (one per tenant) and the requests they still cover."""

    engine: CostEngine
    call_ids: dict[str | None, str]
    outstanding: set[str] = field(default_factory=set)

    def release(self) -> None:
        for tenant, call_id in self.call_ids.items():
            self.engine.release_budget(tenant, call_id)


class BatchHolds:
    """The open budget holds of batch jobs in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (queue key, job) -> the holds of its flushes still waiting for results
        self._open: dict[tuple[str, str], list[BudgetHold]] = {}

    def take(
        self,
        engine: CostEngine,
        job: tuple[str, str],
        requests: Sequence[tuple[str, BatchRequest]],
        mode: CallMode,
        *,
        hold_ttl_s: float = BATCH_HOLD_TTL_S,
    ) -> BudgetHold | None:
        """Check and hold the budgets for ``requests`` (own id, request) of one flush.

        Args:
            engine: whose budgets are checked.
            job: the job's key (queue, name).
            requests: the flush's requests, each with its own id.
            mode: the billing mode (``batch`` rates for a provider batch API).
            hold_ttl_s: seconds the hold counts at most if the results are
                never collected; it must outlive the batch.

        Returns:
            The hold (``None`` when no budget is set: nothing to check).

        Raises:
            BudgetExceededError: a budget refuses the flush; nothing stays held.
        """
        if not requests or not engine.ledger.has_budgets:
            return None
        # Refuses a flush with a request of an unpriced model under a block budget
        # before anything is held.
        estimates = tenant_estimates(engine, (r for _, r in requests), mode)
        flush = uuid.uuid4().hex
        hold = BudgetHold(engine, {})
        try:
            # sorted for a stable order; None (no tenant) first
            for tenant in sorted(estimates, key=lambda t: (t is not None, t or "")):
                # One id per tenant: a budget covering every tenant holds each one's share.
                call_id = f"batch:{job[1]}:hold:{flush}:{tenant or ''}"
                engine.check_budget(
                    tenant, estimates[tenant], call_id=call_id, hold_ttl_s=hold_ttl_s
                )
                hold.call_ids[tenant] = call_id
        except BudgetExceededError:
            hold.release()  # the tenants checked before the refusal
            raise
        return hold

    def opened(self, job: tuple[str, str], hold: BudgetHold | None, sent: Iterable[str]) -> None:
        """The flush is over: ``sent`` are the requests it submitted (the rest were not).

        A flush that sent nothing (its first submit failed, or another flush
        took its requests) spent nothing: its hold is released now.
        """
        if hold is None:
            return
        hold.outstanding = set(sent)
        if not hold.outstanding:
            hold.release()
            return
        with self._lock:
            self._open.setdefault(job, []).append(hold)

    def settle(self, job: tuple[str, str], request_ids: Iterable[str]) -> None:
        """``request_ids`` were collected (recorded, failed or queued again): release
        the holds that cover nothing else."""
        done = set(request_ids)
        finished: list[BudgetHold] = []
        with self._lock:
            holds = self._open.get(job)
            if not holds:
                return
            for hold in holds:
                hold.outstanding -= done
                if not hold.outstanding:
                    finished.append(hold)
            left = [h for h in holds if h.outstanding]
            if left:
                self._open[job] = left
            else:
                del self._open[job]
        for hold in finished:  # outside the lock: a shared store is a network call
            hold.release()


#: The holds of every job in this process.
HOLDS = BatchHolds()
