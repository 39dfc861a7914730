"""A batch flush's budget hold lasts as long as a provider batch may run (24 h + margin).

With the ledger's default hold lifetime (``reservation_ttl_s``, 600 s) the
hold of a batch still running at the provider lapsed after 10 minutes, and a
later flush passed a ``block`` budget on spend the running batch had committed.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from costopt_core import Budget, BudgetExceededError, CostEngine
from costopt_core.batch import BatchJob, BatchJobConfig
from costopt_core.batch.budget import BATCH_HOLD_TTL_S, COMPLETION_WINDOW_S
from costopt_core.errors import ConfigurationError
from costopt_core.testing import FakeEmbedder
from tests.conftest import FakeClock
from tests.unit.test_batch_budget import batch_estimate, remote, requests


def engine_at(clock: FakeClock) -> CostEngine:
    return CostEngine(embedder=FakeEmbedder(), clock=clock)


def one_flush_budget(engine: CostEngine, estimate: Decimal) -> None:
    """A monthly block budget with room for one flush of ``estimate`` and not two."""
    limit = estimate * Decimal("1.5")
    engine.ledger.add_budget(Budget(limit_usd=limit, period="month", policy="block"))


def counted(engine: CostEngine) -> Decimal:
    return engine.check_budget(None, Decimal(0))[0].spent_usd


def test_the_default_covers_the_providers_24h_window_plus_margin() -> None:
    assert COMPLETION_WINDOW_S == 86_400
    assert BATCH_HOLD_TTL_S == 90_000  # 25 h
    assert BatchJobConfig().budget_hold_ttl_s == BATCH_HOLD_TTL_S


def test_a_running_batch_keeps_a_later_flush_out_for_hours(clock: FakeClock) -> None:
    engine = engine_at(clock)
    reqs = requests(2)
    estimate = batch_estimate(engine, reqs)
    one_flush_budget(engine, estimate)
    api = remote(hold=True)  # the batch runs until api.release()
    first = BatchJob(api, ":memory:", name="first", engine=engine)
    first.enqueue(reqs)
    first.flush()
    clock.now += timedelta(hours=20)  # still running at the provider
    first.poll()
    assert counted(engine) == estimate
    second = BatchJob(api, ":memory:", name="second", engine=engine)
    second.enqueue(requests(2))
    with pytest.raises(BudgetExceededError) as info:
        second.flush()
    assert info.value.spent_usd == estimate
    assert len(api.submitted) == 1
    # The results are recorded: their actual cost replaces the hold.
    api.release()
    first.poll()
    assert engine.ledger.totals().calls == 2
    actual = engine.ledger.totals().cost_usd
    assert counted(engine) == actual < estimate


def test_an_uncollected_hold_lapses_after_the_batch_window(clock: FakeClock) -> None:
    engine = engine_at(clock)
    reqs = requests(2)
    estimate = batch_estimate(engine, reqs)
    one_flush_budget(engine, estimate)
    api = remote(hold=True)
    job = BatchJob(api, ":memory:", name="first", engine=engine)
    job.enqueue(reqs)
    job.flush()  # and never polled (its process died)
    clock.now += timedelta(seconds=BATCH_HOLD_TTL_S - 1)
    assert counted(engine) == estimate
    clock.now += timedelta(seconds=2)
    assert counted(engine) == 0


def test_the_job_option_sets_the_lifetime(clock: FakeClock) -> None:
    engine = engine_at(clock)
    reqs = requests(2)
    estimate = batch_estimate(engine, reqs)
    one_flush_budget(engine, estimate)
    job = BatchJob(remote(hold=True), ":memory:", name="j", engine=engine, budget_hold_ttl_s=7200)
    job.enqueue(reqs)
    job.flush()
    clock.now += timedelta(seconds=7199)
    assert counted(engine) == estimate
    clock.now += timedelta(seconds=2)
    assert counted(engine) == 0


def test_an_async_flush_holds_for_the_batch_too(clock: FakeClock) -> None:
    engine = engine_at(clock)
    reqs = requests(2)
    estimate = batch_estimate(engine, reqs)
    one_flush_budget(engine, estimate)
    job = BatchJob(remote(hold=True), ":memory:", name="j", engine=engine)

    async def go() -> None:
        await job.aenqueue(reqs)
        await job.aflush()

    asyncio.run(go())
    clock.now += timedelta(hours=12)
    assert counted(engine) == estimate


def test_each_tenant_check_asks_for_the_jobs_lifetime(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    engine.ledger.add_budget(Budget(limit_usd=Decimal(100), policy="block"))
    ttls: list[tuple[str | None, Any]] = []

    def spy(tenant: str | None = None, estimate_usd: Any = None, **kwargs: Any) -> list:
        ttls.append((tenant, kwargs.get("hold_ttl_s")))
        return []

    monkeypatch.setattr(engine, "check_budget", spy)
    for ttl, expected in ((None, BATCH_HOLD_TTL_S), (3600.0, 3600.0)):
        ttls.clear()
        settings = {} if ttl is None else {"budget_hold_ttl_s": ttl}
        job = BatchJob(remote(), ":memory:", name="j", engine=engine, **settings)
        job.enqueue(requests(2, tenants=["a", "b"]))
        job.flush()
        assert ttls == [("a", expected), ("b", expected)]


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), 400 * 86_400])
def test_a_bad_job_lifetime_is_a_configuration_error(bad: float) -> None:
    assert BatchJobConfig(budget_hold_ttl_s=7200).budget_hold_ttl_s == 7200.0  # a known field
    for make in (
        lambda: BatchJobConfig(budget_hold_ttl_s=bad),
        lambda: BatchJob(remote(), ":memory:", name="j", budget_hold_ttl_s=bad),
    ):
        with pytest.raises(ConfigurationError, match="budget_hold_ttl_s") as info:
            make()
        assert "Input should be" in str(info.value)  # the bound it broke, not "extra input"
