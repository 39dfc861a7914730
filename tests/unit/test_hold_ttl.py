"""A budget hold's own lifetime (``hold_ttl_s``): a call that runs for hours keeps counting."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from costopt_core import Budget, BudgetExceededError, CostEngine, CostLedger, Usage
from costopt_core.budgets import BudgetDecision, evaluate_budget
from costopt_core.errors import ConfigurationError
from costopt_core.ledger import MAX_HOLD_TTL_S
from costopt_core.redis_ledger import RedisLedger
from costopt_core.testing import FakeEmbedder
from tests.conftest import FakeClock

DAY_S = 86_400


def ledger_with(clock: FakeClock, limit: str = "5", **kwargs: Any) -> CostLedger:
    ledger = CostLedger(clock=clock, reservation_ttl_s=600, **kwargs)
    ledger.add_budget(Budget(limit_usd=Decimal(limit), policy="block"))
    return ledger


def held(ledger: CostLedger) -> Decimal:
    """What the budget counts now (spend + holds), read without holding anything."""
    return ledger.check_budget(None, Decimal(0))[0].spent_usd


def test_a_hold_with_its_own_lifetime_outlives_reservation_ttl(clock: FakeClock) -> None:
    ledger = ledger_with(clock)
    ledger.check_budget(None, Decimal(4), call_id="batch", hold_ttl_s=DAY_S)
    clock.now += timedelta(seconds=601)  # past the ledger's 600 s
    with pytest.raises(BudgetExceededError) as info:
        ledger.check_budget(None, Decimal(4), call_id="next")
    assert info.value.spent_usd == Decimal(4)
    clock.now += timedelta(seconds=DAY_S - 602)  # 1 s before its own expiry
    assert held(ledger) == Decimal(4)
    clock.now += timedelta(seconds=2)
    assert held(ledger) == 0
    assert ledger.check_budget(None, Decimal(4), call_id="next")[0].spent_usd == 0


def test_a_shorter_hold_expires_on_time_behind_a_longer_one(clock: FakeClock) -> None:
    ledger = ledger_with(clock, limit="10")
    ledger.check_budget(None, Decimal(4), call_id="long", hold_ttl_s=3600)
    clock.now += timedelta(seconds=1)
    ledger.check_budget(None, Decimal(3), call_id="short")  # the default 600 s
    ledger.check_budget(None, Decimal(2), call_id="shortest", hold_ttl_s=30)
    assert held(ledger) == Decimal(9)
    clock.now += timedelta(seconds=31)
    assert held(ledger) == Decimal(7)  # "shortest" expired, though held last
    clock.now += timedelta(seconds=570)
    assert held(ledger) == Decimal(4)  # "short" expired, behind the longer "long"
    clock.now += timedelta(seconds=3000)
    assert held(ledger) == 0


def test_the_default_lifetime_is_still_reservation_ttl(clock: FakeClock) -> None:
    ledger = ledger_with(clock)
    ledger.check_budget(None, Decimal(4), call_id="call")
    clock.now += timedelta(seconds=599)
    assert held(ledger) == Decimal(4)
    clock.now += timedelta(seconds=2)
    assert held(ledger) == 0


def test_a_call_checked_again_keeps_its_first_hold_and_lifetime(clock: FakeClock) -> None:
    ledger = ledger_with(clock)
    ledger.check_budget(None, Decimal(4), call_id="call", hold_ttl_s=60)
    ledger.check_budget(None, Decimal(4), call_id="call", hold_ttl_s=DAY_S)
    assert held(ledger) == Decimal(4)  # counted once
    clock.now += timedelta(seconds=61)
    assert held(ledger) == 0


def test_a_released_hold_is_gone_and_held_again_gets_its_new_lifetime(clock: FakeClock) -> None:
    ledger = ledger_with(clock)
    ledger.check_budget(None, Decimal(4), call_id="call", hold_ttl_s=60)
    ledger.release_budget(None, "call")
    assert held(ledger) == 0
    ledger.check_budget(None, Decimal(3), call_id="call", hold_ttl_s=3600)
    clock.now += timedelta(seconds=61)  # the first hold's expiry comes up: not this one
    assert held(ledger) == Decimal(3)


def test_the_recorded_call_settles_a_long_hold(engine: CostEngine, clock: FakeClock) -> None:
    engine.ledger.add_budget(Budget(limit_usd=Decimal(5), policy="block"))
    engine.check_budget(None, Decimal(4), call_id="c1", hold_ttl_s=DAY_S)
    record = engine.record_call(
        model="gpt-4o-mini",
        usage=Usage(input_tokens=1000, output_tokens=100),
        call_id="c1",
        framework="test",
    )
    assert record.cost_usd == Decimal("0.00021")
    assert engine.check_budget(None, Decimal(0))[0].spent_usd == Decimal("0.00021")


def test_the_engine_forwards_the_lifetime(engine: CostEngine, clock: FakeClock) -> None:
    engine.ledger.add_budget(Budget(limit_usd=Decimal(5), policy="block"))
    engine.check_budget(None, Decimal(4), call_id="batch", hold_ttl_s=7200)
    clock.now += timedelta(seconds=7199)
    with pytest.raises(BudgetExceededError):
        engine.check_budget(None, Decimal(4), call_id="next")
    clock.now += timedelta(seconds=2)
    assert engine.check_budget(None, Decimal(4), call_id="next")[0].spent_usd == 0


def test_a_block_passes_the_lifetime_to_its_parent(engine: CostEngine, clock: FakeClock) -> None:
    engine.ledger.add_budget(Budget(limit_usd=Decimal(5), policy="block"))
    block = engine.child()
    block.ledger.add_budget(Budget(limit_usd=Decimal(10), policy="block"))
    block.check_budget(None, Decimal(4), call_id="batch", hold_ttl_s=DAY_S)
    clock.now += timedelta(seconds=3600)
    assert [d.spent_usd for d in block.check_budget(None, Decimal(0))] == [4, 4]


class KeywordStore:
    """A budget store that holds nothing; it logs each reserve's lifetime keyword."""

    def __init__(self) -> None:
        self.ttls: list[float | None] = []

    def reserve(
        self,
        budgets: Sequence[Budget],
        tenant: str | None,
        estimate: Decimal,
        call_id: str | None,
        now: datetime,
        *,
        hold_ttl_s: float | None = None,
    ) -> list[BudgetDecision]:
        self.ttls.append(hold_ttl_s)
        return [evaluate_budget(b, Decimal(0), estimate) for b in budgets]

    def release(self, *args: object) -> None:
        pass


class OldStore:
    """A budget store written before ``hold_ttl_s`` existed."""

    def __init__(self) -> None:
        self.calls = 0

    def reserve(
        self,
        budgets: Sequence[Budget],
        tenant: str | None,
        estimate: Decimal,
        call_id: str | None,
        now: datetime,
    ) -> list[BudgetDecision]:
        self.calls += 1
        return [evaluate_budget(b, Decimal(0), estimate) for b in budgets]

    def release(self, *args: object) -> None:
        pass


def test_the_store_gets_the_lifetime_only_when_one_is_given(clock: FakeClock) -> None:
    ledger = ledger_with(clock)
    store = KeywordStore()
    ledger.budget_store = store
    ledger.check_budget(None, Decimal(1), call_id="a")
    ledger.check_budget(None, Decimal(1), call_id="b", hold_ttl_s=90_000)
    assert store.ttls == [None, 90_000.0]
    old = OldStore()
    ledger.budget_store = old
    ledger.check_budget(None, Decimal(1), call_id="c")  # no keyword: an old store serves it
    assert old.calls == 1


def test_the_fallback_hold_of_a_failed_store_keeps_the_lifetime(clock: FakeClock) -> None:
    class DownStore:
        def reserve(self, *args: object, **kwargs: object) -> None:
            raise ConnectionError("redis down")

        def release(self, *args: object) -> None:
            raise ConnectionError("redis down")

    ledger = ledger_with(clock)
    ledger.budget_store = DownStore()
    ledger.check_budget(None, Decimal(4), call_id="batch", hold_ttl_s=DAY_S)
    clock.now += timedelta(seconds=3600)
    with pytest.raises(BudgetExceededError) as info:
        ledger.check_budget(None, Decimal(4), call_id="next")
    assert info.value.spent_usd == Decimal(4)


def test_expiry_entries_of_settled_holds_do_not_pile_up(clock: FakeClock) -> None:
    ledger = ledger_with(clock, limit="1000000")
    ledger.check_budget(None, Decimal(1), call_id="long", hold_ttl_s=DAY_S)
    for i in range(2000):
        ledger.check_budget(None, Decimal(1), call_id=f"c{i}")
        ledger.release_budget(None, f"c{i}")
    assert held(ledger) == Decimal(1)
    # Rebuilt from the live holds (one), not one entry per hold ever made (2001).
    assert len(ledger._expiries) <= 2 * 1 + 64 + 1
    clock.now += timedelta(seconds=DAY_S)
    assert held(ledger) == 0


BAD = [0, -1, -0.5, math.nan, math.inf, -math.inf, True, "60", Decimal(60), MAX_HOLD_TTL_S + 1]


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_a_bad_lifetime_is_a_configuration_error_naming_it(clock: FakeClock, bad: Any) -> None:
    ledger = ledger_with(clock)
    for check in (
        ledger.check_budget,
        CostEngine(ledger=ledger, embedder=FakeEmbedder()).check_budget,
    ):
        with pytest.raises(ConfigurationError, match="hold_ttl_s") as info:
            check(None, Decimal(1), call_id="x", hold_ttl_s=bad)
        assert repr(bad) in str(info.value)
        assert "pass e.g. 90000" in str(info.value)
    assert held(ledger) == 0  # nothing was held
    # Checked before any budget is read: also without budgets, and with no Redis behind.
    with pytest.raises(ConfigurationError, match="hold_ttl_s"):
        CostLedger().check_budget(None, Decimal(1), call_id="x", hold_ttl_s=bad)
    shared = RedisLedger("redis://nowhere.invalid:1", namespace="x")
    budget = Budget(limit_usd=Decimal(5), policy="block")
    with pytest.raises(ConfigurationError, match="hold_ttl_s"):
        shared.reserve([budget], None, Decimal(1), "x", clock(), hold_ttl_s=bad)


@pytest.mark.parametrize("good", [0.001, 1, 600, 90_000.0, MAX_HOLD_TTL_S])
def test_any_finite_positive_lifetime_up_to_a_year_is_taken(clock: FakeClock, good: float) -> None:
    ledger = ledger_with(clock)
    ledger.check_budget(None, Decimal(4), call_id="x", hold_ttl_s=good)
    assert held(ledger) == Decimal(4)
