"""``BatchRunnable``: a chat model's requests through provider batch APIs, at batch prices.

LangChain's ``.batch()`` runs concurrent real-time calls. Provider batch APIs
(OpenAI Batch, Anthropic Message Batches) answer the same requests within
hours at half the price. This runnable wraps a chat model and sends its
inputs through the engine's ``BatchJob`` instead: ``batch`` submits and
waits, ``submit`` hands back a :class:`BatchHandle` to come back to (even
from another process, through the queue file).

The adapter only translates: LangChain inputs into engine ``BatchRequest``
objects (model name and parameters read from the chat model) and engine
``BatchResult`` objects back into ``AIMessage`` answers with
``usage_metadata`` and ``response_metadata["costopt"]``. Queueing, splitting,
polling, retries, pricing and recording in the ledger are the engine's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    convert_to_messages,
)
from langchain_core.messages.tool import invalid_tool_call, tool_call
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.runnables.config import get_callback_manager_for_config, get_config_list
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from costopt_core.batch import (
    AnthropicBatchProvider,
    BatchJob,
    BatchJobConfig,
    BatchProvider,
    BatchQueue,
    BatchRequest,
    BatchResult,
    BatchStatus,
    LocalBatchProvider,
    OpenAIBatchProvider,
)
from costopt_core.engine import CostEngine, default_engine
from costopt_core.errors import BatchError, ConfigurationError, config_error
from costopt_core.pricing import attribute_savings
from costopt_core.tenancy import current_tenant
from costopt_core.types import CallMode, Message, Usage, money_str
from costopt_core.usage import usage_from_langchain
from langchain_costopt._convert import from_langchain_messages
from langchain_costopt.callbacks import TENANT_KEYS, CostCallbackHandler

__all__ = [
    "BatchFailedError",
    "BatchHandle",
    "BatchRequestError",
    "BatchRunnable",
    "ProviderName",
]

METADATA_KEY = "costopt"
#: Which batch API requests go to; ``local`` runs the wrapped model itself.
ProviderName = Literal["openai", "anthropic", "local"]
_PROVIDERS: tuple[str, ...] = ("openai", "anthropic", "local")
# langchain-openai's ChatOpenAI and langchain-anthropic's ChatAnthropic.
_LLM_TYPES: dict[str, ProviderName] = {"openai-chat": "openai", "anthropic-chat": "anthropic"}
# Chat-model fields sent with every request, under the provider's own name.
_FIELDS = ("temperature", "top_p", "top_k", "seed", "frequency_penalty", "presence_penalty")
_MAX_TOKENS_KEY: dict[str, str] = {"openai": "max_completion_tokens", "anthropic": "max_tokens"}
_STOP_KEY: dict[str, str] = {"openai": "stop", "anthropic": "stop_sequences"}


# -- errors ---------------------------------------------------------------------
class BatchRequestError(BatchError):
    """One request of a batch did not succeed (errored, expired or canceled).

    ``batch(..., return_exceptions=True)`` returns it in place of the answer.

    Attributes:
        request_id: the request's id within its job.
        job: the job's name.
        status: ``errored``, ``expired`` or ``canceled``.
        retryable: whether the provider said a retry could help.
        result: the engine's result, with the provider's error payload in ``raw``.
    """

    def __init__(self, result: BatchResult, job: str) -> None:
        self.request_id = result.id
        self.job = job
        self.status = result.status
        self.retryable = result.retryable
        self.result = result
        super().__init__(
            f"batch request {result.id!r} of job {job!r} {result.status}: "
            f"{result.error or 'no reason given'}"
        )


class BatchFailedError(BatchError):
    """Some requests of a batch did not succeed; raised unless ``return_exceptions``.

    Attributes:
        job: the job's name (its answers stay in the queue file).
        failed_ids: ids of the failed requests, in input order.
        outputs: one entry per input: the ``AIMessage`` or the
            :class:`BatchRequestError`, so the answers that did come back are not lost.
    """

    def __init__(self, job: str, outputs: list[AIMessage | Exception]) -> None:
        self.job = job
        self.outputs = outputs
        errors = [o for o in outputs if isinstance(o, BatchRequestError)]
        self.failed_ids = [e.request_id for e in errors]
        shown = ", ".join(repr(i) for i in self.failed_ids[:10])
        more = f" and {len(errors) - 10} more" if len(errors) > 10 else ""
        first = f"; first: {errors[0]}" if errors else ""
        super().__init__(
            f"{len(errors)} of {len(outputs)} requests of batch job {job!r} failed "
            f"({shown}{more}){first}. Pass return_exceptions=True to get the other answers, "
            "or read them from this error's outputs"
        )


# -- settings -------------------------------------------------------------------
class _Settings(BaseModel):
    """The checked knobs of a :class:`BatchRunnable` (``ConfigurationError`` when out of range)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    poll_interval_s: float | None = Field(None, gt=0.0)
    timeout_s: float | None = Field(None, gt=0.0)
    max_attempts: int = Field(3, ge=1, le=100)
    max_concurrency: int = Field(8, ge=1, le=1024)
    job_prefix: str = Field("langchain", min_length=1, max_length=64, pattern=r"^[\w.-]+$")


# -- translation helpers ----------------------------------------------------------
def _unwrap(model: Any) -> tuple[BaseChatModel, dict[str, Any]]:
    """The chat model under ``bind``/``bind_tools`` bindings, and the bound kwargs."""
    kwargs: dict[str, Any] = {}
    while isinstance(model, RunnableBinding):
        kwargs = {**model.kwargs, **kwargs}
        model = model.bound
    if not isinstance(model, BaseChatModel):
        raise ConfigurationError(
            f"BatchRunnable wraps a chat model (a BaseChatModel, optionally with bound "
            f"kwargs such as bind_tools), got {type(model).__name__}"
        )
    return model, kwargs


def model_name_of(model: BaseChatModel) -> str:
    """The provider's model name of ``model`` (``model_name``/``model``/``model_id``).

    Raises:
        ConfigurationError: the model names none; pass ``model=`` to the runnable.
    """
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    try:
        params = model._identifying_params
    except Exception:
        params = {}
    for key in ("model_name", "model", "model_id"):
        value = params.get(key)
        if isinstance(value, str) and value:
            return value
    raise ConfigurationError(
        f"cannot tell which model {type(model).__name__} calls (no model_name, model or "
        "model_id); pass BatchRunnable(..., model='provider-model-name')"
    )


def provider_name_of(model: BaseChatModel) -> ProviderName:
    """Where ``model``'s requests are batched by default: its own provider's batch API
    for ``ChatOpenAI`` / ``ChatAnthropic``, else ``local`` (the model run in real time)."""
    try:
        llm_type = model._llm_type
    except Exception:
        return "local"
    return _LLM_TYPES.get(llm_type, "local")


def _model_params(model: BaseChatModel, provider: str) -> dict[str, Any]:
    """The chat model's answer-changing fields, named as ``provider``'s API names them."""
    params: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(model, name, None)
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            params[name] = value
    max_tokens = getattr(model, "max_tokens", None)
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        params[_MAX_TOKENS_KEY.get(provider, "max_tokens")] = max_tokens
    stop = getattr(model, "stop", None) or getattr(model, "stop_sequences", None)
    if stop:
        params[_STOP_KEY.get(provider, "stop")] = [stop] if isinstance(stop, str) else list(stop)
    extra = getattr(model, "model_kwargs", None)
    if isinstance(extra, Mapping):
        params.update(extra)
    return params


def _call_params(kwargs: Mapping[str, Any], provider: str) -> dict[str, Any]:
    """Call-time kwargs (bound or passed to ``batch``) for ``provider``'s API."""
    params = {k: v for k, v in kwargs.items() if v is not None}
    if provider in _STOP_KEY and "stop" in params:
        stop = params.pop("stop")
        params[_STOP_KEY[provider]] = [stop] if isinstance(stop, str) else list(stop)
    if provider == "openai" and "max_tokens" in params:
        params["max_completion_tokens"] = params.pop("max_tokens")
    return params


def _check_json(params: Mapping[str, Any]) -> None:
    # The queue stores requests as JSON; say which parameter cannot be, and why.
    for key, value in params.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"batch request parameter {key}={value!r} is not JSON data, so it cannot be "
                "queued; pass it in the provider's JSON form (e.g. tools via bind_tools)"
            ) from None


def messages_of(value: LanguageModelInput) -> list[BaseMessage]:
    """What a chat model makes of an input: a string, a message list or a ``PromptValue``."""
    if isinstance(value, PromptValue):
        return value.to_messages()
    if isinstance(value, str):
        return [HumanMessage(content=value)]
    if isinstance(value, Sequence):
        return convert_to_messages(value)
    raise ConfigurationError(
        f"invalid batch input of type {type(value).__name__}: pass a string, a list of "
        "messages or a PromptValue, as to a chat model"
    )


def to_langchain_message(m: Message) -> BaseMessage:
    """An engine ``Message`` (as stored in the queue) back into a LangChain message."""
    if m.role == "system":
        return SystemMessage(content=m.content)
    if m.role == "assistant":
        return AIMessage(content=m.content, tool_calls=[dict(tc) for tc in m.tool_calls])
    if m.role == "tool":
        return ToolMessage(content=m.content, tool_call_id=m.tool_call_id or "")
    return HumanMessage(content=m.content, name=m.name)


def usage_metadata_of(u: Usage) -> dict[str, Any] | None:
    """``u`` in LangChain's ``usage_metadata`` convention (input includes cache reads/writes).

    ``None`` when the provider reported no token counts.
    """
    if u.input_tokens is None and u.output_tokens is None:
        return None
    inp, out = u.input_tokens or 0, u.output_tokens or 0
    meta: dict[str, Any] = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
    details = {
        k: v
        for k, v in (
            ("cache_read", u.cache_read_tokens),
            ("ephemeral_5m_input_tokens", u.cache_write_5m_tokens),
            ("ephemeral_1h_input_tokens", u.cache_write_1h_tokens),
        )
        if v
    }
    if details:
        meta["input_token_details"] = details
    if u.reasoning_tokens:
        meta["output_token_details"] = {"reasoning": u.reasoning_tokens}
    return meta


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else None


def _openai_message(raw: Mapping[str, Any]) -> Mapping[str, Any] | None:
    choices = raw.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        message = choices[0].get("message")
        return message if isinstance(message, Mapping) else None
    return None


def _tool_calls(raw: Mapping[str, Any] | None) -> tuple[list[Any], list[Any]]:
    """Tool calls of a provider answer (OpenAI body, Anthropic message, local result)."""
    calls: list[Any] = []
    invalid: list[Any] = []
    if not raw:
        return calls, invalid
    message = _openai_message(raw)
    if message is not None:
        for tc in message.get("tool_calls") or ():
            fn = _get(tc, "function") or {}
            args = fn.get("arguments")
            try:
                parsed = json.loads(args) if isinstance(args, str) and args else {}
            except ValueError as exc:
                invalid.append(
                    invalid_tool_call(
                        name=fn.get("name"), args=args, id=_get(tc, "id"), error=str(exc)
                    )
                )
                continue
            calls.append(tool_call(name=str(fn.get("name")), args=parsed, id=_get(tc, "id")))
        return calls, invalid
    content = raw.get("content")
    if isinstance(content, list):  # Anthropic content blocks
        for block in content:
            if _get(block, "type") == "tool_use":
                args = _get(block, "input")
                calls.append(
                    tool_call(
                        name=str(block.get("name")),
                        args=dict(args) if isinstance(args, Mapping) else {},
                        id=block.get("id"),
                    )
                )
        return calls, invalid
    for tc in raw.get("tool_calls") or ():  # the local provider: LangChain's shape already
        if isinstance(tc, Mapping) and "name" in tc:
            calls.append(
                tool_call(name=str(tc["name"]), args=dict(tc.get("args") or {}), id=tc.get("id"))
            )
    return calls, invalid


def _finish_reason(raw: Mapping[str, Any] | None) -> str | None:
    if not raw:
        return None
    choices = raw.get("choices")
    if isinstance(choices, list) and choices:
        value = _get(choices[0], "finish_reason")
        if isinstance(value, str):
            return value
    for key in ("stop_reason", "finish_reason"):
        value = raw.get(key)
        if isinstance(value, str):
            return value
    return None


def batch_metadata(
    engine: CostEngine, result: BatchResult, model: str, mode: CallMode, job: str
) -> dict[str, Any]:
    """``response_metadata["costopt"]`` of a batched answer: what it cost, and where it ran.

    Priced as the job records it (same model, usage and mode), so the figures
    match the ledger's record ``call_id``.
    """
    usage = result.usage if result.usage is not None else Usage()
    priced = attribute_savings(
        engine.catalog, model=model, usage=usage, baseline_model=engine.baseline_model, mode=mode
    )
    return {
        "model": model,
        "tier": None,
        "mode": mode,
        "served_by": "model",
        "cost_usd": money_str(priced.cost_usd),
        "baseline_cost_usd": money_str(priced.baseline_cost_usd),
        "savings_usd": {k: format(v, "f") for k, v in priced.savings_usd.items()},
        "batch_job": job,
        "request_id": result.id,
        "call_id": f"batch:{job}:{result.id}",
    }


def message_of(
    result: BatchResult, *, engine: CostEngine, model: str, mode: CallMode, job: str
) -> AIMessage:
    """A succeeded ``BatchResult`` as the ``AIMessage`` the chat model would have returned."""
    raw = result.raw if isinstance(result.raw, Mapping) else None
    served = result.model or model
    calls, invalid = _tool_calls(raw)
    meta: dict[str, Any] = {"model_name": served}
    reason = _finish_reason(raw)
    if reason is not None:
        meta["finish_reason"] = reason
    meta[METADATA_KEY] = batch_metadata(engine, result, served, mode, job)
    usage = result.usage if result.usage is not None else Usage()
    msg_id = raw.get("id") if raw else None
    return AIMessage(
        content=result.text or "",
        tool_calls=calls,
        invalid_tool_calls=invalid,
        usage_metadata=usage_metadata_of(usage),
        response_metadata=meta,
        id=msg_id if isinstance(msg_id, str) else None,
    )


def _local_result(chat: ChatResult, request: BatchRequest) -> BatchResult:
    """The wrapped model's own answer (local provider) as an engine result."""
    gen = chat.generations[0]
    message = gen.message if isinstance(gen, ChatGeneration) else AIMessage(content=gen.text)
    meta = message.response_metadata or {}
    um = getattr(message, "usage_metadata", None)
    raw: dict[str, Any] = {
        "tool_calls": [dict(tc) for tc in getattr(message, "tool_calls", None) or ()],
    }
    if isinstance(meta.get("finish_reason"), str):
        raw["finish_reason"] = meta["finish_reason"]
    if message.id:
        raw["id"] = message.id
    model = meta.get("model_name") or meta.get("model")
    return BatchResult(
        id=request.id,
        status="succeeded",
        text=message.text,
        usage=None if um is None else usage_from_langchain(um),
        model=model if isinstance(model, str) and model else request.model,
        raw=raw,
    )


def _tenant_of(config: RunnableConfig, own: str | None) -> str | None:
    if own is not None:
        return own
    metadata = config.get("metadata") or {}
    for key in TENANT_KEYS:
        if metadata.get(key) is not None:
            return str(metadata[key])
    return current_tenant()


# -- the handle ---------------------------------------------------------------------
class BatchHandle:
    """A submitted batch: its status now, and its answers once it has ended.

    Everything it knows is in the queue file, so after a restart
    :meth:`BatchRunnable.handle` with the same ``job`` name gives it back.

    Attributes:
        job: the engine's ``BatchJob`` (for what this handle does not offer).
        ids: the request ids, one per input, in input order.
    """

    def __init__(
        self,
        runnable: BatchRunnable,
        job: BatchJob,
        ids: Sequence[str],
        models: Sequence[str],
    ) -> None:
        self._runnable = runnable
        self.job = job
        self.ids = list(ids)
        self._models = list(models)

    def __repr__(self) -> str:
        return f"BatchHandle(job={self.name!r}, requests={len(self.ids)})"

    @property
    def name(self) -> str:
        """The job's name in the queue file (what :meth:`BatchRunnable.handle` takes)."""
        return self.job.name

    # -- status -------------------------------------------------------------
    def status(self, *, poll: bool = True) -> BatchStatus:
        """Requests per state (``queued``, ``submitted``, ``done``, ``failed``...).

        Args:
            poll: ask the provider once first (collecting batches that ended);
                ``False`` reads the queue file only.
        """
        return self.job.poll() if poll else self.job.status()

    async def astatus(self, *, poll: bool = True) -> BatchStatus:
        """Async twin of :meth:`status`."""
        return await self.job.apoll() if poll else self.job.status()

    def done(self) -> bool:
        """True once every request has an outcome (no provider call)."""
        return self.job.status().complete

    # -- waiting ------------------------------------------------------------
    def wait(self, *, timeout_s: float | None = None, progress: bool | None = None) -> BatchStatus:
        """Poll until every request has an outcome (a tqdm bar if ``progress``).

        Raises:
            BatchError: ``timeout_s`` passed first (the batch keeps running).
        """
        r = self._runnable
        return self.job.wait(
            timeout_s=timeout_s if timeout_s is not None else r.timeout_s,
            progress=r.progress if progress is None else progress,
        )

    async def await_(
        self, *, timeout_s: float | None = None, progress: bool | None = None
    ) -> BatchStatus:
        """Async twin of :meth:`wait` (``await`` is a keyword)."""
        r = self._runnable
        return await self.job.await_(
            timeout_s=timeout_s if timeout_s is not None else r.timeout_s,
            progress=r.progress if progress is None else progress,
        )

    # -- results ------------------------------------------------------------
    def results(
        self,
        *,
        wait: bool = True,
        return_exceptions: bool = False,
        timeout_s: float | None = None,
    ) -> list[Any]:
        """The answers, one ``AIMessage`` per input, in input order.

        Args:
            wait: block (polling) until the batch has ended; with ``False``
                a batch still running raises ``BatchError`` at once.
            return_exceptions: put a :class:`BatchRequestError` in place of
                each failed answer instead of raising.
            timeout_s: give up waiting after this long.

        Raises:
            BatchFailedError: some requests failed and ``return_exceptions`` is off.
            BatchError: the batch has not ended (``wait=False``) or ``timeout_s`` passed.
        """
        if wait:
            self.wait(timeout_s=timeout_s)
        return self._outputs(return_exceptions)

    async def aresults(
        self,
        *,
        wait: bool = True,
        return_exceptions: bool = False,
        timeout_s: float | None = None,
    ) -> list[Any]:
        """Async twin of :meth:`results`."""
        if wait:
            await self.await_(timeout_s=timeout_s)
        return self._outputs(return_exceptions)

    def raw_results(self) -> list[BatchResult | None]:
        """The engine's results in input order (``None`` while a request is unfinished)."""
        stored = self.job.results()
        return [stored.get(i) for i in self.ids]

    def _outputs(self, return_exceptions: bool) -> list[Any]:
        stored = self.job.results()
        missing = [i for i in self.ids if i not in stored]
        if missing:
            status = self.job.status()
            raise BatchError(
                f"batch job {self.name!r} has not ended ({status.finished} of {status.total} "
                "requests finished); call wait() or results(wait=True)"
            )
        engine, mode = self.job.engine, self.job.mode
        outputs: list[AIMessage | Exception] = []
        for rid, model in zip(self.ids, self._models, strict=True):
            result = stored[rid]
            if result.status == "succeeded":
                outputs.append(
                    message_of(result, engine=engine, model=model, mode=mode, job=self.name)
                )
            else:
                outputs.append(BatchRequestError(result, self.name))
        if not return_exceptions and any(isinstance(o, Exception) for o in outputs):
            raise BatchFailedError(self.name, outputs)
        return outputs

    # -- cancel -------------------------------------------------------------
    def cancel(self) -> BatchStatus:
        """Stop the batch: unsent requests are dropped, running ones canceled remotely.

        Answers given before the stop are still collected by :meth:`wait`.
        """
        return self.job.cancel()

    async def acancel(self) -> BatchStatus:
        return await self.job.acancel()


# -- the runnable -----------------------------------------------------------------
class BatchRunnable(Runnable[LanguageModelInput, AIMessage]):
    """A chat model whose calls go through a batch API, at batch prices.

    ``batch(inputs)`` submits every input as one batch job and waits for it
    (a tqdm bar while waiting if ``progress``); ``submit(inputs)`` returns a
    :class:`BatchHandle` at once. ``invoke(x)`` is a batch of one: slow by
    design (provider batches answer within minutes to 24 hours), meant for
    chains built for batch work, not for interactive use. Every method has
    an async twin (``abatch``, ``asubmit``, ``ainvoke``).

    Answers are ``AIMessage`` objects with ``usage_metadata`` (LangChain's
    convention: input counts include cache reads) and
    ``response_metadata["costopt"]`` (mode, cost, baseline cost, savings, the
    job and request ids). Failed requests raise :class:`BatchFailedError`
    naming them, or come back as :class:`BatchRequestError` objects with
    ``return_exceptions=True``.

    Accounting: the engine's ``BatchJob`` records each answer in the ledger
    once, at the provider's batch rates (lever ``batch``), under call id
    ``batch:<job>:<request id>``; that record is the source of truth. The
    runnable emits chain runs (for tracing), never LLM runs, so a
    ``CostCallbackHandler`` does not count the calls a second time; the local
    provider calls the wrapped model below its callbacks for the same reason.
    The ledger is the runnable's ``engine``; without one, the engine of a
    ``CostCallbackHandler`` among the call's callbacks (``track_costs``), else
    the default engine.

    Args:
        chat_model: the chat model (optionally with bound kwargs, e.g.
            ``model.bind_tools(tools)``); its model name and parameters
            (``max_tokens``, ``temperature``...) go with every request.
        provider: a ``BatchProvider``, or ``"openai"`` / ``"anthropic"`` /
            ``"local"``. By default ``ChatOpenAI`` uses the OpenAI Batch API,
            ``ChatAnthropic`` Message Batches (both through the chat model's
            own client when it exposes one), and any other model ``local``: the
            wrapped model run in real time, ``max_concurrency`` at a time,
            billed at real-time prices.
        queue_path: SQLite file of the durable queue; an in-memory queue
            (nothing survives the process) if omitted.
        engine: the engine that prices and records the answers.
        model: the provider's model name, when the chat model's is not it.
        poll_interval_s: wait between polls; by default the provider's own
            (10 s for remote batch APIs, 0.05 s for ``local``).
        timeout_s: how long ``batch`` / ``results`` wait before raising
            ``BatchError`` (the job keeps running); ``None`` waits for good.
        max_attempts: submissions of one request in all (retryable failures
            and expiries are submitted again).
        max_concurrency: requests running at once with the local provider.
        progress: show a tqdm progress bar while waiting.
        tenant: tenant of every request; otherwise the call's
            ``costopt_tenant`` metadata or ``tenant_scope``.
        record: record answers in the engine's ledger.
        job_prefix: prefix of generated job names.
        name: the runnable's name in traces.

    Raises:
        ConfigurationError: a setting is out of range, or the model has no name.

    Example:
        >>> model = ChatOpenAI(model="gpt-4o-mini")  # doctest: +SKIP
        >>> batcher = BatchRunnable(model, queue_path="jobs.db")  # doctest: +SKIP
        >>> answers = batcher.batch(["Summarize: ...", "Summarize: ..."])  # doctest: +SKIP
        >>> handle = batcher.submit(questions)  # doctest: +SKIP
        >>> handle.status().to_dict()  # doctest: +SKIP
        >>> handle.results()  # doctest: +SKIP
    """

    def __init__(
        self,
        chat_model: BaseChatModel | Runnable[Any, Any],
        *,
        provider: BatchProvider | ProviderName | None = None,
        queue_path: str | Path | None = None,
        engine: CostEngine | None = None,
        model: str | None = None,
        poll_interval_s: float | None = None,
        timeout_s: float | None = None,
        max_attempts: int = 3,
        max_concurrency: int = 8,
        progress: bool = True,
        tenant: str | None = None,
        record: bool = True,
        job_prefix: str = "langchain",
        name: str | None = None,
    ) -> None:
        try:
            settings = _Settings(
                poll_interval_s=poll_interval_s,
                timeout_s=timeout_s,
                max_attempts=max_attempts,
                max_concurrency=max_concurrency,
                job_prefix=job_prefix,
            )
        except ValidationError as exc:
            raise config_error("BatchRunnable", exc) from None
        if isinstance(provider, str) and provider not in _PROVIDERS:
            raise ConfigurationError(
                f"provider={provider!r} is unknown; use one of {list(_PROVIDERS)} or pass a "
                "BatchProvider"
            )
        self.chat_model, self._bound = _unwrap(chat_model)
        self.model_name = model or model_name_of(self.chat_model)
        self._provider_arg = provider
        self._provider: BatchProvider | None = provider if not isinstance(provider, str) else None
        self.queue = BatchQueue(":memory:" if queue_path is None else queue_path)
        self.engine = engine
        self.settings = settings
        self._job_config = BatchJobConfig(
            max_attempts=max_attempts, poll_interval_s=poll_interval_s
        )
        self.progress = progress
        self.tenant = tenant
        self.record = record
        self.name = name

    @property
    def timeout_s(self) -> float | None:
        return self.settings.timeout_s

    # -- provider -----------------------------------------------------------
    @property
    def provider_name(self) -> str:
        """``openai``, ``anthropic``, ``local`` or a custom provider's ``name``."""
        if self._provider is not None:
            return self._provider.name
        if isinstance(self._provider_arg, str):
            return self._provider_arg
        return provider_name_of(self.chat_model)

    @property
    def _runs_model_itself(self) -> bool:
        """True when requests go to the local provider built around the wrapped model."""
        return self._provider_arg in (None, "local") and self.provider_name == "local"

    @property
    def provider(self) -> BatchProvider:
        """The batch provider (built on first use: building an SDK client is I/O-free
        but needs the SDK installed)."""
        if self._provider is None:
            self._provider = self._build_provider(self.provider_name)
        return self._provider

    def _build_provider(self, kind: str) -> BatchProvider:
        model = self.chat_model
        if kind == "openai":
            return OpenAIBatchProvider(
                client=getattr(model, "root_client", None),
                async_client=getattr(model, "root_async_client", None),
            )
        if kind == "anthropic":
            client = async_client = None
            try:  # ChatAnthropic builds its SDK clients lazily, from its own key and URL
                client = getattr(model, "_client", None)
                async_client = getattr(model, "_async_client", None)
            except Exception:
                client = async_client = None
            return AnthropicBatchProvider(client=client, async_client=async_client)
        return LocalBatchProvider(
            self._local_chat,
            achat=self._local_achat,
            max_concurrency=self.settings.max_concurrency,
        )

    def _local_call(self, request: BatchRequest) -> tuple[list[BaseMessage], dict[str, Any]]:
        params = dict(request.params)
        return [to_langchain_message(m) for m in request.messages], params

    def _local_chat(self, request: BatchRequest) -> BatchResult:
        # Below the model's callbacks: the job records this call, a handler must not.
        messages, params = self._local_call(request)
        stop = params.pop("stop", None)
        return _local_result(self.chat_model._generate(messages, stop=stop, **params), request)

    async def _local_achat(self, request: BatchRequest) -> BatchResult:
        messages, params = self._local_call(request)
        stop = params.pop("stop", None)
        chat = await self.chat_model._agenerate(messages, stop=stop, **params)
        return _local_result(chat, request)

    # -- requests -----------------------------------------------------------
    def request_of(
        self,
        request_id: str,
        value: LanguageModelInput,
        *,
        tenant: str | None = None,
        **kwargs: Any,
    ) -> BatchRequest:
        """The engine request for one input (``kwargs``: call-time model parameters)."""
        kind = self.provider_name
        call = {**self._bound, **kwargs}
        if self._runs_model_itself:
            # The local provider calls the model itself, which applies its own fields.
            params = {k: v for k, v in call.items() if v is not None}
        else:
            params = {**_model_params(self.chat_model, kind), **_call_params(call, kind)}
        _check_json(params)
        return BatchRequest(
            id=request_id,
            model=self.model_name,
            messages=tuple(from_langchain_messages(messages_of(value))),
            params=params,
            tenant=tenant,
        )

    def _requests(
        self, inputs: Sequence[LanguageModelInput], configs: Sequence[RunnableConfig], kwargs: Any
    ) -> list[BatchRequest]:
        width = len(str(max(len(inputs) - 1, 0)))
        return [
            self.request_of(
                f"{i:0{width}d}", value, tenant=_tenant_of(config, self.tenant), **kwargs
            )
            for i, (value, config) in enumerate(zip(inputs, configs, strict=True))
        ]

    def _engine(self, run_managers: Sequence[Any] = ()) -> CostEngine:
        if self.engine is not None:
            return self.engine
        for rm in run_managers[:1]:
            for h in getattr(rm, "handlers", None) or ():
                if isinstance(h, CostCallbackHandler):
                    return h.engine
        return default_engine()

    def _new_job(self, name: str | None, engine: CostEngine) -> BatchJob:
        if name is None:
            name = f"{self.settings.job_prefix}-{uuid.uuid4().hex[:16]}"
        elif name in self.queue.jobs():
            raise BatchError(
                f"batch job {name!r} already exists in {self.queue!r}; pick another name, or "
                "reattach to it with BatchRunnable.handle(name)"
            )
        return self._job(name, engine)

    def _job(self, name: str, engine: CostEngine | None) -> BatchJob:
        return BatchJob(
            self.provider,
            self.queue,
            name=name,
            engine=engine if engine is not None else self._engine(),
            config=self._job_config,
            framework="langchain",
            record=self.record,
        )

    def _configs(
        self, config: RunnableConfig | Sequence[RunnableConfig] | None, n: int
    ) -> list[RunnableConfig]:
        return get_config_list(config, n)

    # -- submit -------------------------------------------------------------
    def _prepare(
        self,
        inputs: Sequence[LanguageModelInput],
        configs: Sequence[RunnableConfig],
        run_managers: Sequence[Any],
        job_name: str | None,
        kwargs: Mapping[str, Any],
    ) -> tuple[BatchJob, list[BatchRequest]]:
        requests = self._requests(inputs, configs, kwargs)
        return self._new_job(job_name, self._engine(run_managers)), requests

    def _handle(self, job: BatchJob, requests: Sequence[BatchRequest]) -> BatchHandle:
        return BatchHandle(self, job, [r.id for r in requests], [r.model for r in requests])

    def submit(
        self,
        inputs: Sequence[LanguageModelInput],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        job_name: str | None = None,
        **kwargs: Any,
    ) -> BatchHandle:
        """Queue ``inputs`` durably and submit them as one batch job; returns at once.

        Args:
            inputs: what the chat model takes: strings, message lists, ``PromptValue``.
            config: one config, or one per input (tenant metadata, callbacks).
            job_name: the job's name (unique in the queue file); generated if omitted.
            **kwargs: call-time model parameters (``stop``, ``max_tokens``...).

        Raises:
            BatchError: the provider refused the batch (the requests stay queued:
                ``handle.wait()`` submits them again).
        """
        configs = self._configs(config, len(inputs))
        managers = [get_callback_manager_for_config(configs[0])] if configs else []
        job, requests = self._prepare(inputs, configs, managers, job_name, kwargs)
        handle = self._handle(job, requests)
        job.enqueue(requests)
        job.flush()
        return handle

    async def asubmit(
        self,
        inputs: Sequence[LanguageModelInput],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        job_name: str | None = None,
        **kwargs: Any,
    ) -> BatchHandle:
        """Async twin of :meth:`submit`."""
        configs = self._configs(config, len(inputs))
        managers = [get_callback_manager_for_config(configs[0])] if configs else []
        job, requests = self._prepare(inputs, configs, managers, job_name, kwargs)
        handle = self._handle(job, requests)
        await job.aenqueue(requests)
        await job.aflush()
        return handle

    def handle(self, job_name: str) -> BatchHandle:
        """Reattach to a job submitted earlier (by this or a dead process) in the queue file.

        Raises:
            BatchError: the queue file holds no job of that name.
        """
        if job_name not in self.queue.jobs():
            raise BatchError(
                f"no batch job {job_name!r} in {self.queue!r}; known jobs: {self.queue.jobs()}"
            )
        stored = self.queue.stored(job_name)
        return BatchHandle(
            self,
            self._job(job_name, None),
            [s.id for s in stored],
            [s.request.model for s in stored],
        )

    def jobs(self) -> list[str]:
        """Names of the jobs in the queue file."""
        return self.queue.jobs()

    # -- Runnable -----------------------------------------------------------
    def _run_batch(
        self,
        inputs: list[LanguageModelInput],
        run_manager: list[CallbackManagerForChainRun],
        config: list[RunnableConfig],
        **kwargs: Any,
    ) -> list[Any]:
        job, requests = self._prepare(inputs, config, run_manager, None, kwargs)
        handle = self._handle(job, requests)
        job.run(requests, progress=self.progress, timeout_s=self.timeout_s)
        return handle.results(wait=False, return_exceptions=True)

    async def _arun_batch(
        self,
        inputs: list[LanguageModelInput],
        run_manager: list[AsyncCallbackManagerForChainRun],
        config: list[RunnableConfig],
        **kwargs: Any,
    ) -> list[Any]:
        job, requests = self._prepare(inputs, config, run_manager, None, kwargs)
        handle = self._handle(job, requests)
        await job.arun(requests, progress=self.progress, timeout_s=self.timeout_s)
        return handle.results(wait=False, return_exceptions=True)

    @staticmethod
    def _raise_failed(outputs: list[Any]) -> list[Any]:
        errors = [o for o in outputs if isinstance(o, Exception)]
        if not errors:
            return outputs
        if any(not isinstance(o, BatchRequestError) for o in errors):
            # The job itself failed (submit, timeout): every input carries that error.
            raise next(o for o in errors if not isinstance(o, BatchRequestError))
        raise BatchFailedError(errors[0].job, outputs)  # type: ignore[attr-defined]

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[AIMessage]:
        """Submit ``inputs`` as one batch job and wait for every answer.

        Returns:
            One ``AIMessage`` per input, in input order; with
            ``return_exceptions`` a :class:`BatchRequestError` for each failed one.

        Raises:
            BatchFailedError: some requests failed (names them; the answers
                that came back are in its ``outputs``).
            BatchError: the provider refused the batch, or ``timeout_s`` passed.
        """
        if not inputs:
            return []
        outputs = self._batch_with_config(
            self._run_batch, inputs, config, return_exceptions=True, **kwargs
        )
        return outputs if return_exceptions else self._raise_failed(outputs)

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[AIMessage]:
        """Async twin of :meth:`batch`."""
        if not inputs:
            return []
        outputs = await self._abatch_with_config(
            self._arun_batch, inputs, config, return_exceptions=True, **kwargs
        )
        return outputs if return_exceptions else self._raise_failed(outputs)

    def batch_as_completed(  # type: ignore[override]
        self,
        inputs: Sequence[LanguageModelInput],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> Iterator[tuple[int, AIMessage | Exception]]:
        """One batch job for all ``inputs``; its answers are yielded once it has ended.

        A provider batch ends as a whole, so "as completed" is input order here
        (the default would make one batch per input).
        """
        configs = self._configs(config, len(inputs))
        outputs = self.batch(list(inputs), configs, return_exceptions=return_exceptions, **kwargs)
        yield from enumerate(outputs)

    async def abatch_as_completed(  # type: ignore[override]
        self,
        inputs: Sequence[LanguageModelInput],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> AsyncIterator[tuple[int, AIMessage | Exception]]:
        """Async twin of :meth:`batch_as_completed`."""
        configs = self._configs(config, len(inputs))
        outputs = await self.abatch(
            list(inputs), configs, return_exceptions=return_exceptions, **kwargs
        )
        for i, out in enumerate(outputs):
            yield i, out

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        """A batch of one: the answer after the batch has ended (slow by design).

        Raises:
            BatchRequestError: the request failed.
        """
        out = self.batch([input], config, return_exceptions=True, **kwargs)[0]
        if isinstance(out, Exception):
            raise out
        return out

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        """Async twin of :meth:`invoke`."""
        out = (await self.abatch([input], config, return_exceptions=True, **kwargs))[0]
        if isinstance(out, Exception):
            raise out
        return out

    def close(self) -> None:
        """Stop the local provider's worker threads and close the queue file."""
        close = getattr(self._provider, "close", None)
        if callable(close) and isinstance(self._provider, LocalBatchProvider):
            close()
        self.queue.close()
