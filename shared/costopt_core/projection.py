"""Projected monthly spend at production volume, one figure per optimization scenario.

A cost model before the bill: every request of a measured sample is priced
under each scenario (all-frontier, each lever alone, all levers together)
with the same function that prices the ledger's calls
(:func:`~costopt_core.pricing.cost.attribute_savings`), and the sample's
sums are scaled to the volume. The inputs are plain data: what the real
levers did to each request is measured beforehand (see
:mod:`costopt_core.workload`), so this module only does arithmetic.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Literal

from costopt_core.errors import ConfigurationError
from costopt_core.pricing.catalog import PriceCatalog, UnknownModelPriceWarning
from costopt_core.pricing.cost import attribute_savings, cost_of
from costopt_core.report import format_table
from costopt_core.types import LEVERS, CallOutcome, OverheadLever, Usage

__all__ = [
    "SCENARIOS",
    "MeasuredRequest",
    "Projection",
    "ScenarioCost",
    "project",
]

Scenario = Literal["all-frontier", "routing", "cache", "compression", "batch", "combined"]
#: the scenarios, in the order tables show them
SCENARIOS: tuple[Scenario, ...] = (
    "all-frontier",
    "routing",
    "cache",
    "compression",
    "batch",
    "combined",
)
_LABELS: dict[Scenario, str] = {
    "all-frontier": "all-frontier (baseline)",
    "routing": "+ routing",
    "cache": "+ cache",
    "compression": "+ context/memory compression",
    "batch": "+ batch (latency-tolerant share)",
    "combined": "all levers combined",
}
_ZERO = Decimal(0)


def _usd(amount: Decimal) -> str:
    return f"${amount:,.2f}"


@dataclass(frozen=True)
class MeasuredRequest:
    """One sample request and what the levers did to it.

    Attributes:
        model: the model that answers it once routed (or that answered it,
            for a ledger record).
        usage: tokens of that answer; ``input_tokens`` is the prompt as sent
            after compression/memory. Provider-cache details, when present,
            count only in the combined scenario (they are what was observed).
        cache: ``cache_exact`` / ``cache_semantic`` when the cache answered.
        removed_input_tokens: tokens compression / memory kept out, per lever.
        escalated: models whose answers were thrown away before ``model``
            answered (each one is paid for in the routing scenarios).
        escalated_usage: each thrown-away attempt's own tokens, in the order
            of ``escalated`` (a ledger records them); an attempt without one
            (``None``, or past the end: a replayed sample) is priced with
            ``usage``, the prompt it would have been sent.
        batch: the request is latency-tolerant and goes through a batch API.
        tier: the tier name the request was routed to (for the tier mix).
        tenant: the tenant, for per-tenant figures.
        overhead: model calls a lever made for this request (a summarizer's,
            a cache verifier's): (model, usage, lever), each paid for in the
            scenarios with that lever on and taken off its saving.
    """

    model: str
    usage: Usage
    cache: CallOutcome | None = None
    removed_input_tokens: Mapping[str, int] = field(default_factory=dict)
    escalated: tuple[str, ...] = ()
    batch: bool = False
    tier: str | None = None
    tenant: str | None = None
    escalated_usage: tuple[Usage | None, ...] = ()
    overhead: tuple[tuple[str, Usage, OverheadLever], ...] = ()

    def attempts(self) -> list[tuple[str, Usage | None]]:
        """The thrown-away attempts: (model, its own usage or ``None``), in order."""
        own = self.escalated_usage
        return [(m, own[i] if i < len(own) else None) for i, m in enumerate(self.escalated)]


@dataclass(frozen=True)
class ScenarioCost:
    """Monthly spend of one scenario.

    Attributes:
        scenario: the scenario's key (see :data:`SCENARIOS`).
        label: how tables name it.
        usd_per_month: projected spend.
        usd_per_month_input: the part billed for input tokens (cache reads
            and writes included).
        usd_per_month_output: the part billed for output tokens.
        savings_usd_per_month: all-frontier spend minus this one.
        savings_fraction: the same as a share of all-frontier spend.
    """

    scenario: Scenario
    label: str
    usd_per_month: Decimal
    usd_per_month_input: Decimal
    usd_per_month_output: Decimal
    savings_usd_per_month: Decimal
    savings_fraction: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "label": self.label,
            "usd_per_month": str(self.usd_per_month),
            "usd_per_month_input": str(self.usd_per_month_input),
            "usd_per_month_output": str(self.usd_per_month_output),
            "savings_usd_per_month": str(self.savings_usd_per_month),
            "savings_fraction": self.savings_fraction,
        }


@dataclass(frozen=True)
class Projection:
    """Projected monthly spend per scenario, and what it was measured from.

    Attributes:
        requests_per_day: the volume projected to.
        days_per_month: days in the projected month.
        sample_requests: requests in the measured sample.
        priced_requests: of those, the ones every model of which has a price
            (the others are left out of the money and named in ``notes``).
        baseline_model: the model of the all-frontier scenario.
        scenarios: one per :data:`SCENARIOS` entry, in that order.
        savings_by_lever: the combined scenario's monthly savings split by
            lever (the ledger's sequential split; the levers add up to the
            combined savings).
        measured: what the sample showed: cache hit rates, tier mix,
            escalation rate (requests a model answered after thrown-away
            attempts; cache hits never count), share of input tokens
            removed, batch share.
        notes: caveats worth reading next to the figures.
    """

    requests_per_day: int
    days_per_month: int
    sample_requests: int
    priced_requests: int
    baseline_model: str
    scenarios: tuple[ScenarioCost, ...]
    savings_by_lever: dict[str, Decimal]
    measured: dict[str, Any]
    notes: tuple[str, ...] = ()

    def scenario(self, name: Scenario) -> ScenarioCost:
        """One scenario by key."""
        for s in self.scenarios:
            if s.scenario == name:
                return s
        raise KeyError(name)

    def lever_shares(self) -> dict[str, float]:
        """Each lever's share of the combined savings (empty when nothing is saved)."""
        total = sum(self.savings_by_lever.values(), _ZERO)
        if not total:
            return {}
        return {k: float(v / total) for k, v in self.savings_by_lever.items()}

    def table(self) -> str:
        """The scenarios and the lever split as plain-text tables."""
        rows = [
            [
                s.label,
                _usd(s.usd_per_month),
                _usd(s.usd_per_month_input),
                _usd(s.usd_per_month_output),
                _usd(s.savings_usd_per_month),
                "-" if s.savings_fraction is None else f"{s.savings_fraction:.1%}",
            ]
            for s in self.scenarios
        ]
        head = ["scenario", "$/month", "input", "output", "saved", "saved %"]
        title = (
            f"Projected spend at {self.requests_per_day:,} requests/day "
            f"({self.days_per_month}-day month; baseline {self.baseline_model})"
        )
        shares = self.lever_shares()
        lever_rows = [
            [lever, _usd(amount), f"{shares.get(lever, 0.0):.1%}"]
            for lever, amount in self.savings_by_lever.items()
        ]
        parts = [format_table(head, rows, title)]
        if lever_rows:
            parts.append(
                format_table(["lever", "saved/month", "share"], lever_rows, "Combined, by lever")
            )
        return "\n\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests_per_day": self.requests_per_day,
            "days_per_month": self.days_per_month,
            "sample_requests": self.sample_requests,
            "priced_requests": self.priced_requests,
            "baseline_model": self.baseline_model,
            "scenarios": [s.to_dict() for s in self.scenarios],
            "savings_by_lever": {k: str(v) for k, v in self.savings_by_lever.items()},
            "lever_shares": self.lever_shares(),
            "measured": self.measured,
            "notes": list(self.notes),
        }


@dataclass
class _Sum:
    total: Decimal = _ZERO
    input: Decimal = _ZERO

    def add(self, total: Decimal, input_part: Decimal) -> None:
        self.total += total
        self.input += input_part


def _input_part(
    catalog: PriceCatalog, model: str, usage: Usage, mode: Literal["sync", "batch"]
) -> Decimal | None:
    return cost_of(
        catalog.get(model, warn=False), dataclasses.replace(usage, output_tokens=0), mode
    )


#: The scenario lever under which each lever's own model calls are made.
_SCENARIO_LEVER: dict[str, str] = {
    "compression": "compression",
    "memory": "compression",
    "cache_semantic": "cache",
}


def _levers_for(scenario: Scenario) -> set[str]:
    if scenario == "combined":
        return {"routing", "cache", "compression", "batch", "provider_cache"}
    if scenario == "all-frontier":
        return set()
    return {scenario}


def _round_to_total(amounts: Sequence[Decimal], total: Decimal) -> list[Decimal]:
    """``amounts`` in whole cents, summing to ``total`` (a whole number of cents).

    Largest remainder: each amount is rounded down, and the cents the floors
    fall short of ``total`` go one each to the largest remainders (ties to the
    earlier amount); should the floors exceed it, cents come off the smallest
    remainders. Pure.
    """
    if not amounts:
        return []
    cent = Decimal("0.01")
    in_cents = [a / cent for a in amounts]
    floors = [int(c.to_integral_value(rounding=ROUND_FLOOR)) for c in in_cents]
    remainders = [c - f for c, f in zip(in_cents, floors, strict=True)]
    short = int((total / cent).to_integral_value()) - sum(floors)
    n = len(amounts)
    order = sorted(range(n), key=lambda i: (-remainders[i], i))
    if short < 0:
        order.reverse()
    step = 1 if short > 0 else -1
    for k in range(abs(short)):
        floors[order[k % n]] += step
    return [(f * cent).quantize(cent) for f in floors]


def _price(
    req: MeasuredRequest,
    scenario: Scenario,
    catalog: PriceCatalog,
    baseline_model: str,
    savings: dict[str, Decimal] | None,
) -> tuple[Decimal, Decimal] | None:
    """(cost, input part) of one request in one scenario; None if something is unpriced."""
    on = _levers_for(scenario)
    removed = dict(req.removed_input_tokens) if "compression" in on else {}
    usage = req.usage if "provider_cache" in on else req.usage.without_provider_cache()
    # Tokens a lever removed are sent again when that lever is off.
    extra = sum(req.removed_input_tokens.values()) - sum(removed.values())
    usage = usage.with_extra_input(extra)
    model = req.model if "routing" in on else baseline_model
    mode: Literal["sync", "batch"] = "batch" if req.batch and "batch" in on else "sync"
    price = catalog.get(model, warn=False)
    if mode == "batch" and price is not None and price.usd_per_mtok_batch_input is None:
        mode = "sync"  # no batch API for this model: the request runs online
    outcome: CallOutcome = req.cache if req.cache and "cache" in on else "model"
    if price is None or any(
        catalog.get(m, warn=False) is None
        for m in (*req.escalated, *(made_by for made_by, _, _ in req.overhead))
    ):
        # Unpriced models are named once, in the notes and one warning (see
        # project); asking attribute_savings would log and warn about each again.
        return None
    priced = attribute_savings(
        catalog,
        model=model,
        usage=usage,
        baseline_model=baseline_model,
        mode=mode,
        outcome=outcome,
        removed_input_tokens=removed,
    )
    if priced.cost_usd is None:
        return None
    cost = priced.cost_usd
    input_part = _ZERO
    if outcome == "model":
        part = _input_part(catalog, model, usage, mode)
        if part is None:
            return None
        input_part = part
    lever_savings = dict(priced.savings_usd)
    for made_by, spent_on, charged in req.overhead:
        if _SCENARIO_LEVER[charged] not in on:
            continue  # the lever is off: its own calls are not made
        spent_usage = spent_on if "provider_cache" in on else spent_on.without_provider_cache()
        own_call = attribute_savings(
            catalog,
            model=made_by,
            usage=spent_usage,
            baseline_model=baseline_model,
            outcome="overhead",
            charged_to=charged,
        )
        part = _input_part(catalog, made_by, spent_usage, "sync")
        if own_call.cost_usd is None or part is None:
            return None
        cost += own_call.cost_usd
        input_part += part
        lever_savings[charged] = lever_savings.get(charged, _ZERO) - own_call.cost_usd
    if "routing" in on and outcome == "model":
        for thrown, own in req.attempts():
            # An attempt is billed for its own tokens (its answer is not the kept
            # one's size); only an attempt with none recorded is assumed to be the
            # kept call's prompt, without that call's provider-cache details.
            if own is None or not own.is_known:
                spent = usage.without_provider_cache()
            else:
                spent = own if "provider_cache" in on else own.without_provider_cache()
                spent = spent.with_extra_input(extra)
            wasted = attribute_savings(
                catalog,
                model=thrown,
                usage=spent,
                baseline_model=baseline_model,
                outcome="escalated",
            )
            part = _input_part(catalog, thrown, spent, "sync")
            if wasted.cost_usd is None or part is None:
                return None
            cost += wasted.cost_usd
            input_part += part
            lever_savings["routing"] = lever_savings.get("routing", _ZERO) - wasted.cost_usd
    if savings is not None:
        for lever, amount in lever_savings.items():
            savings[lever] = savings.get(lever, _ZERO) + amount
    return cost, input_part


def _check_volume(requests_per_day: int, days_per_month: int) -> None:
    if not isinstance(requests_per_day, int) or requests_per_day <= 0:
        raise ConfigurationError(
            f"requests_per_day must be a positive integer, got {requests_per_day!r}"
        )
    if not isinstance(days_per_month, int) or not 1 <= days_per_month <= 31:
        raise ConfigurationError(
            f"days_per_month must be an integer in [1, 31], got {days_per_month!r}"
        )


def _measured(requests: Sequence[MeasuredRequest]) -> dict[str, Any]:
    n = len(requests)
    outcomes = Counter(r.cache for r in requests)
    tiers = Counter(r.tier for r in requests if r.cache is None)
    routed = sum(tiers.values())
    removed: Counter[str] = Counter()
    total_in = 0
    for r in requests:
        removed.update(r.removed_input_tokens)
        total_in += (r.usage.input_tokens or 0) + sum(r.removed_input_tokens.values())
    return {
        "cache_hit_rate": (outcomes["cache_exact"] + outcomes["cache_semantic"]) / n,
        "cache_exact_rate": outcomes["cache_exact"] / n,
        "cache_semantic_rate": outcomes["cache_semantic"] / n,
        "tier_mix": {
            (k if k is not None else "(no tier)"): v / routed
            for k, v in sorted(tiers.items(), key=lambda kv: str(kv[0]))
        }
        if routed
        else {},
        # Only requests a model answered escalated: a cache hit's list is what
        # routing alone would have paid (priced in that scenario), not an escalation.
        "escalation_rate": sum(1 for r in requests if r.escalated and r.cache is None) / n,
        "input_tokens_removed_share": {
            lever: tokens / total_in for lever, tokens in sorted(removed.items())
        }
        if total_in
        else {},
        "batch_share": sum(1 for r in requests if r.batch) / n,
        "mean_input_tokens": total_in / n,
        "mean_output_tokens": sum(r.usage.output_tokens or 0 for r in requests) / n,
    }


def project(
    requests: Sequence[MeasuredRequest],
    *,
    requests_per_day: int,
    baseline_model: str,
    catalog: PriceCatalog | None = None,
    days_per_month: int = 30,
) -> Projection:
    """Project the monthly spend of a measured sample at a production volume.

    Each scenario prices every request as the levers it names leave it:
    ``routing`` serves it on its routed model (thrown-away escalation
    attempts included), ``cache`` makes its hits free, ``compression``
    drops the tokens compression/memory removed, ``batch`` bills the
    latency-tolerant share at batch rates; ``combined`` applies them all
    (plus any provider prompt caching the sample observed). The sample's
    cost is scaled by ``requests_per_day * days_per_month / len(requests)``.

    Args:
        requests: the measured sample (see :mod:`costopt_core.workload`).
        requests_per_day: the production volume.
        baseline_model: the all-frontier model every request is compared to.
        catalog: prices; the shipped catalog by default.
        days_per_month: days in a month (30 by default).

    Returns:
        A :class:`Projection`.

    Raises:
        ConfigurationError: an empty sample, a bad volume, or an unpriced
            baseline model.

    Example:
        >>> from costopt_core import Usage
        >>> req = MeasuredRequest("gpt-4o", Usage(input_tokens=1000, output_tokens=0))
        >>> p = project([req], requests_per_day=1_000_000, baseline_model="gpt-4o")
        >>> p.scenario("all-frontier").usd_per_month_input
        Decimal('75000.00')
    """
    _check_volume(requests_per_day, days_per_month)
    if not requests:
        raise ConfigurationError("the workload sample is empty: give at least one request")
    catalog = catalog or PriceCatalog.default()
    if catalog.get(baseline_model, warn=False) is None:
        raise ConfigurationError(
            f"baseline model {baseline_model!r} has no price in the catalog: pick a priced "
            "model or add its price with PriceCatalog.with_overrides"
        )
    sums = {s: _Sum() for s in SCENARIOS}
    lever_sums: dict[str, Decimal] = {}
    unpriced: Counter[str] = Counter()
    priced = 0
    for req in requests:
        costs: dict[Scenario, tuple[Decimal, Decimal]] = {}
        split: dict[str, Decimal] = {}
        for s in SCENARIOS:
            c = _price(req, s, catalog, baseline_model, split if s == "combined" else None)
            if c is None:
                break
            costs[s] = c
        else:
            priced += 1
            for s, (total, input_part) in costs.items():
                sums[s].add(total, input_part)
            for lever, amount in split.items():
                lever_sums[lever] = lever_sums.get(lever, _ZERO) + amount
            continue
        unpriced.update([req.model, *req.escalated, *(m for m, _, _ in req.overhead)])
    notes = []
    if unpriced:
        names = ", ".join(sorted(m for m in unpriced if catalog.get(m, warn=False) is None))
        notes.append(
            f"{len(requests) - priced} requests use models without a price ({names}); they "
            "are left out of the money: add their prices with PriceCatalog.with_overrides"
        )
    if priced == 0:
        raise ConfigurationError(
            "no request of the sample could be priced: " + (notes[0] if notes else "")
        )
    if notes:
        warnings.warn(notes[0], UnknownModelPriceWarning, stacklevel=2)
    scale = Decimal(requests_per_day * days_per_month) / Decimal(priced)
    cent = Decimal("0.01")
    base_total = (sums["all-frontier"].total * scale).quantize(cent)
    scenarios = []
    for s in SCENARIOS:
        total = (sums[s].total * scale).quantize(cent)
        input_part = (sums[s].input * scale).quantize(cent)
        saved = base_total - total
        scenarios.append(
            ScenarioCost(
                scenario=s,
                label=_LABELS[s],
                usd_per_month=total,
                usd_per_month_input=input_part,
                usd_per_month_output=total - input_part,
                savings_usd_per_month=saved,
                savings_fraction=float(saved / base_total) if base_total else None,
            )
        )
    levers: list[str] = [lever for lever in LEVERS if lever_sums.get(lever)]
    # Rounded to cents as a whole, so they add up to the combined savings shown.
    combined_saved = scenarios[SCENARIOS.index("combined")].savings_usd_per_month
    by_lever = dict(
        zip(
            levers,
            _round_to_total([lever_sums[lever] * scale for lever in levers], combined_saved),
            strict=True,
        )
    )
    return Projection(
        requests_per_day=requests_per_day,
        days_per_month=days_per_month,
        sample_requests=len(requests),
        priced_requests=priced,
        baseline_model=baseline_model,
        scenarios=tuple(scenarios),
        savings_by_lever=by_lever,
        measured=_measured(requests),
        notes=tuple(notes),
    )
