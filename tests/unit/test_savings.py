"""Savings attribution: what a call saved against the all-frontier baseline, by lever.

The levers are a telescoping chain (compression/memory -> routing ->
provider_cache -> batch, plus the cache tiers), so they must add up to
baseline - actual to the last digit. Figures below are worked by hand.
"""

from __future__ import annotations

import warnings
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costopt_core.pricing import (
    PriceCatalog,
    PricedCall,
    UnknownModelPriceWarning,
    attribute_savings,
    cost_of,
)
from costopt_core.types import LEVERS, Usage

D = Decimal
CATALOG = PriceCatalog.default()
BASE = "gpt-4o"
U = Usage(input_tokens=10_000, output_tokens=1_000)
# gpt-4o:      10000 x 2.50 + 1000 x 10   = 25000 + 10000 = 35000 per million
# gpt-4o-mini: 10000 x 0.15 + 1000 x 0.60 =  1500 +   600 =  2100 per million
GPT_4O_U = D("0.035")
MINI_U = D("0.0021")
# 2000 uncached + 8000 cache reads, 1000 out
CACHED = Usage(input_tokens=10_000, output_tokens=1_000, cache_read_tokens=8_000)


def attribute(**kw: object) -> PricedCall:
    kw.setdefault("baseline_model", BASE)
    kw.setdefault("usage", U)
    return attribute_savings(CATALOG, **kw)  # type: ignore[arg-type]


def assert_adds_up(pc: PricedCall) -> None:
    assert pc.cost_usd is not None and pc.baseline_cost_usd is not None
    assert set(pc.savings_usd) <= set(LEVERS)
    assert all(isinstance(v, Decimal) for v in pc.savings_usd.values())
    assert sum(pc.savings_usd.values(), D(0)) == pc.baseline_cost_usd - pc.cost_usd


# --------------------------------------------------------------------------- routing


def test_same_model_as_baseline_saves_nothing() -> None:
    pc = attribute(model=BASE)
    assert pc == PricedCall(GPT_4O_U, GPT_4O_U, {})


def test_routing_to_a_cheap_model() -> None:
    pc = attribute(model="gpt-4o-mini")
    assert pc.cost_usd == MINI_U
    assert pc.baseline_cost_usd == GPT_4O_U
    assert pc.savings_usd == {"routing": D("0.0329")}
    assert_adds_up(pc)


def test_routing_to_a_dearer_model_is_a_negative_saving() -> None:
    pc = attribute(model="o1")
    # 10000 x 15 + 1000 x 60 = 150000 + 60000
    assert pc.cost_usd == D("0.21")
    assert pc.savings_usd == {"routing": D("-0.175")}
    assert_adds_up(pc)


def test_routing_across_providers_with_a_dated_name() -> None:
    pc = attribute(model="claude-3-5-haiku-20241022")
    # 10000 x 0.80 + 1000 x 4 = 8000 + 4000
    assert pc.cost_usd == D("0.012")
    assert pc.savings_usd == {"routing": D("0.023")}


def test_local_free_model_saves_the_whole_baseline() -> None:
    pc = attribute(model="smollm2-135m-instruct")
    assert pc.cost_usd == D(0)
    assert pc.savings_usd == {"routing": GPT_4O_U}
    assert_adds_up(pc)


# --------------------------------------------------------------------------- provider cache


def test_provider_cache_on_the_baseline_model() -> None:
    pc = attribute(model=BASE, usage=CACHED)
    # 2000 x 2.50 + 8000 x 1.25 + 1000 x 10 = 5000 + 10000 + 10000
    assert pc.cost_usd == D("0.025")
    assert pc.baseline_cost_usd == GPT_4O_U  # the baseline is uncached
    assert pc.savings_usd == {"provider_cache": D("0.01")}
    assert_adds_up(pc)


def test_routing_then_provider_cache_then_batch() -> None:
    pc = attribute(model="gpt-4o-mini", usage=CACHED, mode="batch")
    # mini, cached: 2000 x 0.15 + 8000 x 0.075 + 1000 x 0.60 = 300 + 600 + 600 = 1500
    # batch halves it: 750
    assert pc.cost_usd == D("0.00075")
    assert pc.savings_usd == {
        "routing": D("0.0329"),
        "provider_cache": D("0.0006"),
        "batch": D("0.00075"),
    }
    assert_adds_up(pc)


def test_anthropic_cache_write_is_a_negative_provider_cache_saving() -> None:
    u = Usage(input_tokens=10_000, output_tokens=0, cache_write_5m_tokens=10_000)
    pc = attribute(model="claude-sonnet-4-5", usage=u, baseline_model="claude-sonnet-4-5")
    # written: 10000 x 3.75 = 37500; plain: 10000 x 3 = 30000
    assert pc.cost_usd == D("0.0375")
    assert pc.baseline_cost_usd == D("0.03")
    assert pc.savings_usd == {"provider_cache": D("-0.0075")}
    assert_adds_up(pc)


def test_anthropic_cache_read_saving() -> None:
    u = Usage(
        input_tokens=100_000,
        output_tokens=0,
        cache_read_tokens=90_000,
        cache_write_1h_tokens=5_000,
    )
    pc = attribute(model="claude-sonnet-4-5", usage=u, baseline_model="claude-sonnet-4-5")
    # 5000 x 3 + 90000 x 0.30 + 5000 x 6 = 15000 + 27000 + 30000 = 72000; plain 300000
    assert pc.cost_usd == D("0.072")
    assert pc.savings_usd == {"provider_cache": D("0.228")}


# --------------------------------------------------------------------------- batch


@pytest.mark.parametrize(
    "model", ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash"]
)
@pytest.mark.parametrize("usage", [U, CACHED], ids=["plain", "cached"])
def test_batch_saving_is_exactly_half_the_sync_cost(model: str, usage: Usage) -> None:
    sync = attribute(model=model, usage=usage)
    batch = attribute(model=model, usage=usage, mode="batch")
    assert sync.cost_usd is not None
    assert batch.savings_usd["batch"] == sync.cost_usd / 2
    assert batch.cost_usd == sync.cost_usd / 2
    assert batch.baseline_cost_usd == sync.baseline_cost_usd  # the baseline is sync
    assert {k: v for k, v in batch.savings_usd.items() if k != "batch"} == sync.savings_usd
    assert_adds_up(batch)


def test_batch_on_a_model_without_batch_price_is_unpriced() -> None:
    pc = attribute(model="mixtral-8x7b-instruct", mode="batch")
    assert pc.cost_usd is None
    assert pc.baseline_cost_usd == GPT_4O_U
    assert "batch" not in pc.savings_usd


# --------------------------------------------------------------------------- cache tiers


def test_exact_cache_hit_costs_nothing_and_credits_the_cache() -> None:
    pc = attribute(model="gpt-4o-mini", outcome="cache_exact")
    assert pc.cost_usd == D(0)
    assert isinstance(pc.cost_usd, Decimal)
    assert pc.baseline_cost_usd == GPT_4O_U
    # routing would have got it to 0.0021; the cache saved the rest
    assert pc.savings_usd == {"routing": D("0.0329"), "cache_exact": MINI_U}
    assert_adds_up(pc)


def test_semantic_cache_hit_of_a_baseline_answer() -> None:
    pc = attribute(model=BASE, outcome="cache_semantic")
    assert pc == PricedCall(D(0), GPT_4O_U, {"cache_semantic": GPT_4O_U})


def test_cache_hit_of_a_cached_batched_call() -> None:
    pc = attribute(model="gpt-4o-mini", usage=CACHED, mode="batch", outcome="cache_exact")
    assert pc.cost_usd == D(0)
    assert pc.savings_usd["cache_exact"] == D("0.00075")
    assert_adds_up(pc)
    assert sum(pc.savings_usd.values(), D(0)) == GPT_4O_U


def test_cache_hit_of_an_unpriced_model_credits_the_whole_baseline() -> None:
    cat = PriceCatalog.default()
    with pytest.warns(UnknownModelPriceWarning, match="house-model"):
        pc = attribute_savings(
            cat, model="house-model", usage=U, baseline_model=BASE, outcome="cache_exact"
        )
    assert pc == PricedCall(D(0), GPT_4O_U, {"cache_exact": GPT_4O_U})


def test_cache_hit_of_a_free_local_model() -> None:
    pc = attribute(model="smollm2-135m-instruct", outcome="cache_semantic")
    assert pc.cost_usd == D(0)
    assert pc.savings_usd == {"routing": GPT_4O_U}
    assert_adds_up(pc)


def test_cache_hit_batch_mode_model_without_batch_price_adds_up() -> None:
    cat = CATALOG.with_overrides(
        {
            "no-batch": {
                "usd_per_mtok_input": "1",
                "usd_per_mtok_output": "2",
                "usd_per_mtok_cache_read": "0.1",
            }
        }
    )
    u = Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=500)
    pc = attribute_savings(
        cat, model="no-batch", usage=u, baseline_model=BASE, mode="batch", outcome="cache_exact"
    )
    assert_adds_up(pc)


# --------------------------------------------------------------------------- escalation


def test_escalated_attempt_has_no_baseline_and_a_negative_routing_saving() -> None:
    pc = attribute(model="gpt-4o-mini", outcome="escalated")
    assert pc == PricedCall(MINI_U, D(0), {"routing": -MINI_U})
    assert_adds_up(pc)


def test_escalated_attempt_in_batch_and_with_removed_tokens() -> None:
    pc = attribute(
        model="gpt-4o-mini",
        outcome="escalated",
        mode="batch",
        removed_input_tokens={"compression": 5_000},
    )
    assert pc == PricedCall(D("0.00105"), D(0), {"routing": D("-0.00105")})


def test_escalated_attempt_on_an_unpriced_model() -> None:
    cat = PriceCatalog.default()
    with pytest.warns(UnknownModelPriceWarning):
        pc = attribute_savings(
            cat, model="tiny-x", usage=U, baseline_model=BASE, outcome="escalated"
        )
    assert pc.cost_usd is None
    assert pc.savings_usd == {}


def test_escalation_plus_frontier_answer_costs_more_than_baseline() -> None:
    cheap = attribute(model="gpt-4o-mini", outcome="escalated")
    frontier = attribute(model=BASE)
    total_cost = cheap.cost_usd + frontier.cost_usd
    total_base = cheap.baseline_cost_usd + frontier.baseline_cost_usd
    total_saved = sum([*cheap.savings_usd.values(), *frontier.savings_usd.values()], D(0))
    assert total_base == GPT_4O_U  # one request, one baseline
    assert total_saved == total_base - total_cost == -MINI_U


# --------------------------------------------------------------------------- compression


def test_compression_is_priced_at_the_baseline_input_rate() -> None:
    pc = attribute(model=BASE, removed_input_tokens={"compression": 4_000})
    # 4000 x 2.50 = 10000
    assert pc.savings_usd == {"compression": D("0.01")}
    assert pc.baseline_cost_usd == D("0.045")
    assert pc.cost_usd == GPT_4O_U
    assert_adds_up(pc)


def test_compression_and_memory_on_a_routed_call() -> None:
    pc = attribute(
        model="gpt-4o-mini", removed_input_tokens={"compression": 4_000, "memory": 2_000}
    )
    # priced on gpt-4o (2.50), not on the model that served (0.15)
    assert pc.savings_usd == {
        "compression": D("0.01"),
        "memory": D("0.005"),
        "routing": D("0.0329"),
    }
    assert pc.baseline_cost_usd == D("0.05")
    assert pc.cost_usd == MINI_U
    assert_adds_up(pc)


def test_no_or_negative_removal_is_no_lever() -> None:
    pc = attribute(model=BASE, removed_input_tokens={"compression": 0, "memory": -50})
    assert pc == PricedCall(GPT_4O_U, GPT_4O_U, {})


def test_compression_into_the_long_context_tier() -> None:
    u = Usage(input_tokens=150_000, output_tokens=0)
    pc = attribute(
        model="claude-sonnet-4-5",
        usage=u,
        baseline_model="claude-sonnet-4-5",
        removed_input_tokens={"compression": 100_000},
    )
    # as sent: 150000 x 3 = 0.45; uncompressed: 250000 x 6 (long tier) = 1.5
    assert pc.cost_usd == D("0.45")
    assert pc.baseline_cost_usd == D("1.5")
    assert pc.savings_usd == {"compression": D("1.05")}


def test_compression_with_a_cache_hit() -> None:
    pc = attribute(
        model="gpt-4o-mini", outcome="cache_semantic", removed_input_tokens={"memory": 1_000}
    )
    assert pc.cost_usd == D(0)
    assert pc.savings_usd["memory"] == D("0.0025")  # 1000 x 2.50
    assert pc.baseline_cost_usd == D("0.0375")
    assert_adds_up(pc)


# --------------------------------------------------------------------------- unknowns


def test_unknown_served_model_has_no_cost_and_warns_once() -> None:
    cat = PriceCatalog.default()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        calls = [
            attribute_savings(cat, model="my-finetune", usage=U, baseline_model=BASE)
            for _ in range(3)
        ]
    for pc in calls:
        assert pc.cost_usd is None
        assert pc.baseline_cost_usd == GPT_4O_U
        assert "routing" not in pc.savings_usd
    unknown = [w for w in seen if issubclass(w.category, UnknownModelPriceWarning)]
    assert len(unknown) == 1
    assert "my-finetune" in str(unknown[0].message)


def test_unknown_baseline_model_has_no_baseline() -> None:
    cat = PriceCatalog.default()
    with pytest.warns(UnknownModelPriceWarning, match="frontier-x"):
        pc = attribute_savings(cat, model="gpt-4o-mini", usage=U, baseline_model="frontier-x")
    assert pc.cost_usd == MINI_U
    assert pc.baseline_cost_usd is None
    assert "routing" not in pc.savings_usd


def test_unknown_usage_has_no_cost() -> None:
    pc = attribute(model="gpt-4o-mini", usage=Usage())
    assert pc == PricedCall(None, None, {})


def test_batch_priced_by_ratio_stays_exact() -> None:
    cat = CATALOG.with_overrides(
        {
            "negotiated": {
                "usd_per_mtok_input": "3",
                "usd_per_mtok_output": "9",
                "usd_per_mtok_batch_input": "1.5",
                "usd_per_mtok_batch_output": "4.5",
            }
        }
    )
    pc = attribute_savings(cat, model="negotiated", usage=U, baseline_model=BASE, mode="batch")
    # 10000 x 1.5 + 1000 x 4.5 = 15000 + 4500
    assert pc.cost_usd == D("0.0195")
    assert_adds_up(pc)


_NEGOTIATED = {
    "negotiated": {
        "usd_per_mtok_input": "3",
        "usd_per_mtok_output": "9",
        "usd_per_mtok_batch_input": "1",
        "usd_per_mtok_batch_output": "1",
    }
}


def test_batch_price_that_is_not_half_of_sync_is_billed_exactly() -> None:
    p = CATALOG.with_overrides(_NEGOTIATED).get("negotiated")
    assert cost_of(p, Usage(input_tokens=1_000_000, output_tokens=0), "batch") == D("1")
    assert cost_of(p, Usage(input_tokens=0, output_tokens=1_000_000), "batch") == D("1")


def test_levers_add_up_with_a_non_half_batch_price() -> None:
    cat = CATALOG.with_overrides(_NEGOTIATED)
    pc = attribute_savings(
        cat,
        model="negotiated",
        usage=Usage(input_tokens=6, output_tokens=0),
        baseline_model=BASE,
        mode="batch",
    )
    assert_adds_up(pc)
    assert pc.cost_usd == D("0.000006")


# --------------------------------------------------------------------------- the invariant

_COUNT = st.integers(min_value=0, max_value=300_000)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    uncached, read, out = draw(_COUNT), draw(_COUNT), draw(_COUNT)
    w5 = draw(st.sampled_from([0, 0, 1, 2_000, 80_000]))
    w1h = draw(st.sampled_from([0, 0, 1, 3_000, 60_000]))
    known = draw(st.booleans())  # None details are billed as plain input
    return Usage(
        input_tokens=uncached + read + w5 + w1h,
        output_tokens=out,
        cache_read_tokens=read if known else None,
        cache_write_5m_tokens=w5 if known else None,
        cache_write_1h_tokens=w1h if known else None,
        reasoning_tokens=draw(st.none() | st.integers(0, out)),
    )


_REMOVED = st.dictionaries(
    st.sampled_from(["compression", "memory"]), st.integers(-10, 250_000), max_size=2
)


@settings(max_examples=400, deadline=None)
@given(
    model=st.sampled_from(CATALOG.models()),
    baseline=st.sampled_from(["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro", "o1", "gpt-5"]),
    u=usages(),
    mode=st.sampled_from(["sync", "batch"]),
    outcome=st.sampled_from(["model", "cache_exact", "cache_semantic", "escalated"]),
    removed=_REMOVED,
)
def test_levers_always_sum_to_baseline_minus_actual(
    model: str, baseline: str, u: Usage, mode: str, outcome: str, removed: dict[str, int]
) -> None:
    pc = attribute_savings(
        CATALOG,
        model=model,
        usage=u,
        baseline_model=baseline,
        mode=mode,  # type: ignore[arg-type]
        outcome=outcome,  # type: ignore[arg-type]
        removed_input_tokens=removed,
    )
    price = CATALOG.get(model)
    served = cost_of(price, u, mode)  # type: ignore[arg-type]
    assert set(pc.savings_usd) <= set(LEVERS)
    if outcome == "escalated":
        assert pc.baseline_cost_usd == 0
        assert pc.cost_usd == served
        if served is not None:
            # A thrown-away attempt that cost nothing (no tokens) loses nothing.
            assert pc.savings_usd == ({"routing": -served} if served else {})
            assert_adds_up(pc)
        return

    extra = sum(t for t in removed.values() if t > 0)
    plain = u.without_provider_cache().with_extra_input(extra)
    assert pc.baseline_cost_usd == cost_of(CATALOG.get(baseline), plain)
    if outcome == "model":
        assert pc.cost_usd == served
        if served is None:
            assert mode == "batch" and price.usd_per_mtok_batch_input is None
            return
    else:
        assert pc.cost_usd == D(0)
        if served:
            assert pc.savings_usd[outcome] == served
    assert_adds_up(pc)
    for lever in ("compression", "memory"):
        if removed.get(lever, 0) <= 0:
            assert lever not in pc.savings_usd
        else:
            assert pc.savings_usd[lever] > 0
