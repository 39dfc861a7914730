"""What the batch providers share: one body of steps for sync and async, one SDK shell.

A provider method is written once, as a generator of steps that yields each
client call (``answer = yield client.batches.retrieve(batch_id)``):
``run_steps`` drives it with a sync client, whose calls have already answered
when they are yielded; ``arun_steps`` drives it with an async client, awaiting
each yielded call and throwing its error back in at the ``yield``, so the
``with``/``try`` around the call handles it the same way in both. The local
provider runs its tries of a request the same way.

``SdkBatchProvider`` is the shell the OpenAI and Anthropic providers share:
argument checks, clients built on first use from the same options, SDK errors
translated to ``BatchError``, closing what it built, and the eight public
methods over the provider's step generators. Both are recoverable providers:
``submit`` tags the batch with the job's submission token where the API can
carry one, and ``find_submission`` finds the batch again.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

from costopt_core.batch.provider import (
    BatchLimits,
    BatchRequest,
    BatchResult,
    ProviderUnavailableError,
    RemoteBatch,
    Submission,
    SubmitRefusedError,
    retryable_status,
)
from costopt_core.batch.split import submit_refused
from costopt_core.errors import BatchError, BatchNotFoundError, ConfigurationError

__all__ = ["Connect", "SdkBatchProvider", "Steps", "arun_steps", "as_dict", "drain", "run_steps"]

T = TypeVar("T")

#: A method's body: yields client calls (or their answers), is sent their answers.
Steps = Generator[Any, Any, T]
#: Returns the client (sync or async) a body calls, building it on first use.
Connect = Callable[[], Any]
#: Batches per page when listing (both APIs' maximum is at least this).
_PAGE = 100


def run_steps(steps: Steps[T]) -> T:
    """Run ``steps`` with a sync client: each yielded value is already the answer."""
    try:
        answer = next(steps)
        while True:
            answer = steps.send(answer)
    except StopIteration as stop:
        value: T = stop.value
        return value


async def arun_steps(steps: Steps[T]) -> T:
    """Run ``steps`` with an async client: await each yielded call, send back its answer."""
    try:
        pending = next(steps)
        while True:
            try:
                answer = await pending
            except BaseException as exc:  # raised where the step made the call
                pending = steps.throw(exc)
            else:
                pending = steps.send(answer)
    except StopIteration as stop:
        value: T = stop.value
        return value


def drain(items: Any) -> Any:
    """A step listing a stream: the list of a sync iterable, an awaitable for an async one."""
    if hasattr(items, "__aiter__"):

        async def collect() -> list[Any]:
            return [item async for item in items]

        return collect()
    return list(items)


def as_dict(obj: Any) -> dict[str, Any]:
    """An SDK object (or a plain mapping) as its JSON data."""
    if isinstance(obj, Mapping):
        return dict(obj)
    to_dict = getattr(obj, "to_dict", None)
    if to_dict is not None:
        data: dict[str, Any] = to_dict(mode="json")
        return data
    dumped: dict[str, Any] = obj.model_dump(mode="json")
    return dumped


class _SubmitRefusedForNow(SubmitRefusedError, ProviderUnavailableError):
    """A submit call turned down for now (a timeout, a rate limit, an overloaded API):
    nothing was created, and the same call may be taken later (``BatchJob.wait``
    tries again; any other refusal is raised at once)."""


class SdkBatchProvider(ABC):
    """A batch provider over a vendor SDK, its clients built on first use.

    Subclasses name their SDK in the class variables and write ``_submit``,
    ``_poll``, ``_results`` and ``_cancel`` once, as step generators.

    Raises:
        ConfigurationError: a negative ``max_retries``, a non-positive
            ``poll_interval_s`` or ``timeout_s``.
    """

    name: str
    limits: BatchLimits
    #: the SDK's module (``openai``), its vendor's name in messages (``OpenAI``).
    _sdk: ClassVar[str]
    _vendor: ClassVar[str]
    #: the SDK's sync and async client classes and the base of its errors.
    _client_class: ClassVar[str]
    _async_client_class: ClassVar[str]
    _sdk_error: ClassVar[str]
    #: the environment variable the SDK reads the key from.
    _key_env: ClassVar[str]
    #: what a 404 means for this API.
    _not_found: ClassVar[str] = "no such batch"
    #: a ``BatchJob`` sends each request under an id made of its own key and
    #: the request's id (``job_custom_id``): unique to the job, so a batch
    #: found by lookup is told from another job's, and always a valid custom_id.
    job_keyed_ids: ClassVar[bool] = True
    #: a batch stays at the provider for weeks: a 404 for one means this
    #: client cannot see it (another project's key...), not that it is gone,
    #: so a ``BatchJob`` raises instead of sending its requests again.
    batches_can_vanish: ClassVar[bool] = False

    def __init__(  # positional: each subclass passes its own keyword arguments on in order
        self,
        client: Any | None,
        async_client: Any | None,
        api_key: str | None,
        base_url: str | None,
        max_retries: int | None,
        timeout_s: float | None,
        poll_interval_s: float,
        /,
    ) -> None:
        if not poll_interval_s > 0:
            raise ConfigurationError(f"poll_interval_s={poll_interval_s!r}: must be > 0 seconds")
        if max_retries is not None and max_retries < 0:
            raise ConfigurationError(f"max_retries={max_retries!r}: must be >= 0")
        if timeout_s is not None and not timeout_s > 0:
            raise ConfigurationError(f"timeout_s={timeout_s!r}: must be > 0 seconds")
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

    # -- clients ------------------------------------------------------------------------

    def _import_sdk(self) -> Any:
        try:
            return importlib.import_module(self._sdk)
        except ImportError:
            raise ConfigurationError(
                f"{self._vendor}BatchProvider needs the '{self._sdk}' package: pip install"
                f" 'llm-costopt[providers]' (or pip install {self._sdk})"
            ) from None

    def _build(self, class_name: str) -> Any:
        sdk = self._import_sdk()
        try:
            return getattr(sdk, class_name)(**self._options)
        except getattr(sdk, self._sdk_error) as exc:
            raise ConfigurationError(
                f"cannot build the {self._vendor} client: {exc}; pass api_key= or set"
                f" {self._key_env}"
            ) from exc

    def _sync(self) -> Any:
        if self._client is None:
            self._client = self._build(self._client_class)
        return self._client

    def _async(self) -> Any:
        if self._async_client is None:
            self._async_client = self._build(self._async_client_class)
        return self._async_client

    @contextmanager
    def _errors(self, action: str, batch_id: str | None = None) -> Iterator[None]:
        """SDK and payload errors as ``BatchError``, naming what was being done."""
        sdk = self._import_sdk()
        vendor = self._vendor
        what = f"{action} of {vendor} batch {batch_id}" if batch_id else f"{vendor} batch {action}"
        try:
            yield
        except sdk.APIStatusError as exc:
            if action == "submit" and submit_refused(exc.status_code):
                if retryable_status(exc.status_code):
                    raise _SubmitRefusedForNow(
                        f"{what} failed: HTTP {exc.status_code}: {exc}; nothing was created,"
                        " and the requests are queued again (flush again later)"
                    ) from exc
                raise SubmitRefusedError(
                    f"{what} failed: HTTP {exc.status_code}: {exc}; nothing was created, and"
                    " the requests are queued again: it will be refused again until its cause"
                    " is fixed (the API key, the project's access, the request), then flush"
                ) from exc
            if isinstance(exc, sdk.NotFoundError):
                raise BatchNotFoundError(
                    f"{what} failed: {self._not_found} (HTTP 404): {exc}"
                ) from exc
            kind = ProviderUnavailableError if retryable_status(exc.status_code) else BatchError
            raise kind(f"{what} failed: HTTP {exc.status_code}: {exc}") from exc
        except sdk.APIConnectionError as exc:
            raise ProviderUnavailableError(
                f"{what} failed: cannot reach the {vendor} API ({exc}); check base_url and the"
                " network, then poll again (the batch id stays valid)"
            ) from exc
        except (getattr(sdk, self._sdk_error), ValueError, KeyError, TypeError) as exc:
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

    def _listed_since(
        self,
        list_page: Callable[..., Any],
        *,
        cursor: str,
        oldest: float,
        created_at: Callable[[Mapping[str, Any]], float],
    ) -> Steps[list[dict[str, Any]]]:
        """The batches an API lists (newest first, a page at a time) created since ``oldest``.

        Args:
            list_page: the SDK's list call (``limit=`` and the cursor keyword).
            cursor: the keyword naming the last id seen (``after``, ``after_id``).
            oldest: seconds since the epoch; older batches end the listing.
            created_at: a listed batch's creation time in seconds since the epoch.
        """
        out: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            with self._errors("lookup"):
                kwargs: dict[str, Any] = {"limit": _PAGE}
                if after is not None:
                    kwargs[cursor] = after
                page = yield list_page(**kwargs)
            batches = [as_dict(b) for b in page.data]
            created = [created_at(b) for b in batches]
            out.extend(b for b, at in zip(batches, created, strict=True) if at >= oldest)
            if not batches or not page.has_more or min(created) < oldest:
                return out
            after = str(batches[-1]["id"])

    # -- the seam: each method's body written once, as steps ----------------------------

    @abstractmethod
    def _submit(
        self, connect: Connect, requests: Sequence[BatchRequest], submission: str | None
    ) -> Steps[str]: ...

    @abstractmethod
    def _find(self, connect: Connect, submission: Submission) -> Steps[str | None]: ...

    @abstractmethod
    def _poll(self, connect: Connect, batch_id: str) -> Steps[RemoteBatch]: ...

    @abstractmethod
    def _results(self, connect: Connect, batch_id: str) -> Steps[list[BatchResult]]: ...

    @abstractmethod
    def _cancel(self, connect: Connect, batch_id: str) -> Steps[None]: ...

    def submit(self, requests: Sequence[BatchRequest], *, submission: str | None = None) -> str:
        """Submit ``requests`` (within ``limits``) as a batch; returns the id to poll.

        Args:
            requests: the requests of one batch.
            submission: the job's token for this call, to find the batch by
                (``find_submission``) if the caller dies before it records the id.

        Raises:
            ConfigurationError: the requests break ``limits`` or have invalid ids.
            BatchError: the API refused or could not be reached; nothing is left
                running.
        """
        return run_steps(self._submit(self._sync, requests, submission))

    def find_submission(self, submission: Submission) -> str | None:
        """The id of the batch submitted under ``submission``, or ``None`` if there is none.

        Raises:
            BatchError: the API could not be reached (ask again later).
        """
        return run_steps(self._find(self._sync, submission))

    def poll(self, batch_id: str) -> RemoteBatch:
        """The status and request counts of a submitted batch."""
        return run_steps(self._poll(self._sync, batch_id))

    def results(self, batch_id: str) -> list[BatchResult]:
        """One result per request of an ended batch.

        Raises:
            BatchError: the batch has not ended, or the API could not be reached.
        """
        return run_steps(self._results(self._sync, batch_id))

    def cancel(self, batch_id: str) -> None:
        """Ask the provider to stop the batch; a batch not running is left as it is."""
        run_steps(self._cancel(self._sync, batch_id))

    async def asubmit(
        self, requests: Sequence[BatchRequest], *, submission: str | None = None
    ) -> str:
        """Async :meth:`submit`."""
        return await arun_steps(self._submit(self._async, requests, submission))

    async def afind_submission(self, submission: Submission) -> str | None:
        """Async :meth:`find_submission`."""
        return await arun_steps(self._find(self._async, submission))

    async def apoll(self, batch_id: str) -> RemoteBatch:
        """Async :meth:`poll`."""
        return await arun_steps(self._poll(self._async, batch_id))

    async def aresults(self, batch_id: str) -> list[BatchResult]:
        """Async :meth:`results`."""
        return await arun_steps(self._results(self._async, batch_id))

    async def acancel(self, batch_id: str) -> None:
        """Async :meth:`cancel`."""
        await arun_steps(self._cancel(self._async, batch_id))
