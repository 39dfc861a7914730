"""Plain-text tables of a ledger: what the terminal, logs and notebooks print."""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from costopt_core.types import LEVERS

if TYPE_CHECKING:
    from costopt_core.ledger import CostLedger, Dimension, Totals
    from costopt_core.types import CallRecord

__all__ = ["REMOVED_ROW", "format_breakdown", "format_summary", "format_table", "usd"]


def usd(amount: Decimal | None) -> str:
    """Money for humans: cents for large sums, more digits for tiny per-call costs."""
    if amount is None:
        return "unknown"
    size = abs(amount)
    if size >= 100:
        text = f"{size:,.2f}"
    elif size >= 1:
        text = f"{size:,.4f}"
    else:
        text = f"{size:.6f}"
    # The sign before the "$" (-$0.50), and none on an amount shown as zero.
    sign = "-" if amount < 0 and text.strip("0.,") else ""
    return f"{sign}${text}"


def _pct(x: float | None) -> str:
    if x is None:
        return "-"
    text = f"{x * 100:.1f}%"
    return text[1:] if text == "-0.0%" else text


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


#: The row of the records of input tokens compression and memory kept out of
#: calls (outcome ``removed``) in tables by a dimension that describes a call.
REMOVED_ROW = "(context kept out)"
#: Dimensions a removal record has no true value for: its model is a label (the
#: baseline model when the lever named none), it has no tier, and it is no call
#: of any mode. Grouped by these, it would credit the baseline model's row, the
#: "(no tier)" row or the "sync" row with savings of calls others answered.
_CALL_DIMENSIONS = frozenset({"model", "tier", "mode"})


def _grouped(
    ledger: CostLedger, dimension: Dimension
) -> tuple[dict[str | None, Totals], Totals | None]:
    """Totals by ``dimension``, and the removal records' apart when they have no value in it.

    Returns:
        The groups (removal records left out for a dimension in
        ``_CALL_DIMENSIONS``), and the removal records' totals for their own
        row (``None`` when there are none or they are in the groups). The rows
        still add up to the ledger's totals.
    """
    if dimension not in _CALL_DIMENSIONS:
        return ledger.totals_by(dimension), None
    removed = ledger.totals_by("outcome").get("removed")
    return ledger.totals_by(dimension, removals=removed is None), removed


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
        parts.append(_unpriced_note(ledger, total.unpriced_calls))
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
    by_tier, removed = _grouped(ledger, "tier")
    tier_rows = [
        [*_row(str(k) if k is not None else "(no tier)", t, unpriced), _pct(dist.get(k))]
        for k, t in sorted(by_tier.items(), key=lambda kv: str(kv[0]))
    ]
    if removed is not None:
        # No request, so no share of the requests.
        tier_rows.append([*_row(REMOVED_ROW, removed, unpriced), "-"])
    parts.append(format_table([*head, "share"], tier_rows, "By tier"))
    hit = total.cache_hit_rate
    parts.append(
        f"cache hit rate {_pct(hit)} ({total.cache_hits_exact} exact, "
        f"{total.cache_hits_semantic} semantic); escalations {total.escalations}"
        + (
            f"; levers' own model calls (summarizers, cache verifiers) {total.overheads}"
            if total.overheads
            else ""
        )
        + (
            f"; input tokens kept out by compression/memory {total.removed_input_tokens:,}"
            if total.removed_input_tokens
            else ""
        )
    )
    return "\n\n".join(parts)


# Why a call's cost is unknown -> (what the calls are, singular and plural; the fix).
_REASONS: dict[str, tuple[str, str, str]] = {
    "no price": (
        "call on unpriced models",
        "calls on unpriced models",
        "add their prices with PriceCatalog.with_overrides",
    ),
    "no usage": (
        "call whose provider reported no token usage",
        "calls whose provider reported no token usage",
        "have the provider return usage (e.g. stream_usage=True for streamed OpenAI calls)",
    ),
    "no batch price": (
        "batch call on a model with no batch price",
        "batch calls on models with no batch price",
        "add usd_per_mtok_batch_input and usd_per_mtok_batch_output with "
        "PriceCatalog.with_overrides",
    ),
}
_MAX_NAMED = 3  # models named per reason


def _unknown_reason(record: CallRecord) -> str:
    """Why ``record`` (cost ``None``) is unpriced, read from the record itself.

    No reason is stored, so old ledgers and exports read the same: unknown
    token counts mean no usage; a batch call with known counts and a lever
    saving was priced at sync rates when recorded (an unpriced model saves
    nothing), so its model lacks only a batch price; the rest had no price.
    """
    if not record.usage.is_known:
        return "no usage"
    if record.mode == "batch" and record.savings_usd:
        return "no batch price"
    return "no price"


def _unpriced_note(ledger: CostLedger, n: int) -> str:
    """The calls the money leaves out, by why their cost is unknown, with each fix."""
    models: dict[str, Counter[str]] = {}
    for r in ledger.records():
        if r.cost_usd is None and r.outcome != "removed":
            models.setdefault(_unknown_reason(r), Counter())[r.model] += 1
    parts: list[tuple[int, str, str, str]] = []  # (calls, what they are, models, fix)
    for reason, (one, many, fix) in _REASONS.items():
        by_model = models.get(reason)
        if not by_model:
            continue
        k = sum(by_model.values())
        names = sorted(by_model)
        named = ", ".join(names[:_MAX_NAMED]) + (", ..." if len(names) > _MAX_NAMED else "")
        parts.append((k, f"{k} {one if k == 1 else many}", f" ({named})", fix))
    older = n - sum(p[0] for p in parts)
    if older > 0 or not parts:
        # Records dropped from memory (max_records) left the totals, not their reason.
        what = f"{older} older call{'s' if older != 1 else ''}"
        parts.append((older, what, "", "their records are no longer in memory (max_records)"))
    if len(parts) == 1:
        k, what, named, fix = parts[0]
        return f"({what} {'is' if k == 1 else 'are'} not in the money{named}: {fix})"
    listed = "; ".join(f"{what}{named}: {fix}" for _, what, named, fix in parts)
    return f"({n} calls are not in the money: {listed})"


def format_breakdown(ledger: CostLedger, dimension: Dimension) -> str:
    """One row per value of ``dimension`` (model, tier, tenant, ...), dearest first.

    Groups of unpriced calls only come last, their money "unknown"; when any
    call is unpriced an ``unpriced`` column counts them per group. By model,
    tier or mode, the input tokens compression and memory kept out of calls
    are a last row of their own (:data:`REMOVED_ROW`), not folded into the
    baseline model's, "(no tier)" or "sync" row.
    """
    by, removed = _grouped(ledger, dimension)
    unpriced = any(t.unpriced_calls for t in by.values())
    head = [dimension, *_HEAD, *([_UNPRICED] if unpriced else [])]
    groups = sorted(
        by.items(),
        key=lambda kv: (kv[1].cost_usd is None, -(kv[1].cost_usd or 0), str(kv[0])),
    )
    rows = [_row(str(k) if k is not None else f"(no {dimension})", t, unpriced) for k, t in groups]
    if removed is not None:
        rows.append(_row(REMOVED_ROW, removed, unpriced))
    return format_table(head, rows, f"By {dimension}")
