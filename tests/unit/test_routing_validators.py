"""Answer validators: which cheap answers are re-asked one tier up, and why."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from costopt_core.routing.router import Router
from costopt_core.routing.tiers import Tier, Tiers
from costopt_core.routing.validators import (
    Answer,
    ValidatorConfig,
    escalation_reason,
    forces_tool_call,
)
from costopt_core.types import Message

CALL = {"name": "add", "args": {"a": 2, "b": 3}, "id": "c1"}


@pytest.mark.parametrize(
    ("choice", "forced"),
    [
        (None, False),
        (False, False),
        ("auto", False),
        ("none", False),
        ({"type": "auto"}, False),
        ({"auto": {}}, False),
        (True, True),
        ("any", True),
        ("required", True),
        ("add", True),
        ({"type": "function", "function": {"name": "add"}}, True),
        ({"type": "tool", "name": "add"}, True),
        ({"type": "any"}, True),
        ({"tool": {"name": "add"}}, True),
    ],
)
def test_forces_tool_call_reads_every_provider_spelling(choice: Any, forced: bool) -> None:
    assert forces_tool_call(choice) is forced


def test_prose_where_a_tool_call_was_forced_escalates() -> None:
    prose = Answer(text="Sure! The person is Ann, 31.")
    cfg = ValidatorConfig()
    assert escalation_reason(prose, cfg, offered_tools=("Person",)) is None
    assert (
        escalation_reason(prose, cfg, offered_tools=("Person",), tool_required=True)
        == "missing_tool_call"
    )
    # structured output through a forced tool: the missing call is the reason, not JSON
    assert (
        escalation_reason(
            prose, cfg, offered_tools=("Person",), structured_output=True, tool_required=True
        )
        == "missing_tool_call"
    )
    called = Answer(text="", tool_calls=({"name": "Person", "args": {"name": "Ann"}},))
    assert escalation_reason(called, cfg, offered_tools=("Person",), tool_required=True) is None
    # the tool-call checks switched off switch this one off too
    off = ValidatorConfig(tool_calls=False)
    assert escalation_reason(prose, off, tool_required=True) is None


def test_a_tool_call_answer_is_never_empty() -> None:
    answer = Answer(text="", tool_calls=(CALL,))
    assert escalation_reason(answer, ValidatorConfig(tool_calls=False)) is None
    assert escalation_reason(answer, ValidatorConfig(), offered_tools=("add",)) is None
    # with the tool checks off, a bad call is not looked at (but still not "empty")
    bad = Answer(text="", tool_calls=({"name": "nope", "args": "not json"},))
    assert escalation_reason(bad, ValidatorConfig(tool_calls=False), offered_tools=("add",)) is None
    assert escalation_reason(Answer(text="  "), ValidatorConfig(tool_calls=False)) == "empty"


def test_route_run_carries_the_forced_tool_call_to_the_validators() -> None:
    class Cheap:
        def predict(self, items: Any) -> Any:
            return np.array([[0.9, 1.0] for _ in items])

    router = Router(
        Tiers([Tier("small", ("mini",)), Tier("frontier", ("big",))]), classifier=Cheap()
    )
    decision = router.route([Message("user", "Extract: Ann is 31")])
    assert decision.tier == "small"
    run = router.start(decision, offered_tools=("Person",), tool_required=True)
    run.next()
    assert run.answered(Answer(text="Ann, 31")) == "missing_tool_call"
    step = run.next()
    assert step is not None and step.tier == "frontier"
    assert run.explain()["attempts"][0]["outcome"] == "escalated: missing_tool_call"
