"""The shared Redis ledger: exact totals across replicas, budgets that hold, crashes, outages.

Runs against the suite's Redis (``redis_url``); the multi-process tests start real
replica processes (``tests/contract/ledger_worker.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from costopt_core import Budget, BudgetExceededError, CostEngine, CostLedger, Usage
from costopt_core.budgets import BudgetPeriod
from costopt_core.engine import default_engine, set_default_engine
from costopt_core.errors import ConfigurationError, StoreError
from costopt_core.redis_ledger import RedisLedger, from_pico, record_increments, to_pico
from costopt_core.types import CallRecord
from tests.contract.ledger_worker import MODEL, USAGE
from tests.redis_server import RedisServer

PERIODS: tuple[BudgetPeriod, ...] = ("day", "week", "month", "total")

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[2]


def _ns() -> str:
    return "t" + uuid.uuid4().hex[:10]


def _worker(url: str, ns: str, mode: str, n: str, worker: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.contract.ledger_worker", url, ns, mode, n, worker],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_money_round_trips_through_pico_dollars() -> None:
    for amount in ("0.000000075", "1234.5678", "0.0000000375", "0"):
        assert from_pico(to_pico(Decimal(amount))) == Decimal(amount)


def test_config_is_checked_and_the_constructor_does_no_io() -> None:
    RedisLedger("redis://nowhere.invalid:1", namespace="x")  # no connection yet
    with pytest.raises(ConfigurationError, match="namespace"):
        RedisLedger(namespace="a{b}")
    with pytest.raises(ConfigurationError, match="retention_days"):
        RedisLedger(retention_days=0)


def test_the_cluster_wide_ledger_equals_the_local_one(redis_url: str) -> None:
    ns = _ns()
    engine = CostEngine()
    shared = RedisLedger(redis_url, namespace=ns).attach(engine)
    engine.record_call(model="gpt-4o-mini", usage=USAGE, tenant="acme", tier="small")
    engine.record_call(
        model="gpt-4o",
        usage=Usage(2000, 300, cache_read_tokens=1024, cache_write_5m_tokens=0),
        tenant="globex",
        tier="frontier",
        framework="langchain",
    )
    engine.record_call(model="gpt-4o-mini", usage=USAGE, tenant="acme", outcome="cache_semantic")
    engine.record_call(model="gpt-4o-mini", usage=USAGE, mode="batch")
    engine.record_removed_tokens(500, lever="memory", tenant="acme")
    engine.record_call(model="mystery-model", usage=USAGE, tenant="acme")  # unpriced
    from costopt_core import overhead_of

    with overhead_of("memory"):  # a summarizer's calls: billed, and one a cache served
        engine.record_call(model="gpt-4o-mini", usage=USAGE, tenant="acme")
        engine.record_call(model="gpt-4o-mini", usage=USAGE, outcome="cache_exact")
    assert shared.errors == 0
    local, remote = engine.ledger, CostLedger.from_redis(redis_url, namespace=ns)
    assert remote.totals() == local.totals()
    for dim in ("tenant", "model", "tier", "outcome", "mode", "framework"):
        assert remote.totals_by(dim) == local.totals_by(dim), dim
    assert remote.savings_by_lever() == local.savings_by_lever()
    assert [r.call_id for r in remote.records()] == [r.call_id for r in local.records()]
    assert remote.spent("acme", "month") == local.spent("acme", "month")


def test_a_record_is_counted_once_even_if_written_twice(redis_url: str) -> None:
    ns = _ns()
    engine = CostEngine()
    shared = RedisLedger(redis_url, namespace=ns)
    record = engine.record_call(model=MODEL, usage=USAGE, tenant="a")
    assert shared.write(record) and shared.write(record)
    assert CostLedger.from_redis(redis_url, namespace=ns).totals().calls == 1


def test_increments_are_integers_per_combination() -> None:
    record = CostEngine().record_call(model=MODEL, usage=USAGE, tenant="a", tier="small")
    incs = dict(record_increments(record))
    combo = '["gpt-4o-mini","small","a",null,"model","sync"]\x1f'
    assert incs[combo + "calls"] == 1 and incs[combo + "input"] == 1000
    assert from_pico(incs[combo + "cost"]) == record.cost_usd


def test_budgets_hold_across_replicas_in_one_process(redis_url: str) -> None:
    ns = _ns()
    one_call = CostEngine().record_call(model=MODEL, usage=USAGE).cost_usd
    assert one_call is not None
    budget = Budget(limit_usd=one_call * 3, tenant="acme", policy="block")
    replicas = []
    for _ in range(2):
        e = CostEngine(budgets=[budget])
        RedisLedger(redis_url, namespace=ns).attach(e)
        replicas.append(e)
    spent = 0
    for i in range(6):
        e = replicas[i % 2]
        try:
            e.check_budget("acme", one_call, call_id=f"c{i}")
        except BudgetExceededError:
            break
        e.record_call(model=MODEL, usage=USAGE, tenant="acme", call_id=f"c{i}")
        spent += 1
    # each replica alone saw at most 2 calls; together they stopped at the limit
    assert spent == 3
    assert replicas[0].ledger.spent("acme") == one_call * 3


PICO_USD = Decimal("0.000000000001")


def _record(call_id: str, cost: Decimal) -> CallRecord:
    return CallRecord(call_id, datetime.now(UTC), MODEL, Usage(1, 1), cost, cost, {})


@pytest.mark.parametrize("limit", [Decimal("100"), Decimal("10000"), Decimal("1000000")])
def test_budgets_are_exact_to_the_pico_dollar_at_large_amounts(
    redis_url: str, limit: Decimal
) -> None:
    # From $100 (1e14 pico) Lua printed amounts as "1e+14"; past ~$9,007 (2^53 pico)
    # doubles drop the last pico-dollars. The check must stay exact at every size.
    shared, now = RedisLedger(redis_url, namespace=_ns()), datetime.now(UTC)
    budget = Budget(limit_usd=limit, policy="block", on_store_error="closed")
    key = shared.hold_key(None)
    assert shared.write(_record("spent", limit - 3 * PICO_USD))
    assert shared.spent(None, "month", now) == limit - 3 * PICO_USD
    # a hold of 2 pico, then 1 more: exactly at the limit is still allowed
    for call_id, est, held in (("a", 2 * PICO_USD, 2), ("b", PICO_USD, 3)):
        (d,) = shared.reserve([budget], None, est, call_id, now)
        assert d.action == "ok" and d.spent_usd + d.estimate_usd <= limit
        assert int(shared.client.hget(key, "reserved")) == held  # type: ignore[arg-type]
    # one pico over: refused, and nothing is held
    (d,) = shared.reserve([budget], None, PICO_USD, "c", now)
    assert d.action == "block" and d.spent_usd == limit
    assert int(shared.client.hget(key, "reserved")) == 3  # type: ignore[arg-type]
    # spend reaches the limit exactly (1e14 pico at $100): still read back exactly
    assert shared.write(_record("top-up", 3 * PICO_USD))
    (d,) = shared.reserve([budget], None, Decimal(0), None, now)
    assert d.spent_usd == limit + 3 * PICO_USD and d.action == "block"
    assert shared.errors == 0


@pytest.mark.parametrize("amount", [Decimal("100"), Decimal("10000"), Decimal("1000000")])
def test_large_holds_are_released_exactly(redis_url: str, amount: Decimal) -> None:
    shared, now = RedisLedger(redis_url, namespace=_ns()), datetime.now(UTC)
    budget = Budget(limit_usd=amount * 3, policy="block")
    key = shared.hold_key(None)
    shared.reserve([budget], None, amount + PICO_USD, "rec", now)
    shared.reserve([budget], None, amount + PICO_USD, "rel", now)
    assert shared.write(_record("rec", amount))  # the record drops its own hold
    shared.release([budget], None, "rel", now)
    assert shared.client.hget(key, "reserved") == b"0"
    assert shared.spent(None, "month", now) == amount
    assert shared.errors == 0


class _FlakySlowClient:
    """A real client whose scripts fail while ``down`` and are slow (a busy Redis)."""

    def __init__(self, real: redis.Redis) -> None:
        self.real, self.down = real, False

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def register_script(self, body: str) -> object:
        script = self.real.register_script(body)

        def call(**kw: object) -> object:
            if self.down:
                raise redis.ConnectionError("down")
            time.sleep(0.02)
            return script(**kw)  # type: ignore[arg-type]

        return call


def test_concurrent_writers_drain_the_spool_exactly_once(redis_url: str) -> None:
    # Several threads draining at once used to write the same head and both pop,
    # dropping a spooled record that never reached Redis.
    client = _FlakySlowClient(redis.Redis.from_url(redis_url))
    ns = _ns()
    shared = RedisLedger(redis_url, namespace=ns, client=client)  # type: ignore[arg-type]
    client.down = True
    spooled = [f"s{i}" for i in range(6)]
    for call_id in spooled:
        shared.breaker.success()  # keep the breaker closed: every write tries Redis
        assert not shared.write(_record(call_id, Decimal("0.01")))
    errors_while_down = shared.errors
    client.down = False
    live = [f"l{i}" for i in range(8)]
    threads = [
        threading.Thread(target=shared.write, args=(_record(c, Decimal("0.01")),)) for c in live
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each write sends a share of the backlog (a writer that finds another sending
    # it spools its own record): what is left goes out with the next flush.
    assert shared.flush_spool() == 0
    assert shared.errors == errors_while_down
    in_stream = [
        CallRecord.from_dict(json.loads(fields[b"r"])).call_id
        for _, fields in client.real.xrange(shared.stream_key)
    ]
    assert sorted(in_stream) == sorted(spooled + live)  # every record, exactly once
    assert CostLedger.from_redis(redis_url, namespace=ns).totals().calls == len(spooled + live)


def _acme_engine(redis_url: str) -> CostEngine:
    """An engine with a $0.001 block budget for "acme", shared in a fresh namespace."""
    e = CostEngine(budgets=[Budget(limit_usd=Decimal("0.001"), tenant="acme", policy="block")])
    RedisLedger(redis_url, namespace=_ns()).attach(e)
    return e


def test_a_failed_call_releases_its_hold(redis_url: str) -> None:
    e = _acme_engine(redis_url)
    e.check_budget("acme", Decimal("0.0008"), call_id="a")
    with pytest.raises(BudgetExceededError):
        e.check_budget("acme", Decimal("0.0008"), call_id="b")  # the hold of "a" counts
    e.release_budget("acme", "a")
    e.check_budget("acme", Decimal("0.0008"), call_id="b")


def test_a_call_checked_twice_counts_its_own_hold_once(redis_url: str) -> None:
    # A track_costs block's engine checks its parent's budgets, and the app's own
    # handler on that parent checks them again for the same call.
    e = _acme_engine(redis_url)
    e.check_budget("acme", Decimal("0.0008"), call_id="a")
    e.check_budget("acme", Decimal("0.0008"), call_id="a")  # not 0.0016 of 0.001
    with pytest.raises(BudgetExceededError):
        e.check_budget("acme", Decimal("0.0008"), call_id="b")  # another call still counts
    e.record_call(model=MODEL, usage=USAGE, tenant="acme", call_id="a")
    assert e.check_budget("acme", Decimal("0.0001"), call_id="c")


def test_a_track_costs_block_beside_the_apps_handler_is_not_refused_a_call_that_fits(
    redis_url: str,
) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from langchain_costopt import CostCallbackHandler, track_costs

    class GPT4o(FakeListChatModel):
        def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
            return {"ls_provider": "openai", "ls_model_name": "gpt-4o", "ls_model_type": "chat"}

    app = CostEngine()
    RedisLedger(redis_url, namespace=_ns()).attach(app)
    # The call is estimated at $0.00852: room for it once, not for it held twice.
    app.ledger.add_budget(Budget(limit_usd=Decimal("0.012"), policy="block"))
    app_handler = CostCallbackHandler(app)
    model = GPT4o(responses=["hi"] * 2)
    prompt = "x " * 200
    model.invoke(prompt, config={"callbacks": [app_handler]}, max_tokens=800)
    before = default_engine()
    set_default_engine(app)  # track_costs() blocks are children of the default engine
    try:
        with track_costs():
            model.invoke(prompt, config={"callbacks": [app_handler]}, max_tokens=800)
    finally:
        set_default_engine(before)
    assert app.ledger.totals().calls == 2


def test_an_orphaned_hold_expires(redis_url: str) -> None:
    ns = _ns()
    budget = Budget(limit_usd=Decimal("0.001"), policy="block")
    e = CostEngine(budgets=[budget])
    shared = RedisLedger(redis_url, namespace=ns, reservation_ttl_s=0.2).attach(e)
    e.check_budget(None, Decimal("0.0008"), call_id="dead-replica")
    with pytest.raises(BudgetExceededError):
        e.check_budget(None, Decimal("0.0008"))
    time.sleep(0.3)
    e.check_budget(None, Decimal("0.0008"))
    assert shared.errors == 0


def test_totals_are_exact_across_processes(redis_url: str) -> None:
    ns, n, procs = _ns(), 150, 4
    workers = [_worker(redis_url, ns, "record", str(n), f"w{i}") for i in range(procs)]
    for w in workers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    one = CostEngine().record_call(model=MODEL, usage=USAGE).cost_usd
    total = CostLedger.from_redis(redis_url, namespace=ns).totals()
    assert total.calls == n * procs
    assert total.cost_usd == one * n * procs  # exact, not approximately
    assert total.tokens["input_tokens"] == 1000 * n * procs
    by_tenant = CostLedger.from_redis(redis_url, namespace=ns).totals_by("tenant")
    assert {k: v.calls for k, v in by_tenant.items()} == {"t0": 200, "t1": 200, "t2": 200}


def test_eight_processes_cannot_overspend_a_shared_budget(redis_url: str) -> None:
    ns, procs = _ns(), 8
    one = CostEngine().record_call(model=MODEL, usage=USAGE).cost_usd
    assert one is not None
    limit = one * Decimal("40.5")
    workers = [_worker(redis_url, ns, "spend", str(limit), f"w{i}") for i in range(procs)]
    calls = 0
    for w in workers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        calls += int(out.split()[-1])
    spent = CostLedger.from_redis(redis_url, namespace=ns).spent("acme", "month")
    assert spent == one * calls
    # within one call's cost of the limit, never over it: 8 replicas that each
    # enforced the budget alone would have spent 8 times the limit
    assert limit - one < spent <= limit, (spent, limit)
    assert calls == 40


def test_a_killed_replica_loses_nothing_it_recorded(redis_url: str) -> None:
    ns = _ns()
    w = _worker(redis_url, ns, "record", "100000", "victim")
    assert w.stdout is not None
    recorded = 0
    for line in w.stdout:
        recorded = int(line.split()[1])
        if recorded >= 300:
            w.send_signal(signal.SIGKILL)
            break
    w.wait(timeout=30)
    assert w.returncode == -signal.SIGKILL
    calls = CostLedger.from_redis(redis_url, namespace=ns).totals().calls
    # everything it said was recorded is there (and at most the one in flight besides)
    assert recorded <= calls <= recorded + 1


def test_redis_down_degrades_and_recovers(own_redis_server: RedisServer) -> None:
    url, ns = own_redis_server.url, _ns()
    open_budget = Budget(limit_usd=Decimal("1"), tenant="acme", policy="block")
    closed_budget = Budget(
        limit_usd=Decimal("1"), tenant="strict", policy="block", on_store_error="closed"
    )
    e = CostEngine(budgets=[open_budget, closed_budget])
    shared = RedisLedger(url, namespace=ns, socket_timeout_s=0.2).attach(e)
    e.record_call(model=MODEL, usage=USAGE, tenant="acme")
    own_redis_server.kill()
    # the user's calls go on: the record stays local and is spooled
    e.check_budget("acme", Decimal("0.0001"), call_id="x")  # fails open
    with pytest.raises(BudgetExceededError, match="fails closed"):
        e.check_budget("strict", Decimal("0.0001"), call_id="y")
    e.record_call(model=MODEL, usage=USAGE, tenant="acme")
    assert shared.errors >= 1 and len(e.ledger) == 2
    with pytest.raises(StoreError, match="could not read the shared ledger"):
        CostLedger.from_redis(url, namespace=ns, client=None)
    own_redis_server.restart()
    deadline = time.monotonic() + 10
    while shared.flush_spool() and time.monotonic() < deadline:
        time.sleep(0.2)
    # The test server keeps nothing across a restart (no persistence): what is there
    # now is the record the replica spooled during the outage.
    assert CostLedger.from_redis(url, namespace=ns).totals().calls == 1
    assert shared.breaker.state == "closed"


def test_the_langchain_handler_holds_and_releases_shared_budgets(redis_url: str) -> None:
    from costopt_core import tenant_scope
    from costopt_core.testing import Script, ScriptedResponse
    from langchain_costopt import CostCallbackHandler
    from langchain_costopt.testing import ScriptedChatModel

    ns = _ns()
    r = ScriptedResponse("ok", USAGE, model=MODEL)
    one = CostEngine().record_call(model=MODEL, usage=USAGE).cost_usd
    assert one is not None
    budget = Budget(limit_usd=one * 2, tenant="acme", policy="block")
    engine = CostEngine(budgets=[budget])
    shared = RedisLedger(redis_url, namespace=ns).attach(engine)
    handler = CostCallbackHandler(engine)

    class Broken(ScriptedChatModel):
        def _generate(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise RuntimeError("provider down")

    with tenant_scope("acme"):
        for _ in range(3):  # a failed call holds nothing once it has failed
            with pytest.raises(RuntimeError):
                Broken(script=Script([r])).invoke("hi", config={"callbacks": [handler]})
        key = shared.hold_key("acme")
        assert int(shared.client.hget(key, "reserved") or 0) == 0  # every hold released
        ScriptedChatModel(script=Script([r])).invoke("hi", config={"callbacks": [handler]})
        ScriptedChatModel(script=Script([r])).invoke("hi", config={"callbacks": [handler]})
        with pytest.raises(BudgetExceededError):
            ScriptedChatModel(script=Script([r])).invoke("hi", config={"callbacks": [handler]})
    remote = CostLedger.from_redis(redis_url, namespace=ns)
    assert remote.spent("acme") == one * 2
    # a recorded call leaves nothing of its hold behind (amount or expiry)
    fields = shared.client.hkeys(key)
    assert not [f for f in fields if f.startswith((b"r:", b"x:"))], fields


def test_every_key_of_a_namespace_lives_in_one_cluster_slot() -> None:
    from datetime import UTC, datetime

    from redis.crc import key_slot

    shared = RedisLedger(namespace="support-bot")
    now = datetime(2026, 11, 22, tzinfo=UTC)
    keys = [shared.stream_key, shared.day_key(now.date())]
    keys += [shared.budget_key(t, p, now) for t in (None, "acme", "x{y}") for p in PERIODS]
    keys += [shared.hold_key(t) for t in (None, "acme", "x{y}")]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    other = RedisLedger(namespace="billing")
    assert key_slot(other.stream_key.encode()) != key_slot(shared.stream_key.encode())


def test_callers_in_line_behind_a_hung_redis_stop_waiting_once_the_breaker_opens() -> None:
    import socket

    # A "Redis" that takes connections and never answers.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(100)
    held: list[object] = []
    threading.Thread(
        target=lambda: [held.append(server.accept()) for _ in iter(int, 1)], daemon=True
    ).start()
    engine = CostEngine()
    for _ in range(9):
        engine.record_call(model="gpt-4o-mini", usage=Usage(100, 10))
    records = list(engine.ledger.records())
    port = server.getsockname()[1]
    ledger = RedisLedger(f"redis://127.0.0.1:{port}", namespace="hung", socket_timeout_s=0.3)
    waits: list[float] = []

    def record(i: int) -> None:
        start = time.monotonic()
        ledger.write(records[i])
        waits.append(time.monotonic() - start)

    threads = [threading.Thread(target=record, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Writes go one at a time (the spool stays in order), but once the breaker
    # opens (3 failures) the callers still in line spool at once instead of
    # each waiting out another socket timeout: about 3 timeouts, not 8.
    assert max(waits) < 0.3 * 5
    assert len(ledger._spool) == 8
    server.close()


def test_a_backlog_after_an_outage_goes_out_a_bounded_share_per_call(redis_url: str) -> None:
    # The first record after an outage used to send the whole spool (up to 100k
    # records, 4.6 s for 20,000) inside that one user call.
    ns = _ns()
    shared = RedisLedger(redis_url, namespace=ns)
    cost = Decimal("0.001")
    backlog = [_record(f"s{i}", cost) for i in range(4000)]
    for record in backlog:  # as an outage leaves them
        shared._to_spool(record)
    started = time.perf_counter()
    assert shared.write(_record("first", cost))  # its own record goes at once
    took = time.perf_counter() - started
    left = len(shared._spool)
    assert 0 < left < len(backlog), left  # a share went out, not all of it
    assert took < 0.5, f"one call spent {took:.3f} s on the backlog"
    live = 1
    while shared._spool:  # later calls send the rest
        assert shared.write(_record(f"l{live}", cost))
        live += 1
    assert shared.errors == 0 and shared.spool_dropped == 0
    everyone = CostLedger.from_redis(redis_url, namespace=ns, records=0)
    totals = everyone.totals()
    # every spooled record is there, exactly once, and so is each call's own
    assert totals.calls == len(backlog) + live
    assert totals.cost_usd == cost * (len(backlog) + live)
    assert shared.client.xlen(shared.stream_key) == len(backlog) + live


def test_flush_spool_sends_the_whole_backlog(redis_url: str) -> None:
    ns = _ns()
    shared = RedisLedger(redis_url, namespace=ns)
    for i in range(300):
        shared._to_spool(_record(f"s{i}", Decimal("0.01")))
    assert shared.flush_spool() == 0
    totals = CostLedger.from_redis(redis_url, namespace=ns, records=0).totals()
    assert totals.calls == 300 and totals.cost_usd == Decimal(3)


def test_calls_after_an_outage_that_filled_the_spool_drop_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A call that found another one sending the backlog spooled its own record;
    # with the spool full, that pushed the oldest spooled record out for good.
    from costopt_core.types import CallRecord

    delivered: set[str] = set()

    def write_one(self: RedisLedger, record: CallRecord) -> None:
        time.sleep(0.001)  # one round trip
        delivered.add(record.call_id)

    def write_pipelined(self: RedisLedger, records: list[CallRecord]) -> None:
        time.sleep(0.001)
        delivered.update(r.call_id for r in records)

    monkeypatch.setattr(RedisLedger, "_write_one", write_one)
    monkeypatch.setattr(RedisLedger, "_write_pipelined", write_pipelined)

    def record() -> CallRecord:
        return CallRecord(
            call_id=uuid.uuid4().hex,
            timestamp=datetime.now(UTC),
            model="gpt-4o",
            usage=Usage(1, 1),
            cost_usd=Decimal("0.01"),
            baseline_cost_usd=Decimal("0.01"),
            savings_usd={},
        )

    ledger = RedisLedger(client=redis.Redis(), spool_records=400)
    for _ in range(400):  # the outage filled the spool
        ledger._to_spool(record())
    start = threading.Barrier(8)

    def calls() -> None:
        start.wait()
        for _ in range(25):
            ledger.write(record())

    threads = [threading.Thread(target=calls) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.flush_spool() == 0
    assert ledger.spool_dropped == 0
    assert len(delivered) == 400 + 8 * 25


def test_period_spend_counters_expire_after_the_period_and_its_retention(redis_url: str) -> None:
    """Day, week and month spend counters never expired (about six new keys per
    tenant a day, kept for good); the all-time counter must stay."""
    ns = _ns()
    engine = CostEngine()
    RedisLedger(redis_url, namespace=ns, retention_days=1).attach(engine)
    engine.record_call(model=MODEL, usage=USAGE, tenant="a")
    client = redis.Redis.from_url(redis_url)
    ttls = {
        key.decode().split(":spend:")[1]: client.ttl(key)
        for key in client.scan_iter(f"{{costopt:{ns}}}:spend:*")
    }
    assert len(ttls) == 8  # all / tenant a x day, week, month, total
    day = 86_400
    for name, ttl in ttls.items():
        if ":total:" in name:
            assert ttl == -1, name  # never expires
        else:
            longest = {"day": 1, "week": 7, "month": 31}[name.split(":")[-2]]
            # Past the period's end (never short), within its longest length + retention.
            assert day < ttl <= (longest + 1) * day, (name, ttl)
