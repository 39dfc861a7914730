"""What a call cost, and what it saved against the all-frontier baseline.

Pure functions of a price and a ``Usage``: no I/O, no state. The savings
split is sequential, so the levers always add up to baseline minus actual:

    baseline model, uncompressed        -- compression / memory -->
    baseline model, as sent             -- routing -->
    served model, no provider cache     -- provider_cache -->
    served model, sync                  -- batch -->
    served model, as billed
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from costopt_core.pricing.catalog import ModelPrice, PriceCatalog
from costopt_core.types import CallMode, CallOutcome, Usage

__all__ = ["PricedCall", "attribute_savings", "cost_of", "estimate_cost"]

_MTOK = Decimal(1_000_000)
_ZERO = Decimal(0)
_KINDS = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output")

# Rates per price object, computed once: this runs on every recorded call.
# (price, long_context?, batch?) -> rates in _KINDS order, or None (no batch price)
_RATES: dict[tuple[int, bool, bool], tuple[ModelPrice, tuple[Decimal, ...] | None]] = {}


def _compute_rates(price: ModelPrice, long: bool, batch: bool) -> tuple[Decimal, ...] | None:
    lc = price.long_context if long else None
    rates: dict[str, Decimal] = {}
    for kind in ("input", "output"):
        value = getattr(lc, f"usd_per_mtok_{kind}", None) if lc is not None else None
        rates[kind] = value if value is not None else getattr(price, f"usd_per_mtok_{kind}")
    for kind in ("cache_read", "cache_write_5m", "cache_write_1h"):
        value = getattr(lc, f"usd_per_mtok_{kind}", None) if lc is not None else None
        if value is None:
            value = getattr(price, f"usd_per_mtok_{kind}")
        # A model with no cache price bills those tokens as plain input.
        rates[kind] = value if value is not None else rates["input"]
    if batch:
        b_in, b_out = price.usd_per_mtok_batch_input, price.usd_per_mtok_batch_output
        if b_in is None or b_out is None:
            return None
        # Batch prices are list prices for the base tier: use them as they are,
        # and give every other kind the same discount (exact for the usual 50%).
        in_ratio = b_in / price.usd_per_mtok_input if price.usd_per_mtok_input else Decimal(1)
        out_ratio = b_out / price.usd_per_mtok_output if price.usd_per_mtok_output else Decimal(1)
        rates = {k: v * (out_ratio if k == "output" else in_ratio) for k, v in rates.items()}
        if lc is None:
            rates["input"], rates["output"] = b_in, b_out
    return tuple(rates[k] / _MTOK for k in _KINDS)


def _rates(price: ModelPrice, input_tokens: int, mode: CallMode) -> tuple[Decimal, ...] | None:
    lc = price.long_context
    long = lc is not None and input_tokens > lc.above_input_tokens
    key = (id(price), long, mode == "batch")
    hit = _RATES.get(key)
    if hit is None or hit[0] is not price:
        hit = (price, _compute_rates(price, long, mode == "batch"))
        _RATES[key] = hit
    return hit[1]


def _priced(
    rates: tuple[Decimal, ...], uncached: int, read: int, w5: int, w1h: int, out: int
) -> Decimal:
    r_in, r_read, r_w5, r_w1h, r_out = rates
    return uncached * r_in + read * r_read + w5 * r_w5 + w1h * r_w1h + out * r_out


def cost_of(price: ModelPrice | None, usage: Usage, mode: CallMode = "sync") -> Decimal | None:
    """Cost in USD of one call; ``None`` when the price or the token counts are unknown.

    Unknown cache details (``None``) bill those tokens at the plain input rate,
    which can only over-state the cost. The long-context tier applies when the
    prompt exceeds its threshold. Batch mode scales every input kind by the
    model's batch/sync input ratio, so cache reads and writes get the same
    discount the provider gives; a model with no batch price costs ``None``.
    """
    if price is None or usage.input_tokens is None or usage.output_tokens is None:
        return None
    rates = _rates(price, usage.input_tokens, mode)
    if rates is None:
        return None
    read = usage.cache_read_tokens or 0
    w5 = usage.cache_write_5m_tokens or 0
    w1h = usage.cache_write_1h_tokens or 0
    return _priced(rates, usage.input_tokens - read - w5 - w1h, read, w5, w1h, usage.output_tokens)


def _cost_uncached(price: ModelPrice | None, usage: Usage, extra_input: int = 0) -> Decimal | None:
    """Sync cost had the provider cached nothing (and ``extra_input`` more tokens been sent)."""
    if price is None or usage.input_tokens is None or usage.output_tokens is None:
        return None
    total_in = usage.input_tokens + extra_input
    rates = _rates(price, total_in, "sync")
    assert rates is not None  # sync rates always exist
    return _priced(rates, total_in, 0, 0, 0, usage.output_tokens)


def estimate_cost(
    price: ModelPrice | None, input_tokens: int, output_tokens: int = 0
) -> Decimal | None:
    """Upper-bound cost of a call before it is made (no cache credit)."""
    return cost_of(price, Usage(input_tokens=input_tokens, output_tokens=output_tokens))


@dataclass(frozen=True, slots=True)
class PricedCall:
    cost_usd: Decimal | None
    baseline_cost_usd: Decimal | None
    savings_usd: dict[str, Decimal]


def _sub(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    return None if a is None or b is None else a - b


def attribute_savings(
    catalog: PriceCatalog,
    *,
    model: str,
    usage: Usage,
    baseline_model: str,
    mode: CallMode = "sync",
    outcome: CallOutcome = "model",
    removed_input_tokens: Mapping[str, int] | None = None,
) -> PricedCall:
    """Price one call and split its savings against the baseline by lever.

    Args:
        catalog: the prices.
        model: the model that served (or, for a cache hit, originally produced) the answer.
        usage: tokens of the call (for a cache hit: of the call it replaced).
        baseline_model: the frontier model every request is compared against.
        mode: ``sync`` or ``batch``.
        outcome: ``model``; ``cache_exact``/``cache_semantic`` (the call was not made,
            costs $0); ``escalated`` (a cheap attempt thrown away: its cost is a
            negative routing saving and it carries no baseline of its own).
        removed_input_tokens: input tokens that ``compression`` / ``memory`` removed
            before the call, priced on the baseline model.
    """
    price = catalog.get(model)
    base_price = catalog.get(baseline_model)

    if outcome == "escalated":
        spent = cost_of(price, usage, mode)
        return PricedCall(spent, _ZERO, {} if spent is None else {"routing": -spent})

    savings: dict[str, Decimal] = {}
    baseline = _cost_uncached(base_price, usage)
    # compression / memory, in the order given, priced on the baseline model.
    removed = 0
    if removed_input_tokens:
        for lever, tokens in removed_input_tokens.items():
            if tokens <= 0:
                continue
            delta = _sub(
                _cost_uncached(base_price, usage, removed + tokens),
                _cost_uncached(base_price, usage, removed),
            )
            if delta:
                savings[lever] = savings.get(lever, _ZERO) + delta
            removed += tokens
    baseline_full = _cost_uncached(base_price, usage, removed) if removed else baseline

    served_plain = _cost_uncached(price, usage)
    served_sync = cost_of(price, usage)
    served = served_sync if mode == "sync" else cost_of(price, usage, mode)
    for lever, delta in (
        ("routing", _sub(baseline, served_plain)),
        ("provider_cache", _sub(served_plain, served_sync)),
        ("batch", _sub(served_sync, served)),
    ):
        if delta:
            savings[lever] = delta

    if outcome in ("cache_exact", "cache_semantic"):
        if served is None:
            # The replaced call cannot be priced: credit the cache with the whole baseline.
            for lever in ("routing", "provider_cache", "batch"):
                savings.pop(lever, None)
            served = baseline
        if served:
            savings[outcome] = served
        return PricedCall(_ZERO, baseline_full, savings)
    return PricedCall(served, baseline_full, savings)
