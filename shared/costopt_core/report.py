"""Plain-text tables of a ledger: what the terminal, logs and notebooks print."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from costopt_core.types import LEVERS

if TYPE_CHECKING:
    from costopt_core.ledger import CostLedger, Dimension, Totals

__all__ = ["format_breakdown", "format_summary", "format_table", "usd"]


def usd(amount: Decimal | None) -> str:
    """Money for humans: cents for large sums, more digits for tiny per-call costs."""
    if amount is None:
        return "unknown"
    if abs(amount) >= 100:
        return f"${amount:,.2f}"
    if abs(amount) >= 1:
        return f"${amount:,.4f}"
    return f"${amount:.6f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _width(text: str) -> int:
    """Terminal columns of ``text``: wide (CJK) characters take two, combining marks none."""
    return sum(
        0
        if unicodedata.combining(ch)
        else 2
        if unicodedata.east_asian_width(ch) in ("W", "F")
        else 1
        for ch in text
    )


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str = "") -> str:
    # Sized by display width, not len(): a tenant named in CJK would push its row out.
    widths = [_width(h) for h in headers]
    for row in rows:
        widths = [max(w, _width(c)) for w, c in zip(widths, row, strict=True)]
    line = "  ".join("-" * w for w in widths)

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c + " " * (w - _width(c)) if i == 0 else " " * (w - _width(c)) + c
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [title] if title else []
    out += [fmt(headers), line, *(fmt(r) for r in rows)]
    return "\n".join(out)


_HEAD = ["requests", "actual", "baseline", "saved", "saved %"]
# Shown only when some call is unpriced, so tables of fully priced ledgers keep their shape.
_UNPRICED = "unpriced"


def _row(name: str, t: Totals, unpriced: bool = False) -> list[str]:
    """One table row; with ``unpriced``, the count of calls the money leaves out.

    A group whose calls are all unpriced reads "unknown", never $0: its money
    sums nothing.
    """
    row = [
        name,
        str(t.requests),
        usd(t.cost_usd),
        usd(t.baseline_cost_usd),
        usd(t.total_savings_usd),
        _pct(t.savings_fraction),
    ]
    return [*row, str(t.unpriced_calls)] if unpriced else row


def format_summary(ledger: CostLedger) -> str:
    total = ledger.totals()
    unpriced = bool(total.unpriced_calls)
    head = ["", *_HEAD, *([_UNPRICED] if unpriced else [])]
    parts = [
        format_table(head, [_row("all calls", total, unpriced)], "Cost vs all-frontier baseline")
    ]
    if unpriced:
        n = total.unpriced_calls
        parts.append(
            f"({n} call{'s' if n != 1 else ''} on unpriced models {'are' if n != 1 else 'is'} "
            "not in the money: add their prices with PriceCatalog.with_overrides)"
        )
    levers = ledger.savings_by_lever()
    saved = total.total_savings_usd
    # Nothing priced: no lever's saving is known either (not $0).
    lever_rows = [
        [
            lever,
            usd(levers[lever] if saved is not None else None),
            _pct(float(levers[lever] / saved) if saved else None),
        ]
        for lever in LEVERS
    ]
    parts.append(format_table(["lever", "saved", "share"], lever_rows, "Savings by lever"))
    dist = ledger.tier_distribution()
    tier_rows = [
        [*_row(str(k) if k is not None else "(no tier)", t, unpriced), _pct(dist.get(k))]
        for k, t in sorted(ledger.totals_by("tier").items(), key=lambda kv: str(kv[0]))
    ]
    parts.append(format_table([*head, "share"], tier_rows, "By tier"))
    hit = total.cache_hit_rate
    parts.append(
        f"cache hit rate {_pct(hit)} ({total.cache_hits_exact} exact, "
        f"{total.cache_hits_semantic} semantic); escalations {total.escalations}"
        + (
            f"; input tokens kept out by compression/memory {total.removed_input_tokens:,}"
            if total.removed_input_tokens
            else ""
        )
    )
    return "\n\n".join(parts)


def format_breakdown(ledger: CostLedger, dimension: Dimension) -> str:
    """One row per value of ``dimension`` (model, tier, tenant, ...), dearest first.

    Groups of unpriced calls only come last, their money "unknown"; when any
    call is unpriced an ``unpriced`` column counts them per group.
    """
    by = ledger.totals_by(dimension)
    unpriced = any(t.unpriced_calls for t in by.values())
    head = [dimension, *_HEAD, *([_UNPRICED] if unpriced else [])]
    groups = sorted(
        by.items(),
        key=lambda kv: (kv[1].cost_usd is None, -(kv[1].cost_usd or 0), str(kv[0])),
    )
    rows = [_row(str(k) if k is not None else f"(no {dimension})", t, unpriced) for k, t in groups]
    return format_table(head, rows, f"By {dimension}")
