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
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    convert_to_messages,
)
from langchain_core.messages.tool import invalid_tool_call, tool_call
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.runnables.config import get_callback_manager_for_config, get_config_list

from costopt_core.batch import (
    BatchFront,
    BatchJob,
    BatchProvider,
    BatchRequest,
    BatchResult,
    JobHandle,
    ProviderName,
    batch_metadata,
    check_inputs,
    each_request,
    model_params,
    with_errors,
)
from costopt_core.batch.front import MODEL_FIELDS
from costopt_core.engine import CostEngine
from costopt_core.errors import BatchFailedError, BatchRequestError, ConfigurationError
from costopt_core.finish import finish_reason_of
from costopt_core.types import CallMode, Usage
from costopt_core.usage import usage_from_langchain
from langchain_costopt._convert import (
    from_langchain_messages,
    non_text_digest,
    to_langchain_message,
)
from langchain_costopt.callbacks import cost_handlers, engine_for, run_tenant

__all__ = [
    "BatchFailedError",
    "BatchHandle",
    "BatchRequestError",
    "BatchRunnable",
    "ProviderName",
    "batch_metadata",
]

METADATA_KEY = "costopt"
# langchain-openai's ChatOpenAI and langchain-anthropic's ChatAnthropic.
_LLM_TYPES: dict[str, ProviderName] = {"openai-chat": "openai", "anthropic-chat": "anthropic"}
# Where a chat model keeps API keywords it has no field for: ChatOpenAI /
# ChatAnthropic's ``model_kwargs``, and ChatOpenAI's ``extra_body``, which the SDK
# merges into the request body last. Its answer-changing fields are named as the
# APIs name them, so the engine's list (``MODEL_FIELDS``) is read as it is.
_EXTRA = ("model_kwargs", "extra_body")

_JSON_HINT = " (e.g. tools via bind_tools)"


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
    _refuse_costopt_wrapper(model)
    return model, kwargs


def _refuse_costopt_wrapper(model: BaseChatModel) -> None:
    """Raise ``ConfigurationError`` for costopt's cache and router models.

    A job books each answer as one model call at the model's price, but a cache
    hit cost nothing and a routed answer may hide an escalated, paid attempt; a
    provider batch would skip the cache and router altogether. Their own books
    are kept by their cost handlers, which a batch (below callbacks) never runs.
    """
    # Imported here: both modules import the package that imports this one.
    from langchain_costopt.cached_model import CachedChatModel
    from langchain_costopt.router import RouterChatModel

    if isinstance(model, CachedChatModel | RouterChatModel):
        raise ConfigurationError(
            f"BatchRunnable cannot batch a {type(model).__name__}: a batch job books every "
            "answer as one paid model call, so cache hits would be charged and a router's "
            "escalated attempts lost. Batch the underlying provider chat model (e.g. "
            "BatchRunnable(ChatOpenAI(...))) and keep the cache / router around the "
            "real-time path instead"
        )


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


# Blocks of an answer in the history that the engine message carries otherwise (tool
# calls) or that are the provider's own (reasoning): not content the user sent.
_CARRIED_BLOCKS = frozenset(
    {"tool_use", "tool_call", "function_call", "thinking", "redacted_thinking", "reasoning"}
)


#: A keyword batch() passes its own run: put a refused input's error in its place.
_IN_PLACE = "_costopt_errors_in_place"


def _run_kwargs(kwargs: Mapping[str, Any], in_place: bool) -> dict[str, Any]:
    return {**kwargs, _IN_PLACE: in_place}


def check_text_only(messages: Sequence[BaseMessage]) -> None:
    """Raise ``ConfigurationError`` when a message holds content a batch request would lose.

    The queue stores requests as text messages, so an image, audio or file
    block would be dropped and the text alone sent (and billed) without a word.
    """
    if non_text_digest(messages) is None:
        return
    for i, m in enumerate(messages):
        if isinstance(m.content, str):
            continue
        kinds = sorted(
            {
                str(b.get("type", "?")) if isinstance(b, Mapping) else type(b).__name__
                for b in m.content
                if not (
                    isinstance(b, str)
                    or (isinstance(b, Mapping) and b.get("type", "text") == "text")
                    or (isinstance(b, Mapping) and b.get("type") in _CARRIED_BLOCKS)
                )
            }
        )
        if kinds:
            raise ConfigurationError(
                f"BatchRunnable sends text messages only: message {i} ({m.type}) has "
                f"{', '.join(kinds)} content, which would be dropped from the batch request; "
                "send multimodal requests through the chat model itself (invoke/batch on the "
                "model), or put the content in the message as text"
            )


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
            # As langchain-core's parse_tool_call (used by langchain-openai): empty JSON
            # ("null", "[]"...) means no arguments. Any other non-object cannot be a
            # ToolCall's args (AIMessage would refuse it), so it is an invalid call.
            parsed = parsed or {}
            if not isinstance(parsed, dict):
                invalid.append(
                    invalid_tool_call(
                        name=fn.get("name"),
                        args=args,
                        id=_get(tc, "id"),
                        error=f"arguments are JSON {type(parsed).__name__}, not an object",
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


def message_of(
    result: BatchResult, *, engine: CostEngine, model: str, mode: CallMode, job: str
) -> AIMessage:
    """A succeeded ``BatchResult`` as the ``AIMessage`` the chat model would have returned."""
    raw = result.raw if isinstance(result.raw, Mapping) else None
    served = result.model or model
    calls, invalid = _tool_calls(raw)
    meta: dict[str, Any] = {"model_name": served}
    reason = finish_reason_of(raw)
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
    return run_tenant(config.get("metadata"), own=own)


# -- the handle ---------------------------------------------------------------------
class BatchHandle(JobHandle[AIMessage]):
    """A submitted batch: its status now, and its ``AIMessage`` answers once it has ended.

    The engine's :class:`~costopt_core.batch.JobHandle` over :func:`message_of`:
    ``status`` / ``wait`` / ``results`` / ``cancel`` and their async twins
    (``await_`` for ``wait``). Everything it knows is in the queue file, so
    after a restart :meth:`BatchRunnable.handle` with the same ``job`` name
    gives it back.

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
        super().__init__(
            job, ids, models, message_of, timeout_s=runnable.timeout_s, progress=runnable.progress
        )
        self._runnable = runnable
        #: Ledgers besides the job's that the run's cost handlers record into.
        self._also: list[CostEngine] = []

    def run(self, requests: Sequence[BatchRequest], *, return_exceptions: bool) -> list[Any]:
        try:
            return super().run(requests, return_exceptions=return_exceptions)
        finally:
            self._mirror()

    async def arun(self, requests: Sequence[BatchRequest], *, return_exceptions: bool) -> list[Any]:
        try:
            return await super().arun(requests, return_exceptions=return_exceptions)
        finally:
            self._mirror()

    def results(
        self, *, wait: bool = True, return_exceptions: bool = False, timeout_s: float | None = None
    ) -> list[Any]:
        try:
            return super().results(
                wait=wait, return_exceptions=return_exceptions, timeout_s=timeout_s
            )
        finally:
            self._mirror()  # a submitted job's answers are recorded as they are collected

    async def aresults(
        self, *, wait: bool = True, return_exceptions: bool = False, timeout_s: float | None = None
    ) -> list[Any]:
        try:
            return await super().aresults(
                wait=wait, return_exceptions=return_exceptions, timeout_s=timeout_s
            )
        finally:
            self._mirror()

    def _mirror(self) -> None:
        """Copy the job's records into the other ledgers of the run's cost handlers.

        A job records into one engine, but a model call inside a ``track_costs``
        block whose config also carries a ``CostCallbackHandler`` is recorded by
        both handlers. The same records (same call ids) go to each other engine,
        so a ledger that also sees them through a parent counts them once, as the
        router's escalations are recorded.
        """
        if not self._also:
            return
        ids = {f"batch:{self.name}:{rid}" for rid in self.ids}
        records = [r for r in self.job.engine.ledger.records() if r.call_id in ids]
        for engine in self._also:
            for record in records:
                engine.ledger.add(record)


# -- the runnable -----------------------------------------------------------------
class BatchRunnable(BatchFront, Runnable[LanguageModelInput, AIMessage]):
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
    ``return_exceptions=True``. An interruption (Ctrl-C, a cancelled task, an
    ``asyncio`` timeout) is never an answer: it cancels the job and propagates
    (answers already given are still recorded).

    Requests are text: a message with image, audio or file content blocks
    raises ``ConfigurationError`` (a batch request would drop them); send those
    through the chat model itself.

    Accounting: the engine's ``BatchJob`` records each answer in the ledger
    once, at the provider's batch rates (lever ``batch``), under call id
    ``batch:<job>:<request id>``; that record is the source of truth. The
    runnable emits chain runs (for tracing), never LLM runs, so a
    ``CostCallbackHandler`` does not count the calls a second time; the local
    provider calls the wrapped model below its callbacks for the same reason.
    The ledger is the runnable's ``engine``; without one, the engine of a
    ``CostCallbackHandler`` among the call's callbacks (``track_costs``), else
    the default engine; the same records (same call ids) also go to the
    other cost handlers' engines (a ``track_costs`` block's beside the config's
    handler), as a model call is recorded by each. Costopt's cache and router
    models (``CachedChatModel``, ``RouterChatModel``) are refused: batch the
    provider model under them.

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

    framework = "langchain"

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
        # First: a refused model must not leave a queue file behind.
        chat, bound = _unwrap(chat_model)
        BatchFront.__init__(
            self,
            provider=provider,
            queue_path=queue_path,
            engine=engine,
            poll_interval_s=poll_interval_s,
            timeout_s=timeout_s,
            max_attempts=max_attempts,
            max_concurrency=max_concurrency,
            progress=progress,
            tenant=tenant,
            record=record,
            job_prefix=job_prefix,
        )
        self.chat_model, self._bound = chat, bound
        self.model_name = model or model_name_of(self.chat_model)
        self.name = name

    # -- what BatchFront asks of the framework --------------------------------
    def _default_provider_name(self) -> str:
        return provider_name_of(self.chat_model)

    def _sdk_clients(self, kind: str) -> dict[str, Any]:
        model = self.chat_model
        if kind == "openai":
            return {
                "client": getattr(model, "root_client", None),
                "async_client": getattr(model, "root_async_client", None),
            }
        try:  # ChatAnthropic builds its SDK clients lazily, from its own key and URL
            return {
                "client": getattr(model, "_client", None),
                "async_client": getattr(model, "_async_client", None),
            }
        except Exception:
            return {"client": None, "async_client": None}

    def _model_params(self, kind: str) -> dict[str, Any]:
        return model_params(self.chat_model, kind, MODEL_FIELDS, extra=_EXTRA, stop=True)

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
        """The engine request for one input (``kwargs``: call-time model parameters).

        Raises:
            ConfigurationError: a message holds non-text content (an image, audio,
                a file), which a batch request cannot carry.
        """
        messages = messages_of(value)
        check_text_only(messages)
        return BatchRequest(
            id=request_id,
            model=self.model_name,
            messages=tuple(from_langchain_messages(messages)),
            params=self._request_params({**self._bound, **kwargs}, hint=_JSON_HINT),
            tenant=tenant,
        )

    def _requests(
        self,
        inputs: Sequence[LanguageModelInput],
        configs: Sequence[RunnableConfig],
        kwargs: Any,
        errors: dict[int, Exception] | None = None,
    ) -> list[BatchRequest]:
        """One request per input; with ``errors``, a bad input's error goes there by index."""
        tenants = iter([_tenant_of(c, self.tenant) for c in configs])

        def make(request_id: str, value: Any) -> BatchRequest:
            return self.request_of(request_id, value, tenant=next(tenants), **kwargs)

        return each_request(inputs, make, errors)

    def _engines(self, run_managers: Sequence[Any] = ()) -> list[CostEngine]:
        """Every ledger the run's answers go to: the job's (:meth:`_engine`) first.

        The others are those of the run's other cost handlers (a ``track_costs``
        block's beside the config's handler), each once: a model call is recorded
        by all of them, so a batched one must be too.
        """
        first = self._engine(run_managers)
        if self.engine is not None:
            return [first]
        engines = {id(first): first}
        for rm in run_managers:
            for h in cost_handlers(getattr(rm, "handlers", None)):
                engines.setdefault(id(h.engine), h.engine)
        return list(engines.values())

    def _engine(self, run_managers: Sequence[Any] = ()) -> CostEngine:
        """The one ledger the job records into (see ``engine_for``).

        Elements without a cost handler go with the others; elements whose
        handlers record into different engines cannot share one job.
        """
        if self.engine is not None:
            return self.engine
        engines: dict[int, CostEngine] = {}
        for rm in run_managers:
            # an element's own handler; the track_costs block's is every element's
            found = cost_handlers(getattr(rm, "handlers", None), block=False)
            if found:
                engines.setdefault(id(found[0].engine), found[0].engine)
        if len(engines) > 1:
            raise ConfigurationError(
                "the elements of one batch carry cost handlers of different engines, but a "
                "batch job records into one ledger: pass the same CostCallbackHandler in "
                "every element's config (or engine= here), or batch each group on its own"
            )
        return next(iter(engines.values())) if engines else engine_for(None, None)

    # -- submit -------------------------------------------------------------
    def _prepare(
        self,
        inputs: Sequence[LanguageModelInput],
        config: RunnableConfig | Sequence[RunnableConfig] | None,
        run_managers: Sequence[Any] | None,
        job_name: str | None,
        kwargs: Mapping[str, Any],
        errors: dict[int, Exception] | None = None,
    ) -> tuple[BatchHandle | None, list[BatchRequest]]:
        """The job and its requests; with ``errors``, bad inputs are left out and noted there.

        Returns no handle when every input was refused.
        """
        check_inputs(inputs, f"{type(self).__name__}.batch / submit", "[prompt]")
        configs = get_config_list(config, len(inputs))
        if run_managers is None:
            run_managers = [get_callback_manager_for_config(c) for c in configs]
        engine, *also = self._engines(run_managers)
        requests = self._requests(inputs, configs, kwargs, errors)
        if not requests and errors:
            return None, []  # every input was refused: no job
        job = self._new_job(job_name, engine)
        ids, models = [r.id for r in requests], [r.model for r in requests]
        handle = BatchHandle(self, job, ids, models)
        handle._also = also
        return handle, requests

    def _prepared(self, *args: Any) -> tuple[BatchHandle, list[BatchRequest]]:
        handle, requests = self._prepare(*args)
        if handle is None:  # pragma: no cover - only with errors=, which submit never passes
            raise ConfigurationError("no input made a batch request")
        return handle, requests

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
            BatchError: the provider refused the batch (the requests stay queued;
                the error names the job: ``handle(name).wait()`` submits them again).
            ConfigurationError: ``inputs`` is not a list of inputs, or one of them
                cannot be sent as a batch request.
        """
        handle, requests = self._prepared(inputs, config, None, job_name, kwargs)
        handle.submit(requests)
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
        handle, requests = self._prepared(inputs, config, None, job_name, kwargs)
        await handle.asubmit(requests)
        return handle

    def handle(self, job_name: str) -> BatchHandle:
        """Reattach to a job submitted earlier (by this or a dead process) in the queue file.

        Raises:
            BatchError: the queue file holds no job of that name.
        """
        return BatchHandle(self, *self._stored_job(job_name))

    # -- Runnable -----------------------------------------------------------
    def _run_batch(
        self,
        inputs: list[LanguageModelInput],
        run_manager: list[CallbackManagerForChainRun],
        config: list[RunnableConfig],
        **kwargs: Any,
    ) -> list[Any]:
        # Without return_exceptions a bad input fails the batch before anything is sent.
        errors: dict[int, Exception] | None = {} if kwargs.pop(_IN_PLACE, False) else None
        handle, requests = self._prepare(inputs, config, run_manager, None, kwargs, errors)
        answers = [] if handle is None else handle.run(requests, return_exceptions=True)
        return with_errors(answers, errors or {})

    async def _arun_batch(
        self,
        inputs: list[LanguageModelInput],
        run_manager: list[AsyncCallbackManagerForChainRun],
        config: list[RunnableConfig],
        **kwargs: Any,
    ) -> list[Any]:
        errors: dict[int, Exception] | None = {} if kwargs.pop(_IN_PLACE, False) else None
        handle, requests = self._prepare(inputs, config, run_manager, None, kwargs, errors)
        answers = [] if handle is None else await handle.arun(requests, return_exceptions=True)
        return with_errors(answers, errors or {})

    @staticmethod
    def _raise_interrupt(outputs: list[Any]) -> list[Any]:
        """Re-raise an interruption ``_batch_with_config`` caught and put in every slot.

        langchain-core returns a ``BaseException`` raised by the run as each
        input's output under ``return_exceptions``; a ``KeyboardInterrupt`` or
        a cancelled task is never an answer (the job was canceled on its way out).
        """
        for o in outputs:
            if isinstance(o, BaseException) and not isinstance(o, Exception):
                raise o
        return outputs

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
        check_inputs(inputs, f"{type(self).__name__}.batch", "[prompt]")
        if not inputs:
            return []
        outputs = self._raise_interrupt(
            self._batch_with_config(
                self._run_batch,
                inputs,
                config,
                return_exceptions=True,
                **_run_kwargs(kwargs, return_exceptions),
            )
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
        check_inputs(inputs, f"{type(self).__name__}.abatch", "[prompt]")
        if not inputs:
            return []
        outputs = self._raise_interrupt(
            await self._abatch_with_config(
                self._arun_batch,
                inputs,
                config,
                return_exceptions=True,
                **_run_kwargs(kwargs, return_exceptions),
            )
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
        configs = get_config_list(config, len(inputs))
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
        configs = get_config_list(config, len(inputs))
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
