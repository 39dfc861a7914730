"""Checks on a cheap tier's answer that decide whether to re-ask the next tier.

Pure functions of the answer: an empty answer, a refusal or hedge, tool
calls the request did not offer or whose arguments are not JSON objects, no
tool call where the request forced one, structured output that does not
parse, a low mean token log-probability where the provider returns them, and
a user ``accept(answer)`` hook. Each returns the reason to escalate, or None.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Answer", "ValidatorConfig", "escalation_reason", "forces_tool_call"]

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


# tool_choice values that leave the model free to answer in prose.
_FREE_CHOICES = frozenset({"", "auto", "none"})
# Forcing values: OpenAI "required", Anthropic / LangChain "any", a named
# function (OpenAI {"type": "function"}) or tool (Anthropic {"type": "tool"}).
_FORCING_TYPES = frozenset({"any", "required", "function", "tool"})


def forces_tool_call(tool_choice: Any) -> bool:
    """True if a request's ``tool_choice`` obliges the model to call a tool.

    Accepts the providers' spellings: ``"any"`` / ``"required"`` / ``True``, a
    tool's name, or a mapping naming a function or tool (``{"type": "function",
    "function": {"name": ...}}``, ``{"type": "tool", "name": ...}``, Bedrock's
    ``{"tool": {...}}`` / ``{"any": {}}``). ``None``, ``False``, ``"auto"`` and
    ``"none"`` leave the model free to answer in prose.

    Args:
        tool_choice: the request's ``tool_choice``, as bound or passed.
    """
    if isinstance(tool_choice, bool):
        return tool_choice
    if isinstance(tool_choice, str):
        return tool_choice.strip().lower() not in _FREE_CHOICES
    if isinstance(tool_choice, Mapping):
        kind = tool_choice.get("type", tool_choice.get("mode"))
        if isinstance(kind, str):
            return kind.lower() in _FORCING_TYPES
        return any(str(k).lower() in _FORCING_TYPES for k in tool_choice)
    return False


def escalation_reason(
    answer: Answer,
    config: ValidatorConfig,
    *,
    offered_tools: Sequence[str] = (),
    structured_output: bool = False,
    tool_required: bool = False,
) -> str | None:
    """Why the next tier should be asked instead, or None to keep this answer.

    Args:
        answer: the tier's answer.
        config: which checks run.
        offered_tools: names of the tools bound to the request.
        structured_output: the request asked for structured (JSON) output; an
            answer with tool calls gives it through them.
        tool_required: the request's ``tool_choice`` forced a tool call (see
            :func:`forces_tool_call`); an answer without one is escalated.
    """
    if config.truncated and (answer.finish_reason or "").lower() in ("length", "max_tokens"):
        return "truncated"
    text = answer.text.strip()
    if answer.tool_calls:
        # A tool call is an answer even with no text: never "empty".
        problem = _tool_problem(answer.tool_calls, offered_tools) if config.tool_calls else None
        if problem:
            return problem
    elif config.tool_calls and tool_required:
        # Prose where a tool call was forced (with_structured_output, tool_choice="any"):
        # the caller's parser would get nothing.
        return "missing_tool_call"
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
