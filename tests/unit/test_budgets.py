"""Budgets: windows, policies, and the error a blocked call raises."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from costopt_core import (
    Budget,
    BudgetExceededError,
    CostEngine,
    CostLedger,
    Usage,
    evaluate_budget,
)
from costopt_core.budgets import period_start

BIG = Usage(input_tokens=1_000_000, output_tokens=0)  # $2.50 on gpt-4o


def test_block_budget_raises_before_the_call(engine: CostEngine) -> None:
    engine.ledger.add_budget(Budget(limit_usd=Decimal(5), tenant="acme", policy="block"))
    engine.record_call(model="gpt-4o", usage=BIG, tenant="acme")
    engine.check_budget("acme", Decimal("2.50"))  # exactly at the limit is allowed
    engine.record_call(model="gpt-4o", usage=BIG, tenant="acme")
    with pytest.raises(BudgetExceededError) as exc:
        engine.check_budget("acme", Decimal("0.01"))
    assert exc.value.spent_usd == Decimal("5.00")
    assert "tenant 'acme'" in str(exc.value) and "raise the limit" in str(exc.value)
    # other tenants are not affected by acme's budget
    assert engine.check_budget("other", Decimal(100)) == []


def test_global_budget_counts_every_tenant(engine: CostEngine) -> None:
    engine.ledger.add_budget(Budget(limit_usd=Decimal(4), policy="block"))
    engine.record_call(model="gpt-4o", usage=BIG, tenant="a")
    with pytest.raises(BudgetExceededError):
        engine.check_budget("b", Decimal("2"))


def test_warn_budget_logs_and_lets_through(engine: CostEngine, caplog) -> None:
    engine.ledger.add_budget(Budget(limit_usd=Decimal(1), policy="warn"))
    engine.record_call(model="gpt-4o", usage=BIG)
    decisions = engine.check_budget(None, Decimal(0))
    assert [d.action for d in decisions] == ["warn"]
    assert "budget for all tenants exceeded" in caplog.text


def test_window_resets_with_the_period(engine: CostEngine, clock) -> None:
    engine.ledger.add_budget(Budget(limit_usd=Decimal(3), period="day", policy="block"))
    engine.record_call(model="gpt-4o", usage=BIG)
    assert engine.ledger.spent(None, "day") == Decimal("2.50")
    clock.now = clock.now + timedelta(days=1)
    assert engine.ledger.spent(None, "day") == 0
    engine.check_budget(None, Decimal("2.9"))  # new day, fresh budget
    assert engine.ledger.spent(None, "month") == Decimal("2.50")


def test_downshift_policy_thresholds() -> None:
    b = Budget(limit_usd=Decimal(10), policy="downshift")
    assert evaluate_budget(b, Decimal(5), Decimal(1)).action == "ok"
    assert evaluate_budget(b, Decimal(8), Decimal(0)).action == "downshift"
    assert evaluate_budget(b, Decimal(10), Decimal("0.01")).action == "block"


def test_period_starts() -> None:
    now = datetime(2026, 11, 21, 15, 30, tzinfo=UTC)  # a Saturday
    assert period_start("day", now) == datetime(2026, 11, 21, tzinfo=UTC)
    assert period_start("week", now) == datetime(2026, 11, 16, tzinfo=UTC)
    assert period_start("month", now) == datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "kwargs",
    [{"limit_usd": 0}, {"limit_usd": -1}, {"limit_usd": 1, "period": "year"},
     {"limit_usd": 1, "policy": "panic"}],
)  # fmt: skip
def test_invalid_budgets_rejected(kwargs) -> None:
    from costopt_core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="invalid Budget"):
        Budget(**kwargs)


# -- holds: a checked call's estimate counts until it is recorded or released -----

ONE = Usage(input_tokens=400_000, output_tokens=0)  # $1.00 on gpt-4o


def test_concurrent_calls_cannot_overshoot_a_block_budget(engine: CostEngine) -> None:
    """16 threads, 48 calls of $1 against a $10 block budget: exactly 10 are let through."""
    engine.ledger.add_budget(Budget(limit_usd=Decimal(10), tenant="acme", policy="block"))
    start = threading.Barrier(16)
    answered: list[str] = []
    blocked: list[BudgetExceededError] = []

    def one(i: int) -> None:
        if i < 16:
            start.wait()  # every thread checks against the same (zero) spend
        call_id = uuid.uuid4().hex
        try:
            engine.check_budget("acme", Decimal(1), call_id=call_id)
        except BudgetExceededError as exc:
            blocked.append(exc)
            return
        time.sleep(0.02)  # the model call
        answered.append(call_id)
        engine.record_call(model="gpt-4o", usage=ONE, tenant="acme", call_id=call_id)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(48)))
    assert len(answered) == 10 and len(blocked) == 38
    assert engine.ledger.totals().cost_usd == Decimal(10)
    assert engine.ledger.spent("acme") == Decimal(10)


def test_a_hold_counts_until_the_call_is_recorded_or_released(engine: CostEngine) -> None:
    engine.ledger.add_budget(Budget(limit_usd=Decimal(5), tenant="acme", policy="block"))
    engine.check_budget("acme", Decimal(3), call_id="a")
    with pytest.raises(BudgetExceededError) as exc:
        engine.check_budget("acme", Decimal(3), call_id="b")
    assert exc.value.spent_usd == Decimal(3)  # a's hold, nothing spent yet
    # Checked again under its own id (a block's engine, then the app's): not counted twice.
    [again] = engine.check_budget("acme", Decimal(3), call_id="a")
    assert again.spent_usd == 0 and again.action == "ok"
    # Another tenant is not held back by acme's holds.
    assert engine.check_budget("beta", Decimal(3), call_id="c") == []
    engine.release_budget("acme", "a")  # a failed: it spent nothing
    engine.check_budget("acme", Decimal(3), call_id="b")
    # b is recorded at $1: its $3 hold gives way to its actual cost.
    engine.record_call(model="gpt-4o", usage=ONE, tenant="acme", call_id="b")
    [after] = engine.check_budget("acme", Decimal(4), call_id="d")
    assert after.spent_usd == Decimal(1)
    with pytest.raises(BudgetExceededError) as exc:
        engine.check_budget("acme", Decimal("0.5"))
    assert exc.value.spent_usd == Decimal(5)  # $1 spent + d's $4 held


def test_a_hold_settles_when_the_call_is_recorded_deferred(engine: CostEngine) -> None:
    engine.ledger.add_budget(Budget(limit_usd=Decimal(2), policy="block"))
    run = uuid.uuid4()
    engine.check_budget(None, Decimal(2), call_id=str(run))  # a handler's str(run_id)
    with pytest.raises(BudgetExceededError):
        engine.check_budget(None, Decimal(1))
    engine.record_call_deferred(model="gpt-4o", usage=ONE, call_id=run)  # a handler's run
    # The run's $1, and no hold left.
    assert engine.check_budget(None, Decimal(0))[0].spent_usd == Decimal(1)


def test_a_check_without_a_call_id_holds_nothing(engine: CostEngine) -> None:
    engine.ledger.add_budget(Budget(limit_usd=Decimal(5), policy="block"))
    engine.check_budget(None, Decimal(4))
    engine.check_budget(None, Decimal(4))


def test_an_unreleased_hold_expires(clock) -> None:
    ledger = CostLedger(clock=clock, reservation_ttl_s=60)
    ledger.add_budget(Budget(limit_usd=Decimal(5), policy="block"))
    ledger.check_budget(None, Decimal(4), call_id="lost")
    clock.now += timedelta(seconds=59)
    with pytest.raises(BudgetExceededError):
        ledger.check_budget(None, Decimal(4), call_id="next")
    clock.now += timedelta(seconds=2)
    assert ledger.check_budget(None, Decimal(4), call_id="next")[0].spent_usd == 0


def test_holds_in_a_block_and_its_parent_are_released_together(engine: CostEngine) -> None:
    engine.ledger.add_budget(Budget(limit_usd=Decimal(5), policy="block"))
    block = engine.child()
    block.ledger.add_budget(Budget(limit_usd=Decimal(10), policy="block"))
    block.check_budget(None, Decimal(4), call_id="a")
    with pytest.raises(BudgetExceededError):  # the parent's $5 is held for a
        block.check_budget(None, Decimal(4), call_id="b")
    # b was refused by the parent: its hold in the block is gone again.
    assert block.check_budget(None, Decimal(0))[0].spent_usd == Decimal(4)
    block.release_budget(None, "a")
    assert [d.spent_usd for d in block.check_budget(None, Decimal(5))] == [0, 0]


def test_budgets_hold_locally_while_the_shared_store_is_down(engine: CostEngine) -> None:
    class DownStore:
        def reserve(self, *args: object) -> None:
            raise ConnectionError("redis down")

        def release(self, *args: object) -> None:
            raise AssertionError("not reached: the hold is local")

    engine.ledger.add_budget(Budget(limit_usd=Decimal(5), policy="block"))
    engine.ledger.budget_store = DownStore()
    engine.check_budget(None, Decimal(4), call_id="a")  # fails open: held here
    with pytest.raises(BudgetExceededError):
        engine.check_budget(None, Decimal(4), call_id="b")
    engine.ledger.budget_store = None
    engine.release_budget(None, "a")
    engine.check_budget(None, Decimal(4), call_id="b")
