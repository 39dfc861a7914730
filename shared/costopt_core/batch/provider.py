"""The ``BatchProvider`` seam: where queued requests are run at batch prices.

A provider only moves requests and results over the wire (OpenAI Batch API,
Anthropic Message Batches, or the ``local`` executor); the queue, splitting
by limits, retries, pricing and recording are the engine's. A provider must:

- submit a list of requests as one remote batch and return its id;
- report the batch's status, and its results per request id once it ended:
  ``succeeded`` with text and usage, or ``errored`` / ``expired`` /
  ``canceled`` with the reason and whether retrying can help;
- raise ``BatchError`` (not an SDK exception) when it cannot reach the provider.

A provider may also be a :class:`RecoverableBatchProvider`: its ``submit``
takes a ``submission`` token it attaches to the remote batch, and
``find_submission`` finds that batch again. A process killed after the
provider accepted a batch and before the queue recorded its id then leaves
nothing to submit twice: the next process finds the batch by its token and
collects it. Without that, the next process submits those requests again
(each is still answered and recorded once, but the provider runs and bills
the first copy too).

Every method has an ``a``-prefixed async twin. ``tests/contract/`` holds the
one suite all providers pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from costopt_core.errors import BatchError
from costopt_core.types import Message, Usage

__all__ = [
    "BatchLimits",
    "BatchProvider",
    "BatchRequest",
    "BatchResult",
    "ProviderUnavailableError",
    "RecoverableBatchProvider",
    "RemoteBatch",
    "RemoteStatus",
    "ResultStatus",
    "Submission",
    "SubmitRefusedError",
    "retryable_status",
]


def retryable_status(status_code: int) -> bool:
    """Whether an HTTP status says the same request may succeed later: a
    timeout (408), a rate limit (429) or a server error (5xx). One rule for a
    provider batch's per-request errors and a local call's exceptions."""
    return status_code in (408, 429) or status_code >= 500


class ProviderUnavailableError(BatchError):
    """The provider could not answer now: a timeout, a rate limit, a server error or no
    connection (the same call may succeed later; ``BatchJob.wait`` tries again)."""


class SubmitRefusedError(BatchError):
    """The provider refused a submit call and nothing of it is running.

    A provider raises it (rather than a plain ``BatchError``) when it knows
    it created nothing, or stopped what it had created: the job then puts the
    requests back in the queue at once instead of looking the batch up by its
    token, which could find a batch that is not this call's.
    """


#: What became of one request of an ended batch.
ResultStatus = Literal["succeeded", "errored", "expired", "canceled"]
#: Where a remote batch is: still running, or ended (its results can be read).
RemoteStatus = Literal["in_progress", "canceling", "ended"]


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One queued chat request.

    ``id`` is the caller's id for it, unique within a job (a ``BatchJob``
    sends it to the OpenAI and Anthropic APIs as a ``custom_id`` keyed to
    the job, see ``job_custom_id``, so any string will do); ``params`` are
    the provider call's parameters (``max_tokens``, ``temperature``,
    ``tools``...), sent as given.
    """

    id: str
    model: str
    messages: tuple[Message, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of one request of an ended batch.

    ``usage`` is ``None`` when the provider reported none (an error, an
    expiry); ``raw`` is the provider's own response object (as JSON-able
    data) for adapters that need more than the text (tool calls...).
    """

    id: str
    status: ResultStatus
    text: str | None = None
    usage: Usage | None = None
    model: str | None = None
    error: str | None = None
    retryable: bool = False
    raw: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RemoteBatch:
    """A submitted batch as the provider reports it."""

    id: str
    status: RemoteStatus
    #: requests per outcome so far, e.g. ``{"processing": 10, "succeeded": 90}``.
    counts: Mapping[str, int] = field(default_factory=dict)
    #: when the provider gives up on the batch (seconds since the epoch), if known.
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How much one remote batch may hold."""

    max_requests: int
    max_bytes: int


@runtime_checkable
class BatchProvider(Protocol):
    """Runs lists of requests as remote batches."""

    #: ``openai``, ``anthropic``, ``local``...: stored with each submitted batch,
    #: so a restarted process knows where to collect it.
    name: str
    limits: BatchLimits

    def request_size(self, request: BatchRequest) -> int:
        """Bytes ``request`` takes in a batch (for splitting by ``limits.max_bytes``)."""
        ...

    def submit(self, requests: Sequence[BatchRequest]) -> str:
        """Submit ``requests`` (within ``limits``) as one batch; returns its id."""
        ...

    def poll(self, batch_id: str) -> RemoteBatch: ...

    def results(self, batch_id: str) -> list[BatchResult]:
        """One result per request of an ended batch."""
        ...

    def cancel(self, batch_id: str) -> None: ...

    async def asubmit(self, requests: Sequence[BatchRequest]) -> str: ...

    async def apoll(self, batch_id: str) -> RemoteBatch: ...

    async def aresults(self, batch_id: str) -> list[BatchResult]: ...

    async def acancel(self, batch_id: str) -> None: ...


#: How far a provider's clock may be from ours when a batch is looked up by time.
CLOCK_SKEW_S = 300.0


@dataclass(frozen=True, slots=True)
class Submission:
    """A submit call whose outcome is unknown: its token, and what it carried.

    ``started_at`` is when the call started (seconds since the epoch);
    ``known`` holds the remote ids of batches the queue already recorded for
    this provider around that time, which cannot be this submission.
    """

    token: str
    started_at: float
    request_ids: tuple[str, ...]
    known: frozenset[str] = frozenset()


@runtime_checkable
class RecoverableBatchProvider(BatchProvider, Protocol):
    """A provider that tags each batch with a token and can find it again by it."""

    def submit(self, requests: Sequence[BatchRequest], *, submission: str | None = None) -> str:
        """Submit ``requests`` as one batch tagged with ``submission``; returns its id."""
        ...

    async def asubmit(
        self, requests: Sequence[BatchRequest], *, submission: str | None = None
    ) -> str: ...

    def find_submission(self, submission: Submission) -> str | None:
        """The id of the batch submitted under ``submission.token``, or ``None`` if none was.

        ``None`` means the provider never got the batch, so its requests can
        be submitted again without running twice.
        """
        ...

    async def afind_submission(self, submission: Submission) -> str | None: ...
