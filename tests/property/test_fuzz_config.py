"""Every configuration model under arbitrary values: valid, or a typed error naming the field.

Every public config converts pydantic's error into ``ConfigurationError`` (via
``costopt_core.errors.config_error``), whose message names the field; the
internal ``BatchFrontSettings`` raises pydantic's error, converted by its
callers. An accepted config holds only finite numbers (an infinite wait or TTL
would crash a timer later).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from costopt_core.batch.front import BatchFrontSettings
from costopt_core.batch.job import BatchJobConfig
from costopt_core.budgets import Budget
from costopt_core.cache.config import CacheConfig
from costopt_core.cache.guards import GuardConfig
from costopt_core.context.relevance import RelevanceConfig
from costopt_core.context.summarize import AbstractiveConfig, SummarizerConfig
from costopt_core.errors import ConfigurationError
from costopt_core.local import LocalModelConfig
from costopt_core.memory.config import MemoryConfig
from costopt_core.routing.router import RouterConfig

from ._strategies import FUZZ, json_like

CONVERTING: list[type[BaseModel]] = [
    CacheConfig,
    GuardConfig,
    RouterConfig,
    Budget,
    RelevanceConfig,
    SummarizerConfig,
    AbstractiveConfig,
    MemoryConfig,
    LocalModelConfig,
    BatchJobConfig,
]
# BatchFrontSettings is internal: BatchRunnable / BatchRunner convert its error.
PYDANTIC_ERRORS: list[type[BaseModel]] = [BatchFrontSettings]

values = st.one_of(
    json_like,
    st.integers(min_value=-5, max_value=10**7),
    st.floats(min_value=-1.0, max_value=2.0),
    st.sampled_from([math.inf, -math.inf, math.nan, "inf", "nan", "1e999", Decimal("Infinity")]),
)


def _numbers(config: BaseModel) -> list[tuple[str, Any]]:
    out = []
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            out += [(f"{name}.{n}", v) for n, v in _numbers(value)]
        elif isinstance(value, float | Decimal) and not isinstance(value, bool):
            out.append((name, value))
        elif isinstance(value, tuple):
            out += [(name, v) for v in value if isinstance(v, float | Decimal)]
    return out


def _check(cls: type[BaseModel], kwargs: dict[str, Any]) -> None:
    try:
        config = cls(**kwargs)
    except ConfigurationError as exc:
        assert cls in CONVERTING, f"{cls.__name__} raised ConfigurationError"
        required = [n for n, f in cls.model_fields.items() if f.is_required()]
        assert any(name in str(exc) for name in [*kwargs, *required]), str(exc)
        return
    except ValidationError as exc:
        assert cls in PYDANTIC_ERRORS, f"{cls.__name__} leaked a pydantic ValidationError: {exc}"
        required = {n for n, f in cls.model_fields.items() if f.is_required()}
        locs = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
        assert locs <= set(kwargs) | required, (locs, kwargs)
        return
    for name, value in _numbers(config):
        if name == "thresholds":  # +-inf is a calibrated "never" / "always"; NaN is not
            assert not math.isnan(value), f"{cls.__name__}.thresholds accepted NaN"
            continue
        assert math.isfinite(value), f"{cls.__name__}.{name} accepted {value!r}"


@pytest.mark.parametrize("cls", CONVERTING + PYDANTIC_ERRORS, ids=lambda c: c.__name__)
@FUZZ
@given(data=st.data())
def test_config_is_valid_or_a_typed_error_naming_the_field(
    cls: type[BaseModel], data: st.DataObject
) -> None:
    fields = sorted(cls.model_fields)
    chosen = data.draw(st.lists(st.sampled_from([*fields, "not_a_field"]), max_size=4, unique=True))
    kwargs = {name: data.draw(values, label=name) for name in chosen}
    _check(cls, kwargs)


@pytest.mark.parametrize("cls", CONVERTING + PYDANTIC_ERRORS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("bad", [math.inf, math.nan, "inf"])
def test_no_float_field_accepts_infinity_or_nan(cls: type[BaseModel], bad: Any) -> None:
    required = {"limit_usd": 1} if cls is Budget else {}
    for name, info in cls.model_fields.items():
        if info.annotation is not None and "float" in str(info.annotation):
            _check(cls, {**required, name: bad})


def test_budget_limit_rejects_non_finite_decimals() -> None:
    for bad in (Decimal("NaN"), Decimal("Infinity"), Decimal("sNaN"), "nan"):
        with pytest.raises(ConfigurationError, match="limit_usd"):
            Budget(limit_usd=bad)


def test_router_thresholds_allow_infinity_but_not_nan() -> None:
    assert RouterConfig(thresholds=(math.inf, -math.inf)).thresholds == (math.inf, -math.inf)
    with pytest.raises(ConfigurationError, match="thresholds"):
        RouterConfig(thresholds=(0.5, math.nan))


@pytest.mark.parametrize(
    ("cls", "field"),
    [
        (CacheConfig, "ttl_s"),
        (CacheConfig, "inflight_wait_s"),
        (CacheConfig, "pad_hits_to_s"),
        (CacheConfig, "breaker_reset_s"),
        (BatchJobConfig, "max_wait_s"),
        (BatchJobConfig, "poll_interval_s"),
    ],
)
def test_infinite_seconds_are_rejected_naming_the_field(cls: type[BaseModel], field: str) -> None:
    # An infinite wait reaches threading.Event.wait / time.sleep and overflows there.
    with pytest.raises((ConfigurationError, ValidationError), match=field):
        cls(**{field: math.inf})
