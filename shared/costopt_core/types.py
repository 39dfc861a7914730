"""The neutral vocabulary shared by the engine and both framework adapters.

Adapters translate LangChain / LlamaIndex objects into these and back; the
engine never sees a framework type. Token counts are ``int | None`` where
``None`` means "the provider did not say", which is different from ``0``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, get_args

from costopt_core.errors import UsageFormatError

__all__ = [
    "LEVERS",
    "CallMode",
    "CallOutcome",
    "CallRecord",
    "ChatRequest",
    "Lever",
    "Message",
    "Role",
    "Usage",
]

Role = Literal["system", "user", "assistant", "tool"]
CallMode = Literal["sync", "batch"]
#: What served the call: a model, one of the cache tiers, or a cheap attempt
#: that was thrown away because the request escalated to a higher tier.
#: ``removed`` is no call: input tokens that compression or memory kept out of
#: a call, recorded so their saving is counted (see ``CostEngine.record_removed_tokens``).
#: ``overhead`` is a model call a lever made itself (a summarizer's, a cache verifier's): no
#: baseline, its cost a negative saving of that lever (see ``costopt_core.overhead``).
CallOutcome = Literal["model", "cache_exact", "cache_semantic", "escalated", "removed", "overhead"]
#: Outcomes where a provider was called, so tokens were billed.
CALLED_OUTCOMES: frozenset[str] = frozenset({"model", "escalated", "overhead"})
#: Outcomes where a cache answered instead of a model.
CACHE_OUTCOMES: frozenset[str] = frozenset({"cache_exact", "cache_semantic"})
#: The levers that call a model to do their work (see ``costopt_core.overhead``).
OverheadLever = Literal["compression", "memory", "cache_semantic"]
Lever = Literal[
    "routing", "cache_exact", "cache_semantic", "batch", "provider_cache", "compression", "memory"
]
LEVERS: tuple[Lever, ...] = (
    "routing",
    "cache_exact",
    "cache_semantic",
    "batch",
    "provider_cache",
    "compression",
    "memory",
)


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message, framework-neutral."""

    role: Role
    content: str
    name: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat request as the engine sees it."""

    messages: tuple[Message, ...]
    model: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    tenant: str | None = None


def money_str(amount: Decimal | None) -> str | None:
    """Money as a plain decimal string (never scientific notation), for JSON and CSV."""
    if amount is None:
        return None
    # str() is format(amount, "f") unless it chose scientific notation, and
    # several times cheaper: this runs on every call the LangChain handler records.
    text = str(amount)
    return format(amount, "f") if "E" in text else text


def _check_count(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageFormatError(f"{name} must be an int or None, got {value!r}")
    if value < 0:
        raise UsageFormatError(f"{name} must be >= 0, got {value}")


# ``Usage`` and ``CallRecord`` are built on every recorded call, so they get
# hand-written ``__init__`` methods (``init=False``) with the signature the
# dataclass would generate: they validate the arguments before storing them and
# store through the slot descriptors, bound once below each class, instead of
# one ``object.__setattr__`` lookup per field (what a frozen dataclass does).
# Frozen-ness is unchanged: ``__setattr__`` still raises.


@dataclass(frozen=True, slots=True, init=False)
class Usage:
    """Tokens of one call, by kind. ``None`` = unknown, ``0`` = none.

    ``input_tokens`` is the *total* prompt size, as LangChain and OpenAI count
    it: it includes ``cache_read_tokens`` and both cache-write kinds. The part
    billed at the plain input rate is :attr:`uncached_input_tokens`.
    ``output_tokens`` includes ``reasoning_tokens`` (both are billed as output).
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_5m_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    reasoning_tokens: int | None = None

    def __init__(
        self,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_read_tokens: int | None = None,
        cache_write_5m_tokens: int | None = None,
        cache_write_1h_tokens: int | None = None,
        reasoning_tokens: int | None = None,
    ) -> None:
        counts = (
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_5m_tokens,
            cache_write_1h_tokens,
            reasoning_tokens,
        )
        for value in counts:
            # The common case (None or a plain non-negative int) is checked inline.
            if value is not None and (type(value) is not int or value < 0):
                for name, v in zip(_USAGE_FIELDS, counts, strict=True):
                    _check_count(name, v)
        if input_tokens is not None:
            cached = (cache_read_tokens or 0) + (cache_write_5m_tokens or 0)
            cached += cache_write_1h_tokens or 0
            if cached > input_tokens:
                raise UsageFormatError(
                    f"cache read + write tokens ({cached}) exceed input_tokens "
                    f"({input_tokens}); input_tokens must be the total prompt size"
                )
        s_in, s_out, s_read, s_w5, s_w1h, s_reason = _USAGE_SETTERS
        s_in(self, input_tokens)
        s_out(self, output_tokens)
        s_read(self, cache_read_tokens)
        s_w5(self, cache_write_5m_tokens)
        s_w1h(self, cache_write_1h_tokens)
        s_reason(self, reasoning_tokens)

    @property
    def uncached_input_tokens(self) -> int | None:
        """Input tokens billed at the plain input rate."""
        if self.input_tokens is None:
            return None
        return (
            self.input_tokens
            - (self.cache_read_tokens or 0)
            - (self.cache_write_5m_tokens or 0)
            - (self.cache_write_1h_tokens or 0)
        )

    @property
    def total_tokens(self) -> int | None:
        if self.input_tokens is None or self.output_tokens is None:
            return None
        return self.input_tokens + self.output_tokens

    @property
    def is_known(self) -> bool:
        """True when both the input and the output size are known."""
        return self.input_tokens is not None and self.output_tokens is not None

    def without_provider_cache(self) -> Usage:
        """The same call had the provider cached nothing (every input token uncached)."""
        return Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            reasoning_tokens=self.reasoning_tokens,
            cache_read_tokens=0 if self.input_tokens is not None else None,
            cache_write_5m_tokens=0 if self.input_tokens is not None else None,
            cache_write_1h_tokens=0 if self.input_tokens is not None else None,
        )

    def with_extra_input(self, tokens: int) -> Usage:
        """The same call with ``tokens`` more uncached input tokens."""
        if self.input_tokens is None:
            return self
        return dataclasses.replace(self, input_tokens=self.input_tokens + tokens)

    def __add__(self, other: Usage) -> Usage:
        def add(a: int | None, b: int | None) -> int | None:
            if a is None and b is None:
                return None
            return (a or 0) + (b or 0)

        return Usage(
            **{
                f.name: add(getattr(self, f.name), getattr(other, f.name))
                for f in dataclasses.fields(self)
            }
        )

    def to_dict(self) -> dict[str, int | None]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise UsageFormatError(
                f"unknown usage fields {sorted(unknown)}; expected a subset of {sorted(names)}"
            )
        return cls(**data)


_USAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Usage))


def slot_setters(cls: type) -> tuple[Callable[[Any, Any], None], ...]:
    """``__set__`` of each field's slot of the slotted dataclass ``cls``, in field order.

    For hand-written ``__init__`` methods of frozen dataclasses on hot paths:
    calling these skips the frozen ``__setattr__`` without an
    ``object.__setattr__`` lookup per field.
    """
    return tuple(cls.__dict__[f.name].__set__ for f in dataclasses.fields(cls))


_USAGE_SETTERS = slot_setters(Usage)


@dataclass(frozen=True, slots=True, init=False)
class CallRecord:
    """One priced call in the ledger.

    ``cost_usd`` is what the call cost (``None`` if the model has no price);
    ``baseline_cost_usd`` is what the same request would have cost on the
    baseline frontier model, sync, uncompressed and uncached. ``savings_usd``
    splits the difference by lever and always sums to
    ``baseline_cost_usd - cost_usd`` when both are known.
    """

    call_id: str
    timestamp: datetime
    model: str
    usage: Usage
    cost_usd: Decimal | None
    baseline_cost_usd: Decimal | None
    savings_usd: dict[str, Decimal]
    mode: CallMode = "sync"
    outcome: CallOutcome = "model"
    tier: str | None = None
    tenant: str | None = None
    framework: str | None = None
    latency_ms: float | None = None
    estimated: bool = False
    tags: dict[str, str] = field(default_factory=dict)

    def __init__(
        self,
        call_id: str,
        timestamp: datetime,
        model: str,
        usage: Usage,
        cost_usd: Decimal | None,
        baseline_cost_usd: Decimal | None,
        savings_usd: dict[str, Decimal],
        mode: CallMode = "sync",
        outcome: CallOutcome = "model",
        tier: str | None = None,
        tenant: str | None = None,
        framework: str | None = None,
        latency_ms: float | None = None,
        estimated: bool = False,
        tags: dict[str, str] | None = None,
    ) -> None:
        (
            s_id, s_ts, s_model, s_usage, s_cost, s_base, s_savings,
            s_mode, s_outcome, s_tier, s_tenant, s_fw, s_latency, s_est, s_tags,
        ) = _RECORD_SETTERS  # fmt: skip
        s_id(self, call_id)
        s_ts(self, timestamp)
        s_model(self, model)
        s_usage(self, usage)
        s_cost(self, cost_usd)
        s_base(self, baseline_cost_usd)
        s_savings(self, savings_usd)
        s_mode(self, mode)
        s_outcome(self, outcome)
        s_tier(self, tier)
        s_tenant(self, tenant)
        s_fw(self, framework)
        s_latency(self, latency_ms)
        s_est(self, estimated)
        s_tags(self, {} if tags is None else tags)

    @property
    def total_savings_usd(self) -> Decimal | None:
        if self.cost_usd is None or self.baseline_cost_usd is None:
            return None
        return self.baseline_cost_usd - self.cost_usd

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: money as strings so no precision is lost."""
        return {
            "call_id": self.call_id,
            "timestamp": self.timestamp.isoformat(),
            "model": self.model,
            "tier": self.tier,
            "tenant": self.tenant,
            "framework": self.framework,
            "mode": self.mode,
            "outcome": self.outcome,
            "usage": self.usage.to_dict(),
            "cost_usd": money_str(self.cost_usd),
            "baseline_cost_usd": money_str(self.baseline_cost_usd),
            "savings_usd": {k: format(v, "f") for k, v in self.savings_usd.items()},
            "latency_ms": self.latency_ms,
            "estimated": self.estimated,
            "tags": dict(self.tags),
        }

    @classmethod
    def from_dict(cls, data: Any) -> CallRecord:
        """Read back :meth:`to_dict`'s output (a ledger export line, a Redis entry).

        Only ``call_id``, ``timestamp`` and ``model`` are required (ledgers
        written by earlier versions load as they are). Money is checked against
        the rules the engine prices by: no cost or baseline below zero; a
        saving only of a lever in :data:`LEVERS`, below zero only for the
        levers a call can lose money on (``routing``, ``provider_cache``,
        ``batch``, and for an ``overhead`` call the lever it was made for);
        and, when both the cost and the baseline are known, the levers add up
        to ``baseline_cost_usd - cost_usd``.

        Raises:
            ValueError: a field is missing, of the wrong type, or holds an amount
                the engine never writes; the message names the field and value,
                so a bad line is refused here instead of breaking the ledger's
                totals later.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object (one call per line), got {_json_type(data)}")
        call_id = _call_id(data)
        timestamp = _timestamp(data)
        model = _required_text(data, "model", "the model that served the call, e.g. 'gpt-4o'")
        mode, outcome = data.get("mode", "sync"), data.get("outcome", "model")
        if mode not in get_args(CallMode):
            raise ValueError(f"mode must be one of {list(get_args(CallMode))}, got {mode!r}")
        if outcome not in get_args(CallOutcome):
            raise ValueError(
                f"outcome must be one of {list(get_args(CallOutcome))}, got {outcome!r}"
            )
        latency = data.get("latency_ms")
        if latency is not None and (
            isinstance(latency, bool)
            or not isinstance(latency, int | float)
            or not math.isfinite(latency)
        ):
            raise ValueError(f"latency_ms must be a finite number or null, got {latency!r}")
        tags = data.get("tags", {})
        if not isinstance(tags, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
        ):
            raise ValueError(
                f"tags must be an object mapping strings to strings, got {_short(tags)}"
            )
        estimated = data.get("estimated", False)
        if not isinstance(estimated, bool):
            raise ValueError(f"estimated must be true or false, got {estimated!r}")
        usage = data.get("usage", {})
        if not isinstance(usage, Mapping):
            raise ValueError(
                "usage must be an object of token counts, e.g. "
                '{"input_tokens": 1200, "output_tokens": 150} ({} when unknown), '
                f"got {_json_type(usage)}"
            )
        try:
            tokens = Usage.from_dict(dict(usage))
        except UsageFormatError as exc:
            raise ValueError(f"usage: {exc}") from None
        cost = _money(data, "cost_usd")
        baseline = _money(data, "baseline_cost_usd")
        savings = _savings(data.get("savings_usd", {}), outcome)
        _check_savings_sum(savings, cost, baseline)
        return cls(
            call_id=call_id,
            timestamp=timestamp,
            model=model,
            tier=_text(data, "tier"),
            tenant=_text(data, "tenant"),
            framework=_text(data, "framework"),
            mode=mode,
            outcome=outcome,
            usage=tokens,
            cost_usd=cost,
            baseline_cost_usd=baseline,
            savings_usd=savings,
            latency_ms=latency,
            estimated=estimated,
            tags=dict(tags),
        )


#: Levers whose saving can be below zero: an escalation's thrown-away attempt
#: and a model dearer than the baseline (routing), cache writes billed above the
#: input rate (provider_cache), a batch rate above the sync one (batch). The
#: others save what the call or tokens they removed would have cost: never < 0.
_MAY_LOSE: frozenset[str] = frozenset({"routing", "provider_cache", "batch"})
#: ...and the levers an ``overhead`` call (a lever's own model call) is charged to.
_OVERHEAD_MAY_LOSE: frozenset[str] = _MAY_LOSE | frozenset(get_args(OverheadLever))
#: How far the levers may be from ``baseline_cost_usd - cost_usd``: half a
#: micro-dollar per amount, so a ledger whose amounts were rounded to 6 decimals
#: still loads. The engine's own records add up exactly.
_HALF_MICRO_USD = Decimal("0.0000005")


def _json_type(value: object) -> str:
    """A JSON value's kind as a user wrote it (``null``, ``a list``...)."""
    if value is None:
        return "null"
    names = {bool: "a boolean", str: "a string", int: "a number", float: "a number"}
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return names.get(type(value), type(value).__name__)


def _short(value: object) -> str:
    return f"{value!r:.80}"


def _missing(key: str, what: str) -> ValueError:
    return ValueError(f"missing field {key!r} ({what})")


def _call_id(data: Mapping[str, Any]) -> str:
    if "call_id" not in data:
        raise _missing("call_id", "the call's unique id; a call id seen twice is counted once")
    v = data["call_id"]
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise ValueError(f"call_id must be a string, got {_json_type(v)} {_short(v)}")
    return str(v)


def _timestamp(data: Mapping[str, Any]) -> datetime:
    example = "an ISO 8601 date-time such as '2026-01-31T12:00:00+00:00'"
    if "timestamp" not in data:
        raise _missing("timestamp", f"when the call was made: {example}")
    v = data["timestamp"]
    if not isinstance(v, str):
        raise ValueError(f"timestamp must be {example}, got {_json_type(v)} {_short(v)}")
    try:
        when = datetime.fromisoformat(v)
    except ValueError:
        raise ValueError(f"timestamp must be {example}, got {_short(v)}") from None
    if when.tzinfo is None:  # budgets and sorting compare aware datetimes
        when = when.replace(tzinfo=UTC)
    return when


def _required_text(data: Mapping[str, Any], key: str, what: str) -> str:
    if key not in data:
        raise _missing(key, what)
    v = data[key]
    if not isinstance(v, str):
        raise ValueError(f"{key} must be a string ({what}), got {_json_type(v)} {_short(v)}")
    return v


def _text(data: Mapping[str, Any], key: str) -> str | None:
    v = data.get(key)
    if v is not None and not isinstance(v, str):
        raise ValueError(f"{key} must be a string or null, got {_json_type(v)} {_short(v)}")
    return v


def _amount(key: str, v: Any) -> Decimal:
    """A money amount: a decimal string (what :meth:`CallRecord.to_dict` writes) or number."""
    if isinstance(v, bool) or not isinstance(v, str | int | float | Decimal):
        raise ValueError(
            f"{key} must be a decimal string such as '0.00125', got {_json_type(v)} {_short(v)}"
        )
    try:
        parsed = Decimal(str(v).strip())
    except ArithmeticError:  # decimal.InvalidOperation: not a number
        raise ValueError(f"{key} must be a decimal string such as '0.00125', got {v!r}") from None
    if not parsed.is_finite():
        raise ValueError(f"{key} must be a finite amount, got {v!r}")
    # Far past any bill, and past what Decimal arithmetic can add up ("1E+1000000"
    # overflowed the ledger's totals); read from the exponent, as arithmetic
    # on such a number overflows itself.
    if parsed.adjusted() >= _MAX_AMOUNT_DIGITS:
        raise ValueError(f"{key} must be below $1e{_MAX_AMOUNT_DIGITS} in size, got {v!r}")
    return parsed


#: Money amounts a record may hold are below 10 ** this (in USD).
_MAX_AMOUNT_DIGITS = 15


def _money(data: Mapping[str, Any], key: str) -> Decimal | None:
    """``cost_usd`` / ``baseline_cost_usd``: null (unknown) or an amount >= 0."""
    v = data.get(key)
    if v is None:
        return None
    parsed = _amount(key, v)
    if parsed < 0:
        raise ValueError(
            f"{key} cannot be negative, got {v!r}: prices are >= 0, so a call costs $0 or more "
            "(null when it cannot be priced)"
        )
    return parsed


def _savings(raw: Any, outcome: str = "model") -> dict[str, Decimal]:
    if not isinstance(raw, Mapping):
        raise ValueError(
            'savings_usd must be an object of {lever: amount}, e.g. {"routing": "0.0021"}, '
            f"got {_json_type(raw)} {_short(raw)}"
        )
    out: dict[str, Decimal] = {}
    may_lose = _OVERHEAD_MAY_LOSE if outcome == "overhead" else _MAY_LOSE
    for lever, v in raw.items():
        if lever not in LEVERS:
            raise ValueError(
                f"savings_usd has an unknown lever {lever!r} (amount {v!r}); the levers are "
                f"{', '.join(LEVERS)}"
            )
        parsed = _amount(f"savings_usd.{lever}", v)
        if parsed < 0 and lever not in may_lose:
            raise ValueError(
                f"savings_usd.{lever} cannot be negative, got {v!r}: {lever} saves what it "
                f"kept from being billed; only {', '.join(sorted(_MAY_LOSE))} can cost more "
                "than they save (and, on an 'overhead' call, the lever that made it: "
                "compression, memory or cache_semantic)"
            )
        out[lever] = parsed
    return out


def _check_savings_sum(
    savings: Mapping[str, Decimal], cost: Decimal | None, baseline: Decimal | None
) -> None:
    """The levers split the call's saving, so they add up to it (when it is known)."""
    if cost is None or baseline is None:
        return
    total = sum(savings.values(), Decimal(0))
    saved = baseline - cost
    if abs(total - saved) > _HALF_MICRO_USD * (len(savings) + 2):
        raise ValueError(
            f"savings_usd adds up to ${money_str(total)} but baseline_cost_usd - cost_usd is "
            f"${money_str(saved)} ({money_str(baseline)} - {money_str(cost)}): the levers "
            "split the call's saving, so they must add up to it (within half a micro-dollar "
            "per amount): correct the amounts, or drop the line"
        )


_RECORD_SETTERS = slot_setters(CallRecord)
