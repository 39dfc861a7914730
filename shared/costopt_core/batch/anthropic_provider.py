"""``AnthropicBatchProvider``: chat requests through Anthropic's Message Batches.

A Message Batch takes the requests inline (``messages.batches.create``), runs
them within 24 hours at half price, reports ``processing_status`` and request
counts (``messages.batches.retrieve``), and once ended streams one JSONL result
per request (``messages.batches.results``, which follows the batch's
``results_url``). Results stay at Anthropic for 29 days, so a new process can
collect what an old one submitted.

A Message Batch carries no metadata, so a batch whose id its submitter never
recorded is found by listing recent batches: the one created in the
submission's time window with its number of requests that the queue does not
know already. Only a single such batch counts (none or several: the requests
are submitted again), and the job checks on collection that its results
answer only the submission's requests before taking any of them (a job
sends its ids under its own random key, so another job's batch never
passes, whatever ids both use; nor does another program's batch that
answers plain ids such as ``"0"``, ``"1"``: only a submission recorded
before jobs keyed their ids may be answered under its plain ids). A
batch taken by mistake is therefore never collected as this job's: once
it has ended its requests are submitted again.

The ``anthropic`` SDK is imported on first use: the engine imports without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from costopt_core.batch._sdk import Connect, SdkBatchProvider, Steps, as_dict, drain
from costopt_core.batch._wire import (
    ANTHROPIC_DEFAULT_MAX_TOKENS,
    ANTHROPIC_LIMITS,
    anthropic_counts,
    anthropic_request,
    anthropic_request_size,
    anthropic_result,
    check_batch,
)
from costopt_core.batch.provider import (
    CLOCK_SKEW_S,
    BatchLimits,
    BatchRequest,
    BatchResult,
    RemoteBatch,
    RemoteStatus,
    Submission,
)
from costopt_core.errors import BatchError, ConfigurationError

__all__ = ["AnthropicBatchProvider"]

#: The longest a create call can take with the SDK's retries.
_LONGEST_SUBMIT_S = 1800.0

_STATUSES: dict[str, RemoteStatus] = {
    "in_progress": "in_progress",
    "canceling": "canceling",
    "ended": "ended",
}


def _remote(batch: Any) -> RemoteBatch:
    status = str(batch.processing_status)
    if status not in _STATUSES:
        raise BatchError(f"Anthropic batch {batch.id} has an unknown status {status!r}")
    expires = batch.expires_at
    return RemoteBatch(
        id=str(batch.id),
        status=_STATUSES[status],
        counts=anthropic_counts(as_dict(batch.request_counts)),
        expires_at=expires.timestamp() if isinstance(expires, datetime) else None,
    )


def _seconds(stamp: Any) -> float:
    """An API time (ISO 8601 text or a datetime) as seconds since the epoch."""
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    return datetime.fromisoformat(str(stamp)).timestamp()


class AnthropicBatchProvider(SdkBatchProvider):
    """Runs chat requests through Anthropic's Message Batches API (50% off, 24h window).

    Args:
        client: an ``anthropic.Anthropic`` client to use; built from the other
            arguments on first use when omitted.
        async_client: an ``anthropic.AsyncAnthropic`` for the ``a*`` methods;
            built on first use when omitted.
        api_key: the key for built clients (default: ``ANTHROPIC_API_KEY``).
        base_url: the API's URL for built clients (default: the SDK's).
        max_retries: the SDK's retries of failed HTTP calls (default: the SDK's).
        timeout_s: the SDK's HTTP timeout in seconds (default: the SDK's).
        poll_interval_s: the wait between polls a ``BatchJob`` uses by default.
        default_max_tokens: ``max_tokens`` for requests whose params have none
            (Anthropic requires it).

    Raises:
        ConfigurationError: a negative ``max_retries``, a non-positive
            ``poll_interval_s``, ``timeout_s`` or ``default_max_tokens``.
    """

    name = "anthropic"
    limits: BatchLimits = ANTHROPIC_LIMITS
    _sdk = "anthropic"
    _vendor = "Anthropic"
    _client_class = "Anthropic"
    _async_client_class = "AsyncAnthropic"
    _sdk_error = "AnthropicError"
    _key_env = "ANTHROPIC_API_KEY"

    def __init__(
        self,
        *,
        client: Any | None = None,
        async_client: Any | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int | None = None,
        timeout_s: float | None = None,
        default_max_tokens: int = ANTHROPIC_DEFAULT_MAX_TOKENS,
        poll_interval_s: float = 30.0,
    ) -> None:
        super().__init__(
            client, async_client, api_key, base_url, max_retries, timeout_s, poll_interval_s
        )
        if isinstance(default_max_tokens, bool) or default_max_tokens < 1:
            raise ConfigurationError(
                f"default_max_tokens={default_max_tokens!r}: must be a positive int"
            )
        self.default_max_tokens = default_max_tokens

    def _entry(self, request: BatchRequest) -> dict[str, Any]:
        return anthropic_request(request, default_max_tokens=self.default_max_tokens)

    def request_size(self, request: BatchRequest) -> int:
        """Bytes of ``request``'s entry in the create call's JSON body."""
        return anthropic_request_size(self._entry(request))

    def _entries(self, requests: Sequence[BatchRequest]) -> list[dict[str, Any]]:
        entries = [self._entry(r) for r in requests]
        check_batch(requests, self.limits, [anthropic_request_size(e) for e in entries], self.name)
        return entries

    def _submit(
        self, connect: Connect, requests: Sequence[BatchRequest], submission: str | None
    ) -> Steps[str]:
        """Create one Message Batch holding ``requests``; returns its id.

        The API has nowhere to put ``submission``: ``_find`` works without it.
        """
        entries = self._entries(requests)  # checked before any client is built
        client = connect()
        with self._errors("submit"):
            return str((yield client.messages.batches.create(requests=entries)).id)

    def _find(self, connect: Connect, submission: Submission) -> Steps[str | None]:
        client = connect()
        start = submission.started_at - CLOCK_SKEW_S
        end = submission.started_at + CLOCK_SKEW_S + _LONGEST_SUBMIT_S
        batches = yield from self._listed_since(
            client.messages.batches.list,
            cursor="after_id",
            oldest=start,
            created_at=lambda b: _seconds(b.get("created_at")),
        )
        candidates = [
            str(b["id"])
            for b in batches
            if _seconds(b.get("created_at")) <= end
            and str(b["id"]) not in submission.known
            and sum((b.get("request_counts") or {}).values()) == len(submission.request_ids)
        ]
        return candidates[0] if len(candidates) == 1 else None

    def _poll(self, connect: Connect, batch_id: str) -> Steps[RemoteBatch]:
        client = connect()
        with self._errors("poll", batch_id):
            return _remote((yield client.messages.batches.retrieve(batch_id)))

    def _results(self, connect: Connect, batch_id: str) -> Steps[list[BatchResult]]:
        client = connect()
        with self._errors("collection", batch_id):
            self._check_ended((yield client.messages.batches.retrieve(batch_id)))
            stream = yield client.messages.batches.results(batch_id)
            return [anthropic_result(as_dict(item)) for item in (yield drain(stream))]

    @staticmethod
    def _check_ended(batch: Any) -> None:
        if batch.processing_status != "ended":
            raise BatchError(
                f"Anthropic batch {batch.id} is still {batch.processing_status}: poll until"
                " it has ended, then collect its results"
            )

    def _cancel(self, connect: Connect, batch_id: str) -> Steps[None]:
        """Stop the batch if it is running; otherwise leave it as it is."""
        client = connect()
        with self._errors("cancel", batch_id):
            batch = yield client.messages.batches.retrieve(batch_id)
            if batch.processing_status == "in_progress":
                yield client.messages.batches.cancel(batch_id)
