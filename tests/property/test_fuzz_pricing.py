"""Price catalogs and pricing under arbitrary input: a valid catalog or a typed error.

``PriceCatalog.from_dict`` / ``with_overrides`` read user JSON; whatever it
holds (NaN, inf, negatives, strings, nested junk), the answer is a catalog or a
``ConfigurationError`` naming the model, never a ``TypeError`` / ``KeyError`` /
``decimal.InvalidOperation`` from inside. Pricing any valid ``Usage`` gives
``None`` or a non-negative ``Decimal``, and savings add up to baseline - cost.
"""

from __future__ import annotations

import warnings
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from costopt_core.errors import ConfigurationError
from costopt_core.pricing import PriceCatalog
from costopt_core.pricing.cost import attribute_savings, cost_of
from costopt_core.types import Usage

from ._strategies import FUZZ, json_like, scalars

PRICE_FIELDS = [
    "usd_per_mtok_input",
    "usd_per_mtok_output",
    "usd_per_mtok_cache_read",
    "usd_per_mtok_cache_write_5m",
    "usd_per_mtok_cache_write_1h",
    "usd_per_mtok_batch_input",
    "usd_per_mtok_batch_output",
]

price_values = st.one_of(
    scalars,
    st.decimals(min_value=0, max_value=10**6, places=4),
    st.floats(min_value=0, max_value=1e6),
)
price_dicts = st.dictionaries(
    st.sampled_from([*PRICE_FIELDS, "provider", "aliases", "long_context", "bogus"]),
    st.one_of(price_values, json_like),
    max_size=8,
)
model_names = st.one_of(
    st.sampled_from(["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "my-model"]),
    st.text(min_size=1, max_size=20),
)


def _check_catalog(catalog: PriceCatalog) -> None:
    """Every price a catalog accepted is a finite, non-negative Decimal."""
    for name in catalog.models():
        price = catalog.get(name, warn=False)
        assert price is not None
        for field in PRICE_FIELDS:
            value = getattr(price, field)
            if value is not None:
                assert isinstance(value, Decimal), (name, field, value)
                assert value.is_finite() and value >= 0, (name, field, value)


@FUZZ
@given(models=st.one_of(st.dictionaries(model_names, price_dicts, max_size=3), json_like))
def test_from_dict_gives_a_catalog_or_a_configuration_error(models: Any) -> None:
    data = {"schema_version": 1, "as_of": "2026-01-01", "models": models}
    try:
        catalog = PriceCatalog.from_dict(data, source="fuzz.json")
    except ConfigurationError as exc:
        assert "fuzz.json" in str(exc)
        return
    _check_catalog(catalog)


@FUZZ
@given(data=json_like)
def test_from_dict_of_any_top_level_value(data: Any) -> None:
    try:
        PriceCatalog.from_dict(data, source="top.json")
    except ConfigurationError as exc:
        assert "top.json" in str(exc)


@FUZZ
@given(st.dictionaries(model_names, st.one_of(price_dicts, json_like), min_size=1, max_size=3))
def test_with_overrides_gives_a_catalog_or_names_the_model(overrides: dict[str, Any]) -> None:
    base = PriceCatalog.default()
    try:
        catalog = base.with_overrides(overrides)
    except ConfigurationError as exc:
        assert any(repr(name) in str(exc) for name in overrides), str(exc)
        return
    _check_catalog(catalog)


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), "-inf", "NaN", Decimal("sNaN"), -1, "1e999x", [1], {}]
)
def test_each_bad_price_names_model_and_field(bad: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        PriceCatalog.default().with_overrides(
            {"my-model": {"usd_per_mtok_input": bad, "usd_per_mtok_output": 1}}
        )
    assert "'my-model'" in str(info.value)
    assert "usd_per_mtok_input" in str(info.value)


counts = st.one_of(st.none(), st.integers(min_value=0, max_value=10**12))


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    read, w5, w1h = draw(counts), draw(counts), draw(counts)
    cached = (read or 0) + (w5 or 0) + (w1h or 0)
    extra = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=10**12)))
    input_tokens = None if extra is None else cached + extra
    out = draw(counts)
    reasoning = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=out or 0)))
    return Usage(input_tokens, out, read, w5, w1h, reasoning)


CATALOG = PriceCatalog.default()
ALL_MODELS = CATALOG.models()


@FUZZ
@given(
    usage=usages(),
    model=st.sampled_from([*ALL_MODELS, "no-such-model"]),
    mode=st.sampled_from(["sync", "batch"]),
)
def test_cost_of_any_usage_is_none_or_non_negative(usage: Usage, model: str, mode: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cost = cost_of(CATALOG.get(model), usage, mode)
    if model == "no-such-model":
        assert cost is None
        return
    if not usage.is_known:
        return
    assert isinstance(cost, Decimal)
    assert cost.is_finite() and cost >= 0


@FUZZ
@given(
    usage=usages(),
    model=st.sampled_from(ALL_MODELS),
    baseline=st.sampled_from(["gpt-4o", "claude-opus-4-1", *ALL_MODELS[:5]]),
    mode=st.sampled_from(["sync", "batch"]),
    outcome=st.sampled_from(["model", "cache_exact", "cache_semantic"]),
    removed=st.dictionaries(
        st.sampled_from(["compression", "memory"]),
        st.integers(min_value=-5, max_value=10**9),
        max_size=2,
    ),
)
def test_savings_add_up_to_baseline_minus_cost(
    usage: Usage, model: str, baseline: str, mode: Any, outcome: Any, removed: dict[str, int]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        priced = attribute_savings(
            CATALOG,
            model=model,
            usage=usage,
            baseline_model=baseline,
            mode=mode,
            outcome=outcome,
            removed_input_tokens=removed,
        )
    for value in priced.savings_usd.values():
        assert isinstance(value, Decimal) and value.is_finite()
    if priced.cost_usd is not None:
        assert priced.cost_usd >= 0
    if priced.cost_usd is None or priced.baseline_cost_usd is None:
        return
    assert sum(priced.savings_usd.values(), Decimal(0)) == (
        priced.baseline_cost_usd - priced.cost_usd
    )
