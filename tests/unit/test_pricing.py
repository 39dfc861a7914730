"""Prices and the cost of one call, checked against figures computed by hand.

Every expected amount is written as a Decimal literal next to the arithmetic
that produced it (tokens x $ per million tokens), so a wrong rate, a wrong
tier or a token billed twice shows up as a different number.
"""

from __future__ import annotations

import json
import threading
import warnings
from datetime import date
from decimal import Decimal
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from costopt_core.errors import ConfigurationError
from costopt_core.pricing import (
    ModelPrice,
    PriceCatalog,
    UnknownModelPriceWarning,
    cost_of,
    estimate_cost,
)
from costopt_core.types import Usage

D = Decimal
CATALOG = PriceCatalog.default()  # read-only use; tests that warn build their own
RAW = json.loads(resources.files("costopt_core.pricing").joinpath("prices.json").read_text("utf-8"))
KINDS = ("cache_read", "cache_write_5m", "cache_write_1h")


def price(model: str) -> ModelPrice:
    p = CATALOG.get(model, warn=False)
    assert p is not None, model
    return p


def usage(
    uncached: int = 0,
    out: int = 0,
    read: int = 0,
    w5: int = 0,
    w1h: int = 0,
    reasoning: int | None = None,
) -> Usage:
    return Usage(
        input_tokens=uncached + read + w5 + w1h,
        output_tokens=out,
        cache_read_tokens=read,
        cache_write_5m_tokens=w5,
        cache_write_1h_tokens=w1h,
        reasoning_tokens=reasoning,
    )


# --------------------------------------------------------------------------- OpenAI


def test_gpt_4o_list_prices() -> None:
    p = price("gpt-4o")
    assert (p.usd_per_mtok_input, p.usd_per_mtok_output, p.usd_per_mtok_cache_read) == (
        D("2.50"),
        D("10.00"),
        D("1.25"),
    )
    assert p.provider == "openai"


def test_gpt_4o_cost_without_cache() -> None:
    # 1000 x 2.50 + 500 x 10 = 2500 + 5000 = 7500 per million
    assert cost_of(price("gpt-4o"), usage(1000, 500)) == D("0.0075")


def test_gpt_4o_cost_with_cached_input() -> None:
    # 6000 x 2.50 + 4000 x 1.25 + 2000 x 10 = 15000 + 5000 + 20000 = 40000 per million
    c = cost_of(price("gpt-4o"), usage(6000, 2000, read=4000))
    assert c == D("0.04")
    assert isinstance(c, Decimal)


def test_gpt_4o_cost_from_a_real_openai_payload() -> None:
    from costopt_core.usage import normalize_usage

    u = normalize_usage(
        {
            "prompt_tokens": 2006,
            "completion_tokens": 300,
            "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920},
            "completion_tokens_details": {"reasoning_tokens": 192},
        }
    )
    # 86 x 2.50 + 1920 x 1.25 + 300 x 10 = 215 + 2400 + 3000 = 5615 per million
    assert cost_of(price("gpt-4o"), u) == D("0.005615")


def test_reasoning_tokens_are_billed_once_as_output() -> None:
    # 1000 x 2.50 + 1000 x 10 = 12500 (reasoning 800 is inside the 1000 output)
    assert cost_of(price("gpt-4o"), usage(1000, 1000, reasoning=800)) == D("0.0125")


def test_gpt_4o_mini_per_million() -> None:
    assert cost_of(price("gpt-4o-mini"), usage(1_000_000, 1_000_000)) == D("0.75")


def test_unknown_cache_split_is_billed_at_the_input_rate() -> None:
    u = Usage(input_tokens=4000, output_tokens=0)  # cache details not reported
    assert cost_of(price("gpt-4o"), u) == D("0.01")  # 4000 x 2.50


# --------------------------------------------------------------------------- Anthropic


def test_claude_sonnet_4_5_list_prices() -> None:
    p = price("claude-sonnet-4-5")
    assert (
        p.usd_per_mtok_input,
        p.usd_per_mtok_output,
        p.usd_per_mtok_cache_read,
        p.usd_per_mtok_cache_write_5m,
        p.usd_per_mtok_cache_write_1h,
    ) == (D("3"), D("15"), D("0.30"), D("3.75"), D("6"))
    assert p.long_context is not None
    assert p.long_context.above_input_tokens == 200_000
    assert (p.long_context.usd_per_mtok_input, p.long_context.usd_per_mtok_output) == (
        D("6"),
        D("22.50"),
    )


def test_claude_sonnet_4_5_every_token_kind() -> None:
    u = usage(25_000, 2_000, read=60_000, w5=10_000, w1h=5_000)
    assert u.input_tokens == 100_000
    # 25000 x 3 + 60000 x 0.30 + 10000 x 3.75 + 5000 x 6 + 2000 x 15
    # = 75000 + 18000 + 37500 + 30000 + 30000 = 190500 per million
    assert cost_of(price("claude-sonnet-4-5"), u) == D("0.1905")


def test_claude_sonnet_4_5_long_context() -> None:
    # 250000 x 6 + 10000 x 22.50 = 1500000 + 225000
    assert cost_of(price("claude-sonnet-4-5"), usage(250_000, 10_000)) == D("1.725")


def test_claude_sonnet_4_5_long_context_with_cache() -> None:
    u = usage(40_000, 1_000, read=200_000, w5=50_000, w1h=10_000)
    # 40000 x 6 + 200000 x 0.60 + 50000 x 7.50 + 10000 x 12 + 1000 x 22.50
    # = 240000 + 120000 + 375000 + 120000 + 22500 = 877500
    assert cost_of(price("claude-sonnet-4-5"), u) == D("0.8775")


def test_long_context_threshold_is_strictly_above_and_counts_cached_tokens() -> None:
    p = price("claude-sonnet-4-5")
    assert cost_of(p, usage(200_000)) == D("0.6")  # 200000 x 3: not above the threshold
    assert cost_of(p, usage(200_001)) == D("1.200006")  # 200001 x 6
    # 10000 uncached + 200000 read = 210000 prompt tokens: the long tier applies.
    # 10000 x 6 + 200000 x 0.60 = 60000 + 120000
    assert cost_of(p, usage(10_000, read=200_000)) == D("0.18")


# --------------------------------------------------------------------------- Google


def test_gemini_2_5_pro_base_and_long_context() -> None:
    p = price("gemini-2.5-pro")
    # 100000 x 1.25 + 1000 x 10 = 125000 + 10000
    assert cost_of(p, usage(100_000, 1_000)) == D("0.135")
    # 200000 x 2.50 + 100000 x 0.25 + 5000 x 15 = 500000 + 25000 + 75000
    long = usage(200_000, 5_000, read=100_000)
    assert cost_of(p, long) == D("0.6")
    assert cost_of(p, long, "batch") == D("0.3")


def test_missing_cache_price_in_long_context_bills_as_long_context_input() -> None:
    cat = CATALOG.with_overrides(
        {
            "tiered": {
                "usd_per_mtok_input": "1",
                "usd_per_mtok_output": "1",
                "long_context": {"above_input_tokens": 100, "usd_per_mtok_input": "2"},
            }
        }
    )
    p = cat.get("tiered")
    # No cache price at all: a read is billed as input, which above 100 tokens is $2.
    unreported = Usage(input_tokens=1000, output_tokens=0)
    reported = usage(500, read=500)
    assert cost_of(p, unreported) == D("0.002")
    assert cost_of(p, reported) == cost_of(p, unreported)


# --------------------------------------------------------------------------- batch


def test_batch_is_half_for_openai_and_anthropic_including_cache_reads() -> None:
    u = usage(6000, 2000, read=4000)
    assert cost_of(price("gpt-4o"), u, "batch") == D("0.02")  # 0.04 / 2
    s = usage(25_000, 2_000, read=60_000, w5=10_000, w1h=5_000)
    assert cost_of(price("claude-sonnet-4-5"), s, "batch") == D("0.09525")  # 0.1905 / 2
    # Only cache reads: 100000 x 0.30 / 2
    assert cost_of(price("claude-sonnet-4-5"), usage(read=100_000), "batch") == D("0.015")
    assert cost_of(price("gpt-4o"), usage(read=1_000_000), "batch") == D("0.625")


_BATCHED = [m for m in CATALOG.models() if price(m).usd_per_mtok_batch_input is not None]
_UNBATCHED = [m for m in CATALOG.models() if price(m).usd_per_mtok_batch_input is None]


@pytest.mark.parametrize("model", _BATCHED)
def test_batch_is_exactly_half_of_sync_for_every_batched_model(model: str) -> None:
    p = price(model)
    for u in (
        usage(1234, 567),
        usage(1000, 300, read=5000, w5=700, w1h=300),
        usage(150_000, 4_000, read=60_000, w5=1_000, w1h=2_000),  # long tier where there is one
    ):
        sync = cost_of(p, u)
        assert sync is not None and sync > 0
        assert cost_of(p, u, "batch") * 2 == sync


def test_there_are_models_on_both_sides_of_the_batch_split() -> None:
    assert {"gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro"} <= set(_BATCHED)
    assert {"mixtral-8x7b-instruct", "smollm2-135m-instruct"} <= set(_UNBATCHED)


@pytest.mark.parametrize("model", _UNBATCHED)
def test_no_batch_price_in_batch_mode_is_unknown(model: str) -> None:
    p = price(model)
    assert cost_of(p, usage(1000, 100)) is not None
    assert cost_of(p, usage(1000, 100), "batch") is None


def test_unknown_token_counts_give_no_cost() -> None:
    p = price("gpt-4o")
    assert cost_of(p, Usage()) is None
    assert cost_of(p, Usage(input_tokens=10)) is None
    assert cost_of(p, Usage(output_tokens=10)) is None
    assert cost_of(None, usage(10, 10)) is None
    assert cost_of(None, usage(10, 10), "batch") is None


def test_zero_tokens_cost_zero() -> None:
    assert cost_of(price("gpt-4o"), usage()) == D(0)


def test_estimate_cost() -> None:
    assert estimate_cost(price("gpt-4o"), 1000) == D("0.0025")
    assert estimate_cost(price("gpt-4o"), 1000, 100) == D("0.0035")
    assert estimate_cost(None, 1000, 100) is None


# --------------------------------------------------------------------------- reference model


def _reference_cost(p: ModelPrice, u: Usage, mode: str) -> Fraction | None:
    """An independent re-statement of the billing rules, in exact fractions."""
    if u.input_tokens is None or u.output_tokens is None:
        return None
    f = Fraction
    base_in, base_out = f(p.usd_per_mtok_input), f(p.usd_per_mtok_output)
    lc = p.long_context
    long = lc is not None and u.input_tokens > lc.above_input_tokens
    tier_in = f(lc.usd_per_mtok_input) if long and lc.usd_per_mtok_input is not None else base_in
    tier_out = (
        f(lc.usd_per_mtok_output) if long and lc.usd_per_mtok_output is not None else base_out
    )
    rate: dict[str, Fraction] = {"input": tier_in, "output": tier_out}
    for kind in KINDS:
        explicit = getattr(lc, f"usd_per_mtok_{kind}") if long else None
        if explicit is None:
            explicit = getattr(p, f"usd_per_mtok_{kind}")
        rate[kind] = f(explicit) if explicit is not None else tier_in
    in_ratio = out_ratio = Fraction(1)
    if mode == "batch":
        if p.usd_per_mtok_batch_input is None or p.usd_per_mtok_batch_output is None:
            return None
        in_ratio = f(p.usd_per_mtok_batch_input) / base_in if base_in else Fraction(1)
        out_ratio = f(p.usd_per_mtok_batch_output) / base_out if base_out else Fraction(1)
    tokens = {
        "input": u.uncached_input_tokens or 0,
        "cache_read": u.cache_read_tokens or 0,
        "cache_write_5m": u.cache_write_5m_tokens or 0,
        "cache_write_1h": u.cache_write_1h_tokens or 0,
    }
    total = sum(n * rate[k] * in_ratio for k, n in tokens.items())
    total += u.output_tokens * rate["output"] * out_ratio
    return total / 1_000_000


def _tier_lacks_a_price(p: ModelPrice, u: Usage) -> bool:
    """The case of the long-context fallback bug (see the xfail test above)."""
    lc = p.long_context
    if lc is None or u.input_tokens is None or u.input_tokens <= lc.above_input_tokens:
        return False
    counts = {
        "cache_read": u.cache_read_tokens,
        "cache_write_5m": u.cache_write_5m_tokens,
        "cache_write_1h": u.cache_write_1h_tokens,
    }
    return any(
        counts[k]
        and getattr(lc, f"usd_per_mtok_{k}") is None
        and getattr(p, f"usd_per_mtok_{k}") is None
        for k in KINDS
    )


_COUNT = st.integers(min_value=0, max_value=400_000)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    return usage(
        draw(_COUNT),
        draw(_COUNT),
        read=draw(_COUNT),
        w5=draw(st.sampled_from([0, 0, 1, 5_000, 120_000])),
        w1h=draw(st.sampled_from([0, 0, 1, 3_000, 90_000])),
    )


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from(CATALOG.models()),
    u=usages(),
    mode=st.sampled_from(["sync", "batch"]),
)
def test_cost_matches_the_reference_model(model: str, u: Usage, mode: str) -> None:
    p = price(model)
    assume(not _tier_lacks_a_price(p, u))
    got = cost_of(p, u, mode)  # type: ignore[arg-type]
    want = _reference_cost(p, u, mode)
    if want is None:
        assert got is None
    else:
        assert got is not None and Fraction(got) == want
        assert got >= 0


# --------------------------------------------------------------------------- aliases


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("gpt-4o", "gpt-4o"),
        ("GPT-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("chatgpt-4o-latest", "chatgpt-4o-latest"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("openai/gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-4-0613", "gpt-4"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-sonnet-4@20250514", "claude-sonnet-4"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku"),
        ("anthropic/claude-haiku-4-5", "claude-haiku-4-5"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("google/gemini-2.5-pro", "gemini-2.5-pro"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", "llama-3.1-8b-instruct"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m-instruct"),
    ],
)
def test_alias_resolution(raw: str, canonical: str) -> None:
    assert CATALOG.resolve(raw) == canonical
    assert raw in CATALOG
    assert CATALOG.get(raw, warn=False) is CATALOG.get(canonical, warn=False)


@pytest.mark.parametrize(
    "raw",
    [
        "totally-unknown-model",
        "",
        "o1-mini",
        "o1-mini-2024-09-12",
        "gpt-4o-audio-preview",
        "gpt-4o-realtime-preview-2024-12-17",
        "gpt-4o-mini-tts",
        "gpt-4-32k",
        "gpt-3.5-turbo-instruct",
        "claude-3-opus-20240229",
        "claude-sonnet-4-6",
        "gemini-1.5-pro",
        "gpt-4o-mini-search-preview-2025-03-11",
    ],
)
def test_names_that_must_not_resolve(raw: str) -> None:
    assert CATALOG.resolve(raw) is None
    assert raw not in CATALOG
    assert CATALOG.get(raw, warn=False) is None


@pytest.mark.parametrize(
    ("raw", "not_this"),
    [
        ("gpt-4o-mini", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o"),
        ("gpt-4.1-nano", "gpt-4.1"),
        ("gpt-5-nano", "gpt-5"),
        ("o3-mini", "o3"),
        ("claude-sonnet-4-5", "claude-sonnet-4"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4-5"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash"),
        ("gemini-2.0-flash-lite", "gemini-2.0-flash"),
        ("claude-opus-4-1", "claude-opus-4"),
    ],
)
def test_a_longer_name_never_falls_back_to_a_shorter_model(raw: str, not_this: str) -> None:
    assert CATALOG.resolve(raw) not in (None, not_this)
    assert price(raw) != price(not_this)


def test_gpt_4o_mini_is_priced_as_mini() -> None:
    assert price("gpt-4o-mini-2024-07-18").usd_per_mtok_input == D("0.15")
    assert cost_of(price("gpt-4o-mini"), usage(1000, 500)) == D("0.00045")  # 150 + 300


def test_every_name_and_alias_resolves_to_its_own_entry() -> None:
    owners: dict[str, str] = {}
    for name in CATALOG.models():
        assert CATALOG.resolve(name) == name
        for alias in price(name).aliases:
            assert alias.lower() not in owners, f"{alias} is claimed twice"
            owners[alias.lower()] = name
            assert CATALOG.resolve(alias) == name
    # no alias shadows another model's own name
    assert all(owner == alias for alias, owner in owners.items() if alias in CATALOG.models())


# --------------------------------------------------------------------------- unknown models


def _record() -> warnings.catch_warnings:
    return warnings.catch_warnings(record=True)


def test_unknown_model_costs_none_with_one_warning_per_model_per_catalog() -> None:
    cat = PriceCatalog.default()
    with _record() as seen:
        warnings.simplefilter("always")
        first = cat.get("my-finetune")
        assert cost_of(first, usage(1000, 100)) is None
        for _ in range(5):
            assert cat.get("my-finetune") is None
        cat.get("another-unknown")
        cat.get("another-unknown")
        other = PriceCatalog.default()
        other.get("my-finetune")
    unknown = [w for w in seen if issubclass(w.category, UnknownModelPriceWarning)]
    assert [str(w.message).split("'")[1] for w in unknown] == [
        "my-finetune",
        "another-unknown",
        "my-finetune",
    ]
    assert len(seen) == 3
    assert "with_overrides" in str(unknown[0].message)


def test_unknown_model_warning_with_pytest_warns() -> None:
    cat = PriceCatalog.default()
    with pytest.warns(UnknownModelPriceWarning, match="no price for model 'mystery-7b'"):
        p = cat.get("mystery-7b")
    assert p is None
    c = cost_of(p, usage(10, 10))
    assert c is None
    assert c != D(0)


def test_silent_lookups_do_not_use_up_the_warning() -> None:
    cat = PriceCatalog.default()
    with _record() as seen:
        warnings.simplefilter("always")
        assert cat.get("ghost", warn=False) is None
        assert "ghost" not in cat
        assert cat.resolve("ghost") is None
    assert seen == []
    with pytest.warns(UnknownModelPriceWarning, match="ghost"):
        cat.get("ghost")


def test_known_models_never_warn() -> None:
    cat = PriceCatalog.default()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in cat.models():
            assert cat.get(name) is not None
        assert cat.get("gpt-4o-2024-08-06") is not None


def test_one_warning_under_concurrency() -> None:
    cat = PriceCatalog.default()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            cat.get("contended-model")

    with _record() as seen:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len([w for w in seen if issubclass(w.category, UnknownModelPriceWarning)]) == 1


# --------------------------------------------------------------------------- overrides


def test_override_adds_a_custom_model() -> None:
    cat = CATALOG.with_overrides(
        {"my-ft": {"usd_per_mtok_input": "3", "usd_per_mtok_output": "12", "aliases": ["ft:v1"]}}
    )
    # 1000 x 3 + 1000 x 12
    assert cost_of(cat.get("my-ft"), usage(1000, 1000)) == D("0.015")
    assert cat.resolve("ft:v1") == "my-ft"
    assert "my-ft" not in CATALOG  # the original is not modified
    assert cat.get("gpt-4o") == CATALOG.get("gpt-4o")
    assert cat.as_of == CATALOG.as_of


def test_local_model_at_explicit_zero_costs_zero_not_none() -> None:
    cat = CATALOG.with_overrides(
        {"llama-local": {"usd_per_mtok_input": 0, "usd_per_mtok_output": "0", "provider": "local"}}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = cat.get("llama-local")
    c = cost_of(p, usage(5000, 5000, read=100))
    assert c is not None
    assert c == D(0)
    assert isinstance(c, Decimal)


def test_shipped_local_model_is_free() -> None:
    assert cost_of(price("SmolLM2-135M-Instruct"), usage(10_000, 10_000)) == D(0)


def test_partial_override_keeps_the_fields_it_does_not_name() -> None:
    cat = CATALOG.with_overrides({"gpt-4o": {"usd_per_mtok_input": "2.00"}})
    p = cat.get("gpt-4o")
    assert p.usd_per_mtok_input == D("2.00")
    assert p.usd_per_mtok_output == D("10.00")
    assert p.usd_per_mtok_cache_read == D("1.25")
    assert p.usd_per_mtok_batch_input == D("1.25")
    assert p.provider == "openai"
    assert cat.resolve("gpt-4o-2024-08-06") == "gpt-4o"
    assert CATALOG.get("gpt-4o").usd_per_mtok_input == D("2.50")
    # 1000 x 2.00 + 500 x 10
    assert cost_of(p, usage(1000, 500)) == D("0.007")


def test_partial_override_keeps_the_long_context_tier() -> None:
    cat = CATALOG.with_overrides({"claude-sonnet-4-5": {"usd_per_mtok_output": "14"}})
    p = cat.get("claude-sonnet-4-5")
    assert p.long_context == price("claude-sonnet-4-5").long_context
    assert cost_of(p, usage(250_000)) == D("1.5")  # 250000 x 6 (long tier)
    assert cost_of(p, usage(1000, 1000)) == D("0.017")  # 3000 + 14000


def test_override_via_a_dated_name_of_a_known_model() -> None:
    # A snapshot gets its own entry, built on the base model's other prices.
    cat = CATALOG.with_overrides({"Claude-3-5-Haiku-20241022": {"usd_per_mtok_output": "3"}})
    assert cat.get("claude-3-5-haiku-20241022").usd_per_mtok_output == D("3")
    assert cat.get("claude-3-5-haiku-20241022").usd_per_mtok_input == D("0.80")
    assert cat.get("claude-3-5-haiku").usd_per_mtok_output == D("4.00")


@pytest.mark.parametrize("model", ["gpt-4o-2024-05-13", "chatgpt-4o-latest", "GPT-4o-2024-05-13"])
def test_snapshots_priced_apart_from_their_base_get_their_own_list_price(model: str) -> None:
    # Date stripping would price these as gpt-4o ($2.50/$10); their list price is $5/$15.
    p = CATALOG.get(model)
    assert p is not None
    assert (p.usd_per_mtok_input, p.usd_per_mtok_output) == (D("5.00"), D("15.00"))
    assert cost_of(p, usage(1_000_000, 1_000_000)) == D("20")


def test_the_dated_snapshot_keeps_a_batch_price() -> None:
    # Half its list price through the Batch API, as gpt-4o's own batch rate is.
    p = CATALOG.get("gpt-4o-2024-05-13")
    assert p is not None
    assert (p.usd_per_mtok_batch_input, p.usd_per_mtok_batch_output) == (D("2.50"), D("7.50"))


def test_an_explicit_entry_beats_date_stripping_and_other_models_aliases() -> None:
    # "m-x" comes first: "m"'s alias of the same name must not take it over.
    cat = PriceCatalog(
        {
            "m-x": ModelPrice(usd_per_mtok_input=D("2"), usd_per_mtok_output=D("2")),
            "m-2024-01-01": ModelPrice(usd_per_mtok_input=D("3"), usd_per_mtok_output=D("3")),
            "m": ModelPrice(
                usd_per_mtok_input=D("1"), usd_per_mtok_output=D("1"), aliases=("m-x",)
            ),
        }
    )
    assert cat.resolve("m-x") == "m-x"
    assert cat.resolve("m-2024-01-01") == "m-2024-01-01"
    assert cat.resolve("m-2024-02-02") == "m"


def test_override_of_one_snapshot_does_not_reprice_the_others() -> None:
    cat = CATALOG.with_overrides(
        {"gpt-4o-2024-05-13": {"usd_per_mtok_input": "5.00", "usd_per_mtok_output": "15.00"}}
    )
    assert cat.get("gpt-4o-2024-05-13").usd_per_mtok_input == D("5.00")
    assert cat.get("gpt-4o").usd_per_mtok_input == D("2.50")
    assert cat.get("gpt-4o-2024-08-06").usd_per_mtok_input == D("2.50")


def test_override_with_a_model_price_object() -> None:
    mp = ModelPrice(usd_per_mtok_input=D("1"), usd_per_mtok_output=D("2"), provider="acme")
    cat = CATALOG.with_overrides({"acme-1": mp})
    assert cat.get("acme-1") is mp
    assert cost_of(cat.get("acme-1"), usage(1_000_000, 1_000_000)) == D("3")


def test_float_prices_are_read_exactly() -> None:
    cat = CATALOG.with_overrides({"f": {"usd_per_mtok_input": 0.1, "usd_per_mtok_output": 0.3}})
    p = cat.get("f")
    assert p.usd_per_mtok_input == D("0.1")
    assert p.usd_per_mtok_output == D("0.3")
    assert cost_of(p, usage(1_000_000, 1_000_000)) == D("0.4")


@pytest.mark.parametrize(
    "bad",
    [
        {"usd_per_mtok_input": "-1", "usd_per_mtok_output": "1"},
        {"usd_per_mtok_input": -0.5, "usd_per_mtok_output": "1"},
        {"usd_per_mtok_input": "1", "usd_per_mtok_output": "-0.01"},
        {"usd_per_mtok_input": "cheap", "usd_per_mtok_output": "1"},
        {"usd_per_mtok_input": "NaN", "usd_per_mtok_output": "1"},
        {"usd_per_mtok_input": "Infinity", "usd_per_mtok_output": "1"},
        {"usd_per_mtok_input": None, "usd_per_mtok_output": "1"},
        {"usd_per_mtok_input": [1], "usd_per_mtok_output": "1"},
        {"usd_per_mtok_input": "1", "usd_per_mtok_output": "1", "usd_per_mtok_cache_read": "-1"},
        {"usd_per_mtok_input": "1", "usd_per_mtok_output": "1", "usd_per_mtok_batch_input": "x"},
        {"usd_per_mtok_input": "1", "usd_per_mtok_output": "1", "usd_per_mtok_inptu": "1"},
        {"usd_per_mtok_input": "1"},  # a new model needs an output price too
        {
            "usd_per_mtok_input": "1",
            "usd_per_mtok_output": "1",
            "long_context": {"above_input_tokens": 0, "usd_per_mtok_input": "2"},
        },
        {
            "usd_per_mtok_input": "1",
            "usd_per_mtok_output": "1",
            "long_context": {"above_input_tokens": 10, "usd_per_mtok_input": "-2"},
        },
    ],
)
def test_invalid_override_is_a_configuration_error_naming_the_model(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="'my-broken-model'"):
        CATALOG.with_overrides({"my-broken-model": bad})


def test_invalid_partial_override_of_a_known_model_names_it() -> None:
    with pytest.raises(ConfigurationError, match="gpt-4o"):
        CATALOG.with_overrides({"gpt-4o": {"usd_per_mtok_cache_read": "-0.1"}})
    with pytest.raises(ConfigurationError, match="gpt-4o"):
        CATALOG.with_overrides({"gpt-4o": {"usd_per_mtok_output": "ten"}})


# --------------------------------------------------------------------------- loading


def _write(tmp_path: Path, content: Any, name: str = "prices.json") -> Path:
    p = tmp_path / name
    p.write_text(content if isinstance(content, str) else json.dumps(content), "utf-8")
    return p


GOOD = {
    "schema_version": 1,
    "as_of": "2026-01-15",
    "models": {"m1": {"usd_per_mtok_input": "1.5", "usd_per_mtok_output": 2.5}},
}


def test_from_file_reads_a_valid_catalog(tmp_path: Path) -> None:
    cat = PriceCatalog.from_file(_write(tmp_path, GOOD))
    assert cat.as_of == date(2026, 1, 15)
    assert cat.models() == ["m1"]
    assert cost_of(cat.get("m1"), usage(1_000_000, 1_000_000)) == D("4")
    assert PriceCatalog.from_file(str(_write(tmp_path, GOOD))).models() == ["m1"]


def test_from_file_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "prices.json"
    with pytest.raises(ConfigurationError, match="does not exist") as info:
        PriceCatalog.from_file(missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("text", ["", "{", "not json", "{'models': {}}", '{"models": {},}'])
def test_from_file_bad_json(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        PriceCatalog.from_file(_write(tmp_path, text))


def test_from_file_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        PriceCatalog.from_file(tmp_path)


def test_from_file_not_utf8_is_a_configuration_error(tmp_path: Path) -> None:
    p = tmp_path / "prices.json"
    p.write_bytes(b"\xff\xfe{\x00}\x00")
    with pytest.raises(ConfigurationError):
        PriceCatalog.from_file(p)


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_wrong_schema_version(tmp_path: Path, version: Any) -> None:
    with pytest.raises(ConfigurationError, match="schema_version"):
        PriceCatalog.from_file(_write(tmp_path, {**GOOD, "schema_version": version}))


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"schema_version": 1},
        {"schema_version": 1, "models": ["gpt-4o"]},
        {"schema_version": 1, "models": None},
    ],
)
def test_missing_models_object(tmp_path: Path, data: Any) -> None:
    with pytest.raises(ConfigurationError, match="'models'"):
        PriceCatalog.from_file(_write(tmp_path, data))


@pytest.mark.parametrize("as_of", ["yesterday", "2026-13-01", 20260101])
def test_bad_as_of(tmp_path: Path, as_of: Any) -> None:
    with pytest.raises(ConfigurationError, match="as_of"):
        PriceCatalog.from_file(_write(tmp_path, {**GOOD, "as_of": as_of}))


@pytest.mark.parametrize(
    "entry", [5, "cheap", {"usd_per_mtok_input": "-1", "usd_per_mtok_output": "1"}]
)
def test_bad_model_entry_in_file_names_the_model(tmp_path: Path, entry: Any) -> None:
    data = {**GOOD, "models": {**GOOD["models"], "bad-model": entry}}
    with pytest.raises(ConfigurationError, match="'bad-model'"):
        PriceCatalog.from_file(_write(tmp_path, data))


def test_to_dict_round_trip_keeps_every_price() -> None:
    again = PriceCatalog.from_dict(json.loads(json.dumps(CATALOG.to_dict())))
    assert again.models() == CATALOG.models()
    assert again.as_of == CATALOG.as_of
    for name in CATALOG.models():
        assert again.get(name) == CATALOG.get(name), name


# --------------------------------------------------------------------------- shipped data


def test_shipped_catalog_header() -> None:
    assert RAW["schema_version"] == PriceCatalog.SCHEMA_VERSION == 1
    assert RAW["currency"] == "USD"
    assert isinstance(CATALOG.as_of, date)
    assert CATALOG.as_of == date.fromisoformat(RAW["as_of"])
    assert CATALOG.schema_version == 1
    assert len(CATALOG.models()) == len(RAW["models"]) >= 30


@pytest.mark.parametrize("model", sorted(RAW["models"]))
def test_shipped_model_entry(model: str) -> None:
    raw = RAW["models"][model]
    p = price(model)
    # input and output are given explicitly, as strings (no float rounding).
    for key in ("usd_per_mtok_input", "usd_per_mtok_output"):
        assert key in raw
        assert isinstance(raw[key], str)
    for key, value in raw.items():
        if key.startswith("usd_per_mtok"):
            assert isinstance(value, str), key
    assert p.usd_per_mtok_input >= 0 and p.usd_per_mtok_output >= 0
    assert raw.get("provider") in {"openai", "anthropic", "google", "together", "local"}
    # batch prices come in pairs and are exactly half the sync prices
    has_in = p.usd_per_mtok_batch_input is not None
    assert has_in == (p.usd_per_mtok_batch_output is not None)
    if has_in:
        assert p.usd_per_mtok_batch_input * 2 == p.usd_per_mtok_input
        assert p.usd_per_mtok_batch_output * 2 == p.usd_per_mtok_output
    if p.usd_per_mtok_cache_read is not None:
        assert p.usd_per_mtok_cache_read < p.usd_per_mtok_input
    lc = p.long_context
    if lc is not None:
        assert lc.above_input_tokens == 200_000
        assert lc.usd_per_mtok_input is not None and lc.usd_per_mtok_input > p.usd_per_mtok_input
        assert (
            lc.usd_per_mtok_output is not None and lc.usd_per_mtok_output >= p.usd_per_mtok_output
        )


#: Models whose published cache prices are rounded: (cache read, 5-minute write).
_ROUNDED_CACHE_PRICES = {"claude-3-haiku": (D("0.03"), D("0.30"))}


@pytest.mark.parametrize(
    "model", [m for m in sorted(RAW["models"]) if price(m).provider == "anthropic"]
)
def test_shipped_anthropic_cache_multipliers(model: str) -> None:
    p = price(model)
    if model in _ROUNDED_CACHE_PRICES:
        # Anthropic's table rounds these (not 0.025 / 0.3125): its figures, not the ratios.
        read, write_5m = _ROUNDED_CACHE_PRICES[model]
        assert (p.usd_per_mtok_cache_read, p.usd_per_mtok_cache_write_5m) == (read, write_5m)
    else:
        assert p.usd_per_mtok_cache_read == p.usd_per_mtok_input * D("0.1")
        assert p.usd_per_mtok_cache_write_5m == p.usd_per_mtok_input * D("1.25")
    assert p.usd_per_mtok_cache_write_1h == p.usd_per_mtok_input * 2
    lc = p.long_context
    if lc is not None:
        assert lc.usd_per_mtok_cache_read == lc.usd_per_mtok_input * D("0.1")
        assert lc.usd_per_mtok_cache_write_5m == lc.usd_per_mtok_input * D("1.25")
        assert lc.usd_per_mtok_cache_write_1h == lc.usd_per_mtok_input * 2


# --------------------------------------------------------------------------- integer fast path


def _decimal_sum(p: ModelPrice, u: Usage, mode: str) -> Decimal | None:
    """The cost as plain Decimal arithmetic: a product per kind, then their sum."""
    from costopt_core.pricing.cost import _rates

    if u.input_tokens is None or u.output_tokens is None:
        return None
    rates = _rates(p, u.input_tokens, mode)  # type: ignore[arg-type]
    if rates is None:
        return None
    read, w5, w1h = (
        u.cache_read_tokens or 0,
        u.cache_write_5m_tokens or 0,
        u.cache_write_1h_tokens or 0,
    )
    r_in, r_read, r_w5, r_w1h, r_out = rates.decimals
    return (
        (u.input_tokens - read - w5 - w1h) * r_in
        + read * r_read
        + w5 * r_w5
        + w1h * r_w1h
        + u.output_tokens * r_out
    )


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from(CATALOG.models()),
    u=usages(),
    mode=st.sampled_from(["sync", "batch"]),
)
def test_integer_cost_is_the_same_decimal_as_decimal_arithmetic(
    model: str, u: Usage, mode: str
) -> None:
    # Same value and same exponent, so exports (format "f") do not change.
    got = cost_of(price(model), u, mode)  # type: ignore[arg-type]
    want = _decimal_sum(price(model), u, mode)
    assert str(got) == str(want)


def test_inexact_rates_keep_decimal_rounding() -> None:
    """A batch ratio of 1/3 gives 28-digit rates: past the precision, Decimal rounding rules."""
    import decimal

    p = CATALOG.with_overrides(
        {
            "thirds": {
                "usd_per_mtok_input": "3",
                "usd_per_mtok_output": "9",
                "usd_per_mtok_cache_read": "3",
                "usd_per_mtok_batch_input": "1",
                "usd_per_mtok_batch_output": "1",
            }
        }
    ).get("thirds")
    assert p is not None
    u = usage(5, 40, read=5_001)
    assert str(cost_of(p, u, "batch")) == str(_decimal_sum(p, u, "batch"))
    with decimal.localcontext() as ctx:
        ctx.prec = 6  # a low precision rounds small amounts too
        big = usage(123_457, 98_765, read=1)
        assert str(cost_of(price("gpt-4o"), big)) == str(_decimal_sum(price("gpt-4o"), big, "sync"))


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from(CATALOG.models()),
    baseline=st.sampled_from(["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro"]),
    u=usages(),
)
def test_the_usual_calls_one_pass_prices_as_the_general_path(
    model: str, baseline: str, u: Usage
) -> None:
    """The one-pass pricing of a plain sync call gives the general path's very Decimals."""
    from costopt_core.pricing.cost import _plain_sync_call, _rates_of, attribute_savings

    # The general path (a removal of 0 tokens is the same call), which also
    # builds the rates the one-pass path reads.
    general = attribute_savings(
        CATALOG, model=model, usage=u, baseline_model=baseline, removed_input_tokens={"memory": 0}
    )
    fast = _plain_sync_call(_rates_of(price(model)), _rates_of(price(baseline)), u)
    if fast is None:  # long context or past the precision: the general path answers
        return
    assert str(fast.cost_usd) == str(general.cost_usd)
    assert str(fast.baseline_cost_usd) == str(general.baseline_cost_usd)
    assert {k: str(v) for k, v in fast.savings_usd.items()} == {
        k: str(v) for k, v in general.savings_usd.items()
    }


def test_a_call_pricer_prices_as_attribute_savings() -> None:
    from costopt_core.pricing import CallPricer
    from costopt_core.pricing.cost import _plain_sync_call, _rates_of, attribute_savings

    pricer = CallPricer(CATALOG, "gpt-4o")
    u = Usage(input_tokens=1_200, output_tokens=40, cache_read_tokens=1_024)
    cases = [
        ("gpt-4o-mini", u, "model"),
        ("gpt-4o-mini", u, "model"),  # second call: the one-pass path
        ("gpt-4o-mini", u, "cache_semantic"),
        ("claude-sonnet-4-5", Usage(input_tokens=250_000, output_tokens=10), "model"),  # long
        ("claude-sonnet-4-5", Usage(input_tokens=250_000, output_tokens=10), "model"),
        ("gpt-4o-mini", Usage(None, 40), "model"),  # unknown input size
    ]
    for model, usage, outcome in cases:
        got = pricer.price(model, usage, outcome)  # type: ignore[arg-type]
        want = attribute_savings(
            CATALOG, model=model, usage=usage, baseline_model="gpt-4o", outcome=outcome
        )  # type: ignore[arg-type]
        assert (str(got.cost_usd), str(got.baseline_cost_usd), got.savings_usd) == (
            str(want.cost_usd),
            str(want.baseline_cost_usd),
            want.savings_usd,
        )
    # gpt-4o-mini: 176 x 0.15 + 1,024 x 0.075 + 40 x 0.60 per million.
    assert pricer.price("gpt-4o-mini", u).cost_usd == Decimal("0.0001272")
    mini, base = _rates_of(price("gpt-4o-mini")), _rates_of(price("gpt-4o"))
    assert _plain_sync_call(mini, base, u) is not None
    assert _plain_sync_call(mini, base, Usage(None, 40)) is None
    long = Usage(input_tokens=250_000, output_tokens=10)  # above Claude's long-context tier
    assert _plain_sync_call(_rates_of(price("claude-sonnet-4-5")), base, long) is None


def test_a_call_pricer_leaves_unknown_models_unpriced_with_one_warning() -> None:
    from costopt_core.pricing import CallPricer

    pricer = CallPricer(PriceCatalog.default(), "gpt-4o")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        first = pricer.price("acme-llm-9", Usage(100, 10))
        second = pricer.price("acme-llm-9", Usage(100, 10))
    assert first.cost_usd is None and second.cost_usd is None
    assert first.baseline_cost_usd == second.baseline_cost_usd > 0
    assert len(seen) == 1


def test_a_catalog_remembers_resolved_names_and_still_warns_once_for_unknown() -> None:
    cat = PriceCatalog.default()
    first = cat.get("gpt-4o-2024-08-06")
    assert first is not None and first is cat.get("gpt-4o-2024-08-06") is cat.get("gpt-4o")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert cat.get("acme-llm-9") is None
        assert cat.get("acme-llm-9") is None
    assert len(seen) == 1
