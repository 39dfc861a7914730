"""Budgets: spend limits per tenant or global, per period, and what to do at the limit.

The decision (``evaluate_budget``) is a pure function of the budget, the spend
so far in its window and the estimate of the next call; the ledger keeps the
spend and calls it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from costopt_core.errors import BudgetExceededError, ConfigurationError, config_error

__all__ = [
    "Budget",
    "BudgetDecision",
    "BudgetPeriod",
    "BudgetPolicy",
    "decisions_on_error",
    "estimate_usd_of",
    "evaluate_budget",
    "period_start",
    "unpriced_action",
    "unpriced_call_error",
]

BudgetPeriod = Literal["day", "week", "month", "total"]
#: ``warn`` logs and lets the call through; ``block`` raises before the call;
#: ``downshift`` asks the router for cheaper tiers as the budget is consumed.
BudgetPolicy = Literal["warn", "block", "downshift"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Budget(BaseModel):
    """A spend limit in USD per period, for one tenant or (``tenant=None``) globally."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(type(self).__name__, exc) from None

    limit_usd: Decimal = Field(gt=0, description="Spend limit in USD for one period.")
    period: BudgetPeriod = "month"
    tenant: str | None = Field(default=None, description="Tenant this applies to; None = all.")
    policy: BudgetPolicy = "warn"
    on_store_error: Literal["open", "closed"] = Field(
        default="open",
        description="With a shared store (RedisLedger) that is unreachable: 'open' lets the "
        "replica's local view decide, 'closed' refuses the call.",
    )

    @property
    def scope(self) -> str:
        return f"tenant {self.tenant!r}" if self.tenant is not None else "all tenants"


def period_start(period: BudgetPeriod, now: datetime) -> datetime:
    """Start (UTC) of the calendar period containing ``now``."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return _EPOCH


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    budget: Budget
    spent_usd: Decimal
    estimate_usd: Decimal
    #: ``ok``, or what the budget's policy says to do now.
    action: Literal["ok", "warn", "block", "downshift"]

    @property
    def used_fraction(self) -> float:
        return float((self.spent_usd + self.estimate_usd) / self.budget.limit_usd)


def estimate_usd_of(value: object) -> Decimal | None:
    """A call's estimate as given to a budget check, as ``Decimal`` USD (pure).

    ``None`` (no estimate) stays ``None``; an ``int`` or ``float`` is converted
    through its shortest repr (``0.05`` -> ``Decimal("0.05")``, not the
    binary float's 55 digits), so money arithmetic stays exact.

    Raises:
        ConfigurationError: not a number (a bool, a string, ...), or NaN,
            infinite or negative; the message names the value.
    """
    if value is None:
        return None
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        amount = Decimal(str(value))
    else:
        raise ConfigurationError(
            f"estimate_usd must be a Decimal amount in USD (or an int or float), got "
            f"{value!r} ({type(value).__name__}); pass e.g. Decimal('0.05'), or None for "
            "no estimate"
        )
    if not amount.is_finite() or amount < 0:
        raise ConfigurationError(
            f"estimate_usd must be a finite amount >= 0 in USD, got {value!r}; pass the "
            "call's estimated cost, e.g. CostEngine.estimate(...), or None for no estimate"
        )
    return amount


def evaluate_budget(budget: Budget, spent_usd: Decimal, estimate_usd: Decimal) -> BudgetDecision:
    """What to do about the next call, given the spend so far in the budget's window.

    A call is over budget when the spend so far plus its estimate exceeds the
    limit. ``downshift`` budgets report ``downshift`` from 80% of the limit on
    (the router then prefers cheaper tiers) and behave as ``block`` past it.
    """
    projected = spent_usd + estimate_usd
    over = projected > budget.limit_usd
    action: Literal["ok", "warn", "block", "downshift"] = "ok"
    if budget.policy == "downshift":
        if over:
            action = "block"
        elif projected >= budget.limit_usd * Decimal("0.8"):
            action = "downshift"
    elif over:
        action = budget.policy
    return BudgetDecision(budget, spent_usd, estimate_usd, action)


def decisions_on_error(
    budgets: Iterable[Budget], tenant: str | None, local: Mapping[Budget, BudgetDecision]
) -> list[BudgetDecision]:
    """Budget decisions when the shared store is unreachable (pure).

    A budget with ``on_store_error="open"`` keeps the replica's local decision;
    one with ``"closed"`` refuses the call.
    """
    out = []
    for b in budgets:
        if b.tenant is not None and b.tenant != tenant:
            continue
        decision = local[b]
        if b.on_store_error == "closed":
            raise BudgetExceededError(
                scope=b.scope,
                limit_usd=b.limit_usd,
                spent_usd=decision.spent_usd,
                estimate_usd=decision.estimate_usd,
                period=b.period,
                reason="the shared budget store is unreachable and this budget fails closed",
            )
        out.append(decision)
    return out


def unpriced_action(budget: Budget) -> Literal["warn", "block"]:
    """What ``budget`` does about a call of a model with no price (pure).

    The call's cost is unknown, so no spend can show it fits the limit: a
    ``block`` budget refuses it, and so does a ``downshift`` one (it blocks at
    its limit, and the call could be past it); a ``warn`` budget lets it
    through, with a warning.
    """
    return "warn" if budget.policy == "warn" else "block"


def unpriced_call_error(budget: Budget, model: str, spent_usd: Decimal) -> BudgetExceededError:
    """The refusal of a call of ``model``, which has no price, by ``budget``.

    Args:
        budget: the ``block`` or ``downshift`` budget that refuses the call.
        model: the model with no price (named in the message, with the fix).
        spent_usd: the budget's spend so far in its period.
    """
    return BudgetExceededError(
        scope=budget.scope,
        limit_usd=budget.limit_usd,
        spent_usd=spent_usd,
        estimate_usd=None,  # unknown, not $0: the model has no price
        period=budget.period,
        reason=(
            f"model {model!r} has no price (policy {budget.policy!r}), so the call's cost "
            "can be neither estimated nor counted and the budget could be overspent"
        ),
        fix=(
            "add its price, e.g. CostEngine(catalog=PriceCatalog.default().with_overrides("
            f"{{{model!r}: {{'usd_per_mtok_input': '0.2', 'usd_per_mtok_output': '0.6'}}}})), "
            "or use policy 'warn' to let calls of unpriced models through uncounted"
        ),
    )
