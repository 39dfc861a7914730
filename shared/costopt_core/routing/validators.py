"""Checks on a cheap tier's answer that decide whether to re-ask the next tier.

Pure functions of the answer: an empty answer, a refusal or hedge, tool
calls the request did not offer or whose arguments are not JSON objects,
structured output that does not parse, a low mean token log-probability
where the provider returns them, and a user ``accept(answer)`` hook. Each
returns the reason to escalate, or None.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Answer", "ValidatorConfig", "escalation_reason"]

_REFUSAL = re.compile(
    r"\b(i('m| am) (sorry|unable|not able)|i can(no|')t (help|answer|assist|provide)|"
    r"as an ai( language model)?|i do(n'| no)t (know|have (enough|access))|"
    r"i'?m not sure|i cannot determine|unable to (answer|determine))\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Answer:
    """What a tier answered, as the validators see it."""

    text: str
    tool_calls: Sequence[Mapping[str, Any]] = ()
    #: Mean log-probability of the output tokens, when the provider returned them.
    mean_logprob: float | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class ValidatorConfig:
    """Which checks run. ``accept`` is the user's own: False escalates."""

    empty: bool = True
    refusal: bool = True
    tool_calls: bool = True
    structured: bool = True
    truncated: bool = True
    #: Escalate when the mean token log-probability is below this (None: off).
    min_mean_logprob: float | None = -1.2
    accept: Callable[[Answer], bool] | None = field(default=None, compare=False)


def _tool_problem(calls: Sequence[Mapping[str, Any]], offered: Sequence[str]) -> str | None:
    for call in calls:
        name = call.get("name")
        if offered and name not in offered:
            return "unknown_tool"
        args = call.get("args", call.get("arguments"))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return "invalid_tool_args"
        if not isinstance(args, Mapping):
            return "invalid_tool_args"
    return None


def escalation_reason(
    answer: Answer,
    config: ValidatorConfig,
    *,
    offered_tools: Sequence[str] = (),
    structured_output: bool = False,
) -> str | None:
    """Why the next tier should be asked instead, or None to keep this answer.

    Args:
        answer: the tier's answer.
        config: which checks run.
        offered_tools: names of the tools bound to the request.
        structured_output: the request asked for JSON output (not via tools).
    """
    if config.truncated and (answer.finish_reason or "").lower() in ("length", "max_tokens"):
        return "truncated"
    text = answer.text.strip()
    if config.tool_calls and answer.tool_calls:
        problem = _tool_problem(answer.tool_calls, offered_tools)
        if problem:
            return problem
    elif config.empty and not text:
        return "empty"
    if config.structured and structured_output and not answer.tool_calls:
        try:
            json.loads(text)
        except json.JSONDecodeError:
            return "unparseable_structured_output"
    if config.refusal and text and len(text) < 400 and _REFUSAL.search(text):
        return "refusal_or_hedge"
    if (
        config.min_mean_logprob is not None
        and answer.mean_logprob is not None
        and math.isfinite(answer.mean_logprob)
        and answer.mean_logprob < config.min_mean_logprob
    ):
        return "low_logprob"
    if config.accept is not None and not config.accept(answer):
        return "rejected_by_accept"
    return None
