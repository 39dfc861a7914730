"""Routing engine regressions: NaN scores, ladder and classifier checks, features, hooks."""

from __future__ import annotations

import logging
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
    ValidatorConfig,
    calibrate,
    calibrate_from_predictions,
    choose_tier,
    choose_tiers,
    extract_features,
    wants_structured_output,
)
from costopt_core.routing.calibrate import calibration_classifier_mismatch
from costopt_core.routing.router import Router, RouterConfig
from costopt_core.routing.tiers import Tier, Tiers, tier_members
from costopt_core.routing.validators import Answer, escalation_reason
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


# -- second review: calibration for another classifier, bad hooks, deployments -----
def _two_tiers() -> Tiers:
    return Tiers.from_mapping({"small": "gpt-4o-mini", "frontier": "gpt-4o"})


def _report_for(classifier: str) -> CalibrationReport:
    P = np.array([[0.9, 1.0], [0.2, 1.0], [0.6, 1.0]])
    Y = np.array([[1, 1], [0, 1], [1, 1]], float)
    C = np.array([[1, 10]] * 3, float)
    return calibrate_from_predictions(
        P, Y, C, cost_aware=False, tier_names=["small", "frontier"], classifier=classifier
    )


class Named(Fixed):
    """A classifier that calls itself ``learned`` (as a fitted LearnedClassifier does)."""

    name = "learned"


def test_calibration_classifier_mismatch_names_both_classifiers() -> None:
    learned = _report_for("learned")
    assert calibration_classifier_mismatch(learned, "heuristic") == (
        "the calibration is for the 'learned' classifier, not the 'heuristic' one"
    )
    assert calibration_classifier_mismatch(learned, "learned") is None
    # Nothing to compare: a classifier without a name, a report that records none.
    assert calibration_classifier_mismatch(learned, None) is None
    assert calibration_classifier_mismatch(_report_for(""), "heuristic") is None


def test_router_refuses_a_learned_calibration_on_the_heuristic_classifier() -> None:
    with pytest.raises(ConfigurationError) as info:
        Router(_two_tiers(), calibration=_report_for("learned"))
    message = str(info.value)
    assert "the calibration is for the 'learned' classifier, not the 'heuristic' one" in message
    assert "classifier=" in message and "--classifier heuristic" in message
    # The classifier the report was made for routes with its thresholds.
    router = Router(_two_tiers(), classifier=Named([0.9, 1.0]), calibration=_report_for("learned"))
    assert router.route([Message("user", "hi")]).tier == "small"
    assert Router(_two_tiers(), calibration=_report_for("heuristic")).calibration is not None


def test_router_chat_model_refuses_a_calibration_for_another_classifier() -> None:
    from costopt_core.testing import Script
    from langchain_costopt.router import RouterChatModel
    from langchain_costopt.testing import ScriptedChatModel

    def model(name: str) -> ScriptedChatModel:
        return ScriptedChatModel(script=Script(["ok"], model=name), model_name=name)

    with pytest.raises(ConfigurationError, match=r"'learned' classifier, not the 'heuristic'"):
        RouterChatModel(
            tiers={"small": model("gpt-4o-mini"), "frontier": model("gpt-4o")},
            calibration=_report_for("learned").to_dict(),
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"accept": True}, "ValidatorConfig(accept=True): give a function accept(answer)"),
        ({"accept": "yes"}, "ValidatorConfig(accept='yes'): give a function"),
        ({"min_mean_logprob": "-1"}, "ValidatorConfig(min_mean_logprob='-1'): give a finite"),
        ({"min_mean_logprob": math.nan}, "ValidatorConfig(min_mean_logprob=nan): give a finite"),
        ({"min_mean_logprob": -math.inf}, "min_mean_logprob=-inf): give a finite number <= 0"),
        ({"min_mean_logprob": 0.5}, "min_mean_logprob=0.5): give a finite number <= 0"),
        ({"min_mean_logprob": True}, "min_mean_logprob=True): give a finite number"),
        ({"refusal": "no"}, "ValidatorConfig(refusal='no'): give True (the check runs) or False"),
        ({"empty": 1}, "ValidatorConfig(empty=1): give True"),
        ({"truncated": None}, "ValidatorConfig(truncated=None): give True"),
    ],
)
def test_validator_config_refuses_bad_values_when_built(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        ValidatorConfig(**kwargs)
    assert message in str(info.value)


def test_validator_config_accepts_good_values() -> None:
    for bound in (-1, -0.5, 0.0, np.float64(-2.0), None):
        assert ValidatorConfig(min_mean_logprob=bound).min_mean_logprob == bound
    assert ValidatorConfig(accept=bool, refusal=False).accept is bool


@pytest.mark.parametrize(
    ("classifier", "message"),
    [
        ("learned", r"classifier='learned' is a name, not a classifier: .*HeuristicClassifier"),
        (object(), r"classifier=<object object .*> has no predict\(requests\) method"),
    ],
)
def test_router_refuses_a_classifier_that_cannot_route(classifier: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Router(three_tiers(), classifier=classifier)


def test_a_tier_may_hold_two_deployments_of_one_model() -> None:
    tier = Tier("frontier", ("gpt-4o", "gpt-4o"), deployments=True)
    assert tier.models == ("gpt-4o", "gpt-4o")
    assert tier == Tier("frontier", ("gpt-4o", "gpt-4o"), deployments=True)
    # Names alone (a spec) repeated are a typo: the error names the ways out.
    with pytest.raises(ConfigurationError) as info:
        Tier("frontier", ("gpt-4o", "gpt-4o"))
    message = str(info.value)
    assert "repeated: ['gpt-4o']" in message
    assert "retries_per_model" in message and "deployments=True" in message


def test_tier_members_accepts_two_objects_of_one_model_and_steps_through_both() -> None:
    us, eu = {"name": "gpt-4o", "region": "us"}, {"name": "gpt-4o", "region": "eu"}
    members, tiers = tier_members(
        {"small": {"name": "gpt-4o-mini"}, "frontier": [us, eu]},
        lambda m: str(m["name"]),
        owner="RouterX",
    )
    assert members[1] == [us, eu]
    assert tiers.frontier.models == ("gpt-4o", "gpt-4o")
    # Errors fall back by position: the second deployment is tried, then nothing.
    router = Router(tiers, config=RouterConfig(retries_per_model=0))
    run = router.start(router.route([]))
    run.tier_index = 1
    seen = []
    while (step := run.next()) is not None:
        seen.append((step.tier, step.model_index, step.model))
        run.failed(RuntimeError("429"))
    assert seen == [("frontier", 0, "gpt-4o"), ("frontier", 1, "gpt-4o")]


def test_tier_members_refuses_one_model_object_listed_twice() -> None:
    same = {"name": "gpt-4o"}
    with pytest.raises(
        ConfigurationError, match=r"RouterX's tier 'frontier' lists the same model object twice"
    ):
        tier_members(
            {"small": {"name": "a"}, "frontier": [same, same]},
            lambda m: str(m["name"]),
            owner="RouterX",
        )


def test_router_chat_model_falls_back_to_a_second_deployment_of_one_model() -> None:
    from costopt_core.testing import Script, ScriptedResponse
    from langchain_costopt.router import RouterChatModel
    from langchain_costopt.testing import ScriptedChatModel

    def model(name: str, response: ScriptedResponse) -> ScriptedChatModel:
        return ScriptedChatModel(script=Script([response]), model_name=name)

    us = model("gpt-4o", ScriptedResponse("", model="gpt-4o", error=RuntimeError("429")))
    eu = model("gpt-4o", ScriptedResponse("from eu", model="gpt-4o"))
    router = RouterChatModel(
        tiers={"small": model("gpt-4o-mini", ScriptedResponse("x")), "frontier": [us, eu]},
        router_config=RouterConfig(thresholds=(math.inf,), retries_per_model=0),
    )
    answer = router.invoke("hi")
    assert answer.content == "from eu"
    assert (us.script.calls, eu.script.calls) == (1, 1)


def _raising_accept(calls: list[str]) -> Any:
    def accept(answer: Answer) -> bool:
        calls.append(answer.text)
        raise ValueError("not JSON")

    return accept


def test_an_accept_hook_that_raises_rejects_the_answer_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    cfg = ValidatorConfig(accept=_raising_accept(calls))
    with caplog.at_level(logging.WARNING, logger="costopt.routing"):
        assert escalation_reason(Answer("Paris."), cfg) == "accept_error"
    assert calls == ["Paris."]
    [record] = [r for r in caplog.records if "accept hook" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


def test_a_raising_accept_hook_escalates_and_the_last_tier_keeps_its_answer() -> None:
    calls: list[str] = []
    router = Router(
        _two_tiers(),
        config=RouterConfig(thresholds=(-math.inf,)),
        validators=ValidatorConfig(accept=_raising_accept(calls)),
    )
    run = router.start(router.route([Message("user", "hi")]))
    assert run.next() is not None
    assert run.answered(Answer("Paris.")) == "accept_error"
    step = run.next()
    assert step is not None and step.tier == "frontier"
    # No tier above: the hook is not asked, the answer is kept.
    assert run.answered(Answer("Paris!")) is None
    assert calls == ["Paris."]
    assert [(a.tier, a.outcome) for a in run.attempts] == [
        ("small", "escalated: accept_error"),
        ("frontier", "kept"),
    ]


def test_router_chat_model_records_the_billed_call_an_accept_hook_raised_on() -> None:
    from costopt_core.testing import Script, ScriptedResponse
    from costopt_core.types import Usage
    from langchain_costopt import track_costs
    from langchain_costopt.router import RouterChatModel
    from langchain_costopt.testing import ScriptedChatModel

    usage = Usage(input_tokens=1000, output_tokens=200)

    def model(name: str, text: str) -> ScriptedChatModel:
        return ScriptedChatModel(
            script=Script([ScriptedResponse(text, model=name, usage=usage)]), model_name=name
        )

    small, big = model("gpt-4o-mini", "Paris."), model("gpt-4o", '{"ok": true}')
    router = RouterChatModel(
        tiers={"small": small, "frontier": big},
        validators=ValidatorConfig(accept=_raising_accept([])),
        router_config=RouterConfig(thresholds=(-math.inf,)),
    )
    with track_costs() as costs:
        answer = router.invoke("Capital of France?")
    assert answer.content == '{"ok": true}'
    records = costs.ledger.to_records()
    assert [(r["model"], r["outcome"]) for r in records] == [
        ("gpt-4o-mini", "escalated"),
        ("gpt-4o", "model"),
    ]
