"""``RouterChatModel``: one chat model in front of tiers of chat models.

Each request goes to the cheapest tier the engine's ``Router`` thinks can
answer it, falls back to the tier's other models and then the next tier on
errors, and is re-asked one tier up when the answer fails the validators.
The adapter only translates messages and answers and runs the router's call
loop; usage and ``model_name`` on the answer are those of the model that
answered, and the decision is in ``response_metadata["costopt"]["route"]``.
Discarded cheap attempts are recorded as ``escalated`` in the ledger of every
cost handler of the run (with an unknown cost when they report no usage; not
at all when a cache served them).
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import re
import uuid
import warnings
from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.utils import message_chunk_to_message
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.outputs.chat_generation import merge_chat_generation_chunks
from langchain_core.runnables import Runnable, RunnableBinding
from langchain_core.utils.json import parse_json_markdown
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from costopt_core.engine import CostEngine, current_engine
from costopt_core.errors import ConfigurationError, check_arguments, config_error
from costopt_core.finish import finish_reason_of
from costopt_core.routing.calibrate import CalibrationReport, as_calibration
from costopt_core.routing.decide import RouteDecision
from costopt_core.routing.features import requested_response_schema, wants_structured_output
from costopt_core.routing.router import (
    Router,
    RouterConfig,
    RouteRun,
    Step,
    adrive,
    drive,
    reachable_estimate,
)
from costopt_core.routing.tiers import tier_members
from costopt_core.routing.validators import Answer, ValidatorConfig, forces_tool_call
from costopt_core.served import SERVED, served_outcome
from costopt_core.usage import usage_from_langchain
from langchain_costopt import _calls
from langchain_costopt._convert import from_langchain_messages, usage_or_unknown
from langchain_costopt.callbacks import CostCallbackHandler, _max_output_tokens, run_tenant

__all__ = ["RouterChatModel"]

log = logging.getLogger("costopt.langchain")

METADATA_KEY = "costopt"
# BaseChatModel.generate / .stream pop ``ls_structured_output_format`` (a tracing
# hint) before ``_generate`` / ``_stream``; ``bind_tools`` copies the fact that it
# was there under this key so the router still knows the request is structured.
_STRUCTURED_KEY = "costopt_structured_output"
# ``bind_tools``'s own arguments (tool_choice, strict, parallel_tool_calls,
# response_format, ...), kept for each tier's ``bind_tools`` at call time: they
# shape the tier's request (strict goes inside its tool schemas), they are not
# request kwargs of their own.
_BIND_KEY = "costopt_bind_tools"
# Tracing hints LangChain pops off the router's own call; a tier's ``_generate``
# is called directly, so they must not reach it.
_TRACING_KEYS = ("ls_structured_output_format", "structured_output_format")
# ``bind_tools`` arguments that only steer tool calls: with no tools, not passed on.
_TOOLS_ONLY = ("tool_choice", "parallel_tool_calls")
# A closed code fence (```json ... ```), for an answer with prose after its JSON.
_FENCED_BLOCK = re.compile(r"```(?:json)?(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class _Call:
    """A tier call the call loop asks its driver for: ``generate`` an answer,
    ``collect`` a whole stream (held back), or ``open`` one and read its first chunk."""

    model: BaseChatModel
    how: Literal["generate", "collect", "open"]
    #: The chunks of a ``collect`` stream read so far: if it breaks part way,
    #: the tier has billed them, and the router records them (see ``_route``).
    read: list[ChatGenerationChunk] = field(default_factory=list)


@dataclass(frozen=True)
class _Request:
    """What every tier call of one request is made with."""

    messages: list[BaseMessage]
    stop: list[str] | None
    run: _calls.Run | None
    kwargs: dict[str, Any]


def _names_model(meta: Mapping[str, Any] | None) -> bool:
    """Whether an answer's response_metadata names the model that gave it."""
    if not meta:
        return False
    return any(isinstance(meta.get(k), str) and bool(meta.get(k)) for k in ("model_name", "model"))


def _model_name(model: BaseChatModel) -> str:
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
        if attr == "model" and isinstance(value, BaseChatModel):
            return _model_name(value)  # a wrapper (CachedChatModel): the model it calls
    return type(model).__name__


def _takes(method: Any, name: str) -> bool:
    """Whether ``method`` accepts the keyword argument ``name`` (by name or ``**kwargs``)."""
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # no signature to read: assume it does
        return True
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def _tier_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be tier ``name``'s model(s), or None if it can."""
    models = value if isinstance(value, list) else [value]
    for m in models:
        if not isinstance(m, BaseChatModel):
            # A value typed by hand (a model name, a number) is shown; an object, its type.
            plain = m is None or isinstance(m, str | int | float | bool)
            got = f"{type(m).__name__} {m!r}" if plain else type(m).__name__
            return (
                f"tier {name!r} must be a LangChain chat model (BaseChatModel) or a list of "
                f"them, got {got}; pass the model object, e.g. ChatOpenAI(model='gpt-4o-mini')"
            )
    return None


def _metadata_of(result: ChatResult) -> dict[str, Any]:
    """What the tier said about its answer, wherever it put it.

    The router calls a tier's ``_generate``/``_stream``, not ``invoke``, so
    langchain-core has not merged the generation's ``generation_info`` and the
    result's ``llm_output`` into the message yet: ChatOpenAI reports
    ``finish_reason`` and ``logprobs`` there and the model's name in
    ``llm_output``. The message's own metadata wins, as langchain-core's merge has it.
    """
    gen = result.generations[0] if result.generations else None
    msg = gen.message if isinstance(gen, ChatGeneration) else None
    meta: dict[str, Any] = {}
    for part in (
        result.llm_output,
        gen.generation_info if gen is not None else None,
        msg.response_metadata if msg is not None else None,
    ):
        if isinstance(part, Mapping):
            meta.update(part)
    return meta


def _whole_json(text: str) -> Any:
    """``text`` as JSON, whole: no partial repair (see :func:`_structured_text`)."""
    # strict=False as langchain-core's parsers read it: raw newlines or tabs
    # inside a string do not make the JSON unreadable.
    return json.loads(text, strict=False)


def _structured_text(text: str) -> str:
    """The JSON LangChain's JSON parsers read out of a structured answer.

    ``with_structured_output(method="json_schema" / "json_mode")`` parses the
    answer with ``JsonOutputParser`` / ``PydanticOutputParser``, which read it
    through ``parse_json_markdown``: JSON in a ```` ```json ```` fence (or a
    bare one) parses, so that is what the validators check, as JSON text.
    The answer is escalated when the parser could not use it, not because of
    the fence. A fenced block followed by prose ("Hope this helps") reads
    too: the parser gets there by trimming the text's end.

    Only whole JSON counts, though: the parser's partial-JSON repair would
    read a cut answer as a whole one, and prose that starts with a number
    ("2 cities...") as that number; those still escalate. Text that is
    neither is returned as it is, for the validators to say so.
    """
    try:
        json.loads(text)
        return text  # already JSON: checked as it came
    except ValueError:
        pass
    try:
        value = parse_json_markdown(text, parser=_whole_json)
    except ValueError:
        block = _FENCED_BLOCK.search(text)
        if block is None:
            return text
        try:
            value = _whole_json(block.group(1).strip())
        except ValueError:
            return text
    return json.dumps(value, ensure_ascii=False)


def _answer_of(result: ChatResult, *, structured: bool = False) -> Answer:
    """The tier's answer as the engine's validators read it.

    Args:
        result: the tier's answer (a held-back stream, merged).
        structured: the request asked for a structured answer: its text is
            read as LangChain's JSON parsers read it (:func:`_structured_text`).
    """
    gen = result.generations[0] if result.generations else None
    msg = gen.message if isinstance(gen, ChatGeneration) else None
    text = gen.text if gen is not None else ""
    if structured and text:
        text = _structured_text(text)
    meta = _metadata_of(result)
    logprob = None
    content = meta.get("logprobs")
    if isinstance(content, Mapping) and isinstance(content.get("content"), list):
        raw = [t.get("logprob") for t in content["content"] if isinstance(t, Mapping)]
        values: list[float] = [v for v in raw if isinstance(v, int | float)]
        logprob = sum(values) / len(values) if values else None
    return Answer(
        text=text,
        tool_calls=tuple(getattr(msg, "tool_calls", None) or ()),
        mean_logprob=logprob,
        finish_reason=finish_reason_of(meta, getattr(msg, "additional_kwargs", None)),
        invalid_tool_calls=tuple(getattr(msg, "invalid_tool_calls", None) or ()),
    )


class RouterChatModel(_calls.RunAwareChatModel):
    """Routes each request to the cheapest sufficient tier of chat models.

    Args:
        tiers: tier name -> chat model(s), cheap to frontier (dict order). A
            list gives a tier fallback models of the same class of quality.
        router_config: thresholds, margin, escalation and retry limits.
        validators: checks that send a weak cheap answer one tier up.
        classifier: the engine's route classifier (heuristic by default; a
            ``LearnedClassifier`` calibrated with ``costopt calibrate``).
        calibration: a report of ``costopt_core.routing.calibrate`` on your
            own samples, or the path of the file ``costopt calibrate --out``
            wrote: its thresholds, margin and cost-aware scaling replace
            ``router_config``'s.
        engine: where budgets are read and escalations recorded when no cost
            handler is attached; the process default if omitted. With cost
            handlers, each distinct handler engine checks its budgets and
            records the escalations once.
        validate_streams: hold back a cheap tier's stream until it is whole,
            so the validators see it (see "Streaming" below).
        temperature, max_tokens, stop: defaults for every call of the wrapped
            model(s); a call's own values win (see ``RunAwareChatModel``).

    Streaming: a weak streamed answer escalates as an invoked one does. To
    check it, the router holds back the stream of a tier that may still
    escalate (every tier but the last, while escalations are left), reads it
    to the end, validates it, and then either passes its chunks on as they
    came or asks the next tier. The trade-off is latency: the first token of
    a cheap answer arrives when its last one does (cheap tiers are usually
    fast, and a kept answer still arrives as chunks), and an escalated request
    also waits for the discarded attempt. The last tier, and any tier once the
    escalations are used up, streams as it comes. Errors raised while a
    stream is held back fall back to the next model, as before its first
    chunk. ``validate_streams=False`` streams every tier as it comes (lowest
    time to first token) and keeps whatever the first tier streams.

    Example:
        >>> router = RouterChatModel(tiers={"small": mini, "frontier": big})  # doctest: +SKIP
        >>> answer = router.invoke("What is 2 + 2?")  # doctest: +SKIP
        >>> answer.response_metadata["costopt"]["route"]["tier"]  # doctest: +SKIP
        'small'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    tiers: dict[str, BaseChatModel | list[BaseChatModel]]
    router_config: RouterConfig = Field(default_factory=RouterConfig)
    validators: ValidatorConfig = Field(default_factory=ValidatorConfig)
    classifier: Any = None
    calibration: CalibrationReport | None = None
    engine: CostEngine | None = None
    validate_streams: bool = True

    # A report, its dict, or the path of the file `costopt calibrate --out` wrote.
    _read_calibration = field_validator("calibration", mode="before")(as_calibration)
    _router: Router = PrivateAttr()
    _models: list[list[BaseChatModel]] = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        # Checked before pydantic: its message for a bad tier names the union's
        # internals, not the tier, the value and what to pass instead.
        check_arguments("RouterChatModel", data, type(self), wraps_models=True)
        tiers = data.get("tiers")
        if "tiers" in data and not isinstance(tiers, Mapping):
            raise ConfigurationError(
                f"RouterChatModel's tiers must be a dict of tier name -> chat model(s), cheap "
                f"to frontier, got {type(tiers).__name__}; e.g. tiers={{'small': "
                "ChatOpenAI(model='gpt-4o-mini'), 'frontier': ChatOpenAI(model='gpt-4o')}"
            )
        for name, value in (tiers or {}).items():
            if (problem := _tier_problem(str(name), value)) is not None:
                raise ConfigurationError(problem)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            # pydantic wraps model_post_init's ConfigurationError; unwrap its message.
            raise config_error("RouterChatModel", exc) from None

    def model_post_init(self, context: Any) -> None:
        self._models, tiers = tier_members(self.tiers, _model_name, owner="RouterChatModel")
        self._warn_tier_cost_handlers()
        self._router = Router(
            tiers,
            classifier=self.classifier,
            config=self.router_config,
            validators=self.validators,
            calibration=self.calibration,
        )

    def _warn_tier_cost_handlers(self) -> None:
        """Say so when a tier model carries a cost handler the router will not call.

        The router calls its tiers itself, so a tier model's own callbacks
        never run: a handler attached there (``ChatX(callbacks=[handler])``,
        the usual way for one model) records none of the routed calls. Made
        the router's, it would record every tier's calls, also those of the
        models it was not given to (a per-model ledger counted twice).
        """
        own: Any = self.callbacks
        given: list[Any] = list(getattr(own, "handlers", own) or [])
        for name, members in zip(self.tiers, self._models, strict=True):
            for model in members:
                callbacks = getattr(model, "callbacks", None)
                handlers = getattr(callbacks, "handlers", callbacks)
                if not isinstance(handlers, list):
                    continue
                if any(isinstance(h, CostCallbackHandler) and h not in given for h in handlers):
                    warnings.warn(
                        f"RouterChatModel: tier {name!r} model {_model_name(model)!r} carries a "
                        "CostCallbackHandler in its callbacks, which the router does not call "
                        "(it calls its tiers itself): give the handler to the router "
                        "(RouterChatModel(..., callbacks=[handler])), to the call's config, "
                        "or use track_costs()",
                        UserWarning,
                        stacklevel=7,  # the user line building the router
                    )

    @property
    def router(self) -> Router:
        return self._router

    @property
    def _llm_type(self) -> str:
        return "costopt-router"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "tiers": {
                name: [_model_name(m) for m in ms]
                for name, ms in zip(self.tiers, self._models, strict=True)
            }
        }

    # -- tools and structured output apply to every tier --------------------------
    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools to every tier (each tier's model formats them for its provider).

        Args:
            tools: the tools, in any form LangChain converts to OpenAI tools.
            tool_choice: passed on to each tier's ``bind_tools``; a forcing choice
                (``"any"``, ``"required"``, a tool name) also makes a cheap answer
                without a tool call escalate (``missing_tool_call``).
            **kwargs: passed on to each tier's ``bind_tools`` with the tools
                (``strict``, ``parallel_tool_calls``, ``response_format``, ...),
                which does with them what it does when called directly.
                ``with_structured_output``'s ``ls_structured_output_format``
                (a tracing hint) stays on the router's own call.
        """
        from langchain_core.utils.function_calling import convert_to_openai_tool

        own = {k: kwargs.pop(k) for k in _TRACING_KEYS if k in kwargs}
        if own.get("ls_structured_output_format"):
            own[_STRUCTURED_KEY] = True
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        if kwargs:
            own[_BIND_KEY] = kwargs
        # ``strict`` is applied here too: a tier's bind_tools leaves tools that are
        # already OpenAI dicts as they are, and the validators check the strict schema.
        strict = kwargs.get("strict")
        return self.bind(tools=[convert_to_openai_tool(t, strict=strict) for t in tools], **own)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_model_name"] = kwargs.get("model") or "router:" + "|".join(self.tiers)
        return params

    @staticmethod
    def _split_tools(kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        """(tools, each tier's ``bind_tools`` arguments, the other call kwargs)."""
        rest = dict(kwargs)
        rest.pop(_STRUCTURED_KEY, None)  # ours, not the tier models'
        for key in _TRACING_KEYS:  # the router's own run traced them
            rest.pop(key, None)
        tools: list[Any] = rest.pop("tools", None) or []
        tool_kwargs: dict[str, Any] = dict(rest.pop(_BIND_KEY, None) or {})
        # Given per call (or with bind()), these win over bind_tools' own.
        tool_kwargs.update(
            {k: rest.pop(k) for k in ("tool_choice", "parallel_tool_calls") if k in rest}
        )
        return tools, tool_kwargs, rest

    def _kwargs_for(self, model: BaseChatModel, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call kwargs of tier ``model``: ``bind_tools``' arguments go through its own.

        Without tools (``bind_tools([], response_format=...)``, as ``create_agent``
        binds a ``ProviderStrategy`` for an agent with no tools), the arguments
        that shape the request still reach the tier, as its own
        ``bind_tools([], ...)`` passes them on, or as ``bind`` would for a tier
        that cannot call tools; those that only steer tool calls are dropped.
        """
        tools, tool_kwargs, rest = self._split_tools(kwargs)
        if not tools:
            tool_kwargs = {k: v for k, v in tool_kwargs.items() if k not in _TOOLS_ONLY}
            if not tool_kwargs:
                return rest
        if "strict" in tool_kwargs and not _takes(model.bind_tools, "strict"):
            # The tools are already strict (``bind_tools`` converted them).
            tool_kwargs.pop("strict")
        try:
            bound = model.bind_tools(tools, **tool_kwargs)
        except NotImplementedError:
            if tools:
                raise  # a tier that cannot take the tools falls back
            tool_kwargs.pop("strict", None)  # a tool-schema option: no tools, no meaning
            return {**rest, **tool_kwargs}
        extra = dict(bound.kwargs) if isinstance(bound, RunnableBinding) else {}
        if not tools and not extra.get("tools"):
            extra.pop("tools", None)  # no tools to offer: no empty list for the provider
        return {**rest, **extra}

    @staticmethod
    def _functions(tools: Sequence[Any]) -> list[Mapping[str, Any]]:
        """The ``function`` part of each OpenAI-format tool (as ``bind_tools`` binds them)."""
        out = []
        for t in tools:
            fn = t.get("function") if isinstance(t, Mapping) else None
            if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
                out.append(fn)
        return out

    @classmethod
    def _offered(cls, kwargs: dict[str, Any]) -> tuple[str, ...]:
        tools, _, _ = cls._split_tools(kwargs)
        return tuple(fn["name"] for fn in cls._functions(tools))

    @classmethod
    def _schemas(
        cls, kwargs: dict[str, Any]
    ) -> tuple[dict[str, Mapping[str, Any]] | None, Mapping[str, Any] | None]:
        """(tool name -> JSON schema of its arguments, the structured answer's JSON schema).

        The engine escalates a cheap answer whose tool arguments or JSON text
        do not match them. ``with_structured_output`` binds its schema as a
        tool (``function_calling``), so its output is checked through the
        first, or as a ``response_format`` (``json_schema``), the second.
        """
        tools, tool_kwargs, rest = cls._split_tools(kwargs)
        tool_schemas = {
            fn["name"]: fn["parameters"]
            for fn in cls._functions(tools)
            if isinstance(fn.get("parameters"), Mapping)
        }
        from langchain_core.utils.function_calling import convert_to_json_schema

        response_schema = requested_response_schema(
            rest, tool_kwargs, convert=convert_to_json_schema
        )
        return tool_schemas or None, response_schema

    # -- the call loop --------------------------------------------------------------
    def _tenant(self, run: _calls.Run | None) -> str | None:
        return run_tenant(getattr(run, "metadata", None))

    def _handlers(self, run: _calls.Run | None) -> list[CostCallbackHandler]:
        handlers = getattr(run, "handlers", None) or []
        return [h for h in handlers if isinstance(h, CostCallbackHandler)]

    def _engines(self, run: _calls.Run | None) -> list[tuple[CostEngine, bool]]:
        """Each engine this run records into, once, and whether a handler holds budgets there.

        Two cost handlers (an application's and a ``track_costs`` block's, say)
        both record the routed answer, so both get its escalations; two
        handlers on one engine get them once.
        """
        engines: list[tuple[CostEngine, bool]] = []
        for h in self._handlers(run):
            for i, (engine, holds) in enumerate(engines):
                if engine is h.engine:
                    engines[i] = (engine, holds or h.check_budgets)
                    break
            else:
                engines.append((h.engine, h.check_budgets))
        return engines or [(self.engine or current_engine(), False)]

    def _plan(
        self, messages: list[BaseMessage], kwargs: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """What :meth:`Router.route` and :meth:`Router.start` are called with."""
        tools, tool_kwargs, rest = self._split_tools(kwargs)
        offered = self._offered(kwargs)
        tool_schemas, response_schema = self._schemas(kwargs)
        structured = wants_structured_output({**rest, **tool_kwargs}) or any(
            bool(kwargs.get(k)) for k in (_STRUCTURED_KEY, *_TRACING_KEYS)
        )
        route = {
            "messages": from_langchain_messages(messages),
            "tools": [{"name": n} for n in offered],
            "structured": structured,
        }
        start = {
            "offered_tools": offered,
            "tool_schemas": tool_schemas,
            "response_schema": response_schema,
            "structured": structured,
            "tool_required": bool(tools) and forces_tool_call(tool_kwargs.get("tool_choice")),
        }
        return route, start

    def _budgeted(
        self,
        decision: RouteDecision,
        messages: list[BaseMessage],
        run_info: _calls.Run | None,
        kwargs: dict[str, Any],
    ) -> RouteDecision:
        """``decision`` after the budgets had their say (as ``RouterLLM`` does it).

        Checked once the classifier has chosen the tier, so that the estimate
        prices what the request can still reach from there (:meth:`_estimate`),
        and before any tier is called: a "block" budget raises here, a
        "downshift" one moves the start down (the engine's ``Router.downshift``).

        Raises:
            BudgetExceededError: a ``block`` budget would be exceeded.
        """
        tenant = self._tenant(run_info)
        # The run's own model ("router:...") has no price, so the cost handlers held
        # nothing against the budgets: the router's estimate is the bound here,
        # checked in every engine the run records into. The hold is kept under the
        # run's id only where a cost handler will record (or, on an error, release)
        # that run; otherwise it would linger.
        run_id = getattr(run_info, "run_id", None)
        actions: set[str] = set()
        for engine, handled in self._engines(run_info):
            holds = handled and run_id is not None
            decisions = engine.check_budget(
                tenant,
                self._estimate(engine, tenant, decision.tier_index, messages, kwargs),
                call_id=str(run_id) if holds else None,
            )
            actions.update(b.action for b in decisions)
        return self._router.downshift(decision) if "downshift" in actions else decision

    def _estimate(
        self,
        engine: CostEngine,
        tenant: str | None,
        tier_index: int,
        messages: list[BaseMessage],
        kwargs: dict[str, Any],
    ) -> Decimal | None:
        """The most the request could cost from tier ``tier_index`` on (``None`` if unpriced).

        That is the dearest model of the decided tier and of every tier above
        it: an error falls back to the tier's other models and then one tier
        up, and a weak answer escalates, so any of them may answer. The ladder
        is cheap to frontier by intent only (nothing enforces the order), so
        the last tier alone is no bound: a dearer model below it would let a
        "block" budget pass a call that then overspends it. As the cost
        handler does, the request's output cap bounds the answer. A model among
        them with no price is put to ``tenant``'s budgets as the handler puts
        an unpriced call (``reachable_estimate``, shared with ``RouterLLM``).

        Raises:
            BudgetExceededError: a ``block`` or ``downshift`` budget, and a
                model the request can reach has no price.
        """
        if not engine.ledger.has_budgets:
            return None  # nothing to hold it against: skip counting tokens
        _, _, rest = self._split_tools(kwargs)  # tools do not change the price

        def per_model() -> Iterator[tuple[str, Decimal | None]]:
            translated = from_langchain_messages(messages)
            for model in itertools.chain.from_iterable(self._models[tier_index:]):
                # The name the cost handler would price the model's own run under
                # (a CachedChatModel's is its wrapped model's).
                name = str(model._get_ls_params(**rest).get("ls_model_name") or _model_name(model))
                cap = _max_output_tokens(model._get_invocation_params(**rest))
                yield name, engine.estimate(name, translated, max_output_tokens=cap)

        return reachable_estimate(engine, tenant, per_model(), log)

    def _record_unseen(
        self,
        run_info: _calls.Run | None,
        result: ChatResult,
        tier: str,
        chunks: Sequence[ChatGenerationChunk] = (),
        outcome: Literal["escalated", "model"] = "escalated",
        model_hint: str | None = None,
    ) -> None:
        """Record an answer no cost handler will see, unless a cache served it.

        That is a discarded answer (``escalated``), or a held-back stream the
        caller stopped reading (``model``): it was read whole, so paid for
        whole, and the handlers record only a stream that ends. An answer
        without usage was still paid for: it is recorded with an unknown cost
        (counted as unpriced), never dropped. An answer a cache tier served
        cost nothing, so nothing is recorded for it.

        Args:
            run_info: the router's run (its cost handlers' engines record it).
            result: the answer (a held-back stream, merged).
            tier: the tier that gave it.
            chunks: the held-back stream's chunks (a cache notes a replay's chunks).
            outcome: ``escalated`` for a discarded answer, ``model`` for a kept one.
            model_hint: the tier model's name, for an answer that does not say
                (a stream stopped before the chunk that names it).
        """
        gen = result.generations[0] if result.generations else None
        msg = gen.message if isinstance(gen, ChatGeneration) else None
        meta = _metadata_of(result)
        # The generation (or the chunks) a cache rebuilt is noted; every note is
        # taken here: the answer is discarded, no handler will see it. With
        # expose_cache_info the message says so too.
        served: Mapping[str, Any] | None = SERVED.take(gen)
        # A chunk passed on was seen by the handlers first, which take its note
        # under the router's run: ask for that run's note too.
        run_key = getattr(getattr(run_info, "run_id", None), "int", None)
        for chunk in chunks:
            served = SERVED.take(chunk, run=run_key) or served
        prior = meta.get(METADATA_KEY)
        if served is None and isinstance(prior, Mapping):
            served = prior
        if served is not None and served_outcome(served) is not None:
            return
        model = str(meta.get("model_name") or meta.get("model") or model_hint or "unknown")
        usage = usage_or_unknown(usage_from_langchain, getattr(msg, "usage_metadata", None))
        tenant = self._tenant(run_info)
        # One call id in every engine: a block's engine (track_costs) passes its
        # records on to its parent, which then counts this attempt once, not twice.
        call_id = uuid.uuid4().hex
        for engine, _ in self._engines(run_info):
            engine.record_call(
                model=model,
                usage=usage,
                tier=tier,
                tenant=tenant,
                outcome=outcome,
                framework="langchain",
                call_id=call_id,
            )

    def _finish(self, result: ChatResult, run: RouteRun) -> ChatResult:
        gen = result.generations[0]
        if isinstance(gen, ChatGeneration):
            meta = dict(gen.message.response_metadata or {})
            prior = meta.get(METADATA_KEY)
            prior = prior if isinstance(prior, dict) else {}
            route = run.explain()
            meta[METADATA_KEY] = {**prior, "tier": route["tier"], "route": route}
            if not _names_model(meta):
                # The cost handler prices the answer by the model it names; one
                # that names none would be priced as the router itself (unknown).
                meta["model_name"] = route["model"]
            gen.message.response_metadata = meta
        return result

    # invoke() / ainvoke() must take the validated _generate path: LangChain sends
    # them through _stream instead when a streaming callback handler is attached
    # (astream_events, LangGraph stream_mode="messages"), and a stream is passed on
    # as it comes, so a weak cheap answer would never escalate. Those checks get the
    # run manager; .stream() / .astream() ask without one and still stream.
    def _should_stream(
        self,
        *,
        async_api: bool,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> bool:
        if run_manager is not None:
            return False
        return super()._should_stream(async_api=async_api, **kwargs)

    def _should_use_protocol_streaming(
        self,
        *,
        async_api: bool,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> bool:
        # The v2 variant of the same invoke-time switch (LangGraph's v2 messages
        # handler); such handlers take the kept answer from on_llm_end instead.
        return False

    def _model(self, step: Step) -> BaseChatModel:
        model: BaseChatModel = self._models[step.tier_index][step.model_index]
        return model

    # -- the call loop: one body (_route), driven sync or async -----------------------
    def _route(
        self, run: RouteRun, run_info: _calls.Run | None, *, streaming: bool
    ) -> Generator[_Call, Any, Any]:
        """The call loop every driver runs (see ``costopt_core.routing.router.drive``).

        Yields the ``_Call`` to make and is sent its result, or has its error
        thrown in: provider errors, timeouts, rate limits (and binding tools, so
        a tier that cannot take them) fall back to the next model. Returns the
        kept ``ChatResult``; streaming, (chunks already read, the live rest or
        None).

        Streaming (see the class docstring): a tier whose answer may still
        escalate is read to its end and validated before any of it is passed
        on; otherwise the stream is passed on as it comes and falls back only
        on errors raised before its first chunk (opening the stream, the
        request itself). A tier model that cannot stream, or is set not to
        (``disable_streaming``), answers as one chunk (``_calls.stream``).
        """
        # The last answer re-asked one tier up: recorded as a discarded attempt,
        # unless no tier above answers and it is returned after all.
        weaker: tuple[Any, ChatResult, Step] | None = None
        try:
            while (step := run.next()) is not None:
                model = self._model(step)
                if streaming and not (self.validate_streams and run.may_escalate()):
                    try:
                        first, live = yield _Call(model, "open")
                    except Exception as exc:
                        run.failed(exc)
                        continue
                    run.kept()  # passed on as it comes, not held back for validation
                    return ([] if first is None else [first]), live
                call = _Call(model, "collect" if streaming else "generate")
                try:
                    got = yield call
                except BaseException as exc:
                    if call.read:  # a held-back stream broke part way: billed, so recorded
                        # (as the request's call when the caller gave up: cancelled, interrupted)
                        outcome: Literal["escalated", "model"] = (
                            "escalated" if isinstance(exc, Exception) else "model"
                        )
                        broken = self._whole(call.read)
                        self._record_unseen(
                            run_info, broken, step.tier, call.read, outcome, model_hint=step.model
                        )
                    if not isinstance(exc, Exception):
                        raise
                    run.failed(exc)  # nothing was passed on yet: fall back
                    continue
                result = self._whole(got) if streaming else got
                if run.answered(_answer_of(result, structured=run.structured)) is None:
                    return (got, None) if streaming else self._finish(result, run)
                if weaker is not None:
                    self._record_weaker(run_info, weaker, streaming)
                weaker = (got, result, step)
            if weaker is not None and run.keep_weaker() is not None:
                got, result, _ = weaker
                weaker = None  # returned: the cost handlers record it
                return (got, None) if streaming else self._finish(result, run)
            raise run.error()
        finally:
            if weaker is not None:
                self._record_weaker(run_info, weaker, streaming)

    def _record_weaker(
        self, run_info: _calls.Run | None, weaker: tuple[Any, ChatResult, Step], streaming: bool
    ) -> None:
        """Record a re-asked answer that is not returned (see :meth:`_record_unseen`)."""
        got, result, step = weaker
        chunks = got if streaming else ()
        self._record_unseen(run_info, result, step.tier, chunks, model_hint=step.model)

    def _begin(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
        *,
        streaming: bool,
    ) -> tuple[RouteRun, Generator[_Call, Any, Any], _Request]:
        """What each sync driver starts from: the run, its call loop, the request's calls."""
        run_info, stop = self._call_of(run_manager, stop, kwargs)
        req = _Request(messages, stop, run_info, kwargs)
        route, start = self._plan(messages, kwargs)
        decision = self._budgeted(self._router.route(**route), messages, req.run, kwargs)
        run = self._router.start(decision, **start)
        return run, self._route(run, req.run, streaming=streaming), req

    async def _abegin(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: AsyncCallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
        *,
        streaming: bool,
    ) -> tuple[RouteRun, Generator[_Call, Any, Any], _Request]:
        """Async twin of :meth:`_begin`: the classifier does not block the event loop."""
        run_info, stop = self._call_of(run_manager, stop, kwargs)
        req = _Request(messages, stop, run_info, kwargs)
        route, start = self._plan(messages, kwargs)
        decision = await self._router.aroute(**route)
        run = self._router.start(self._budgeted(decision, messages, req.run, kwargs), **start)
        return run, self._route(run, req.run, streaming=streaming), req

    # A tier gets the run to read (its tenant, its cost handlers: a cache tier
    # partitions by it), never the run manager: a discarded attempt's tokens must
    # not reach the caller's callbacks.
    def _do(self, req: _Request, call: _Call) -> Any:
        kwargs = self._kwargs_for(call.model, req.kwargs)
        if call.how == "generate":
            return _calls.generate(call.model, req.messages, req.stop, run=req.run, **kwargs)
        live = _calls.stream(call.model, req.messages, req.stop, run=req.run, **kwargs)
        if call.how == "collect":
            call.read.extend(live)  # extend keeps what was read when the stream raises
            return call.read
        return next(live, None), live

    async def _ado(self, req: _Request, call: _Call) -> Any:
        kwargs = self._kwargs_for(call.model, req.kwargs)
        if call.how == "generate":
            return await _calls.agenerate(call.model, req.messages, req.stop, run=req.run, **kwargs)
        live = _calls.astream(call.model, req.messages, req.stop, run=req.run, **kwargs)
        if call.how == "collect":
            async for chunk in live:
                call.read.append(chunk)
            return call.read
        return await anext(live, None), live

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        _, steps, req = self._begin(messages, stop, run_manager, kwargs, streaming=False)
        result: ChatResult = drive(steps, partial(self._do, req))
        return result

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        _, steps, req = await self._abegin(messages, stop, run_manager, kwargs, streaming=False)
        result: ChatResult = await adrive(steps, partial(self._ado, req))
        return result

    @staticmethod
    def _whole(chunks: list[ChatGenerationChunk]) -> ChatResult:
        """A held-back stream as one answer, for the validators."""
        merged = merge_chat_generation_chunks(chunks)
        if merged is None:
            return ChatResult(generations=[])
        message = message_chunk_to_message(merged.message)
        return ChatResult(
            generations=[ChatGeneration(message=message, generation_info=merged.generation_info)]
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        run, steps, req = self._begin(messages, stop, run_manager, kwargs, streaming=True)
        head, live = drive(steps, partial(self._do, req))
        seen: list[ChatGenerationChunk] = []
        try:
            for chunk in itertools.chain(head, live or ()):
                seen.append(chunk)
                if run_manager and chunk.text:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
            named = any(_names_model(c.message.response_metadata) for c in seen)
            yield self._route_chunk(run, named=named)
            seen = []  # ended: the handlers record it
        finally:
            if seen:
                self._unread(req.run, head if live is None else seen, run)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        run, steps, req = await self._abegin(messages, stop, run_manager, kwargs, streaming=True)
        head, live = await adrive(steps, partial(self._ado, req))
        seen: list[ChatGenerationChunk] = []
        try:
            async for chunk in _achain(head, live):
                seen.append(chunk)
                if run_manager and chunk.text:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
            named = any(_names_model(c.message.response_metadata) for c in seen)
            yield self._route_chunk(run, named=named)
            seen = []  # ended: the handlers record it
        finally:
            if seen:
                self._unread(req.run, head if live is None else seen, run)

    def _unread(
        self,
        run_info: _calls.Run | None,
        chunks: Sequence[ChatGenerationChunk],
        run: RouteRun,
    ) -> None:
        """Record a stream that did not end (the caller stopped reading, or it failed).

        The cost handlers record only a stream that ends, and leave a router's
        unfinished one to it. A held-back stream was read whole (``chunks`` is
        all of it), so paid for whole; a live one is recorded from the chunks
        passed on, with its usage if one reported it, else unknown (the
        provider billed the prompt at least): never dropped, never $0.
        """
        route = run.explain()
        self._record_unseen(
            run_info, self._whole(list(chunks)), route["tier"], chunks, "model", route["model"]
        )

    @staticmethod
    def _route_chunk(run: RouteRun, *, named: bool) -> ChatGenerationChunk:
        """The stream's last chunk: the route, and the answering model's name
        unless a chunk named it (merged, two names would be concatenated)."""
        from langchain_core.messages import AIMessageChunk

        route = run.explain()
        meta: dict[str, Any] = {METADATA_KEY: {"tier": route["tier"], "route": route}}
        if not named:
            meta["model_name"] = route["model"]
        return ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=meta))


async def _achain(
    head: Sequence[ChatGenerationChunk], live: AsyncIterator[ChatGenerationChunk] | None
) -> AsyncIterator[ChatGenerationChunk]:
    """The chunks already read, then the live rest of the stream (if any)."""
    for chunk in head:
        yield chunk
    if live is not None:
        async for chunk in live:
            yield chunk
