"""Routing engine regressions: NaN scores, ladder checks, misread features, downshift."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from costopt_core.errors import ConfigurationError
from costopt_core.routing import (
    CalibrationReport,
    HeuristicClassifier,
    LearnedClassifier,
    Sample,
    calibrate,
    calibrate_from_predictions,
    choose_tier,
    choose_tiers,
    extract_features,
    wants_structured_output,
)
from costopt_core.routing.router import Router, RouterConfig
from costopt_core.routing.tiers import Tier, Tiers
from costopt_core.testing import FakeEmbedder
from costopt_core.types import ChatRequest, Message


class Fixed:
    """A classifier with a fixed probability row."""

    name = "fixed"

    def __init__(self, row: list[float]) -> None:
        self.row = row

    @property
    def n_tiers(self) -> int:
        return len(self.row)

    def predict(self, items: Any) -> Any:
        return np.array([self.row for _ in items])


def three_tiers() -> Tiers:
    return Tiers.from_mapping({"s": "a", "m": "b", "f": "c"})


def report_dict() -> dict[str, Any]:
    P = np.array([[0.9, 0.95, 1.0], [0.2, 0.6, 1.0], [0.5, 0.9, 1.0]])
    Y = np.array([[1, 1, 1], [0, 1, 1], [0, 1, 1]], float)
    C = np.array([[1, 3, 10]] * 3, float)
    rep = calibrate_from_predictions(P, Y, C, cost_aware=False, tier_names=["s", "m", "f"])
    return rep.to_dict()


# -- NaN never passes a threshold, in either rule -----------------------------------
def test_a_nan_probability_never_qualifies_even_against_minus_inf() -> None:
    row = [0.2, math.nan, 1.0]
    th = (0.9, -math.inf)
    chosen, band = choose_tiers(np.array([row]), th)
    assert int(chosen[0]) == choose_tier(row, th).tier_index == 2
    assert not band[0]
    # A real -inf threshold still always takes its tier.
    assert int(choose_tiers(np.array([[0.2, 0.0, 1.0]]), th)[0][0]) == 1


def test_vectorised_and_scalar_rules_agree_on_rows_with_nan() -> None:
    rng = np.random.default_rng(3)
    P = rng.random((200, 3))
    P[rng.random((200, 3)) < 0.3] = np.nan
    for th in [(0.5, 0.7), (-math.inf, 0.4), (0.3, -math.inf), (math.inf, -math.inf)]:
        vec, _ = choose_tiers(P, th, margin=0.05)
        sca = [choose_tier(r, th, margin=0.05).tier_index for r in P]
        assert vec.tolist() == sca


def test_calibration_rejects_non_finite_probabilities() -> None:
    P = np.array([[0.2, np.nan, 1.0]] * 4)
    Y = np.array([[0, 1, 1]] * 4, dtype=float)
    C = np.array([[1, 2, 10]] * 4, dtype=float)
    with pytest.raises(ConfigurationError, match=r"probs must be finite.*sample 0, tier 1"):
        calibrate_from_predictions(P, Y, C, cost_aware=False)
    P[:, 1] = np.inf
    with pytest.raises(ConfigurationError, match="probs must be finite"):
        calibrate_from_predictions(P, Y, C, cost_aware=False)


# -- a classifier or report for another ladder fails at construction ------------------
def test_router_rejects_a_classifier_for_another_number_of_tiers() -> None:
    with pytest.raises(ConfigurationError, match=r"scores 2 tiers, the router has 3"):
        Router(three_tiers(), classifier=Fixed([0.9, 1.0]))
    # One for this ladder, and one not fitted yet (calibrate fits it), are accepted.
    assert Router(three_tiers(), classifier=Fixed([0.9, 0.9, 1.0])).route("hi").tier == "s"
    Router(three_tiers(), classifier=LearnedClassifier(FakeEmbedder(dim=8)))


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"thresholds": [0.5]}, r"1 thresholds for the 3 tiers.*one per non-frontier tier \(2\)"),
        ({"thresholds": ["nan", 0.5]}, "thresholds include NaN"),
        ({"margin": -0.2}, r"margin must be a finite number >= 0, got -0.2"),
        ({"margin": "nan"}, "margin must be a finite number"),
    ],
)
def test_a_report_the_router_cannot_apply_is_rejected_when_loaded(
    patch: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        CalibrationReport.from_dict({**report_dict(), **patch})


def test_a_valid_report_still_loads_and_routes() -> None:
    rep = CalibrationReport.from_dict(report_dict())
    assert len(rep.thresholds) == 2
    d = Router(three_tiers(), calibration=rep).route([Message("user", "hi")])
    assert d.tier in ("s", "m", "f")


# -- features: dates and phone numbers are not math; LaTeX commands are ----------------
@pytest.mark.parametrize(
    "prompt",
    [
        "Is the store open on 2024-05-01?",
        "The deadline is 05/01/2024.",
        "Call 555-123-4567 to book.",
        "Call (555) 123-4567 to book.",
        "The meeting runs 10-11am.",
    ],
)
def test_dates_and_phone_numbers_are_not_math(prompt: str) -> None:
    f = extract_features(prompt)
    assert f.math == 0 and f.question_type != "math"


def test_latex_commands_inside_dollars_are_counted() -> None:
    f = extract_features("Evaluate $\\int_0^1 x^2 \\, dx$.")
    # the $...$ span, \int and 0^1: it was one marker (the span swallowed the rest)
    assert f.math == 3 and f.question_type == "math"


@pytest.mark.parametrize(
    ("prompt", "math_"),
    [
        ("What is 12 - 7?", 1),
        ("What is 12 * 7?", 1),
        ("Compute 125-1000 and explain.", 2),  # not a bare phone number
        ("Solve for x: 3x + 5 = 20", 2),
        ("Is 1/2 bigger than 2/5?", 2),
        ("Compute x^2 - 1 when x = 3", 3),
    ],
)
def test_real_arithmetic_is_still_counted(prompt: str, math_: int) -> None:
    assert extract_features(prompt).math == math_


def test_a_dated_question_routes_like_the_same_question_in_words() -> None:
    r = Router(Tiers.from_mapping({"small": "a", "mid": "b", "frontier": "c"}))
    words = r.route([Message("user", "Is the store open on May 1st 2024?")])
    iso = r.route([Message("user", "Is the store open on 2024-05-01?")])
    assert iso.tier == words.tier == "small"


# -- response_format={"type": "text"} is plain text ------------------------------------
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, False),
        ({"response_format": None}, False),
        ({"response_format": "text"}, False),
        ({"response_format": {"type": "text"}}, False),
        ({"response_format": {"type": "TEXT"}}, False),
        ({"response_format": {}}, False),
        ({"response_format": "json"}, True),
        ({"response_format": {"type": "json_object"}}, True),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, True),
        ({"format": "json"}, True),
        ({"schema": {"properties": {}}}, True),
        ({"response_format": dict}, True),
    ],
)
def test_wants_structured_output(params: dict[str, Any], expected: bool) -> None:
    assert wants_structured_output(params) is expected
    req = ChatRequest(messages=(Message("user", "hi"),), params=params)
    assert extract_features(req).structured_output is expected


# -- downshift_tiers=0 changes nothing, and says nothing --------------------------------
def test_downshift_zero_keeps_the_decision_and_its_reason() -> None:
    tiers = Tiers.from_mapping({"small": "a", "frontier": "b"})
    off = Router(tiers, classifier=Fixed([0.1, 1.0]), config=RouterConfig(downshift_tiers=0))
    plain = off.route([Message("user", "hi")])
    d = off.route([Message("user", "hi")], budget_action="downshift")
    assert d == plain and d.tier == "frontier"
    assert "downshift" not in d.reason
    on = Router(tiers, classifier=Fixed([0.1, 1.0]))
    d1 = on.route([Message("user", "hi")], budget_action="downshift")
    assert d1.tier == "small" and "downshifted to small" in d1.reason


# -- too few samples for a learned classifier: say so ----------------------------------
@pytest.mark.parametrize("n", [1, 2])
def test_too_few_samples_for_a_learned_classifier_are_named(n: int) -> None:
    tiers = Tiers([Tier("cheap", ("a",)), Tier("frontier", ("b",))])
    samples = [Sample(f"prompt {i}", (1.0, 1.0), costs=(1.0, 10.0)) for i in range(n)]
    with pytest.raises(
        ConfigurationError, match=rf"too few samples.*got {n}, need at least 3 \(with folds=5"
    ):
        calibrate(samples, tiers=tiers, classifier=LearnedClassifier(FakeEmbedder(dim=8), k=5))
    # The heuristic needs no training: the same samples calibrate it.
    rep = calibrate(samples, tiers=tiers, classifier=HeuristicClassifier(2))
    assert rep.n_samples == n
    three = [Sample(f"prompt {i}", (1.0, 1.0), costs=(1.0, 10.0)) for i in range(3)]
    ok = calibrate(three, tiers=tiers, classifier=LearnedClassifier(FakeEmbedder(dim=8), k=5))
    assert ok.folds == 3
