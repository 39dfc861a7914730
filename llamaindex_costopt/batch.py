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
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CitationBlock,
    CompletionResponse,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.llms import LLM
from llama_index_instrumentation.dispatcher import instrument_tags
from pydantic_core import to_jsonable_python

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
from costopt_core.types import CallMode, Message, Usage
from costopt_core.usage import usage_wire
from llamaindex_costopt.handler import BATCH_TAG, resolve_tenant, usage_of
from llamaindex_costopt.memory import from_llamaindex_message

__all__ = [
    "BATCH_TAG",
    "BatchFailedError",
    "BatchRequestError",
    "BatchRunner",
    "BatchRunnerHandle",
    "Kind",
    "ProviderName",
    "batch_metadata",
]

METADATA_KEY = "costopt"
#: What a job's requests are: ``chat`` (message lists) or ``complete`` (prompts).
Kind = Literal["chat", "complete"]
# ``class_name()`` of llama-index-llms-openai's OpenAI and -anthropic's Anthropic.
_CLASS_NAMES: dict[str, ProviderName] = {"openai_llm": "openai", "Anthropic_LLM": "anthropic"}
# The LLM's answer-changing fields, by the API's name: the engine's list
# (``MODEL_FIELDS``), under the LlamaIndex field names (llama-index-llms-anthropic
# keeps ``thinking`` in ``thinking_dict``). API keywords without a field are in
# ``additional_kwargs``.
_FIELDS: dict[str, str] = {**{f: f for f in MODEL_FIELDS}, "thinking_dict": "thinking"}
# Where the local provider finds how to call the LLM; never sent to a provider.
_LOCAL_CALL = "costopt_local_call"
# Where a local result keeps the LLM's answer message (tool calls, additional_kwargs)
# beside its raw payload; response_of takes it out again.
_LOCAL_MESSAGE = "costopt_local_message"


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


# Blocks the engine message carries (text, tool calls) or that are an answer's own
# (reasoning, citations): anything else (images, audio, documents) would be lost.
_CARRIED_BLOCKS = (TextBlock, ToolCallBlock, ThinkingBlock, CitationBlock)


def to_message(m: ChatMessage) -> Message:
    """A LlamaIndex ``ChatMessage`` as an engine ``Message``: text, name, tool calls
    (``additional_kwargs["tool_calls"]`` and ``ToolCallBlock`` blocks) and tool call id.

    Raises:
        ConfigurationError: the message holds non-text content (an image, audio,
            a document), which a batch request cannot carry.
    """
    lost = sorted({type(b).__name__ for b in m.blocks if not isinstance(b, _CARRIED_BLOCKS)})
    if lost:
        role = m.role.value if isinstance(m.role, MessageRole) else str(m.role)
        raise ConfigurationError(
            f"BatchRunner sends text messages only: a {role} message has {', '.join(lost)} "
            "content, which would be dropped from the batch request; send multimodal requests "
            "through the LLM itself (chat/achat), or put the content in the message as text"
        )
    return from_llamaindex_message(m)


def to_chat_message(m: Message) -> ChatMessage:
    """An engine ``Message`` (as stored in the queue) back into a ``ChatMessage``.

    Tool calls read from ``ToolCallBlock`` blocks (``id``/``name``/``args``) go
    back as blocks, those from ``additional_kwargs["tool_calls"]`` back there.
    """
    kwargs: dict[str, Any] = {}
    if m.tool_call_id is not None:
        kwargs["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        kwargs["name"] = m.name
    blocks: list[Any] = []
    kept: list[dict[str, Any]] = []
    for call in m.tool_calls:
        if set(call) <= {"id", "name", "args"} and isinstance(call.get("name"), str):
            blocks.append(
                ToolCallBlock(
                    tool_call_id=call.get("id"),
                    tool_name=call["name"],
                    tool_kwargs=call.get("args") or {},
                )
            )
        else:
            kept.append(dict(call))
    if kept:
        kwargs["tool_calls"] = kept
    if not blocks:
        return ChatMessage(role=MessageRole(m.role), content=m.content, additional_kwargs=kwargs)
    text = [TextBlock(text=m.content)] if m.content else []
    return ChatMessage(role=MessageRole(m.role), blocks=[*text, *blocks], additional_kwargs=kwargs)


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
    # The local provider's answer message (tool calls...), kept beside the LLM's raw.
    local = raw.pop(_LOCAL_MESSAGE, None)
    text = result.text or ""
    if kind == "complete":
        return CompletionResponse(text=text, raw=raw)
    return ChatResponse(message=_answer_message(text, local), raw=raw)


def _answer_message(text: str, local: Any) -> ChatMessage:
    """The assistant message of an answer: its text, and the local LLM's tool calls."""
    if not isinstance(local, Mapping):
        return ChatMessage(role=MessageRole.ASSISTANT, content=text)
    kwargs = local.get("additional_kwargs")
    blocks: list[Any] = [TextBlock(text=text)] if text else []
    for call in local.get("tool_calls") or ():
        if isinstance(call, Mapping) and isinstance(call.get("name"), str):
            blocks.append(
                ToolCallBlock(
                    tool_call_id=call.get("id"),
                    tool_name=call["name"],
                    tool_kwargs=call.get("args") or {},
                )
            )
    return ChatMessage(
        role=MessageRole.ASSISTANT,
        blocks=blocks,
        additional_kwargs=dict(kwargs) if isinstance(kwargs, Mapping) else {},
    )


def _jsonable(value: Any) -> Any:
    # The queue stores results as JSON: SDK objects (an OpenAI ChatCompletion, tool
    # call objects in additional_kwargs) go in as their JSON data, not as str().
    return to_jsonable_python(value, fallback=str)


def _local_result(
    response: ChatResponse | CompletionResponse, request: BatchRequest
) -> BatchResult:
    """The wrapped LLM's own answer (local provider) as an engine result.

    The LLM's ``raw`` goes in as JSON data and, for a chat answer, the message's
    tool calls (``ToolCallBlock`` blocks) and ``additional_kwargs`` beside it, so
    the batched response carries what the LLM's own ``chat`` returned.
    """
    text = response.text if isinstance(response, CompletionResponse) else response.message.content
    usage = usage_of(response)
    raw = response.raw
    model = raw.get("model") if isinstance(raw, Mapping) else getattr(raw, "model", None)
    data = _jsonable(raw) if raw is not None else {}
    stored: dict[str, Any] = dict(data) if isinstance(data, Mapping) else {"raw": data}
    if isinstance(response, ChatResponse):
        message = response.message
        stored[_LOCAL_MESSAGE] = {
            "tool_calls": [
                {"id": b.tool_call_id, "name": b.tool_name, "args": _jsonable(b.tool_kwargs)}
                for b in message.blocks
                if isinstance(b, ToolCallBlock)
            ],
            "additional_kwargs": _jsonable(message.additional_kwargs),
        }
    return BatchResult(
        id=request.id,
        status="succeeded",
        text=text or "",
        usage=usage if usage.input_tokens is not None or usage.output_tokens is not None else None,
        model=model if isinstance(model, str) and model else request.model,
        raw=stored,
    )


def _refuse_costopt_wrapper(llm: LLM) -> None:
    """Raise ``ConfigurationError`` for costopt's cache and router LLMs.

    A job books each answer as one model call at the model's price, but a cache
    hit cost nothing and a routed answer may hide an escalated, paid attempt; a
    provider batch would skip the cache and router altogether. The local
    provider's calls are tagged for the event handler to skip, so their own
    books are never kept either.
    """
    # Imported here: both modules import the package that imports this one.
    from llamaindex_costopt.cached_llm import CachedLLM
    from llamaindex_costopt.router import RouterLLM

    if isinstance(llm, CachedLLM | RouterLLM):
        raise ConfigurationError(
            f"BatchRunner cannot batch a {type(llm).__name__}: a batch job books every "
            "answer as one paid model call, so cache hits would be charged and a router's "
            "escalated attempts lost. Batch the underlying provider LLM (e.g. "
            "BatchRunner(OpenAI(...))) and keep the cache / router around the real-time "
            "path instead"
        )


def _stored_kind(value: str | None) -> Kind | None:
    return "complete" if value == "complete" else "chat" if value == "chat" else None


def _kind_of(job_name: str) -> Kind | None:
    for kind in ("complete", "chat"):
        if f"-{kind}-" in job_name:
            return kind
    return None


# -- the handle ---------------------------------------------------------------------
class BatchRunnerHandle(JobHandle[Any]):
    """A submitted batch of chat or completion requests: status now, responses once ended.

    The engine's :class:`~costopt_core.batch.JobHandle` over :func:`response_of`:
    ``status`` / ``wait`` / ``results`` / ``cancel`` and their async twins
    (``await_`` for ``wait``). Everything it knows is in the queue file, so
    after a restart :meth:`BatchRunner.handle` with the same ``job`` name
    gives it back.

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
        super().__init__(
            job,
            ids,
            models,
            functools.partial(response_of, kind=kind),
            timeout_s=runner.timeout_s,
            progress=runner.progress,
        )
        self._runner = runner
        self.kind: Kind = kind

    def __repr__(self) -> str:
        return f"BatchRunnerHandle(job={self.name!r}, kind={self.kind!r}, requests={len(self.ids)})"


# -- the runner -------------------------------------------------------------------
class BatchRunner(BatchFront):
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
    ``costopt_batch`` (:data:`BATCH_TAG`), which ``CostEventHandler`` skips,
    so a handler attached for good to the same engine does not count them twice.

    Text only: messages are sent as their text with the history's tool calls
    (``additional_kwargs["tool_calls"]`` and ``ToolCallBlock`` blocks) and
    tool call ids; a message with image, audio, video or document blocks
    raises ``ConfigurationError`` (a batch request would drop them). Tool
    calls of answers stay in the provider's payload in ``raw`` (the local
    provider's also as the LLM's ``ToolCallBlock`` blocks and
    ``additional_kwargs``). ``CachedLLM`` / ``RouterLLM`` are refused (their
    books would be wrong): batch the provider LLM under them. An
    interruption (Ctrl-C, a cancelled task) cancels the job and propagates.

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
        tenant: tenant of every request; otherwise
            the one :func:`~llamaindex_costopt.handler.resolve_tenant` finds (instrument tags,
            ``track_costs``, ``tenant_scope``, the recording handler's).
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

    framework = "llamaindex"

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
        _refuse_costopt_wrapper(llm)  # first: a refused LLM must not leave a queue file behind
        super().__init__(
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
        if not isinstance(llm, LLM):
            raise ConfigurationError(
                f"BatchRunner runs requests for a LlamaIndex LLM, got {type(llm).__name__}"
            )
        self.llm = llm
        self.model_name = model or model_name_of(llm)

    # -- what BatchFront asks of the framework --------------------------------
    def _default_provider_name(self) -> str:
        return provider_name_of(self.llm)

    def _sdk_clients(self, kind: str) -> dict[str, Any]:
        llm = self.llm
        if kind == "openai":
            key, base = getattr(llm, "api_key", None), getattr(llm, "api_base", None)
            return {
                "api_key": key if isinstance(key, str) else None,
                "base_url": base if isinstance(base, str) else None,
            }
        return {
            "client": getattr(llm, "_client", None),
            "async_client": getattr(llm, "_aclient", None),
        }

    def _model_params(self, kind: str) -> dict[str, Any]:
        return model_params(self.llm, kind, _FIELDS, extra="additional_kwargs")

    def _local_call(self, request: BatchRequest) -> tuple[Any, dict[str, Any]]:
        params = dict(request.params)
        call = params.pop(_LOCAL_CALL, None)
        if isinstance(call, Mapping) and call.get("kind") == "complete":
            # A completion request is [system prompt?, prompt]: the LLM's complete takes
            # one string, so the system prompt is put before it as _extend_prompt does.
            *head, last = request.messages or (Message("user", ""),)
            prompt = "".join(f"{m.content}\n\n" for m in head if m.role == "system") + last.content
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
    def _messages(self, messages: Sequence[ChatMessage]) -> tuple[Message, ...]:
        out = tuple(to_message(m) for m in messages)
        system = self.llm.system_prompt
        if system:
            # The LLM's system prompt goes first, for every provider: LLM.chat/complete
            # never add it (only predict does, through _extend_messages/_extend_prompt),
            # so the local provider's call must carry it as a remote batch does.
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
            params=self._request_params(kwargs),
            tenant=resolve_tenant(self.tenant),
        )

    def complete_request(
        self, request_id: str, prompt: str, *, formatted: bool = False, **kwargs: Any
    ) -> BatchRequest:
        """The engine request for one ``complete`` call: the prompt as a user message."""
        local = {_LOCAL_CALL: {"kind": "complete", "formatted": formatted}}
        return BatchRequest(
            id=request_id,
            model=self.model_name,
            messages=self._messages([ChatMessage(role=MessageRole.USER, content=prompt)]),
            params=self._request_params(kwargs, local),
            tenant=resolve_tenant(self.tenant),
        )

    def _chat_requests(
        self,
        batch: Sequence[Sequence[ChatMessage]],
        kwargs: Mapping[str, Any],
        errors: dict[int, Exception] | None = None,
    ) -> list[BatchRequest]:
        check_inputs(batch, "chat_batch", "[messages]")
        if any(isinstance(m, ChatMessage) for m in batch):
            raise ConfigurationError(
                "chat_batch takes a list of conversations (each a list of ChatMessage), "
                "not one conversation; wrap it: [messages]"
            )

        def make(request_id: str, conversation: Any) -> BatchRequest:
            if (
                isinstance(conversation, str)
                or not isinstance(conversation, Sequence)
                or not conversation
                or not all(isinstance(m, ChatMessage) for m in conversation)
            ):
                raise ConfigurationError(
                    "chat_batch / submit_chat: a conversation must be a non-empty list of "
                    f"ChatMessage, got {conversation!r:.60}; for plain prompts use complete_batch"
                )
            return self.chat_request(request_id, list(conversation), **kwargs)

        return each_request(batch, make, errors)

    def _complete_requests(
        self,
        prompts: Sequence[str],
        formatted: bool,
        kwargs: Mapping[str, Any],
        errors: dict[int, Exception] | None = None,
    ) -> list[BatchRequest]:
        check_inputs(prompts, "complete_batch", "[prompt]")

        def make(request_id: str, prompt: Any) -> BatchRequest:
            if not isinstance(prompt, str):
                raise ConfigurationError(
                    f"complete_batch / submit_complete: a prompt must be a string, got "
                    f"{type(prompt).__name__} {prompt!r:.60}"
                )
            return self.complete_request(request_id, prompt, formatted=formatted, **kwargs)

        return each_request(prompts, make, errors)

    # -- jobs ---------------------------------------------------------------
    def _handle(
        self, kind: Kind, requests: Sequence[BatchRequest], job_name: str | None
    ) -> BatchRunnerHandle:
        job = self._new_job(job_name, kind=kind)
        return BatchRunnerHandle(
            self, job, [r.id for r in requests], [r.model for r in requests], kind
        )

    def _submit(
        self, kind: Kind, requests: list[BatchRequest], job_name: str | None
    ) -> BatchRunnerHandle:
        handle = self._handle(kind, requests, job_name)
        handle.submit(requests)
        return handle

    async def _asubmit(
        self, kind: Kind, requests: list[BatchRequest], job_name: str | None
    ) -> BatchRunnerHandle:
        handle = self._handle(kind, requests, job_name)
        await handle.asubmit(requests)
        return handle

    def _errors(self, return_exceptions: bool) -> dict[int, Exception] | None:
        # With return_exceptions a refused input gets its error in its place;
        # the others are still sent.
        return {} if return_exceptions else None

    def _run(
        self,
        kind: Kind,
        requests: list[BatchRequest],
        return_exceptions: bool,
        errors: dict[int, Exception] | None = None,
    ) -> list[Any]:
        answers = (
            self._handle(kind, requests, None).run(requests, return_exceptions=return_exceptions)
            if requests
            else []
        )
        return with_errors(answers, errors or {})

    async def _arun(
        self,
        kind: Kind,
        requests: list[BatchRequest],
        return_exceptions: bool,
        errors: dict[int, Exception] | None = None,
    ) -> list[Any]:
        answers = []
        if requests:
            handle = self._handle(kind, requests, None)
            answers = await handle.arun(requests, return_exceptions=return_exceptions)
        return with_errors(answers, errors or {})

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
        errors = self._errors(return_exceptions)
        requests = self._chat_requests(batch, kwargs, errors)
        return self._run("chat", requests, return_exceptions, errors)

    async def achat_batch(
        self,
        batch: Sequence[Sequence[ChatMessage]],
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[ChatResponse]:
        """Async twin of :meth:`chat_batch`."""
        errors = self._errors(return_exceptions)
        requests = self._chat_requests(batch, kwargs, errors)
        return await self._arun("chat", requests, return_exceptions, errors)

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
        errors = self._errors(return_exceptions)
        requests = self._complete_requests(prompts, formatted, kwargs, errors)
        return self._run("complete", requests, return_exceptions, errors)

    async def acomplete_batch(
        self,
        prompts: Sequence[str],
        *,
        formatted: bool = False,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[CompletionResponse]:
        """Async twin of :meth:`complete_batch`."""
        errors = self._errors(return_exceptions)
        requests = self._complete_requests(prompts, formatted, kwargs, errors)
        return await self._arun("complete", requests, return_exceptions, errors)

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
            kind: ``chat`` or ``complete``; by default the kind the job was submitted
                as (read from a generated job name for a job an older version made,
                else ``chat``).

        Raises:
            BatchError: the queue file holds no job of that name.
        """
        job, ids, models = self._stored_job(job_name)
        kind = kind or _stored_kind(self.queue.job_kind(job_name)) or _kind_of(job_name)
        return BatchRunnerHandle(self, job, ids, models, kind or "chat")
