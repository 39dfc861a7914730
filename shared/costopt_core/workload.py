"""A workload sample, read from a file and measured with the real levers.

A projection must not assume hit rates or a tier mix. This module replays
a sample of requests through the real semantic cache, router, extractive
summarizer and summarizing memory (or, for a ledger export, reads what
they did in production) and returns, per request, what each lever did as
plain :class:`~costopt_core.projection.MeasuredRequest` data.

A request line of the JSONL sample::

    {"prompt": "How do I reset my password?",       # or "messages": [{role, content}]
     "system": "You are ...",                        # optional, with "prompt"
     "response": "Go to Settings ...",              # optional
     "input_tokens": 1200, "output_tokens": 150,    # optional (counted otherwise)
     "context": ["retrieved chunk", ...],           # optional, RAG context as retrieved
     "tier": "small",                               # optional label: cheapest tier good enough
     "tenant": "acme", "latency_tolerant": false}
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, get_args

from costopt_core.errors import ConfigurationError
from costopt_core.jsonl import json_lines
from costopt_core.ledger import CostLedger, read_record
from costopt_core.projection import MeasuredRequest
from costopt_core.routing.tiers import Tiers
from costopt_core.types import (
    CACHE_OUTCOMES,
    CallOutcome,
    CallRecord,
    Message,
    OverheadLever,
    Usage,
)

if TYPE_CHECKING:
    from costopt_core.cache.engine import SemanticCache
    from costopt_core.engine import CostEngine
    from costopt_core.routing.calibrate import Sample
    from costopt_core.routing.router import Router

__all__ = [
    "WorkloadRequest",
    "WorkloadSample",
    "measure_records",
    "measure_requests",
    "parse_request",
    "read_calibration_samples",
]

_ROLES = ("system", "user", "assistant", "tool")
_KEYS = {
    "prompt",
    "system",
    "messages",
    "response",
    "input_tokens",
    "output_tokens",
    "context",
    "tier",
    "tenant",
    "latency_tolerant",
}


@dataclass(frozen=True)
class WorkloadRequest:
    """One request of a sample, as the application would send it without costopt.

    Attributes:
        messages: the conversation sent (system prompt and history included).
        response: the answer, if known (its size becomes the output tokens).
        input_tokens: the prompt's size, retrieved context included; counted
            from ``messages`` and ``context`` when ``None``.
        output_tokens: the answer's size; counted from ``response`` when
            ``None`` (or the measuring default when there is no response).
        context: retrieved chunks sent with the prompt, as retrieved.
        tier: label: the cheapest tier whose answer is good enough.
        tenant: the tenant (the cache never shares answers across tenants).
        latency_tolerant: may wait for a batch API.
    """

    messages: tuple[Message, ...]
    response: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    context: tuple[str, ...] = ()
    tier: str | None = None
    tenant: str | None = None
    latency_tolerant: bool = False

    @property
    def question(self) -> str:
        """The last user turn (what the cache matches and the summarizer answers)."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return ""


def _fail(where: str, problem: str) -> ConfigurationError:
    return ConfigurationError(f"{where}: {problem}")


def _opt_int(data: Mapping[str, Any], key: str, where: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise _fail(where, f"{key} must be a non-negative integer, got {value!r}")
    return value


def _opt_str(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise _fail(where, f"{key} must be a string, got {type(value).__name__}")
    return value


def _messages(data: Mapping[str, Any], where: str) -> tuple[Message, ...]:
    if "messages" in data:
        raw = data["messages"]
        if not isinstance(raw, list) or not raw:
            raise _fail(where, "messages must be a non-empty list of {role, content}")
        out = []
        for i, m in enumerate(raw):
            if not isinstance(m, Mapping) or m.get("role") not in _ROLES:
                raise _fail(where, f"messages[{i}] needs a role in {_ROLES}, got {m!r:.80}")
            if not isinstance(m.get("content", ""), str):
                raise _fail(where, f"messages[{i}].content must be a string")
            out.append(Message(m["role"], m.get("content", "")))
        return tuple(out)
    prompt = _opt_str(data, "prompt", where)
    if not prompt:
        raise _fail(where, 'a request needs "prompt" (a string) or "messages" (a list)')
    system = _opt_str(data, "system", where)
    return ((Message("system", system),) if system else ()) + (Message("user", prompt),)


def parse_request(data: Any, where: str = "request") -> WorkloadRequest:
    """One sample line (a JSON object) as a :class:`WorkloadRequest`; errors name the field."""
    if not isinstance(data, Mapping):
        raise _fail(where, f"expected a JSON object, got {type(data).__name__}")
    unknown = set(data) - _KEYS
    if unknown:
        raise _fail(where, f"unknown fields {sorted(unknown)}; known: {sorted(_KEYS)}")
    context = data.get("context", [])
    if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
        raise _fail(where, "context must be a list of strings (the retrieved chunks)")
    tolerant = data.get("latency_tolerant", False)
    if not isinstance(tolerant, bool):
        raise _fail(where, f"latency_tolerant must be true or false, got {tolerant!r}")
    return WorkloadRequest(
        messages=_messages(data, where),
        response=_opt_str(data, "response", where),
        input_tokens=_opt_int(data, "input_tokens", where),
        output_tokens=_opt_int(data, "output_tokens", where),
        context=tuple(context),
        tier=_opt_str(data, "tier", where),
        tenant=_opt_str(data, "tenant", where),
        latency_tolerant=tolerant,
    )


#: Fields of a ledger record that no request line has.
_RECORD_KEYS = frozenset(
    {"call_id", "timestamp", "model", "usage", "cost_usd", "baseline_cost_usd", "savings_usd"}
)


def _is_record(data: Any) -> bool:
    """A ledger record (to read as one, so a broken one gets the record's errors)."""
    if not isinstance(data, Mapping):
        return False
    return "call_id" in data or (
        "prompt" not in data and "messages" not in data and not _RECORD_KEYS.isdisjoint(data)
    )


@dataclass(frozen=True)
class WorkloadSample:
    """A sample to project from: requests to replay, or a ledger export's records.

    Attributes:
        requests: requests to measure with the real levers.
        records: the calls of a ledger export (what the levers already did).
        source: where the sample came from, for messages.
    """

    requests: tuple[WorkloadRequest, ...] = ()
    records: tuple[CallRecord, ...] = ()
    source: str = "<sample>"

    @classmethod
    def from_jsonl(cls, path: str | Path) -> WorkloadSample:
        """Read a JSONL file of requests (see the module docs) or a ledger export.

        Raises:
            ConfigurationError: the file is missing, empty, or a line is not a
                request / ledger record (the message names the line and field).
        """
        p = Path(path)
        requests: list[WorkloadRequest] = []
        # Records are read as CostLedger.from_jsonl (costopt report) reads them:
        # one reader, and a call id seen twice (a file concatenated with itself,
        # two exports that overlap) is one call, not two sample requests.
        ledger = CostLedger(max_records=None)
        has_records = False
        for where, data in json_lines(p, "sample"):
            if _is_record(data):
                ledger.add(read_record(where, data))
                has_records = True
            else:
                requests.append(parse_request(data, where))
        if requests and has_records:
            raise ConfigurationError(
                f"{p} mixes request lines and ledger records: give one kind per file"
            )
        if not requests and not has_records:
            raise ConfigurationError(f"sample file {p} has no requests")
        return cls(tuple(requests), tuple(ledger.records()), str(p))

    def __len__(self) -> int:
        return len(self.requests) or len(self.records)


def _removed_lever(record: CallRecord) -> str:
    return "memory" if "memory" in record.savings_usd else "compression"


def measure_records(records: Sequence[CallRecord]) -> list[MeasuredRequest]:
    """What the levers did, read from a ledger's records.

    A thrown-away escalation attempt belongs to the next call of the same
    tenant and framework (the request it was part of), with its own recorded
    usage (``escalated_usage``), which the projection bills it for. A removal record
    (tokens compression or memory kept out) belongs to the next *priced* call
    of the same tenant and framework: a projection leaves unpriced requests
    out, and the tokens would leave with them although the report credits
    them. Ones with no such later call go to the tenant's last priced call
    (same framework first), then the tenant's last call; only a tenant with
    no call at all lends them to the last priced call of another. A lever's
    own model call (``overhead``: a summarizer's, a cache verifier's) is no
    request either: it goes with the next call of the same tenant and
    framework, as an escalation attempt does (the projection bills it when
    its lever is on). Records with unknown token counts are skipped.

    "Priced" is the record's own ``cost_usd``: what the ledger could price.
    """
    out: list[MeasuredRequest] = []
    # (tenant, framework, priced) of out[i], to place what is left at the end.
    where: list[tuple[str | None, str | None, bool]] = []
    removed: dict[tuple[str | None, str | None], Counter[str]] = {}
    # (model, its own usage) of each thrown-away attempt: the projection bills
    # an attempt for its tokens, not for those of the call that answered.
    escalated: dict[tuple[str | None, str | None], list[tuple[str, Usage | None]]] = {}
    # (model, usage, lever) of each call a lever made: billed when that lever is on.
    overhead: dict[tuple[str | None, str | None], list[tuple[str, Usage, OverheadLever]]] = {}
    for r in sorted(records, key=lambda r: r.timestamp):
        key = (r.tenant, r.framework)
        if r.outcome == "removed":
            removed.setdefault(key, Counter())[_removed_lever(r)] += r.usage.input_tokens or 0
            continue
        if r.outcome == "overhead":
            lever = _overhead_lever(r)
            if lever is not None and r.usage.is_known:
                overhead.setdefault(key, []).append((r.model, r.usage, lever))
            continue
        if r.outcome == "escalated":
            own = r.usage if r.usage.is_known else None
            escalated.setdefault(key, []).append((r.model, own))
            continue
        if not r.usage.is_known:
            continue
        priced = r.cost_usd is not None
        attempts = escalated.pop(key, [])
        out.append(
            MeasuredRequest(
                model=r.model,
                usage=r.usage,
                cache=r.outcome if r.outcome in CACHE_OUTCOMES else None,
                removed_input_tokens=dict(removed.pop(key, Counter())) if priced else {},
                escalated=tuple(m for m, _ in attempts),
                batch=r.mode == "batch",
                tier=r.tier,
                tenant=r.tenant,
                escalated_usage=tuple(u for _, u in attempts),
                overhead=tuple(overhead.pop(key, ())),
            )
        )
        where.append((r.tenant, r.framework, priced))
    for key, tokens in removed.items():
        i = _home(where, key)
        if i is not None:
            extra = Counter(out[i].removed_input_tokens)
            extra.update(tokens)
            out[i] = dataclasses.replace(out[i], removed_input_tokens=dict(extra))
    for key, attempts in escalated.items():
        i = _home(where, key)
        if i is not None:
            merged = out[i].attempts() + attempts
            out[i] = dataclasses.replace(
                out[i],
                escalated=tuple(m for m, _ in merged),
                escalated_usage=tuple(u for _, u in merged),
            )
    for key, calls in overhead.items():
        i = _home(where, key)
        if i is not None:
            out[i] = dataclasses.replace(out[i], overhead=(*out[i].overhead, *calls))
    return out


def _overhead_lever(record: CallRecord) -> OverheadLever | None:
    """The lever an ``overhead`` record was charged to (every record the engine writes names
    it, $0 when free or unpriced; None for a hand-written record that does not)."""
    for lever in get_args(OverheadLever):
        if lever in record.savings_usd:
            return cast(OverheadLever, lever)
    return None


def _home(
    where: Sequence[tuple[str | None, str | None, bool]], key: tuple[str | None, str | None]
) -> int | None:
    """The call a left-over record of ``key`` (tenant, framework) is attached to.

    The last call, preferring in turn: priced, of the same tenant and
    framework; priced, of the same tenant; of the same tenant; and only for a
    tenant with no call of its own, priced, then any. None when there is none.
    """
    tenant, framework = key
    best: list[int | None] = [None] * 5  # the last call of each preference, best first
    for i, (t, f, priced) in enumerate(where):
        if t == tenant:
            if priced and f == framework:
                best[0] = i
            if priced:
                best[1] = i
            best[2] = i
        else:
            if priced:
                best[3] = i
            best[4] = i
    own = best[2] is not None  # once the tenant has a call, never another tenant's
    return next((j for j in (best[:3] if own else best[3:]) if j is not None), None)


def _tier_index(tiers: Tiers, label: str | None, where: str) -> int | None:
    if label is None:
        return None
    if label not in tiers.names:
        raise ConfigurationError(
            f"{where} of the sample: tier label {label!r} is not one of the tiers "
            f"{list(tiers.names)}; label it with one of those names, or add a tier of that "
            "name (--tier NAME=MODEL on the command line)"
        )
    return tiers.index(label)


def measure_requests(
    requests: Sequence[WorkloadRequest],
    *,
    tiers: Tiers,
    engine: CostEngine,
    router: Router | None = None,
    cache: SemanticCache | bool | None = True,
    compression: bool = True,
    memory: bool = True,
    expected_output_tokens: int = 200,
) -> list[MeasuredRequest]:
    """Replay requests through the real levers and say what each did.

    In sample order: the cache looks each request up (in its tenant's scope)
    and stores its answer on a miss; the router picks a tier for the misses
    (a request labelled with a dearer tier than the router chose pays the
    thrown-away attempts of every tier in between, as the escalation would);
    the extractive summarizer cuts the retrieved context for the question;
    the summarizing memory (after the flush a running conversation would have
    made) cuts long histories.

    Args:
        requests: the sample.
        tiers: cheap to frontier; each request is served by its tier's
            primary model.
        engine: token counter, embedder and prices.
        router: the routing policy; a heuristic ``Router(tiers)`` by default.
        cache: a cache to replay through (a fresh in-memory one on the
            engine's embedder when ``True``; no cache when ``False``/``None``).
        compression: measure the extractive summarizer on ``context``.
        memory: measure the summarizing memory on long conversations.
        expected_output_tokens: output size of requests with neither
            ``output_tokens`` nor ``response``.
    """
    from costopt_core.cache.engine import SemanticCache
    from costopt_core.cache.entry import CachedResponse
    from costopt_core.cache.keys import CacheRequest
    from costopt_core.context.summarize import summarize_extractive
    from costopt_core.memory.conversation import ConversationMemory
    from costopt_core.routing.router import Router

    if expected_output_tokens < 0:
        raise ConfigurationError(
            f"expected_output_tokens must be >= 0, got {expected_output_tokens!r}"
        )
    router = router or Router(tiers)
    if cache is True:
        cache = SemanticCache(embedder=engine.embedder)
    count = engine.tokens.count
    out: list[MeasuredRequest] = []
    for i, req in enumerate(requests):
        where = f"request {i + 1}"
        label = _tier_index(tiers, req.tier, where)
        prompt_tokens = engine.tokens.count_messages(req.messages).tokens
        context_tokens = sum(count(c) for c in req.context)
        full_in = req.input_tokens
        if full_in is None:
            full_in = prompt_tokens + context_tokens
        out_tokens = req.output_tokens
        if out_tokens is None:
            out_tokens = count(req.response) if req.response else expected_output_tokens

        hit: CallOutcome | None = None
        if cache:
            creq = CacheRequest(messages=req.messages, model="router", tenant=req.tenant)
            found = cache.lookup(creq)
            if found is not None:
                hit = "cache_exact" if found.tier == "exact" else "cache_semantic"
            else:
                usage = Usage(input_tokens=full_in, output_tokens=out_tokens)
                answer = req.response or f"(answer {i})"
                cache.store(creq, CachedResponse(answer, usage=usage, finish_reason="stop"))

        removed: dict[str, int] = {}
        if hit is None and compression and req.context:
            summary = summarize_extractive(req.question, req.context, count_tokens=count)
            removed["compression"] = max(0, summary.removed_tokens)
        if hit is None and memory and len(req.messages) > 2:
            conv = ConversationMemory(engine=engine, record_savings=False)
            conv.update(req.messages[:-1])
            view = conv.view(req.messages)
            removed["memory"] = max(0, view.tokens_naive - view.tokens_sent)
        cut = sum(removed.values())
        if cut >= full_in:  # counted tokens can disagree with given ones; keep one token sent
            scale = (full_in - 1) / cut if cut else 0
            removed = {k: int(v * scale) for k, v in removed.items()}
        removed = {k: v for k, v in removed.items() if v > 0}

        decision = router.route(req.messages)
        start = decision.tier_index
        final = start if label is None else max(start, label)
        out.append(
            MeasuredRequest(
                model=tiers[final].primary,
                usage=Usage(input_tokens=full_in - sum(removed.values()), output_tokens=out_tokens),
                cache=hit,
                removed_input_tokens=removed,
                escalated=tuple(tiers[t].primary for t in range(start, final)),
                batch=req.latency_tolerant,
                tier=tiers[final].name,
                tenant=req.tenant,
            )
        )
    return out


def _labels(raw: Any, tiers: Tiers, where: str) -> tuple[float, ...]:
    if isinstance(raw, Mapping):
        missing = [t for t in tiers.names if t not in raw]
        extra = [k for k in raw if k not in tiers.names]
        if missing or extra:
            raise _fail(
                where,
                f"labels must name exactly the tiers {list(tiers.names)} "
                f"(missing {missing}, unknown {extra})",
            )
        values = [raw[t] for t in tiers.names]
    elif isinstance(raw, list):
        if len(raw) != len(tiers):
            raise _fail(where, f"{len(raw)} labels for {len(tiers)} tiers {list(tiers.names)}")
        values = raw
    else:
        raise _fail(where, "labels must be {tier: 0/1 or score} or a list, cheapest first")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
            raise _fail(where, f"a label must be 0/1 or a score in [0, 1], got {v!r}")
        out.append(float(v))
    return tuple(out)


def read_calibration_samples(
    path: str | Path, tiers: Tiers
) -> tuple[list[Sample], list[tuple[str, str, int]]]:
    """Labelled samples for ``costopt calibrate``: routing samples and cache pairs.

    A routing line is ``{"prompt" | "messages", "labels": {tier: 0/1 or score}}``
    (or ``labels`` as a list, cheapest first); a cache line is
    ``{"a": text, "b": text, "label": 0 | 1}``. One file may hold both kinds.

    Raises:
        ConfigurationError: a missing file or a bad line (named with its field).
    """
    from costopt_core.routing.calibrate import Sample

    p = Path(path)
    samples: list[Sample] = []
    pairs: list[tuple[str, str, int]] = []
    for where, data in json_lines(p, "samples"):
        if not isinstance(data, Mapping):
            raise _fail(where, f"expected a JSON object, got {type(data).__name__}")
        if "labels" in data:
            body = {k: v for k, v in data.items() if k in ("prompt", "system", "messages")}
            labels = _labels(data["labels"], tiers, where)
            samples.append(Sample(_messages(body, where), labels))
        elif {"a", "b", "label"} <= set(data):
            a, b, label = data["a"], data["b"], data["label"]
            if not isinstance(a, str) or not isinstance(b, str) or label not in (0, 1):
                raise _fail(where, "a cache pair needs text a, text b and label 0 or 1")
            pairs.append((a, b, int(label)))
        else:
            raise _fail(
                where,
                'expected a routing sample {"prompt", "labels"} or a cache pair '
                '{"a", "b", "label"}',
            )
    if not samples and not pairs:
        raise ConfigurationError(f"samples file {p} has no samples")
    return samples, pairs
