"""The cost model: scenario arithmetic, lever split, and what it is measured from."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from costopt_core import CostEngine, Usage
from costopt_core.errors import ConfigurationError
from costopt_core.pricing.catalog import PriceCatalog, UnknownModelPriceWarning
from costopt_core.projection import SCENARIOS, MeasuredRequest, project
from costopt_core.routing.tiers import Tiers
from costopt_core.testing import FakeEmbedder
from costopt_core.types import CallRecord
from costopt_core.workload import (
    WorkloadRequest,
    WorkloadSample,
    measure_records,
    measure_requests,
    read_calibration_samples,
)

# Round prices so every expected figure can be worked out by hand.
CATALOG = PriceCatalog.default().with_overrides(
    {
        "big": {
            "usd_per_mtok_input": "5",
            "usd_per_mtok_output": "15",
            "usd_per_mtok_batch_input": "2.5",
            "usd_per_mtok_batch_output": "7.5",
        },
        "small": {"usd_per_mtok_input": "1", "usd_per_mtok_output": "2"},
    }
)
DAY = 1_000_000


def _p(reqs, **kw):
    return project(reqs, requests_per_day=DAY, baseline_model="big", catalog=CATALOG, **kw)


def test_sanity_case_is_150k_dollars_of_input_a_month() -> None:
    req = MeasuredRequest("big", Usage(input_tokens=1000, output_tokens=0))
    p = _p([req])
    base = p.scenario("all-frontier")
    assert base.usd_per_month_input == Decimal("150000.00")
    assert base.usd_per_month == Decimal("150000.00")
    assert base.usd_per_month_output == 0
    assert [s.scenario for s in p.scenarios] == list(SCENARIOS)
    assert p.savings_by_lever == {}
    assert "$150,000.00" in p.table()


def test_each_lever_alone_and_combined() -> None:
    reqs = [
        # routed to small, 600 of 1000 context tokens cut, latency-tolerant
        MeasuredRequest(
            "small",
            Usage(input_tokens=400, output_tokens=100),
            removed_input_tokens={"compression": 600},
            batch=True,
            tier="small",
        ),
        # an exact cache hit of a big-model answer
        MeasuredRequest(
            "big", Usage(input_tokens=1000, output_tokens=100), cache="cache_exact", tier="big"
        ),
    ]
    p = _p(reqs, days_per_month=1)
    scale = Decimal(DAY) / 2
    # per request: 1000 in x $5/M + 100 out x $15/M = $0.0065
    assert p.scenario("all-frontier").usd_per_month == (2 * Decimal("0.0065") * scale)
    # routing: first on small (1000 x 1 + 100 x 2)/1e6 = 0.0012; second stays big
    assert p.scenario("routing").usd_per_month == (Decimal("0.0012") + Decimal("0.0065")) * scale
    # cache: the second is free
    assert p.scenario("cache").usd_per_month == Decimal("0.0065") * scale
    # compression: the first sends 400 tokens on big: 0.002 + 0.0015
    assert (
        p.scenario("compression").usd_per_month == (Decimal("0.0035") + Decimal("0.0065")) * scale
    )
    # batch: the first at batch rates on big: 0.0025 + 0.00075
    assert p.scenario("batch").usd_per_month == (Decimal("0.00325") + Decimal("0.0065")) * scale
    # combined: small has no batch price, so the tolerant request is sync on small:
    # 400 x 1 + 100 x 2 = 0.0006; the hit is free
    combined = p.scenario("combined")
    assert combined.usd_per_month == Decimal("0.0006") * scale
    assert combined.usd_per_month_input == Decimal("0.0004") * scale
    assert combined.usd_per_month_output == Decimal("0.0002") * scale
    assert sum(p.savings_by_lever.values()) == combined.savings_usd_per_month
    assert set(p.savings_by_lever) == {"compression", "routing", "cache_exact"}
    assert p.savings_by_lever["cache_exact"] == Decimal("0.0065") * scale
    assert p.measured["cache_hit_rate"] == 0.5
    assert p.measured["tier_mix"] == {"small": 1.0}
    assert p.measured["input_tokens_removed_share"] == {"compression": 0.3}
    assert p.measured["batch_share"] == 0.5
    json.dumps(p.to_dict())  # plain JSON


def test_escalation_attempts_are_paid_for_in_routing_scenarios() -> None:
    plain = MeasuredRequest("big", Usage(input_tokens=1000, output_tokens=100))
    escalated = MeasuredRequest(
        "big", Usage(input_tokens=1000, output_tokens=100), escalated=("small",)
    )
    a, b = _p([plain]), _p([escalated])
    extra = (Decimal("0.0012") * DAY * 30).quantize(Decimal("0.01"))
    assert b.scenario("routing").usd_per_month - a.scenario("routing").usd_per_month == extra
    assert b.savings_by_lever["routing"] == -extra
    # the other single-lever scenarios do not route, so they do not escalate
    assert b.scenario("cache").usd_per_month == a.scenario("cache").usd_per_month
    assert b.measured["escalation_rate"] == 1.0


def test_unpriced_models_are_named_and_left_out() -> None:
    reqs = [
        MeasuredRequest("big", Usage(input_tokens=1000, output_tokens=0)),
        MeasuredRequest("mystery-model", Usage(input_tokens=1000, output_tokens=0)),
    ]
    with pytest.warns(UnknownModelPriceWarning, match="mystery-model"):
        p = _p(reqs)
    assert p.priced_requests == 1 and p.sample_requests == 2
    assert "mystery-model" in p.notes[0]
    assert p.scenario("all-frontier").usd_per_month == Decimal("150000.00")
    # (the catalog warns once per model: the warning above was the one)
    with pytest.raises(ConfigurationError, match="no request of the sample could be priced"):
        _p(reqs[1:])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"requests_per_day": 0}, "requests_per_day"),
        ({"requests_per_day": 10, "days_per_month": 40}, "days_per_month"),
        ({"requests_per_day": 10, "baseline_model": "nope"}, "baseline model 'nope'"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match) -> None:
    args = {"baseline_model": "big", "catalog": CATALOG, **kwargs}
    with pytest.raises(ConfigurationError, match=match):
        project([MeasuredRequest("big", Usage(input_tokens=1, output_tokens=1))], **args)
    with pytest.raises(ConfigurationError, match="empty"):
        project([], requests_per_day=1, baseline_model="big", catalog=CATALOG)


# -- measuring with the real levers ------------------------------------------------

TIERS = Tiers.from_mapping({"small": "gpt-4o-mini", "frontier": "gpt-4o"})


@pytest.fixture
def engine() -> CostEngine:
    return CostEngine(embedder=FakeEmbedder())


def _user(text: str, **kw) -> WorkloadRequest:
    from costopt_core.types import Message

    return WorkloadRequest(messages=(Message("user", text),), **kw)


def test_cache_replay_is_scoped_by_tenant(engine) -> None:
    reqs = [
        _user("How do I reset my password?", tenant="a"),
        _user("How do I reset my password?", tenant="a"),
        _user("How do I reset my password?", tenant="b"),
    ]
    out = measure_requests(reqs, tiers=TIERS, engine=engine)
    assert [r.cache for r in out] == [None, "cache_exact", None]
    assert measure_requests(reqs, tiers=TIERS, engine=engine, cache=False)[1].cache is None


def test_labels_above_the_routed_tier_pay_the_escalation(engine) -> None:
    easy = "What is 2 + 2?"
    out = measure_requests(
        [_user(easy, tier="frontier"), _user(easy + " ", tier="small")],
        tiers=TIERS,
        engine=engine,
        cache=False,
    )
    assert out[0].model == "gpt-4o" and out[0].escalated == ("gpt-4o-mini",)
    assert out[0].tier == "frontier"
    assert out[1].model == "gpt-4o-mini" and out[1].escalated == ()
    with pytest.raises(ConfigurationError, match="tier label 'mid'"):
        measure_requests([_user(easy, tier="mid")], tiers=TIERS, engine=engine)


def test_tokens_are_counted_or_taken_as_given(engine) -> None:
    counted, given = measure_requests(
        [
            _user("hello there", response="general kenobi"),
            _user("hello", input_tokens=900, output_tokens=7),
        ],
        tiers=TIERS,
        engine=engine,
        cache=False,
    )
    assert counted.usage.output_tokens == engine.tokens.count("general kenobi")
    assert (
        counted.usage.input_tokens
        == engine.tokens.count_messages(_user("hello there").messages).tokens
    )
    assert (given.usage.input_tokens, given.usage.output_tokens) == (900, 7)
    default = measure_requests([_user("hi")], tiers=TIERS, engine=engine, expected_output_tokens=33)
    assert default[0].usage.output_tokens == 33


def test_context_is_cut_by_the_summarizer(engine) -> None:
    filler = " ".join(f"Paragraph {i} talks about shipping zones and parcels." for i in range(60))
    ctx = ("The refund window is 30 days from delivery. " + filler, filler)
    (req,) = measure_requests(
        [_user("How long is the refund window?", context=ctx)],
        tiers=TIERS,
        engine=engine,
        cache=False,
    )
    full = engine.tokens.count_messages(_user("How long is the refund window?").messages).tokens
    full += sum(engine.tokens.count(c) for c in ctx)
    removed = req.removed_input_tokens["compression"]
    assert removed > 0.4 * full  # the default budget keeps the best sentences only
    assert req.usage.input_tokens + removed == full
    off = measure_requests(
        [_user("How long is the refund window?", context=ctx)],
        tiers=TIERS,
        engine=engine,
        cache=False,
        compression=False,
    )
    assert off[0].removed_input_tokens == {}


def test_long_conversations_are_cut_by_the_memory(engine) -> None:
    from costopt_core.types import Message

    turns = []
    for i in range(120):
        turns.append(Message("user", f"Turn {i}: tell me about order {1000 + i} and its parcel."))
        turns.append(Message("assistant", f"Order {1000 + i} shipped on day {i} to Lisbon. " * 3))
    turns.append(Message("user", "Which order shipped on day 7?"))
    (req,) = measure_requests(
        [WorkloadRequest(messages=tuple(turns))], tiers=TIERS, engine=engine, cache=False
    )
    assert req.removed_input_tokens["memory"] > 0.5 * (
        req.usage.input_tokens + req.removed_input_tokens["memory"]
    )
    short = measure_requests([_user("hi")], tiers=TIERS, engine=engine, cache=False)
    assert short[0].removed_input_tokens == {}


def _rec(i: int, **kw) -> CallRecord:
    base = {
        "call_id": f"c{i}",
        "timestamp": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
        "model": "gpt-4o-mini",
        "usage": Usage(input_tokens=100, output_tokens=10),
        "cost_usd": Decimal("0.001"),
        "baseline_cost_usd": Decimal("0.002"),
        "savings_usd": {"routing": Decimal("0.001")},  # baseline - cost, as the engine splits it
        "tenant": "t",
        "framework": "langchain",
    }
    return CallRecord(**{**base, **kw})


def test_ledger_records_attach_removals_and_escalations_to_the_next_call() -> None:
    records = [
        _rec(
            0,
            outcome="removed",
            usage=Usage(input_tokens=300, output_tokens=0),
            savings_usd={"compression": Decimal("0.001")},
            model="gpt-4o",
        ),
        _rec(1, outcome="escalated", model="gpt-4o-mini"),
        _rec(2, model="gpt-4o", tier="frontier"),
        _rec(3, outcome="cache_semantic", tier="frontier"),
        _rec(4, mode="batch"),
        _rec(
            5,
            outcome="removed",
            usage=Usage(input_tokens=50, output_tokens=0),
            savings_usd={"memory": Decimal("0.0001")},
            model="gpt-4o",
        ),
    ]
    out = measure_records(list(reversed(records)))  # order comes from the timestamps
    assert len(out) == 3
    assert out[0].removed_input_tokens == {"compression": 300}
    assert out[0].escalated == ("gpt-4o-mini",) and out[0].model == "gpt-4o"
    assert out[1].cache == "cache_semantic"
    assert out[2].batch and out[2].removed_input_tokens == {"memory": 50}


def test_an_escalation_attempt_keeps_its_own_usage() -> None:
    mini = Usage(input_tokens=1000, output_tokens=50, cache_read_tokens=400)
    records = [
        _rec(1, outcome="escalated", model="gpt-4o-mini", usage=mini),
        _rec(2, model="gpt-4o", usage=Usage(input_tokens=1000, output_tokens=2000)),
        _rec(3, outcome="escalated", model="gpt-4o-mini", usage=Usage()),  # unknown usage
        _rec(4, model="gpt-4o", usage=Usage(input_tokens=10, output_tokens=20)),
        _rec(5, outcome="escalated", model="gpt-4o-mini", usage=mini),  # a left-over
    ]
    out = measure_records(records)
    assert out[0].escalated == ("gpt-4o-mini",)
    assert out[0].escalated_usage == (mini,)
    assert out[1].attempts() == [("gpt-4o-mini", None), ("gpt-4o-mini", mini)]


def test_projecting_a_ledger_with_escalations_matches_the_ledger() -> None:
    # The thrown attempt wrote 50 tokens; the kept answer 2000. Pricing the attempt
    # with the answer's usage made routing look 7.5x as costly as it was.
    engine = CostEngine(embedder=FakeEmbedder())
    for _ in range(3):
        engine.record_call(
            model="gpt-4o-mini",
            usage=Usage(input_tokens=1000, output_tokens=50, cache_read_tokens=400),
            outcome="escalated",
            tenant="acme",
        )
        engine.record_call(
            model="gpt-4o", usage=Usage(input_tokens=1000, output_tokens=2000), tenant="acme"
        )
    t = engine.ledger.totals()
    p = project(
        measure_records(engine.ledger.records()), requests_per_day=1000, baseline_model="gpt-4o"
    )
    scale = Decimal(1000 * 30) / t.requests
    cent = Decimal("0.01")
    # gpt-4o-mini: 600 x $0.15 + 400 x $0.075 + 50 x $0.60 per Mtok = $0.000150 an attempt
    assert t.savings_usd == {"routing": Decimal("-0.000450000")}
    assert p.scenario("combined").usd_per_month == (t.cost_usd * scale).quantize(cent)
    assert p.savings_by_lever == {"routing": Decimal("-4.50")}
    # routing alone: the attempt without its provider-cache discount, 1050 tokens' worth
    attempt = (1000 * Decimal("0.15") + 50 * Decimal("0.60")) / 10**6
    routing = p.scenario("routing")
    assert routing.savings_usd_per_month == (-attempt * 1000 * 30).quantize(cent)


def test_a_left_over_removal_stays_with_its_tenant_and_a_priced_call() -> None:
    gone = {"outcome": "removed", "usage": Usage(input_tokens=5000, output_tokens=0)}
    saved = {"savings_usd": {"compression": Decimal("0.0125")}, "model": "gpt-4o"}
    records = [
        _rec(0, tenant="acme"),
        _rec(1, tenant="acme", model="my-private-llm", cost_usd=None, baseline_cost_usd=None),
        _rec(2, tenant="globex"),
        _rec(3, tenant="globex", model="my-private-llm", cost_usd=None, baseline_cost_usd=None),
        _rec(4, tenant="acme", **gone, **saved),  # after every call: a left-over
        # the next call of its tenant is unpriced: the tokens wait for a priced one
        _rec(5, tenant="initech", **gone, **saved),
        _rec(6, tenant="initech", model="my-private-llm", cost_usd=None, baseline_cost_usd=None),
        _rec(7, tenant="initech"),
    ]
    out = measure_records(records)
    assert [(m.tenant, m.model, m.removed_input_tokens) for m in out] == [
        ("acme", "gpt-4o-mini", {"compression": 5000}),
        ("acme", "my-private-llm", {}),
        ("globex", "gpt-4o-mini", {}),
        ("globex", "my-private-llm", {}),
        ("initech", "my-private-llm", {}),
        ("initech", "gpt-4o-mini", {"compression": 5000}),
    ]
    # and the projection credits the compression the ledger reports
    with pytest.warns(UnknownModelPriceWarning):
        p = project(out, requests_per_day=1000, baseline_model="gpt-4o")
    assert p.savings_by_lever.get("compression", 0) > 0


def test_a_removal_of_a_tenant_without_calls_is_still_projected() -> None:
    records = [
        _rec(0, tenant="globex"),
        _rec(1, tenant="globex", model="my-private-llm", cost_usd=None, baseline_cost_usd=None),
        _rec(2, tenant="acme", outcome="removed", usage=Usage(input_tokens=700, output_tokens=0)),
    ]
    out = measure_records(records)
    assert [m.removed_input_tokens for m in out] == [{"compression": 700}, {}]


def test_sample_files_are_read_with_errors_naming_the_line(tmp_path) -> None:
    good = tmp_path / "s.jsonl"
    good.write_text(
        json.dumps({"prompt": "hi", "system": "be brief", "tier": "small", "tenant": "a"})
        + "\n\n"
        + json.dumps({"messages": [{"role": "user", "content": "yo"}], "latency_tolerant": True})
        + "\n"
    )
    sample = WorkloadSample.from_jsonl(good)
    assert len(sample) == 2
    assert [m.role for m in sample.requests[0].messages] == ["system", "user"]
    assert sample.requests[1].latency_tolerant
    cases = {
        "not json": "not valid JSON",
        '{"prompt": 3}': "prompt must be a string",
        '{"prompt": "x", "input_tokens": -1}': "input_tokens must be a non-negative integer",
        '{"prompt": "x", "colour": 1}': "unknown fields ['colour']",
        '{"messages": [{"role": "robot", "content": "x"}]}': "messages[0] needs a role",
        '{"prompt": "x", "context": "one string"}': "context must be a list",
        '{"tier": "small"}': 'needs "prompt"',
        "[1, 2]": "expected a JSON object",
    }
    for line, message in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"prompt": "ok"}) + "\n" + line + "\n")
        with pytest.raises(
            ConfigurationError, match=f"bad.jsonl:2: .*{message}".replace("[", r"\[")
        ):
            WorkloadSample.from_jsonl(bad)
    with pytest.raises(ConfigurationError, match="does not exist"):
        WorkloadSample.from_jsonl(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ConfigurationError, match="has no requests"):
        WorkloadSample.from_jsonl(tmp_path / "empty.jsonl")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps({"prompt": "x"}) + "\n" + json.dumps(_rec(0).to_dict()) + "\n")
    with pytest.raises(ConfigurationError, match="mixes request lines and ledger records"):
        WorkloadSample.from_jsonl(mixed)


def test_a_ledger_export_is_read_as_records(tmp_path) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_text("".join(json.dumps(_rec(i).to_dict()) + "\n" for i in range(3)))
    sample = WorkloadSample.from_jsonl(path)
    assert len(sample.records) == 3 and sample.requests == ()


def test_calibration_samples(tmp_path) -> None:
    path = tmp_path / "cal.jsonl"
    path.write_text(
        json.dumps({"prompt": "2+2?", "labels": {"small": 1, "frontier": 1}})
        + "\n"
        + json.dumps({"prompt": "prove it", "labels": [0, 0.5]})
        + "\n"
        + json.dumps({"a": "hi", "b": "hello", "label": 1})
        + "\n"
    )
    samples, pairs = read_calibration_samples(path, TIERS)
    assert [s.labels for s in samples] == [(1.0, 1.0), (0.0, 0.5)]
    assert pairs == [("hi", "hello", 1)]
    for line, message in {
        '{"prompt": "x", "labels": {"small": 1}}': "missing \\['frontier'\\]",
        '{"prompt": "x", "labels": [1, 2]}': "score in \\[0, 1\\]",
        '{"a": "x", "b": "y", "label": 3}': "label 0 or 1",
        '{"q": 1}': "expected a routing sample",
    }.items():
        path.write_text(line + "\n")
        with pytest.raises(ConfigurationError, match=message):
            read_calibration_samples(path, TIERS)
