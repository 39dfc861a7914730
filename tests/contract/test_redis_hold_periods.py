"""A budget hold counts in every period it is alive in, on Redis as in one process.

A 25 h batch hold made at 23:00 under a daily budget still counts after
midnight (the batch is still running, and records its spend into the new day)
until the call's record settles it, it is released, or it expires. Every
scenario runs on the local ledger and on the shared Redis one (``redis_url``)
with the same expectations: the two must agree.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis

from costopt_core import Budget, BudgetExceededError, CostEngine, Usage
from costopt_core.batch import BatchJob
from costopt_core.batch.budget import BATCH_HOLD_TTL_S
from costopt_core.budgets import BudgetPeriod
from costopt_core.redis_ledger import RedisLedger, from_pico, to_pico
from costopt_core.testing import FakeEmbedder
from tests.conftest import FakeClock
from tests.unit.test_batch_budget import batch_estimate, remote, requests

pytestmark = pytest.mark.redis

BACKENDS = ["local", "redis"]
MODEL = "gpt-4o-mini"
USAGE = Usage(1000, 200)
LATE = datetime(2026, 11, 21, 23, 0, tzinfo=UTC)  # an hour before midnight (UTC)


class Replicas:
    """Engines sharing one budget store (``redis``) or one engine alone (``local``)."""

    def __init__(self, backend: str, request: pytest.FixtureRequest, when: datetime) -> None:
        self.backend = backend
        self.clock = FakeClock(when)
        self.url = request.getfixturevalue("redis_url") if backend == "redis" else None
        self.ns = "p" + uuid.uuid4().hex[:10]
        self.stores: list[RedisLedger] = []

    def engine(self, *budgets: Budget) -> CostEngine:
        engine = CostEngine(embedder=FakeEmbedder(), clock=self.clock, budgets=list(budgets))
        if self.url is not None:
            self.stores.append(RedisLedger(self.url, namespace=self.ns).attach(engine))
        return engine

    def advance(self, **kwargs: float) -> None:
        self.clock.now += timedelta(**kwargs)

    def errors(self) -> int:
        return sum(s.errors for s in self.stores)


@pytest.fixture(params=BACKENDS)
def replicas(request: pytest.FixtureRequest) -> Replicas:
    return Replicas(request.param, request, LATE)


def daily(limit: Decimal = Decimal(5), tenant: str | None = None) -> Budget:
    return Budget(limit_usd=limit, period="day", policy="block", tenant=tenant)


def counted(engine: CostEngine, tenant: str | None = None) -> list[Decimal]:
    """What each budget covering ``tenant`` counts now (spend plus live holds)."""
    return [d.spent_usd for d in engine.check_budget(tenant, Decimal(0))]


def cost_of(usage: Usage) -> Decimal:
    cost = CostEngine(embedder=FakeEmbedder()).record_call(model=MODEL, usage=usage).cost_usd
    assert cost is not None
    return cost


def test_a_second_flush_after_midnight_is_refused_on_a_running_batchs_hold(
    replicas: Replicas,
) -> None:
    # The reviewer's scenario: a 25 h hold at 23:00, a second flush at 00:30.
    engine = replicas.engine(daily())
    engine.check_budget(None, Decimal(4), call_id="batch:job:hold:1:", hold_ttl_s=25 * 3600)
    replicas.advance(hours=1, minutes=30)  # 00:30 the next day, the batch still running
    with pytest.raises(BudgetExceededError) as info:
        engine.check_budget(None, Decimal(4), call_id="second-flush", hold_ttl_s=25 * 3600)
    assert info.value.spent_usd == Decimal(4)
    assert info.value.period == "day"
    assert replicas.errors() == 0


def test_a_batch_flushed_before_midnight_holds_the_next_days_budget_on_every_replica(
    replicas: Replicas,
) -> None:
    probe = CostEngine(embedder=FakeEmbedder())
    estimate = batch_estimate(probe, requests(2))
    budget = daily(estimate * Decimal("1.5"))  # room for one flush a day, not two
    a = replicas.engine(budget)
    b = a if replicas.backend == "local" else replicas.engine(budget)
    api = remote(hold=True)
    first = BatchJob(api, ":memory:", name="nightly", engine=a)
    first.enqueue(requests(2))
    first.flush()
    replicas.advance(hours=1, minutes=30)  # past midnight; the batch is still running
    second = BatchJob(api, ":memory:", name="nightly", engine=b)
    second.enqueue(requests(2))
    with pytest.raises(BudgetExceededError) as info:
        second.flush()
    assert info.value.spent_usd == estimate
    assert len(api.submitted) == 1
    replicas.advance(seconds=BATCH_HOLD_TTL_S - 5400 + 1)  # never collected: expired
    assert counted(b) == [0]
    assert replicas.errors() == 0


@pytest.mark.parametrize("recorded_at", ["before midnight", "after midnight"])
def test_a_settled_long_hold_stops_counting_in_the_new_period(
    replicas: Replicas, recorded_at: str
) -> None:
    engine = replicas.engine(daily(), daily(Decimal(50), tenant="acme"))
    cost = cost_of(USAGE)
    engine.check_budget("acme", Decimal(4), call_id="batch", hold_ttl_s=25 * 3600)
    assert counted(engine, "acme") == [4, 4]
    if recorded_at == "before midnight":
        replicas.advance(minutes=30)
        engine.record_call(model=MODEL, usage=USAGE, tenant="acme", call_id="batch")
        replicas.advance(hours=1)  # 00:30: yesterday's spend is yesterday's
        assert counted(engine, "acme") == [0, 0]
    else:
        replicas.advance(hours=1, minutes=30)
        assert counted(engine, "acme") == [4, 4]  # still running after midnight
        engine.record_call(model=MODEL, usage=USAGE, tenant="acme", call_id="batch")
        assert counted(engine, "acme") == [cost, cost]  # the spend, not spend + hold
    replicas.advance(hours=25)  # the hold's lifetime has passed: nothing changes
    assert counted(engine, "acme") == [0, 0]
    assert replicas.errors() == 0


def test_a_released_long_hold_stops_counting_in_the_new_period(replicas: Replicas) -> None:
    engine = replicas.engine(daily(), daily(Decimal(50), tenant="acme"))
    engine.check_budget("acme", Decimal(4), call_id="batch", hold_ttl_s=25 * 3600)
    replicas.advance(hours=1, minutes=30)
    assert counted(engine, "acme") == [4, 4]
    engine.release_budget("acme", "batch")  # the batch failed after midnight
    assert counted(engine, "acme") == [0, 0]
    engine.check_budget(None, Decimal(4), call_id="next", hold_ttl_s=25 * 3600)
    assert replicas.errors() == 0


def test_an_expired_long_hold_stops_counting_in_the_new_period(replicas: Replicas) -> None:
    engine = replicas.engine(daily())
    engine.check_budget(None, Decimal(4), call_id="batch", hold_ttl_s=2 * 3600)
    replicas.advance(hours=1, minutes=30)
    assert counted(engine) == [4]
    replicas.advance(minutes=29, seconds=59)  # 00:59:59, the hold's last second
    assert counted(engine) == [4]
    replicas.advance(seconds=2)  # 01:00:01
    assert counted(engine) == [0]
    engine.check_budget(None, Decimal(4), call_id="next")
    assert replicas.errors() == 0


def test_a_hold_counts_across_a_month_start_for_every_period_of_its_scope(
    replicas: Replicas,
) -> None:
    # Budgets of one scope and several periods share the hold; the month, the week
    # and the day all start at midnight (Sunday 2026-11-30 -> Tuesday 2026-12-01 is
    # a month start and a day start, not a week start).
    replicas.clock.now = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)
    periods: tuple[BudgetPeriod, ...] = ("day", "week", "month", "total")
    budgets = [
        Budget(limit_usd=Decimal(10), period=p, tenant="acme", policy="block") for p in periods
    ]
    engine = replicas.engine(*budgets, Budget(limit_usd=Decimal(10), period="day", policy="warn"))
    engine.check_budget("acme", Decimal(4), call_id="batch", hold_ttl_s=BATCH_HOLD_TTL_S)
    replicas.advance(hours=3)  # 01:00 on the 1st of December
    assert counted(engine, "acme") == [4] * 5
    # Checked again under its own call id, the call is not counted twice.
    assert counted(engine, "acme") == [4] * 5
    again = engine.check_budget("acme", Decimal(4), call_id="batch", hold_ttl_s=60)
    assert [d.spent_usd for d in again] == [0] * 5
    with pytest.raises(BudgetExceededError) as info:
        engine.check_budget("acme", Decimal(7), call_id="big")
    assert info.value.spent_usd == Decimal(4)
    # The first hold keeps its own lifetime: it did not become a 60 s hold.
    replicas.advance(seconds=61)
    assert counted(engine, "acme") == [4] * 5
    assert replicas.errors() == 0


def test_a_settled_hold_leaves_nothing_in_its_hash_and_the_hash_expires(
    redis_url: str,
) -> None:
    clock = FakeClock(LATE)
    engine = CostEngine(embedder=FakeEmbedder(), clock=clock, budgets=[daily()])
    shared = RedisLedger(redis_url, namespace="p" + uuid.uuid4().hex[:10]).attach(engine)
    client = redis.Redis.from_url(redis_url)
    engine.check_budget(None, Decimal(4), call_id="batch", hold_ttl_s=25 * 3600)
    key = shared.hold_key(None)
    fields = client.hgetall(key)
    assert from_pico(fields[b"r:batch"]) == Decimal(4)
    assert int(fields[b"x:batch"]) == int(clock().timestamp() * 1000) + 25 * 3600 * 1000
    assert from_pico(fields[b"reserved"]) == Decimal(4)
    # The hash goes on its own once its last hold has expired (plus an hour's grace).
    assert 25 * 3600 * 1000 < client.pttl(key) <= 26 * 3600 * 1000
    # Nothing of the hold is in the period's spend hash.
    period: dict[bytes, bytes] = client.hgetall(shared.budget_key(None, "day", clock()))  # type: ignore[assignment]
    assert not [f for f in period if f.startswith((b"r:", b"x:", b"reserved"))], period
    clock.now += timedelta(hours=1, minutes=30)
    engine.record_call(model=MODEL, usage=USAGE, call_id="batch")
    assert client.hgetall(key) == {b"reserved": b"0"}
    assert shared.errors == 0


def test_a_hold_an_earlier_version_made_in_the_period_hash_still_counts(
    redis_url: str,
) -> None:
    # Holds made before holds had a hash of their own are in the spend hash of the
    # period: they count until settled or expired, as they did.
    clock = FakeClock(datetime(2026, 11, 21, 12, 0, tzinfo=UTC))
    engine = CostEngine(embedder=FakeEmbedder(), clock=clock, budgets=[daily()])
    shared = RedisLedger(redis_url, namespace="p" + uuid.uuid4().hex[:10]).attach(engine)
    key = shared.budget_key(None, "day", clock())
    now_ms = int(clock().timestamp() * 1000)
    shared.client.hset(
        key,
        mapping={
            "r:old": to_pico(Decimal(3)),
            "x:old": now_ms + 600_000,
            "r:gone": to_pico(Decimal(1)),
            "x:gone": now_ms + 60_000,
            "reserved": to_pico(Decimal(4)),
        },
    )
    assert counted(engine) == [4]
    with pytest.raises(BudgetExceededError):
        engine.check_budget(None, Decimal(2), call_id="new")
    clock.now += timedelta(seconds=61)
    assert counted(engine) == [3]  # the expired one dropped
    engine.record_call(model=MODEL, usage=USAGE, call_id="old")
    assert counted(engine) == [cost_of(USAGE)]
    assert shared.client.hget(key, "reserved") == b"0"
    assert shared.errors == 0
