"""Budgets: windows, policies, and the error a blocked call raises."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from costopt_core import Budget, BudgetExceededError, CostEngine, Usage, evaluate_budget
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
