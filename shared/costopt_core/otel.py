"""Costs on traces: an optional OpenTelemetry exporter of the ledger's calls.

Observability stacks already collect LLM spans (OpenLLMetry, the
opentelemetry-instrumentation packages, a user's own spans); what they lack is
what each call cost, what it would have cost on the baseline model, and which
lever saved the difference. :class:`OTelExporter` subscribes to a
:class:`~costopt_core.ledger.CostLedger` and puts every recorded call on a span,
in the OpenTelemetry GenAI semantic conventions (``gen_ai.*``) plus
``costopt.*`` attributes, and optionally on metrics.

OpenTelemetry is an optional extra (``llm-costopt[otel]``): it is imported in
this module only, and only when an exporter is built, so the rest of the engine
(and importing this module) works without it. The attribute builders
(:func:`gen_ai_attributes`, :func:`costopt_attributes`) are plain functions of
a :class:`~costopt_core.types.CallRecord` and need no OpenTelemetry at all.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from costopt_core.engine import CostEngine
from costopt_core.errors import ConfigurationError
from costopt_core.ledger import CostLedger
from costopt_core.pricing import PriceCatalog
from costopt_core.types import CACHE_OUTCOMES, CALLED_OUTCOMES, CallRecord, money_str

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, MeterProvider, UpDownCounter
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = [
    "AttributeValue",
    "OTelExporter",
    "costopt_attributes",
    "gen_ai_attributes",
    "provider_name",
]

log = logging.getLogger("costopt.otel")

#: What these builders put in an attribute (a subset of OpenTelemetry's ``AttributeValue``).
AttributeValue = str | bool | int | float

INSTALL_HINT = "pip install 'llm-costopt[otel]'"

# GenAI semantic conventions (spans and metrics), written out rather than taken
# from opentelemetry-semantic-conventions, whose gen_ai module is "incubating".
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
GEN_AI_CLIENT_TOKEN_USAGE = "gen_ai.client.token.usage"
# The conventions' advised buckets for gen_ai.client.token.usage.
_TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))

_PREFIX = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_OPERATION = re.compile(r"^[a-z][a-z0-9_.]*$")
# The price catalog's provider names where the conventions' well-known value
# differs. A Gemini model may be reached through AI Studio or Vertex: the
# catalog cannot tell, so the generic Google value is used.
_PROVIDER_NAMES = {"google": "gcp.gen_ai"}
# Spans that already carry a record: a second record in the same current span
# (an escalation, two calls under one request span) gets a child span instead
# of overwriting the first one's attributes.
_CLAIMED_SPANS = 4096
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def provider_name(catalog: PriceCatalog, model: str) -> str | None:
    """``gen_ai.provider.name`` of ``model`` from the catalog's provider, or ``None``.

    ``None`` for a model the catalog does not price (no guess is made).
    """
    price = catalog.get(model, warn=False)
    if price is None:
        return None
    return _PROVIDER_NAMES.get(price.provider, price.provider)


def gen_ai_attributes(
    record: CallRecord, *, provider: str | None = None, operation: str = "chat"
) -> dict[str, AttributeValue]:
    """The GenAI semantic-convention attributes of one call.

    Token counts follow the conventions: ``gen_ai.usage.input_tokens`` is the
    whole prompt (cache reads and writes included, as in
    :class:`~costopt_core.types.Usage`), ``cache_creation`` sums both
    cache-write kinds, reasoning tokens are part of the output. Unknown counts
    are left out, never written as 0. A cache hit or a removal used no tokens
    of the provider, so it gets no ``gen_ai.usage.*`` (see
    :func:`costopt_attributes` for the tokens it avoided).

    Args:
        record: the call.
        provider: ``gen_ai.provider.name`` (see :func:`provider_name`); left out if ``None``.
        operation: ``gen_ai.operation.name``.
    """
    out: dict[str, AttributeValue] = {
        GEN_AI_OPERATION_NAME: operation,
        GEN_AI_REQUEST_MODEL: record.model,
        GEN_AI_RESPONSE_MODEL: record.model,
    }
    if provider is not None:
        out[GEN_AI_PROVIDER_NAME] = provider
    if record.outcome not in CALLED_OUTCOMES:
        return out
    u = record.usage
    if u.input_tokens is not None:
        out[GEN_AI_USAGE_INPUT_TOKENS] = u.input_tokens
    if u.output_tokens is not None:
        out[GEN_AI_USAGE_OUTPUT_TOKENS] = u.output_tokens
    if u.cache_read_tokens is not None:
        out[GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = u.cache_read_tokens
    if u.cache_write_5m_tokens is not None or u.cache_write_1h_tokens is not None:
        written = (u.cache_write_5m_tokens or 0) + (u.cache_write_1h_tokens or 0)
        out[GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = written
    if u.reasoning_tokens is not None:
        out[GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = u.reasoning_tokens
    return out


def _money(out: dict[str, AttributeValue], name: str, amount: Decimal | None) -> None:
    """``name`` as a float (for backends to sum) and ``name_exact`` as the exact decimal text."""
    if amount is None:
        return
    out[name] = float(amount)
    text = money_str(amount)
    assert text is not None
    out[f"{name}_exact"] = text


def costopt_attributes(
    record: CallRecord, *, prefix: str = "costopt", include_tenant: bool = True
) -> dict[str, AttributeValue]:
    """costopt's own attributes of one call: cost, baseline, savings, routing and cache facts.

    Money is written twice: ``<prefix>.cost_usd`` as a float, which backends
    can sum and chart, and ``<prefix>.cost_usd_exact`` as the ledger's exact
    ``Decimal`` text (same for ``baseline_cost_usd`` and ``savings_usd``).
    An unknown price leaves the cost (and the savings) out and sets
    ``<prefix>.cost_known`` to ``False``: it is never written as 0. Savings
    per lever (``<prefix>.savings.<lever>_usd``, floats) are present only
    when both the cost and the baseline are known, as the ledger counts them.

    Args:
        record: the call.
        prefix: namespace of the attributes.
        include_tenant: write ``<prefix>.tenant`` (tenant ids can be sensitive).
    """
    p = prefix
    out: dict[str, AttributeValue] = {
        f"{p}.call_id": record.call_id,
        f"{p}.model": record.model,
        f"{p}.outcome": record.outcome,
        f"{p}.cache_hit": record.outcome in CACHE_OUTCOMES,
        f"{p}.mode": record.mode,
        f"{p}.estimated": record.estimated,
        f"{p}.cost_known": record.cost_usd is not None,
    }
    if record.tier is not None:
        out[f"{p}.tier"] = record.tier
    if include_tenant and record.tenant is not None:
        out[f"{p}.tenant"] = record.tenant
    if record.framework is not None:
        out[f"{p}.framework"] = record.framework
    _money(out, f"{p}.cost_usd", record.cost_usd)
    _money(out, f"{p}.baseline_cost_usd", record.baseline_cost_usd)
    total = record.total_savings_usd
    _money(out, f"{p}.savings_usd", total)
    if total is not None:
        for lever, amount in record.savings_usd.items():
            out[f"{p}.savings.{lever}_usd"] = float(amount)
    u = record.usage
    if record.outcome in CALLED_OUTCOMES:
        # The conventions have one cache-creation count; the two kinds are priced apart.
        if u.cache_write_5m_tokens is not None:
            out[f"{p}.usage.cache_creation_5m.input_tokens"] = u.cache_write_5m_tokens
        if u.cache_write_1h_tokens is not None:
            out[f"{p}.usage.cache_creation_1h.input_tokens"] = u.cache_write_1h_tokens
    elif record.outcome in CACHE_OUTCOMES:
        if u.input_tokens is not None:
            out[f"{p}.avoided.input_tokens"] = u.input_tokens
        if u.output_tokens is not None:
            out[f"{p}.avoided.output_tokens"] = u.output_tokens
    elif record.outcome == "removed" and u.input_tokens is not None:
        out[f"{p}.removed.input_tokens"] = u.input_tokens
    return out


def _unix_ns(ts: datetime) -> int:
    """Nanoseconds since the epoch, exactly (a naive timestamp is taken as UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    d = ts - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000_000 + d.microseconds * 1_000


class _Instruments:
    """The exporter's metric instruments (built once per exporter)."""

    def __init__(self, meter_provider: MeterProvider | None, prefix: str, version: str) -> None:
        from opentelemetry import metrics

        meter = (
            meter_provider.get_meter("costopt", version)
            if meter_provider is not None
            else metrics.get_meter("costopt", version)
        )
        self.calls: Counter = meter.create_counter(
            f"{prefix}.calls", unit="{call}", description="LLM calls recorded by costopt"
        )
        self.cost: Counter = meter.create_counter(
            f"{prefix}.cost", unit="USD", description="Spend on LLM calls of known price"
        )
        # Savings can be negative (an escalated attempt), so not a monotonic counter.
        self.savings: UpDownCounter = meter.create_up_down_counter(
            f"{prefix}.savings",
            unit="USD",
            description="Savings against the all-frontier baseline, by lever",
        )
        self.tokens: Histogram = meter.create_histogram(
            GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )


class OTelExporter:
    """Puts every call of a ledger on an OpenTelemetry span (and optionally metrics).

    For each recorded call, if ``attach_to_current_span`` and the current span
    is recording (the LLM span of the user's own instrumentation, or a span
    the user opened around the call), the attributes are set on it: the
    ``gen_ai.*`` ones only where that span does not have them yet (what the
    instrumentation saw on the wire wins), the ``costopt.*`` ones always. A
    span carries one record: a second call recorded under the same span gets a
    span of its own. Otherwise the exporter starts a span of its own, a child
    of the current context, named ``"{gen_ai.operation.name} {model}"`` (kind
    CLIENT; INTERNAL for a cache hit, which calls no provider), from the
    record's timestamp minus its latency to the timestamp, and ends it.

    Input tokens kept out of calls by compression or memory (outcome
    ``removed``, no call) become an event ``costopt.tokens_removed`` on the
    current span, or a zero-length span of that name when none is recording.

    Attributes: see :func:`gen_ai_attributes` and :func:`costopt_attributes`.
    Metrics (``metrics=True`` or a ``meter_provider``): counters
    ``costopt.calls``, ``costopt.cost`` (USD, known prices only) and
    ``costopt.savings`` (USD, by ``costopt.lever``; an up-down counter since an
    escalation saves a negative amount), and the conventions' histogram
    ``gen_ai.client.token.usage`` by ``gen_ai.token.type``.

    Exporting never fails the user's call: an error is logged and counted in
    :attr:`errors`.

    Args:
        tracer_provider: where spans go; the global provider if neither this
            nor ``tracer`` is given.
        tracer: a tracer to use instead of one from a provider.
        meter_provider: where metrics go (turns metrics on).
        metrics: turn metrics on with the global meter provider.
        spans: export spans (turn off for metrics only).
        attach_to_current_span: put the attributes on the current recording span.
        include_tenant: write the tenant id (tenant ids can be sensitive).
        attribute_prefix: namespace of costopt's own attributes and metrics.
        operation_name: ``gen_ai.operation.name`` of the calls (``chat`` for chat
            models, ``text_completion`` for completion LLMs).
        export_removed: export a span for each removal of input tokens
            (compression, memory); their savings are in the metrics either way.
        catalog: prices used to name the provider when attached to a bare
            ledger; an attached engine's own catalog is used for its calls.

    Raises:
        ConfigurationError: OpenTelemetry is not installed, or an option is invalid.

    Example:
        >>> exporter = OTelExporter(tracer_provider=provider).attach(engine)  # doctest: +SKIP
        >>> handler = CostCallbackHandler(engine)  # doctest: +SKIP
        >>> chain.invoke(question, config={"callbacks": [handler]})  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        tracer: Tracer | None = None,
        meter_provider: MeterProvider | None = None,
        metrics: bool = False,
        spans: bool = True,
        attach_to_current_span: bool = True,
        include_tenant: bool = True,
        attribute_prefix: str = "costopt",
        operation_name: str = "chat",
        export_removed: bool = True,
        catalog: PriceCatalog | None = None,
    ) -> None:
        if tracer is not None and tracer_provider is not None:
            raise ConfigurationError(
                "pass either tracer or tracer_provider to OTelExporter, not both"
            )
        if not isinstance(attribute_prefix, str) or not _PREFIX.match(attribute_prefix):
            raise ConfigurationError(
                f"attribute_prefix {attribute_prefix!r} is not an attribute namespace; use "
                "lowercase dot-separated words such as 'costopt' or 'acme.llm_costs'"
            )
        if not isinstance(operation_name, str) or not _OPERATION.match(operation_name):
            raise ConfigurationError(
                f"operation_name {operation_name!r} is not a gen_ai.operation.name; use e.g. "
                "'chat', 'text_completion' or 'generate_content'"
            )
        try:
            from opentelemetry import trace
        except ImportError:
            raise ConfigurationError(
                f"OTelExporter needs OpenTelemetry, which is not installed: {INSTALL_HINT}"
            ) from None
        import costopt_core

        version = costopt_core.__version__
        if tracer is None:
            # Getting a tracer does no I/O; from the global provider it is a proxy
            # that follows a provider set later.
            tracer = (
                tracer_provider.get_tracer("costopt", version)
                if tracer_provider is not None
                else trace.get_tracer("costopt", version)
            )
        self._tracer: Tracer = tracer
        self._instruments = (
            _Instruments(meter_provider, attribute_prefix, version)
            if metrics or meter_provider is not None
            else None
        )
        self.spans = spans
        self.attach_to_current_span = attach_to_current_span
        self.include_tenant = include_tenant
        self.prefix = attribute_prefix
        self.operation_name = operation_name
        self.export_removed = export_removed
        self.catalog = catalog
        #: Records that could not be exported (each one logged).
        self.errors = 0
        self.exported = 0
        self._lock = threading.Lock()
        self._claimed: OrderedDict[tuple[int, int], None] = OrderedDict()
        # Ledgers subscribed to (by id) and the catalog for each; the ledger has
        # no unsubscribe, so detaching only stops exporting.
        self._subscribed: dict[int, PriceCatalog | None] = {}
        self._active: frozenset[int] = frozenset()
        self._default_catalog: PriceCatalog | None = None

    # -- wiring -------------------------------------------------------------
    def attach(self, target: CostEngine | CostLedger) -> OTelExporter:
        """Export every call recorded from now on in ``target`` (an engine or a ledger).

        Attaching twice is harmless (each call is exported once). Returns ``self``.
        """
        ledger, catalog = self._resolve(target)
        key = id(ledger)
        with self._lock:
            first = key not in self._subscribed
            self._subscribed[key] = catalog
            self._active = self._active | {key}
        if first:
            ledger.subscribe(functools.partial(self._on_record, key))
        return self

    def detach(self, target: CostEngine | CostLedger | None = None) -> None:
        """Stop exporting the calls of ``target`` (every attached ledger if ``None``).

        The ledger keeps its listener (it has no unsubscribe); it does nothing
        until the ledger is attached again.
        """
        with self._lock:
            if target is None:
                self._active = frozenset()
            else:
                self._active = self._active - {id(self._resolve(target)[0])}

    @property
    def attached(self) -> bool:
        """True while some ledger's calls are exported."""
        return bool(self._active)

    @staticmethod
    def _resolve(target: CostEngine | CostLedger) -> tuple[CostLedger, PriceCatalog | None]:
        if isinstance(target, CostLedger):
            return target, None
        if isinstance(target, CostEngine):
            return target.ledger, target.catalog
        raise ConfigurationError(
            f"OTelExporter.attach takes a CostEngine or a CostLedger, got {type(target).__name__}"
        )

    def _on_record(self, key: int, record: CallRecord) -> None:
        if key not in self._active:
            return
        self.export(record, catalog=self._subscribed.get(key))

    # -- export -------------------------------------------------------------
    def export(self, record: CallRecord, *, catalog: PriceCatalog | None = None) -> None:
        """Export one record now (e.g. to replay a ledger export into traces).

        Never raises: a failure is logged and counted in :attr:`errors`.
        """
        try:
            self._export(record, catalog)
        except Exception:  # an exporter must never fail the user's call
            with self._lock:
                self.errors += 1
            log.exception("costopt could not export call %s to OpenTelemetry", record.call_id)
        else:
            with self._lock:
                self.exported += 1

    def _catalog(self, catalog: PriceCatalog | None) -> PriceCatalog:
        if catalog is not None:
            return catalog
        if self.catalog is not None:
            return self.catalog
        if self._default_catalog is None:
            self._default_catalog = PriceCatalog.default()
        return self._default_catalog

    def _export(self, record: CallRecord, catalog: PriceCatalog | None) -> None:
        removed = record.outcome == "removed"
        provider = provider_name(self._catalog(catalog), record.model)
        # export_removed is about spans: a removal's savings stay in the savings
        # metric either way, or its levers would not add up to the ledger's.
        if self.spans and not (removed and not self.export_removed):
            own = costopt_attributes(record, prefix=self.prefix, include_tenant=self.include_tenant)
            if removed:
                self._span_removal(record, own)
            else:
                gen = gen_ai_attributes(record, provider=provider, operation=self.operation_name)
                self._span_call(record, gen, own)
        if self._instruments is not None:
            self._measure(record, provider)

    def _current(self) -> Span | None:
        """The current span if the record may go on it."""
        if not self.attach_to_current_span:
            return None
        from opentelemetry import trace

        span = trace.get_current_span()
        return span if span.is_recording() else None

    def _claim(self, span: Span) -> bool:
        """True the first time a record goes on ``span``."""
        ctx = span.get_span_context()
        key = (ctx.trace_id, ctx.span_id)
        with self._lock:
            if key in self._claimed:
                return False
            self._claimed[key] = None
            if len(self._claimed) > _CLAIMED_SPANS:
                self._claimed.popitem(last=False)
        return True

    def _span_call(
        self,
        record: CallRecord,
        gen: dict[str, AttributeValue],
        own: dict[str, AttributeValue],
    ) -> None:
        span = self._current()
        if span is not None and self._claim(span):
            # Only SDK spans expose their attributes; others get every attribute.
            existing: Mapping[str, Any] = getattr(span, "attributes", None) or {}
            span.set_attributes({k: v for k, v in gen.items() if k not in existing})
            span.set_attributes(own)
            return
        from opentelemetry.trace import SpanKind

        end = _unix_ns(record.timestamp)
        latency = record.latency_ms
        start = end - round(latency * 1_000_000) if latency and latency > 0 else end
        kind = SpanKind.INTERNAL if record.outcome in CACHE_OUTCOMES else SpanKind.CLIENT
        new = self._tracer.start_span(
            f"{gen[GEN_AI_OPERATION_NAME]} {record.model}",
            kind=kind,
            attributes={**gen, **own},
            start_time=start,
        )
        new.end(end_time=end)

    def _span_removal(self, record: CallRecord, own: dict[str, AttributeValue]) -> None:
        name = f"{self.prefix}.tokens_removed"
        at = _unix_ns(record.timestamp)
        span = self._current()
        if span is not None:
            span.add_event(name, attributes=own, timestamp=at)
            return
        self._tracer.start_span(name, attributes=own, start_time=at).end(end_time=at)

    def _measure(self, record: CallRecord, provider: str | None) -> None:
        inst = self._instruments
        assert inst is not None
        p = self.prefix
        attrs: dict[str, AttributeValue] = {
            GEN_AI_OPERATION_NAME: self.operation_name,
            GEN_AI_REQUEST_MODEL: record.model,
            f"{p}.outcome": record.outcome,
            f"{p}.mode": record.mode,
        }
        if provider is not None:
            attrs[GEN_AI_PROVIDER_NAME] = provider
        if record.tier is not None:
            attrs[f"{p}.tier"] = record.tier
        if self.include_tenant and record.tenant is not None:
            attrs[f"{p}.tenant"] = record.tenant
        if record.framework is not None:
            attrs[f"{p}.framework"] = record.framework
        if record.outcome != "removed":  # a removal is no call
            inst.calls.add(1, {**attrs, f"{p}.cost_known": record.cost_usd is not None})
            if record.cost_usd is not None:
                inst.cost.add(float(record.cost_usd), attrs)
        if record.cost_usd is not None and record.baseline_cost_usd is not None:
            for lever, amount in record.savings_usd.items():
                inst.savings.add(float(amount), {**attrs, f"{p}.lever": lever})
        if record.outcome in CALLED_OUTCOMES:
            u = record.usage
            for kind, count in (("input", u.input_tokens), ("output", u.output_tokens)):
                if count is not None:
                    inst.tokens.record(count, {**attrs, GEN_AI_TOKEN_TYPE: kind})
