"""Redis dies (SIGKILL) or hangs (SIGSTOP) under a steady load of user calls.

A ``CachedChatModel`` over a scripted model uses a ``SemanticCache`` on the
Redis backend while worker threads (or asyncio tasks) ask a fixed set of
questions in a loop. Mid-load the server is killed and restarted empty (or
frozen and thawed). What must hold, measured on real processes:

- every user call succeeds: the model answers while the cache is down;
- the cache's circuit breaker opens during the outage and closes after it;
- hits resume after the restart (the empty cache refills from the model);
- the latency the outage adds is bounded by the socket timeout: the p99 of the
  requests during the outage stays below a few socket timeouts (figures printed).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from costopt_core import Budget, CostEngine, CostLedger
from costopt_core.cache import CacheConfig, SemanticCache
from costopt_core.cache.redis_backend import RedisCacheBackend
from costopt_core.errors import BudgetExceededError
from costopt_core.redis_ledger import RedisLedger
from costopt_core.testing import FakeEmbedder
from costopt_core.types import Usage
from langchain_costopt.cached_model import CachedChatModel
from langchain_costopt.testing import ScriptedChatModel
from tests.conftest import eventually
from tests.redis_server import RedisServer

SOCKET_TIMEOUT_S = 0.25
#: The model call a cache miss costs (a provider round trip, scaled down).
MODEL_LATENCY_S = 0.01
QUESTIONS = [f"What is the refund policy for order number {i}?" for i in range(12)]
WORKERS = 4
#: Outage requests may be this much slower than the model call at the 99th percentile.
P99_BOUND_S = 4 * SOCKET_TIMEOUT_S


@dataclass
class Load:
    """Outcome of every request, by the phase it started in."""

    phase: str = "before"
    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: list[BaseException] = field(default_factory=list)
    breaker_states: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, phase: str, seconds: float) -> None:
        with self.lock:
            self.latencies.setdefault(phase, []).append(seconds)

    def p99(self, phase: str) -> float:
        values = sorted(self.latencies[phase])
        return values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]

    def report(self, label: str) -> str:
        rows = [f"{label}: phase, requests, p50 ms, p99 ms, max ms"]
        for phase, values in self.latencies.items():
            rows.append(
                f"  {phase:>7} {len(values):5d} {statistics.median(values) * 1000:8.1f} "
                f"{self.p99(phase) * 1000:8.1f} {max(values) * 1000:8.1f}"
            )
        return "\n".join(rows)


def _setup(url: str) -> tuple[SemanticCache, CachedChatModel, ScriptedChatModel]:
    backend = RedisCacheBackend(
        url, prefix=f"faults:{uuid.uuid4().hex[:8]}", socket_timeout_s=SOCKET_TIMEOUT_S
    )
    cache = SemanticCache(
        backend,
        embedder=FakeEmbedder(),
        config=CacheConfig(breaker_failures=3, breaker_reset_s=0.5),
    )
    model = ScriptedChatModel.from_texts(["Refunds take five days."])
    model.script.latency_s = MODEL_LATENCY_S
    return cache, CachedChatModel(model=model, semantic_cache=cache), model


def _hits(cache: SemanticCache) -> int:
    s = cache.stats()
    return s.exact_hits + s.semantic_hits


def _run_threads(
    server: RedisServer, fault: str
) -> tuple[Load, SemanticCache, ScriptedChatModel, dict[str, int]]:
    cache, cached, model = _setup(server.url)
    load = Load()
    stop = threading.Event()

    def worker(offset: int) -> None:
        i = offset
        while not stop.is_set():
            phase = load.phase
            started = time.perf_counter()
            try:
                answer = cached.invoke(QUESTIONS[i % len(QUESTIONS)])
                assert answer.content == "Refunds take five days."
            except BaseException as exc:  # any failure of a user call fails the test
                with load.lock:
                    load.failures.append(exc)
            load.add(phase, time.perf_counter() - started)
            with load.lock:
                load.breaker_states.add(f"{phase}:{cache.breaker.state}")
            i += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
    for t in threads:
        t.start()
    marks: dict[str, int] = {}
    try:
        # Warm: every question answered once by the model, then served from Redis.
        assert eventually(lambda: _hits(cache) >= 50, 15, poll_s=0.05), "no hits before the outage"
        time.sleep(0.5)
        marks["hits_before"] = _hits(cache)
        load.phase = "outage"
        server.kill() if fault == "kill" else server.freeze()
        outage_calls = model.script.calls
        time.sleep(2.0)
        marks["model_calls_in_outage"] = model.script.calls - outage_calls
        marks["opened"] = cache.breaker.opened_count
        server.restart() if fault == "kill" else server.thaw()
        load.phase = "after"
        hits_at_restart = _hits(cache)
        # The cache refills from the model and serves hits again.
        assert eventually(lambda: _hits(cache) >= hits_at_restart + 50, 15, poll_s=0.05), (
            "hits never resumed"
        )
        assert eventually(lambda: cache.breaker.state == "closed", 5, poll_s=0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    return load, cache, model, marks


@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_the_cache_survives_an_outage_under_load(own_redis_server: RedisServer, fault: str) -> None:
    load, cache, _, marks = _run_threads(own_redis_server, fault)
    print("\n" + load.report(f"redis {fault}, {WORKERS} threads") + f"\n  marks {marks}")

    assert load.failures == []  # zero failed user calls
    assert marks["model_calls_in_outage"] > 0  # the model answered while the cache was down
    assert marks["opened"] >= 1  # the breaker opened during the outage ...
    assert "outage:open" in load.breaker_states
    assert cache.breaker.state == "closed"  # ... and closed after it
    assert cache.stats().errors > 0 and cache.stats().breaker_skips > 0
    # The added latency is bounded by the socket timeout, not by the outage length.
    assert load.p99("outage") < P99_BOUND_S + load.p99("before")
    assert max(load.latencies["outage"]) < 2 * P99_BOUND_S
    assert len(load.latencies["outage"]) > 20  # the load kept flowing during the outage


async def test_async_callers_survive_a_killed_server(own_redis_server: RedisServer) -> None:
    server = own_redis_server
    cache, cached, model = _setup(server.url)
    load = Load()
    stop = asyncio.Event()

    async def worker(offset: int) -> None:
        i = offset
        while not stop.is_set():
            phase = load.phase
            started = time.perf_counter()
            try:
                answer = await cached.ainvoke(QUESTIONS[i % len(QUESTIONS)])
                assert answer.content == "Refunds take five days."
            except BaseException as exc:
                load.failures.append(exc)
            load.add(phase, time.perf_counter() - started)
            load.breaker_states.add(f"{phase}:{cache.breaker.state}")
            i += 1

    async def wait_hits(n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while _hits(cache) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return _hits(cache) >= n

    tasks = [asyncio.create_task(worker(n)) for n in range(WORKERS)]
    try:
        assert await wait_hits(50, 15)
        load.phase = "outage"
        # kill/restart block for a moment: run them off the loop so the load goes on.
        await asyncio.to_thread(server.kill)
        await asyncio.sleep(2.0)
        opened = cache.breaker.opened_count
        await asyncio.to_thread(server.restart)
        load.phase = "after"
        assert await wait_hits(_hits(cache) + 50, 15), "hits never resumed"
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    print("\n" + load.report(f"redis kill, {WORKERS} asyncio tasks"))
    assert load.failures == []
    assert opened >= 1 and "outage:open" in load.breaker_states
    assert cache.breaker.state == "closed"
    assert load.p99("outage") < P99_BOUND_S + load.p99("before")
    assert model.script.calls > len(QUESTIONS)  # refilled after the empty restart


MODEL = "gpt-4o-mini"
USAGE = Usage(input_tokens=1000, output_tokens=100)


def _acme_engine(server: RedisServer) -> tuple[CostEngine, RedisLedger]:
    """An engine with a $5 block budget for "acme", shared on ``server`` (0.2 s timeout)."""
    e = CostEngine(budgets=[Budget(limit_usd=Decimal("5"), tenant="acme", policy="block")])
    shared = RedisLedger(server.url, namespace=uuid.uuid4().hex, socket_timeout_s=0.2).attach(e)
    return e, shared


def test_the_shared_ledger_on_a_hung_server_costs_bounded_latency(
    own_redis_server: RedisServer,
) -> None:
    # test_redis_ledger covers a killed server; a frozen one accepts connections and
    # never answers, so only the socket timeout and the breaker bound each call.
    server = own_redis_server
    e, shared = _acme_engine(server)
    e.record_call(model=MODEL, usage=USAGE, tenant="acme")
    server.freeze()
    try:
        latencies = []
        for n in range(20):
            started = time.perf_counter()
            e.check_budget("acme", Decimal("0.0001"), call_id=f"c{n}")  # fails open
            e.record_call(model=MODEL, usage=USAGE, tenant="acme")
            latencies.append(time.perf_counter() - started)
        print(
            f"\nshared ledger, frozen redis: max {max(latencies) * 1000:.0f} ms, "
            f"median {statistics.median(latencies) * 1000:.1f} ms over {len(latencies)} calls"
        )
        assert max(latencies) < 2.0
        # After the breaker opens, calls stop waiting on the dead server at all.
        assert statistics.median(latencies) < 0.05
        assert len(e.ledger) == 21 and shared.errors >= 1
    finally:
        server.thaw()
    # The same server comes back with its data: the spool fills in the outage's records.
    assert eventually(lambda: not shared.flush_spool(), 10, poll_s=0.05)
    totals = CostLedger.from_redis(server.url, namespace=shared.namespace).totals()
    assert totals.calls == 21
    assert totals.cost_usd == e.ledger.totals().cost_usd
    with pytest.raises(BudgetExceededError):
        e.check_budget("acme", Decimal("100"), call_id="big")


def test_a_release_behind_an_open_breaker_does_not_wait_on_a_hung_server(
    own_redis_server: RedisServer,
) -> None:
    # Every failed call releases its budget hold: with the breaker open, each
    # release waited a full socket timeout on the frozen server.
    server = own_redis_server
    e, shared = _acme_engine(server)
    e.check_budget("acme", Decimal("0.01"), call_id="warm")
    server.freeze()
    try:
        for n in range(3):  # 3 failures open the breaker; each fails open, held here
            e.check_budget("acme", Decimal("1.5"), call_id=f"c{n}")
        assert shared.breaker.state == "open"
        errors = shared.errors
        with pytest.raises(BudgetExceededError):  # $4.50 held on this replica
            e.check_budget("acme", Decimal("1"), call_id="over")
        started = time.perf_counter()
        for n in range(3):
            e.release_budget("acme", f"c{n}")
        took = time.perf_counter() - started
        assert took < SOCKET_TIMEOUT_S / 2, f"3 releases waited {took:.3f} s on a hung server"
        assert shared.errors == errors  # skipped behind the breaker, not tried
        # The replica's own holds are gone: the fail-open check sees $0 again.
        assert e.check_budget("acme", Decimal("5"))[0].spent_usd == 0
    finally:
        server.thaw()


def test_an_open_breaker_also_stops_the_shared_stats_flush(own_redis_server: RedisServer) -> None:
    # The counters every replica shares are flushed from inside user calls (once a
    # second): with the breaker open that flush must not wait on a hung server either.
    server = own_redis_server
    cache, cached, _ = _setup(server.url)
    cached.invoke(QUESTIONS[0])
    cache.flush_stats()
    server.freeze()
    try:
        for q in QUESTIONS[:4]:  # 3 failures open the breaker
            assert cached.invoke(q).content == "Refunds take five days."
        assert cache.breaker.state == "open"
        started = time.perf_counter()
        cache.flush_stats()
        took = time.perf_counter() - started
        assert took < SOCKET_TIMEOUT_S / 2, f"flush waited {took:.3f} s on a hung server"
    finally:
        server.thaw()
    # Nothing counted during the outage is lost: it is sent once Redis answers again.
    assert eventually(lambda: cache.breaker.state != "open", 2, poll_s=0.05)
    cached.invoke(QUESTIONS[0])  # the half-open trial succeeds and closes the breaker
    cache.flush_stats()
    assert cache.stats().lookups == 6
