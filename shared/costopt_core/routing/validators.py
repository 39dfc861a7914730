"""Checks on a cheap tier's answer that decide whether to re-ask the next tier.

Pure functions of the answer. The reasons, in the order they are checked:

- ``truncated``: the answer stopped at the token limit;
- ``blocked``: a safety system stopped or withheld the answer (the finish
  reason says so: ``content_filter``, ``refusal``, ``safety``...);
- ``failed``: the call stopped before its answer (``error``,
  ``malformed_function_call``, ``pause_turn``...);
- ``unknown_tool``: a tool call names a tool the request did not offer;
- ``invalid_tool_args``: a tool call's arguments are not a JSON object, or do
  not match the tool's JSON schema (when the request gave one);
- ``missing_tool_call``: prose where the request forced a tool call;
- ``empty``: no text and no tool call;
- ``unparseable_structured_output``: a structured (JSON-mode) answer that is
  not JSON;
- ``invalid_structured_output``: a structured answer that is JSON but does not
  match the requested response schema;
- ``refusal_or_hedge``: a short refusal or "I'm not sure";
- ``low_logprob``: a low mean token log-probability, where the provider
  returns them;
- ``rejected_by_accept``: the user's ``accept(answer)`` hook said no;
- ``accept_error``: the ``accept`` hook raised (logged as a warning): an
  answer the user's own check could not judge is not kept while a tier above
  can still answer, and the billed call is recorded like any re-asked one.

Schemas are checked with ``jsonschema``; a schema that is itself invalid (or
refers to something that cannot be resolved) is treated as no schema, so a bad
schema never fails a call: it only turns that check off (logged at debug).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from costopt_core.errors import ConfigurationError
from costopt_core.finish import (
    BLOCKED_FINISH_REASONS,
    FAILED_FINISH_REASONS,
    TRUNCATED_FINISH_REASONS,
    normalise_finish_reason,
)

__all__ = [
    "Answer",
    "ValidatorConfig",
    "escalation_reason",
    "forces_tool_call",
    "schema_violation",
    "validator_config_problem",
]

log = logging.getLogger("costopt.routing")

_REFUSAL = re.compile(
    r"\b(i('m| am) (sorry|unable|not able)|i can(no|')t (help|answer|assist|provide)|"
    r"as an ai( language model)?|i do(n'| no)t (know|have (enough|access))|"
    r"i'?m not sure|i cannot determine|unable to (answer|determine))\b",
    re.IGNORECASE,
)

#: A ReAct agent's step names its tool on a line of its own ("Action: get_weather").
_REACT_ACTION = re.compile(r"^\s*Action:\s*\S", re.MULTILINE)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


@dataclass(frozen=True)
class Answer:
    """What a tier answered, as the validators see it."""

    text: str
    tool_calls: Sequence[Mapping[str, Any]] = ()
    #: Mean log-probability of the output tokens, when the provider returned them.
    mean_logprob: float | None = None
    finish_reason: str | None = None
    #: Tool calls the provider sent but that could not be read (arguments that
    #: are not JSON): LangChain's ``invalid_tool_calls``.
    invalid_tool_calls: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class ValidatorConfig:
    """Which checks run. ``accept`` is the user's own: False escalates.

    Raises:
        ConfigurationError: a switch that is not True/False, a
            ``min_mean_logprob`` that is not a finite number <= 0 (or None),
            or an ``accept`` that is not callable (or None). Checked here so
            that no request fails on them later.
    """

    empty: bool = True
    refusal: bool = True
    tool_calls: bool = True
    structured: bool = True
    truncated: bool = True
    #: Escalate an answer whose finish reason says it was blocked or failed.
    stopped: bool = True
    #: Escalate when the mean token log-probability is below this (None: off).
    min_mean_logprob: float | None = -1.2
    #: ``accept(answer) -> bool``; an exception it raises counts as a rejection.
    accept: Callable[[Answer], bool] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        problem = validator_config_problem(self)
        if problem is not None:
            raise ConfigurationError(problem)


def validator_config_problem(config: ValidatorConfig) -> str | None:
    """What is wrong with ``config``'s values (naming the value and the fix), or None."""
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name == "min_mean_logprob":
            # A string compares with nothing, NaN with everything as False (the
            # check silently off), and log-probabilities are <= 0, so a
            # positive bound would re-ask every answer that carries them.
            number = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if value is not None and not (number and math.isfinite(value) and value <= 0):
                return (
                    f"ValidatorConfig(min_mean_logprob={value!r}): give a finite number <= 0 "
                    "(a mean token log-probability, e.g. -1.2), or None to turn the check off"
                )
        elif f.name == "accept":
            if value is not None and not callable(value):
                return (
                    f"ValidatorConfig(accept={value!r}): give a function accept(answer) -> bool "
                    "(False re-asks the next tier), or None for no check of your own"
                )
        elif not isinstance(value, bool):
            return f"ValidatorConfig({f.name}={value!r}): give True (the check runs) or False"
    return None


def _tool_problem(
    calls: Sequence[Mapping[str, Any]],
    offered: Sequence[str],
    schemas: Mapping[str, Mapping[str, Any]] | None,
) -> str | None:
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
        schema = schemas.get(name) if schemas and isinstance(name, str) else None
        if schema is not None and schema_violation(args, _args_schema(schema)):
            return "invalid_tool_args"
    return None


def _args_schema(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """The arguments' JSON schema, also when given a whole tool definition.

    An adapter may hand over the tool as bound (OpenAI ``{"type": "function",
    "function": {"parameters": ...}}``, Anthropic ``{"input_schema": ...}``):
    read as a schema, its ``"type": "function"`` is invalid and the check
    would silently turn off.
    """
    function = schema.get("function")
    if isinstance(function, Mapping):
        schema = function
    for key in ("parameters", "input_schema"):
        inner = schema.get(key)
        if isinstance(inner, Mapping) and "properties" not in schema:
            return inner
    return schema


def schema_violation(instance: Any, schema: Mapping[str, Any]) -> str | None:
    """The first way ``instance`` breaks the JSON ``schema``, or None if it fits.

    None also when the schema cannot be used (itself invalid, an unresolvable
    ``$ref``) or ``jsonschema`` is not installed: a check that cannot run must
    not fail the caller's request. Those cases are logged at debug.

    Args:
        instance: the parsed JSON value (tool arguments, a structured answer).
        schema: a JSON schema (any draft ``jsonschema`` knows; 2020-12 when
            it names none).
    """
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - a declared dependency
        log.debug("jsonschema is not installed: answers are not checked against schemas")
        return None
    # Any failure here is the schema's (SchemaError, an unresolvable $ref, ...):
    # the check cannot run, which is "no schema", not a failed request.
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        error = jsonschema.exceptions.best_match(cls(schema).iter_errors(instance))
    except Exception as exc:
        log.debug("schema %r is not usable, answer not checked against it: %s", schema, exc)
        return None
    return None if error is None else error.message


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
    tool_schemas: Mapping[str, Mapping[str, Any]] | None = None,
    response_schema: Mapping[str, Any] | None = None,
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
        tool_schemas: tool name -> JSON schema of its arguments (or the tool
            definition as bound); a call whose arguments do not match is
            escalated (``invalid_tool_args``). Tools not named are not checked.
        response_schema: JSON schema of a structured answer given as text; JSON
            that does not match it is escalated (``invalid_structured_output``).
            Giving one implies ``structured_output``.
    """
    finish = normalise_finish_reason(answer.finish_reason)
    if config.truncated and finish in TRUNCATED_FINISH_REASONS:
        return "truncated"
    # What came back is not the model's whole answer, whatever its text says.
    if config.stopped and finish in BLOCKED_FINISH_REASONS:
        return "blocked"
    if config.stopped and finish in FAILED_FINISH_REASONS:
        return "failed"
    text = answer.text.strip()
    if config.tool_calls and answer.invalid_tool_calls:
        # The model meant to call a tool and broke the call: text beside it
        # ("let me look that up") is no answer.
        return "invalid_tool_args"
    if answer.tool_calls:
        # A tool call is an answer even with no text: never "empty".
        problem = (
            _tool_problem(answer.tool_calls, offered_tools, tool_schemas)
            if config.tool_calls
            else None
        )
        if problem:
            return problem
    elif config.tool_calls and tool_required:
        # Prose where a tool call was forced (with_structured_output, tool_choice="any"):
        # the caller's parser would get nothing.
        return "missing_tool_call"
    elif config.empty and not text:
        return "empty"
    # A tool call (or a ReAct "Action:" step) beside "I don't have live data, so
    # let me check" is the model acting on what it does not know: no refusal.
    acts = bool(answer.tool_calls) or _REACT_ACTION.search(text) is not None
    structured = structured_output or response_schema is not None
    if config.structured and structured and not answer.tool_calls:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return "unparseable_structured_output"
        if response_schema is not None and schema_violation(value, response_schema):
            return "invalid_structured_output"
    # Models write "I’m sorry, I can’t" with typographic apostrophes as often as not.
    plain = text.translate(_APOSTROPHES)
    if config.refusal and text and len(text) < 400 and _REFUSAL.search(plain) and not acts:
        return "refusal_or_hedge"
    if (
        config.min_mean_logprob is not None
        and answer.mean_logprob is not None
        and math.isfinite(answer.mean_logprob)
        and answer.mean_logprob < config.min_mean_logprob
    ):
        return "low_logprob"
    if config.accept is not None:
        # The hook is the user's code: if it raises, the tier was still called
        # (and billed), so the answer must go through the caller's recorded
        # paths. Not judged is not accepted: re-ask (the last tier keeps it).
        try:
            accepted = config.accept(answer)
        except Exception:
            log.warning(
                "costopt: the router's accept hook %r raised on an answer; the answer is "
                "treated as rejected (accept_error)",
                config.accept,
                exc_info=True,
            )
            return "accept_error"
        if not accepted:
            return "rejected_by_accept"
    return None
