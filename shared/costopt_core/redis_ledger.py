"""One ledger and one set of budgets for every replica of an app, on Redis.

An in-process ledger sees one replica's slice, and a per-tenant budget
enforced per replica is N times too loose. :class:`RedisLedger` attaches to
each replica's engine and keeps the shared state in Redis:

- every call record is appended to a stream (trimmed to ``max_stream_records``)
  and folded into per-UTC-day counters, one hash field per dimension
  combination and metric, in one atomic script per record: a record the
  script returned for is in Redis, whatever happens to the replica after;
- budgets are checked and reserved atomically (a Lua script, not read then
  write): the estimate of a call is reserved before it is sent, and the
  reservation is released in the same script that adds the actual cost, so
  under contention no budget is overspent by more than one in-flight call per
  replica (its actual cost minus its estimate);
- :meth:`CostLedger.from_redis` reads the cluster-wide totals back.

Money is stored as integer pico-dollars (exact for every catalog price;
``HINCRBY`` is exact where floats are not). Every key carries one hash tag
(``{costopt:<namespace>}``), so the scripts work on Redis Cluster (all keys of
a namespace live in one slot). When Redis is down, records stay in the local
ledger and are spooled (bounded) for a later retry: once Redis is back, each
recorded call sends a few milliseconds' share of the spool (``flush_spool``
sends all of it). Each budget fails open (the replica's local view decides;
the default) or closed (the call is refused), as its ``on_store_error`` says.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

from costopt_core.budgets import Budget, BudgetDecision, BudgetPeriod, evaluate_budget, period_start
from costopt_core.cache.breaker import CircuitBreaker
from costopt_core.errors import ConfigurationError, StoreError
from costopt_core.ledger import check_hold_ttl_s
from costopt_core.types import CallRecord

if TYPE_CHECKING:
    import redis

    from costopt_core.engine import CostEngine
    from costopt_core.ledger import CostLedger

__all__ = ["PICO", "RedisLedger", "from_pico", "record_increments", "to_pico"]

log = logging.getLogger("costopt.redis_ledger")

#: pico-dollars per dollar
PICO = Decimal(10) ** 12
_PERIODS: tuple[BudgetPeriod, ...] = ("day", "week", "month", "total")
#: The most days a budget period lasts.
_PERIOD_DAYS = {"day": 1, "week": 7, "month": 31}
#: combination fields, in the ledger's dimension order
_DIMS = ("model", "tier", "tenant", "framework", "outcome", "mode")
_TOKEN_METRICS = ("input", "output", "cache_read", "cache_w5m", "cache_w1h", "reasoning")
_SEP = "\x1f"
#: Records sent per round trip (one pipeline) when a backlog is drained.
_DRAIN_BATCH = 64
#: A user call sends spooled records for about this long: after an outage the
#: backlog (up to ``spool_records``) goes out a share per call, so no call pays
#: for all of it (20,000 one at a time took 4.6 s in one call). Batches are sized
#: to the time a record is taking, so a slow (busy) Redis gets smaller ones.
_DRAIN_BUDGET_S = 0.002


def to_pico(amount: Decimal) -> int:
    """Dollars as integer pico-dollars (catalog prices are exact; anything finer rounds)."""
    return int((amount * PICO).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_pico(value: int | str | bytes) -> Decimal:
    """Integer pico-dollars (an int or Redis's decimal string) as exact dollars."""
    return Decimal(int(value)) / PICO


# Money in the scripts stays a decimal string end to end: Lua numbers are doubles,
# exact only up to 2^53 pico-dollars (about $9,007), and tostring() of 1e14 pico
# ($100) is "1e+14", which neither HINCRBY nor int() accepts. HGET strings are
# handed to HINCRBY as they are, negated as strings, and compared digit by digit.
_LUA_MONEY = """
local function neg(s)
  if s == '0' then return '0' end
  if string.sub(s, 1, 1) == '-' then return string.sub(s, 2) end
  return '-' .. s
end
-- a negative amount counts as 0 in a budget check (stricter, never looser); so does
-- a missing field (HGET answers false)
local function nonneg(s)
  if not s or string.sub(s, 1, 1) == '-' then return '0' end
  s = string.gsub(s, '^0+', '')
  if s == '' then return '0' end
  return s
end
local function add(a, b)
  local out, carry, i, j = {}, 0, #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local d = carry
    if i > 0 then d = d + string.byte(a, i) - 48; i = i - 1 end
    if j > 0 then d = d + string.byte(b, j) - 48; j = j - 1 end
    carry = math.floor(d / 10)
    table.insert(out, 1, string.char(48 + d % 10))
  end
  local s = table.concat(out)
  if s == '' then return '0' end
  return s
end
-- a > b for canonical non-negative decimal strings
local function greater(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
-- drop the hold of call id from a hash (recorded, released or expired)
local function settle(key, id)
  local held = redis.call('HGET', key, 'r:' .. id)
  redis.call('HDEL', key, 'r:' .. id, 'x:' .. id)
  if held then redis.call('HINCRBY', key, 'reserved', neg(held)) end
end
"""

# KEYS: stream, day hash, the global and the tenant's hold hashes ('' without a tenant),
#       then the spend hashes (global x 4 periods, then tenant x 4 periods)
# ARGV: maxlen, day_ttl_s, call_id, record json, n_fields, then field/increment pairs,
#       then the cost in pico-dollars, then per spend hash the epoch second it expires
#       at (0: never; the all-time counters)
# The call's hold is settled wherever it is: in its hold hashes, whatever period the
# record lands in, and in the spend hashes (holds made before holds had hashes of
# their own).
_RECORD_LUA = (
    _LUA_MONEY
    + """
local maxlen = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local call_id = ARGV[3]
local seen = redis.call('HSETNX', KEYS[2], 'id' .. string.char(31) .. call_id, 1)
if seen == 0 then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'r', ARGV[4])
local n = tonumber(ARGV[5])
for i = 0, n - 1 do
  redis.call('HINCRBY', KEYS[2], ARGV[6 + 2 * i], ARGV[7 + 2 * i])
end
if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
local cost = ARGV[6 + 2 * n]
for k = 3, #KEYS do
  if KEYS[k] ~= '' then
    if k > 4 then
      redis.call('HINCRBY', KEYS[k], 'spent', cost)
      local at = tonumber(ARGV[2 + 2 * n + k] or '0')
      if at > 0 then redis.call('EXPIREAT', KEYS[k], at) end
    end
    settle(KEYS[k], call_id)
  end
end
return 1
"""
)

# KEYS: per budget, its spend hash (this period's) and its hold hash (its scope's, of
# every period); ARGV: call_id, estimate, now_ms, hold_ms (0: check only, hold
# nothing), then per budget limit and strict flag (1 = a block/downshift budget:
# refuse past the limit).
# A hold counts in every period it is alive in, so it lives in a hash of its scope,
# not in one period's: a 25 h batch hold made at 23:00 still counts after midnight
# against a daily budget. Holds an earlier version made in spend hashes still count
# until settled or expired. Expired holds (a replica died between reserve and
# record) are dropped first, from each hash once.
# Returns ok, then per budget spent, reserved and this call's own hold (in reserved).
_RESERVE_LUA = (
    _LUA_MONEY
    + """
local call_id = ARGV[1]
local est = nonneg(ARGV[2])
local now = tonumber(ARGV[3])
local hold_ms = tonumber(ARGV[4])
local live = {}
-- the live holds of a hash: expired ones dropped first (each hash once)
local function held(key)
  if live[key] == nil then
    local fields = redis.call('HGETALL', key)
    for i = 1, #fields, 2 do
      local f = fields[i]
      if string.sub(f, 1, 2) == 'x:' and tonumber(fields[i + 1]) < now then
        settle(key, string.sub(f, 3))
      end
    end
    live[key] = nonneg(redis.call('HGET', key, 'reserved'))
  end
  return live[key]
end
-- this call's own hold in a hash (a call checked again is not counted twice)
local function own_in(key)
  return nonneg(redis.call('HGET', key, 'r:' .. call_id))
end
local out = {}
local ok = 1
for k = 1, #KEYS / 2 do
  local spend, holds = KEYS[2 * k - 1], KEYS[2 * k]
  local spent = redis.call('HGET', spend, 'spent') or '0'
  local reserved = add(held(holds), held(spend))
  local own = add(own_in(holds), own_in(spend))
  out[#out + 1] = spent
  out[#out + 1] = reserved
  out[#out + 1] = own
  local limit = add(nonneg(ARGV[5 + 2 * (k - 1)]), own)
  local strict = ARGV[6 + 2 * (k - 1)]
  local total = add(add(nonneg(spent), reserved), est)
  if strict == '1' and greater(total, limit) then ok = 0 end
end
if ok == 1 and est ~= '0' and hold_ms > 0 then
  -- The hash goes once its last hold would have expired (plus an hour for clocks
  -- that disagree): a scope whose calls stopped leaves nothing behind.
  local keep_ms = hold_ms + 3600000
  for k = 1, #KEYS / 2 do
    local holds = KEYS[2 * k]
    if redis.call('HSETNX', holds, 'r:' .. call_id, ARGV[2]) == 1 then
      redis.call('HINCRBY', holds, 'reserved', ARGV[2])
      redis.call('HSET', holds, 'x:' .. call_id, now + hold_ms)
      if redis.call('PTTL', holds) < keep_ms then
        redis.call('PEXPIRE', holds, keep_ms)
      end
    end
  end
end
table.insert(out, 1, ok)
return out
"""
)

# KEYS: hold and spend hashes; ARGV: call_id. Drops a hold (the call failed: nothing
# was spent).
_RELEASE_LUA = (
    _LUA_MONEY
    + """
for k = 1, #KEYS do
  settle(KEYS[k], ARGV[1])
end
return 1
"""
)


def _combo_field(record: CallRecord) -> str:
    return json.dumps([getattr(record, d) for d in _DIMS], separators=(",", ":"))


def record_increments(record: CallRecord) -> list[tuple[str, int]]:
    """The counter increments one record adds to its day hash (pure)."""
    combo = _combo_field(record)
    incs: list[tuple[str, int]] = [("calls", 1)]
    if record.cost_usd is None:
        incs.append(("unpriced", 1))
    else:
        incs.append(("cost", to_pico(record.cost_usd)))
        if record.baseline_cost_usd is not None:
            incs.append(("baseline", to_pico(record.baseline_cost_usd)))
            for lever, amount in record.savings_usd.items():
                if amount:
                    incs.append((f"s:{lever}", to_pico(amount)))
    u = record.usage
    values = (
        u.input_tokens,
        u.output_tokens,
        u.cache_read_tokens,
        u.cache_write_5m_tokens,
        u.cache_write_1h_tokens,
        u.reasoning_tokens,
    )
    for name, value in zip(_TOKEN_METRICS, values, strict=True):
        if value:
            incs.append((name, value))
    return [(combo + _SEP + name, n) for name, n in incs]


class RedisLedger:
    """The shared ledger and budgets of every replica, in one Redis namespace.

    Args:
        url: the Redis URL (the same Redis as the cache is fine).
        namespace: one per app (deployment); its keys share one hash tag.
        max_stream_records: the record stream is trimmed to about this many.
        retention_days: day counters expire this long after their last write
            (totals then cover that many days), and the budgets' day, week
            and month spend counters this long after their period ends (the
            all-time ones never); ``None`` keeps them.
        reservation_ttl_s: a budget hold whose call never recorded (its
            replica died) is dropped after this long, unless the check gave
            the hold a lifetime of its own (``hold_ttl_s`` of :meth:`reserve`).
        socket_timeout_s: bound on every Redis call.
        client: an existing ``redis.Redis`` (or cluster) client instead of ``url``.
        spool_records: records kept for a retry while Redis is unreachable.

    Example:
        >>> shared = RedisLedger("redis://redis:6379", namespace="support-bot")  # doctest: +SKIP
        >>> shared.attach(engine)  # doctest: +SKIP
        >>> # every record now goes to Redis; budgets hold across replicas
        >>> url = "redis://redis:6379"
        >>> everyone = CostLedger.from_redis(url, namespace="support-bot")  # doctest: +SKIP
        >>> everyone.totals()  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379",
        *,
        namespace: str = "default",
        max_stream_records: int = 1_000_000,
        retention_days: int | None = 400,
        reservation_ttl_s: float = 600.0,
        socket_timeout_s: float = 0.5,
        client: redis.Redis | None = None,
        spool_records: int = 100_000,
    ) -> None:
        if not namespace or any(c in namespace for c in "{}"):
            raise ConfigurationError(
                f"namespace must be a non-empty string without braces, got {namespace!r}"
            )
        for name, value in (
            ("max_stream_records", max_stream_records),
            ("spool_records", spool_records),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
        bad_retention = not isinstance(retention_days, int) or retention_days < 1
        if retention_days is not None and bad_retention:
            raise ConfigurationError(
                f"retention_days must be a positive integer or None, got {retention_days!r}"
            )
        if not reservation_ttl_s > 0 or not socket_timeout_s > 0:
            raise ConfigurationError("reservation_ttl_s and socket_timeout_s must be > 0")
        self.url = url
        self.namespace = namespace
        self.max_stream_records = max_stream_records
        self.retention_days = retention_days
        self.reservation_ttl_s = reservation_ttl_s
        self.socket_timeout_s = socket_timeout_s
        self._client = client
        self._tag = "{costopt:" + namespace + "}"
        self._spool: deque[CallRecord] = deque(maxlen=spool_records)
        self._lock = threading.Lock()
        # One drainer at a time (else two threads write the same head and both pop,
        # dropping the next record unwritten); _spool_mutex guards each deque change
        # and is held only briefly, so spooling during a long drain does not wait.
        self._drain_lock = threading.RLock()
        self._spool_mutex = threading.Lock()
        self.breaker = CircuitBreaker(failures=3, reset_s=5.0)
        self.errors = 0
        self.spool_dropped = 0
        self._scripts: dict[str, Any] = {}

    # -- connection ---------------------------------------------------------
    @property
    def client(self) -> redis.Redis:
        """The Redis client, created on first use (the constructor does no I/O)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import redis

                    self._client = redis.Redis.from_url(
                        self.url,
                        socket_timeout=self.socket_timeout_s,
                        socket_connect_timeout=self.socket_timeout_s,
                    )
        return self._client

    def _script(self, name: str, body: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.client.register_script(body)
        return script

    # -- keys ---------------------------------------------------------------
    @property
    def stream_key(self) -> str:
        return f"{self._tag}:records"

    def day_key(self, day: date) -> str:
        return f"{self._tag}:day:{day.isoformat()}"

    def budget_key(self, tenant: str | None, period: BudgetPeriod, now: datetime) -> str:
        scope = "t:" + tenant if tenant is not None else "all"
        start = period_start(period, now).date().isoformat()
        return f"{self._tag}:spend:{scope}:{period}:{start}"

    def hold_key(self, tenant: str | None) -> str:
        """The hash of the budget holds of ``tenant``'s calls (``None``: every call).

        One per scope, not per period: a hold counts against the scope's
        budgets of every period for as long as it lives, across period starts.
        """
        scope = "t:" + tenant if tenant is not None else "all"
        return f"{self._tag}:holds:{scope}"

    def _spend_expiry(self, period: BudgetPeriod, now: datetime) -> int:
        """When a period's spend counter expires (epoch seconds; 0: never).

        ``retention_days`` after the period ends: a budget reads its period's
        counter while the period lasts, and a counter past it is history
        (the day hashes keep the totals). Without retention, and for the
        all-time counters, never.
        """
        if period == "total" or not self.retention_days:
            return 0
        longest = _PERIOD_DAYS[period]  # a month counts as 31 days: never short
        end = period_start(period, now) + timedelta(days=longest + self.retention_days)
        return int(end.timestamp())

    def _spend_keys(self, tenant: str | None, now: datetime) -> list[str]:
        keys = [self.budget_key(None, p, now) for p in _PERIODS]
        if tenant is not None:
            keys += [self.budget_key(tenant, p, now) for p in _PERIODS]
        return keys

    # -- wiring -------------------------------------------------------------
    def attach(self, engine: CostEngine) -> RedisLedger:
        """Send every record of ``engine``'s ledger here and check its budgets here."""
        engine.ledger.subscribe(self._listen)
        engine.ledger.budget_store = self
        return self

    # -- records ------------------------------------------------------------
    def _listen(self, record: CallRecord) -> None:
        self.write(record)

    def write(self, record: CallRecord) -> bool:
        """Add one record; False if it was spooled instead (it is sent later).

        Records spooled in an outage go first, a share of them per call (in
        pipelined batches, for about ``_DRAIN_BUDGET_S``), so a call's extra
        wait stays a few milliseconds; the rest go with later calls (or
        :meth:`flush_spool`). ``record`` itself is written at once, ahead of
        any backlog left: its actual cost settles its budget hold now. A call
        that finds another call sending the backlog spools at once rather
        than wait behind it, unless the spool is full (spooling would drop
        its oldest record).
        """
        if not self.breaker.allow():
            self._to_spool(record)
            return False
        # One writer at a time (two drainers would both send the spool's head, and a
        # hung Redis costs the callers in line one timeout, not one each). Without a
        # backlog the wait is one record's round trip; with one it could be another
        # call's share of the backlog, which this call does not wait for.
        # A full spool would push its oldest record out to make room for this one,
        # which Redis can take now: then it waits its turn.
        spool = self._spool
        if not self._drain_lock.acquire(blocking=not spool or len(spool) == spool.maxlen):
            self.breaker.abandon()  # no call made: free a half-open trial slot
            self._to_spool(record)
            return False
        try:
            if self.breaker.state == "open":
                # Redis failed while this call waited for the one ahead of it: do not
                # spend another socket timeout finding out again (callers in line
                # would each wait one more).
                self.breaker.abandon()
                self._to_spool(record)
                return False
            try:
                # Its own record first: it also loads the script if Redis lost it (a
                # restart), which a cluster client's pipeline would not do.
                started = time.perf_counter()
                self._write_one(record)
                took = time.perf_counter() - started
            except Exception as exc:
                self._failed("write", exc)
                self._to_spool(record)
                return False
            if self._spool:
                try:
                    # One record's round trip bounds a pipelined record's time.
                    self._drain_spool(_DRAIN_BUDGET_S, per_record_s=took)
                except Exception as exc:  # the backlog stays spooled for a later call
                    self._failed("write", exc)
                    return True
        finally:
            self._drain_lock.release()
        self.breaker.success()
        return True

    def _drain_spool(self, budget_s: float | None = None, per_record_s: float = 0.0) -> None:
        """Send spooled records, oldest first, in pipelined batches, until the spool
        is empty or about ``budget_s`` has passed (``None``: until empty).

        Each batch is sized to fit the time left at the time a record has been
        taking (``per_record_s`` before the first), and has at least one record,
        so every call moves the backlog on. Raises what Redis raised. Nothing is
        lost: records not confirmed stay spooled, and one sent twice is counted
        once (the script skips a call id it has seen).
        """
        with self._drain_lock:
            started = time.perf_counter()
            while True:
                size = _DRAIN_BATCH
                if budget_s is not None and per_record_s > 0:
                    left = budget_s - (time.perf_counter() - started)
                    size = max(1, min(_DRAIN_BATCH, int(left / per_record_s)))
                with self._spool_mutex:
                    batch = list(itertools.islice(self._spool, size))
                if not batch:
                    return
                sent = time.perf_counter()
                self._write_pipelined(batch)
                done = time.perf_counter()
                # A record leaves the spool only once Redis has it, and only if it is
                # still there (a full spool evicts from the head meanwhile).
                with self._spool_mutex:
                    for written in batch:
                        if self._spool and self._spool[0] is written:
                            self._spool.popleft()
                if budget_s is not None:
                    if done - started >= budget_s:
                        return
                    per_record_s = (done - sent) / len(batch)

    def _to_spool(self, record: CallRecord) -> None:
        with self._spool_mutex:
            if len(self._spool) == self._spool.maxlen:
                self.spool_dropped += 1
            self._spool.append(record)

    def _guarded(self, op: str, call: Callable[[], Any]) -> Any:
        """``call()`` behind the breaker: a hung Redis must not cost every budget check a
        socket timeout. Errors are re-raised for the caller's ``on_store_error``."""
        if not self.breaker.allow():
            raise StoreError(f"shared ledger {op} skipped: Redis failed recently (breaker open)")
        try:
            out = call()
        except Exception as exc:
            self._failed(op, exc)
            raise
        self.breaker.success()
        return out

    def _failed(self, op: str, exc: BaseException) -> None:
        self.errors += 1
        self.breaker.failure()
        log.warning("costopt shared ledger: Redis %s failed (%s); continuing locally", op, exc)

    def _write_one(self, record: CallRecord) -> None:
        keys, args = self._record_script_args(record)
        self._script("record", _RECORD_LUA)(keys=keys, args=args)

    def _write_pipelined(self, records: Sequence[CallRecord]) -> None:
        """Write ``records`` in one round trip (each still its own atomic script)."""
        script = self._script("record", _RECORD_LUA)
        pipe = self.client.pipeline(transaction=False)
        for record in records:
            keys, args = self._record_script_args(record)
            script(keys=keys, args=args, client=pipe)
        pipe.execute()

    def _record_script_args(self, record: CallRecord) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the record script for ``record``."""
        ts = record.timestamp.astimezone(UTC)
        incs = record_increments(record)
        spend = self._spend_keys(record.tenant, ts)
        ttl = self.retention_days * 86_400 if self.retention_days else 0
        args: list[Any] = [
            self.max_stream_records,
            ttl,
            record.call_id,
            json.dumps(record.to_dict(), sort_keys=True),
            len(incs),
        ]
        for field, n in incs:
            args += [field, n]
        args.append(to_pico(record.cost_usd) if record.cost_usd is not None else 0)
        periods = list(_PERIODS) * (len(spend) // len(_PERIODS))
        args += [self._spend_expiry(p, ts) for p in periods]
        holds = [
            self.hold_key(None),
            self.hold_key(record.tenant) if record.tenant is not None else "",
        ]
        return [self.stream_key, self.day_key(ts.date()), *holds, *spend], args

    def flush_spool(self) -> int:
        """Write every spooled record now (pipelined); returns how many are still spooled.

        Unlike :meth:`write`, this sends the whole backlog: call it off the
        request path (at shutdown, or from a background task).
        """
        if self._spool and self.breaker.allow():
            try:
                self._drain_spool()
                self.breaker.success()
            except Exception as exc:
                self._failed("write", exc)
        return len(self._spool)

    # -- budgets ------------------------------------------------------------
    def reserve(
        self,
        budgets: Sequence[Budget],
        tenant: str | None,
        estimate_usd: Decimal,
        call_id: str | None,
        now: datetime,
        *,
        hold_ttl_s: float | None = None,
    ) -> list[BudgetDecision]:
        """Check every budget covering ``tenant`` and hold ``estimate_usd`` against them.

        One atomic script: when a ``block`` or ``downshift`` budget would go over,
        nothing is held and the caller raises. The hold is released when the
        call's record is written (or by :meth:`release` if the call fails), at
        the latest after ``hold_ttl_s`` (``None``: ``reservation_ttl_s``); a
        call already holding keeps its first hold and that hold's expiry.
        A hold lives in its scope's hash (:meth:`hold_key`), not in a period's,
        so it counts against every period it is alive in: one made before
        midnight still counts against the next day's budget, as in
        :class:`~costopt_core.ledger.CostLedger`, until settled wherever the
        record's spend lands. Without a ``call_id`` the budgets are only read
        (nothing is held).

        Raises:
            ConfigurationError: a ``hold_ttl_s`` that is not a number > 0,
                finite and at most a year (nothing is sent to Redis).
            ConnectionError and other Redis errors: the caller applies each
                budget's ``on_store_error``.
        """
        ttl_s = self.reservation_ttl_s if hold_ttl_s is None else check_hold_ttl_s(hold_ttl_s)
        applicable = [b for b in budgets if b.tenant is None or b.tenant == tenant]
        if not applicable:
            return []
        keys = []
        for b in applicable:
            keys += [self.budget_key(b.tenant, b.period, now), self.hold_key(b.tenant)]
        args: list[Any] = [
            call_id or "",
            to_pico(estimate_usd),
            int(now.timestamp() * 1000),
            # At least 1 ms: the script reads 0 as "check only, hold nothing".
            max(1, int(ttl_s * 1000)) if call_id else 0,
        ]
        for b in applicable:
            args += [to_pico(b.limit_usd), "1" if b.policy in ("block", "downshift") else "0"]
        out = self._guarded(
            "reserve", lambda: self._script("reserve", _RESERVE_LUA)(keys=keys, args=args)
        )
        decisions = []
        for i, b in enumerate(applicable):
            spent, held, own = (from_pico(v) for v in out[1 + 3 * i : 4 + 3 * i])
            decisions.append(evaluate_budget(b, spent + held - own, estimate_usd))
        return decisions

    def release(
        self, budgets: Sequence[Budget], tenant: str | None, call_id: str, now: datetime
    ) -> None:
        """Drop the hold of a call that failed before it was recorded.

        Never raises: a hold that could not be dropped (Redis down, or the
        breaker open) expires by itself after ``reservation_ttl_s``.
        """
        keys = []
        for b in budgets:
            if b.tenant is None or b.tenant == tenant:
                # Its hold hash, and the spend hash of a hold made by an earlier version.
                keys += [self.hold_key(b.tenant), self.budget_key(b.tenant, b.period, now)]
        if not keys:
            return
        try:
            # Behind the breaker: on a hung Redis each failed call would otherwise
            # wait a socket timeout here, after the checks had stopped waiting.
            self._guarded(
                "release",
                lambda: self._script("release", _RELEASE_LUA)(keys=keys, args=[call_id]),
            )
        except Exception as exc:  # _guarded counted and logged a failed call
            log.debug("budget hold of call %s left to expire (%s)", call_id, exc)

    def spent(self, tenant: str | None, period: BudgetPeriod, now: datetime) -> Decimal:
        """Cluster-wide spend of ``tenant`` (``None``: everyone) in the current period."""
        key = self.budget_key(tenant, period, now)
        value: Any = self._guarded("spent", lambda: self.client.hget(key, "spent"))
        return from_pico(value) if value is not None else Decimal(0)

    # -- reading ------------------------------------------------------------
    def read_into(
        self, ledger: CostLedger, *, days: int | None = None, records: int = 1000
    ) -> None:
        """Fill ``ledger`` with the cluster-wide totals (and the latest ``records``)."""
        today = datetime.now(UTC).date()
        keys = sorted(
            k.decode() if isinstance(k, bytes) else k
            for k in self.client.scan_iter(match=f"{self._tag}:day:*", count=1000)
        )
        if days is not None:
            first = today - timedelta(days=days - 1)
            keys = [k for k in keys if date.fromisoformat(k.rsplit(":", 1)[1]) >= first]
        combos: dict[tuple[Any, ...], dict[str, int]] = {}
        for key in keys:
            for field, value in self.client.hgetall(key).items():
                f = field.decode() if isinstance(field, bytes) else field
                combo, sep, metric = f.partition(_SEP)
                if not sep or combo == "id":
                    continue
                sums = combos.setdefault(tuple(json.loads(combo)), {})
                sums[metric] = sums.get(metric, 0) + int(value)
        latest = []
        if records:
            entries: Any = self.client.xrevrange(self.stream_key, count=records)
            for _, fields in entries:
                raw = fields.get(b"r") or fields.get("r")
                latest.append(CallRecord.from_dict(json.loads(raw)))
        ledger.load_shared(combos, list(reversed(latest)))
