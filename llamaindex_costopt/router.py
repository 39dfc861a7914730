"""``RouterLLM``: one LlamaIndex LLM in front of tiers of LLMs, same policy as LangChain's.

The engine's ``Router`` decides the starting tier, the fallbacks and the
escalations; this adapter only translates LlamaIndex messages and responses
and runs the router's call loop. The answer's ``raw["costopt"]["route"]``
explains the decision; ``raw`` model and usage are those of the LLM that
answered. Discarded cheap attempts are recorded in the ledger as
``escalated`` (the cost handler records the answer itself).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from pydantic import Field, PrivateAttr

from costopt_core.engine import CostEngine, current_engine
from costopt_core.errors import ConfigurationError
from costopt_core.routing.calibrate import CalibrationReport
from costopt_core.routing.router import Router, RouterConfig, RouteRun
from costopt_core.routing.tiers import Tier, Tiers
from costopt_core.routing.validators import Answer, ValidatorConfig
from costopt_core.tenancy import current_tenant
from costopt_core.types import Message, Role
from llamaindex_costopt.handler import usage_of

__all__ = ["RouterLLM"]

# A stream that ended before its first item (None could be an item).
_EMPTY: Any = object()

_ROLES: dict[str, Role] = {"system": "system", "assistant": "assistant", "tool": "tool"}


def _neutral(messages: Sequence[ChatMessage]) -> list[Message]:
    role = lambda r: _ROLES.get(str(getattr(r, "value", r)), "user")  # noqa: E731
    return [Message(role=role(m.role), content=m.content or "") for m in messages]


def _model_of(llm: LLM) -> str:
    try:
        name = llm.metadata.model_name
    except Exception:
        name = None
    return str(name or type(llm).__name__)


def _answer(resp: ChatResponse | CompletionResponse) -> Answer:
    text = resp.message.content if isinstance(resp, ChatResponse) else resp.text
    calls = ()
    if isinstance(resp, ChatResponse):
        calls = tuple(resp.message.additional_kwargs.get("tool_calls") or ())
    return Answer(text=text or "", tool_calls=calls)


class RouterLLM(LLM):
    """Routes each LlamaIndex request to the cheapest sufficient tier.

    Args:
        tiers: tier name -> LLM (or list of LLMs: fallbacks of the same tier),
            cheap to frontier in dict order.
        router_config: thresholds, margin, escalation and retry limits.
        validators: checks that send a weak cheap answer one tier up.
        classifier: the engine's route classifier (heuristic by default).
        calibration: a report of ``costopt_core.routing.calibrate`` (or
            ``costopt calibrate --out``) on your own samples: its thresholds,
            margin and cost-aware scaling replace ``router_config``'s.
        engine: where budgets are read and escalations recorded.
        tenant: tenant of this LLM's calls (else ``costopt_core.tenant_scope``).
    """

    tiers: dict[str, Any]
    router_config: RouterConfig = Field(default_factory=RouterConfig)
    validators: ValidatorConfig = Field(default_factory=ValidatorConfig)
    classifier: Any = None
    calibration: CalibrationReport | None = None
    engine: Any = None
    tenant: str | None = None
    _router: Router = PrivateAttr()
    _llms: list[list[LLM]] = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        if len(self.tiers) < 2:
            raise ConfigurationError(f"RouterLLM needs at least two tiers, got {list(self.tiers)}")
        self._llms = [v if isinstance(v, list) else [v] for v in self.tiers.values()]
        if any(not v for v in self._llms):
            raise ConfigurationError("every tier needs at least one LLM")
        tiers = Tiers(
            [
                Tier(name, tuple(_model_of(m) for m in ms))
                for name, ms in zip(self.tiers, self._llms, strict=True)
            ]
        )
        self._router = Router(
            tiers,
            classifier=self.classifier,
            config=self.router_config,
            validators=self.validators,
            calibration=self.calibration,
        )

    @classmethod
    def class_name(cls) -> str:
        return "costopt_RouterLLM"

    @property
    def router(self) -> Router:
        return self._router

    @property
    def metadata(self) -> LLMMetadata:
        # What callers may rely on: the frontier's limits (any tier may answer).
        frontier = self._llms[-1][0].metadata
        return frontier.model_copy(
            update={
                "model_name": "router:" + "|".join(self.tiers),
                "is_function_calling_model": False,
            }
        )

    # -- the call loop, shared by chat and complete -------------------------------
    def _engine(self) -> CostEngine:
        return self.engine if isinstance(self.engine, CostEngine) else current_engine()

    def _start(self, messages: list[Message]) -> RouteRun:
        tenant = self.tenant if self.tenant is not None else current_tenant()
        actions = {d.action for d in self._engine().ledger.check_budget(tenant, None)}
        decision = self._router.route(
            messages, budget_action="downshift" if "downshift" in actions else None
        )
        return self._router.start(decision)

    def _escalated(self, resp: ChatResponse | CompletionResponse, tier: str) -> None:
        usage = usage_of(resp)
        if usage.input_tokens is None:
            return
        raw = resp.raw if isinstance(resp.raw, dict) else {}
        self._engine().record_call(
            model=str(raw.get("model") or "unknown"),
            usage=usage,
            tier=tier,
            tenant=self.tenant if self.tenant is not None else current_tenant(),
            outcome="escalated",
            framework="llamaindex",
        )

    @staticmethod
    def _finish(resp: Any, run: RouteRun) -> Any:
        raw = dict(resp.raw) if isinstance(resp.raw, dict) else {}
        prior = raw.get("costopt") if isinstance(raw.get("costopt"), dict) else {}
        route = run.explain()
        raw["costopt"] = {**prior, "tier": route["tier"], "route": route}
        resp.raw = raw
        return resp

    def _run_sync(self, messages: list[Message], call: Any) -> Any:
        run = self._start(messages)
        while (step := run.next()) is not None:
            llm = self._llms[step.tier_index][step.model_index]
            try:
                resp = call(llm)
            except Exception as exc:  # provider errors, timeouts, rate limits: fall back
                run.failed(exc)
                continue
            if run.answered(_answer(resp)) is None:
                return self._finish(resp, run)
            self._escalated(resp, step.tier)
        raise run.error()

    async def _run_async(self, messages: list[Message], call: Any) -> Any:
        run = self._start(messages)
        while (step := run.next()) is not None:
            llm = self._llms[step.tier_index][step.model_index]
            try:
                resp = await call(llm)
            except Exception as exc:
                run.failed(exc)
                continue
            if run.answered(_answer(resp)) is None:
                return self._finish(resp, run)
            self._escalated(resp, step.tier)
        raise run.error()

    def _first_working(
        self, messages: list[Message], open_stream: Any
    ) -> tuple[Any, Iterator[Any], RouteRun]:
        # A stream is routed before the call and falls back on errors raised before
        # its first item; it is not held back for validation. The first item is read
        # here because provider LLMs send the request when their stream is first
        # iterated, not when it is opened.
        run = self._start(messages)
        while (step := run.next()) is not None:
            try:
                stream = iter(open_stream(self._llms[step.tier_index][step.model_index]))
                first = next(stream, _EMPTY)
            except Exception as exc:
                run.failed(exc)
                continue
            run.kept()
            return first, stream, run
        raise run.error()

    # -- LlamaIndex API -------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._run_sync(_neutral(messages), lambda llm: llm.chat(messages, **kwargs))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await self._run_async(_neutral(messages), lambda llm: llm.achat(messages, **kwargs))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        msgs = [Message("user", prompt)]
        return self._run_sync(msgs, lambda llm: llm.complete(prompt, formatted=formatted, **kwargs))

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        msgs = [Message("user", prompt)]
        return await self._run_async(
            msgs, lambda llm: llm.acomplete(prompt, formatted=formatted, **kwargs)
        )

    def _relay(self, first: Any, stream: Iterator[Any], run: RouteRun) -> Any:
        if first is _EMPTY:
            return
        last = first
        yield first
        for last in stream:
            yield last
        self._finish(last, run)

    async def _arelay(self, first: Any, stream: AsyncIterator[Any], run: RouteRun) -> Any:
        if first is _EMPTY:
            return
        last = first
        yield first
        async for last in stream:
            yield last
        self._finish(last, run)

    async def _afirst_working(
        self, messages: list[Message], open_stream: Any
    ) -> tuple[Any, AsyncIterator[Any], RouteRun]:
        run = self._start(messages)
        while (step := run.next()) is not None:
            try:
                stream = await open_stream(self._llms[step.tier_index][step.model_index])
                first = await anext(stream, _EMPTY)
            except Exception as exc:
                run.failed(exc)
                continue
            run.kept()
            return first, stream, run
        raise run.error()

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        first, stream, run = self._first_working(
            _neutral(messages), lambda llm: llm.stream_chat(messages, **kwargs)
        )
        return self._relay(first, stream, run)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        first, stream, run = self._first_working(
            [Message("user", prompt)],
            lambda llm: llm.stream_complete(prompt, formatted=formatted, **kwargs),
        )
        return self._relay(first, stream, run)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        first, stream, run = await self._afirst_working(
            _neutral(messages), lambda llm: llm.astream_chat(messages, **kwargs)
        )
        return self._arelay(first, stream, run)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        first, stream, run = await self._afirst_working(
            [Message("user", prompt)],
            lambda llm: llm.astream_complete(prompt, formatted=formatted, **kwargs),
        )
        return self._arelay(first, stream, run)
