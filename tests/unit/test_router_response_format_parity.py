"""Both routers read a request's response_format the same way: the same answers escalate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from llama_index.core.llms import ChatMessage
from pydantic import BaseModel

from costopt_core import Usage
from costopt_core.routing.features import requested_response_schema
from costopt_core.testing import Script, ScriptedResponse
from langchain_costopt.router import RouterChatModel
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt.router import RouterLLM
from llamaindex_costopt.testing import ScriptedLLM

U = Usage(100, 10)
SCHEMA = {
    "type": "object",
    "properties": {"age": {"type": "integer"}},
    "required": ["age"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "Person", "schema": SCHEMA}}


class Person(BaseModel):
    age: int


class Cheap:
    """P(cheap tier good enough) = 0.9: every request starts on the cheap tier."""

    name = "fixed"
    n_tiers = 2

    def predict(self, items: Any) -> Any:
        return np.array([[0.9, 1.0] for _ in items])


def _langchain(cheap: str, response_format: Any) -> list[str]:
    small = ScriptedChatModel(script=Script([ScriptedResponse(cheap, U)]))
    big = ScriptedChatModel(script=Script([ScriptedResponse('{"age": 36}', U, model="gpt-4o")]))
    router = RouterChatModel(tiers={"small": small, "frontier": big}, classifier=Cheap())
    out = router.invoke("How old is Ada?", response_format=response_format)
    return [a["outcome"] for a in out.response_metadata["costopt"]["route"]["attempts"]]


def _llamaindex(cheap: str, response_format: Any) -> list[str]:
    small = ScriptedLLM(script=Script([ScriptedResponse(cheap, U)]))
    big = ScriptedLLM(script=Script([ScriptedResponse('{"age": 36}', U, model="gpt-4o")]))
    router = RouterLLM(tiers={"small": small, "frontier": big}, classifier=Cheap())
    msgs = [ChatMessage(role="user", content="How old is Ada?")]
    out = router.chat(msgs, response_format=response_format)
    return [a["outcome"] for a in out.raw["costopt"]["route"]["attempts"]]


@pytest.mark.parametrize(
    ("cheap", "response_format", "outcomes"),
    [
        ('{"name": "Ada"}', FORMAT, ["escalated: invalid_structured_output", "kept"]),
        ('{"name": "Ada"}', Person, ["escalated: invalid_structured_output", "kept"]),
        ('```json\n{"age": 36}\n```', FORMAT, ["kept"]),
        ('{"age": 36}', FORMAT, ["kept"]),
        (
            "Ada is 36.",
            {"type": "json_object"},
            ["escalated: unparseable_structured_output", "kept"],
        ),
    ],
)
def test_both_routers_escalate_the_same_structured_answers(
    cheap: str, response_format: Any, outcomes: list[str]
) -> None:
    assert _langchain(cheap, response_format) == outcomes
    assert _llamaindex(cheap, response_format) == outcomes


def test_requested_response_schema_reads_every_form() -> None:
    assert requested_response_schema({"response_format": FORMAT}) == SCHEMA
    assert requested_response_schema({"format": SCHEMA}) == SCHEMA
    assert requested_response_schema({"response_format": Person})["required"] == ["age"]
    assert requested_response_schema({"response_format": {"type": "json_object"}}) is None
    assert requested_response_schema({"response_format": "json"}, {"format": SCHEMA}) == SCHEMA
    assert requested_response_schema({}) is None
