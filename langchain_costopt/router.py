"""``RouterChatModel``: one chat model in front of tiers of chat models.

Each request goes to the cheapest tier the engine's ``Router`` thinks can
answer it, falls back to the tier's other models and then the next tier on
errors, and is re-asked one tier up when the answer fails the validators.
The adapter only translates messages and answers and runs the router's call
loop; usage and ``model_name`` on the answer are those of the model that
answered, and the decision is in ``response_metadata["costopt"]["route"]``.
Discarded cheap attempts are recorded in the ledger as ``escalated`` (with an
unknown cost when they report no usage; not at all when a cache served them).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError

from costopt_core.engine import CostEngine, current_engine
from costopt_core.errors import ConfigurationError, config_error
from costopt_core.routing.calibrate import CalibrationReport
from costopt_core.routing.features import wants_structured_output
from costopt_core.routing.router import Router, RouterConfig, RouteRun, Step
from costopt_core.routing.tiers import Tier, Tiers
from costopt_core.routing.validators import Answer, ValidatorConfig, forces_tool_call
from costopt_core.served import SERVED, served_outcome
from costopt_core.tenancy import current_tenant
from costopt_core.usage import usage_from_langchain
from langchain_costopt import _calls
from langchain_costopt._convert import from_langchain_messages, usage_or_unknown
from langchain_costopt.callbacks import TENANT_KEYS, CostCallbackHandler, _max_output_tokens

__all__ = ["RouterChatModel"]

log = logging.getLogger("costopt.langchain")

METADATA_KEY = "costopt"
# BaseChatModel.generate / .stream pop ``ls_structured_output_format`` (a tracing
# hint) before ``_generate`` / ``_stream``; ``bind_tools`` copies the fact that it
# was there under this key so the router still knows the request is structured.
_STRUCTURED_KEY = "costopt_structured_output"


def _model_name(model: BaseChatModel) -> str:
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


def _answer_of(result: ChatResult) -> Answer:
    gen = result.generations[0] if result.generations else None
    msg = gen.message if isinstance(gen, ChatGeneration) else None
    text = gen.text if gen is not None else ""
    meta = (msg.response_metadata if msg is not None else {}) or {}
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
        finish_reason=meta.get("finish_reason") or meta.get("stop_reason"),
    )


class RouterChatModel(BaseChatModel):
    """Routes each request to the cheapest sufficient tier of chat models.

    Args:
        tiers: tier name -> chat model(s), cheap to frontier (dict order). A
            list gives a tier fallback models of the same class of quality.
        router_config: thresholds, margin, escalation and retry limits.
        validators: checks that send a weak cheap answer one tier up.
        classifier: the engine's route classifier (heuristic by default; a
            ``LearnedClassifier`` calibrated with ``costopt calibrate``).
        calibration: a report of ``costopt_core.routing.calibrate`` (or
            ``costopt calibrate --out``) on your own samples: its thresholds,
            margin and cost-aware scaling replace ``router_config``'s.
        engine: where budgets are read and escalations recorded when no cost
            handler is attached; the process default if omitted.

    Example:
        >>> router = RouterChatModel(tiers={"small": mini, "frontier": big})  # doctest: +SKIP
        >>> router.invoke("What is 2 + 2?").response_metadata["costopt"]["route"]["tier"]
        'small'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    tiers: dict[str, BaseChatModel | list[BaseChatModel]]
    router_config: RouterConfig = Field(default_factory=RouterConfig)
    validators: ValidatorConfig = Field(default_factory=ValidatorConfig)
    classifier: Any = None
    calibration: CalibrationReport | None = None
    engine: CostEngine | None = None
    _router: Router = PrivateAttr()
    _models: list[list[BaseChatModel]] = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            # pydantic wraps model_post_init's ConfigurationError; unwrap its message.
            raise config_error("RouterChatModel", exc) from None

    def model_post_init(self, context: Any) -> None:
        if len(self.tiers) < 2:
            raise ConfigurationError(
                f"RouterChatModel needs at least two tiers, got {list(self.tiers)}"
            )
        self._models = [m if isinstance(m, list) else [m] for m in self.tiers.values()]
        if any(not ms for ms in self._models):
            raise ConfigurationError("every tier needs at least one chat model")
        tiers = Tiers(
            [
                Tier(name, tuple(_model_name(m) for m in ms))
                for name, ms in zip(self.tiers, self._models, strict=True)
            ]
        )
        self._router = Router(
            tiers,
            classifier=self.classifier,
            config=self.router_config,
            validators=self.validators,
            calibration=self.calibration,
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
            **kwargs: bound as call kwargs (``with_structured_output`` passes
                ``ls_structured_output_format`` here).
        """
        from langchain_core.utils.function_calling import convert_to_openai_tool

        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        if kwargs.get("ls_structured_output_format"):
            kwargs[_STRUCTURED_KEY] = True
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_model_name"] = kwargs.get("model") or "router:" + "|".join(self.tiers)
        return params

    @staticmethod
    def _split_tools(kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        rest = dict(kwargs)
        rest.pop(_STRUCTURED_KEY, None)  # ours, not the tier models'
        tools: list[Any] = rest.pop("tools", None) or []
        tool_kwargs: dict[str, Any] = {
            k: rest.pop(k) for k in ("tool_choice", "parallel_tool_calls") if k in rest
        }
        return tools, tool_kwargs, rest

    def _kwargs_for(self, model: BaseChatModel, kwargs: dict[str, Any]) -> dict[str, Any]:
        tools, tool_kwargs, rest = self._split_tools(kwargs)
        if not tools:
            return rest
        bound = model.bind_tools(tools, **tool_kwargs)
        extra = bound.kwargs if isinstance(bound, RunnableBinding) else {}
        return {**rest, **extra}

    @classmethod
    def _offered(cls, kwargs: dict[str, Any]) -> tuple[str, ...]:
        tools, _, _ = cls._split_tools(kwargs)
        names = []
        for t in tools:
            fn = t.get("function") if isinstance(t, Mapping) else None
            if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
                names.append(fn["name"])
        return tuple(names)

    # -- the call loop --------------------------------------------------------------
    def _tenant(self, run_manager: Any) -> str | None:
        meta = getattr(run_manager, "metadata", None) or {}
        for key in TENANT_KEYS:
            if meta.get(key) is not None:
                return str(meta[key])
        return current_tenant()

    def _handlers(self, run_manager: Any) -> list[CostCallbackHandler]:
        handlers = getattr(run_manager, "handlers", None) or []
        return [h for h in handlers if isinstance(h, CostCallbackHandler)]

    def _start(
        self, messages: list[BaseMessage], run_manager: Any, kwargs: dict[str, Any]
    ) -> RouteRun:
        tenant = self._tenant(run_manager)
        engine = self._engine_for(run_manager)
        # A "block" budget raises here, before any call; "downshift" moves the start down.
        # The run's own model ("router:...") has no price, so the cost handler held
        # nothing against the budgets: the frontier tier's cost is the bound here.
        # The hold is kept under the run's id only when a cost handler will record
        # (or, on an error, release) that run; otherwise it would linger.
        handlers = self._handlers(run_manager)
        run_id = getattr(run_manager, "run_id", None)
        holds = bool(handlers) and handlers[0].check_budgets and run_id is not None
        decisions = engine.check_budget(
            tenant,
            self._estimate(engine, messages, kwargs),
            call_id=str(run_id) if holds else None,
        )
        actions = {b.action for b in decisions}
        tools, tool_kwargs, _ = self._split_tools(kwargs)
        offered = self._offered(kwargs)
        structured = wants_structured_output(kwargs) or any(
            bool(kwargs.get(k)) for k in (_STRUCTURED_KEY, "ls_structured_output_format")
        )
        decision = self._router.route(
            from_langchain_messages(messages),
            tools=[{"name": n} for n in offered],
            structured=structured,
            budget_action="downshift" if "downshift" in actions else None,
        )
        return self._router.start(
            decision,
            offered_tools=offered,
            structured=structured,
            tool_required=bool(tools) and forces_tool_call(tool_kwargs.get("tool_choice")),
        )

    def _estimate(
        self, engine: CostEngine, messages: list[BaseMessage], kwargs: dict[str, Any]
    ) -> Decimal | None:
        """The most a call to the frontier tier's models could cost (``None`` if unpriced).

        Any tier may end up answering (escalation, fallback), so the most
        expensive one bounds the request; as the cost handler does, the
        request's output cap bounds the answer.
        """
        if not engine.ledger.has_budgets:
            return None  # nothing to hold it against: skip counting tokens
        _, _, rest = self._split_tools(kwargs)  # tools do not change the price
        try:
            translated = from_langchain_messages(messages)
            estimates = []
            for model in self._models[-1]:
                # The name the cost handler would price the model's own run under
                # (a CachedChatModel's is its wrapped model's).
                name = model._get_ls_params(**rest).get("ls_model_name") or _model_name(model)
                params = model._get_invocation_params(**rest)
                estimates.append(
                    engine.estimate(
                        str(name), translated, max_output_tokens=_max_output_tokens(params)
                    )
                )
        except Exception:  # never fail the user's call over an estimate
            log.exception("costopt could not estimate the cost of a routed request")
            return None
        priced = [e for e in estimates if e is not None]
        return max(priced) if priced else None

    def _engine_for(self, run_manager: Any) -> CostEngine:
        handlers = self._handlers(run_manager)
        if handlers:
            return handlers[0].engine
        return self.engine or current_engine()

    def _record_escalation(self, run_manager: Any, result: ChatResult, tier: str) -> None:
        """Record a discarded answer as an ``escalated`` call, unless a cache served it.

        An answer without usage was still paid for: it is recorded with an
        unknown cost (counted as unpriced), never dropped. An answer a cache tier
        served cost nothing, so nothing is recorded for it.
        """
        gen = result.generations[0] if result.generations else None
        msg = gen.message if isinstance(gen, ChatGeneration) else None
        meta = (msg.response_metadata if msg is not None else None) or {}
        # The generation a cache rebuilt is noted (taken here: it is discarded, no
        # handler will see it); with expose_cache_info the message says so too.
        served: Mapping[str, Any] | None = SERVED.take(gen)
        prior = meta.get(METADATA_KEY)
        if served is None and isinstance(prior, Mapping):
            served = prior
        if served is not None and served_outcome(served) is not None:
            return
        self._engine_for(run_manager).record_call(
            model=str(meta.get("model_name") or meta.get("model") or "unknown"),
            usage=usage_or_unknown(usage_from_langchain, getattr(msg, "usage_metadata", None)),
            tier=tier,
            tenant=self._tenant(run_manager),
            outcome="escalated",
            framework="langchain",
        )

    def _finish(self, result: ChatResult, run: RouteRun) -> ChatResult:
        gen = result.generations[0]
        if isinstance(gen, ChatGeneration):
            meta = dict(gen.message.response_metadata or {})
            prior = meta.get(METADATA_KEY)
            prior = prior if isinstance(prior, dict) else {}
            route = run.explain()
            meta[METADATA_KEY] = {**prior, "tier": route["tier"], "route": route}
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

    def _judged(
        self, result: ChatResult, run: RouteRun, step: Step, run_manager: Any
    ) -> ChatResult | None:
        """The answer to return if the validators keep it; None to go on up."""
        if run.answered(_answer_of(result)) is None:
            return self._finish(result, run)
        self._record_escalation(run_manager, result, step.tier)
        return None

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        run = self._start(messages, run_manager, kwargs)
        while (step := run.next()) is not None:
            model = self._model(step)
            try:
                # Binding tools is inside: a tier that cannot take them falls back too.
                result = _calls.generate(model, messages, stop, **self._kwargs_for(model, kwargs))
            except Exception as exc:  # provider errors, timeouts, rate limits: fall back
                run.failed(exc)
                continue
            if (kept := self._judged(result, run, step, run_manager)) is not None:
                return kept
        raise run.error()

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        run = self._start(messages, run_manager, kwargs)
        while (step := run.next()) is not None:
            model = self._model(step)
            try:
                result = await _calls.agenerate(
                    model, messages, stop, **self._kwargs_for(model, kwargs)
                )
            except Exception as exc:
                run.failed(exc)
                continue
            if (kept := self._judged(result, run, step, run_manager)) is not None:
                return kept
        raise run.error()

    # Streaming: the answer is not held back for validation, so a streamed request is
    # routed before the call and falls back on errors raised before its first chunk
    # (binding tools, opening the stream, the request itself). A tier model that
    # cannot stream answers as one chunk (``_calls.stream``).
    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        run = self._start(messages, run_manager, kwargs)
        while (step := run.next()) is not None:
            model = self._model(step)
            try:
                stream = _calls.stream(model, messages, stop, **self._kwargs_for(model, kwargs))
                first = next(stream, None)
            except Exception as exc:
                run.failed(exc)
                continue
            run.kept()  # a stream is passed on as it comes, not held back for validation
            for chunk in self._chunks(first, stream):
                if run_manager and chunk.text:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
            yield self._route_chunk(run)
            return
        raise run.error()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        run = self._start(messages, run_manager, kwargs)
        while (step := run.next()) is not None:
            model = self._model(step)
            try:
                stream = _calls.astream(model, messages, stop, **self._kwargs_for(model, kwargs))
                first = await anext(stream, None)
            except Exception as exc:
                run.failed(exc)
                continue
            run.kept()
            async for chunk in self._achunks(first, stream):
                if run_manager and chunk.text:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
            yield self._route_chunk(run)
            return
        raise run.error()

    @staticmethod
    def _chunks(
        first: ChatGenerationChunk | None, rest: Iterator[ChatGenerationChunk]
    ) -> Iterator[ChatGenerationChunk]:
        if first is not None:
            yield first
        yield from rest

    @staticmethod
    async def _achunks(
        first: ChatGenerationChunk | None, rest: AsyncIterator[ChatGenerationChunk]
    ) -> AsyncIterator[ChatGenerationChunk]:
        if first is not None:
            yield first
        async for chunk in rest:
            yield chunk

    @staticmethod
    def _route_chunk(run: RouteRun) -> ChatGenerationChunk:
        from langchain_core.messages import AIMessageChunk

        route = run.explain()
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                response_metadata={METADATA_KEY: {"tier": route["tier"], "route": route}},
            )
        )
