"""``RouterLLM``: one LlamaIndex LLM in front of tiers of LLMs, same policy as LangChain's.

The engine's ``Router`` decides the starting tier, the fallbacks and the
escalations; this adapter only translates LlamaIndex messages and responses
and runs the router's call loop. The answer's ``raw["costopt"]["route"]``
explains the decision; ``raw`` model and usage are those of the LLM that
answered. Discarded cheap attempts are recorded in the ledger as
``escalated`` (the cost handler records the answer itself).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

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
from llama_index_instrumentation.dispatcher import active_instrument_tags, instrument_tags
from pydantic import Field, PrivateAttr, ValidationError

from costopt_core.engine import CostEngine, current_engine
from costopt_core.errors import ConfigurationError, config_error
from costopt_core.routing.calibrate import CalibrationReport
from costopt_core.routing.features import wants_structured_output
from costopt_core.routing.router import Router, RouterConfig, RouteRun, Step
from costopt_core.routing.tiers import Tier, Tiers
from costopt_core.routing.validators import Answer, ValidatorConfig, forces_tool_call
from costopt_core.served import SERVED, served_outcome
from costopt_core.types import Message, Role
from llamaindex_costopt.handler import (
    TENANT_KEYS,
    _field,
    record_tenant,
    recording_handler,
    usage_of,
)

# The handler's own view of which block records a call (read, never changed here):
# the router books its escalations where the handler books its answer.

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


#: Key of ``raw`` where the route (and a cache's marker) goes.
METADATA_KEY = "costopt"


def _first(items: Any) -> Any:
    return items[0] if isinstance(items, list | tuple) and items else None


def _tool_call(call: Any) -> dict[str, Any]:
    """One tool call as the validators read it: ``{"name", "args"}``.

    Accepts OpenAI's shape (``{"function": {"name", "arguments"}}``, as a dict
    or an SDK object), Anthropic's (``{"name", "input"}``), LlamaIndex's
    ``ToolCallBlock`` / ``ToolSelection`` (``tool_name``, ``tool_kwargs``) and
    ``{"name", "args"}`` itself. Arguments stay as given (a JSON string is
    parsed by the validator, so malformed JSON still escalates).
    """
    fn = _field(call, "function")
    if fn is not None:
        return {"name": _field(fn, "name"), "args": _field(fn, "arguments")}
    name = _field(call, "name") or _field(call, "tool_name")
    args = None
    for key in ("args", "arguments", "input", "tool_kwargs"):
        args = _field(call, key)
        if args is not None:
            break
    return {"name": name, "args": args}


def _tool_calls(resp: ChatResponse) -> tuple[dict[str, Any], ...]:
    msg = resp.message
    calls = list(msg.additional_kwargs.get("tool_calls") or ())
    if not calls:  # newer integrations put them in the message's blocks instead
        calls = [b for b in msg.blocks if getattr(b, "block_type", None) == "tool_call"]
    return tuple(_tool_call(c) for c in calls)


def _reason(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    return str(getattr(value, "name", value))  # Gemini's FinishReason enum: MAX_TOKENS


def _finish_reason(resp: ChatResponse | CompletionResponse) -> str | None:
    """Why the answer ended, wherever the integration put it (``"length"``: cut off).

    ``raw`` as a dict or an SDK object: OpenAI's ``choices[0].finish_reason``,
    Anthropic's ``stop_reason``, Bedrock's ``stopReason``, Gemini's
    ``candidates[0].finish_reason``, a top-level ``finish_reason`` (the local
    LLM); then the same keys in ``additional_kwargs``.
    """
    raw = resp.raw
    message = getattr(resp, "message", None)
    for source in (
        raw,
        _first(_field(raw, "choices")),
        _first(_field(raw, "candidates")),
        getattr(resp, "additional_kwargs", None),
        getattr(message, "additional_kwargs", None),
    ):
        for key in ("finish_reason", "stop_reason", "stopReason"):
            reason = _reason(_field(source, key))
            if reason is not None:
                return reason
    return None


def _mean(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return sum(nums) / len(nums) if nums else None


def _mean_logprob(resp: ChatResponse | CompletionResponse) -> float | None:
    """Mean log-probability of the answer's tokens, when the provider returned them.

    OpenAI's raw ``choices[0].logprobs.content`` holds each sampled token's
    own log-probability; LlamaIndex's ``resp.logprobs`` keeps only each
    token's top alternatives, so there the best alternative stands in for the
    token (the same at temperature 0, never lower: it cannot escalate a
    sound answer that the exact figure would keep).
    """
    content = _field(_field(_first(_field(resp.raw, "choices")), "logprobs"), "content")
    if isinstance(content, list | tuple) and content:
        mean = _mean([_field(t, "logprob") for t in content])
        if mean is not None:
            return mean
    per_token = resp.logprobs or []
    best = [max((lp.logprob for lp in alts), default=None) for alts in per_token if alts]
    return _mean(best)


def _answer(resp: ChatResponse | CompletionResponse) -> Answer:
    text = resp.message.content if isinstance(resp, ChatResponse) else resp.text
    return Answer(
        text=text or "",
        tool_calls=_tool_calls(resp) if isinstance(resp, ChatResponse) else (),
        mean_logprob=_mean_logprob(resp),
        finish_reason=_finish_reason(resp),
    )


def _tool_name(tool: Any) -> str | None:
    """A bound tool's name: OpenAI / Anthropic dicts, or a LlamaIndex tool object."""
    name = _field(_field(tool, "function"), "name") or _field(tool, "name")
    if name is None:
        name = _field(_field(tool, "metadata"), "name")
    return name if isinstance(name, str) and name else None


def _as_raw_dict(raw: Any) -> dict[str, Any]:
    """A copy of ``raw`` as a dict the route can be added to (model and usage kept)."""
    if isinstance(raw, Mapping):
        return dict(raw)
    dump = getattr(raw, "model_dump", None)
    if callable(dump):  # an SDK response object (OpenAI's ChatCompletion)
        try:
            dumped = dump()
        except Exception:
            dumped = None
        if isinstance(dumped, dict):
            return dumped
    out: dict[str, Any] = {}
    for key in ("model", "usage", "usage_metadata"):
        value = _field(raw, key)
        if value is not None:
            out[key] = value
    return out


@dataclass(frozen=True)
class _Books:
    """Where a request's escalations are recorded and its budgets read."""

    engine: CostEngine
    tenant: str | None


class RouterLLM(LLM):
    """Routes each LlamaIndex request to the cheapest sufficient tier.

    Validators see the answer as ``RouterChatModel``'s do: tool calls in any
    integration's shape, ``finish_reason`` (a cut-off answer escalates) and
    token log-probabilities where the provider returns them. Tools passed as
    ``tools=`` (with ``tool_choice``) and ``response_format`` are read as in
    LangChain.

    Args:
        tiers: tier name -> LLM (or list of LLMs: fallbacks of the same tier),
            cheap to frontier in dict order.
        router_config: thresholds, margin, escalation and retry limits.
        validators: checks that send a weak cheap answer one tier up.
        classifier: the engine's route classifier (heuristic by default).
        calibration: a report of ``costopt_core.routing.calibrate`` (or
            ``costopt calibrate --out``) on your own samples: its thresholds,
            margin and cost-aware scaling replace ``router_config``'s.
        engine: where budgets are read and escalations recorded when no
            ``CostEventHandler`` records this router's calls (that handler's
            engine is used when one does); the current engine if omitted.
        tenant: tenant of this LLM's calls, unless the call's instrument tags
            name one; else that of ``track_costs`` / ``tenant_scope``.

    Raises:
        ConfigurationError: fewer than two tiers, an empty tier, or a classifier
            or calibration that does not fit the tiers.
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

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            # pydantic wraps model_post_init's ConfigurationError; unwrap its message.
            raise config_error("RouterLLM", exc) from None

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

    # -- accounting: the same engine and tenant as the handler's record ----------
    def _tagged(self) -> contextlib.AbstractContextManager[None]:
        """The call's instrument tags, with this router's tenant unless they name one.

        The cost handler reads the tenant of the router's own answer from the
        tags of its start event, so ``tenant`` must be in them before that
        event (sent by LlamaIndex's callback wrapper, before the call body).
        """
        if self.tenant is None:
            return contextlib.nullcontext()
        tags = active_instrument_tags.get()
        if any(tags.get(k) is not None for k in TENANT_KEYS):
            return contextlib.nullcontext()
        return instrument_tags({**tags, TENANT_KEYS[0]: self.tenant})

    def _books(self) -> _Books:
        handler = recording_handler()
        if handler is not None:
            engine = handler.engine
        elif isinstance(self.engine, CostEngine):
            engine = self.engine
        else:
            engine = current_engine()
        # The tenant CostEventHandler books this call's answer under.
        return _Books(engine, record_tenant(handler))

    # -- the call loop, shared by chat and complete -------------------------------
    def _start(self, messages: list[Message], kwargs: Mapping[str, Any]) -> tuple[RouteRun, _Books]:
        books = self._books()
        # A "block" budget raises here, before any call; "downshift" moves the start down.
        actions = {d.action for d in books.engine.ledger.check_budget(books.tenant, None)}
        tools = list(kwargs.get("tools") or ())
        names = [_tool_name(t) for t in tools]
        # Unknown-tool checks need every name; a tool we cannot name turns them off.
        offered = tuple(n for n in names if n) if all(names) else ()
        structured = wants_structured_output(kwargs)
        decision = self._router.route(
            messages,
            tools=[{"name": n} for n in offered],
            structured=structured,
            budget_action="downshift" if "downshift" in actions else None,
        )
        run = self._router.start(
            decision,
            offered_tools=offered,
            structured=structured,
            tool_required=bool(tools) and forces_tool_call(kwargs.get("tool_choice")),
        )
        return run, books

    @staticmethod
    def _escalated(resp: ChatResponse | CompletionResponse, step: Step, books: _Books) -> None:
        """Record a discarded cheap answer as ``escalated``, unless a cache served it."""
        raw = resp.raw
        note = None if raw is None else SERVED.take(raw)
        if note is None and isinstance(raw, Mapping) and isinstance(raw.get(METADATA_KEY), Mapping):
            note = raw[METADATA_KEY]  # a cache with expose_cache_info marks raw itself
        if note is not None and served_outcome(note) is not None:
            return  # no model was called for it: it cost nothing
        model = _field(raw, "model")
        # Recorded even without usage (cost unknown): the call was made and paid for.
        books.engine.record_call(
            model=str(model or step.model or "unknown"),
            usage=usage_of(resp),
            tier=step.tier,
            tenant=books.tenant,
            outcome="escalated",
            framework="llamaindex",
        )

    @staticmethod
    def _finish(resp: Any, run: RouteRun) -> Any:
        old = resp.raw
        raw = _as_raw_dict(old)
        got = raw.get(METADATA_KEY)
        prior: dict[str, Any] = got if isinstance(got, dict) else {}
        route = run.explain()
        raw[METADATA_KEY] = {**prior, "tier": route["tier"], "route": route}
        resp.raw = raw
        # A cache's note is on the raw object it served; carry it to the copy, or
        # the handler would price a cache hit as a model call. The handler reads a
        # noted answer's tier from the note, so it says which tier answered.
        note = None if old is None else SERVED.take(old)
        if note is not None:
            SERVED.note(raw, {**note, "tier": route["tier"]})
        return resp

    def _run_sync(self, messages: list[Message], kwargs: dict[str, Any], call: Any) -> Any:
        run, books = self._start(messages, kwargs)
        while (step := run.next()) is not None:
            llm = self._llms[step.tier_index][step.model_index]
            try:
                resp = call(llm)
            except Exception as exc:  # provider errors, timeouts, rate limits: fall back
                run.failed(exc)
                continue
            if run.answered(_answer(resp)) is None:
                return self._finish(resp, run)
            self._escalated(resp, step, books)
        raise run.error()

    async def _run_async(self, messages: list[Message], kwargs: dict[str, Any], call: Any) -> Any:
        run, books = self._start(messages, kwargs)
        while (step := run.next()) is not None:
            llm = self._llms[step.tier_index][step.model_index]
            try:
                resp = await call(llm)
            except Exception as exc:
                run.failed(exc)
                continue
            if run.answered(_answer(resp)) is None:
                return self._finish(resp, run)
            self._escalated(resp, step, books)
        raise run.error()

    def _first_working(
        self, messages: list[Message], kwargs: dict[str, Any], open_stream: Any
    ) -> tuple[Any, Iterator[Any], RouteRun]:
        # A stream is routed before the call and falls back on errors raised before
        # its first item; it is not held back for validation. The first item is read
        # here because provider LLMs send the request when their stream is first
        # iterated, not when it is opened.
        run, _ = self._start(messages, kwargs)
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

    async def _afirst_working(
        self, messages: list[Message], kwargs: dict[str, Any], open_stream: Any
    ) -> tuple[Any, AsyncIterator[Any], RouteRun]:
        run, _ = self._start(messages, kwargs)
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

    # -- LlamaIndex API -------------------------------------------------------------
    # Each public method sets the router's tenant tag, then enters the instrumented
    # method below it (whose start event the cost handler reads the tenant from).
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        with self._tagged():
            return cast(ChatResponse, self._chat(messages, **kwargs))

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        with self._tagged():
            return cast(ChatResponse, await self._achat(messages, **kwargs))

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        with self._tagged():
            return cast(CompletionResponse, self._complete(prompt, formatted=formatted, **kwargs))

    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        with self._tagged():
            return cast(
                CompletionResponse, await self._acomplete(prompt, formatted=formatted, **kwargs)
            )

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        with self._tagged():
            return cast(ChatResponseGen, self._stream_chat(messages, **kwargs))

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        with self._tagged():
            return cast(
                CompletionResponseGen, self._stream_complete(prompt, formatted=formatted, **kwargs)
            )

    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        with self._tagged():
            return cast(ChatResponseAsyncGen, await self._astream_chat(messages, **kwargs))

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        with self._tagged():
            return cast(
                CompletionResponseAsyncGen,
                await self._astream_complete(prompt, formatted=formatted, **kwargs),
            )

    @llm_chat_callback()
    def _chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._run_sync(_neutral(messages), kwargs, lambda llm: llm.chat(messages, **kwargs))

    @llm_chat_callback()
    async def _achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await self._run_async(
            _neutral(messages), kwargs, lambda llm: llm.achat(messages, **kwargs)
        )

    @llm_completion_callback()
    def _complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._run_sync(
            [Message("user", prompt)],
            kwargs,
            lambda llm: llm.complete(prompt, formatted=formatted, **kwargs),
        )

    @llm_completion_callback()
    async def _acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return await self._run_async(
            [Message("user", prompt)],
            kwargs,
            lambda llm: llm.acomplete(prompt, formatted=formatted, **kwargs),
        )

    @llm_chat_callback()
    def _stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        first, stream, run = self._first_working(
            _neutral(messages), kwargs, lambda llm: llm.stream_chat(messages, **kwargs)
        )
        return self._relay(first, stream, run)

    @llm_completion_callback()
    def _stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        first, stream, run = self._first_working(
            [Message("user", prompt)],
            kwargs,
            lambda llm: llm.stream_complete(prompt, formatted=formatted, **kwargs),
        )
        return self._relay(first, stream, run)

    @llm_chat_callback()
    async def _astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        first, stream, run = await self._afirst_working(
            _neutral(messages), kwargs, lambda llm: llm.astream_chat(messages, **kwargs)
        )
        return self._arelay(first, stream, run)

    @llm_completion_callback()
    async def _astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        first, stream, run = await self._afirst_working(
            [Message("user", prompt)],
            kwargs,
            lambda llm: llm.astream_complete(prompt, formatted=formatted, **kwargs),
        )
        return self._arelay(first, stream, run)
