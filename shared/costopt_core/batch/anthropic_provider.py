"""``AnthropicBatchProvider``: chat requests through Anthropic's Message Batches.

A Message Batch takes the requests inline (``messages.batches.create``), runs
them within 24 hours at half price, reports ``processing_status`` and request
counts (``messages.batches.retrieve``), and once ended streams one JSONL result
per request (``messages.batches.results``, which follows the batch's
``results_url``). Results stay at Anthropic for 29 days, so a new process can
collect what an old one submitted.

The ``anthropic`` SDK is imported on first use: the engine imports without it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

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
    BatchLimits,
    BatchRequest,
    BatchResult,
    RemoteBatch,
    RemoteStatus,
)
from costopt_core.errors import BatchError, BatchNotFoundError, ConfigurationError

__all__ = ["AnthropicBatchProvider"]

_STATUSES: dict[str, RemoteStatus] = {
    "in_progress": "in_progress",
    "canceling": "canceling",
    "ended": "ended",
}


def _import_anthropic() -> Any:
    try:
        return importlib.import_module("anthropic")
    except ImportError:
        raise ConfigurationError(
            "AnthropicBatchProvider needs the 'anthropic' package: pip install"
            " 'llm-costopt[providers]' (or pip install anthropic)"
        ) from None


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    to_dict = getattr(obj, "to_dict", None)
    if to_dict is not None:
        data: dict[str, Any] = to_dict(mode="json")
        return data
    dumped: dict[str, Any] = obj.model_dump(mode="json")
    return dumped


def _remote(batch: Any) -> RemoteBatch:
    status = str(batch.processing_status)
    if status not in _STATUSES:
        raise BatchError(f"Anthropic batch {batch.id} has an unknown status {status!r}")
    expires = batch.expires_at
    return RemoteBatch(
        id=str(batch.id),
        status=_STATUSES[status],
        counts=anthropic_counts(_as_dict(batch.request_counts)),
        expires_at=expires.timestamp() if isinstance(expires, datetime) else None,
    )


class AnthropicBatchProvider:
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
        if not poll_interval_s > 0:
            raise ConfigurationError(f"poll_interval_s={poll_interval_s!r}: must be > 0 seconds")
        if max_retries is not None and max_retries < 0:
            raise ConfigurationError(f"max_retries={max_retries!r}: must be >= 0")
        if timeout_s is not None and not timeout_s > 0:
            raise ConfigurationError(f"timeout_s={timeout_s!r}: must be > 0 seconds")
        if isinstance(default_max_tokens, bool) or default_max_tokens < 1:
            raise ConfigurationError(
                f"default_max_tokens={default_max_tokens!r}: must be a positive int"
            )
        #: how long a job waits between polls (batches take minutes to hours).
        self.poll_interval_s = poll_interval_s
        self._client = client
        self._async_client = async_client
        self._own_client = client is None
        self._own_async_client = async_client is None
        self._options: dict[str, Any] = {
            k: v
            for k, v in (
                ("api_key", api_key),
                ("base_url", base_url),
                ("max_retries", max_retries),
                ("timeout", timeout_s),
            )
            if v is not None
        }
        self.default_max_tokens = default_max_tokens

    # -- clients ------------------------------------------------------------------------

    def _build(self, class_name: str) -> Any:
        anthropic = _import_anthropic()
        try:
            return getattr(anthropic, class_name)(**self._options)
        except anthropic.AnthropicError as exc:
            raise ConfigurationError(
                f"cannot build the Anthropic client: {exc}; pass api_key= or set ANTHROPIC_API_KEY"
            ) from exc

    def _sync(self) -> Any:
        if self._client is None:
            self._client = self._build("Anthropic")
        return self._client

    def _async(self) -> Any:
        if self._async_client is None:
            self._async_client = self._build("AsyncAnthropic")
        return self._async_client

    @contextmanager
    def _errors(self, action: str, batch_id: str | None = None) -> Iterator[None]:
        """SDK and payload errors as ``BatchError``, naming what was being done."""
        anthropic = _import_anthropic()
        what = (
            f"{action} of Anthropic batch {batch_id}" if batch_id else f"Anthropic batch {action}"
        )
        try:
            yield
        except anthropic.NotFoundError as exc:
            raise BatchNotFoundError(f"{what} failed: no such batch (HTTP 404): {exc}") from exc
        except anthropic.APIStatusError as exc:
            raise BatchError(f"{what} failed: HTTP {exc.status_code}: {exc}") from exc
        except anthropic.APIConnectionError as exc:
            raise BatchError(
                f"{what} failed: cannot reach the Anthropic API ({exc}); check base_url and"
                " the network, then poll again (the batch id stays valid)"
            ) from exc
        except (anthropic.AnthropicError, ValueError, KeyError, TypeError) as exc:
            raise BatchError(f"{what} failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Close the sync client this provider built (an injected one is the caller's)."""
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close the async client this provider built."""
        if self._own_async_client and self._async_client is not None:
            await self._async_client.close()
            self._async_client = None

    # -- the seam -----------------------------------------------------------------------

    def _entry(self, request: BatchRequest) -> dict[str, Any]:
        return anthropic_request(request, default_max_tokens=self.default_max_tokens)

    def request_size(self, request: BatchRequest) -> int:
        """Bytes of ``request``'s entry in the create call's JSON body."""
        return anthropic_request_size(self._entry(request))

    def _entries(self, requests: Sequence[BatchRequest]) -> list[dict[str, Any]]:
        entries = [self._entry(r) for r in requests]
        check_batch(requests, self.limits, [anthropic_request_size(e) for e in entries], self.name)
        return entries

    def submit(self, requests: Sequence[BatchRequest]) -> str:
        """Create one Message Batch holding ``requests``; returns its id.

        Raises:
            ConfigurationError: the requests break ``limits`` or have invalid ids.
            BatchError: the API refused the batch or could not be reached.
        """
        entries = self._entries(requests)
        client = self._sync()
        with self._errors("submit"):
            return str(client.messages.batches.create(requests=entries).id)

    def poll(self, batch_id: str) -> RemoteBatch:
        """The status and request counts of a submitted batch."""
        client = self._sync()
        with self._errors("poll", batch_id):
            return _remote(client.messages.batches.retrieve(batch_id))

    def results(self, batch_id: str) -> list[BatchResult]:
        """One result per request of an ended batch.

        Raises:
            BatchError: the batch has not ended, or the API could not be reached.
        """
        client = self._sync()
        with self._errors("collection", batch_id):
            self._check_ended(client.messages.batches.retrieve(batch_id))
            return [
                anthropic_result(_as_dict(item))
                for item in client.messages.batches.results(batch_id)
            ]

    @staticmethod
    def _check_ended(batch: Any) -> None:
        if batch.processing_status != "ended":
            raise BatchError(
                f"Anthropic batch {batch.id} is still {batch.processing_status}: poll until"
                " it has ended, then collect its results"
            )

    def cancel(self, batch_id: str) -> None:
        """Ask Anthropic to stop the batch; a batch that is not running is left as it is."""
        client = self._sync()
        with self._errors("cancel", batch_id):
            if client.messages.batches.retrieve(batch_id).processing_status == "in_progress":
                client.messages.batches.cancel(batch_id)

    async def asubmit(self, requests: Sequence[BatchRequest]) -> str:
        """Async :meth:`submit`."""
        entries = self._entries(requests)
        client = self._async()
        with self._errors("submit"):
            return str((await client.messages.batches.create(requests=entries)).id)

    async def apoll(self, batch_id: str) -> RemoteBatch:
        """Async :meth:`poll`."""
        client = self._async()
        with self._errors("poll", batch_id):
            return _remote(await client.messages.batches.retrieve(batch_id))

    async def aresults(self, batch_id: str) -> list[BatchResult]:
        """Async :meth:`results`."""
        client = self._async()
        with self._errors("collection", batch_id):
            self._check_ended(await client.messages.batches.retrieve(batch_id))
            stream = await client.messages.batches.results(batch_id)
            return [anthropic_result(_as_dict(item)) async for item in stream]

    async def acancel(self, batch_id: str) -> None:
        """Async :meth:`cancel`."""
        client = self._async()
        with self._errors("cancel", batch_id):
            batch = await client.messages.batches.retrieve(batch_id)
            if batch.processing_status == "in_progress":
                await client.messages.batches.cancel(batch_id)
