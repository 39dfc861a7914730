"""``BatchRunner``: LlamaIndex ``chat`` / ``complete`` requests through batch APIs, at batch prices.

No LlamaIndex component sends requests through a provider batch API
(OpenAI Batch, Anthropic Message Batches), which answer within hours at half
the real-time price. ``BatchRunner`` takes lists of chat or completion
requests for an LLM and runs them as one engine ``BatchJob``: ``chat_batch``
/ ``complete_batch`` submit and wait, ``submit_chat`` / ``submit_complete``
hand back a :class:`BatchRunnerHandle` to come back to (even from another
process, through the queue file).

The runner only translates: LlamaIndex messages into engine ``BatchRequest``
objects (model name and parameters read from the LLM) and engine
``BatchResult`` objects into ``ChatResponse`` / ``CompletionResponse``
objects whose ``raw`` carries ``model``, ``usage`` and ``costopt``.
Queueing, splitting, polling, retries, pricing and recording are the engine's.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    MessageRole,
)
from llama_index.core.llms import LLM
from llama_index_instrumentation.dispatcher import instrument_tags
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
from costopt_core.types import CallMode, Message, Role, Usage, money_str
from llamaindex_costopt.handler import resolve_tenant, usage_of

__all__ = [
    "BATCH_TAG",
    "BatchFailedError",
    "BatchRequestError",
    "BatchRunner",
    "BatchRunnerHandle",
    "Kind",
    "ProviderName",
]

METADATA_KEY = "costopt"
#: Instrument tag on the LLM calls the local provider makes for a batch: the
#: batch job records those calls, so an event handler should not.
BATCH_TAG = "costopt_batch"
#: Which batch API requests go to; ``local`` runs the wrapped LLM itself.
ProviderName = Literal["openai", "anthropic", "local"]
#: What a job's requests are: ``chat`` (message lists) or ``complete`` (prompts).
Kind = Literal["chat", "complete"]
_PROVIDERS: tuple[str, ...] = ("openai", "anthropic", "local")
# ``class_name()`` of llama-index-llms-openai's OpenAI and -anthropic's Anthropic.
_CLASS_NAMES: dict[str, ProviderName] = {"openai_llm": "openai", "Anthropic_LLM": "anthropic"}
_FIELDS = ("temperature", "top_p", "top_k", "seed")
_MAX_TOKENS_KEY: dict[str, str] = {"openai": "max_completion_tokens", "anthropic": "max_tokens"}
_STOP_KEY: dict[str, str] = {"openai": "stop", "anthropic": "stop_sequences"}
# Where the local provider finds how to call the LLM; never sent to a provider.
_LOCAL_CALL = "costopt_local_call"
_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "chatbot": "assistant",
    "model": "assistant",
    "tool": "tool",
    "function": "tool",
}


# -- errors ---------------------------------------------------------------------
class BatchRequestError(BatchError):
    """One request of a batch did not succeed (errored, expired or canceled).

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
        outputs: one entry per input: the response or the :class:`BatchRequestError`.
    """

    def __init__(self, job: str, outputs: list[Any]) -> None:
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


class _Settings(BaseModel):
    """The checked knobs of a :class:`BatchRunner` (``ConfigurationError`` when out of range)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    poll_interval_s: float | None = Field(None, gt=0.0)
    timeout_s: float | None = Field(None, gt=0.0)
    max_attempts: int = Field(3, ge=1, le=100)
    max_concurrency: int = Field(8, ge=1, le=1024)
    job_prefix: str = Field("llamaindex", min_length=1, max_length=64, pattern=r"^[\w.-]+$")


# -- translation helpers ----------------------------------------------------------
def model_name_of(llm: LLM) -> str:
    """The provider's model name of ``llm`` (its ``model`` field, else its metadata).

    Raises:
        ConfigurationError: the LLM names none; pass ``model=`` to the runner.
    """
    own = getattr(llm, "model", None)
    if isinstance(own, str) and own and own != "unknown":
        return own
    try:
        name = llm.metadata.model_name
    except Exception:
        name = None
    if isinstance(name, str) and name and name != "unknown":
        return name
    raise ConfigurationError(
        f"cannot tell which model {type(llm).__name__} calls (no model field or metadata "
        "model_name); pass BatchRunner(..., model='provider-model-name')"
    )


def provider_name_of(llm: LLM) -> ProviderName:
    """Where ``llm``'s requests are batched by default: its own provider's batch API
    for LlamaIndex's ``OpenAI`` / ``Anthropic`` LLMs, else ``local`` (the LLM in real time)."""
    try:
        name = llm.class_name()
    except Exception:
        return "local"
    return _CLASS_NAMES.get(name, "local")


def _llm_params(llm: LLM, provider: str) -> dict[str, Any]:
    """The LLM's answer-changing fields, named as ``provider``'s API names them."""
    params: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(llm, name, None)
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            params[name] = value
    max_tokens = getattr(llm, "max_tokens", None)
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        params[_MAX_TOKENS_KEY.get(provider, "max_tokens")] = max_tokens
    extra = getattr(llm, "additional_kwargs", None)
    if isinstance(extra, Mapping):
        params.update(extra)
    return params


def _call_params(kwargs: Mapping[str, Any], provider: str) -> dict[str, Any]:
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
                "queued; pass it in the provider's JSON form"
            ) from None


def to_message(m: ChatMessage) -> Message:
    """A LlamaIndex ``ChatMessage`` as an engine ``Message`` (text content)."""
    kwargs = m.additional_kwargs or {}
    role = m.role.value if isinstance(m.role, MessageRole) else str(m.role)
    return Message(
        role=_ROLES.get(role, "user"),
        content=m.content or "",
        name=kwargs.get("name"),
        tool_call_id=kwargs.get("tool_call_id"),
    )


def to_chat_message(m: Message) -> ChatMessage:
    """An engine ``Message`` (as stored in the queue) back into a ``ChatMessage``."""
    kwargs: dict[str, Any] = {}
    if m.tool_call_id is not None:
        kwargs["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        kwargs["name"] = m.name
    return ChatMessage(role=MessageRole(m.role), content=m.content, additional_kwargs=kwargs)


def usage_wire(u: Usage) -> dict[str, Any]:
    """``u`` in the LangChain-style usage shape ``normalize_usage`` reads losslessly
    (input includes cache reads and writes)."""
    out: dict[str, Any] = {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens}
    if u.total_tokens is not None:
        out["total_tokens"] = u.total_tokens
    details = {
        k: v
        for k, v in (
            ("cache_read", u.cache_read_tokens),
            ("ephemeral_5m_input_tokens", u.cache_write_5m_tokens),
            ("ephemeral_1h_input_tokens", u.cache_write_1h_tokens),
        )
        if v is not None
    }
    if details:
        out["input_token_details"] = details
    if u.reasoning_tokens is not None:
        out["output_token_details"] = {"reasoning": u.reasoning_tokens}
    return out


def batch_metadata(
    engine: CostEngine, result: BatchResult, model: str, mode: CallMode, job: str
) -> dict[str, Any]:
    """``raw["costopt"]`` of a batched answer: what it cost, and where it ran.

    Priced as the job records it (same model, usage and mode), so the figures
    match the ledger's record ``call_id``.
    """
    usage = result.usage if result.usage is not None else Usage()
    priced = attribute_savings(
        engine.catalog, model=model, usage=usage, baseline_model=engine.baseline_model, mode=mode
    )
    return {
        "model": model,
        "mode": mode,
        "served_by": "model",
        "cost_usd": money_str(priced.cost_usd),
        "baseline_cost_usd": money_str(priced.baseline_cost_usd),
        "savings_usd": {k: format(v, "f") for k, v in priced.savings_usd.items()},
        "batch_job": job,
        "request_id": result.id,
        "call_id": f"batch:{job}:{result.id}",
    }


def _raw_of(
    result: BatchResult, *, engine: CostEngine, model: str, mode: CallMode, job: str
) -> dict[str, Any]:
    """The provider's answer (when it gave one) plus ``model``, ``usage`` and ``costopt``."""
    served = result.model or model
    raw: dict[str, Any] = dict(result.raw) if isinstance(result.raw, Mapping) else {}
    raw["model"] = served
    usage = result.usage if result.usage is not None else Usage()
    if "usage" not in raw and (usage.input_tokens is not None or usage.output_tokens is not None):
        raw["usage"] = usage_wire(usage)
    raw[METADATA_KEY] = batch_metadata(engine, result, served, mode, job)
    return raw


def response_of(
    result: BatchResult, kind: Kind, *, engine: CostEngine, model: str, mode: CallMode, job: str
) -> ChatResponse | CompletionResponse:
    """A succeeded ``BatchResult`` as the response ``chat`` / ``complete`` would have given."""
    raw = _raw_of(result, engine=engine, model=model, mode=mode, job=job)
    text = result.text or ""
    if kind == "complete":
        return CompletionResponse(text=text, raw=raw)
    return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), raw=raw)


def _local_result(
    response: ChatResponse | CompletionResponse, request: BatchRequest
) -> BatchResult:
    """The wrapped LLM's own answer (local provider) as an engine result."""
    text = response.text if isinstance(response, CompletionResponse) else response.message.content
    usage = usage_of(response)
    raw = response.raw
    model = raw.get("model") if isinstance(raw, Mapping) else getattr(raw, "model", None)
    return BatchResult(
        id=request.id,
        status="succeeded",
        text=text or "",
        usage=usage if usage.input_tokens is not None or usage.output_tokens is not None else None,
        model=model if isinstance(model, str) and model else request.model,
    )


def _kind_of(job_name: str) -> Kind | None:
    for kind in ("complete", "chat"):
        if f"-{kind}-" in job_name:
            return kind
    return None


# -- the handle ---------------------------------------------------------------------
class BatchRunnerHandle:
    """A submitted batch of chat or completion requests: status now, responses once ended.

    Everything it knows is in the queue file, so after a restart
    :meth:`BatchRunner.handle` with the same ``job`` name gives it back.

    Attributes:
        job: the engine's ``BatchJob`` (for what this handle does not offer).
        ids: the request ids, one per input, in input order.
        kind: ``chat`` (responses are ``ChatResponse``) or ``complete``.
    """

    def __init__(
        self,
        runner: BatchRunner,
        job: BatchJob,
        ids: Sequence[str],
        models: Sequence[str],
        kind: Kind,
    ) -> None:
        self._runner = runner
        self.job = job
        self.ids = list(ids)
        self._models = list(models)
        self.kind: Kind = kind

    def __repr__(self) -> str:
        return f"BatchRunnerHandle(job={self.name!r}, kind={self.kind!r}, requests={len(self.ids)})"

    @property
    def name(self) -> str:
        """The job's name in the queue file (what :meth:`BatchRunner.handle` takes)."""
        return self.job.name

    def status(self, *, poll: bool = True) -> BatchStatus:
        """Requests per state; ``poll`` asks the provider once first (``False``: file only)."""
        return self.job.poll() if poll else self.job.status()

    async def astatus(self, *, poll: bool = True) -> BatchStatus:
        """Async twin of :meth:`status`."""
        return await self.job.apoll() if poll else self.job.status()

    def done(self) -> bool:
        """True once every request has an outcome (no provider call)."""
        return self.job.status().complete

    def wait(self, *, timeout_s: float | None = None, progress: bool | None = None) -> BatchStatus:
        """Poll until every request has an outcome (a tqdm bar if ``progress``).

        Raises:
            BatchError: ``timeout_s`` passed first (the batch keeps running).
        """
        r = self._runner
        return self.job.wait(
            timeout_s=timeout_s if timeout_s is not None else r.timeout_s,
            progress=r.progress if progress is None else progress,
        )

    async def await_(
        self, *, timeout_s: float | None = None, progress: bool | None = None
    ) -> BatchStatus:
        """Async twin of :meth:`wait` (``await`` is a keyword)."""
        r = self._runner
        return await self.job.await_(
            timeout_s=timeout_s if timeout_s is not None else r.timeout_s,
            progress=r.progress if progress is None else progress,
        )

    def results(
        self,
        *,
        wait: bool = True,
        return_exceptions: bool = False,
        timeout_s: float | None = None,
    ) -> list[Any]:
        """The responses, one per input, in input order.

        Args:
            wait: block (polling) until the batch has ended; with ``False`` a
                batch still running raises ``BatchError`` at once.
            return_exceptions: put a :class:`BatchRequestError` in place of
                each failed response instead of raising.
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
        if any(i not in stored for i in self.ids):
            status = self.job.status()
            raise BatchError(
                f"batch job {self.name!r} has not ended ({status.finished} of {status.total} "
                "requests finished); call wait() or results(wait=True)"
            )
        engine, mode = self.job.engine, self.job.mode
        outputs: list[Any] = []
        for rid, model in zip(self.ids, self._models, strict=True):
            result = stored[rid]
            if result.status == "succeeded":
                outputs.append(
                    response_of(
                        result, self.kind, engine=engine, model=model, mode=mode, job=self.name
                    )
                )
            else:
                outputs.append(BatchRequestError(result, self.name))
        if not return_exceptions and any(isinstance(o, Exception) for o in outputs):
            raise BatchFailedError(self.name, outputs)
        return outputs

    def cancel(self) -> BatchStatus:
        """Stop the batch: unsent requests are dropped, running ones canceled remotely.

        Answers given before the stop are still collected by :meth:`wait`.
        """
        return self.job.cancel()

    async def acancel(self) -> BatchStatus:
        return await self.job.acancel()


# -- the runner -------------------------------------------------------------------
class BatchRunner:
    """Runs lists of ``chat`` / ``complete`` requests for an LLM as batch jobs.

    ``chat_batch`` / ``complete_batch`` submit every request as one job and
    wait (a tqdm bar while waiting if ``progress``); ``submit_chat`` /
    ``submit_complete`` return a :class:`BatchRunnerHandle` at once. Each has
    an async twin. Responses come back in input order; their ``raw`` holds
    ``model``, ``usage`` and ``costopt`` (mode, cost, baseline cost,
    savings, job and request ids). Failed requests raise
    :class:`BatchFailedError` naming them, or come back as
    :class:`BatchRequestError` objects with ``return_exceptions=True``.

    Accounting: the engine's ``BatchJob`` records each answer once, at the
    provider's batch rates (lever ``batch``), under call id
    ``batch:<job>:<request id>``, in the runner's ``engine``; that record is
    the source of truth. The runner emits no LLM events of its own, so a
    ``CostEventHandler`` does not count provider batches again. The local
    provider calls the LLM's own ``chat`` / ``complete`` in a fresh context,
    so ``track_costs`` blocks do not see those calls; they are tagged
    ``costopt_batch`` (:data:`BATCH_TAG`) for handlers attached for good to
    skip (the handler shipped with this package does not yet: with the local
    provider, do not also attach one to the same engine).

    Text only: messages are sent as their text, and tool calls of answers
    stay in the provider's payload in ``raw``.

    Args:
        llm: the LLM whose model name and parameters (``temperature``,
            ``max_tokens``, ``additional_kwargs``, ``system_prompt``) go with
            every request.
        provider: a ``BatchProvider``, or ``"openai"`` / ``"anthropic"`` /
            ``"local"``. By default LlamaIndex's ``OpenAI`` LLM uses the OpenAI
            Batch API, ``Anthropic`` Message Batches, any other LLM ``local``:
            the LLM itself in real time, ``max_concurrency`` at a time, billed
            at real-time prices.
        queue_path: SQLite file of the durable queue; an in-memory queue if omitted.
        engine: the engine that prices and records the answers (default engine if omitted).
        model: the provider's model name, when the LLM's is not it.
        poll_interval_s: wait between polls; by default the provider's own.
        timeout_s: how long ``*_batch`` / ``results`` wait before raising
            ``BatchError`` (the job keeps running); ``None`` waits for good.
        max_attempts: submissions of one request in all.
        max_concurrency: requests running at once with the local provider.
        progress: show a tqdm progress bar while waiting.
        tenant: tenant of every request; otherwise ``tenant_scope`` or the
            ``costopt_tenant`` instrument tag.
        record: record answers in the engine's ledger.
        job_prefix: prefix of generated job names.

    Raises:
        ConfigurationError: a setting is out of range, or the LLM has no model name.

    Example:
        >>> llm = OpenAI(model="gpt-4o-mini")  # doctest: +SKIP
        >>> runner = BatchRunner(llm, queue_path="jobs.db")  # doctest: +SKIP
        >>> responses = runner.complete_batch(["Summarize: a", "Summarize: b"])  # doctest: +SKIP
        >>> handle = runner.submit_chat([[ChatMessage(content="hi")]])  # doctest: +SKIP
        >>> handle.status().to_dict()  # doctest: +SKIP
    """

    def __init__(
        self,
        llm: LLM,
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
        job_prefix: str = "llamaindex",
    ) -> None:
        try:
            self.settings = _Settings(
                poll_interval_s=poll_interval_s,
                timeout_s=timeout_s,
                max_attempts=max_attempts,
                max_concurrency=max_concurrency,
                job_prefix=job_prefix,
            )
        except ValidationError as exc:
            raise config_error("BatchRunner", exc) from None
        if isinstance(provider, str) and provider not in _PROVIDERS:
            raise ConfigurationError(
                f"provider={provider!r} is unknown; use one of {list(_PROVIDERS)} or pass a "
                "BatchProvider"
            )
        if not isinstance(llm, LLM):
            raise ConfigurationError(
                f"BatchRunner runs requests for a LlamaIndex LLM, got {type(llm).__name__}"
            )
        self.llm = llm
        self.model_name = model or model_name_of(llm)
        self._provider_arg = provider
        self._provider: BatchProvider | None = provider if not isinstance(provider, str) else None
        self.queue = BatchQueue(":memory:" if queue_path is None else queue_path)
        self.engine = engine
        self._job_config = BatchJobConfig(
            max_attempts=max_attempts, poll_interval_s=poll_interval_s
        )
        self.progress = progress
        self.tenant = tenant
        self.record = record

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
        return provider_name_of(self.llm)

    @property
    def _runs_llm_itself(self) -> bool:
        return self._provider_arg in (None, "local") and self.provider_name == "local"

    @property
    def provider(self) -> BatchProvider:
        """The batch provider (built on first use)."""
        if self._provider is None:
            self._provider = self._build_provider(self.provider_name)
        return self._provider

    def _build_provider(self, kind: str) -> BatchProvider:
        llm = self.llm
        if kind == "openai":
            key, base = getattr(llm, "api_key", None), getattr(llm, "api_base", None)
            return OpenAIBatchProvider(
                api_key=key if isinstance(key, str) else None,
                base_url=base if isinstance(base, str) else None,
            )
        if kind == "anthropic":
            client = getattr(llm, "_client", None)
            async_client = getattr(llm, "_aclient", None)
            return AnthropicBatchProvider(client=client, async_client=async_client)
        return LocalBatchProvider(
            self._local_chat,
            achat=self._local_achat,
            max_concurrency=self.settings.max_concurrency,
        )

    def _local_call(self, request: BatchRequest) -> tuple[Any, dict[str, Any]]:
        params = dict(request.params)
        call = params.pop(_LOCAL_CALL, None)
        if isinstance(call, Mapping) and call.get("kind") == "complete":
            prompt = request.messages[-1].content if request.messages else ""
            return (prompt, bool(call.get("formatted", False))), params
        return [to_chat_message(m) for m in request.messages], params

    def _local_chat(self, request: BatchRequest) -> BatchResult:
        # A fresh context: a ``track_costs`` block must not count what the job records.
        return contextvars.Context().run(self._call_llm, request)

    def _call_llm(self, request: BatchRequest) -> BatchResult:
        what, params = self._local_call(request)
        with instrument_tags({BATCH_TAG: request.id}):
            if isinstance(what, tuple):
                prompt, formatted = what
                return _local_result(
                    self.llm.complete(prompt, formatted=formatted, **params), request
                )
            return _local_result(self.llm.chat(what, **params), request)

    async def _local_achat(self, request: BatchRequest) -> BatchResult:
        task = asyncio.get_running_loop().create_task(
            self._acall_llm(request), context=contextvars.Context()
        )
        return await task

    async def _acall_llm(self, request: BatchRequest) -> BatchResult:
        what, params = self._local_call(request)
        with instrument_tags({BATCH_TAG: request.id}):
            if isinstance(what, tuple):
                prompt, formatted = what
                response = await self.llm.acomplete(prompt, formatted=formatted, **params)
                return _local_result(response, request)
            return _local_result(await self.llm.achat(what, **params), request)

    # -- requests -----------------------------------------------------------
    def _params(self, kwargs: Mapping[str, Any], local_call: dict[str, Any]) -> dict[str, Any]:
        kind = self.provider_name
        if self._runs_llm_itself:
            # The local provider calls the LLM itself, which applies its own fields.
            params = {k: v for k, v in kwargs.items() if v is not None}
            if local_call:
                params[_LOCAL_CALL] = local_call
        else:
            params = {**_llm_params(self.llm, kind), **_call_params(kwargs, kind)}
        _check_json(params)
        return params

    def _messages(self, messages: Sequence[ChatMessage]) -> tuple[Message, ...]:
        out = tuple(to_message(m) for m in messages)
        system = self.llm.system_prompt
        if system and not self._runs_llm_itself:
            # LlamaIndex LLMs put their system prompt first; a provider batch must too.
            out = (Message("system", system), *out)
        return out

    def chat_request(
        self, request_id: str, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> BatchRequest:
        """The engine request for one ``chat`` call (``kwargs``: call-time parameters)."""
        return BatchRequest(
            id=request_id,
            model=self.model_name,
            messages=self._messages(messages),
            params=self._params(kwargs, {}),
            tenant=resolve_tenant(self.tenant),
        )

    def complete_request(
        self, request_id: str, prompt: str, *, formatted: bool = False, **kwargs: Any
    ) -> BatchRequest:
        """The engine request for one ``complete`` call: the prompt as a user message."""
        return BatchRequest(
            id=request_id,
            model=self.model_name,
            messages=self._messages([ChatMessage(role=MessageRole.USER, content=prompt)]),
            params=self._params(kwargs, {"kind": "complete", "formatted": formatted}),
            tenant=resolve_tenant(self.tenant),
        )

    @staticmethod
    def _ids(n: int) -> list[str]:
        width = len(str(max(n - 1, 0)))
        return [f"{i:0{width}d}" for i in range(n)]

    def _chat_requests(
        self, batch: Sequence[Sequence[ChatMessage]], kwargs: Mapping[str, Any]
    ) -> list[BatchRequest]:
        if isinstance(batch, str) or any(isinstance(m, ChatMessage) for m in batch):
            raise ConfigurationError(
                "chat_batch takes a list of conversations (each a list of ChatMessage), "
                "not one conversation; wrap it: [messages]"
            )
        ids = self._ids(len(batch))
        return [self.chat_request(i, list(m), **kwargs) for i, m in zip(ids, batch, strict=True)]

    def _complete_requests(
        self, prompts: Sequence[str], formatted: bool, kwargs: Mapping[str, Any]
    ) -> list[BatchRequest]:
        if isinstance(prompts, str):
            raise ConfigurationError("complete_batch takes a list of prompts; wrap it: [prompt]")
        ids = self._ids(len(prompts))
        return [
            self.complete_request(i, p, formatted=formatted, **kwargs)
            for i, p in zip(ids, prompts, strict=True)
        ]

    # -- jobs ---------------------------------------------------------------
    def _job(self, name: str) -> BatchJob:
        return BatchJob(
            self.provider,
            self.queue,
            name=name,
            engine=self.engine if self.engine is not None else default_engine(),
            config=self._job_config,
            framework="llamaindex",
            record=self.record,
        )

    def _new_job(self, kind: Kind, name: str | None) -> BatchJob:
        if name is None:
            name = f"{self.settings.job_prefix}-{kind}-{uuid.uuid4().hex[:16]}"
        elif name in self.queue.jobs():
            raise BatchError(
                f"batch job {name!r} already exists in {self.queue!r}; pick another name, or "
                "reattach to it with BatchRunner.handle(name)"
            )
        return self._job(name)

    def _handle(self, job: BatchJob, requests: Sequence[BatchRequest], kind: Kind) -> Any:
        return BatchRunnerHandle(
            self, job, [r.id for r in requests], [r.model for r in requests], kind
        )

    def _submit(
        self, kind: Kind, requests: list[BatchRequest], job_name: str | None
    ) -> BatchRunnerHandle:
        job = self._new_job(kind, job_name)
        handle: BatchRunnerHandle = self._handle(job, requests, kind)
        job.enqueue(requests)
        job.flush()
        return handle

    async def _asubmit(
        self, kind: Kind, requests: list[BatchRequest], job_name: str | None
    ) -> BatchRunnerHandle:
        job = self._new_job(kind, job_name)
        handle: BatchRunnerHandle = self._handle(job, requests, kind)
        await job.aenqueue(requests)
        await job.aflush()
        return handle

    def _run(self, kind: Kind, requests: list[BatchRequest], return_exceptions: bool) -> list[Any]:
        if not requests:
            return []
        job = self._new_job(kind, None)
        handle: BatchRunnerHandle = self._handle(job, requests, kind)
        job.run(requests, progress=self.progress, timeout_s=self.timeout_s)
        return handle.results(wait=False, return_exceptions=return_exceptions)

    async def _arun(
        self, kind: Kind, requests: list[BatchRequest], return_exceptions: bool
    ) -> list[Any]:
        if not requests:
            return []
        job = self._new_job(kind, None)
        handle: BatchRunnerHandle = self._handle(job, requests, kind)
        await job.arun(requests, progress=self.progress, timeout_s=self.timeout_s)
        return handle.results(wait=False, return_exceptions=return_exceptions)

    # -- chat ---------------------------------------------------------------
    def chat_batch(
        self,
        batch: Sequence[Sequence[ChatMessage]],
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[ChatResponse]:
        """Submit one ``chat`` request per conversation as one batch job and wait.

        Args:
            batch: the conversations, each a list of ``ChatMessage``.
            return_exceptions: put a :class:`BatchRequestError` in place of each
                failed response instead of raising.
            **kwargs: call-time parameters (``max_tokens``, ``stop``...), as for ``chat``.

        Returns:
            One ``ChatResponse`` per conversation, in input order.

        Raises:
            BatchFailedError: some requests failed (it names them).
            BatchError: the provider refused the batch, or ``timeout_s`` passed.
        """
        return self._run("chat", self._chat_requests(batch, kwargs), return_exceptions)

    async def achat_batch(
        self,
        batch: Sequence[Sequence[ChatMessage]],
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[ChatResponse]:
        """Async twin of :meth:`chat_batch`."""
        return await self._arun("chat", self._chat_requests(batch, kwargs), return_exceptions)

    def submit_chat(
        self,
        batch: Sequence[Sequence[ChatMessage]],
        *,
        job_name: str | None = None,
        **kwargs: Any,
    ) -> BatchRunnerHandle:
        """Queue and submit one ``chat`` request per conversation; returns at once."""
        return self._submit("chat", self._chat_requests(batch, kwargs), job_name)

    async def asubmit_chat(
        self,
        batch: Sequence[Sequence[ChatMessage]],
        *,
        job_name: str | None = None,
        **kwargs: Any,
    ) -> BatchRunnerHandle:
        """Async twin of :meth:`submit_chat`."""
        return await self._asubmit("chat", self._chat_requests(batch, kwargs), job_name)

    # -- complete -----------------------------------------------------------
    def complete_batch(
        self,
        prompts: Sequence[str],
        *,
        formatted: bool = False,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[CompletionResponse]:
        """Submit one ``complete`` request per prompt as one batch job and wait.

        Each prompt is sent as a user message (after the LLM's system prompt);
        ``formatted`` is passed to the LLM's own ``complete`` by the local provider.

        Returns:
            One ``CompletionResponse`` per prompt, in input order.

        Raises:
            BatchFailedError: some requests failed (it names them).
            BatchError: the provider refused the batch, or ``timeout_s`` passed.
        """
        requests = self._complete_requests(prompts, formatted, kwargs)
        return self._run("complete", requests, return_exceptions)

    async def acomplete_batch(
        self,
        prompts: Sequence[str],
        *,
        formatted: bool = False,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[CompletionResponse]:
        """Async twin of :meth:`complete_batch`."""
        requests = self._complete_requests(prompts, formatted, kwargs)
        return await self._arun("complete", requests, return_exceptions)

    def submit_complete(
        self,
        prompts: Sequence[str],
        *,
        formatted: bool = False,
        job_name: str | None = None,
        **kwargs: Any,
    ) -> BatchRunnerHandle:
        """Queue and submit one ``complete`` request per prompt; returns at once."""
        requests = self._complete_requests(prompts, formatted, kwargs)
        return self._submit("complete", requests, job_name)

    async def asubmit_complete(
        self,
        prompts: Sequence[str],
        *,
        formatted: bool = False,
        job_name: str | None = None,
        **kwargs: Any,
    ) -> BatchRunnerHandle:
        """Async twin of :meth:`submit_complete`."""
        requests = self._complete_requests(prompts, formatted, kwargs)
        return await self._asubmit("complete", requests, job_name)

    # -- coming back --------------------------------------------------------
    def handle(self, job_name: str, *, kind: Kind | None = None) -> BatchRunnerHandle:
        """Reattach to a job submitted earlier (by this or a dead process) in the queue file.

        Args:
            job_name: the job's name (``handle.name``).
            kind: ``chat`` or ``complete``; read from a generated job name, else ``chat``.

        Raises:
            BatchError: the queue file holds no job of that name.
        """
        if job_name not in self.queue.jobs():
            raise BatchError(
                f"no batch job {job_name!r} in {self.queue!r}; known jobs: {self.queue.jobs()}"
            )
        stored = self.queue.stored(job_name)
        return BatchRunnerHandle(
            self,
            self._job(job_name),
            [s.id for s in stored],
            [s.request.model for s in stored],
            kind or _kind_of(job_name) or "chat",
        )

    def jobs(self) -> list[str]:
        """Names of the jobs in the queue file."""
        return self.queue.jobs()

    def close(self) -> None:
        """Stop the local provider's worker threads and close the queue file."""
        if isinstance(self._provider, LocalBatchProvider) and self._runs_llm_itself:
            self._provider.close()
        self.queue.close()
