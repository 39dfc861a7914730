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


def _row(name: str, t: Totals) -> list[str]:
    return [
        name,
        str(t.requests),
        usd(t.cost_usd),
        usd(t.baseline_cost_usd),
        usd(t.total_savings_usd),
        _pct(t.savings_fraction),
    ]


def format_summary(ledger: CostLedger) -> str:
    total = ledger.totals()
    head = ["", "requests", "actual", "baseline", "saved", "saved %"]
    parts = [format_table(head, [_row("all calls", total)], "Cost vs all-frontier baseline")]
    if total.unpriced_calls:
        parts.append(f"({total.unpriced_calls} calls on unpriced models are not in the money)")
    levers = ledger.savings_by_lever()
    saved = total.total_savings_usd
    lever_rows = [
        [lever, usd(levers[lever]), _pct(float(levers[lever] / saved) if saved else None)]
        for lever in LEVERS
    ]
    parts.append(format_table(["lever", "saved", "share"], lever_rows, "Savings by lever"))
    dist = ledger.tier_distribution()
    tier_rows = [
        [*_row(str(k) if k is not None else "(no tier)", t), _pct(dist.get(k))]
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
    """One row per value of ``dimension`` (model, tier, tenant, ...), dearest first."""
    head = [dimension, "requests", "actual", "baseline", "saved", "saved %"]
    groups = sorted(
        ledger.totals_by(dimension).items(),
        key=lambda kv: (-kv[1].cost_usd, str(kv[0])),
    )
    rows = [_row(str(k) if k is not None else f"(no {dimension})", t) for k, t in groups]
    return format_table(head, rows, f"By {dimension}")
