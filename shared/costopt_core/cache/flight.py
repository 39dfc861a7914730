"""Flights for streams: in-flight de-duplication when the caller makes the model call.

``get_or_call`` makes the model call itself, so it holds the flight for as
long as the call takes. A stream's caller reads the chunks as they come and
has the answer only once the stream has ended: the flight must stay open
across the caller's own code. A flight runs the very steps ``get_or_call``
runs (``SemanticCache._get_or_call_steps``: lookup, lead or wait, retry after
a failed leader, store, land) but stops where the model call would be made
and hands that call to its caller; ``land`` resumes the steps with the
complete answer. So streams and calls share one leader/waiter logic, and a
stream and a call asking the same thing at once still make one model call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Self

from costopt_core.cache.engine import CacheResult, NotShared, _Call, _one_request, _StoreAs
from costopt_core.cache.entry import CachedResponse, CacheHit
from costopt_core.cache.keys import CacheRequest

if TYPE_CHECKING:
    from costopt_core.cache.engine import SemanticCache

__all__ = ["AsyncCacheFlight", "CacheFlight"]


def _caller_calls() -> NoReturn:
    # A flight's steps stop at their model call (the drivers' ``pause``): the
    # caller makes it. Reaching this would be a driver bug.
    raise RuntimeError("a flight's model call is made by its caller")


class _Flight:
    """What the sync and async flights share: the steps, the hit, the ending."""

    def __init__(self, cache: SemanticCache, request: CacheRequest) -> None:
        self._cache = cache
        self._request = request
        self._steps: Generator[Any, Any, CacheResult] | None = None
        #: The steps wait at the caller's model call for its answer.
        self._open = False
        #: The answer found by the lookup or landed by the leader this caller
        #: waited for; None when this caller must call the model (and land).
        self.hit: CacheHit | None = None

    def _begin(self) -> Generator[Any, Any, CacheResult]:
        if self._steps is not None:
            raise RuntimeError("a flight is entered once")
        self._steps = self._cache._get_or_call_steps(self._request, _caller_calls)
        return self._steps

    def _took(self, out: Any) -> None:
        """Where the steps stopped: the caller's model call, or their end (a hit)."""
        if isinstance(out, _Call):
            self._open = True
        else:
            self.hit = out.hit

    def _resume(self) -> Generator[Any, Any, CacheResult]:
        if not self._open or self._steps is None:
            raise RuntimeError(
                "nothing to land: this flight has an answer (hit), was landed or was left"
            )
        self._open = False
        return self._steps

    def _answer(
        self, response: CachedResponse, store_as: CacheRequest | None
    ) -> CachedResponse | _StoreAs:
        return response if store_as is None else _StoreAs(store_as, response)

    def abandon(self) -> None:
        """End the flight without an answer: a failed leader.

        Waiters get the failed-call behaviour of ``get_or_call``: one of them
        leads a retry. Leaving the ``with`` block without :meth:`land` does
        this; it does nothing after a hit or a landing, so calling it again is
        harmless.
        """
        self._open = False
        if self._steps is not None:
            # Closing the steps runs their finally, which lands the flight failed.
            self._steps.close()


class CacheFlight(_Flight):
    """One caller's part in a request's flight, for a caller that streams the answer.

    Made by :meth:`SemanticCache.flight <costopt_core.cache.SemanticCache.flight>`;
    entering it (``with``) looks the request up and joins the in-flight
    de-duplication of ``get_or_call``:

    - ``hit`` is a ``CacheHit``: the lookup found an answer, or another caller
      led this request's flight and landed its answer while this one waited.
      Replay it as any cache hit. A waiter blocks until the leader's *whole*
      answer has landed, so its first chunk comes when the leader's answer is
      complete: the price of paying for the answer once.
    - ``hit`` is None: this caller streams from the model itself and, once the
      stream has ended whole, calls :meth:`land` with the complete answer. It
      is stored per the cache's store policy and handed to the waiters. For an
      answer that cannot be stored at all (it cannot be encoded), call
      :meth:`land_unshared`: the waiters then call the model at once, as after
      ``get_or_call``'s ``NotShared``.

    Leaving the block without landing (the stream failed, was abandoned or
    interrupted) ends the flight as a failed leader: one waiter leads a retry,
    the others wait for it. Waiters give up after ``config.inflight_wait_s``
    and call the model themselves (without storing), as with ``get_or_call``;
    with ``config.dedupe_inflight`` off nobody waits. ``hit`` is also None for
    a request with ``cache=False`` (:meth:`land` then stores nothing).

    Example:
        >>> from costopt_core.cache import CachedResponse, CacheRequest, SemanticCache
        >>> from costopt_core.testing import FakeEmbedder
        >>> from costopt_core.types import Message
        >>> cache = SemanticCache(embedder=FakeEmbedder())
        >>> req = CacheRequest(messages=(Message("user", "Capital of France?"),))
        >>> with cache.flight(req) as f:
        ...     if f.hit is None:
        ...         chunks = ["Par", "is."]  # streamed from the model
        ...         f.land(CachedResponse(text="".join(chunks)))
        >>> with cache.flight(req) as f:
        ...     f.hit.response.text
        'Paris.'
    """

    def __enter__(self) -> Self:
        steps = self._begin()
        # One request scope per stretch of steps (see _one_request): the flight
        # stays open across the caller's code, which may resume it elsewhere.
        with _one_request():
            self._took(self._cache._advance(steps, pause=True))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abandon()

    def land(self, response: CachedResponse, *, store_as: CacheRequest | None = None) -> None:
        """The complete answer of this caller's model call: store it, share it.

        Args:
            response: the whole answer (the stream's chunks put together).
            store_as: store it under this request instead of the flight's (a
                related entry that waiters know how to read, e.g. a component
                stream's chunk sequence); waiters get it all the same.

        Raises:
            RuntimeError: the flight had a hit, or was already landed or left.
        """
        steps = self._resume()
        with _one_request():
            self._cache._advance(steps, send=self._answer(response, store_as))

    def land_unshared(self) -> None:
        """This caller answered, but its answer cannot be stored or shared.

        The waiters call the model at once (all of them), as after an answer
        the store policy did not keep.

        Raises:
            RuntimeError: the flight had a hit, or was already landed or left.
        """
        steps = self._resume()
        with _one_request(), contextlib.suppress(NotShared):
            self._cache._advance(steps, throw=NotShared())


class AsyncCacheFlight(_Flight):
    """Async twin of :class:`CacheFlight` (``async with cache.aflight(request) as f``).

    ``land`` and ``land_unshared`` are awaited; ``abandon`` is not (it does no
    I/O, so a finalizer may call it). A waiting coroutine does not block its
    event loop, and sync and async callers share one flight per request.
    """

    async def __aenter__(self) -> Self:
        steps = self._begin()
        with _one_request():
            self._took(await self._cache._aadvance(steps, pause=True))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abandon()

    async def land(self, response: CachedResponse, *, store_as: CacheRequest | None = None) -> None:
        """Async twin of :meth:`CacheFlight.land`."""
        steps = self._resume()
        with _one_request():
            await self._cache._aadvance(steps, send=self._answer(response, store_as))

    async def land_unshared(self) -> None:
        """Async twin of :meth:`CacheFlight.land_unshared`."""
        steps = self._resume()
        with _one_request(), contextlib.suppress(NotShared):
            await self._cache._aadvance(steps, throw=NotShared())
