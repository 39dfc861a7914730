"""``SemanticCache``: the exact + semantic response cache every adapter uses.

One lookup tries the exact key, then the nearest stored prompts of the same
scope, accepting a semantic candidate only when it clears the threshold, the
false-hit guards, the learned pair check (with the default embedder) and
(optionally) a verifier. A failing backend is a miss,
never an error for the user; a circuit breaker stops calling a dead one.
Concurrent identical misses make one model call.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar, cast

import numpy as np
import numpy.typing as npt

from costopt_core.cache.backend import CacheBackend, CombinedLookup
from costopt_core.cache.breaker import CircuitBreaker
from costopt_core.cache.config import CacheConfig
from costopt_core.cache.defaults import DEFAULT_PAIR_GATE, DEFAULT_SIMILARITY_THRESHOLD
from costopt_core.cache.entry import CachedResponse, CacheEntry, CacheHit
from costopt_core.cache.guards import decide
from costopt_core.cache.inflight import Flights, Joined
from costopt_core.cache.keys import (
    CacheRequest,
    PreparedRequest,
    check_ttl,
    namespace_of,
    prepare,
    scope_tag,
)
from costopt_core.cache.memory_backend import MemoryCacheBackend
from costopt_core.cache.pair_model import PairScorer, default_pair_model, pair_probability
from costopt_core.cache.shared_stream import (
    AsyncReading,
    AsyncStreamShare,
    Reading,
    StreamShare,
    StreamShares,
    aown_reads,
    ashared_reads,
    opened,
    own_reads,
    shared_reads,
)
from costopt_core.cache.signing import sign, verify
from costopt_core.embeddings import Embedder, KnowsVectors, KnowsWindow, is_default_embedder
from costopt_core.errors import ConfigurationError
from costopt_core.finish import (
    BLOCKED_FINISH_REASONS,
    FAILED_FINISH_REASONS,
    TRUNCATED_FINISH_REASONS,
    normalise_finish_reason,
)
from costopt_core.overhead import overhead_of

__all__ = ["CacheResult", "CacheStats", "SemanticCache", "Verifier", "skip_reason"]

log = logging.getLogger("costopt.cache")

#: ``verifier(query_text, cached_prompt_text, cached_response) -> serve?``
Verifier = Callable[[str, str, CachedResponse], bool]
T = TypeVar("T")
#: What a finished stream is kept as (see SemanticCache.share_stream).
_Streamed = CachedResponse | tuple[CacheRequest, CachedResponse] | None
#: How often a replica sends its counter increments to a shared backend (seconds).
STATS_FLUSH_S = 1.0


def skip_reason(response: CachedResponse, config: CacheConfig) -> str | None:
    """Why an answer must not be stored, or None to store it.

    The finish reason is read in any provider's vocabulary and case (see
    ``costopt_core.finish``): an answer a safety system blocked or replaced
    (OpenAI's ``content_filter``, Bedrock's ``guardrail_intervened``, Gemini's
    ``SAFETY`` / ``RECITATION``, Anthropic's ``refusal``) or a failed call is
    never stored, since it is not the model's answer to the question and a
    retry may get one; an answer cut by the output limit (``length``,
    ``max_tokens``, Gemini's ``MAX_TOKENS``) only with ``config.cache_truncated``.

    Args:
        response: the answer, as the adapter read it.
        config: the cache's configuration.

    Returns:
        ``"not_complete"``, ``"truncated"``, ``"tool_calls"`` or ``"empty"``;
        None to store the answer.
    """
    finish = normalise_finish_reason(response.finish_reason)
    if finish in BLOCKED_FINISH_REASONS or finish in FAILED_FINISH_REASONS:
        return "not_complete"
    if finish in TRUNCATED_FINISH_REASONS and not config.cache_truncated:
        return "truncated"
    if response.tool_calls and not config.cache_tool_calls:
        return "tool_calls"
    if not response.text.strip() and not response.tool_calls and response.structured is None:
        return "empty"
    return None


# The I/O a lookup, a store or a get-or-call asks of its driver (see _drive /
# _adrive), the model call and the wait for another's included: the decisions
# are written once, as generators, and the sync and async twins only differ in
# how they carry these out.
@dataclass(frozen=True, slots=True)
class _Get:
    key: str
    now: float


@dataclass(frozen=True, slots=True)
class _Embed:
    text: str


@dataclass(frozen=True, slots=True)
class _Fits:
    """Does the embedder read ``text`` whole? (Asked after it embedded it: loaded.)"""

    text: str


@dataclass(frozen=True, slots=True)
class _Search:
    scope: str
    vector: npt.NDArray[np.float32]
    now: float
    min_similarity: float


@dataclass(frozen=True, slots=True)
class _GetSearch:
    """Both tiers' reads in one round trip (a ``CombinedLookup`` backend)."""

    key: str
    search: _Search


@dataclass(frozen=True, slots=True)
class _Put:
    entry: CacheEntry


@dataclass(frozen=True, slots=True)
class _Score:
    """The pair model's logit for (cached prompt, query); None if it failed."""

    scorer: PairScorer
    cached_prompt: str
    query: str


@dataclass(frozen=True, slots=True)
class _PairFits:
    """Whether the pair model reads (cached prompt, query) whole; False if that failed."""

    scorer: PairScorer
    cached_prompt: str
    query: str


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class _Call:
    """The caller's model call (sync, or returning an awaitable): its answer, or
    its exception thrown in."""

    call: Callable[[], Any]


@dataclass(frozen=True, slots=True)
class _Join:
    """Lead ``key``'s flight or wait for it (see ``Flights.join``): a ``Joined``."""

    key: str
    wait_s: float


_Step = (
    (_Get | _Embed | _Fits | _Search | _GetSearch | _Put | _Score | _PairFits | _Sleep)
    | _Call
    | _Join
)
_Found = tuple["CacheEntry | None", list[tuple[CacheEntry, float]]]
_Lookup = tuple["CacheHit | None", PreparedRequest, "npt.NDArray[np.float32] | None"]


@dataclass
class CacheStats:
    lookups: int = 0
    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    inflight_shared: int = 0
    stores: int = 0
    errors: int = 0
    breaker_skips: int = 0
    entries: int = 0
    bytes: int = 0
    guard_rejections: Counter[str] | None = None
    skipped_stores: Counter[str] | None = None

    @property
    def hit_rate(self) -> float | None:
        return (self.exact_hits + self.semantic_hits) / self.lookups if self.lookups else None


@dataclass(frozen=True)
class CacheResult:
    """What ``get_or_call`` produced: the answer and, if it did not call the model, how."""

    response: CachedResponse
    hit: CacheHit | None


class NotShared(Exception):
    """Raised by a ``get_or_call`` ``call`` that answered but whose answer must be
    neither stored nor shared (it cannot be encoded): the caller catches it, and
    the requests waiting on that call answer for themselves, all at once, as
    they would after an answer the policy did not keep (not one after another,
    as after a failed call)."""


#: The request under way in this context: the ids of the backends it found
#: unreachable, whose remaining calls it skips (a miss, a dropped store) instead
#: of each waiting out its own timeout on a hung server. Per backend: a cache
#: nested in the request (a cached component calling a cached model) has its own.
_request: ContextVar[set[int] | None] = ContextVar("costopt_cache_request", default=None)


@contextlib.contextmanager
def _one_request() -> Iterator[None]:
    """Scope the backend calls of one lookup, store or get-or-call (the outermost)."""
    if _request.get() is not None:
        yield
        return
    token = _request.set(set())
    try:
        yield
    finally:
        _request.reset(token)


#: Caches whose counter increments may not have been sent yet.
_UNSENT: weakref.WeakSet[SemanticCache] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for cache in list(_UNSENT):
        with contextlib.suppress(Exception):
            cache.flush_stats()


class SemanticCache:
    """Exact and semantic response cache with tenant-safe scopes.

    Args:
        backend: where entries live: a ``CacheBackend``, or ``"memory"`` (default).
        embedder: embeds prompts for semantic matching; the engine's shared
            embedder (offline all-MiniLM-L6-v2) when omitted.
        config: thresholds, guards and policies.
        verifier: optional last check on a semantic candidate (e.g. a cheap
            model judging equivalence); False rejects the hit. A model call it
            makes is recorded as the semantic cache's ``overhead`` (see
            :func:`~costopt_core.overhead_of`).
        pair_model: what ``config.pair_check`` scores pairs with; the shipped
            ``PairModel`` (shared by every cache in the process) when omitted.
        clock: wall clock in epoch seconds (TTL), injectable for tests.

    Example:
        >>> from costopt_core.testing import FakeEmbedder
        >>> cache = SemanticCache(embedder=FakeEmbedder())
        >>> from costopt_core.types import Message
        >>> req = CacheRequest(messages=(Message("user", "What is our refund policy?"),))
        >>> cache.lookup(req) is None
        True
    """

    def __init__(
        self,
        backend: CacheBackend | str = "memory",
        *,
        embedder: Embedder | None = None,
        config: CacheConfig | None = None,
        verifier: Verifier | None = None,
        pair_model: PairScorer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(backend, str):
            if backend != "memory":
                raise ConfigurationError(
                    f"unknown backend {backend!r}: pass 'memory' or a CacheBackend instance "
                    "(SQLiteCacheBackend(path), RedisCacheBackend(url))"
                )
            backend = MemoryCacheBackend()
        self.backend: CacheBackend = backend
        self._embedder = embedder
        self.config = config or CacheConfig()
        key = self.config.signing_key
        if key is not None and len(key.get_secret_value()) < 16:
            raise ConfigurationError(
                "CacheConfig.signing_key needs at least 16 characters; use e.g. "
                "secrets.token_hex(32)"
            )
        self._signing_key = None if key is None else key.get_secret_value().encode("utf-8")
        self.verifier = verifier
        self._pair_model = pair_model
        self._decision: tuple[float, PairScorer | None] | None = None
        self._decided_for: CacheConfig | None = None
        self.clock = clock
        self.breaker = CircuitBreaker(self.config.breaker_failures, self.config.breaker_reset_s)
        self._stats = CacheStats(guard_rejections=Counter(), skipped_stores=Counter())
        self._stats_lock = threading.Lock()
        # A backend every replica shares (Redis) also keeps the counters of all of
        # them: increments are sent in one round trip at most once a second.
        self._shared_stats = callable(getattr(backend, "add_stats", None)) and callable(
            getattr(backend, "read_stats", None)
        )
        self._pending: Counter[str] = Counter()
        self._flushed_at = time.monotonic()
        self._flush_timer: threading.Timer | None = None
        # Held while increments are on their way: a stats() read waits for an
        # in-flight flush, so a replica always counts its own lookups.
        self._flush_lock = threading.Lock()
        self._flights = Flights()
        self._streams: StreamShares[StreamShare[Any]] = StreamShares()
        self._astreams: StreamShares[AsyncStreamShare[Any]] = StreamShares()
        # (backend, embedder, whether the two can read both tiers at once): a
        # runtime Protocol check per lookup would cost more than it decides.
        self._one_trip: tuple[object, object, bool] | None = None
        self._window: tuple[object, Callable[[str], bool] | None] | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from costopt_core.engine import default_engine

            self._embedder = default_engine().embedder
        return self._embedder

    @property
    def similarity_threshold(self) -> float:
        """The cosine a semantic candidate needs: the configured one, else the default
        of the decision in use (lower in front of the pair check, which does the rest)."""
        return self._resolved()[0]

    @property
    def pair_check(self) -> bool:
        """Whether candidates go through the learned pair check (``config.pair_check``)."""
        return self._resolved()[1] is not None

    def _resolved(self) -> tuple[float, PairScorer | None]:
        # Resolved on first use ("auto" looks at the embedder, which is built
        # lazily) and again if the config object is replaced.
        if self._decision is None or self._decided_for is not self.config:
            mode = self.config.pair_check
            on = mode == "on" or (mode == "auto" and is_default_embedder(self.embedder))
            scorer = (self._pair_model or default_pair_model()) if on else None
            threshold = self.config.similarity_threshold
            if threshold is None:
                threshold = DEFAULT_PAIR_GATE if on else DEFAULT_SIMILARITY_THRESHOLD
            self._decision = (threshold, scorer)
            self._decided_for = self.config
        return self._decision

    def __repr__(self) -> str:
        return f"SemanticCache(backend={self.backend!r})"

    # -- bookkeeping shared by the sync and async paths -------------------------
    def _count(self, field: str, n: int = 1) -> None:
        timer = None
        with self._stats_lock:
            setattr(self._stats, field, getattr(self._stats, field) + n)
            if self._shared_stats:
                self._pending[field] += n
                timer = self._flush_later()
        if timer is not None:
            timer.start()

    def _count_reason(self, kind: Literal["guard", "skip"], reason: str) -> None:
        timer = None
        with self._stats_lock:
            s = self._stats
            counter = s.guard_rejections if kind == "guard" else s.skipped_stores
            assert counter is not None
            counter[reason] += 1
            if self._shared_stats:
                self._pending[f"{kind}:{reason}"] += 1
                timer = self._flush_later()
        if timer is not None:
            timer.start()

    def _flush_later(self) -> threading.Timer | None:
        """A timer that sends the pending increments within ``STATS_FLUSH_S``, unless
        one is already set (called under ``_stats_lock``; the caller starts it).

        Sent from the timer's thread: a lookup never waits on the shared
        counters (an async one would block its event loop), and an idle
        replica's last increments still arrive.
        """
        if self._flush_timer is not None:
            return None
        wait = max(0.0, STATS_FLUSH_S - (time.monotonic() - self._flushed_at))
        timer = threading.Timer(wait, self._timed_flush)
        timer.daemon = True
        self._flush_timer = timer
        _UNSENT.add(self)  # flushed at interpreter exit, where daemon timers die
        return timer

    def _timed_flush(self) -> None:
        with self._stats_lock:
            self._flush_timer = None
        self.flush_stats()

    def flush_stats(self) -> None:
        """Send this replica's unsent counter increments to a shared backend now."""
        if not self._shared_stats:
            return
        if self.breaker.state == "open":
            return  # kept for a later flush: a dead backend must not slow the caller
        with self._flush_lock:
            with self._stats_lock:
                deltas, self._pending = self._pending, Counter()
                self._flushed_at = time.monotonic()
            if not deltas:
                return
            try:
                self.backend.add_stats(dict(deltas))  # type: ignore[attr-defined]
            except Exception as exc:  # counters are kept for the next flush
                with self._stats_lock:
                    self._pending.update(deltas)
                log.debug("cache stats flush failed (%s); kept for the next one", exc)

    def _stop_flushing(self) -> None:
        with self._stats_lock:
            timer, self._flush_timer = self._flush_timer, None
        if timer is not None:
            timer.cancel()
        _UNSENT.discard(self)

    def close(self) -> None:
        """Send the unsent counter increments, stop the flush timer, close the backend."""
        self._stop_flushing()
        self.flush_stats()
        self.backend.close()

    async def aclose(self) -> None:
        """Async :meth:`close` (the backend's async connections are closed too)."""
        self._stop_flushing()
        await asyncio.to_thread(self.flush_stats)
        aclose = getattr(self.backend, "aclose", None)
        if callable(aclose):
            await aclose()
        else:
            self.backend.close()

    def _allowed(self) -> bool:
        request = _request.get()
        if request and id(self.backend) in request:
            self._count("breaker_skips")
            return False
        if self.breaker.allow():
            return True
        self._count("breaker_skips")
        return False

    def _failed(self, op: str, exc: BaseException) -> None:
        self._count("errors")
        self.breaker.failure()
        request = _request.get()
        if request is not None and getattr(exc, "unreachable", False):
            request.add(id(self.backend))
        log.warning("cache %s failed (%s: %s); serving uncached", op, type(exc).__name__, exc)

    def _guarded(self, op: str, fn: Callable[[], T], default: T) -> T:
        if not self._allowed():
            return default
        try:
            out = fn()
        except Exception as exc:  # fail open: the user's call must not fail
            self._failed(op, exc)
            return default
        except BaseException:
            # Interrupted, not failed: says nothing about the backend, but a
            # half-open breaker's trial must be given back or none follows.
            self.breaker.abandon()
            raise
        self.breaker.success()
        return out

    async def _aguarded(self, op: str, fn: Callable[[], Awaitable[T]], default: T) -> T:
        if not self._allowed():
            return default
        try:
            out = await fn()
        except Exception as exc:
            self._failed(op, exc)
            return default
        except BaseException:  # cancelled (a timeout around the request): see _guarded
            self.breaker.abandon()
            raise
        self.breaker.success()
        return out

    def _fits(self, text: str) -> bool:
        """False when the embedder would read only part of ``text`` (see KnowsWindow)."""
        memo = self._window
        if memo is None or memo[0] is not self.embedder:  # a protocol check costs µs
            embedder = self.embedder
            fits = embedder.fits if isinstance(embedder, KnowsWindow) else None
            memo = self._window = (embedder, fits)
        if memo[1] is None:
            return True
        try:
            return memo[1](text)
        except Exception as exc:  # precision first: an unmeasured text is matched exactly only
            self._count("errors")
            log.warning("cache embedding window check failed (%s); matching exactly only", exc)
            return False

    def _embed(self, text: str) -> npt.NDArray[np.float32] | None:
        try:
            return self._finite(self.embedder.embed([text])[0])
        except Exception as exc:
            self._count("errors")
            log.warning("cache embedding failed (%s); serving uncached", exc)
            return None

    async def _aembed(self, text: str) -> npt.NDArray[np.float32] | None:
        try:
            return self._finite((await self.embedder.aembed([text]))[0])
        except Exception as exc:
            self._count("errors")
            log.warning("cache embedding failed (%s); serving uncached", exc)
            return None

    @staticmethod
    def _finite(vec: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``vec``, or an error when it holds NaN or infinities: a NaN similarity
        passes no comparison, so it could slip past the threshold in a backend."""
        if not np.isfinite(vec).all():
            raise ValueError("the embedder returned NaN or infinite values")
        return vec

    def _drive(self, steps: Generator[_Step, Any, T]) -> T:
        """Run a lookup, store or get-or-call, doing its I/O here (backend errors
        are misses). What a step raises (the model call's error, an interrupt) is
        thrown into the generator, so its own try/finally sees it."""
        try:
            step = next(steps)
            while True:
                try:
                    out = self._do(step)
                except BaseException as exc:
                    step = steps.throw(exc)
                else:
                    step = steps.send(out)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _adrive(self, steps: Generator[_Step, Any, T]) -> T:
        """Async twin of :meth:`_drive`."""
        try:
            step = next(steps)
            while True:
                try:
                    out = await self._ado(step)
                except BaseException as exc:  # cancelled too: see _drive
                    step = steps.throw(exc)
                else:
                    step = steps.send(out)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _do(self, step: _Step) -> Any:
        if isinstance(step, _Call):
            return step.call()
        if isinstance(step, _Join):
            return self._flights.join(step.key, step.wait_s)
        if isinstance(step, _Sleep):
            return time.sleep(step.seconds)
        if isinstance(step, _Embed):
            return self._embed(step.text)
        if isinstance(step, _Fits):
            return self._fits(step.text)
        if isinstance(step, _Get):
            return self._guarded("get", partial(self.backend.get, step.key, now=step.now), None)
        if isinstance(step, _Search):
            none: list[tuple[CacheEntry, float]] = []
            return self._guarded("search", self._searching(self.backend.search, step), none)
        if isinstance(step, _GetSearch):
            both = self._searching(self._combined().get_and_search, step.search, step.key)
            return self._guarded("get_and_search", both, None)
        if isinstance(step, _Score):
            return self._score(step)
        if isinstance(step, _PairFits):
            return self._pair_fits(step)
        return self._guarded("put", partial(self._put, step.entry), False)

    async def _ado(self, step: _Step) -> Any:
        if isinstance(step, _Call):
            return await step.call()
        if isinstance(step, _Join):
            return await self._flights.ajoin(step.key, step.wait_s)
        if isinstance(step, _Sleep):
            return await asyncio.sleep(step.seconds)
        if isinstance(step, _Embed):
            return await self._aembed(step.text)
        if isinstance(step, _Fits):
            return self._fits(step.text)  # the model is loaded by then: no blocking load
        if isinstance(step, _Get):
            get = partial(self.backend.aget, step.key, now=step.now)
            return await self._aguarded("get", get, None)
        if isinstance(step, _Search):
            none: list[tuple[CacheEntry, float]] = []
            return await self._aguarded("search", self._searching(self.backend.asearch, step), none)
        if isinstance(step, _GetSearch):
            both = self._searching(self._combined().aget_and_search, step.search, step.key)
            return await self._aguarded("get_and_search", both, None)
        if isinstance(step, _Score):
            return await asyncio.to_thread(self._score, step)
        if isinstance(step, _PairFits):
            return await asyncio.to_thread(self._pair_fits, step)
        return await self._aguarded("put", partial(self._aput, step.entry), False)

    def _score(self, step: _Score) -> float | None:
        # Unread words may be the ones that differ: a pair the model cannot read
        # whole is not a hit.
        if not self._pair_fits(step):
            return None
        try:
            return float(step.scorer.logits([(step.cached_prompt, step.query)])[0])
        except Exception as exc:  # precision first: an unchecked candidate is not served
            self._pair_check_failed(exc)
            return None

    def _pair_fits(self, step: _Score | _PairFits) -> bool:
        fits = getattr(step.scorer, "fits", None)
        if fits is None:
            return True  # a scorer that reads any length
        try:
            return bool(fits(step.cached_prompt, step.query))
        except Exception as exc:  # precision first: an unmeasured pair is not served
            self._pair_check_failed(exc)
            return False

    def _pair_check_failed(self, exc: Exception) -> None:
        self._count("errors")
        log.warning("cache pair check failed (%s); treating as a miss", exc)

    def _searching(self, method: Callable[..., T], step: _Search, *key: str) -> Callable[[], T]:
        """``method`` (a backend's search, or its combined read) bound to ``step``."""
        return partial(
            method,
            *key,
            step.scope,
            step.vector,
            self.config.top_k,
            now=step.now,
            min_similarity=step.min_similarity,
        )

    def _combined(self) -> CombinedLookup:
        return cast(CombinedLookup, self.backend)  # only asked after _known_vector

    def _known_vector(self, text: str) -> npt.NDArray[np.float32] | None:
        """The prompt's vector if the embedder has it at no cost and the backend
        can use it (one round trip for both tiers); None otherwise."""
        backend, embedder = self.backend, self.embedder
        memo = self._one_trip
        if memo is None or memo[0] is not backend or memo[1] is not embedder:
            both = isinstance(backend, CombinedLookup) and isinstance(embedder, KnowsVectors)
            memo = self._one_trip = (backend, embedder, both)
        if not memo[2]:
            return None
        try:
            vec = cast(KnowsVectors, embedder).known(text)
            return None if vec is None else self._finite(vec)
        except Exception:  # an optional shortcut: the lookup goes the usual way
            return None

    def _put(self, entry: CacheEntry) -> bool:
        self.backend.put(entry)
        return True

    async def _aput(self, entry: CacheEntry) -> bool:
        await self.backend.aput(entry)
        return True

    def _prepare(self, request: CacheRequest) -> PreparedRequest:
        return prepare(request, self.config.context_turns)

    def _authentic(self, entry: CacheEntry) -> bool:
        """False for an entry a signing cache did not sign (changed in the backend)."""
        if self._signing_key is None or verify(entry, self._signing_key):
            return True
        self._count_reason("guard", "signature")
        log.warning(
            "cache entry with a missing or wrong signature ignored (namespace %s)", entry.namespace
        )
        return False

    def _pad(self, started: float) -> float:
        """Seconds a hit must still wait to take ``pad_hits_to_s`` in all."""
        floor = self.config.pad_hits_to_s
        return 0.0 if floor is None else floor - (time.monotonic() - started)

    def _exact(self, prep: PreparedRequest, entry: CacheEntry | None) -> CacheHit | None:
        if entry is None or entry.scope != prep.scope or not self._authentic(entry):
            return None
        self._count("exact_hits")
        return CacheHit(entry, "exact", 1.0)

    def _pick(
        self, prep: PreparedRequest, candidates: list[tuple[CacheEntry, float]]
    ) -> Generator[_Step, Any, CacheHit | None]:
        """The first candidate that clears threshold, guards, pair check and verifier."""
        cfg = self.config
        threshold, scorer = self._resolved()
        for entry, sim in candidates:
            if entry.scope != prep.scope:  # a backend must never do this; refuse anyway
                log.error("cache backend returned an entry of another scope; ignored")
                continue
            if not self._authentic(entry):
                continue
            reason = decide(
                prep.text, entry.prompt_text, sim, threshold=threshold, config=cfg.guards
            )
            skip = cfg.pair_skip_similarity
            if reason is None and scorer is not None:
                if skip is not None and sim >= skip:
                    # Near-identical prompts skip the model, unless it cannot read
                    # them whole: two long prompts (a RAG context, pasted code) score
                    # 0.97+ on what they share, whatever their last lines ask.
                    ok = yield _PairFits(scorer, entry.prompt_text, prep.text)
                else:
                    logit = yield _Score(scorer, entry.prompt_text, prep.text)
                    pair = [(entry.prompt_text, prep.text)]
                    prob = (
                        None
                        if logit is None
                        else float(pair_probability([logit], [sim], pairs=pair)[0])
                    )
                    ok = prob is not None and prob >= cfg.pair_threshold
                reason = None if ok else "pair_check"
            if reason is None and self.verifier is not None:
                try:
                    # A model judging the pair is the cache's own cost, not a request.
                    with overhead_of("cache_semantic"):
                        ok = self.verifier(prep.text, entry.prompt_text, entry.response)
                except Exception as exc:
                    log.warning("cache verifier failed (%s); treating as a miss", exc)
                    ok = False
                reason = None if ok else "verifier"
            if reason is None:
                self._count("semantic_hits")
                return CacheHit(entry, "semantic", sim)
            if reason == "below_threshold":
                break  # candidates come best first
            self._count_reason("guard", reason)
        self._count("misses")
        return None

    def _entry_for(
        self,
        request: CacheRequest,
        prep: PreparedRequest,
        response: CachedResponse,
        vector: npt.NDArray[np.float32] | None,
        tags: tuple[str, ...],
        ttl_s: float | None,
    ) -> CacheEntry | None:
        reason = skip_reason(response, self.config)
        if reason is not None:
            self._count_reason("skip", reason)
            return None
        now = self.clock()
        ttl = ttl_s if ttl_s is not None else request.ttl_s
        ttl = ttl if ttl is not None else self.config.ttl_s
        # An entry in a conversation's own scope carries its base scope's tag,
        # so invalidate_scope finds it (see keys.scope_tag).
        family = () if prep.scope == prep.base_scope else (scope_tag(prep.base_scope),)
        entry = CacheEntry(
            key=prep.key,
            scope=prep.scope,
            namespace=prep.namespace,
            prompt_text=prep.text,
            response=response,
            vector=vector,
            tags=tuple(dict.fromkeys((*request.tags, *tags, *family))),
            created_at=now,
            expires_at=None if ttl is None else now + ttl,
        )
        return entry if self._signing_key is None else sign(entry, self._signing_key)

    # -- lookup ---------------------------------------------------------------
    def lookup(self, request: CacheRequest) -> CacheHit | None:
        """Exact, then semantic match for ``request``; None on a miss (or any failure).

        With ``config.pad_hits_to_s`` a hit returns no sooner than that many
        seconds after the lookup began (a timing side channel trade-off: an
        observer timing answers learns less about what others asked, and hits
        give back the latency they would have saved).
        """
        if not request.cache:
            return None
        with _one_request():
            return self._drive(self._padded_lookup_steps(request))[0]

    def _padded_lookup_steps(self, request: CacheRequest) -> Generator[_Step, Any, _Lookup]:
        """The lookup, its hits held back to ``pad_hits_to_s`` (see :meth:`lookup`)."""
        started = time.monotonic()
        out = yield from self._lookup_steps(request)
        if out[0] is not None and (wait := self._pad(started)) > 0:
            yield _Sleep(wait)
        return out

    def _lookup_steps(self, request: CacheRequest) -> Generator[_Step, Any, _Lookup]:
        """Exact, then semantic: the lookup both twins run (see _drive)."""
        self._count("lookups")
        prep = self._prepare(request)
        now = self.clock()
        semantic = self.config.semantic and bool(prep.text)
        # An exact hit must not wait for an embedding, so the exact key is read
        # first, unless the vector is already at hand: then both tiers are read
        # in one round trip.
        vec = self._known_vector(prep.text) if semantic else None
        found: _Found | None = None
        if vec is not None:
            search = _Search(prep.scope, vec, now, self.similarity_threshold)
            found = yield _GetSearch(prep.key, search)
        # Without the vector, or when the combined read failed (a search error
        # must not cost an exact hit), the tiers are read one by one.
        entry = found[0] if found is not None else (yield _Get(prep.key, now))
        hit = self._exact(prep, entry)
        if hit is not None:
            return hit, prep, None
        if not semantic:
            self._count("misses")
            return None, prep, None
        if vec is None:
            vec = yield _Embed(prep.text)
            if vec is None:
                self._count("misses")
                return None, prep, None
        if not (yield _Fits(prep.text)):
            # Past the embedder's window two prompts can share a vector whatever
            # their ends say (a query engine's question comes after the context).
            self._count_reason("guard", "too_long")
            self._count("misses")
            return None, prep, None
        cands = (
            found[1]
            if found is not None
            else (yield _Search(prep.scope, vec, now, self.similarity_threshold))
        )
        return (yield from self._pick(prep, cands)), prep, vec

    async def alookup(self, request: CacheRequest) -> CacheHit | None:
        """Async twin of :meth:`lookup`."""
        if not request.cache:
            return None
        with _one_request():
            return (await self._adrive(self._padded_lookup_steps(request)))[0]

    # -- store ----------------------------------------------------------------
    def store(
        self,
        request: CacheRequest,
        response: CachedResponse,
        *,
        tags: tuple[str, ...] = (),
        ttl_s: float | None = None,
    ) -> bool:
        """Keep ``response`` for ``request`` unless policy says not to; True if stored.

        Raises:
            ConfigurationError: ``ttl_s`` is not a finite number of seconds > 0.
        """
        ttl_s = check_ttl(ttl_s)
        steps = self._store_steps(request, self._prepare(request), response, tags, ttl_s)
        with _one_request():
            return self._drive(steps)[1]

    def _store_steps(
        self,
        request: CacheRequest,
        prep: PreparedRequest,
        response: CachedResponse,
        tags: tuple[str, ...],
        ttl_s: float | None,
        vec: npt.NDArray[np.float32] | None = None,
    ) -> Generator[_Step, Any, tuple[CacheEntry | None, bool]]:
        """The store both twins run (see _drive): the entry (None if policy skipped
        it) and whether the backend took it. Waiting callers get the entry either
        way: the answer is theirs even when it could not be kept."""
        entry = yield from self._entry_steps(request, prep, response, tags, ttl_s, vec)
        if entry is None:
            return None, False
        return entry, (yield from self._put_steps(entry))

    def _entry_steps(
        self,
        request: CacheRequest,
        prep: PreparedRequest,
        response: CachedResponse,
        tags: tuple[str, ...],
        ttl_s: float | None,
        vec: npt.NDArray[np.float32] | None,
    ) -> Generator[_Step, Any, CacheEntry | None]:
        """The entry a store would put (None if policy skips it), embedded if need be."""
        if not request.cache:
            return None
        if vec is None and self.config.semantic and prep.text:
            vec = yield _Embed(prep.text)
            if vec is not None and not (yield _Fits(prep.text)):
                vec = None  # stored for exact matches only (see _lookup_steps)
        return self._entry_for(request, prep, response, vec, tags, ttl_s)

    def _put_steps(self, entry: CacheEntry) -> Generator[_Step, Any, bool]:
        """Put ``entry``; whether the backend took it."""
        stored = bool((yield _Put(entry)))
        if stored:
            self._count("stores")
        return stored

    async def astore(
        self,
        request: CacheRequest,
        response: CachedResponse,
        *,
        tags: tuple[str, ...] = (),
        ttl_s: float | None = None,
    ) -> bool:
        """Async twin of :meth:`store`."""
        ttl_s = check_ttl(ttl_s)
        prep = self._prepare(request)
        with _one_request():
            return (await self._adrive(self._store_steps(request, prep, response, tags, ttl_s)))[1]

    # -- get or call, with in-flight de-duplication -----------------------------
    def get_or_call(self, request: CacheRequest, call: Callable[[], CachedResponse]) -> CacheResult:
        """The cached answer, or ``call()``'s (stored); concurrent identical misses call once."""
        with _one_request():
            return self._drive(self._get_or_call_steps(request, call))

    def _get_or_call_steps(
        self, request: CacheRequest, call: Callable[[], Any]
    ) -> Generator[_Step, Any, CacheResult]:
        """Get or call, as both twins run it (see _drive): ``call`` is the model
        call, sync or async, made by the driver at each ``_Call``."""
        if not request.cache:
            return CacheResult((yield _Call(call)), None)
        hit, prep, vec = yield from self._padded_lookup_steps(request)
        if hit is not None:
            return CacheResult(hit.response, hit)
        if not self.config.dedupe_inflight:
            response = yield _Call(call)
            yield from self._store_steps(request, prep, response, (), None, vec)
            return CacheResult(response, None)
        while True:
            joined: Joined = yield _Join(prep.key, self.config.inflight_wait_s)
            if joined.leader:
                break
            if joined.entry is not None:
                self._count("inflight_shared")
                return CacheResult(joined.entry.response, CacheHit(joined.entry, "exact", 1.0))
            if not joined.failed:
                # Waited too long, or the answer could not be kept: answer it ourselves.
                return CacheResult((yield _Call(call)), None)
            # The leader failed: one waiter leads the retry, the others wait for it.
        entry = None
        failed = True
        try:
            entry = self._landed(prep, (yield _Get(prep.key, self.clock())))
            if entry is not None:
                failed = False
                return CacheResult(entry.response, CacheHit(entry, "exact", 1.0))
            try:
                response = yield _Call(call)
            except NotShared:
                failed = False  # answered, for the leader alone: the waiters answer at once
                raise
            # Interrupted (cancelled, a timeout around the request) while the
            # entry is built: one waiter leads a retry. Once it is built the
            # waiters get it even if its put is interrupted: they must not all
            # call the model at once.
            entry = yield from self._entry_steps(request, prep, response, (), None, vec)
            failed = False
            if entry is not None:
                yield from self._put_steps(entry)
            return CacheResult(response, None)
        finally:
            self._flights.land(prep.key, joined.flight, entry, failed)

    def _landed(self, prep: PreparedRequest, entry: CacheEntry | None) -> CacheEntry | None:
        """The answer a flight stored between this request's miss and its own flight.

        A miss and taking the lead are two steps: another leader can store its
        answer and leave in between. Reading the key once more before calling
        keeps that one call (a backend read, against a model call).
        """
        if entry is None or entry.scope != prep.scope or not self._authentic(entry):
            return None
        self._count("inflight_shared")
        return entry

    async def aget_or_call(
        self, request: CacheRequest, call: Callable[[], Awaitable[CachedResponse]]
    ) -> CacheResult:
        """Async twin of :meth:`get_or_call`."""
        with _one_request():
            return await self._adrive(self._get_or_call_steps(request, call))

    # -- streams ----------------------------------------------------------------
    def share_stream(
        self,
        request: CacheRequest,
        open_stream: Callable[[], Iterator[T]],
        complete: Callable[[list[T]], _Streamed],
    ) -> Reading[T]:
        """A missed request's stream, shared by identical requests streaming at once.

        The first request opens the stream (``open_stream()``, called now);
        an identical request (same exact key) that streams before it ends
        replays it from the first chunk instead of calling the model, and no
        reader ever waits for another to read. A stream read to its end is
        stored once (``complete(chunks)``: the answer, or ``(request, answer)``
        to keep it under another request; None stores nothing). Off with
        ``config.dedupe_inflight`` or ``request.cache``; a sync and an async
        stream do not share.

        Args:
            request: the request that missed (look it up first).
            open_stream: makes the model call; returns its chunks.
            complete: the whole answer of a stream's chunks, to store.

        Returns:
            ``(chunk, shared)`` pairs: ``shared`` is True when the chunk comes
            from another request's call (serve it as a cache hit; it is the
            same object every reader gets, so copy it before changing it).
            Once they ended, ``pays`` says whether this request records the
            call as made: the first of its readers to reach the end does,
            the others record a hit (an opener may stop reading first).
            Not shared with ``config.pad_hits_to_s`` set (a replay would
            start sooner than a padded hit).

        Raises:
            SharedStreamError: the call this request shared stopped mid-stream
                on something that was not an ``Exception`` (a cancellation). An
                ``Exception`` of the call is raised as it is.
        """
        on_end = partial(self._store_streamed, request, complete)
        if not self._shares_streams(request):
            return Reading(own_reads(open_stream(), on_end))
        return shared_reads(
            self._streams,
            self._prepare(request).key,
            open_stream,
            on_end,
            self.config.inflight_wait_s,
            partial(self._count, "inflight_shared"),
        )

    async def ashare_stream(
        self,
        request: CacheRequest,
        open_stream: Callable[[], AsyncIterator[T] | Awaitable[AsyncIterator[T]]],
        complete: Callable[[list[T]], _Streamed],
    ) -> AsyncReading[T]:
        """Async twin of :meth:`share_stream` (``open_stream`` may be a coroutine
        function); streams share within one event loop. The stream is read to
        its end by a task of its own while anyone reads it."""
        on_end = partial(self._astore_streamed, request, complete)
        if not self._shares_streams(request):
            return AsyncReading(aown_reads(await opened(open_stream), on_end))
        return await ashared_reads(
            self._astreams,
            self._prepare(request).key,
            open_stream,
            on_end,
            self.config.inflight_wait_s,
            partial(self._count, "inflight_shared"),
        )

    def _shares_streams(self, request: CacheRequest) -> bool:
        # Hits padded against timing would be told apart by a replay that
        # starts at once: no sharing then.
        return request.cache and self.config.dedupe_inflight and not self.config.pad_hits_to_s

    def _store_streamed(
        self, request: CacheRequest, complete: Callable[[list[T]], _Streamed], items: list[T]
    ) -> None:
        if (entry := _streamed(request, complete, items)) is not None:
            self.store(*entry)

    async def _astore_streamed(
        self, request: CacheRequest, complete: Callable[[list[T]], _Streamed], items: list[T]
    ) -> None:
        if (entry := _streamed(request, complete, items)) is not None:
            await self.astore(*entry)

    # -- invalidation and stats ---------------------------------------------------
    def invalidate(
        self,
        *,
        request: CacheRequest | None = None,
        tag: str | None = None,
        tenant: str | None = None,
        all_tenants: bool = False,
    ) -> int:
        """Remove entries: one request's exact entry, a tag (in a tenant or all), or a tenant.

        Returns how many entries were removed (0 if the backend is unavailable).
        """
        if request is not None:
            key = self._prepare(request).key
            return self._guarded("delete", lambda: self.backend.delete([key]), 0)
        if tag is not None:
            ns = None if all_tenants else namespace_of(tenant)
            return self._guarded("delete_tag", lambda: self.backend.delete_tag(tag, ns), 0)
        if all_tenants:
            raise ConfigurationError("invalidate(all_tenants=True) needs a tag; use clear()")
        ns = namespace_of(tenant)
        return self._guarded("delete_namespace", lambda: self.backend.delete_namespace(ns), 0)

    def invalidate_scope(self, request: CacheRequest) -> int:
        """Remove every entry sharing ``request``'s scope (model, params, system, tools, tenant).

        Conversations under it are removed too, whatever their earlier turns
        (each has a scope of its own; see ``keys.scope_tag``).
        """
        prep = self._prepare(request)
        base, ns = prep.base_scope, prep.namespace

        def remove() -> int:
            return self.backend.delete_scope(base) + self.backend.delete_tag(scope_tag(base), ns)

        return self._guarded("delete_scope", remove, 0)

    def clear(self) -> None:
        self._guarded("clear", lambda: self.backend.clear(), None)

    async def aclear(self) -> None:
        await self._aguarded("clear", lambda: self.backend.aclear(), None)

    def _read_shared_stats(self) -> dict[str, int] | None:
        # Not allow(): in a half-open breaker that takes the single trial call,
        # which this read would never give back.
        if not self._shared_stats or self.breaker.state != "closed":
            return None
        self.flush_stats()
        try:
            counters: dict[str, int] = self.backend.read_stats()  # type: ignore[attr-defined]
        except Exception as exc:
            log.warning("shared cache stats unreadable (%s); this replica's own shown", exc)
            return None
        return counters

    def stats(self) -> CacheStats:
        """Counters and the backend's current size.

        With a backend every replica shares (Redis), the counters of every
        replica since the counters began (this one's unsent increments are sent
        first); this replica's own since creation when that read fails.
        """
        backend = self._guarded("stats", lambda: self.backend.stats(), None)
        shared = self._read_shared_stats()
        if shared is not None:
            return CacheStats(
                lookups=shared.get("lookups", 0),
                exact_hits=shared.get("exact_hits", 0),
                semantic_hits=shared.get("semantic_hits", 0),
                misses=shared.get("misses", 0),
                inflight_shared=shared.get("inflight_shared", 0),
                stores=shared.get("stores", 0),
                errors=shared.get("errors", 0),
                breaker_skips=shared.get("breaker_skips", 0),
                entries=backend.entries if backend else 0,
                bytes=backend.bytes if backend else 0,
                guard_rejections=Counter(
                    {k[6:]: v for k, v in shared.items() if k.startswith("guard:")}
                ),
                skipped_stores=Counter(
                    {k[5:]: v for k, v in shared.items() if k.startswith("skip:")}
                ),
            )
        with self._stats_lock:
            s = self._stats
            return CacheStats(
                lookups=s.lookups,
                exact_hits=s.exact_hits,
                semantic_hits=s.semantic_hits,
                misses=s.misses,
                inflight_shared=s.inflight_shared,
                stores=s.stores,
                errors=s.errors,
                breaker_skips=s.breaker_skips,
                entries=backend.entries if backend else 0,
                bytes=backend.bytes if backend else 0,
                guard_rejections=Counter(s.guard_rejections),
                skipped_stores=Counter(s.skipped_stores),
            )


def _streamed(
    request: CacheRequest, complete: Callable[[list[T]], _Streamed], items: list[T]
) -> tuple[CacheRequest, CachedResponse] | None:
    """What a stream that ended gave, and the request to keep it under; None to keep nothing."""
    answer = complete(items) if items and request.cache else None
    if answer is None or isinstance(answer, tuple):
        return answer
    return request, answer
