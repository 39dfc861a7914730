"""Structured output for the chat models that wrap others (router, caches).

langchain-core's default ``with_structured_output`` always forces a tool call
and drops ``method`` and ``strict``, so a wrapper using it would silently turn
a ``json_schema`` request into function calling, and fail against models that
honour a response format but cannot call tools. This one builds every method
out of the wrapper's own ``bind_tools`` / ``bind``, so the wrapper's logic
(routing, validation, the cache scope) sees the request whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import itemgetter
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel

from costopt_core.errors import ConfigurationError

__all__ = ["STRUCTURED_METHODS", "json_schema_format", "structured_output"]

STRUCTURED_METHODS = ("function_calling", "json_schema", "json_mode")


def json_schema_format(schema: Mapping[str, Any] | type, strict: bool | None) -> dict[str, Any]:
    """OpenAI's ``response_format`` for a JSON-schema answer (as ChatOpenAI builds it).

    A response format or its ``json_schema`` part is taken as it is; any other
    schema (pydantic, TypedDict, JSON schema, OpenAI tool) becomes
    ``{"type": "json_schema", "json_schema": {"name", "description", "schema", "strict"}}``.
    """
    if isinstance(schema, Mapping):
        if schema.get("type") == "json_schema" and isinstance(schema.get("json_schema"), Mapping):
            return dict(schema)
        if "name" in schema and isinstance(schema.get("schema"), Mapping):
            return {"type": "json_schema", "json_schema": dict(schema)}
    fn = convert_to_openai_tool(schema, strict=strict)["function"]
    spec: dict[str, Any] = {"name": fn["name"]}
    if fn.get("description"):
        spec["description"] = fn["description"]
    spec["schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    if strict is not None:
        spec["strict"] = strict
    return {"type": "json_schema", "json_schema": spec}


def structured_output(
    self: BaseChatModel,
    schema: dict[str, Any] | type | None = None,
    *,
    include_raw: bool = False,
    method: str = "function_calling",
    strict: bool | None = None,
    **kwargs: Any,
) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
    """``self``'s answers parsed into ``schema``, asked of the model(s) it wraps
    the way ``method`` says (each wrapper's ``with_structured_output``).

    Args:
        schema: a pydantic class, a TypedDict, a JSON schema or an OpenAI
            tool / response format; a pydantic class is parsed into an
            instance, the rest into a dict. Optional for ``json_mode`` only.
        include_raw: return ``{"raw", "parsed", "parsing_error"}`` instead of
            raising when the answer does not parse.
        method: ``"function_calling"``: the schema is bound to every tier as a
            forced tool call (each tier's ``bind_tools``, ``strict`` passed on
            where it takes it). ``"json_schema"``: every tier is asked for
            ``response_format={"type": "json_schema", "json_schema": {...}}``
            (OpenAI's shape, as ChatOpenAI binds it) and its JSON text is
            parsed; for tiers that honour a response format but cannot call
            tools. ``"json_mode"``: ``response_format={"type": "json_object"}``
            (the prompt must describe the schema).
        strict: OpenAI's strict schema adherence, for the tool or the format.

    A cheap tier's answer that does not parse (prose, a missing tool call, or
    for ``json_schema`` JSON that breaks the schema) escalates one tier up.

    Raises:
        ConfigurationError: an unknown ``method``, or no ``schema`` where it needs one.
    """
    if kwargs:
        raise ValueError(f"Received unsupported arguments {kwargs}")
    if method not in STRUCTURED_METHODS:
        raise ConfigurationError(
            f"{type(self).__name__}.with_structured_output: unknown method {method!r}; "
            f"choose one of {', '.join(repr(m) for m in STRUCTURED_METHODS)}"
        )
    if schema is None and method != "json_mode":
        raise ConfigurationError(
            f"{type(self).__name__}.with_structured_output: method={method!r} needs a schema "
            "(only 'json_mode' can do without one)"
        )
    is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    traced = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
    llm: Runnable[LanguageModelInput, Any]
    parser: Runnable[Any, Any]
    if method == "function_calling":
        tools: list[Any] = [schema]  # not None: checked above
        llm = self.bind_tools(
            tools,
            tool_choice="any",
            ls_structured_output_format=traced,
            **({} if strict is None else {"strict": strict}),
        )
        if is_pydantic:
            parser = PydanticToolsParser(tools=[schema], first_tool_only=True)
        else:
            name = convert_to_openai_tool(schema)["function"]["name"]  # type: ignore[arg-type]
            parser = JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
    else:
        if method == "json_schema":
            response_format = json_schema_format(schema, strict)  # type: ignore[arg-type]
        else:
            response_format = {"type": "json_object"}
            traced["kwargs"] = {"method": method}
        # The router's own run traces the hint, as langchain-core's structured
        # output does; the response format marks the request structured, and
        # json_schema's schema is what the validators check a cheap answer against.
        bind: dict[str, Any] = {"response_format": response_format}
        if schema is not None:
            bind["ls_structured_output_format"] = traced
        llm = self.bind(**bind)
        parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()
    if include_raw:
        parser_assign = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        parser_none = RunnablePassthrough.assign(parsed=lambda _: None)
        parser_with_fallback = parser_assign.with_fallbacks(
            [parser_none], exception_key="parsing_error"
        )
        return RunnableMap(raw=llm) | parser_with_fallback
    return llm | parser
