"""In-flight de-duplication: one model call per cache key at a time.

A request that missed either leads the flight for its key (it calls the model)
or follows it: a thread waits on the flight's event, a coroutine (of any event
loop) on a future of its own. Sync and async callers share one registry, so a
thread and a coroutine asking the same thing at once still make one call.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass

from costopt_core.cache.entry import CacheEntry

__all__ = ["Flight", "Flights", "Joined"]


class Flight:
    """One model call in flight, and who waits for it."""

    __slots__ = ("entry", "event", "failed", "waiters")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.entry: CacheEntry | None = None
        #: The leader's call raised or was cancelled: the waiters elect a new
        #: leader instead of all calling the model at once.
        self.failed = False
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[CacheEntry | None]]] = []


@dataclass(frozen=True, slots=True)
class Joined:
    """Where a request stands after joining a key's flight."""

    flight: Flight
    #: It leads: it calls the model, then lands the flight.
    leader: bool = False
    #: The leader's stored answer, when it landed with one within the wait.
    entry: CacheEntry | None = None
    #: The leader landed failed within the wait: elect a new one.
    failed: bool = False


def _resolve(fut: asyncio.Future[CacheEntry | None], entry: CacheEntry | None) -> None:
    if not fut.done():
        fut.set_result(entry)


class Flights:
    """The flights of one cache, by key."""

    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}
        self._lock = threading.Lock()

    def _enlist(
        self, key: str, loop: asyncio.AbstractEventLoop | None
    ) -> tuple[Flight, asyncio.Future[CacheEntry | None] | None, bool]:
        """The flight for ``key``, a follower's future on ``loop`` (if given), and
        whether this request leads. The future is registered under the lock that
        found the flight, so the flight cannot land in between unseen."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = Flight()
                return flight, None, True
            if loop is None:
                return flight, None, False
            fut: asyncio.Future[CacheEntry | None] = loop.create_future()
            flight.waiters.append((loop, fut))
            return flight, fut, False

    def join(self, key: str, wait_s: float) -> Joined:
        """Lead the flight for ``key``, or wait up to ``wait_s`` for its leader."""
        flight, _, leader = self._enlist(key, None)
        if leader:
            return Joined(flight, leader=True)
        if not flight.event.wait(wait_s):
            return Joined(flight)
        return Joined(flight, entry=flight.entry, failed=flight.failed)

    async def ajoin(self, key: str, wait_s: float) -> Joined:
        """Async twin of :meth:`join`."""
        loop = asyncio.get_running_loop()
        flight, fut, _ = self._enlist(key, loop)
        if fut is None:  # only a leader has none
            return Joined(flight, leader=True)
        try:
            entry = await asyncio.wait_for(asyncio.shield(fut), wait_s)
        except TimeoutError:
            return Joined(flight)
        except asyncio.CancelledError:
            # The caller gave up: it must not go on to call the model itself.
            with self._lock, contextlib.suppress(ValueError):
                flight.waiters.remove((loop, fut))
            raise
        return Joined(flight, entry=entry, failed=flight.failed)

    def land(self, key: str, flight: Flight, entry: CacheEntry | None, failed: bool) -> None:
        """End a flight: wake every waiting thread and coroutine with its result.

        ``failed``: the leader's call raised or was cancelled, so the waiters
        elect a new leader rather than all calling the model at once (a burst
        of retries against a provider that has just refused).
        """
        with self._lock:
            self._flights.pop(key, None)
            flight.entry = entry
            flight.failed = failed and entry is None
            waiters, flight.waiters = flight.waiters, []
        flight.event.set()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, fut in waiters:
            if loop is running:
                _resolve(fut, entry)
            else:
                # A closed loop has nobody waiting any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_resolve, fut, entry)
