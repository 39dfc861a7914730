"""``CostLedger``: every priced call, its totals by dimension, and budgets.

Thread-safe: adapters record from callback threads, asyncio tasks and worker
pools at once. Recording a call (:meth:`CostLedger.append`, inside every LLM
call) only puts it in an inbox, without the lock; the next read, or every few
thousand calls, takes the inbox under the lock, drops second reports of one
call, and folds the new calls into running sums per combination of dimensions
and into the budget windows. So reading totals costs the (few) combinations,
not the number of calls, and totals stay exact even when a retention bound
drops old records.
"""

from __future__ import annotations

import csv
import functools
import heapq
import io
import itertools
import json
import logging
import math
import threading
import uuid
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from costopt_core.budgets import (
    Budget,
    BudgetDecision,
    BudgetPeriod,
    decisions_on_error,
    estimate_usd_of,
    evaluate_budget,
    period_start,
    unpriced_action,
    unpriced_call_error,
)
from costopt_core.errors import BudgetExceededError, ConfigurationError, StoreError
from costopt_core.jsonl import json_lines
from costopt_core.types import (
    CALLED_OUTCOMES,
    LEVERS,
    CallMode,
    CallOutcome,
    CallRecord,
    Usage,
    money_str,
)

if TYPE_CHECKING:
    from uuid import UUID

    from costopt_core.pricing.cost import PricedCall

__all__ = [
    "MAX_HOLD_TTL_S",
    "CostLedger",
    "Dimension",
    "Totals",
    "check_hold_ttl_s",
    "read_record",
    "utc_now",
]

log = logging.getLogger("costopt.ledger")

Dimension = Literal["model", "tier", "tenant", "framework", "outcome", "mode"]
_DIMENSIONS: tuple[Dimension, ...] = ("model", "tier", "tenant", "framework", "outcome", "mode")
_PERIODS: tuple[BudgetPeriod, ...] = ("day", "week", "month", "total")
_ZERO = Decimal(0)
#: Records kept in memory by default; totals stay exact beyond it.
DEFAULT_MAX_RECORDS = 100_000
#: How many recent call ids are remembered to drop a second report of one call.
_SEEN_IDS = 65_536
#: Fold pending records into the totals at least this often, to bound memory.
_FOLD_EVERY = 4096
#: Take the inbox under the lock at least this often, to bound memory.
_DRAIN_EVERY = 1024
#: The longest lifetime a budget hold may be given (a year). Holds outlive their
#: check by design only for provider batches (about a day); a value past this is
#: a unit mistake (milliseconds for seconds), and one far past it overflows the
#: hold's expiry datetime.
MAX_HOLD_TTL_S = 366 * 86_400.0
#: Expiry heap entries of dropped holds tolerated per live hold before a rebuild.
_STALE_EXPIRIES = 2


def utc_now() -> datetime:
    """The default clock of ledgers and engines: now, in UTC."""
    return datetime.now(UTC)


def check_hold_ttl_s(hold_ttl_s: object) -> float:
    """Validate a budget hold's own lifetime (``hold_ttl_s`` of ``check_budget``).

    Args:
        hold_ttl_s: seconds the hold of one checked call counts, unless its
            call is recorded or released first.

    Returns:
        The lifetime in seconds, as a float.

    Raises:
        ConfigurationError: not a number, not finite, not > 0, or over
            :data:`MAX_HOLD_TTL_S`.
    """
    ok = (
        isinstance(hold_ttl_s, int | float)
        and not isinstance(hold_ttl_s, bool)
        and math.isfinite(hold_ttl_s)
        and 0 < hold_ttl_s <= MAX_HOLD_TTL_S
    )
    if not ok:
        raise ConfigurationError(
            f"hold_ttl_s must be a finite number of seconds > 0 and <= {MAX_HOLD_TTL_S:.0f}"
            f" (a year), got {hold_ttl_s!r}; pass e.g. 90000 for a hold that must outlive a"
            " 24 h provider batch, or None for the ledger's reservation_ttl_s"
        )
    return float(hold_ttl_s)  # type: ignore[arg-type]  # checked above


#: A call recorded by :meth:`CostLedger.append_call`, until its record is built.
_Deferred = tuple[
    "datetime | float",
    "str | UUID",
    str,
    Usage,
    "PricedCall",
    CallMode,
    CallOutcome,
    "str | None",
    "str | None",
    "str | None",
    "float | None",
]


#: date(1970, 1, 1).toordinal(): POSIX seconds // 86400 + this is the UTC day's ordinal.
_EPOCH_ORDINAL = 719_163


def _utc_day(when: datetime | float) -> date:
    """The UTC calendar day of a record's time (a datetime, or POSIX seconds)."""
    if isinstance(when, float):
        # Rounded to the microsecond first, as the record's datetime is: a call
        # half a microsecond before midnight is on the next day in both.
        return date.fromordinal(_EPOCH_ORDINAL + int(round(when, 6) // 86_400))
    return (when if when.tzinfo is UTC else when.astimezone(UTC)).date()


def _call_key(call_id: str | UUID) -> str | int:
    """What a call id is remembered by: a run id by its int (it hashes in C, a UUID in Python).

    A run id given as its string (a record's ``call_id``) is the same call.
    """
    if not isinstance(call_id, str):
        return call_id.int
    if len(call_id) == 36 and call_id[8] == "-":
        try:
            return uuid.UUID(call_id).int
        except ValueError:
            pass
    return call_id


def _build(call: _Deferred) -> CallRecord:
    when, call_id, model, usage, priced, mode, outcome, tier, tenant, framework, latency = call
    return CallRecord(
        str(call_id),
        datetime.fromtimestamp(when, UTC) if isinstance(when, float) else when,
        model,
        usage,
        priced.cost_usd,
        priced.baseline_cost_usd,
        priced.savings_usd,
        mode,
        outcome,
        tier,
        tenant,
        framework,
        latency,
    )


_TOKEN_KINDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
)


@dataclass(slots=True)
class Totals:
    """Sums over a set of calls. Money only over calls whose cost is known.

    ``cost_usd`` and ``baseline_cost_usd`` are ``None`` (unknown, never $0)
    when there are calls and none of them could be priced; with some priced,
    they sum those, and ``unpriced_calls`` says how many are left out. No
    calls at all cost $0.
    """

    calls: int = 0
    unpriced_calls: int = 0
    cost_usd: Decimal | None = _ZERO
    baseline_cost_usd: Decimal | None = _ZERO
    savings_usd: dict[str, Decimal] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_TOKEN_KINDS, 0))
    cache_hits_exact: int = 0
    cache_hits_semantic: int = 0
    escalations: int = 0
    #: Model calls a lever made itself (a summarizer's; ``overhead`` outcome).
    overheads: int = 0
    #: Records of input tokens kept out of calls (``removed`` outcome), and those tokens.
    removals: int = 0
    removed_input_tokens: int = 0

    @property
    def requests(self) -> int:
        """User requests answered: escalated attempts are part of another request,
        a summarizer's own call is the work of a lever, and a removal record is
        no request at all."""
        return self.calls - self.escalations - self.overheads - self.removals

    @property
    def priced_calls(self) -> int:
        """Calls whose cost is known: the ones the money covers."""
        return self.calls - self.unpriced_calls

    @property
    def total_savings_usd(self) -> Decimal | None:
        """Baseline minus actual over the priced calls; None when none is priced."""
        if self.cost_usd is None or self.baseline_cost_usd is None:
            return None
        return self.baseline_cost_usd - self.cost_usd

    @property
    def savings_fraction(self) -> float | None:
        saved = self.total_savings_usd
        if saved is None or not self.baseline_cost_usd:
            return None
        return float(saved / self.baseline_cost_usd)

    @property
    def cache_hit_rate(self) -> float | None:
        if not self.requests:
            return None
        return (self.cache_hits_exact + self.cache_hits_semantic) / self.requests

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "requests": self.requests,
            "unpriced_calls": self.unpriced_calls,
            "cost_usd": money_str(self.cost_usd),
            "baseline_cost_usd": money_str(self.baseline_cost_usd),
            "savings_usd": money_str(self.total_savings_usd),
            "savings_fraction": self.savings_fraction,
            "savings_by_lever_usd": {
                k: format(v, "f") for k, v in sorted(self.savings_usd.items())
            },
            "tokens": dict(self.tokens),
            "cache_hits_exact": self.cache_hits_exact,
            "cache_hits_semantic": self.cache_hits_semantic,
            "cache_hit_rate": self.cache_hit_rate,
            "escalations": self.escalations,
            "overheads": self.overheads,
            "removed_input_tokens": self.removed_input_tokens,
        }


class _Bucket:
    """Running sums of the calls of one combination of dimensions.

    Every call in a bucket shares its model, tier, tenant, framework, outcome
    and mode, so per-outcome counts and whether tokens count are the bucket's,
    not the call's: folding a call is a handful of additions.
    """

    __slots__ = (
        "baseline",
        "cache_read",
        "cache_w1h",
        "cache_w5m",
        "calls",
        "cost",
        "counts_tokens",
        "input",
        "outcome",
        "output",
        "reasoning",
        "removed",
        "savings",
        "unpriced",
    )

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.counts_tokens = outcome in CALLED_OUTCOMES  # cache hits billed none
        self.calls = 0
        self.unpriced = 0
        self.cost = _ZERO
        self.baseline = _ZERO
        self.savings: dict[str, Decimal] = {}
        self.input = self.output = self.cache_read = 0
        self.cache_w5m = self.cache_w1h = self.reasoning = self.removed = 0

    def add_to(self, t: Totals) -> None:
        """Add this bucket's sums into ``t``."""
        priced_before = t.priced_calls
        t.calls += self.calls
        t.unpriced_calls += self.unpriced
        if self.calls > self.unpriced:
            # None so far means "only unpriced calls yet": this bucket's money is all there is.
            t.cost_usd = (t.cost_usd or _ZERO) + self.cost
            t.baseline_cost_usd = (t.baseline_cost_usd or _ZERO) + self.baseline
        elif self.calls and not priced_before:
            # Calls, and none of them priced: the cost is unknown, not $0.
            t.cost_usd = t.baseline_cost_usd = None
        savings = t.savings_usd
        for lever, amount in self.savings.items():
            savings[lever] = savings.get(lever, _ZERO) + amount
        tokens = t.tokens
        tokens["input_tokens"] += self.input
        tokens["output_tokens"] += self.output
        tokens["cache_read_tokens"] += self.cache_read
        tokens["cache_write_5m_tokens"] += self.cache_w5m
        tokens["cache_write_1h_tokens"] += self.cache_w1h
        tokens["reasoning_tokens"] += self.reasoning
        if self.outcome == "cache_exact":
            t.cache_hits_exact += self.calls
        elif self.outcome == "cache_semantic":
            t.cache_hits_semantic += self.calls
        elif self.outcome == "escalated":
            t.escalations += self.calls
        elif self.outcome == "overhead":
            t.overheads += self.calls
        elif self.outcome == "removed":
            t.removals += self.calls
            t.removed_input_tokens += self.removed


class CostLedger:
    """A thread-safe record of every call, with totals, budgets and export.

    Args:
        budgets: spend limits to enforce (see :class:`Budget`).
        max_records: keep at most this many records in memory (oldest dropped
            first); totals and budgets stay exact, but :meth:`records` and the
            exports (:meth:`to_records`, :meth:`to_jsonl`, :meth:`to_csv`) hold
            only the latest ``max_records`` calls (the exports warn when calls
            are missing). ``None`` keeps all. To keep every record of a
            long-running app without holding them in memory, :meth:`subscribe`
            a listener that writes each record out (e.g. as a JSONL line) as it
            is recorded.
        clock: returns "now" as an aware datetime; injectable for tests.
        parent: an enclosing ledger (see :meth:`CostEngine.child
            <costopt_core.engine.CostEngine.child>`): every call recorded here
            is recorded there too (under the same call id, so a handler that
            also records it there counts it once), and the parent's budgets
            are checked along with this ledger's own, so the calls of a
            ``track_costs`` block cannot get around the outer engine's budgets.
        reservation_ttl_s: a budget hold (see :meth:`check_budget`) whose call
            was neither recorded nor released is dropped after this long, as
            :class:`~costopt_core.redis_ledger.RedisLedger` drops its own;
            ``check_budget(hold_ttl_s=...)`` gives one hold a lifetime of its own.
    """

    def __init__(
        self,
        *,
        budgets: Iterable[Budget] = (),
        max_records: int | None = DEFAULT_MAX_RECORDS,
        clock: Callable[[], datetime] | None = None,
        parent: CostLedger | None = None,
        reservation_ttl_s: float = 600.0,
    ) -> None:
        if max_records is not None and max_records < 1:
            raise ConfigurationError(f"max_records must be >= 1 or None, got {max_records}")
        if not reservation_ttl_s > 0:
            raise ConfigurationError(f"reservation_ttl_s must be > 0, got {reservation_ttl_s!r}")
        self._lock = threading.Lock()
        # Records, or calls recorded by append_call whose records records() builds.
        self._records: deque[CallRecord | _Deferred] = deque(maxlen=max_records)
        # How many of the newest held items may still be calls, not records.
        self._unbuilt = 0
        # One bucket per combination of dimensions (in _DIMENSIONS order): one
        # bucket update per call, and any dimension's totals are a sum over the
        # (few) combinations.
        self._combos: dict[tuple[str | None, ...], _Bucket] = {}
        self._folded = 0
        self._seen_ids: OrderedDict[str | int, None] = OrderedDict()
        self._pending: list[CallRecord | _Deferred] = []
        # Records appended without the lock (deque appends are thread-safe),
        # taken in order by _drain under the lock.
        self._inbox: deque[CallRecord | _Deferred] = deque()
        # Records _drain took for listeners, not yet handed to them.
        self._unnotified: list[CallRecord] = []
        # (tenant or None for global, period) -> (window start, spend in window)
        self._spend: dict[tuple[str | None, BudgetPeriod], tuple[datetime, Decimal]] = {}
        self._budgets: list[Budget] = list(budgets)
        # Budget holds of calls checked but not yet recorded (this process's budgets
        # only; a shared store keeps its own): call key -> (tenant, estimate, expiry).
        # Without them, concurrent calls each see the spend before any of them and
        # all pass a block budget.
        self._holds: dict[str | int, tuple[str | None, Decimal, datetime]] = {}
        # The holds' expiries, soonest first: (expiry, tie-breaker, call key). Holds
        # may have lifetimes of their own (hold_ttl_s), so insertion order is not
        # expiry order. A dropped hold's entry stays until it comes up (skipped
        # then) or the heap is rebuilt from the live holds.
        self._expiries: list[tuple[datetime, int, str | int]] = []
        self._expiry_seq = itertools.count()
        # Sums of the holds, so a check reads them in O(1): all, and per tenant.
        self._held_all = _ZERO
        self._held_by_tenant: dict[str | None, Decimal] = {}
        self._hold_ttl = timedelta(seconds=reservation_ttl_s)
        # Replaced (never mutated) on subscribe, so add() reads it without a copy.
        self._listeners: tuple[Callable[[CallRecord], None], ...] = ()
        self._store: Any = None
        # Totals were read from a shared store (load_shared): they count calls whose
        # records were never read, whatever max_records is.
        self._read_shared = False
        self.clock: Callable[[], datetime] = clock or utc_now
        #: The enclosing ledger this one also records into (and answers budgets to).
        self.parent = parent

    # -- recording ----------------------------------------------------------
    def add(self, record: CallRecord) -> bool:
        """Record one call; False (and nothing recorded) if its ``call_id`` was seen.

        Two handlers on one engine see the same LLM run (same run id), so the
        call is still counted once. Safe from any thread.
        """
        return self._add(record, _call_key(record.call_id))

    def _add(self, record: CallRecord, key: str | int) -> bool:
        with self._lock:
            self._drain()
            added = self._take(record, key)
            notes, self._unnotified = self._unnotified, []
            listeners = self._listeners
        if added:
            notes.append(record)
        self._notify(listeners, notes)
        if added and self.parent is not None:
            self.parent._add(record, key)
        return added

    def append(self, record: CallRecord) -> None:
        """Record one call, as :meth:`add`, without waiting for the lock.

        The hot path of every LLM call: the record waits in an inbox until the
        next read (or the next thousand calls), where a second report of its
        ``call_id`` is dropped as :meth:`add` drops it. With a listener
        subscribed it is :meth:`add`, so sinks see each call as it is made.
        """
        if self._listeners:
            self.add(record)  # forwards to the parent itself
            return
        self._enqueue(record)
        if self.parent is not None:
            self.parent.append(record)

    def append_call(
        self,
        when: datetime | float,
        call_id: str | UUID,
        model: str,
        usage: Usage,
        priced: PricedCall,
        mode: CallMode = "sync",
        outcome: CallOutcome = "model",
        tier: str | None = None,
        tenant: str | None = None,
        framework: str | None = None,
        latency_ms: float | None = None,
    ) -> None:
        """Record a priced call as :meth:`append` does, building its record later.

        For the framework handlers, which record every LLM call as it ends: the
        :class:`CallRecord` (with its ``str`` call id and its ``datetime``) is
        built by the next read, for many calls in one loop. ``when`` is the
        call's time: a datetime, or POSIX seconds (``time.time()``) when the
        clock is :func:`utc_now`. With a listener subscribed the record is
        built and added at once.
        """
        call: _Deferred = (
            when, call_id, model, usage, priced, mode, outcome, tier, tenant, framework, latency_ms
        )  # fmt: skip
        if self._listeners:
            self._add(_build(call), _call_key(call_id))  # forwards to the parent itself
            return
        self._enqueue(call)
        if self.parent is not None:
            self.parent.append_call(*call)  # immutable: the parent builds its own record

    def _enqueue(self, item: CallRecord | _Deferred) -> None:
        inbox = self._inbox
        inbox.append(item)
        # A listener subscribed since the caller looked: the call is delivered now.
        if self._listeners or len(inbox) >= _DRAIN_EVERY:
            with self._lock:
                self._drain()
                notes, self._unnotified = self._unnotified, []
                listeners = self._listeners
            self._notify(listeners, notes)

    def _notify(
        self, listeners: tuple[Callable[[CallRecord], None], ...], records: list[CallRecord]
    ) -> None:
        """Hand ``records`` to every listener, outside the lock (a listener may read the ledger)."""
        for record in records:
            for listener in listeners:
                try:
                    listener(record)
                except Exception:  # a sink must never fail the user's call
                    log.exception("ledger listener %r failed", listener)

    def _take(self, record: CallRecord | _Deferred, key: str | int) -> bool:
        """Hold ``record`` unless the call ``key`` was seen. Caller holds the lock."""
        if self._holds:
            # The call is recorded: its spend replaces its hold (in the same lock
            # as the fold that adds the spend, so a check never sees neither).
            self._drop_hold(key)
        seen = self._seen_ids
        if key in seen:
            return False
        seen[key] = None
        if len(seen) > _SEEN_IDS:
            seen.popitem(last=False)
        self._records.append(record)
        self._unbuilt += 1
        # Aggregation is deferred to the next read (see _fold).
        pending = self._pending
        pending.append(record)
        if len(pending) >= _FOLD_EVERY:
            self._fold_pending()
        return True

    def _drain(self) -> None:
        """Take the records appended without the lock, oldest first. Caller holds the lock."""
        inbox = self._inbox
        if not inbox:
            return
        take = self._take
        pop = inbox.popleft
        # A call enqueued while a listener was being subscribed: its record is
        # built now and handed over by the next _add or _enqueue (never lost).
        listening = bool(self._listeners)
        # Appends may go on meanwhile: take what is there now, the rest next time.
        for _ in range(len(inbox)):
            item = pop()
            if isinstance(item, CallRecord):
                key = _call_key(item.call_id)
            else:
                key = _call_key(item[1])
                if listening:
                    item = _build(item)
            if take(item, key) and listening:
                self._unnotified.append(item)  # type: ignore[arg-type]  # built above

    def _build_records(self) -> None:
        """Build the records of the calls held since the last build. Caller holds the lock."""
        records = self._records
        # They are the newest ones: the right end of the deque.
        n = min(self._unbuilt, len(records))
        tail = [records.pop() for _ in range(n)]
        tail.reverse()
        records.extend(r if isinstance(r, CallRecord) else _build(r) for r in tail)
        self._unbuilt = 0

    def _fold(self) -> None:
        """Bring the totals and budget windows up to date. Caller holds the lock."""
        self._drain()
        self._fold_pending()

    def _fold_pending(self) -> None:
        """Fold pending records into the totals and budget windows. Caller holds the lock."""
        pending, self._pending = self._pending, []
        self._folded += len(pending)
        combos = self._combos
        # Spend per (tenant, UTC day) of this batch: the budget windows are
        # updated once per day, not once per call and period.
        day_spend: dict[tuple[str | None, date], Decimal] = {}
        when: datetime | float
        for r in pending:
            if isinstance(r, CallRecord):
                model, tier, tenant, framework = r.model, r.tier, r.tenant, r.framework
                outcome, mode, usage, when = r.outcome, r.mode, r.usage, r.timestamp
                cost, baseline, savings_usd = r.cost_usd, r.baseline_cost_usd, r.savings_usd
            else:
                when, _, model, usage, priced, mode, outcome, tier, tenant, framework, _ = r
                cost, baseline = priced.cost_usd, priced.baseline_cost_usd
                savings_usd = priced.savings_usd
            combo = (model, tier, tenant, framework, outcome, mode)
            b = combos.get(combo)
            if b is None:
                b = combos[combo] = _Bucket(outcome)
            b.calls += 1
            if cost is None:
                b.unpriced += 1
            else:
                b.cost += cost
                if baseline is not None:
                    b.baseline += baseline
                    savings = b.savings
                    for lever, amount in savings_usd.items():
                        if amount:  # a $0 entry names a lever, saves nothing (as in Redis)
                            savings[lever] = savings.get(lever, _ZERO) + amount
                if cost:
                    key = (tenant, _utc_day(when))
                    prev = day_spend.get(key)
                    day_spend[key] = cost if prev is None else prev + cost
            if b.counts_tokens:
                b.input += usage.input_tokens or 0
                b.output += usage.output_tokens or 0
                b.cache_read += usage.cache_read_tokens or 0
                b.cache_w5m += usage.cache_write_5m_tokens or 0
                b.cache_w1h += usage.cache_write_1h_tokens or 0
                b.reasoning += usage.reasoning_tokens or 0
            elif outcome == "removed":
                b.removed += usage.input_tokens or 0
        for (tenant, day), cost in day_spend.items():
            self._add_spend(tenant, day, cost)

    def _add_spend(self, tenant: str | None, day: date, cost: Decimal) -> None:
        """Add spend of ``tenant`` on a UTC ``day`` to its windows and the global ones."""
        spend = self._spend
        starts = _starts_of_day(day)
        for who in (None, tenant) if tenant is not None else (None,):
            for period, start in starts:
                # A window only ever moves forward; spend of an earlier window
                # than the current one no longer counts.
                prev = spend.get((who, period))
                if prev is None or prev[0] < start:
                    spend[(who, period)] = (start, cost)
                elif prev[0] == start:
                    spend[(who, period)] = (start, prev[1] + cost)

    def subscribe(self, listener: Callable[[CallRecord], None]) -> None:
        """Call ``listener(record)`` after every recorded call (sinks, exporters)."""
        with self._lock:
            self._drain()  # calls recorded before: not this listener's
            self._listeners = (*self._listeners, listener)

    def extend(self, records: Iterable[CallRecord]) -> None:
        for r in records:
            self.add(r)

    # -- reading ------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            self._drain()
            return self._folded + len(self._pending)

    def records(self) -> list[CallRecord]:
        """The records held in memory, oldest first: at most ``max_records`` (the
        latest), fewer than the calls the totals count once older ones are dropped."""
        return self._held_records()[0]

    def _held_records(self) -> tuple[list[CallRecord], int]:
        """The records held in memory, and how many calls the totals count (one read)."""
        with self._lock:
            self._drain()
            self._build_records()
            counted = self._folded + len(self._pending)
            return list(self._records), counted  # type: ignore[arg-type]  # all built above

    def _export(self, method: str) -> list[dict[str, Any]]:
        """The held records as dicts for ``method``; warns when calls are missing.

        An export is what ``costopt report`` and other tools read: silently
        leaving out the calls past ``max_records`` would understate the spend.
        """
        records, counted = self._held_records()
        missing = counted - len(records)
        if missing > 0:
            if self._read_shared:
                why = "CostLedger.from_redis reads the totals of every call but only the "
                why += "latest `records` records"
                fix = "pass a larger records= to from_redis"
            else:
                why = f"max_records={self._records.maxlen} keeps only the latest ones"
                fix = (
                    "create the ledger with max_records=None (or a larger bound), or "
                    "subscribe a listener (ledger.subscribe) that writes each record out "
                    "as it is recorded"
                )
            warnings.warn(
                f"CostLedger.{method} exports {len(records)} of the {counted} calls this "
                f"ledger counted: the records of {missing} older calls are not held in "
                f"memory ({why}), so figures built from this export understate the "
                f"ledger's totals, which stay exact. To export every call, {fix}.",
                UserWarning,
                stacklevel=3,
            )
        return [r.to_dict() for r in records]

    def totals(self) -> Totals:
        total = Totals()
        with self._lock:
            self._fold()
            for b in self._combos.values():
                b.add_to(total)
        return total

    def totals_by(self, dimension: Dimension, *, removals: bool = True) -> dict[str | None, Totals]:
        """Totals per model / tier / tenant / framework / outcome / mode.

        Args:
            dimension: what to group by.
            removals: include the records of input tokens compression or memory
                kept out of calls (outcome ``removed``). Such a record's model
                is only a label (the baseline model when none was named) and it
                has no tier, so grouped by model or tier it would credit one
                row with savings of calls other models and tiers answered.
                ``False`` leaves them out; ``totals_by("outcome")["removed"]``
                holds them, so a table can show them in a row of their own.
        """
        if dimension not in _DIMENSIONS:
            raise ConfigurationError(
                f"unknown dimension {dimension!r}; use one of {list(_DIMENSIONS)}"
            )
        index = _DIMENSIONS.index(dimension)
        out: dict[str | None, Totals] = {}
        with self._lock:
            self._fold()
            for combo, b in self._combos.items():
                if not removals and combo[4] == "removed":  # combo[4]: the outcome
                    continue
                key = combo[index]
                t = out.get(key)
                if t is None:
                    t = out[key] = Totals()
                b.add_to(t)
        return out

    def savings_by_lever(self) -> dict[str, Decimal]:
        """Savings per lever, every lever listed (zero where it saved nothing)."""
        t = self.totals()
        return {lever: t.savings_usd.get(lever, _ZERO) for lever in LEVERS}

    def tier_distribution(self) -> dict[str | None, float]:
        """Share of answered requests served by each tier (cache hits included)."""
        by_tier = self.totals_by("tier")
        n = sum(t.requests for t in by_tier.values())
        return {k: v.requests / n for k, v in by_tier.items()} if n else {}

    # -- budgets ------------------------------------------------------------
    def add_budget(self, budget: Budget) -> None:
        with self._lock:
            self._budgets.append(budget)

    @property
    def budgets(self) -> list[Budget]:
        """This ledger's own budgets (a parent's are checked by the parent)."""
        with self._lock:
            return list(self._budgets)

    @property
    def has_budgets(self) -> bool:
        """True when any budget is set, here or on a parent: cheap enough for every call."""
        # One atomic read; budgets are only ever added.
        return bool(self._budgets) or (self.parent is not None and self.parent.has_budgets)

    @property
    def budget_store(self) -> Any:
        """Where budgets are checked and spend is read across replicas.

        A :class:`~costopt_core.redis_ledger.RedisLedger`, or None for this
        process. A child ledger without its own store reports its parent's:
        that is where its calls' budget holds are made (and must be released).
        """
        if self._store is None and self.parent is not None:
            return self.parent.budget_store
        return self._store

    @budget_store.setter
    def budget_store(self, store: Any) -> None:
        self._store = store

    def spent(self, tenant: str | None = None, period: BudgetPeriod = "month") -> Decimal:
        """Known spend of ``tenant`` (``None``: everyone) in the current ``period``.

        With a shared store (:class:`~costopt_core.redis_ledger.RedisLedger`),
        the spend of every replica; this replica's own when the store fails.
        """
        now = self.clock()
        store = self._store  # this ledger's spend: never a parent's store
        if store is not None:
            try:
                shared: Decimal = store.spent(tenant, period, now)
                return shared
            except Exception as exc:
                log.warning("shared budget store failed (%s); using this replica's spend", exc)
        return self._local_spent(tenant, period, now)

    def _local_spent(self, tenant: str | None, period: BudgetPeriod, now: datetime) -> Decimal:
        with self._lock:
            self._fold()
            return self._window_spent(tenant, period, now)

    def _window_spent(self, tenant: str | None, period: BudgetPeriod, now: datetime) -> Decimal:
        """Spend in the current ``period`` window. Caller holds the lock, after a fold."""
        window = self._spend.get((tenant, period))
        return window[1] if window is not None and window[0] == period_start(period, now) else _ZERO

    def check_budget(
        self,
        tenant: str | None = None,
        estimate_usd: Decimal | float | None = None,
        *,
        call_id: str | None = None,
        hold_ttl_s: float | None = None,
    ) -> list[BudgetDecision]:
        """Evaluate every budget that covers ``tenant`` for the next call.

        The check and the hold of ``estimate_usd`` are one atomic step: under
        this ledger's lock, or with a shared store across replicas. A budget
        counts the spend so far plus the holds of calls in flight, so
        concurrent calls cannot all pass a ``block`` budget on the same spend.
        The hold is released when the call with ``call_id`` is recorded (its
        actual cost replaces it), or by :meth:`release_budget` (a caller whose
        call fails must call it, else the hold counts until it expires after
        ``hold_ttl_s``). A call checked again under the same
        ``call_id`` keeps its first hold (and its lifetime) and is not counted
        twice; without a ``call_id`` nothing is held. If the store fails, each
        budget's ``on_store_error`` decides: ``open`` uses this replica's spend
        and holds, ``closed`` refuses the call. A parent ledger's budgets are
        checked too (after this ledger's own), and their decisions follow these.

        Args:
            tenant: whose call it is (``None``: no tenant; global budgets only).
            estimate_usd: the call's estimated cost, held until it is recorded.
            call_id: the id the call will be recorded under (its hold's key).
            hold_ttl_s: seconds the hold counts at most (> 0, finite, at most
                :data:`MAX_HOLD_TTL_S`); ``None`` uses ``reservation_ttl_s``
                (of this ledger, its store, and each parent for its own).
                A call that runs longer than that, such as a provider batch
                (up to 24 h), passes its own so its spend keeps counting.

        Raises:
            BudgetExceededError: a ``block`` (or exhausted ``downshift``) budget
                would be exceeded, here or on a parent, or a fail-closed
                budget's store is down.
            ConfigurationError: a ``hold_ttl_s`` that is not a number > 0,
                finite and at most :data:`MAX_HOLD_TTL_S`; an ``estimate_usd``
                that is not a number, or is NaN, infinite or negative (an
                ``int`` or ``float`` is converted to ``Decimal``).
        """
        # Converted at the API boundary: a float (0.05) would fail in Decimal sums.
        estimate_usd = estimate_usd_of(estimate_usd)
        if hold_ttl_s is not None:
            hold_ttl_s = check_hold_ttl_s(hold_ttl_s)
        decisions = self._check_own_budgets(tenant, estimate_usd, call_id, hold_ttl_s)
        if self.parent is None:
            return decisions
        try:
            return decisions + self.parent.check_budget(
                tenant, estimate_usd, call_id=call_id, hold_ttl_s=hold_ttl_s
            )
        except BudgetExceededError:
            if call_id is not None and decisions:
                self._release_own(tenant, call_id)  # the call will not be made
            raise

    def _check_own_budgets(
        self,
        tenant: str | None,
        estimate_usd: Decimal | None,
        call_id: str | None,
        hold_ttl_s: float | None,
    ) -> list[BudgetDecision]:
        estimate = estimate_usd or _ZERO
        budgets = [b for b in self.budgets if b.tenant is None or b.tenant == tenant]
        if not budgets:
            return []
        now = self.clock()
        ttl = self._hold_ttl if hold_ttl_s is None else timedelta(seconds=hold_ttl_s)
        store = self._store
        decisions: list[BudgetDecision]
        if store is not None:
            # The keyword only when given: a store written before it existed still
            # serves every check that does not ask for a lifetime of its own.
            extra = {} if hold_ttl_s is None else {"hold_ttl_s": hold_ttl_s}
            try:
                decisions = store.reserve(budgets, tenant, estimate, call_id, now, **extra)
            except Exception as exc:
                log.warning("shared budget store failed (%s); budgets fail open or closed", exc)
                # A fail-closed budget refuses the call below: hold nothing for it.
                hold = all(b.on_store_error == "open" for b in budgets)
                local = self._reserve_locally(
                    budgets, tenant, estimate, call_id, now, ttl, hold=hold
                )
                by_budget = dict(zip(budgets, local, strict=True))
                decisions = decisions_on_error(budgets, tenant, by_budget)
        else:
            decisions = self._reserve_locally(
                budgets, tenant, estimate, call_id, now, ttl, hold=True
            )
        for decision in decisions:
            budget = decision.budget
            if decision.action == "block":
                raise BudgetExceededError(
                    scope=budget.scope,
                    limit_usd=budget.limit_usd,
                    spent_usd=decision.spent_usd,
                    estimate_usd=estimate,
                    period=budget.period,
                )
            if decision.action == "warn":
                log.warning(
                    "budget for %s exceeded: $%s of $%s this %s",
                    budget.scope,
                    decision.spent_usd + estimate,
                    budget.limit_usd,
                    budget.period,
                )
        return decisions

    def _reserve_locally(
        self,
        budgets: Sequence[Budget],
        tenant: str | None,
        estimate: Decimal,
        call_id: str | None,
        now: datetime,
        ttl: timedelta,
        *,
        hold: bool,
    ) -> list[BudgetDecision]:
        """Evaluate ``budgets`` on this process's spend and holds; hold ``estimate``
        under ``call_id`` for ``ttl`` unless a budget blocks (one step under the lock).

        Mirrors the shared store's reserve: a call already holding (checked
        again under one call id, by a block's engine and then the app's) is
        not counted twice and keeps its first hold.
        """
        key = _call_key(call_id) if call_id is not None else None
        with self._lock:
            self._fold()
            self._expire_holds(now)
            own = self._holds.get(key) if key is not None else None
            decisions = []
            for b in budgets:
                if b.tenant is None:
                    held = self._held_all
                else:
                    held = self._held_by_tenant.get(b.tenant, _ZERO)
                if own is not None and (b.tenant is None or b.tenant == own[0]):
                    held -= own[1]
                spent = self._window_spent(b.tenant, b.period, now)
                decisions.append(evaluate_budget(b, spent + held, estimate))
            if (
                hold
                and key is not None
                and own is None
                and estimate > 0
                and all(d.action != "block" for d in decisions)
            ):
                expiry = now + ttl
                self._holds[key] = (tenant, estimate, expiry)
                expiries = self._expiries
                heapq.heappush(expiries, (expiry, next(self._expiry_seq), key))
                if len(expiries) > _STALE_EXPIRIES * len(self._holds) + 64:
                    # Mostly entries of holds recorded or released before expiring.
                    self._expiries = [
                        (h[2], next(self._expiry_seq), k) for k, h in self._holds.items()
                    ]
                    heapq.heapify(self._expiries)
                self._held_all += estimate
                if tenant is not None:
                    self._held_by_tenant[tenant] = (
                        self._held_by_tenant.get(tenant, _ZERO) + estimate
                    )
        return decisions

    def _drop_hold(self, key: str | int) -> None:
        """Forget the hold of call ``key``, if any. Caller holds the lock."""
        held = self._holds.pop(key, None)
        if held is None:
            return
        tenant, amount, _ = held
        self._held_all -= amount
        if tenant is not None:
            left = self._held_by_tenant[tenant] - amount
            if left:
                self._held_by_tenant[tenant] = left
            else:
                del self._held_by_tenant[tenant]
        if not self._holds:
            # Exact zero again (no drift from a sum that never quite cancels).
            self._held_all = _ZERO
            self._held_by_tenant.clear()
            self._expiries.clear()

    def _expire_holds(self, now: datetime) -> None:
        """Drop holds past their expiry (their call was never recorded nor released,
        e.g. a caller that does not release on errors). Caller holds the lock."""
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            expiry, _, key = heapq.heappop(expiries)
            held = self._holds.get(key)
            # Else the hold was dropped already (or held again since, under a later expiry).
            if held is not None and held[2] == expiry:
                log.debug("budget hold of call %s expired unreleased", key)
                self._drop_hold(key)

    def check_unpriced(self, tenant: str | None, model: str) -> list[Budget]:
        """Apply the budgets covering ``tenant`` to a call of a model with no price.

        Such a call's cost can be neither estimated nor counted (it is recorded
        as unknown, never $0), so no spend check can pass it honestly: a
        ``block`` budget (and a ``downshift`` one, which blocks at its limit)
        refuses it, since its promise is that the limit is never overspent. A
        ``warn`` budget lets it through; the caller warns. This ledger's
        budgets are applied first, then the parents'.

        Args:
            tenant: whose call it is (``None``: global budgets only).
            model: the model with no price, named in the refusal.

        Returns:
            The ``warn`` budgets that let the call through, uncounted.

        Raises:
            BudgetExceededError: a ``block`` or ``downshift`` budget covers the
                call; the message names the model and how to price it.
        """
        passed: list[Budget] = []
        ledger: CostLedger | None = self
        while ledger is not None:
            for budget in ledger.budgets:
                if budget.tenant is not None and budget.tenant != tenant:
                    continue
                if unpriced_action(budget) == "warn":
                    passed.append(budget)
                    continue
                raise unpriced_call_error(budget, model, ledger.spent(budget.tenant, budget.period))
            ledger = ledger.parent
        return passed

    def release_budget(self, tenant: str | None, call_id: str) -> None:
        """Drop the budget hold of a call that failed (it spent nothing), parents' too.

        Call it whenever a checked call ends without being recorded, with or
        without a shared store: an unreleased hold counts against the budgets
        until it expires (its ``hold_ttl_s``, by default ``reservation_ttl_s``).
        """
        self._release_own(tenant, call_id)
        if self.parent is not None:
            self.parent.release_budget(tenant, call_id)

    def _release_own(self, tenant: str | None, call_id: str) -> None:
        if self._holds:  # a local hold: none, or a fallback one, when there is a store
            with self._lock:
                self._drop_hold(_call_key(call_id))
        store = self._store
        if store is not None and self._budgets:
            store.release(self.budgets, tenant, call_id, self.clock())

    # -- shared state -------------------------------------------------------
    def load_shared(
        self, combos: Mapping[tuple[Any, ...], Mapping[str, int]], records: Sequence[CallRecord]
    ) -> None:
        """Add totals read from a shared store (per dimension combination) and its records."""
        from costopt_core.redis_ledger import from_pico

        with self._lock:
            self._fold()
            self._read_shared = True
            for combo, sums in combos.items():
                key = tuple(combo)
                b = self._combos.get(key)
                if b is None:
                    b = self._combos[key] = _Bucket(str(key[4]))
                calls = sums.get("calls", 0)
                b.calls += calls
                self._folded += calls
                b.unpriced += sums.get("unpriced", 0)
                b.cost += from_pico(sums.get("cost", 0))
                b.baseline += from_pico(sums.get("baseline", 0))
                for metric, value in sums.items():
                    if metric.startswith("s:"):
                        lever = metric[2:]
                        b.savings[lever] = b.savings.get(lever, _ZERO) + from_pico(value)
                if b.counts_tokens:
                    b.input += sums.get("input", 0)
                    b.output += sums.get("output", 0)
                    b.cache_read += sums.get("cache_read", 0)
                    b.cache_w5m += sums.get("cache_w5m", 0)
                    b.cache_w1h += sums.get("cache_w1h", 0)
                    b.reasoning += sums.get("reasoning", 0)
                elif b.outcome == "removed":
                    b.removed += sums.get("input", 0)
            self._build_records()
            self._records.extend(records)

    @classmethod
    def from_redis(
        cls,
        url: str = "redis://localhost:6379",
        *,
        namespace: str = "default",
        days: int | None = None,
        records: int = 1000,
        client: Any = None,
        **kwargs: Any,
    ) -> CostLedger:
        """The cluster-wide ledger of every replica that wrote to ``namespace``.

        Totals (and ``totals_by``, savings by lever, summaries) cover every
        recorded call of the last ``days`` UTC days (all kept days when
        ``None``); :meth:`records` holds the latest ``records`` calls; budget
        spend is read from Redis.

        Raises:
            StoreError: Redis could not be read (the message names the URL).
        """
        from costopt_core.redis_ledger import RedisLedger

        shared = RedisLedger(url, namespace=namespace, client=client)
        ledger = cls(**kwargs)
        try:
            shared.read_into(ledger, days=days, records=records)
        except Exception as exc:
            raise StoreError(
                f"could not read the shared ledger {namespace!r} from {url}: {exc}; check the "
                "URL and that Redis is reachable"
            ) from exc
        ledger.budget_store = shared
        return ledger

    # -- export -------------------------------------------------------------
    def to_records(self) -> list[dict[str, Any]]:
        """Plain dicts (money as strings), one per held call; no pandas needed.

        Only the records held in memory (the latest ``max_records``): when older
        calls were dropped, a ``UserWarning`` says how many are missing.
        """
        return self._export("to_records")

    def to_jsonl(self, path: str | Path) -> Path:
        """Write one JSON line per held call to ``path`` (read back by :meth:`from_jsonl`
        and ``costopt report``).

        Only the records held in memory (the latest ``max_records``): when older
        calls were dropped, a ``UserWarning`` says how many are missing.
        """
        p = Path(path)
        rows = self._export("to_jsonl")
        with p.open("w", encoding="utf-8") as fh:
            for rec in rows:
                fh.write(json.dumps(rec, sort_keys=True) + "\n")
        return p

    @classmethod
    def from_jsonl(cls, path: str | Path, **kwargs: Any) -> CostLedger:
        """Rebuild a ledger from a JSONL export; a call id seen twice counts once.

        Raises:
            ConfigurationError: the file is missing, or a line is not JSON or not
                a record (see :func:`read_record`); the message names ``file:line``.
        """
        ledger = cls(**kwargs)
        for where, data in json_lines(Path(path), "ledger"):
            ledger.add(read_record(where, data))
        return ledger

    def to_csv(self, path: str | Path | None = None) -> str:
        """CSV, one row per held call (usage and savings flattened); written to ``path``
        if given. Warns as :meth:`to_records` does when older calls were dropped."""
        usage_cols = list(_TOKEN_KINDS)
        cols = [
            "call_id", "timestamp", "model", "tier", "tenant", "framework", "mode", "outcome",
            "cost_usd", "baseline_cost_usd", "latency_ms", "estimated",
            *usage_cols, *(f"savings_{lever}_usd" for lever in LEVERS),
        ]  # fmt: skip
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols)
        writer.writeheader()
        for rec in self._export("to_csv"):
            row = {k: rec[k] for k in cols if k in rec}
            row.update(rec["usage"])
            for lever in LEVERS:
                row[f"savings_{lever}_usd"] = rec["savings_usd"].get(lever, "0")
            writer.writerow(row)
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8", newline="")
        return text

    def summary(self) -> dict[str, Any]:
        """Spend, baseline, savings by lever, and the per-tier/model/tenant splits.

        The input kept out of calls (compression, memory) is no model's or
        tier's: ``by_tier`` and ``by_model`` leave it out and
        ``context_kept_out`` holds it (None when there is none), so the splits
        with it add up to the total, as ``by_tenant`` does by itself.
        """
        kept_out = self.totals_by("outcome").get("removed")
        return {
            "total": self.totals().to_dict(),
            "savings_by_lever_usd": {k: format(v, "f") for k, v in self.savings_by_lever().items()},
            "tier_distribution": self.tier_distribution(),
            "by_tier": {
                str(k): v.to_dict() for k, v in self.totals_by("tier", removals=False).items()
            },
            "by_model": {
                str(k): v.to_dict() for k, v in self.totals_by("model", removals=False).items()
            },
            "context_kept_out": None if kept_out is None else kept_out.to_dict(),
            "by_tenant": {str(k): v.to_dict() for k, v in self.totals_by("tenant").items()},
        }

    def summary_table(self) -> str:
        """A plain-text summary for terminals, logs and notebooks."""
        from costopt_core.report import format_summary

        return format_summary(self)


def read_record(where: str, data: Any) -> CallRecord:
    """One line of a ledger export (parsed JSON) as a record.

    The one reader of ledger lines: ``CostLedger.from_jsonl`` (``costopt
    report``) and ``WorkloadSample.from_jsonl`` (``costopt project``) both read
    records through it, and both keep the first record of a call id.

    Args:
        where: the line's ``file:line``, for the message.
        data: the line's parsed JSON.

    Raises:
        ConfigurationError: the line is not a record: the message names
            ``where``, the field and its value, and how records are written.
    """
    try:
        return CallRecord.from_dict(data)
    except Exception as exc:  # from_dict names the field; anything else still names the line
        raise ConfigurationError(
            f"{where}: not a costopt ledger record: {exc}. A ledger has one call per line, "
            "as CostLedger.to_jsonl(path) writes them"
        ) from None


@functools.lru_cache(maxsize=64)
def _starts_of_day(day: date) -> tuple[tuple[BudgetPeriod, datetime], ...]:
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return tuple((p, period_start(p, midnight)) for p in _PERIODS)
