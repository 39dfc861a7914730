"""Streams shared by identical requests in flight: one model call, every reader replays it.

``get_or_call`` makes concurrent identical misses wait for one answer; a stream
cannot wait for the end, and a stream must never wait on another reader either
(a chain may read two identical streams in turn in one thread or task, and the
first is only read when the second gives way). So the first request's stream
is shared instead: each later identical request reads it from its first chunk,
and the chunks are kept as they arrive.

- Sync (:class:`StreamShare`): whichever reader is furthest ahead pulls the
  next chunk from the provider's stream, under the share's lock. No reader
  waits for another to read; readers in other threads wait for the chunk the
  puller is fetching, as they would for their own call.
- Async (:class:`AsyncStreamShare`): one task reads the provider's stream (a
  stream's steps stay in one task, as HTTP clients expect), a chunk each time
  a reader waits for one; readers wait for the next chunk only. When the last
  reader leaves before the end, the task is cancelled and the provider's
  stream closed before the reader goes on, as leaving an unshared one does.

A stream read to its end is stored once (by the puller that met the end, or by
the task), before any reader sees the end, so the next identical request hits.
The only step a garbage collector's finalizer can run is a sync reader giving
its seat back (:meth:`StreamShare.leave`), which takes no lock; the registry
holds shares weakly and drops dead ones when it next looks.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from costopt_core.errors import CostOptError

__all__ = [
    "AsyncReading",
    "AsyncStreamShare",
    "Reading",
    "SharedStreamError",
    "StreamShare",
    "StreamShares",
    "aown_reads",
    "ashared_reads",
    "opened",
    "own_reads",
    "shared_reads",
]

log = logging.getLogger("costopt.cache")

T = TypeVar("T")


class SharedStreamError(CostOptError):
    """The identical request whose stream this one was replaying stopped mid-stream.

    Raised only after some chunks were delivered (before any, the request makes
    its own call). Ask again: the stream was not stored.
    """


class _Abandoned(Exception):
    """The stream was closed because nobody read it any more."""


class _Failed(Exception):
    """The shared stream failed; ``error`` is what its provider stream raised."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


class _NotOpened(Exception):
    """The opening request did not hand its stream over within the wait."""


class StreamShare(Generic[T]):
    """One provider stream that several identical sync requests read.

    Args:
        on_end: called once with every chunk when the stream ends (the store).
    """

    def __init__(self, on_end: Callable[[list[T]], object]) -> None:
        self._on_end = on_end
        # Reentrant: a chunk pulled inside the provider's own call by the same
        # thread fails as a generator already running, not as a deadlock.
        self._lock = threading.RLock()
        self._opened = threading.Event()
        self._upstream: Iterator[T] | None = None
        self.items: list[T] = []
        #: The stream ended (and was stored, when it could be) or failed.
        self.done = False
        #: What the provider's stream (or its opening) raised.
        self.error: BaseException | None = None
        # One token per request reading (the opener's too), dropped when it
        # stops early: a set, whose add and discard need no lock.
        self._seats: set[object] = set()
        self._closing = False
        self._paid = False
        #: What readers learned of the chunks (see Reading.memo).
        self.memo: dict[Any, Any] = {}

    def claim(self) -> bool:
        """True for the first reader to ask once the stream ended: the one that
        records the call (see :attr:`Reading.pays`)."""
        with self._lock:
            paid, self._paid = self._paid, True
            return not paid

    def admit(self) -> object | None:
        """A seat for a request reading the stream (the registry's lock is
        held); None if the stream is being closed (see :meth:`leave`)."""
        seat = object()
        self._seats.add(seat)
        if self._closing:
            self._seats.discard(seat)
            return None
        return seat

    def leave(self, seat: object) -> None:
        """A request stopped reading before the end: close the provider's stream
        now if it was the last one reading it.

        May run from a garbage collector's finalizer, so it takes no lock: the
        closing flag is set before the seats are read, and :meth:`admit` takes
        its seat before it reads the flag, so a join either is seen here or
        sees the flag and opens a stream of its own.
        """
        self._seats.discard(seat)
        if self.done:
            return
        self._closing = True
        if self._seats:
            self._closing = False
            return
        self.done = True
        self.error = _Abandoned()
        close = getattr(self._upstream, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()

    def start(self, upstream: Iterator[T]) -> None:
        """Hand over the opened provider stream (the opening request calls this)."""
        self._upstream = upstream
        self._opened.set()

    def fail(self, error: BaseException) -> None:
        """The provider stream could not be opened."""
        with self._lock:
            self.error, self.done = error, True
        self._opened.set()

    def read(self, wait_s: float) -> Iterator[T]:
        """Every chunk from the first.

        Raises:
            _Failed: the provider's stream failed (for every reader).
            _NotOpened: the stream was not opened within ``wait_s`` seconds.
        """
        seen = 0
        while (item := _next_of(self, seen)) is not _END:
            if item is _WAIT:
                if not self._opened.wait(wait_s):
                    raise _NotOpened
                self._pull(seen)
            else:
                seen += 1
                yield item  # type: ignore[misc]

    def _pull(self, seen: int) -> None:
        with self._lock:
            if len(self.items) > seen or self.done:
                return  # another reader fetched it meanwhile
            assert self._upstream is not None
            try:
                item = next(self._upstream)
            except StopIteration:
                _call_quietly(self._on_end, list(self.items))
                self.done = True
            except BaseException as exc:
                self.error, self.done = exc, True
                if not isinstance(exc, Exception):
                    raise  # this thread's interrupt is its own, not the stream's
            else:
                self.items.append(item)


class AsyncStreamShare(Generic[T]):
    """One provider stream that several identical requests of one event loop read.

    A task of its own reads the provider's stream, one chunk each time a
    reader is waiting for one, so the stream is read no further than its
    furthest reader, as an unshared one.

    Args:
        on_end: awaited once with every chunk when the stream ends (the store).
    """

    def __init__(self, on_end: Callable[[list[T]], Awaitable[object]]) -> None:
        self._on_end = on_end
        self.loop = asyncio.get_running_loop()
        self._opened: asyncio.Future[None] = self.loop.create_future()
        self._changed: asyncio.Future[None] = self.loop.create_future()
        self._demand: asyncio.Future[None] = self.loop.create_future()
        self._upstream: AsyncIterator[T] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wanted = 0
        self._readers = 0
        self._opener: weakref.ref[object] | None = None
        #: The opener's seat is held until it reads and stops, or closes unread.
        self._opener_seated = True
        self._closing = False
        self._paid = False
        self.memo: dict[Any, Any] = {}
        self.items: list[T] = []
        self.done = False
        self.error: BaseException | None = None

    def start(self, upstream: AsyncIterator[T], opener: object) -> None:
        """Hand over the opened provider stream (the opening request calls this).

        The opening request counts as a reader from now on, read or not yet
        (a LlamaIndex stream is handed over before it is read), so the others
        leaving do not close it under its feet, until it reads and stops, or
        closes ``opener`` (its reading) unread, or lets it go unread.
        """
        self._upstream = upstream
        self._readers += 1
        self._opener = weakref.ref(opener)
        _resolve(self._opened)

    async def unseat(self) -> None:
        """The opener closed its reading before reading: it reads no more."""
        if not self._opener_seated:
            return
        self._opener_seated = False
        self._readers -= 1
        await self._settle()

    async def _settle(self) -> None:
        """After a reader left: end the stream if nobody is counted reading it.

        An opener that let its reading go unread reads no more either.
        """
        if not self._opened.done():
            return  # the opener counts from its hand-over, which is to come
        if self._opener_seated and self._opener is not None and self._opener() is None:
            self._opener_seated = False
            self._readers -= 1
        if self._readers or self.done:
            return
        self._closing = True
        if self._task is not None:
            self._task.cancel()  # its close waits for nothing: nobody reads
            await asyncio.wait({self._task})
            return
        # Opened, never read: close it as an unshared stream dropped unread is.
        self.error, self.done = _Abandoned(), True
        self._wake()
        aclose = getattr(self._upstream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()

    def fail(self, error: BaseException) -> None:
        """The provider stream could not be opened."""
        self.error, self.done = error, True
        _resolve(self._opened)
        self._wake()

    def admit(self) -> object | None:
        """A seat (itself) for a request joining; None once every reader has
        left (the stream is being closed). Readers count when they read."""
        return None if self._closing else self

    def claim(self) -> bool:
        """See :meth:`StreamShare.claim` (one event loop: no lock)."""
        paid, self._paid = self._paid, True
        return not paid

    def _wake(self) -> None:
        changed, self._changed = self._changed, self.loop.create_future()
        _resolve(changed)

    def _want(self, count: int) -> None:
        self._wanted = max(self._wanted, count)
        if self._task is None:
            assert self._upstream is not None
            # Started by the first reader that waits, in a copy of its context.
            self._task = self.loop.create_task(self._pump(self._upstream))
        _resolve(self._demand)

    async def _pump(self, upstream: AsyncIterator[T]) -> None:
        try:
            while True:
                while len(self.items) >= self._wanted:
                    self._demand = self.loop.create_future()
                    await self._demand
                try:
                    item = await anext(upstream)
                except StopAsyncIteration:
                    break
                self.items.append(item)
                self._wake()
            if self._closing:  # a provider stream that ended when cancelled: cut short
                raise _Abandoned
            # Shielded: a whole answer is kept even if its readers leave now.
            await asyncio.shield(_await_quietly(self._on_end, list(self.items)))
        except BaseException as exc:  # cancelled too: every reader left
            self.error = _Abandoned() if self._closing else exc
            aclose = getattr(upstream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(BaseException):
                    await aclose()
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise  # the loop's to handle, after the readers are told
        finally:
            self.done = True
            self._wake()

    async def read(self, wait_s: float, *, opens: bool = False) -> AsyncGenerator[T, None]:
        """Every chunk from the first (see :meth:`StreamShare.read`).

        Readers are counted while they read: one that joined and has not read
        yet does not keep the stream going, and finds it closed (a failure
        before its first chunk: it asks again) if everyone left meanwhile.
        ``opens``: the reader is the opening request's.
        """
        if self._closing:
            raise _Failed(_Abandoned())
        if opens:  # counted since it handed the stream over; it reads now
            self._opener_seated = False
        else:
            self._readers += 1
        try:
            if not self._opened.done():
                try:
                    await asyncio.wait_for(asyncio.shield(self._opened), wait_s)
                except TimeoutError:
                    raise _NotOpened from None
            seen = 0
            while (item := _next_of(self, seen)) is not _END:
                if item is _WAIT:
                    changed = self._changed
                    self._want(seen + 1)
                    # Shielded: a reader cancelled here must not cancel the others' wait.
                    await asyncio.shield(changed)
                else:
                    seen += 1
                    yield item  # type: ignore[misc]
        finally:
            self._readers -= 1
            # Nobody reads on: end the provider's stream, and wait for it to
            # close, as leaving an unshared stream closes it before going on.
            await self._settle()


#: What :func:`_next_of` says when there is no chunk to give yet, or none more.
_WAIT, _END = object(), object()


def _next_of(share: StreamShare[T] | AsyncStreamShare[T], seen: int) -> T | object:
    """The chunk after the ``seen`` first, ``_WAIT`` or ``_END`` (both twins' step).

    Raises:
        _Failed: the provider's stream failed.
    """
    if seen < len(share.items):
        return share.items[seen]
    if not share.done:
        return _WAIT
    if share.error is not None:
        raise _Failed(share.error)
    return _END


class _Share(Protocol):
    done: bool

    def admit(self) -> object | None: ...

    def claim(self) -> bool: ...


S = TypeVar("S", bound=_Share)


class StreamShares(Generic[S]):
    """The live shares of one cache, by cache key (held weakly)."""

    def __init__(self) -> None:
        self._shares: dict[str, weakref.ref[S]] = {}
        self._lock = threading.Lock()
        self._prune_at = 64

    def join(self, key: str, new: Callable[[], S]) -> tuple[S, bool, object]:
        """The live share under ``key`` and False, or a new one (``new()``) and
        True; and the joining request's seat (see ``admit``)."""
        with self._lock:
            ref = self._shares.get(key)
            share = None if ref is None else ref()
            if share is not None and not share.done and _same_loop(share):
                seat = share.admit()
                if seat is not None:
                    return share, False, seat
            share = new()
            seat = share.admit()
            assert seat is not None  # a new share is not closing
            self._shares[key] = weakref.ref(share)
            if len(self._shares) >= self._prune_at:
                # A share whose readers all left unread dies without saying so.
                dead = [k for k, r in self._shares.items() if (s := r()) is None or s.done]
                for k in dead:
                    del self._shares[k]
                self._prune_at = max(64, 2 * len(self._shares))
            return share, True, seat


class _ReadingState:
    """Whether a reading records its call (see :attr:`Reading.pays`), and the
    memo of the stream it reads (see :attr:`Reading.memo`)."""

    __slots__ = ("__weakref__", "memo", "pays")

    def __init__(self) -> None:
        self.pays = True
        self.memo: dict[Any, Any] = {}


class Reading(Generic[T]):
    """What one request reads of a stream: ``(chunk, shared)`` pairs.

    ``shared``: the chunk comes from another request's call. ``pays``, once
    the pairs ended: whether this request records the call as made. Of the
    requests that read a shared stream to its end, the first to get there
    does (whoever opened it: an opener may stop reading first, and a stopped
    run is recorded with only what it read); the others record a hit, the
    opener too. A stream nobody shares pays.
    """

    def __init__(self, pairs: Iterator[tuple[T, bool]], paid: _ReadingState | None = None) -> None:
        self._pairs = pairs
        # Held apart from the pairs' generator, which must not hold this object:
        # that cycle would keep a dropped stream open until the next collection.
        self._paid = paid or _ReadingState()

    @property
    def pays(self) -> bool:
        return self._paid.pays

    @property
    def memo(self) -> dict[Any, Any]:
        """A dict every reader of the same stream shares (this reader's alone
        when nobody shares it): what a reader learned of a chunk, for the others."""
        return self._paid.memo

    def __iter__(self) -> Reading[T]:
        return self

    def __next__(self) -> tuple[T, bool]:
        return next(self._pairs)

    def close(self) -> None:
        close = getattr(self._pairs, "close", None)
        if close is not None:
            close()


class AsyncReading(Generic[T]):
    """Async :class:`Reading`."""

    def __init__(
        self,
        pairs: AsyncIterator[tuple[T, bool]],
        paid: _ReadingState | None = None,
        unseat: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._pairs = pairs
        self._paid = paid or _ReadingState()
        # An opener closing its reading before reading gives its seat back.
        self._unseat = unseat

    @property
    def pays(self) -> bool:
        return self._paid.pays

    @property
    def memo(self) -> dict[Any, Any]:
        """See :attr:`Reading.memo`."""
        return self._paid.memo

    def __aiter__(self) -> AsyncReading[T]:
        return self

    async def __anext__(self) -> tuple[T, bool]:
        self._unseat = None  # its reading counts it from here
        return await anext(self._pairs)

    async def aclose(self) -> None:
        unseat, self._unseat = self._unseat, None
        if unseat is not None:
            await unseat()
        aclose = getattr(self._pairs, "aclose", None)
        if aclose is not None:
            await aclose()


def _ended(share: _Share, paid: _ReadingState) -> bool:
    """At the end of a reading: sets ``paid.pays`` (the first to end records the
    call); True for one that records a hit (counted as shared)."""
    paid.pays = share.claim()
    return not paid.pays


def _retries(failed: _Failed, leads: bool, delivered: int) -> bool:
    """Whether a reading whose stream failed asks again (else it raises)."""
    if delivered:
        return False
    # Nothing delivered: a sharer asks again (one of them leads the retry), and
    # so does an opener whose stream was closed because nobody read it.
    return not leads or isinstance(failed.error, _Abandoned)


def shared_reads(
    shares: StreamShares[StreamShare[T]],
    key: str,
    open_stream: Callable[[], Iterator[T]],
    on_end: Callable[[list[T]], object],
    wait_s: float,
    on_shared: Callable[[], object] = lambda: None,
) -> Reading[T]:
    """The stream for ``key``: this request's own call (``shared`` False), or
    the call of an identical request in flight.

    Joins (or opens) the stream now, as a provider stream is opened when asked
    for; the chunks come as they are read. A request whose shared call failed
    before it delivered anything opens (or joins) another; after some chunks
    it raises the failure (an ``Exception`` as it was, anything else as
    :class:`SharedStreamError`). ``on_shared`` is called for each request
    that read a shared stream to its end and records it as a hit.
    """

    def join() -> tuple[StreamShare[T], bool, object]:
        share, leads, seat = shares.join(key, lambda: StreamShare(on_end))
        paid.memo = share.memo
        if leads:
            try:
                share.start(open_stream())
            except BaseException as exc:
                share.fail(exc)
                raise
        return share, leads, seat

    def reads(share: StreamShare[T], leads: bool, seat: object) -> Iterator[tuple[T, bool]]:
        while True:
            delivered = 0
            try:
                for item in share.read(wait_s):
                    delivered += 1
                    yield item, not leads
                if _ended(share, paid):
                    on_shared()
                return
            except _NotOpened:
                share.leave(seat)
                paid.memo = {}
                yield from own_reads(open_stream(), on_end)
                return
            except _Failed as failed:
                share.leave(seat)
                if not _retries(failed, leads, delivered):
                    raise _reraised(failed.error) from None
            except BaseException:  # stopped (GeneratorExit), interrupted
                share.leave(seat)
                raise
            share, leads, seat = join()

    paid = _ReadingState()
    return Reading(reads(*join()), paid)


async def ashared_reads(
    shares: StreamShares[AsyncStreamShare[T]],
    key: str,
    open_stream: Callable[[], AsyncIterator[T] | Awaitable[AsyncIterator[T]]],
    on_end: Callable[[list[T]], Awaitable[object]],
    wait_s: float,
    on_shared: Callable[[], object] = lambda: None,
) -> AsyncReading[T]:
    """Async :func:`shared_reads` (shares are per event loop)."""

    async def join() -> tuple[AsyncStreamShare[T], bool]:
        share, leads, _ = shares.join(key, lambda: AsyncStreamShare(on_end))
        paid.memo = share.memo
        if leads:
            try:
                # ``paid`` lives exactly as long as this request's reading.
                share.start(await opened(open_stream), opener=paid)
            except BaseException as exc:
                share.fail(exc)
                raise
        return share, leads

    async def reads(share: AsyncStreamShare[T], leads: bool) -> AsyncIterator[tuple[T, bool]]:
        while True:
            delivered = 0
            chunks = share.read(wait_s, opens=leads)
            try:
                async for item in chunks:
                    delivered += 1
                    yield item, not leads
                if _ended(share, paid):
                    on_shared()
                return
            except _NotOpened:
                paid.memo = {}
                async for pair in aown_reads(await opened(open_stream), on_end):
                    yield pair
                return
            except _Failed as failed:
                if not _retries(failed, leads, delivered):
                    raise _reraised(failed.error) from None
            finally:
                await chunks.aclose()  # now, not at collection: it stops counting
            share, leads = await join()

    paid = _ReadingState()
    share, leads = await join()
    return AsyncReading(reads(share, leads), paid, unseat=share.unseat if leads else None)


def own_reads(
    upstream: Iterator[T], on_end: Callable[[list[T]], object]
) -> Iterator[tuple[T, bool]]:
    """``(chunk, False)`` of a stream nobody shares; ``on_end`` only when it is
    read to its end."""
    items: list[T] = []
    for item in upstream:
        items.append(item)
        yield item, False
    _call_quietly(on_end, items)


async def aown_reads(
    upstream: AsyncIterator[T], on_end: Callable[[list[T]], Awaitable[object]]
) -> AsyncIterator[tuple[T, bool]]:
    """Async :func:`own_reads`."""
    items: list[T] = []
    async for item in upstream:
        items.append(item)
        yield item, False
    await _await_quietly(on_end, items)


async def opened(
    open_stream: Callable[[], AsyncIterator[T] | Awaitable[AsyncIterator[T]]],
) -> AsyncIterator[T]:
    """The stream ``open_stream()`` returns, awaited if it is a coroutine's."""
    stream = open_stream()
    if inspect.isawaitable(stream):
        return await stream
    return stream


def _reraised(error: BaseException) -> BaseException:
    # Another thread's interrupt, or a task's cancellation, is not this reader's.
    if isinstance(error, Exception) and not isinstance(error, _Abandoned):
        return error
    return SharedStreamError(
        f"the identical request whose stream this one replayed stopped ({type(error).__name__});"
        " ask again"
    )


def _same_loop(share: object) -> bool:
    loop = getattr(share, "loop", None)
    if loop is None:
        return True
    try:
        return loop is asyncio.get_running_loop()
    except RuntimeError:
        return False


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _call_quietly(fn: Callable[[list[T]], object], items: list[T]) -> None:
    # The store is fail-open already; a slip here must not fail a reader's stream.
    try:
        fn(items)
    except Exception:
        log.warning("storing a streamed answer failed", exc_info=True)


async def _await_quietly(fn: Callable[[list[T]], Awaitable[object]], items: list[T]) -> None:
    try:
        await fn(items)
    except Exception:
        log.warning("storing a streamed answer failed", exc_info=True)
