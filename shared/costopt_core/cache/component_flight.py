"""A component stream's flight: concurrent identical stream misses run the component once.

A component's stream is looked up in two places (its output, then the chunk
sequence of a stream whose chunks could not be added; see ``component``) and
stored in one of them once it has ended whole. This joins the engine's flight
for the output's key (``SemanticCache.flight``): a waiter gets what the
leader stored, output or chunk sequence (``land``'s ``store_as``), and tells
them apart by their payload format. The leader reads the chunk sequence
itself before it streams; finding it, it leaves its flight unlanded, so each
waiter in turn reads it too (no component call, only reads in a row: rare,
and cheaper than a second flight for the chunks' key).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from costopt_core.cache.entry import CacheHit
from costopt_core.cache.flight import AsyncCacheFlight, CacheFlight
from costopt_core.cache.keys import CacheRequest

if TYPE_CHECKING:
    from costopt_core.cache.component import ComponentCache

__all__ = ["AsyncComponentStreamFlight", "ComponentStreamFlight"]


class _StreamFlight:
    """What the sync and async component stream flights share."""

    def __init__(self, component: ComponentCache, input: Any, tenant: str | None, variant: Any):
        self._component = component
        self._input = input
        self._tenant = tenant
        self._variant = variant
        self._request: CacheRequest | None = None
        #: Whether ``chunks`` are to be replayed (a hit, or a leader's answer).
        self.found = False
        #: The chunks to replay when ``found``.
        self.chunks: list[Any] = []

    def _open(self) -> CacheRequest | None:
        request = self._component.request(self._input, tenant=self._tenant, variant=self._variant)
        if request is None:
            self._component._count("bypassed")
        self._request = request
        return request

    def _chunks_of(self, hit: CacheHit | None) -> list[Any] | None:
        """What a hit on the output's key replays: an output, or a leader's chunk sequence."""
        if hit is None:
            return None
        whole = hit.response.payload_format != self._component.chunks_format
        return self._component._replayed(hit, whole=whole)

    def _found(self, chunks: list[Any] | None) -> None:
        self.found, self.chunks = self._component._streamed(chunks)

    def _entry(
        self, chunks: Sequence[Any], as_output: Callable[[Any], Any] | None
    ) -> tuple[CacheRequest, Any] | None:
        return self._component._stream_entry(
            self._input, chunks, self._tenant, self._variant, as_output
        )

    def _store_as(self, request: CacheRequest) -> CacheRequest | None:
        return None if request == self._request else request


class ComponentStreamFlight(_StreamFlight):
    """One stream of a component through the cache: replay, or stream and land.

    Made by :meth:`ComponentCache.stream_flight`. Entered (``with``), ``found``
    says whether ``chunks`` are to be replayed: stored for the input, or landed
    by an identical stream that led while this one waited (its first chunk
    comes once that stream has ended). When not found, the caller streams
    from the component and calls :meth:`land` with every chunk once the stream
    has ended whole. Leaving without landing (the stream failed or was
    abandoned) lets one waiting stream run the component instead. An input
    that cannot be a key is never found and lands nothing.
    """

    def __enter__(self) -> Self:
        request = self._open()
        self._flight: CacheFlight | None = None
        if request is None:
            return self
        flight = self._component.cache.flight(request).__enter__()
        chunks = self._chunks_of(flight.hit)
        if chunks is None:
            hit = self._component.cache.lookup(self._component._chunks_request(request))
            chunks = self._component._replayed(hit, whole=False)
        if flight.hit is None and chunks is None:
            self._flight = flight  # this stream leads
        else:
            # A hit that could not be read leaves no flight: the caller streams
            # and its chunks replace the entry, as before there were flights.
            flight.abandon()
        self._found(chunks)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._flight is not None:
            self._flight.abandon()

    def land(self, chunks: Sequence[Any], *, as_output: Callable[[Any], Any] | None = None) -> None:
        """Store the chunks of a stream that ended whole (see ``store_stream``), share them.

        Chunks that cannot be stored (none, or the codec cannot encode them)
        send the waiting streams to the component at once.
        """
        if self._request is None:
            return
        entry = self._entry(chunks, as_output)
        flight, self._flight = self._flight, None
        if flight is None:
            if entry is not None:
                self._component.cache.store(*entry)
        elif entry is None:
            flight.land_unshared()
        else:
            flight.land(entry[1], store_as=self._store_as(entry[0]))


class AsyncComponentStreamFlight(_StreamFlight):
    """Async twin of :class:`ComponentStreamFlight` (``async with``; ``await land``)."""

    async def __aenter__(self) -> Self:
        request = self._open()
        self._flight: AsyncCacheFlight | None = None
        if request is None:
            return self
        flight = await self._component.cache.aflight(request).__aenter__()
        chunks = self._chunks_of(flight.hit)
        if chunks is None:
            hit = await self._component.cache.alookup(self._component._chunks_request(request))
            chunks = self._component._replayed(hit, whole=False)
        if flight.hit is None and chunks is None:
            self._flight = flight
        else:
            flight.abandon()
        self._found(chunks)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._flight is not None:
            self._flight.abandon()

    async def land(
        self, chunks: Sequence[Any], *, as_output: Callable[[Any], Any] | None = None
    ) -> None:
        """Async twin of :meth:`ComponentStreamFlight.land`."""
        if self._request is None:
            return
        entry = self._entry(chunks, as_output)
        flight, self._flight = self._flight, None
        if flight is None:
            if entry is not None:
                await self._component.cache.astore(*entry)
        elif entry is None:
            await flight.land_unshared()
        else:
            await flight.land(entry[1], store_as=self._store_as(entry[0]))
