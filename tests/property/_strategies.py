"""Shared hypothesis strategies: JSON-like junk and the settings every fuzz test uses."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: modest and deterministic: the property suite runs in seconds, on every test run
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1", "0", "1.5", ""]),
    st.text(max_size=20),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.just(Decimal("sNaN")),
)

json_like: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)


class Attrs:
    """An SDK-style object: fields as attributes, not keys."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __repr__(self) -> str:
        return f"Attrs({self.__dict__!r})"
