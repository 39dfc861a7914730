"""Pure decisions of a batch job: what goes into which batch, what to retry, when to flush.

No I/O here: the job (``job.py``) reads the queue, calls these, and writes
back; the sync and async paths share them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from costopt_core.batch.provider import BatchLimits, BatchResult

__all__ = [
    "RequestOutcome",
    "SplitPlan",
    "decide_outcome",
    "plan_batches",
    "recovered_batch_is_ours",
    "requeue_after_failed_submit",
    "should_flush",
    "submission_abandoned",
    "submit_refused",
]

#: Where a request goes once its batch ended: kept (``done``), back in the queue
#: (``queued``, another attempt), or given up (``failed``, ``canceled``).
RequestOutcome = Literal["done", "queued", "failed", "canceled"]


@dataclass(frozen=True, slots=True)
class SplitPlan:
    """Requests (by index) grouped into batches that fit the provider's limits.

    ``too_large`` holds requests that exceed ``max_bytes`` on their own: no batch
    can carry them, so they fail instead of blocking the queue.
    """

    batches: list[list[int]]
    too_large: list[int]


def plan_batches(sizes: Sequence[int], limits: BatchLimits) -> SplitPlan:
    """Group requests, in order, into as few batches as the limits allow.

    Greedy in queue order (so results come back roughly in the order asked):
    a new batch starts when the next request would exceed ``max_requests`` or
    ``max_bytes``.

    Args:
        sizes: bytes each request takes in a batch (``provider.request_size``).
        limits: the provider's per-batch limits.

    Returns:
        The batches as lists of indexes into ``sizes``, and the oversized requests.
    """
    batches: list[list[int]] = []
    too_large: list[int] = []
    current: list[int] = []
    current_bytes = 0
    for i, size in enumerate(sizes):
        if size > limits.max_bytes:
            too_large.append(i)
            continue
        if current and (
            len(current) >= limits.max_requests or current_bytes + size > limits.max_bytes
        ):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(i)
        current_bytes += size
    if current:
        batches.append(current)
    return SplitPlan(batches, too_large)


def decide_outcome(
    result: BatchResult | None, *, attempts: int, max_attempts: int, job_canceled: bool
) -> RequestOutcome:
    """What becomes of one request of an ended batch.

    Args:
        result: the provider's result for it; ``None`` if the provider returned
            none (treated as a retryable error).
        attempts: submissions so far, this one included.
        max_attempts: submissions allowed in all.
        job_canceled: the user canceled the job: nothing is retried.
    """
    if result is not None and result.status == "succeeded":
        return "done"
    if job_canceled:
        return "canceled"
    retryable = result is None or result.retryable
    if retryable and attempts < max_attempts:
        return "queued"
    if result is not None and result.status == "canceled":
        return "canceled"
    return "failed"


def should_flush(
    queued: int,
    oldest_age_s: float | None,
    *,
    max_pending: int | None,
    max_wait_s: float | None,
) -> bool:
    """True when the queue is big enough or its oldest request waited long enough."""
    if queued <= 0:
        return False
    if max_pending is not None and queued >= max_pending:
        return True
    return max_wait_s is not None and oldest_age_s is not None and oldest_age_s >= max_wait_s


def submission_abandoned(
    *,
    owner_host: str,
    owner_pid: int,
    started_at: float,
    now: float,
    lease_s: float,
    host: str,
    pid: int,
    owner_alive: bool,
    in_flight_here: bool,
) -> bool:
    """True when nobody will finish a pending submit call, so another process may resolve it.

    On this host the owner's liveness decides at once: a dead process, or
    this process with no such call in flight (the call raised and could not
    put its requests back). Another host's call is given up after
    ``lease_s``, longer than any submit call takes.

    Args:
        owner_host: host of the process that started the call.
        owner_pid: its process id.
        started_at: when the call started.
        now: the time now.
        lease_s: how long a call may take before it counts as abandoned.
        host: this host's name.
        pid: this process's id.
        owner_alive: whether a process with ``owner_pid`` runs on this host.
        in_flight_here: whether this process is making the call now.
    """
    if owner_host == host:
        if in_flight_here:
            return False
        if owner_pid == pid or not owner_alive:
            return True
    return now - started_at >= lease_s


def recovered_batch_is_ours(result_ids: Sequence[str], request_ids: Sequence[str]) -> bool:
    """Whether a batch found by lookup after a restart answers only our requests.

    A provider that cannot tag batches finds one by time and size; a batch
    with any result for a request we did not send belongs to someone else,
    and its answers must not be taken.
    """
    return set(result_ids) <= set(request_ids)


def submit_refused(status_code: int) -> bool:
    """Whether an HTTP error status from a create call means the provider created nothing.

    A 4xx (bad request, auth, rate limit...) is the API turning the call
    down, and 503 / 529 say it was too busy to take it. A 500, or a
    gateway's 502 / 504, may come after the API acted, so those are not
    taken as a refusal: the job looks the batch up by its token first.
    """
    return 400 <= status_code < 500 or status_code in (503, 529)


def requeue_after_failed_submit(*, interrupted: bool, refused: bool, recoverable: bool) -> bool:
    """Whether the requests of a submit call that raised go back in the queue at once.

    Otherwise the submission record stays, and the next flush or poll looks
    the batch up by its token before sending them again.

    Args:
        interrupted: the call was cut off (``KeyboardInterrupt``, a cancelled
            task), not failed: it may have reached the provider.
        refused: the provider refused the call, or a check refused it before
            anything was sent; nothing is running.
        recoverable: the provider can look batches up by token (one that
            cannot raises only when it left nothing running).
    """
    if interrupted:
        return False
    return refused or not recoverable
