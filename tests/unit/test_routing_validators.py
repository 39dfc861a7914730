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


# The JSON schema LangChain binds for ``with_structured_output(Answer)``
# (Answer: city: str, population: int).
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}


def test_tool_args_that_break_the_tools_schema_escalate() -> None:
    cfg = ValidatorConfig()
    schemas = {"Answer": ANSWER_SCHEMA}
    good = {"name": "Answer", "args": {"city": "Paris", "population": 2100000}}
    wrong_type = {"name": "Answer", "args": {"city": "Paris", "population": "about two million"}}
    missing = {"name": "Answer", "arguments": '{"city": "Paris"}'}
    ok = Answer(text="", tool_calls=(good,))
    assert escalation_reason(ok, cfg, offered_tools=("Answer",), tool_schemas=schemas) is None
    for bad in (wrong_type, missing):
        answer = Answer(text="", tool_calls=(bad,))
        assert (
            escalation_reason(answer, cfg, offered_tools=("Answer",), tool_schemas=schemas)
            == "invalid_tool_args"
        )
        # without schemas only "is a JSON object" is checked, as before
        assert escalation_reason(answer, cfg, offered_tools=("Answer",)) is None
    # the tool as bound (OpenAI or Anthropic shape) is read for its argument schema
    openai_tool = {"type": "function", "function": {"name": "Answer", "parameters": ANSWER_SCHEMA}}
    anthropic_tool = {"name": "Answer", "input_schema": ANSWER_SCHEMA}
    bad_call = Answer(text="", tool_calls=(wrong_type,))
    for tool in (openai_tool, anthropic_tool):
        assert (
            escalation_reason(bad_call, cfg, tool_schemas={"Answer": tool}) == "invalid_tool_args"
        )
    # a tool without a schema is not checked against one
    assert escalation_reason(bad_call, cfg, tool_schemas={"other": ANSWER_SCHEMA}) is None


def test_structured_json_that_breaks_the_response_schema_escalates() -> None:
    cfg = ValidatorConfig()
    valid = Answer(text='{"city": "Paris", "population": 2100000}')
    invalid = Answer(text='{"city": "Paris", "population": "about two million"}')
    prose = Answer(text="Sure! The city is Paris.")
    assert escalation_reason(valid, cfg, response_schema=ANSWER_SCHEMA) is None
    assert (
        escalation_reason(invalid, cfg, structured_output=True, response_schema=ANSWER_SCHEMA)
        == "invalid_structured_output"
    )
    # the schema implies structured output
    assert escalation_reason(invalid, cfg, response_schema=ANSWER_SCHEMA) == (
        "invalid_structured_output"
    )
    assert escalation_reason(prose, cfg, response_schema=ANSWER_SCHEMA) == (
        "unparseable_structured_output"
    )
    assert (
        escalation_reason(invalid, ValidatorConfig(structured=False), response_schema=ANSWER_SCHEMA)
        is None
    )


@pytest.mark.parametrize(
    "broken",
    [
        {"type": "no-such-type"},
        {"properties": {"x": {"$ref": "#/$defs/missing"}}},
        {"$ref": "https://example.invalid/schema.json"},
    ],
)
def test_an_invalid_schema_turns_its_check_off_instead_of_failing(broken: dict[str, Any]) -> None:
    cfg = ValidatorConfig()
    call = Answer(text="", tool_calls=({"name": "f", "args": {"x": 1}},))
    assert escalation_reason(call, cfg, tool_schemas={"f": broken}) is None
    assert escalation_reason(Answer(text='{"x": 1}'), cfg, response_schema=broken) is None


def test_route_run_carries_the_schemas_to_the_validators() -> None:
    class Cheap:
        def predict(self, items: Any) -> Any:
            return np.array([[0.9, 1.0] for _ in items])

    router = Router(
        Tiers([Tier("small", ("mini",)), Tier("frontier", ("big",))]), classifier=Cheap()
    )
    decision = router.route([Message("user", "Capital of France and its population?")])
    bad = {"name": "Answer", "args": {"city": "Paris", "population": "about two million"}}
    run = router.start(
        decision,
        offered_tools=("Answer",),
        tool_schemas={"Answer": ANSWER_SCHEMA},
        tool_required=True,
    )
    run.next()
    assert run.answered(Answer(text="", tool_calls=(bad,))) == "invalid_tool_args"
    step = run.next()
    assert step is not None and step.tier == "frontier"

    run = router.start(decision, response_schema=ANSWER_SCHEMA)
    assert run.structured
    run.next()
    assert run.answered(Answer(text='{"city": "Paris"}')) == "invalid_structured_output"
    assert run.explain()["attempts"][0]["outcome"] == "escalated: invalid_structured_output"


@pytest.mark.parametrize(
    "text",
    ["I’m sorry, but I can’t help with that.", "I don’t know.", "I‘m not sure."],
)
def test_refusals_with_typographic_apostrophes_escalate(text: str) -> None:
    assert escalation_reason(Answer(text), ValidatorConfig()) == "refusal_or_hedge"
    assert escalation_reason(Answer(text), ValidatorConfig(refusal=False)) is None


def test_a_broken_tool_call_beside_text_escalates() -> None:
    broken = {"name": "get_weather", "args": '{"city": "Par', "id": "c1", "error": "bad json"}
    answer = Answer("Let me look that up.", invalid_tool_calls=(broken,))
    assert escalation_reason(answer, ValidatorConfig()) == "invalid_tool_args"
    assert escalation_reason(answer, ValidatorConfig(tool_calls=False)) is None


WEATHER = {"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}


@pytest.mark.parametrize(
    "text",
    [
        "I don't have access to live weather data, so let me check with the weather tool.",
        "I’m not sure what the weather is; I'll look it up.",
    ],
)
def test_a_preamble_beside_a_valid_tool_call_is_an_action_not_a_refusal(text: str) -> None:
    # Agents' models write this beside most tool calls: escalating re-asked the
    # frontier for the same call the cheap tier made.
    answer = Answer(text, tool_calls=(WEATHER,))
    assert escalation_reason(answer, ValidatorConfig(), offered_tools=("get_weather",)) is None
    assert escalation_reason(Answer(text), ValidatorConfig()) == "refusal_or_hedge"


def test_a_react_step_that_names_an_action_is_not_a_refusal() -> None:
    step = (
        "Thought: I don't know the current weather in Paris, so I need to use a tool.\n"
        "Action: get_weather\n"
        'Action Input: {"city": "Paris"}'
    )
    assert escalation_reason(Answer(step), ValidatorConfig()) is None
    final = "Thought: I'm sorry, I can't help with that.\nAnswer: I can't help with that."
    assert escalation_reason(Answer(final), ValidatorConfig()) == "refusal_or_hedge"


@pytest.mark.parametrize(
    ("finish_reason", "reason"),
    [
        ("content_filter", "blocked"),
        ("refusal", "blocked"),
        ("SAFETY", "blocked"),
        ("FinishReason.RECITATION", "blocked"),
        ("guardrail_intervened", "blocked"),
        ("error", "failed"),
        ("malformed_function_call", "failed"),
        ("pause_turn", "failed"),
        ("length", "truncated"),
        ("stop", None),
        (None, None),
    ],
)
def test_an_answer_a_safety_filter_or_a_failure_stopped_escalates(
    finish_reason: str | None, reason: str | None
) -> None:
    # Text that reads as a fine start of an answer: only the finish reason tells.
    partial = Answer(text="Sure, here are the steps: first you", finish_reason=finish_reason)
    assert escalation_reason(partial, ValidatorConfig()) == reason
    off = ValidatorConfig(stopped=False, truncated=False)
    assert escalation_reason(partial, off) is None


def test_a_router_re_asks_the_next_tier_after_a_filtered_answer() -> None:
    from costopt_core.testing import Script, ScriptedResponse
    from costopt_core.types import Usage
    from langchain_costopt.router import RouterChatModel
    from langchain_costopt.testing import ScriptedChatModel

    usage = Usage(input_tokens=5, output_tokens=5)
    cut = ScriptedResponse(
        "Sure, here are the steps: first you", usage, model="gpt-4o-mini", finish_reason="refusal"
    )
    small = ScriptedChatModel(script=Script([cut]), model_name="gpt-4o-mini")
    big = ScriptedChatModel.from_texts(["The whole answer."], model="gpt-4o")
    router = RouterChatModel(tiers={"small": small, "frontier": big})
    out = router.invoke("hi")
    assert out.content == "The whole answer."
    attempts = out.response_metadata["costopt"]["route"]["attempts"]
    assert [a["outcome"] for a in attempts] == ["escalated: blocked", "kept"]
