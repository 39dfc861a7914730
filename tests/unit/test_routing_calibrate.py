"""Calibration: thresholds that hit the target quality at the lowest cost; labelling."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from costopt_core.errors import ConfigurationError
from costopt_core.routing import (
    HeuristicClassifier,
    LearnedClassifier,
    Sample,
    Tier,
    Tiers,
    alabel_samples,
    calibrate,
    calibrate_from_predictions,
    choose_tiers,
    cost_scales,
    exact_match,
    label_samples,
)
from costopt_core.testing import FakeEmbedder

TWO = Tiers([Tier("cheap", ("gpt-4o-mini",)), Tier("frontier", ("gpt-4o",))])


def two_tier_case(n: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(cheap ok) evenly spread; the cheap tier is right exactly when p > 0.5."""
    p = (np.arange(n) + 0.5) / n
    probs = np.c_[p, np.ones(n)]
    labels = np.c_[(p > 0.5).astype(float), np.ones(n)]
    costs = np.c_[np.ones(n), np.full(n, 10.0)]
    return probs, labels, costs


def test_two_tiers_threshold_where_quality_meets_the_target() -> None:
    probs, labels, costs = two_tier_case()
    rep = calibrate_from_predictions(
        probs, labels, costs, target_quality=0.95, cost_aware=False, tier_names=("c", "f")
    )
    # Up to 5% of requests may go to a cheap tier that fails: those with p in (0.45, 0.5].
    assert rep.reached_target
    assert rep.thresholds[0] == pytest.approx(0.45, abs=0.005)
    assert rep.expected_quality >= 0.95 and rep.expected_quality == pytest.approx(0.95, abs=0.005)
    assert rep.frontier_quality == 1.0
    # cost: 55% x 1 + 45% x 10 = 5.05 per request vs 10
    assert rep.expected_cost_reduction == pytest.approx(1 - 5.05 / 10, abs=0.01)
    assert rep.tier_mix["c"] == pytest.approx(0.55, abs=0.01)
    assert sum(rep.tier_mix.values()) == pytest.approx(1.0)
    # The curve is a Pareto front: cost and quality both rise.
    costs_c = [p.cost for p in rep.curve]
    qual = [p.quality for p in rep.curve]
    assert costs_c == sorted(costs_c) and qual == sorted(qual)
    assert rep.curve[0].tier_shares[0] == 1.0  # all-cheap is its cheapest point
    # The chosen thresholds reproduce the expectation through the runtime rule.
    chosen, _ = choose_tiers(probs, rep.thresholds)
    assert labels[np.arange(1000), chosen].mean() == pytest.approx(rep.expected_quality)
    assert "met" in rep.summary() and rep.to_dict()["tier_mix"] == rep.tier_mix


def test_stricter_target_and_unreachable_target() -> None:
    probs, labels, costs = two_tier_case()
    strict = calibrate_from_predictions(probs, labels, costs, target_quality=1.0, cost_aware=False)
    assert strict.thresholds[0] == pytest.approx(0.5, abs=0.005)  # only sure answers go cheap
    assert strict.expected_quality == 1.0
    # A cheap tier that is always wrong may only take the 5% the target leaves...
    bad = np.c_[np.zeros(1000), np.ones(1000)]
    rep = calibrate_from_predictions(probs, bad, costs, target_quality=0.95, cost_aware=False)
    assert rep.reached_target and rep.tier_mix["tier 0"] == pytest.approx(0.05, abs=0.002)
    # ...and none at all when the target is the frontier's full quality.
    rep = calibrate_from_predictions(probs, bad, costs, target_quality=1.0, cost_aware=False)
    assert not rep.reached_target and rep.thresholds == (math.inf,)
    assert rep.tier_mix == {"tier 0": 0.0, "tier 1": 1.0}
    assert rep.notes and "always-frontier" in rep.summary()


def test_three_tiers_expected_thresholds() -> None:
    n = 1200
    rng = np.random.default_rng(1)
    kind = rng.integers(0, 3, n)  # 0 easy, 1 medium, 2 hard
    probs = np.ones((n, 3))
    probs[:, 0] = np.where(kind == 0, 0.9, 0.1)
    probs[:, 1] = np.where(kind <= 1, 0.9, 0.2)
    labels = np.c_[(kind == 0), (kind <= 1), np.ones(n)].astype(float)
    costs = np.tile([1.0, 3.0, 10.0], (n, 1))
    shares = [np.mean(kind == k) for k in range(3)]
    grid = calibrate_from_predictions(
        probs, labels, costs, target_quality=0.99, cost_aware=False, search="grid"
    )
    # Each tier is taken exactly for the requests it answers: thresholds between the scores.
    assert 0.1 < grid.thresholds[0] <= 0.9 and 0.2 < grid.thresholds[1] <= 0.9
    assert grid.expected_quality == 1.0
    assert list(grid.tier_mix.values()) == pytest.approx(shares)
    # The default path splits between two adjacent tiers: mid takes easy + medium.
    path = calibrate_from_predictions(probs, labels, costs, target_quality=0.99, cost_aware=False)
    assert path.thresholds[0] == math.inf and 0.2 < path.thresholds[1] <= 0.9
    assert path.expected_quality == 1.0
    assert list(path.tier_mix.values()) == pytest.approx([0, shares[0] + shares[1], shares[2]])
    assert path.expected_cost > grid.expected_cost


def test_margin_is_simulated() -> None:
    probs, labels, costs = two_tier_case()
    no_band = calibrate_from_predictions(probs, labels, costs, cost_aware=False)
    band = calibrate_from_predictions(probs, labels, costs, cost_aware=False, margin=0.05)
    # With a 0.05 band, the effective cut is the same: the threshold moves down by it.
    assert band.thresholds[0] == pytest.approx(no_band.thresholds[0] - 0.05, abs=0.006)
    assert band.margin == 0.05
    assert band.expected_quality == pytest.approx(no_band.expected_quality, abs=0.006)


def test_cost_aware_sends_long_requests_cheap_first() -> None:
    n = 1000
    rng = np.random.default_rng(0)
    tokens = rng.choice([100, 1000], n)
    p = rng.uniform(0, 1, n)
    labels = np.c_[(rng.uniform(0, 1, n) < p).astype(float), np.ones(n)]
    costs = np.c_[tokens * 0.1, tokens * 1.0]
    probs = np.c_[p, np.ones(n)]
    aware = calibrate_from_predictions(probs, labels, costs, tokens=tokens, target_quality=0.9)
    plain = calibrate_from_predictions(
        probs, labels, costs, tokens=tokens, target_quality=0.9, cost_aware=False
    )
    assert aware.expected_quality >= 0.9 and plain.expected_quality >= 0.9
    assert aware.expected_cost_reduction > plain.expected_cost_reduction
    assert aware.reference_tokens in (100.0, 1000.0)
    assert aware.cost_scale(2 * aware.reference_tokens) == pytest.approx(2.0)
    assert aware.cost_scale(10**9) == aware.max_cost_scale
    d = aware.decide([0.5, 1.0], input_tokens=1000)
    assert d.tier_index in (0, 1)
    scales, ref = cost_scales([1, 2, 3, 400])
    assert ref == 2.5 and scales[-1] == 8.0
    with pytest.raises(ConfigurationError, match="needs the prompt tokens"):
        calibrate_from_predictions(probs, labels, costs)


def test_bad_inputs() -> None:
    probs, labels, costs = two_tier_case(10)
    with pytest.raises(ConfigurationError, match="share a shape"):
        calibrate_from_predictions(probs, labels[:5], costs, cost_aware=False)
    with pytest.raises(ConfigurationError, match="target_quality"):
        calibrate_from_predictions(probs, labels, costs, cost_aware=False, target_quality=1.5)
    with pytest.raises(ConfigurationError, match="at least one labelled sample"):
        calibrate([], tiers=TWO, classifier=HeuristicClassifier(2))
    with pytest.raises(ConfigurationError, match="sample 0 has 3 labels for 2 tiers"):
        calibrate([Sample("hi", (1, 1, 1))], tiers=TWO, classifier=HeuristicClassifier(2))
    with pytest.raises(ConfigurationError, match="scores 3 tiers"):
        calibrate([Sample("hi", (1, 1))], tiers=TWO, classifier=HeuristicClassifier(3))


EASY = "What is the capital city of {}?"
HARD = "Prove the theorem about the integral of the polynomial of degree {}"


def synthetic_samples(n: int = 120) -> list[Sample]:
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append(Sample(EASY.format(f"country {i}"), (1.0, 1.0), (0.1, 1.0)))
        else:
            out.append(Sample(HARD.format(i), (0.0, 1.0), (0.1, 1.0)))
    return out


def test_calibrate_end_to_end_with_the_learned_classifier() -> None:
    clf = LearnedClassifier(FakeEmbedder(dim=64), k=5)
    rep = calibrate(synthetic_samples(), tiers=TWO, classifier=clf, target_quality=1.0)
    assert rep.reached_target and rep.folds == 5 and rep.classifier == "learned"
    assert rep.expected_quality == 1.0
    # Half the traffic is easy: it goes cheap, saving 45% (0.5 x 0.1 + 0.5 x 1 = 0.55).
    assert rep.tier_mix["cheap"] == pytest.approx(0.5, abs=0.05)
    assert rep.expected_cost_reduction == pytest.approx(0.45, abs=0.05)
    # The classifier was fitted on all samples and routes new prompts with the report.
    p = clf.predict([EASY.format("Peru"), HARD.format(99)])
    toks = [20, 20]
    tiers = [rep.decide(row, input_tokens=t).tier_index for row, t in zip(p, toks, strict=True)]
    assert tiers == [0, 1]


def test_calibrate_with_the_heuristic_and_catalog_prices() -> None:
    samples = [Sample(s.prompt, s.labels) for s in synthetic_samples(40)]  # no costs
    rep = calibrate(samples, tiers=TWO, classifier=HeuristicClassifier(2), target_quality=0.9)
    assert rep.folds == 0 and rep.classifier == "heuristic"
    # gpt-4o-mini costs ~6% of gpt-4o, so every cheap answer saves most of its price.
    assert rep.frontier_cost > 0 and rep.expected_quality >= 0.9 * rep.frontier_quality
    with pytest.raises(ConfigurationError, match="either every sample has costs"):
        calibrate(
            [samples[0], Sample("x", (1, 1), (1, 2))], tiers=TWO, classifier=HeuristicClassifier(2)
        )


def test_label_samples_with_references_and_costs() -> None:
    calls: list[str] = []

    def cheap(prompt: object) -> tuple[str, float]:
        calls.append("cheap")
        return ("Paris." if "France" in str(prompt) else "no idea"), 0.001

    def frontier(prompt: object) -> tuple[str, float]:
        calls.append("frontier")
        return ("paris" if "France" in str(prompt) else "Lima"), 0.01

    samples = label_samples(
        ["Capital of France?", "Capital of Peru?"],
        [cheap, frontier],
        references=["Paris", "Lima"],
    )
    assert [s.labels for s in samples] == [(1.0, 1.0), (0.0, 1.0)]
    assert samples[0].costs == (0.001, 0.01)
    assert calls == ["cheap", "frontier", "cheap", "frontier"]
    assert exact_match("q", " PARIS! ", "paris")


def test_label_samples_with_a_judge_against_the_frontier_answer() -> None:
    def judge(prompt: object, answer: str, reference: str) -> float:
        return 1.0 if answer == reference else 0.25

    samples = label_samples(["a", "b"], [lambda p: "x", lambda p: "x" if p == "a" else "y"], judge)
    assert [s.labels for s in samples] == [(1.0, 1.0), (0.25, 1.0)]
    assert samples[0].costs is None
    with pytest.raises(ConfigurationError, match="bool or a score"):
        label_samples(["a"], [lambda p: "x", lambda p: "y"], lambda p, a, r: 3.0)
    with pytest.raises(ConfigurationError, match=">= 2 tier callables"):
        label_samples(["a"], [lambda p: "x"])
    with pytest.raises(ConfigurationError, match="1 references for 2 prompts"):
        label_samples(["a", "b"], [lambda p: "x", lambda p: "y"], references=["x"])


def test_alabel_samples() -> None:
    async def cheap(prompt: object) -> str:
        await asyncio.sleep(0)
        return "4" if "2+2" in str(prompt) else "?"

    async def frontier(prompt: object) -> str:
        return "4" if "2+2" in str(prompt) else "9"

    samples = asyncio.run(
        alabel_samples(["2+2", "3*3"], [cheap, frontier], references=["4", "9"], concurrency=1)
    )
    assert [s.labels for s in samples] == [(1.0, 1.0), (0.0, 1.0)]


@pytest.mark.parametrize("search", ["path", "grid"])
def test_every_curve_point_is_what_the_runtime_rule_does(search: str) -> None:
    """The fast path evaluation and the grid agree with choose_tiers, margin and cost scale on."""
    rng = np.random.default_rng(3)
    n = 300
    probs = np.sort(rng.uniform(0, 1, (n, 3)), axis=1)
    probs[:, -1] = 1.0
    labels = (rng.uniform(0, 1, (n, 3)) < probs).astype(float)
    tokens = rng.integers(50, 3000, n)
    costs = tokens[:, None] * np.array([0.1, 0.3, 1.0])
    rep = calibrate_from_predictions(
        probs, labels, costs, tokens=tokens, margin=0.03, search=search, search_budget=300
    )
    scale, _ = cost_scales(tokens, reference_tokens=rep.reference_tokens)
    rows = np.arange(n)
    for point in rep.curve:
        chosen, _ = choose_tiers(probs, point.thresholds, margin=0.03, cost_scale=scale)
        assert labels[rows, chosen].mean() == pytest.approx(point.quality)
        assert costs[rows, chosen].mean() == pytest.approx(point.cost)
        assert np.bincount(chosen, minlength=3) / n == pytest.approx(point.tier_shares)
    d = rep.decide(probs[0], input_tokens=int(tokens[0]))
    assert (
        d.tier_index
        == choose_tiers(probs[:1], rep.thresholds, margin=0.03, cost_scale=scale[:1])[0][0]
    )
