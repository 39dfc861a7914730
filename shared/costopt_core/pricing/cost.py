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
from decimal import Decimal, getcontext
from typing import get_args

from costopt_core.errors import ConfigurationError
from costopt_core.pricing.catalog import ModelPrice, PriceCatalog
from costopt_core.types import (
    CACHE_OUTCOMES,
    CallMode,
    CallOutcome,
    OverheadLever,
    Usage,
    slot_setters,
)

__all__ = [
    "CallPricer",
    "PricedCall",
    "attribute_savings",
    "cost_of",
    "estimate_cost",
    "has_batch_price",
    "unknown_cost_reason",
]

_MTOK = Decimal(1_000_000)
#: The levers of input tokens kept out of a call.
_REMOVAL_LEVERS = ("compression", "memory")
_ZERO = Decimal(0)
_KINDS = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output")


class _Rates:
    """Per-token rates of one price, tier and mode, as integers over one unit.

    Each rate is ``ints[k] * unit`` exactly, with ``unit`` the power of ten of
    the finest rate. A cost is then an integer dot product and one ``Decimal``
    multiplication, instead of five ``Decimal`` products and four sums (this
    runs several times per recorded call). The result is the very ``Decimal``
    the products and sums would give, exponent included (a product of an
    integer and a rate keeps the rate's exponent, a sum the smallest one),
    whenever that arithmetic is exact, i.e. the result fits the context's
    precision; otherwise the ``Decimal`` arithmetic itself is used, so its
    rounding is kept too.
    """

    __slots__ = ("decimals", "ints", "unit")

    def __init__(self, rates: tuple[Decimal, ...]) -> None:
        exponents = [rate.as_tuple().exponent for rate in rates]
        exp = min(e for e in exponents if isinstance(e, int))  # rates are finite (ge=0)
        self.decimals = rates
        self.unit = Decimal(1).scaleb(exp)
        self.ints = tuple(int(rate.scaleb(-exp)) for rate in rates)

    def cost(self, uncached: int, read: int, w5: int, w1h: int, out: int) -> Decimal:
        r_in, r_read, r_w5, r_w1h, r_out = self.ints
        n = uncached * r_in + read * r_read + w5 * r_w5 + w1h * r_w1h + out * r_out
        if n < _exact_below():
            return n * self.unit
        d_in, d_read, d_w5, d_w1h, d_out = self.decimals
        return uncached * d_in + read * d_read + w5 * d_w5 + w1h * d_w1h + out * d_out

    def plain_and_billed(
        self, input_tokens: int, read: int, w5: int, w1h: int, out: int
    ) -> tuple[Decimal, Decimal]:
        """The cost had the provider cached nothing, and as billed; one object if equal."""
        r_in, r_read, r_w5, r_w1h, r_out = self.ints
        plain = input_tokens * r_in + out * r_out
        billed = plain - read * (r_in - r_read) - w5 * (r_in - r_w5) - w1h * (r_in - r_w1h)
        limit = _exact_below()
        if plain < limit and billed < limit:
            unit = self.unit
            plain_usd = plain * unit
            return plain_usd, plain_usd if billed == plain else billed * unit
        uncached = input_tokens - read - w5 - w1h
        return self.cost(input_tokens, 0, 0, 0, out), self.cost(uncached, read, w5, w1h, out)


def _exact_below() -> int:
    """Coefficients below this fit the context's precision: their ``Decimal`` is exact."""
    prec = getcontext().prec
    limit = _EXACT_BELOW.get(prec)
    if limit is None:
        limit = _EXACT_BELOW[prec] = 10**prec
    return limit


#: precision -> 10 ** precision: coefficients below it fit, so their ``Decimal`` is exact.
_EXACT_BELOW: dict[int, int] = {}


class _PriceRates:
    """The rates of one price object: base tier sync up front, the others on first use.

    Holds the long-context threshold too, so pricing a call reads no pydantic
    attribute (those lookups are not specialized by the interpreter).
    """

    __slots__ = ("above", "price", "sync", "variants")

    def __init__(self, price: ModelPrice) -> None:
        self.price = price
        lc = price.long_context
        self.above = None if lc is None else lc.above_input_tokens
        sync = _compute_rates(price, long=False, batch=False)
        assert sync is not None  # sync rates always exist
        self.sync: _Rates = sync
        # (long context?, batch?) -> rates, or None (no batch price)
        self.variants: dict[tuple[bool, bool], _Rates | None] = {}

    def get(self, long: bool, batch: bool) -> _Rates | None:
        key = (long, batch)
        if key not in self.variants:
            self.variants[key] = _compute_rates(self.price, long=long, batch=batch)
        return self.variants[key]


# id(price) -> its rates, computed once: this runs on every recorded call.
_RATES: dict[int, _PriceRates] = {}


def _rates_of(price: ModelPrice) -> _PriceRates:
    entry = _RATES.get(id(price))
    if entry is None or entry.price is not price:  # (an id can be reused)
        entry = _RATES[id(price)] = _PriceRates(price)
    return entry


def _compute_rates(price: ModelPrice, *, long: bool, batch: bool) -> _Rates | None:
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
    return _Rates(tuple(rates[k] / _MTOK for k in _KINDS))


def _rates(price: ModelPrice, input_tokens: int, mode: CallMode) -> _Rates | None:
    """Rates for a call of ``input_tokens`` in ``mode``; ``None`` if there is no batch price."""
    entry = _rates_of(price)
    above = entry.above
    long = above is not None and input_tokens > above
    if long or mode == "batch":
        return entry.get(long, mode == "batch")
    return entry.sync


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
    return rates.cost(usage.input_tokens - read - w5 - w1h, read, w5, w1h, usage.output_tokens)


def _cost_uncached(price: ModelPrice | None, usage: Usage, extra_input: int = 0) -> Decimal | None:
    """Sync cost had the provider cached nothing (and ``extra_input`` more tokens been sent)."""
    if price is None or usage.input_tokens is None or usage.output_tokens is None:
        return None
    total_in = usage.input_tokens + extra_input
    rates = _rates(price, total_in, "sync")
    assert rates is not None  # sync rates always exist
    return rates.cost(total_in, 0, 0, 0, usage.output_tokens)


def _sync_costs(price: ModelPrice | None, usage: Usage) -> tuple[Decimal | None, Decimal | None]:
    """Sync cost had the provider cached nothing, and as billed (one rate lookup for both)."""
    input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
    if price is None or input_tokens is None or output_tokens is None:
        return None, None
    rates = _rates(price, input_tokens, "sync")
    assert rates is not None  # sync rates always exist
    return rates.plain_and_billed(
        input_tokens,
        usage.cache_read_tokens or 0,
        usage.cache_write_5m_tokens or 0,
        usage.cache_write_1h_tokens or 0,
        output_tokens,
    )


def estimate_cost(
    price: ModelPrice | None,
    input_tokens: int,
    output_tokens: int = 0,
    mode: CallMode = "sync",
    *,
    upper_bound: bool = False,
) -> Decimal | None:
    """Cost of a call before it is made, with no cache credit.

    By default the prompt is priced at the plain input rate: the expected cost
    of a call of this size (what the routers compare tiers by). With
    ``upper_bound=True`` it is the most the call can be billed, what a budget
    must hold: every prompt token at the dearest input rate the model has (a
    provider may bill the prompt as cache writes, 1.25x or 2x input at
    Anthropic), and the long-context tier's rates too when the prompt and
    output together could cross its threshold. (Providers pick the tier by the
    prompt alone; counting the output as well keeps a prompt whose count is an
    estimate on the safe side near the threshold.)

    In ``batch`` mode a model with no batch price is estimated at its sync
    price: the estimate is an upper bound for a budget check, and a batch is
    never billed above the sync rate (its recorded cost is unknown, not this).
    """
    if price is not None and mode == "batch" and not has_batch_price(price):
        mode = "sync"
    if not upper_bound or price is None:
        return cost_of(price, Usage(input_tokens=input_tokens, output_tokens=output_tokens), mode)
    return _upper_bound_cost(price, input_tokens, output_tokens, mode)


def _upper_bound_cost(
    price: ModelPrice, input_tokens: int, output_tokens: int, mode: CallMode
) -> Decimal:
    """Every input token at the dearest input kind, output at the dearest output rate."""
    entry = _rates_of(price)
    batch = mode == "batch"
    tiers = [False]
    if entry.above is not None and input_tokens + output_tokens > entry.above:
        tiers.append(True)
    in_rate = out_rate = _ZERO
    for long in tiers:
        rates = entry.get(long, batch)
        assert rates is not None  # batch mode only with a batch price (above)
        d_in, d_read, d_w5, d_w1h, d_out = rates.decimals
        in_rate = max(in_rate, d_in, d_read, d_w5, d_w1h)
        out_rate = max(out_rate, d_out)
    return input_tokens * in_rate + output_tokens * out_rate


def has_batch_price(price: ModelPrice) -> bool:
    """Whether ``price`` lists batch rates (else a batch call of it costs ``None``)."""
    return (
        price.usd_per_mtok_batch_input is not None and price.usd_per_mtok_batch_output is not None
    )


@dataclass(frozen=True, slots=True, init=False)
class PricedCall:
    cost_usd: Decimal | None
    baseline_cost_usd: Decimal | None
    savings_usd: dict[str, Decimal]

    def __init__(
        self,
        cost_usd: Decimal | None,
        baseline_cost_usd: Decimal | None,
        savings_usd: dict[str, Decimal],
    ) -> None:
        # Built on every recorded call: set the slots directly (see types.py).
        set_cost, set_baseline, set_savings = _PRICED_SETTERS
        set_cost(self, cost_usd)
        set_baseline(self, baseline_cost_usd)
        set_savings(self, savings_usd)


_PRICED_SETTERS = slot_setters(PricedCall)


def _sub(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    return None if a is None or b is None else a - b


def _plain_sync_call(
    entry: _PriceRates, base_entry: _PriceRates, usage: Usage
) -> PricedCall | None:
    """:func:`attribute_savings` of the usual call (a model answered, sync, nothing
    removed, base price tier, exact arithmetic) in one pass; ``None`` for any other.

    Every LLM call a handler records is priced here, so the rate lookups and the
    three integer dot products are inlined; the result is the very one the
    general path gives (``tests/unit/test_pricing.py`` checks both agree).
    """
    input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
    if input_tokens is None or output_tokens is None:
        return None
    above, base_above = entry.above, base_entry.above
    if (above is not None and input_tokens > above) or (
        base_above is not None and input_tokens > base_above
    ):
        return None
    rates, base_rates = entry.sync, base_entry.sync
    r_in, r_read, r_w5, r_w1h, r_out = rates.ints
    b_in, _, _, _, b_out = base_rates.ints
    read = usage.cache_read_tokens or 0
    w5 = usage.cache_write_5m_tokens or 0
    w1h = usage.cache_write_1h_tokens or 0
    baseline = input_tokens * b_in + output_tokens * b_out
    plain = input_tokens * r_in + output_tokens * r_out
    billed = plain - read * (r_in - r_read) - w5 * (r_in - r_w5) - w1h * (r_in - r_w1h)
    limit = _exact_below()
    if baseline >= limit or plain >= limit or billed >= limit:
        return None
    unit = rates.unit
    baseline_usd = baseline * base_rates.unit
    plain_usd = plain * unit
    savings: dict[str, Decimal] = {}
    delta = baseline_usd - plain_usd
    if delta:
        savings["routing"] = delta
    if billed == plain:
        return PricedCall(plain_usd, baseline_usd, savings)
    billed_usd = billed * unit
    delta = plain_usd - billed_usd
    if delta:
        savings["provider_cache"] = delta
    return PricedCall(billed_usd, baseline_usd, savings)


class CallPricer:
    """:func:`attribute_savings` of sync calls, for one catalog and baseline model.

    The framework handlers price every call they record with one of these
    (``CostEngine.record_call_deferred``): each model's rates and the
    baseline's are looked up once, and the usual call is priced in one pass.

    Args:
        catalog: the prices.
        baseline_model: the frontier model every request is compared against.
    """

    __slots__ = ("_base", "_entries", "baseline_model", "catalog")

    def __init__(self, catalog: PriceCatalog, baseline_model: str) -> None:
        self.catalog = catalog
        self.baseline_model = baseline_model
        self._base: _PriceRates | None = None
        # model name -> its rates, once a call of it was priced (known models only)
        self._entries: dict[str, _PriceRates] = {}

    def price(
        self,
        model: str,
        usage: Usage,
        outcome: CallOutcome = "model",
        charged_to: OverheadLever | None = None,
    ) -> PricedCall:
        """The cost of a sync call of ``model`` and its savings by lever.

        ``outcome`` and ``charged_to`` are as for :func:`attribute_savings`.
        """
        entry = self._entries.get(model)
        base = self._base
        if entry is not None and base is not None and outcome == "model" and charged_to is None:
            priced = _plain_sync_call(entry, base, usage)
            if priced is not None:
                return priced
        catalog = self.catalog
        priced = attribute_savings(
            catalog,
            model=model,
            usage=usage,
            baseline_model=self.baseline_model,
            outcome=outcome,
            charged_to=charged_to,
        )
        if entry is None:
            price = catalog.get(model, warn=False)
            base_price = catalog.get(self.baseline_model, warn=False)
            if price is not None and base_price is not None:
                self._entries[model] = _rates_of(price)
                self._base = _rates_of(base_price)
        return priced


def attribute_savings(
    catalog: PriceCatalog,
    *,
    model: str,
    usage: Usage,
    baseline_model: str,
    mode: CallMode = "sync",
    outcome: CallOutcome = "model",
    removed_input_tokens: Mapping[str, int] | None = None,
    charged_to: OverheadLever | None = None,
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
            negative routing saving and it carries no baseline of its own);
            ``overhead`` (a call a lever made itself, see ``charged_to``).
        removed_input_tokens: input tokens that ``compression`` / ``memory`` removed
            before the call, priced on the baseline model.
        charged_to: for a call a lever made itself (a summarizer's, a cache
            verifier's; see ``costopt_core.overhead``):
            the lever it works for. The all-frontier run never makes that call,
            so it carries no baseline and its cost is a negative saving of the
            lever. Given with ``outcome="overhead"`` only.

    Raises:
        ConfigurationError: ``overhead`` without ``charged_to`` (or the
            reverse), a ``charged_to`` of a lever that makes no model calls,
            or ``removed_input_tokens`` on an ``overhead`` call.
    """
    if outcome == "overhead" or charged_to is not None:
        return _overhead_call(
            catalog, model, usage, mode, outcome, charged_to, removed_input_tokens
        )
    price = catalog.get(model)
    base_price = catalog.get(baseline_model)
    if (
        outcome == "model"
        and mode == "sync"
        and not removed_input_tokens
        and price is not None
        and base_price is not None
    ):
        plain = _plain_sync_call(_rates_of(price), _rates_of(base_price), usage)
        if plain is not None:
            return plain

    if outcome == "escalated":
        return _thrown_in(catalog, model, price, usage, mode, "routing")

    savings: dict[str, Decimal] = {}
    baseline = _cost_uncached(base_price, usage)
    # compression / memory, in the order given, priced on the baseline model.
    removed = 0
    if removed_input_tokens:
        for lever, tokens in removed_input_tokens.items():
            if lever not in _REMOVAL_LEVERS:
                # The ledger reader refuses a lever it does not know: a record
                # written under another name could never be read back.
                raise ConfigurationError(
                    f"removed_input_tokens: unknown lever {lever!r}; the tokens a call "
                    f"did not send are credited to 'compression' or 'memory'"
                )
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

    served_plain, served_sync = _sync_costs(price, usage)
    served = served_sync if mode == "sync" else cost_of(price, usage, mode)
    if baseline is not None and served_plain is not None:
        delta = baseline - served_plain
        if delta:
            savings["routing"] = delta
    if served_plain is not None and served_sync is not served_plain:
        assert served_sync is not None
        delta = served_plain - served_sync
        if delta:
            savings["provider_cache"] = delta
    if served_sync is not None and served is not served_sync and served is not None:
        delta = served_sync - served
        if delta:
            savings["batch"] = delta

    if outcome in CACHE_OUTCOMES:
        if served is None:
            # The replaced call cannot be priced: credit the cache with the whole baseline.
            for lever in ("routing", "provider_cache", "batch"):
                savings.pop(lever, None)
            served = baseline
        if served:
            savings[outcome] = served
        return PricedCall(_ZERO, baseline_full, savings)
    if served is None:
        _warn_unknown(catalog, model, price, usage, mode)
    return PricedCall(served, baseline_full, savings)


def _thrown_in(
    catalog: PriceCatalog,
    model: str,
    price: ModelPrice | None,
    usage: Usage,
    mode: CallMode,
    lever: str,
) -> PricedCall:
    """A call no all-frontier run would make: no baseline, its cost a loss of ``lever``."""
    spent = cost_of(price, usage, mode)
    if spent is None:
        _warn_unknown(catalog, model, price, usage, mode)
    return PricedCall(spent, _ZERO, {lever: -spent} if spent else {})


def _overhead_call(
    catalog: PriceCatalog,
    model: str,
    usage: Usage,
    mode: CallMode,
    outcome: CallOutcome,
    charged_to: OverheadLever | None,
    removed_input_tokens: Mapping[str, int] | None,
) -> PricedCall:
    if outcome != "overhead" or charged_to is None or charged_to not in get_args(OverheadLever):
        raise ConfigurationError(
            f"a lever's own call has outcome 'overhead' and is charged to one of "
            f"{', '.join(get_args(OverheadLever))}, got outcome {outcome!r} and charged_to "
            f"{charged_to!r}: pass both, or neither for an ordinary call"
        )
    if removed_input_tokens and any(n > 0 for n in removed_input_tokens.values()):
        # The saving would have no baseline to come out of: it belongs to the
        # request whose tokens were kept out.
        raise ConfigurationError(
            "removed_input_tokens on a lever's own call (inside overhead_of): record the "
            "tokens kept out with CostEngine.record_removed_tokens, or on the request's call"
        )
    priced = _thrown_in(catalog, model, catalog.get(model), usage, mode, charged_to)
    if not priced.savings_usd:
        # Unpriced or free: the record still names its lever (a projection with
        # other prices bills it there).
        return PricedCall(priced.cost_usd, priced.baseline_cost_usd, {charged_to: _ZERO})
    return priced


def unknown_cost_reason(
    price: ModelPrice | None, usage: Usage, mode: CallMode = "sync"
) -> str | None:
    """Why a call's cost is unknown: ``no usage``, ``no batch price``, ``no price``; else None."""
    if price is None:
        return "no price"
    if usage.input_tokens is None or usage.output_tokens is None:
        return "no usage"
    if mode == "batch" and not has_batch_price(price):
        return "no batch price"
    return None


def _warn_unknown(
    catalog: PriceCatalog, model: str, price: ModelPrice | None, usage: Usage, mode: CallMode
) -> None:
    """Warn (once per model and reason) that a call of a priced model costs ``None``.

    An unpriced model was warned about by the catalog already.
    """
    reason = unknown_cost_reason(price, usage, mode)
    if reason == "no usage":
        catalog.warn_once(
            (reason, model),
            f"model {model!r} is priced, but a call of it reported no token usage: such "
            "calls are recorded with cost None (unknown, not $0). Have the provider return "
            "usage (e.g. stream_usage=True for streamed OpenAI calls)",
            stacklevel=5,
        )
    elif reason == "no batch price":
        catalog.warn_once(
            (reason, model),
            f"model {model!r} has no batch price: its batch calls are recorded with cost "
            "None (unknown, not $0). Add usd_per_mtok_batch_input and "
            "usd_per_mtok_batch_output with PriceCatalog.with_overrides(...)",
            stacklevel=5,
        )
