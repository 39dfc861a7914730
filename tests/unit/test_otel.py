"""OTelExporter: every priced call on an OpenTelemetry span, in the GenAI conventions."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from langchain_core.runnables import RunnableConfig
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from costopt_core import ConfigurationError, CostEngine, CostLedger, Usage
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.otel import OTelExporter, costopt_attributes, gen_ai_attributes
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from langchain_costopt import CostCallbackHandler
from langchain_costopt.cached_model import CachedChatModel
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt import CostEventHandler
from llamaindex_costopt.testing import ScriptedLLM

# claude-sonnet-4-5 per Mtok: $3 in, $0.30 cache read, $3.75 / $6 cache write 5m / 1h, $15 out.
CLAUDE_USAGE = Usage(
    input_tokens=2000,
    output_tokens=300,
    cache_read_tokens=800,
    cache_write_5m_tokens=200,
    cache_write_1h_tokens=100,
    reasoning_tokens=50,
)
# 900 uncached * 3 + 800 * 0.30 + 200 * 3.75 + 100 * 6 + 300 * 15 = 8790 micro-dollars
CLAUDE_COST = Decimal("0.008790")
# gpt-4o baseline, nothing cached: 2000 * 2.50 + 300 * 10 = 8000 micro-dollars
CLAUDE_BASELINE = Decimal("0.008000")
# Claude uncached would be 10500: routing 8000 - 10500, provider cache 10500 - 8790.
CLAUDE_SAVINGS = {"routing": Decimal("-0.002500"), "provider_cache": Decimal("0.001710")}

# gpt-4o-mini: $0.15 in, $0.075 cached read, $0.60 out per Mtok.
MINI_USAGE = Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=400)
MINI_COST = Decimal("0.000240")  # 600 * 0.15 + 400 * 0.075 + 200 * 0.60
MINI_BASELINE = Decimal("0.004500")  # 1000 * 2.50 + 200 * 10.00 on gpt-4o
MINI_SAVINGS = {"routing": Decimal("0.004230"), "provider_cache": Decimal("0.000030")}

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
NOW_NS = 1_795_262_400 * 10**9  # NOW as nanoseconds since the epoch


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(spans: InMemorySpanExporter) -> TracerProvider:
    # A provider of the test's own: the global one is never set.
    p = TracerProvider()
    p.add_span_processor(SimpleSpanProcessor(spans))
    return p


def claude() -> ScriptedChatModel:
    r = ScriptedResponse("Paris.", CLAUDE_USAGE, model="claude-sonnet-4-5-20250929")
    return ScriptedChatModel(script=Script([r]), model_name="claude-sonnet-4-5")


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def assert_money(a: dict[str, Any], name: str, amount: Decimal) -> None:
    assert a[f"costopt.{name}"] == float(amount)
    assert Decimal(a[f"costopt.{name}_exact"]) == amount


# -- one call through each framework ---------------------------------------------


def test_langchain_call_gets_one_genai_span_with_its_cost(
    engine: CostEngine, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    exporter = OTelExporter(tracer_provider=provider).attach(engine)
    handler = CostCallbackHandler(engine)
    meta = {"costopt_tenant": "acme", "costopt_tier": "strong"}
    claude().invoke("Capital of France?", config={"callbacks": [handler], "metadata": meta})

    [rec] = engine.ledger.records()
    assert rec.usage == CLAUDE_USAGE
    assert rec.cost_usd == CLAUDE_COST and rec.baseline_cost_usd == CLAUDE_BASELINE
    [span] = spans.get_finished_spans()
    assert span.name == "chat claude-sonnet-4-5-20250929"
    assert span.kind is SpanKind.CLIENT
    assert span.parent is None
    a = attrs(span)
    assert {k: v for k, v in a.items() if k.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5-20250929",
        "gen_ai.response.model": "claude-sonnet-4-5-20250929",
        "gen_ai.usage.input_tokens": 2000,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 800,
        "gen_ai.usage.cache_creation.input_tokens": 300,
        "gen_ai.usage.reasoning.output_tokens": 50,
    }
    assert a["costopt.usage.cache_creation_5m.input_tokens"] == 200
    assert a["costopt.usage.cache_creation_1h.input_tokens"] == 100
    assert_money(a, "cost_usd", CLAUDE_COST)
    assert_money(a, "baseline_cost_usd", CLAUDE_BASELINE)
    assert_money(a, "savings_usd", CLAUDE_BASELINE - CLAUDE_COST)  # negative: no saving
    assert a["costopt.savings.routing_usd"] == float(CLAUDE_SAVINGS["routing"])
    assert a["costopt.savings.provider_cache_usd"] == float(CLAUDE_SAVINGS["provider_cache"])
    assert a["costopt.cost_known"] is True
    assert a["costopt.tier"] == "strong"
    assert a["costopt.tenant"] == "acme"
    assert a["costopt.framework"] == "langchain"
    assert a["costopt.outcome"] == "model"
    assert a["costopt.cache_hit"] is False
    assert a["costopt.mode"] == "sync"
    assert a["costopt.estimated"] is False
    assert a["costopt.call_id"] == rec.call_id
    # The span ends when the call was recorded and lasts the measured latency.
    assert span.end_time == NOW_NS
    assert rec.latency_ms is not None and rec.latency_ms > 0
    assert span.start_time == NOW_NS - round(rec.latency_ms * 1_000_000)
    assert exporter.exported == 1 and exporter.errors == 0


def test_llamaindex_call_gets_one_genai_span_with_its_cost(
    engine: CostEngine, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    OTelExporter(tracer_provider=provider).attach(engine)
    llm = ScriptedLLM(script=Script([ScriptedResponse("Paris.", MINI_USAGE, model="gpt-4o-mini")]))
    handler = CostEventHandler(engine, tenant="globex").attach()
    try:
        llm.chat([])
    finally:
        handler.detach()

    [rec] = engine.ledger.records()
    assert rec.cost_usd == MINI_COST
    [span] = spans.get_finished_spans()
    assert span.name == "chat gpt-4o-mini"
    a = attrs(span)
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] == 1000
    assert a["gen_ai.usage.output_tokens"] == 200
    assert a["gen_ai.usage.cache_read.input_tokens"] == 400
    # The OpenAI wire format has no cache writes: known zero, not unknown.
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 0
    assert "gen_ai.usage.reasoning.output_tokens" not in a  # unknown stays absent
    assert_money(a, "cost_usd", MINI_COST)
    assert_money(a, "baseline_cost_usd", MINI_BASELINE)
    assert_money(a, "savings_usd", MINI_BASELINE - MINI_COST)
    for lever, amount in MINI_SAVINGS.items():
        assert a[f"costopt.savings.{lever}_usd"] == float(amount)
    assert a["costopt.framework"] == "llamaindex"
    assert a["costopt.tenant"] == "globex"
    assert a["costopt.call_id"] == rec.call_id


# -- where the attributes go ------------------------------------------------------


def test_attributes_go_on_the_users_current_span(
    engine: CostEngine, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    OTelExporter(tracer_provider=provider).attach(engine)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("llm call") as mine:
        # What the user's instrumentation saw on the wire wins over the catalog.
        mine.set_attribute("gen_ai.provider.name", "aws.bedrock")
        claude().invoke("hi", config={"callbacks": [CostCallbackHandler(engine)]})
    [span] = spans.get_finished_spans()  # no span of our own
    assert span.name == "llm call"
    a = attrs(span)
    assert a["gen_ai.provider.name"] == "aws.bedrock"
    assert a["gen_ai.usage.input_tokens"] == 2000
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 300
    assert_money(a, "cost_usd", CLAUDE_COST)


async def test_async_calls_reach_the_current_span_too(
    engine: CostEngine, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    OTelExporter(tracer_provider=provider).attach(engine)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("langchain call"):
        await claude().ainvoke("hi", config={"callbacks": [CostCallbackHandler(engine)]})
    llm = ScriptedLLM(script=Script([ScriptedResponse("Paris.", MINI_USAGE, model="gpt-4o-mini")]))
    handler = CostEventHandler(engine).attach()
    try:
        with tracer.start_as_current_span("llamaindex call"):
            await llm.achat([])
    finally:
        handler.detach()
    lc, li = spans.get_finished_spans()  # the user's two spans, none of our own
    assert (lc.name, li.name) == ("langchain call", "llamaindex call")
    assert_money(attrs(lc), "cost_usd", CLAUDE_COST)
    assert attrs(lc)["costopt.framework"] == "langchain"
    assert_money(attrs(li), "cost_usd", MINI_COST)
    assert attrs(li)["costopt.framework"] == "llamaindex"


def test_a_second_call_under_one_span_gets_a_child_span(
    engine: CostEngine, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    OTelExporter(tracer_provider=provider).attach(engine)
    handler = CostCallbackHandler(engine)
    with provider.get_tracer("app").start_as_current_span("request"):
        claude().invoke("one", config={"callbacks": [handler]})
        claude().invoke("two", config={"callbacks": [handler]})
    child, parent = spans.get_finished_spans()
    first, second = engine.ledger.records()
    assert attrs(parent)["costopt.call_id"] == first.call_id
    assert attrs(child)["costopt.call_id"] == second.call_id
    assert child.parent is not None and child.parent.span_id == parent.context.span_id
    assert child.name == "chat claude-sonnet-4-5-20250929"


def test_without_attaching_each_call_is_a_child_span_of_its_own(
    engine: CostEngine, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    OTelExporter(tracer_provider=provider, attach_to_current_span=False).attach(engine)
    with provider.get_tracer("app").start_as_current_span("request"):
        claude().invoke("hi", config={"callbacks": [CostCallbackHandler(engine)]})
    child, parent = spans.get_finished_spans()
    assert "costopt.cost_usd" not in attrs(parent)
    assert attrs(child)["costopt.cost_usd"] == float(CLAUDE_COST)
    assert child.parent is not None and child.parent.span_id == parent.context.span_id


# -- outcomes -----------------------------------------------------------------------


def test_a_cache_hit_costs_zero_and_uses_no_provider_tokens(
    provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    OTelExporter(tracer_provider=provider).attach(engine)
    usage = Usage(1000, 200, cache_read_tokens=0, cache_write_5m_tokens=0, cache_write_1h_tokens=0)
    model = ScriptedChatModel(script=Script([ScriptedResponse("A.", usage, model="gpt-4o-mini")]))
    cached = CachedChatModel(model=model, semantic_cache=CacheEngine(embedder=FakeEmbedder(256)))
    cfg: RunnableConfig = {"callbacks": [CostCallbackHandler(engine)]}
    cached.invoke("How do I reset my password?", config=cfg)
    cached.invoke("How do I reset my password?", config=cfg)

    miss, hit = engine.ledger.records()
    assert (miss.outcome, hit.outcome) == ("model", "cache_exact")
    span_miss, span_hit = spans.get_finished_spans()
    assert attrs(span_miss)["costopt.cache_hit"] is False
    assert attrs(span_miss)["gen_ai.usage.input_tokens"] == 1000
    a = attrs(span_hit)
    assert span_hit.kind is SpanKind.INTERNAL  # no provider was called
    assert a["costopt.outcome"] == "cache_exact"
    assert a["costopt.cache_hit"] is True
    assert a["costopt.cost_usd"] == 0.0 and a["costopt.cost_usd_exact"] == "0"
    assert a["costopt.cost_known"] is True
    assert a["costopt.savings.cache_exact_usd"] == float(hit.savings_usd["cache_exact"])
    assert Decimal(a["costopt.savings_usd_exact"]) == hit.baseline_cost_usd
    assert not [k for k in a if k.startswith("gen_ai.usage.")]
    assert a["costopt.avoided.input_tokens"] == 1000
    assert a["costopt.avoided.output_tokens"] == 200


def test_an_unknown_price_is_absent_never_zero(
    engine: CostEngine, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    OTelExporter(tracer_provider=provider).attach(engine)
    r = ScriptedResponse("hi", Usage(100, 10), model="acme-private-llm")
    with pytest.warns(UserWarning, match="no price"):
        ScriptedChatModel(script=Script([r])).invoke(
            "hi", config={"callbacks": [CostCallbackHandler(engine)]}
        )
    [rec] = engine.ledger.records()
    assert rec.cost_usd is None
    a = attrs(spans.get_finished_spans()[0])
    assert a["costopt.cost_known"] is False
    assert not [k for k in a if k.startswith("costopt.cost_usd")]
    assert not [k for k in a if k.startswith("costopt.savings")]
    assert "gen_ai.provider.name" not in a  # no guess
    assert a["gen_ai.usage.input_tokens"] == 100
    assert_money(a, "baseline_cost_usd", rec.baseline_cost_usd or Decimal(-1))


def test_batch_mode_and_an_escalated_attempt(
    engine: CostEngine, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    OTelExporter(tracer_provider=provider).attach(engine)
    batch = engine.record_call(model="gpt-4o-mini", usage=MINI_USAGE, mode="batch", tier="cheap")
    thrown = engine.record_call(model="gpt-4o-mini", usage=MINI_USAGE, outcome="escalated")
    a_batch, a_thrown = (attrs(s) for s in spans.get_finished_spans())
    assert a_batch["costopt.mode"] == "batch"
    assert a_batch["costopt.tier"] == "cheap"
    assert a_batch["costopt.savings.batch_usd"] == float(batch.savings_usd["batch"]) > 0
    assert_money(a_batch, "cost_usd", batch.cost_usd or Decimal(-1))
    assert a_thrown["costopt.outcome"] == "escalated"
    assert a_thrown["gen_ai.usage.input_tokens"] == 1000  # a real call: its tokens were used
    assert thrown.cost_usd is not None
    assert a_thrown["costopt.savings.routing_usd"] == -float(thrown.cost_usd)
    # No latency known: a zero-length span at the record's time.
    assert [(s.start_time, s.end_time) for s in spans.get_finished_spans()] == [
        (NOW_NS, NOW_NS),
        (NOW_NS, NOW_NS),
    ]


def test_removed_tokens_are_an_event_on_the_current_span_or_a_span(
    engine: CostEngine, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    OTelExporter(tracer_provider=provider).attach(engine)
    with provider.get_tracer("app").start_as_current_span("retrieve"):
        rec = engine.record_removed_tokens(3000, lever="compression", framework="langchain")
    assert rec is not None
    engine.record_removed_tokens(500, lever="memory")
    mine, own = spans.get_finished_spans()
    [event] = mine.events
    assert event.name == "costopt.tokens_removed"
    assert event.timestamp == NOW_NS
    ev = dict(event.attributes or {})
    assert ev["costopt.removed.input_tokens"] == 3000
    assert ev["costopt.savings.compression_usd"] == float(rec.savings_usd["compression"])
    assert ev["costopt.savings.compression_usd"] == 3000 * 2.50 / 10**6
    assert not [k for k in attrs(mine) if k.startswith("costopt.")]  # span attributes untouched
    assert own.name == "costopt.tokens_removed"
    assert attrs(own)["costopt.removed.input_tokens"] == 500
    assert "costopt.savings.memory_usd" in attrs(own)
    assert not [k for k in attrs(own) if k.startswith("gen_ai.usage.")]


# -- options ------------------------------------------------------------------------


def test_tenant_can_be_left_out(
    engine: CostEngine, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    reader = InMemoryMetricReader()
    OTelExporter(
        tracer_provider=provider,
        include_tenant=False,
        meter_provider=MeterProvider(metric_readers=[reader]),
    ).attach(engine)
    cfg: RunnableConfig = {
        "callbacks": [CostCallbackHandler(engine)],
        "metadata": {"costopt_tenant": "acme"},
    }
    claude().invoke("hi", config=cfg)
    assert engine.ledger.records()[0].tenant == "acme"
    a = attrs(spans.get_finished_spans()[0])
    assert "costopt.tenant" not in a
    assert "acme" not in a.values()
    data = reader.get_metrics_data()
    assert data is not None and "costopt.cost" in data.to_json()
    assert "acme" not in data.to_json()


def test_attribute_prefix_and_operation_name(
    engine: CostEngine, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    OTelExporter(
        tracer_provider=provider, attribute_prefix="acme.llm", operation_name="text_completion"
    ).attach(engine)
    engine.record_call(model="gemini-2.5-flash", usage=Usage(10, 5))
    [span] = spans.get_finished_spans()
    a = attrs(span)
    assert span.name == "text_completion gemini-2.5-flash"
    assert a["gen_ai.provider.name"] == "gcp.gen_ai"
    assert "acme.llm.cost_usd" in a and "acme.llm.outcome" in a
    assert not [k for k in a if k.startswith("costopt.")]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attribute_prefix": ""},
        {"attribute_prefix": "Cost Opt"},
        {"attribute_prefix": "costopt."},
        {"operation_name": "Chat Now"},
        {"tracer_provider": TracerProvider(), "tracer": TracerProvider().get_tracer("x")},
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        OTelExporter(**kwargs)


def test_attach_takes_an_engine_or_a_ledger(provider: TracerProvider) -> None:
    with pytest.raises(ConfigurationError, match="CostEngine or a CostLedger"):
        OTelExporter(tracer_provider=provider).attach("engine")  # type: ignore[arg-type]


def test_detach_stops_and_attaching_again_does_not_double(
    engine: CostEngine, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    exporter = OTelExporter(tracer_provider=provider).attach(engine).attach(engine)
    assert exporter.attached
    engine.record_call(model="gpt-4o-mini", usage=MINI_USAGE)
    exporter.detach(engine)
    assert not exporter.attached
    engine.record_call(model="gpt-4o-mini", usage=MINI_USAGE)
    exporter.attach(engine.ledger)
    engine.record_call(model="gpt-4o-mini", usage=MINI_USAGE)
    assert len(spans.get_finished_spans()) == 2
    assert len(engine.ledger) == 3


def test_a_bare_ledger_and_replaying_records(
    provider: TracerProvider, spans: InMemorySpanExporter, engine: CostEngine
) -> None:
    rec = engine.record_call(model="claude-haiku-4-5", usage=Usage(100, 10))
    ledger = CostLedger()
    exporter = OTelExporter(tracer_provider=provider).attach(ledger)
    ledger.add(rec)
    exporter.export(rec)  # e.g. a record read back from a JSONL export
    assert [attrs(s)["gen_ai.provider.name"] for s in spans.get_finished_spans()] == [
        "anthropic",
        "anthropic",
    ]


# -- failures -------------------------------------------------------------------------


class _Exploding(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("collector down")


class _BrokenSpan:
    """A recording span whose attributes cannot be set."""

    def is_recording(self) -> bool:
        return True

    def get_span_context(self) -> Any:
        from opentelemetry.trace import SpanContext

        return SpanContext(trace_id=1, span_id=2, is_remote=False)

    def set_attributes(self, attributes: Any) -> None:
        raise RuntimeError("span closed under us")


@pytest.mark.parametrize("where", ["own span", "current span"])
def test_an_exporter_failure_never_breaks_the_call(
    engine: CostEngine, where: str, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    if where == "own span":
        broken = TracerProvider()
        broken.add_span_processor(_Exploding())
        exporter = OTelExporter(tracer_provider=broken).attach(engine)
    else:
        exporter = OTelExporter(tracer_provider=TracerProvider()).attach(engine)
        monkeypatch.setattr("opentelemetry.trace.get_current_span", lambda: _BrokenSpan())
    handler = CostCallbackHandler(engine)
    msg = claude().invoke("hi", config={"callbacks": [handler]})
    assert msg.content == "Paris."
    assert handler.errors == 0
    [rec] = engine.ledger.records()
    assert rec.cost_usd == CLAUDE_COST  # the ledger has the call all the same
    assert exporter.errors == 1 and exporter.exported == 0
    assert "could not export call" in caplog.text


# -- metrics ----------------------------------------------------------------------------


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = list(m.data.data_points)
    return out


def test_metrics_of_cost_savings_and_tokens(
    engine: CostEngine, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    reader = InMemoryMetricReader()
    OTelExporter(
        tracer_provider=provider, meter_provider=MeterProvider(metric_readers=[reader])
    ).attach(engine)
    for _ in range(3):
        engine.record_call(model="gpt-4o-mini", usage=MINI_USAGE, tier="cheap", tenant="acme")
    with pytest.warns(UserWarning):
        engine.record_call(model="acme-private-llm", usage=Usage(100, 10))
    points = _points(reader)

    [cost] = points["costopt.cost"]
    assert cost.value == pytest.approx(3 * float(MINI_COST))
    assert cost.attributes["costopt.tier"] == "cheap"
    assert cost.attributes["costopt.tenant"] == "acme"
    assert cost.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    calls = {p.attributes["costopt.cost_known"]: p.value for p in points["costopt.calls"]}
    assert calls == {True: 3, False: 1}
    savings = {p.attributes["costopt.lever"]: p.value for p in points["costopt.savings"]}
    assert savings == pytest.approx({k: 3 * float(v) for k, v in MINI_SAVINGS.items()})
    tokens = {
        (p.attributes["gen_ai.request.model"], p.attributes["gen_ai.token.type"]): p.sum
        for p in points["gen_ai.client.token.usage"]
    }
    assert tokens == {
        ("gpt-4o-mini", "input"): 3000,
        ("gpt-4o-mini", "output"): 600,
        ("acme-private-llm", "input"): 100,
        ("acme-private-llm", "output"): 10,
    }


def test_metrics_only(engine: CostEngine, spans: InMemorySpanExporter) -> None:
    reader = InMemoryMetricReader()
    p = TracerProvider()
    p.add_span_processor(SimpleSpanProcessor(spans))
    OTelExporter(
        tracer_provider=p, spans=False, meter_provider=MeterProvider(metric_readers=[reader])
    ).attach(engine)
    engine.record_call(model="gpt-4o-mini", usage=MINI_USAGE)
    assert spans.get_finished_spans() == ()
    assert _points(reader)["costopt.cost"][0].value == pytest.approx(float(MINI_COST))


def test_without_removal_spans_their_savings_are_still_measured(
    engine: CostEngine, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    reader = InMemoryMetricReader()
    OTelExporter(
        tracer_provider=provider,
        meter_provider=MeterProvider(metric_readers=[reader]),
        export_removed=False,
    ).attach(engine)
    rec = engine.record_removed_tokens(3000, lever="compression")
    assert rec is not None
    engine.record_call(model="gpt-4o-mini", usage=MINI_USAGE)
    assert [s.name for s in spans.get_finished_spans()] != []
    assert "costopt.tokens_removed" not in [s.name for s in spans.get_finished_spans()]
    points = _points(reader)
    savings = {p.attributes["costopt.lever"]: p.value for p in points["costopt.savings"]}
    assert savings["compression"] == pytest.approx(float(rec.savings_usd["compression"]))
    # A removal is no call: the call count is the model call's alone.
    assert sum(p.value for p in points["costopt.calls"]) == 1


# -- the attribute builders and the optional dependency -----------------------------------


def test_attribute_builders_are_plain_functions(engine: CostEngine) -> None:
    rec = engine.record_call(model="gpt-4o-mini", usage=Usage(10, 5), tenant="t1")
    gen = gen_ai_attributes(rec, provider="openai")
    assert gen["gen_ai.usage.input_tokens"] == 10
    assert "gen_ai.usage.cache_read.input_tokens" not in gen  # unknown, not 0
    own = costopt_attributes(rec, prefix="x", include_tenant=False)
    # 10 * 0.15 + 5 * 0.60 micro-dollars, written as the ledger writes it
    assert own["x.cost_usd_exact"] == rec.to_dict()["cost_usd"] == "0.000004500"
    assert own["x.cost_usd"] == 0.0000045
    assert "x.tenant" not in own


def test_the_engine_works_without_opentelemetry() -> None:
    code = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ImportError("blocked: " + name)
                return None

        sys.meta_path.insert(0, Block())
        from costopt_core import ConfigurationError, CostEngine, Usage
        from costopt_core.otel import OTelExporter, costopt_attributes
        from costopt_core.testing import FakeEmbedder

        engine = CostEngine(embedder=FakeEmbedder())
        rec = engine.record_call(model="gpt-4o-mini", usage=Usage(10, 5))
        assert costopt_attributes(rec)["costopt.cost_known"] is True
        try:
            OTelExporter()
        except ConfigurationError as exc:
            assert "llm-costopt[otel]" in str(exc), exc
        else:
            raise SystemExit("no error without OpenTelemetry")
        assert not [m for m in sys.modules if m.startswith("opentelemetry")]
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(_repo_root()),
        env=_env_with_pythonpath(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def _repo_root() -> Any:
    from pathlib import Path

    return Path(__file__).resolve().parents[2]


def _env_with_pythonpath() -> dict[str, str]:
    import os

    root = _repo_root()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root / "shared"), str(root)])
    return env


@pytest.fixture(autouse=True)
def _no_global_provider() -> Iterator[None]:
    """The tests never set the process-wide tracer provider."""
    from opentelemetry import trace

    before = trace.get_tracer_provider()
    yield
    assert trace.get_tracer_provider() is before
