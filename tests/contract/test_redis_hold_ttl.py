"""A budget hold's own lifetime in the shared Redis ledger, across replicas.

Runs against the suite's Redis (``redis_url``). The replicas share a settable
clock: the reserve script expires holds by the time the replica passes it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
import redis

from costopt_core import Budget, BudgetExceededError, CostEngine
from costopt_core.batch import BatchJob
from costopt_core.batch.budget import BATCH_HOLD_TTL_S
from costopt_core.redis_ledger import RedisLedger, from_pico
from costopt_core.testing import FakeEmbedder
from tests.conftest import FakeClock
from tests.unit.test_batch_budget import batch_estimate, remote, requests

pytestmark = pytest.mark.redis

DAY_S = 86_400


def _ns() -> str:
    return "h" + uuid.uuid4().hex[:10]


def replica(url: str, ns: str, clock: FakeClock, limit: Decimal) -> tuple[CostEngine, RedisLedger]:
    engine = CostEngine(
        embedder=FakeEmbedder(),
        clock=clock,
        budgets=[Budget(limit_usd=limit, period="month", policy="block")],
    )
    shared = RedisLedger(url, namespace=ns, reservation_ttl_s=600).attach(engine)
    return engine, shared


def counted(engine: CostEngine) -> Decimal:
    return engine.check_budget(None, Decimal(0))[0].spent_usd


def test_a_long_hold_counts_on_every_replica_past_reservation_ttl(redis_url: str) -> None:
    ns, clock = _ns(), FakeClock()
    a, shared = replica(redis_url, ns, clock, Decimal(5))
    b, _ = replica(redis_url, ns, clock, Decimal(5))
    a.check_budget(None, Decimal(4), call_id="batch", hold_ttl_s=DAY_S)
    key = shared.hold_key(None)
    fields = redis.Redis.from_url(redis_url).hgetall(key)
    now_ms = int(clock().timestamp() * 1000)
    assert int(fields[b"x:batch"]) == now_ms + DAY_S * 1000
    assert from_pico(fields[b"r:batch"]) == Decimal(4)
    clock.now += timedelta(seconds=601)  # past reservation_ttl_s
    with pytest.raises(BudgetExceededError) as info:
        b.check_budget(None, Decimal(4), call_id="other-replica")
    assert info.value.spent_usd == Decimal(4)
    clock.now += timedelta(seconds=DAY_S - 602)
    assert counted(b) == Decimal(4)
    clock.now += timedelta(seconds=2)
    assert counted(b) == 0
    assert b.check_budget(None, Decimal(4), call_id="other-replica")[0].spent_usd == 0
    assert shared.errors == 0


def test_a_default_hold_still_expires_after_reservation_ttl(redis_url: str) -> None:
    ns, clock = _ns(), FakeClock()
    e, shared = replica(redis_url, ns, clock, Decimal(10))
    e.check_budget(None, Decimal(4), call_id="long", hold_ttl_s=3600)
    e.check_budget(None, Decimal(3), call_id="short")
    assert counted(e) == Decimal(7)
    clock.now += timedelta(seconds=601)
    assert counted(e) == Decimal(4)  # only the long one is left
    clock.now += timedelta(seconds=3000)
    assert counted(e) == 0
    assert shared.errors == 0


def test_a_call_checked_again_keeps_its_first_expiry(redis_url: str) -> None:
    ns, clock = _ns(), FakeClock()
    e, shared = replica(redis_url, ns, clock, Decimal(5))
    e.check_budget(None, Decimal(4), call_id="c", hold_ttl_s=60)
    e.check_budget(None, Decimal(4), call_id="c", hold_ttl_s=DAY_S)
    assert counted(e) == Decimal(4)
    clock.now += timedelta(seconds=61)
    assert counted(e) == 0
    assert shared.errors == 0


def test_a_batch_flush_on_one_replica_holds_the_budget_for_the_others(redis_url: str) -> None:
    ns, clock = _ns(), FakeClock()
    probe = CostEngine(embedder=FakeEmbedder())
    estimate = batch_estimate(probe, requests(2))
    limit = estimate * Decimal("1.5")  # room for one flush, not two
    a, shared = replica(redis_url, ns, clock, limit)
    b, _ = replica(redis_url, ns, clock, limit)
    api = remote(hold=True)
    first = BatchJob(api, ":memory:", name="nightly", engine=a)
    first.enqueue(requests(2))
    first.flush()
    clock.now += timedelta(hours=6)  # the batch is still running at the provider
    second = BatchJob(api, ":memory:", name="nightly", engine=b)
    second.enqueue(requests(2))
    with pytest.raises(BudgetExceededError) as info:
        second.flush()
    assert info.value.spent_usd == estimate
    assert len(api.submitted) == 1
    clock.now += timedelta(seconds=BATCH_HOLD_TTL_S - 6 * 3600 + 1)  # never collected
    assert counted(b) == 0
    assert shared.errors == 0
