"""Flush now or keep the cached prefix: the price trade-off behind the flush policy.

Between flushes every call repeats the previous call's prefix (system,
summary, the turns since the last flush), so the provider bills it at the
cache-read price. A flush shortens that prefix but rewrites it: the next
call pays the new summary and window at the input (or cache-write) price,
and the summarizer's own call is paid too. Over the next ``horizon_turns``
calls::

    keep  = horizon * prefix_keep * read
    flush = prefix_flush * write + (horizon - 1) * prefix_flush * read
            + summarizer_in * summarizer_input_price + summarizer_out * summarizer_output_price

where the prefixes count only the tokens from the summary message on (the
system prompts are cached either way). With a large cache discount (read
0.1x, write 1.25x) keeping the prefix usually wins until the hard cap; with
a small one (read 0.5x) flushing early wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from costopt_core.pricing import PriceCatalog

__all__ = ["CachePrices", "FlushTradeoff", "cache_prices", "flush_tradeoff"]

_MTOK = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class CachePrices:
    """Per-million-token prices the trade-off needs (USD).

    Attributes:
        input_usd_per_mtok: plain input price of the conversation's model.
        cache_read_usd_per_mtok: its cached-input read price (the input
            price when the provider has no discount).
        cache_write_usd_per_mtok: what a rewritten prefix costs per token
            (the 5-minute cache-write price where there is one, else input).
        summarizer_input_usd_per_mtok: input price of the summarizer model
            (0 for the extractive summarizer).
        summarizer_output_usd_per_mtok: its output price.
    """

    input_usd_per_mtok: Decimal
    cache_read_usd_per_mtok: Decimal
    cache_write_usd_per_mtok: Decimal
    summarizer_input_usd_per_mtok: Decimal = Decimal(0)
    summarizer_output_usd_per_mtok: Decimal = Decimal(0)


def cache_prices(
    catalog: PriceCatalog, model: str, summarizer_model: str | None = None
) -> CachePrices | None:
    """The trade-off prices of ``model`` (and the summarizer) from the catalog.

    Returns:
        ``None`` when ``model`` (or a named ``summarizer_model``) has no
        price: the flush policy then flushes at ``flush_min_tokens``.
    """
    price = catalog.get(model, warn=False)
    if price is None:
        return None
    s_in = s_out = Decimal(0)
    if summarizer_model is not None:
        s_price = catalog.get(summarizer_model, warn=False)
        if s_price is None:
            return None
        s_in, s_out = s_price.usd_per_mtok_input, s_price.usd_per_mtok_output
    read = price.usd_per_mtok_cache_read
    write = price.usd_per_mtok_cache_write_5m
    return CachePrices(
        input_usd_per_mtok=price.usd_per_mtok_input,
        cache_read_usd_per_mtok=price.usd_per_mtok_input if read is None else read,
        cache_write_usd_per_mtok=price.usd_per_mtok_input if write is None else write,
        summarizer_input_usd_per_mtok=s_in,
        summarizer_output_usd_per_mtok=s_out,
    )


@dataclass(frozen=True, slots=True)
class FlushTradeoff:
    """Both sides of the trade-off over the horizon (USD) and the verdict."""

    keep_usd: Decimal
    flush_usd: Decimal

    @property
    def flush(self) -> bool:
        """True when flushing now is strictly cheaper."""
        return self.flush_usd < self.keep_usd

    @property
    def saving_usd(self) -> Decimal:
        """What the cheaper side saves against the other."""
        return abs(self.keep_usd - self.flush_usd)


def flush_tradeoff(
    prices: CachePrices,
    *,
    prefix_keep_tokens: int,
    prefix_flush_tokens: int,
    summarizer_input_tokens: int = 0,
    summarizer_output_tokens: int = 0,
    horizon_turns: int = 8,
) -> FlushTradeoff:
    """Cost of keeping the cached prefix against flushing now, over ``horizon_turns`` calls.

    Args:
        prices: see :func:`cache_prices`.
        prefix_keep_tokens: tokens from the summary message on, without a flush.
        prefix_flush_tokens: the same after the flush (new summary + window).
        summarizer_input_tokens: what the summarizer call reads (0 if extractive).
        summarizer_output_tokens: what it writes.
        horizon_turns: calls the prefix is expected to serve (>= 1).

    Example:
        >>> p = CachePrices(Decimal("2.5"), Decimal("1.25"), Decimal("2.5"))
        >>> t = flush_tradeoff(p, prefix_keep_tokens=2000, prefix_flush_tokens=1000,
        ...                    horizon_turns=4)
        >>> (t.keep_usd, t.flush_usd, t.flush)
        (Decimal('0.01'), Decimal('0.00625'), True)
    """
    h = max(1, horizon_turns)
    keep = h * prefix_keep_tokens * prices.cache_read_usd_per_mtok
    flush = (
        prefix_flush_tokens * prices.cache_write_usd_per_mtok
        + (h - 1) * prefix_flush_tokens * prices.cache_read_usd_per_mtok
        + summarizer_input_tokens * prices.summarizer_input_usd_per_mtok
        + summarizer_output_tokens * prices.summarizer_output_usd_per_mtok
    )
    return FlushTradeoff(keep_usd=keep / _MTOK, flush_usd=flush / _MTOK)
