"""choose_tier: thresholds, the unsure margin band, cost scaling, and the explanation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costopt_core.errors import ConfigurationError
from costopt_core.routing import choose_tier, choose_tiers, effective_threshold

NAMES = ("cheap", "mid", "frontier")


def test_cheapest_tier_that_reaches_its_threshold() -> None:
    d = choose_tier([0.9, 0.95, 1.0], [0.8, 0.7], tier_names=NAMES)
    assert d.tier_index == 0 and d.tier == "cheap" and not d.escalate_band
    assert d.score == 0.9 and d.threshold == 0.8
    assert d.reason == "P(cheap good enough)=0.900 >= threshold 0.800"
    d = choose_tier([0.5, 0.75, 1.0], [0.8, 0.7], tier_names=NAMES)
    assert d.tier_index == 1 and d.tier == "mid"
    assert "passed over cheap 0.500 < 0.800" in d.reason


def test_frontier_when_nothing_cheaper_qualifies() -> None:
    d = choose_tier([0.2, 0.3, 1.0], [0.8, 0.7], tier_names=NAMES)
    assert d.tier_index == 2 and d.threshold is None
    assert d.reason.startswith("no cheaper tier reached its threshold (cheap 0.200 < 0.800")
    assert d.reason.endswith("; frontier serves")


def test_margin_band_goes_one_tier_up_and_says_so() -> None:
    d = choose_tier([0.82, 0.99, 1.0], [0.8, 0.7], margin=0.05, tier_names=NAMES)
    assert d.tier_index == 1 and d.escalate_band and d.qualified_index == 0
    assert d.score == 0.82 and d.threshold == 0.8
    assert "unsure" in d.reason and "escalated one tier up to mid" in d.reason
    # Just outside the band: stays.
    assert choose_tier([0.86, 0.99, 1.0], [0.8, 0.7], margin=0.05).tier_index == 0
    # Escalating from the last cheap tier lands on the frontier.
    d = choose_tier([0.1, 0.72, 1.0], [0.8, 0.7], margin=0.05)
    assert d.tier_index == 2 and d.escalate_band and d.tier is None


def test_thresholds_edge_cases() -> None:
    # A threshold is inclusive; inf switches a tier off; NaN probability never qualifies.
    assert choose_tier([0.8, 1.0], [0.8]).tier_index == 0
    assert choose_tier([1.0, 1.0, 1.0], [math.inf, 0.5]).tier_index == 1
    assert choose_tier([math.nan, 1.0], [0.1]).tier_index == 1
    # n_tiers thresholds are accepted (the frontier's is ignored).
    assert choose_tier([0.9, 1.0], [0.5, 0.99]).tier_index == 0


def test_cost_scale_relaxes_thresholds_for_expensive_requests() -> None:
    assert effective_threshold(0.8, 2.0) == pytest.approx(0.6)
    assert effective_threshold(0.8, 0.5) == pytest.approx(0.9)
    assert effective_threshold(math.inf, 3.0) == math.inf
    assert choose_tier([0.7, 1.0], [0.8]).tier_index == 1
    d = choose_tier([0.7, 1.0], [0.8], cost_scale=2.0, tier_names=("c", "f"))
    assert d.tier_index == 0 and d.threshold == pytest.approx(0.6)
    assert "scaled for a request 2.00x typical size" in d.reason
    assert choose_tier([0.85, 1.0], [0.8], cost_scale=0.5).tier_index == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"probs_row": [1.0], "thresholds": []}, ">= 2 tiers"),
        ({"probs_row": [0.5, 1.0], "thresholds": [0.1, 0.2, 0.3]}, "need 1 thresholds"),
        ({"probs_row": [0.5, 1.0], "thresholds": [math.nan]}, "NaN"),
        ({"probs_row": [0.5, 1.0], "thresholds": [0.5], "margin": -0.1}, "margin"),
        ({"probs_row": [0.5, 1.0], "thresholds": [0.5], "cost_scale": 0.0}, "cost_scale"),
        ({"probs_row": [0.5, 1.0], "thresholds": [0.5], "tier_names": ["a"]}, "1 tier names"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        choose_tier(**kwargs)  # type: ignore[arg-type]


def test_decision_to_dict_is_json_ready() -> None:
    d = choose_tier([0.82, 0.99, 1.0], [0.8, 0.7], margin=0.05, tier_names=NAMES)
    out = d.to_dict()
    assert out["tier"] == "mid" and out["escalate_band"] is True
    assert out["probabilities"] == [0.82, 0.99, 1.0]


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.floats(0, 1), min_size=2, max_size=2).map(lambda r: [*r, 1.0]),
        min_size=1,
        max_size=20,
    ),
    th=st.lists(st.floats(-1, 1.2), min_size=2, max_size=2),
    margin=st.sampled_from([0.0, 0.05, 0.2]),
    scale=st.floats(0.2, 5),
)
def test_vectorised_rule_equals_the_scalar_one(
    rows: list[list[float]], th: list[float], margin: float, scale: float
) -> None:
    p = np.array(rows)
    chosen, band = choose_tiers(p, th, margin=margin, cost_scale=scale)
    for i, row in enumerate(rows):
        d = choose_tier(row, th, margin=margin, cost_scale=scale)
        assert (chosen[i], band[i]) == (d.tier_index, d.escalate_band)


def test_the_margin_band_passes_over_a_tier_switched_off() -> None:
    names = ["cheap", "mid", "frontier"]
    thresholds = [0.6, math.inf, 0.9]
    names4 = [*names, "top"]
    # cheap is unsure: mid is off, so the request goes to the frontier, not mid.
    d = choose_tier([0.62, 0.99, 1.0], thresholds[:2], margin=0.05, tier_names=names)
    assert (d.tier, d.escalate_band, d.qualified_index) == ("frontier", True, 0)
    assert "escalated one tier up to frontier" in d.reason
    # Over several tiers switched off, to the first one on.
    d4 = choose_tier([0.62, 0.99, 0.2, 1.0], thresholds, margin=0.05, tier_names=names4)
    assert (d4.tier, d4.escalate_band) == ("frontier", True)
    # The batch rule agrees row by row, with and without cost scaling.
    probs = np.array([[0.62, 0.99, 0.2, 1.0], [0.7, 0.99, 0.2, 1.0], [0.1, 0.5, 0.93, 1.0]])
    for scale in (1.0, 0.5):
        chosen, band = choose_tiers(probs, thresholds, margin=0.05, cost_scale=scale)
        rows = [choose_tier(r, thresholds, margin=0.05, cost_scale=scale) for r in probs]
        assert chosen.tolist() == [r.tier_index for r in rows]
        assert band.tolist() == [r.escalate_band for r in rows]
    assert choose_tiers(probs, thresholds, margin=0.05)[0].tolist() == [2, 0, 3]
